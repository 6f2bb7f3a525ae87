-- Recover the jobs of a worker whose heartbeat has expired: each in-flight job goes back to
-- the head of its queue (earliest claimed first), and the lost attempt counts; a job
-- with no attempts left is dead-lettered, one whose cancellation was requested is cancelled.
-- Checking the heartbeat inside the script makes the check and the recovery one atomic step.
-- The leases' charges go back to the usage, and the worker's devices leave its pools.
-- Nothing is reaped during the hold after a Redis restart or failover (lib.lua), when
-- heartbeats may have expired only because nobody could refresh them.
-- Like claim, it never stops half-way: a job whose key something else overwrote is
-- dead-lettered, and a lease whose job has moved on (another worker or attempt owns it)
-- is dropped, so a reap can neither raise after pushing some jobs nor push one twice.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- Returns  -1 if the worker is alive, -2 during the restart hold, else the number of
--          leases recovered.
local prefix, worker = ARGV[1], ARGV[2]
local ms = now_ms()
-- The run id is read every time here, not only when LASTSAVE moved (one-second
-- resolution): reaps are rare, and a missed restart here would requeue live leases.
if restart_hold(prefix, ms, true) > 0 then return -2 end
if alive(prefix, worker) then
  return -1
end
local ik = prefix .. ':inflight:' .. worker
local flat = redis.call('HGETALL', ik)
local jobs = {}
for i = 1, #flat, 2 do
  table.insert(jobs, { id = flat[i], seq = lease_seq(flat[i + 1]), attempt = lease_attempt(flat[i + 1]) })
end
-- Every lease goes, so every charge comes back, whatever happens to its job.
local delta = {}
for i = 2, #flat, 2 do uncharge_lease(delta, flat[i]) end
-- LPUSH reverses order, so push the latest claim first and the earliest last.
table.sort(jobs, function(a, b) return a.seq > b.seq end)
local requeued = 0
for _, j in ipairs(jobs) do
  local jk = prefix .. ':job:' .. j.id
  local fields, err = read_job(jk, 'state', 'priority', 'attempt', 'attempt_limit', 'cancel_requested', 'worker',
    'charge')
  if not fields then
    set_aside(prefix, j.id, err)
  else
    local st, pri, attempt, limit, cancel, owner, charge = unpack(fields, 1, 7)
    local ours = st == 'running' and (owner == nil or owner == worker)
      and (j.attempt == nil or j.attempt == attempt)
    if ours and (not pri or not tonumber(attempt) or not tonumber(limit)) then
      -- Fields a job cannot be without: something else wrote this hash.
      set_aside(prefix, j.id, 'no priority, attempt or attempt limit')
      ours = false
    end
    if ours then
      local why = 'worker ' .. worker .. ' lost (heartbeat expired)'
      if cancel == '1' then
        redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ms, 'finished_at', ms, 'reason', why)
        event(prefix, j.id, 'running', 'cancelled', ms, attempt, worker, why)
        ended(prefix, j.id, ms)
      elseif (tonumber(attempt) or 0) >= (tonumber(limit) or 0) then
        redis.call('HSET', jk, 'state', 'dead', 'updated_at', ms, 'finished_at', ms, 'reason', why)
        redis.call('RPUSH', prefix .. ':dead', j.id)
        event(prefix, j.id, 'running', 'dead', ms, attempt, worker, why)
        ended(prefix, j.id, ms)
      else
        redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms, 'reason', why)
        requeue(prefix, j.id, pri, charge, true)
        event(prefix, j.id, 'running', 'queued', ms, attempt, worker, why)
        requeued = requeued + 1
      end
    end
  end
end
redis.call('DEL', ik)
redis.call('SREM', KEYS[1], worker)
redis.call('HDEL', prefix .. ':beats', worker)
apply_usage(prefix, delta)
-- Its devices leave the pool's capacity with it.
local pools = redis.call('HGET', prefix .. ':worker_pools', worker)
if pools then
  for p in string.gmatch(pools, '[^,]+') do redis.call('HDEL', prefix .. ':devices:' .. p, worker) end
  redis.call('HDEL', prefix .. ':worker_pools', worker)
end
if requeued > 0 or next(delta) then wake(prefix) end
return #jobs
