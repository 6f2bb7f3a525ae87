-- Claim the next job for a worker: promote due retries, then pop the head of the most
-- urgent non-empty priority list and record it in the worker's in-flight hash, all in one
-- atomic step, so a worker killed at any instant leaves the job either queued or in flight.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- Returns  false when nothing is queued, else
--          { id, spec JSON, attempt, priority, enqueued_at, attempt_limit }
local prefix, worker = ARGV[1], ARGV[2]
local ms = now_ms()

promote_due(prefix, KEYS[1], ms)

for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
  local qk = prefix .. ':queue:' .. pri
  while true do
    local id = redis.call('LPOP', qk)
    if not id then break end
    local jk = prefix .. ':job:' .. id
    if redis.call('HGET', jk, 'state') == 'queued' then
      local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
      redis.call('HSET', jk, 'state', 'running', 'worker', worker, 'started_at', ms, 'updated_at', ms)
      redis.call('HDEL', jk, 'exit_code', 'reason', 'progress', 'finished_at')
      -- The lease records the claim's sequence number, so recovery can restore queue order.
      redis.call('HSET', prefix .. ':inflight:' .. worker, id, redis.call('INCR', prefix .. ':claims'))
      redis.call('SADD', prefix .. ':workers', worker)
      event(prefix, id, 'queued', 'running', ms, attempt, worker)
      if any_queued(prefix) then wake(prefix) end
      local spec, enq, limit = unpack(redis.call('HMGET', jk, 'spec', 'enqueued_at', 'attempt_limit'))
      return { id, spec, attempt, pri, enq, limit }
    end
    -- A stale entry (job deleted or no longer queued): drop it and look further.
  end
end
return false
