-- Cancel a job. A queued or retrying job is removed from its list and never starts; a
-- running job is flagged, and its worker (which watches the flag) stops it and acks it
-- as cancelled.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  job id
-- ARGV[3]  reason
-- Returns  'cancelled', 'cancelling' (running; the worker will stop it), 'not_found',
--          or 'already:STATE' when the job has already ended.
local prefix, id, reason = ARGV[1], ARGV[2], ARGV[3]
local jk = materialize(prefix, id)
local st, pri, attempt, charge = unpack(redis.call('HMGET', jk, 'state', 'priority', 'attempt', 'charge'))
if not st then return 'not_found' end
local ms = now_ms()
if st == 'queued' or st == 'retrying' or st == 'deferred' then
  if st == 'queued' then
    unqueue(prefix, id, pri, charge)
  else
    redis.call('ZREM', KEYS[1], id)
  end
  redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ms, 'finished_at', ms, 'reason', reason)
  event(prefix, id, st, 'cancelled', ms, attempt, '', reason)
  ended(prefix, id, ms)
  return 'cancelled'
elseif st == 'running' then
  redis.call('HSET', jk, 'cancel_requested', '1', 'reason', reason)
  return 'cancelling'
end
return 'already:' .. st
