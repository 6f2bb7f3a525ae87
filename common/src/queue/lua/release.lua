-- Hand unfinished jobs back to the head of their queues without counting the
-- interrupted attempt. Used when a worker shuts down, when it stopped an attempt itself
-- because it could not refresh its heartbeat (fencing), and for a lease the worker holds
-- but does not run (its claim reply was lost, or Redis lost the report that ended it).
-- A job whose cancellation was requested is cancelled instead. A job whose key
-- something else overwrote is dead-lettered, so its lease cannot stay forever. Each
-- lease's charge goes back to the usage as the lease goes.
-- With the reason 'preempted' (the worker stopped a victim of preempt.lua), the job goes
-- back to the head of its list the same way, and its history names the preemptor and the
-- GPU time lost (GPUs x ms since its last checkpoint, or its start); the job counts one
-- more preemption and its flag is cleared.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  reason
-- ARGV[4]  n, then per job: id, attempt ('0' when the caller does not know it), the token
--          of the claim that took it ('' when not known)
-- Returns  per job, its new state; 'stale' when this worker no longer holds the job for
--          that attempt; 'fenced' for all when the worker's heartbeat is gone.
local prefix, worker, reason, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
if not alive(prefix, worker) then
  for i = 1, n do out[i] = 'fenced' end
  return out
end
local inflight = prefix .. ':inflight:' .. worker
local ms = now_ms()
local woke = false
local delta = {}
for i = 0, n - 1 do
  local id, claimed, token = ARGV[5 + i * 3], ARGV[6 + i * 3], ARGV[7 + i * 3]
  local lease = redis.call('HGET', inflight, id)
  if not lease_matches(lease, claimed, token) then
    out[i + 1] = 'stale'
  else
    redis.call('HDEL', inflight, id)
    uncharge_lease(delta, lease)
    local jk = prefix .. ':job:' .. id
    local fields, err = read_job(jk, 'priority', 'cancel_requested', 'attempt', 'state', 'charge')
    if not fields then
      set_aside(prefix, id, err)
      out[i + 1] = 'dead'
    else
      local pri, cancel, attempt, st, charge = unpack(fields, 1, 5)
      if not pri or not st then
        -- Fields a job cannot be without: something else wrote this hash.
        set_aside(prefix, id, 'no state or priority')
        out[i + 1] = 'dead'
      elseif st ~= 'running' then
        -- Nothing to hand back: the job has moved on (it ended, or was restored).
        out[i + 1] = 'stale'
      elseif cancel == '1' then
        redis.call('HSET', jk, 'state', 'cancelled', 'updated_at', ms, 'finished_at', ms)
        event(prefix, id, 'running', 'cancelled', ms, attempt, worker, reason)
        ended(prefix, id, ms)
        out[i + 1] = 'cancelled'
      else
        attempt = int(math.max(0, (tonumber(attempt) or 1) - 1))
        redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms, 'attempt', attempt)
        requeue(prefix, id, pri, charge, true)
        local detail, extra = reason, nil
        if reason == 'preempted' then
          local by, why, started, ckpt = unpack(redis.call('HMGET', jk, 'preempt_by', 'preempt_reason',
            'started_at', 'checkpoint_at'))
          local pool, _, gpus = parse_charge(charge)
          local since = math.max(tonumber(started) or tonumber(ms), tonumber(ckpt) or 0)
          local lost = gpus * math.max(0, tonumber(ms) - since)
          why = why or 'priority'
          detail = 'preempted by ' .. (by or '?') .. ' (' .. why .. '); '
            .. string.format('%.1f', lost / 1000) .. ' GPU-s lost'
          redis.call('HINCRBY', jk, 'preemptions', 1)
          redis.call('HINCRBY', jk, 'lost_gpu_ms', int(lost))
          redis.call('HDEL', jk, 'preempt_by', 'preempt_at', 'preempt_reason', 'checkpoint_at')
          redis.call('SREM', prefix .. ':draining:' .. pool, id)
          local stat = pool .. '|' .. pri .. '|' .. why
          redis.call('HINCRBY', prefix .. ':preemption_stats', 'n|' .. stat, 1)
          redis.call('HINCRBY', prefix .. ':preemption_stats', 'lost|' .. stat, int(lost))
          extra = { lost_ms = int(lost) }
        end
        event(prefix, id, 'running', 'queued', ms, attempt, worker, detail, extra)
        woke = true
        out[i + 1] = 'queued'
      end
    end
  end
end
apply_usage(prefix, delta)
if woke or next(delta) then wake(prefix) end
return out
