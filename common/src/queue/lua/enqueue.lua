-- Enqueue one or many jobs atomically, skipping ids that already exist (idempotent).
-- KEYS[1]  {ns}:jobs            (index of all jobs, scored by enqueue time)
-- ARGV[1]  prefix               ("{ns}")
-- ARGV[2]  n, the number of jobs
-- then per job, 5 values: id, priority ("p0".."p2"), spec JSON, max attempts, not-before
--          (ms; a job not due yet waits in {ns}:delayed as 'deferred'; 0 = start now)
-- Returns  { created_count, existing_id_1, existing_id_2, ... }
--
-- Batches are the fast path, so the work common to many jobs is done once per chunk:
-- one EXISTS over the chunk's keys (ids are nearly always new), one RPUSH per priority
-- and one ZADD into the index. The job's creation is not written to its history list:
-- it is implied by the hash's enqueued_at (and 'created' for deferred jobs), and
-- readers put it first (see RedisQueue::get). The outbox entry is written per job.
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local ms_n = tonumber(ms)
-- Microseconds, kept for latency measurements (enqueue-to-start).
local us = t[1] .. string.format('%06d', tonumber(t[2]))
local outbox = prefix .. ':outbox'
-- Values per variadic call stay well under Lua's unpack limit (LUAI_MAXCSTACK, 8000).
local CHUNK = 1000
local created = 0
local existing = {}
local seen = {}
for first = 0, n - 1, CHUNK do
  local last = math.min(first + CHUNK, n) - 1
  local keys = {}
  for i = first, last do
    keys[#keys + 1] = prefix .. ':job:' .. ARGV[3 + i * 5]
  end
  local some_exist = redis.call('EXISTS', unpack(keys)) > 0
  local queued = { p0 = {}, p1 = {}, p2 = {} }
  local index = {}
  for i = first, last do
    local base = 3 + i * 5
    local id, pri, spec, max = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
    local not_before = tonumber(ARGV[base + 4])
    local jk = keys[i - first + 1]
    if seen[id] or (some_exist and redis.call('EXISTS', jk) == 1) then
      existing[#existing + 1] = id
    else
      seen[id] = true
      if not_before > ms_n then
        redis.call('HSET', jk, 'schema', 'v1', 'spec', spec, 'state', 'deferred', 'created', 'deferred',
          'priority', pri, 'attempt', '0', 'attempt_limit', max, 'enqueued_at', ms, 'enqueued_us', us,
          'updated_at', ms)
        redis.call('ZADD', prefix .. ':delayed', not_before, id)
        redis.call('XADD', outbox, 'MAXLEN', '~', OUTBOX_MAX, '*', 'job', id, 'from', '', 'to', 'deferred',
          'at', ms, 'attempt', '0', 'worker', '', 'detail', '', 'spec', spec, 'priority', pri, 'limit', max)
      else
        redis.call('HSET', jk, 'schema', 'v1', 'spec', spec, 'state', 'queued', 'priority', pri,
          'attempt', '0', 'attempt_limit', max, 'enqueued_at', ms, 'enqueued_us', us, 'updated_at', ms)
        local q = queued[pri]
        q[#q + 1] = id
        redis.call('XADD', outbox, 'MAXLEN', '~', OUTBOX_MAX, '*', 'job', id, 'from', '', 'to', 'queued',
          'at', ms, 'attempt', '0', 'worker', '', 'detail', '', 'spec', spec, 'priority', pri, 'limit', max)
      end
      index[#index + 1] = ms
      index[#index + 1] = id
      created = created + 1
    end
  end
  for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
    if #queued[pri] > 0 then
      redis.call('RPUSH', prefix .. ':queue:' .. pri, unpack(queued[pri]))
    end
  end
  if #index > 0 then
    redis.call('ZADD', KEYS[1], unpack(index))
  end
end
if created > 0 then wake(prefix) end
local out = { created }
for _, id in ipairs(existing) do table.insert(out, id) end
return out
