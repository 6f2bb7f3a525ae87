-- Claim up to N jobs for a worker: promote due retries, then pop from the head of the most
-- urgent non-empty priority list (moving to the next list only when one is empty) and
-- record each job in the worker's in-flight hash, all in one atomic step, so a worker
-- killed at any instant leaves every job either queued or in flight. Claiming several at
-- once lets a worker with many free slots fill them in one round trip.
-- A worker whose heartbeat is gone claims nothing: the reaper could take such a lease at
-- once, while the worker starts the job. Nothing is claimed either while the hold after
-- a Redis restart lasts (lib.lua, restart_hold).
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  N, the most jobs to claim (free slots; at most 1000 are taken per call)
-- ARGV[4]  the claim's token, recorded in each lease (see lib.lua)
-- Returns  'fenced' when the worker's heartbeat is gone; { 'held', ms left } during the
--          hold; else 'ok' followed by 6 values per claimed job:
--          id, spec JSON, attempt, priority, enqueued_at, attempt_limit
local prefix, worker, want, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] or ''
-- Bounded so the leases fit one HSET (Lua's unpack takes a few thousand values at most).
want = math.min(want, 1000)
-- Microseconds too, kept for latency measurements (enqueue-to-start).
local ms, us = server_time()

if not alive(prefix, worker) then return { 'fenced' } end
local hold = restart_hold(prefix, ms)
if hold > 0 then return { 'held', int(hold) } end

promote_due(prefix, KEYS[1], ms)

local out = { 'ok' }
local leased = {}
local attempts = {}
for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
  local qk = prefix .. ':queue:' .. pri
  while #leased < want do
    -- As many as are still wanted in one pop; stale entries are dropped and we pop again.
    local ids = redis.call('LPOP', qk, int(want - #leased))
    if not ids then break end
    for _, id in ipairs(ids) do
      local jk = prefix .. ':job:' .. id
      -- The ids are already popped: nothing below may raise, or those after this one would
      -- be lost (a script's writes are not undone when it fails). A job key that is not a
      -- hash (written by something else) is set aside in the dead-letter list instead.
      local fields, err = read_job(jk, 'state', 'attempt', 'spec', 'enqueued_at', 'attempt_limit')
      if not fields then
        set_aside(prefix, id, err)
        fields = {}
      end
      local st, attempt, spec, enq, limit = unpack(fields, 1, 5)
      if st == 'queued' then
        local previous = tonumber(attempt) or 0
        attempt = int(previous + 1)
        local field, entry = transition(prefix, id, 'queued', 'running', ms, attempt, worker)
        redis.call('HSET', jk, 'state', 'running', 'attempt', attempt, 'worker', worker, 'started_at', ms,
          'started_us', us, 'updated_at', ms, field, entry)
        -- What an earlier attempt left; a job never started has none of it.
        if previous > 0 then redis.call('HDEL', jk, 'exit_code', 'reason', 'progress', 'finished_at') end
        for _, v in ipairs({ id, spec, attempt, pri, enq, limit }) do table.insert(out, v) end
        table.insert(leased, id)
        table.insert(attempts, attempt)
      end
      -- A stale entry (job deleted or no longer queued) is dropped; look further.
    end
  end
  if #leased == want then break end
end
if #leased > 0 then
  -- Each lease records its claim's sequence number, so recovery can restore queue order.
  local last = redis.call('INCRBY', prefix .. ':claims', #leased)
  local pairs_ = {}
  for i, id in ipairs(leased) do
    table.insert(pairs_, id)
    table.insert(pairs_, lease_value(int(last - #leased + i), attempts[i], token))
  end
  redis.call('HSET', prefix .. ':inflight:' .. worker, unpack(pairs_))
  redis.call('SADD', prefix .. ':workers', worker)
  if any_queued(prefix) then wake(prefix) end
end
return out
