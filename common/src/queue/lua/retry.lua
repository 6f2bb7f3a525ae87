-- Bring a dead, failed or cancelled job back: it is queued at the tail of its queue
-- with a fresh budget of attempts (attempt numbers keep counting up).
-- KEYS[1]  {ns}:dead
-- ARGV[1]  prefix
-- ARGV[2]  job id
-- ARGV[3]  attempts to grant
-- ARGV[4]  who retries it (named in the history; 'operator' when absent)
-- Returns  'retried', 'not_found', or the state that prevents the retry (which may be
--          'queued': the state, not a success).
local prefix, id, grant = ARGV[1], ARGV[2], tonumber(ARGV[3])
local by = ARGV[4] or 'operator'
local jk = prefix .. ':job:' .. id
local st, pri, attempt, charge = unpack(job_fields(prefix, id, 'state', 'priority', 'attempt', 'charge'))
if not st then return 'not_found' end
if st ~= 'dead' and st ~= 'failed' and st ~= 'cancelled' then return st end
local ms = now_ms()
redis.call('LREM', KEYS[1], 0, id)
local limit = int(tonumber(attempt) + grant)
redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms, 'attempt_limit', limit)
redis.call('ZREM', prefix .. ':finished', id)
redis.call('HDEL', jk, 'finished_at', 'cancel_requested', 'exit_code', 'reason')
requeue(prefix, id, pri, charge, false)
event(prefix, id, st, 'queued', ms, attempt, '', 'retried by ' .. by, { limit = limit })
wake(prefix)
return 'retried'
