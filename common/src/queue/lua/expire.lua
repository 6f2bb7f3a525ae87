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
-- The index ({ns}:jobs, in enqueue order) loses the ids of removed jobs among its first
-- WINDOW entries, where the oldest are: jobs usually end roughly in enqueue order, and a
-- job still kept there (running for days, queued behind a quota, dead and kept longer)
-- does not hold up the trimming of those behind it. The ids kept go back to the head in
-- their order. Past WINDOW kept jobs at the head, the rest waits until some of them go;
-- readers skip ids whose job is gone.
local WINDOW = 1000
local index = prefix .. ':jobs'
local ids = redis.call('LRANGE', index, 0, WINDOW - 1)
local keep, dropped = {}, 0
for _, id in ipairs(ids) do
  if job_exists(prefix, id) then
    keep[#keep + 1] = id
  else
    dropped = dropped + 1
  end
end
if dropped > 0 then
  redis.call('LTRIM', index, #ids, -1)
  local back = {}
  for i = #keep, 1, -1 do back[#back + 1] = keep[i] end
  if #back > 0 then redis.call('LPUSH', index, unpack(back)) end
end
return removed
