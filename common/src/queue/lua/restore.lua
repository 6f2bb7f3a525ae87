-- Put jobs the job store knows back into Redis after Redis lost them (restart without
-- persistence, FLUSHALL). Jobs Redis still holds are skipped, so running it twice, or
-- while workers run, is harmless. Queued jobs, and running ones (their lease went with
-- the loss), go to the head of their queues in the given order (oldest first):
-- they were waiting before anything newer. Deferred and retrying jobs keep their state
-- and wait in the delayed set until they are due, as they did before the loss.
-- KEYS[1]  {ns}:jobs
-- ARGV[1]  prefix
-- ARGV[2]  n
-- then per job, 9 values: id, priority, spec JSON, attempt, attempt limit, enqueued_at (ms),
--          state (queued | deferred | retrying), due (ms; for deferred and retrying),
--          charge (admission.lua; '' for the default)
-- Returns  the number of jobs restored.
local prefix = ARGV[1]
index_as_list(prefix)
local n = tonumber(ARGV[2])
local ms = now_ms()
local restored = 0
local ready = false
for i = n - 1, 0, -1 do
  local base = 3 + i * 9
  local id, pri, spec = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local attempt, limit, enq = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local state, due, charge = ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local jk = prefix .. ':job:' .. id
  if not job_exists(prefix, id) then
    if state ~= 'deferred' and state ~= 'retrying' then state = 'queued' end
    redis.call('HSET', jk, 'spec', spec, 'state', state, 'priority', pri,
      'attempt', attempt, 'attempt_limit', limit, 'enqueued_at', enq, 'updated_at', ms)
    if charge ~= '' then redis.call('HSET', jk, 'charge', charge) end
    if state == 'queued' then
      requeue(prefix, id, pri, charge ~= '' and charge or nil, true)
      ready = true
    else
      redis.call('ZADD', prefix .. ':delayed', due, id)
    end
    -- Older than anything enqueued since the loss: the head of the index.
    redis.call('LPUSH', KEYS[1], id)
    event(prefix, id, '', state, ms, attempt, '', 'restored from the job store')
    restored = restored + 1
  end
end
if ready then wake(prefix) end
return restored
