-- Claim up to N jobs for a worker: promote due retries, then pop from the head of the most
-- urgent non-empty priority list (moving to the next list only when one is empty) and
-- record each job in the worker's in-flight hash, all in one atomic step, so a worker
-- killed at any instant leaves every job either queued or in flight. Claiming several at
-- once lets a worker with many free slots fill them in one round trip.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  N, the most jobs to claim (free slots)
-- Returns  a flat array, 6 values per claimed job (empty when nothing is queued):
--          id, spec JSON, attempt, priority, enqueued_at, attempt_limit
local prefix, worker, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local us = t[1] .. string.format('%06d', tonumber(t[2]))

promote_due(prefix, KEYS[1], ms)

local out = {}
local claimed = 0
for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
  local qk = prefix .. ':queue:' .. pri
  while claimed < want do
    local id = redis.call('LPOP', qk)
    if not id then break end
    local jk = prefix .. ':job:' .. id
    if redis.call('HGET', jk, 'state') == 'queued' then
      local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
      redis.call('HSET', jk, 'state', 'running', 'worker', worker, 'started_at', ms, 'started_us', us,
        'updated_at', ms)
      redis.call('HDEL', jk, 'exit_code', 'reason', 'progress', 'finished_at')
      -- The lease records the claim's sequence number, so recovery can restore queue order.
      redis.call('HSET', prefix .. ':inflight:' .. worker, id, redis.call('INCR', prefix .. ':claims'))
      event(prefix, id, 'queued', 'running', ms, attempt, worker)
      local spec, enq, limit = unpack(redis.call('HMGET', jk, 'spec', 'enqueued_at', 'attempt_limit'))
      for _, v in ipairs({ id, spec, attempt, pri, enq, limit }) do table.insert(out, v) end
      claimed = claimed + 1
    end
    -- A stale entry (job deleted or no longer queued) is dropped; look further.
  end
  if claimed == want then break end
end
if claimed > 0 then
  redis.call('SADD', prefix .. ':workers', worker)
  if any_queued(prefix) then wake(prefix) end
end
return out
