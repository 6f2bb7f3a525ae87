-- Retention: remove from Redis succeeded and cancelled jobs whose end the job store has
-- recorded (the store keeps them). The caller reads the store and names each job with
-- the end time the store holds for it; a job goes only if Redis still shows it ended then,
-- so a job retried since, or one whose end never reached the store (its outbox entry was
-- set aside in {ns}:outbox:dead), stays. Dead jobs stay longer, for operators to look at
-- or retry: the caller names them only once their own, longer, retention has passed, and
-- they leave the dead-letter list too.
-- A job whose id a client chose leaves a tombstone in {ns}:retired, scored by its end
-- time, so enqueueing the same id again is still refused while the store has the job.
-- KEYS[1]  {ns}:finished
-- ARGV[1]  prefix
-- ARGV[2]  n, then per job: id, finished_at (ms) as the job store has it
-- Returns  the number of jobs removed.
local prefix, n = ARGV[1], tonumber(ARGV[2])
index_as_list(prefix)
local removed = 0
for i = 0, n - 1 do
  local id, stored_end = ARGV[3 + i * 2], ARGV[4 + i * 2]
  local jk = prefix .. ':job:' .. id
  local fields = read_job(jk, 'state', 'finished_at', 'idem')
  if fields then
    local st, finished, idem = unpack(fields, 1, 3)
    if (st == 'succeeded' or st == 'cancelled' or st == 'dead') and finished == stored_end then
      if st == 'dead' then redis.call('LREM', prefix .. ':dead', 1, id) end
      redis.call('DEL', jk, prefix .. ':events:' .. id, prefix .. ':log:' .. id)
      redis.call('ZREM', KEYS[1], id)
      if idem == '1' then redis.call('ZADD', prefix .. ':retired', finished, id) end
      removed = removed + 1
    end
  end
end
-- The index ({ns}:jobs, in enqueue order) drops removed jobs from its head: the oldest
-- usually end first. An id whose job is gone but sits behind a live one stays until it
-- reaches the head; readers skip it.
local index = prefix .. ':jobs'
for _ = 1, math.max(n, 1) * 2 do
  local head = redis.call('LINDEX', index, '0')
  if not head or redis.call('EXISTS', prefix .. ':job:' .. head) == 1 then break end
  redis.call('LPOP', index)
end
return removed
