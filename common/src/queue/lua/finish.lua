-- Record the end of an attempt and release the worker's lease on the job.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  job id
-- ARGV[4]  outcome: succeeded | failed | cancelled | fatal (failed, no retry)
-- ARGV[5]  exit code ('' when none)
-- ARGV[6]  reason ('' when none)
-- ARGV[7]  retry delay in ms (used when the attempt failed and attempts remain)
-- Returns  the job's new state, or 'stale' when this worker no longer holds the job
--          (its lease expired and the job was recovered; the newer attempt owns it).
local prefix, worker, id, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local code, reason, delay = ARGV[5], ARGV[6], tonumber(ARGV[7])
if redis.call('HDEL', prefix .. ':inflight:' .. worker, id) == 0 then
  return 'stale'
end
local jk = prefix .. ':job:' .. id
local ms = now_ms()
local attempt, limit, cancel = unpack(redis.call('HMGET', jk, 'attempt', 'attempt_limit', 'cancel_requested'))
attempt, limit = tonumber(attempt), tonumber(limit)
if cancel == '1' and outcome ~= 'succeeded' then outcome = 'cancelled' end

local extra = nil
if code ~= '' then extra = { code = code } end
local state
local from = 'running'
if outcome == 'succeeded' or outcome == 'cancelled' then
  state = outcome
else
  event(prefix, id, 'running', 'failed', ms, attempt, worker, reason, extra)
  from = 'failed'
  if outcome == 'failed' and attempt < limit then
    state = 'retrying'
    redis.call('ZADD', KEYS[1], ms + delay, id)
  else
    state = 'dead'
    redis.call('RPUSH', prefix .. ':dead', id)
  end
end
redis.call('HSET', jk, 'state', state, 'updated_at', ms, 'reason', reason)
if code ~= '' then redis.call('HSET', jk, 'exit_code', code) end
if state ~= 'retrying' then
  redis.call('HSET', jk, 'finished_at', ms)
  ended(prefix, id, ms)
end
local detail = reason
if state == 'retrying' then detail = 'next attempt in ' .. delay .. ' ms' end
event(prefix, id, from, state, ms, attempt, worker, detail, extra)
return state
