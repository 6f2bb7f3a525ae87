-- Record the end of one or many attempts of one worker and release its leases on them.
-- A worker reports the attempts that ended while its previous report was in flight in
-- one call; each is settled on its own, exactly as if reported alone.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  n, the number of attempts reported
-- then per attempt, 5 values:
--          job id;
--          outcome: succeeded | failed | cancelled | fatal (failed, no retry);
--          exit code ('' when none); reason ('' when none);
--          retry delay in ms (used when the attempt failed and attempts remain)
-- Returns  per attempt, the job's new state, or 'stale' when this worker no longer holds
--          the job (its lease expired and the job was recovered; the newer attempt owns it).
local prefix, worker, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local inflight = prefix .. ':inflight:' .. worker
local ms = now_ms()
-- Ended jobs, as ZADD arguments for {ns}:finished: one call for the whole report.
local done = {}

local function finish(id, outcome, code, reason, delay)
  if redis.call('HDEL', inflight, id) == 0 then
    return 'stale'
  end
  local jk = prefix .. ':job:' .. id
  local attempt, limit, cancel = unpack(redis.call('HMGET', jk, 'attempt', 'attempt_limit', 'cancel_requested'))
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
    if outcome == 'failed' and tonumber(attempt) < tonumber(limit) then
      state = 'retrying'
      redis.call('ZADD', KEYS[1], int(tonumber(ms) + delay), id)
    else
      state = 'dead'
      redis.call('RPUSH', prefix .. ':dead', id)
    end
  end
  if state == 'retrying' then
    redis.call('HSET', jk, 'state', state, 'updated_at', ms, 'reason', reason)
  else
    redis.call('HSET', jk, 'state', state, 'updated_at', ms, 'reason', reason, 'finished_at', ms)
    table.insert(done, ms)
    table.insert(done, id)
  end
  if code ~= '' then redis.call('HSET', jk, 'exit_code', code) end
  local detail = reason
  if state == 'retrying' then detail = 'next attempt in ' .. int(delay) .. ' ms' end
  event(prefix, id, from, state, ms, attempt, worker, detail, extra)
  return state
end

local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 5
  out[i + 1] = finish(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]))
end
if #done > 0 then redis.call('ZADD', prefix .. ':finished', unpack(done)) end
return out
