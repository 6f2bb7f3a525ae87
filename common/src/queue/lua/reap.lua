-- Recover the jobs of a worker whose heartbeat has expired: each in-flight job goes back to
-- the head of its priority list (earliest claimed first), and the lost attempt counts; a job
-- with no attempts left is dead-lettered, one whose cancellation was requested is cancelled.
-- Checking the heartbeat inside the script makes the check and the recovery one atomic step.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- Returns  -1 if the worker is alive, else the number of jobs recovered.
local prefix, worker = ARGV[1], ARGV[2]
if redis.call('EXISTS', prefix .. ':worker:' .. worker) == 1 then
  return -1
end
local ik = prefix .. ':inflight:' .. worker
local flat = redis.call('HGETALL', ik)
local jobs = {}
for i = 1, #flat, 2 do
  table.insert(jobs, { id = flat[i], seq = tonumber(flat[i + 1]) })
end
-- LPUSH reverses order, so push the latest claim first and the earliest last.
table.sort(jobs, function(a, b) return a.seq > b.seq end)
local ms = now_ms()
local requeued = 0
for _, j in ipairs(jobs) do
  local jk = prefix .. ':job:' .. j.id
  local st, pri, attempt, limit, cancel =
    unpack(redis.call('HMGET', jk, 'state', 'priority', 'attempt', 'attempt_limit', 'cancel_requested'))
  if st == 'running' then
    local why = 'worker ' .. worker .. ' lost (heartbeat expired)'
    if cancel == '1' then
      redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ms, 'finished_at', ms, 'reason', why)
      event(prefix, j.id, 'running', 'cancelled', ms, attempt, worker, why)
      ended(prefix, j.id, ms)
    elseif tonumber(attempt) >= tonumber(limit) then
      redis.call('HSET', jk, 'state', 'dead', 'updated_at', ms, 'finished_at', ms, 'reason', why)
      redis.call('RPUSH', prefix .. ':dead', j.id)
      event(prefix, j.id, 'running', 'dead', ms, attempt, worker, why)
      ended(prefix, j.id, ms)
    else
      redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms, 'reason', why)
      redis.call('LPUSH', prefix .. ':queue:' .. pri, j.id)
      event(prefix, j.id, 'running', 'queued', ms, attempt, worker, why)
      requeued = requeued + 1
    end
  end
end
redis.call('DEL', ik)
redis.call('SREM', KEYS[1], worker)
if requeued > 0 then wake(prefix) end
return #jobs
