-- Enqueue one or many jobs atomically, skipping ids that already exist (idempotent).
-- KEYS[1]  {ns}:jobs            (index of all jobs; declared for slot routing)
-- ARGV[1]  prefix               ("{ns}")
-- ARGV[2]  n, the number of jobs
-- then per job, 5 values: id, priority ("p0".."p2"), spec JSON, max attempts, not-before
--          (ms; a job not due yet waits in {ns}:delayed as 'deferred'; 0 = start now)
-- Returns  { created_count, existing_id_1, existing_id_2, ... }
local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Microseconds, kept for latency measurements (enqueue-to-start).
local us = t[1] .. string.format('%06d', tonumber(t[2]))
local created = 0
local existing = {}
for i = 0, n - 1 do
  local base = 3 + i * 5
  local id, pri, spec, max = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local not_before = tonumber(ARGV[base + 4])
  local jk = prefix .. ':job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    table.insert(existing, id)
  else
    local state = 'queued'
    if not_before > ms then state = 'deferred' end
    redis.call('HSET', jk, 'schema', 'v1', 'spec', spec, 'state', state, 'priority', pri,
      'attempt', 0, 'attempt_limit', max, 'enqueued_at', ms, 'enqueued_us', us, 'updated_at', ms)
    if state == 'queued' then
      redis.call('RPUSH', prefix .. ':queue:' .. pri, id)
    else
      redis.call('ZADD', prefix .. ':delayed', not_before, id)
    end
    redis.call('ZADD', KEYS[1], ms, id)
    event(prefix, id, '', state, ms, 0, '', '', { spec = spec, priority = pri, limit = max })
    created = created + 1
  end
end
if created > 0 then wake(prefix) end
local out = { created }
for _, id in ipairs(existing) do table.insert(out, id) end
return out
