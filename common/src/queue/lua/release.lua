-- Hand an unfinished job back to the head of its priority list (graceful worker shutdown).
-- The interrupted attempt is not counted against the job. A job whose cancellation was
-- requested is cancelled instead.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  job id
-- ARGV[4]  reason
-- Returns  the job's new state, or 'stale' when this worker no longer holds the job.
local prefix, worker, id, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HDEL', prefix .. ':inflight:' .. worker, id) == 0 then
  return 'stale'
end
local jk = prefix .. ':job:' .. id
local ms = now_ms()
local pri, cancel = unpack(redis.call('HMGET', jk, 'priority', 'cancel_requested'))
if cancel == '1' then
  local attempt = redis.call('HGET', jk, 'attempt')
  redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ms, 'finished_at', ms)
  event(prefix, id, 'running', 'cancelled', ms, attempt, worker, reason)
  ended(prefix, id, ms)
  return 'cancelled'
end
local attempt = int(redis.call('HINCRBY', jk, 'attempt', -1))
redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms)
redis.call('LPUSH', prefix .. ':queue:' .. pri, id)
event(prefix, id, 'running', 'queued', ms, attempt, worker, reason)
wake(prefix)
return 'queued'
