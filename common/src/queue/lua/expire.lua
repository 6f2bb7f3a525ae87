-- Retention: remove succeeded and cancelled jobs that ended before a cutoff from Redis
-- (the job store keeps them). Dead jobs stay for operators to look at or retry.
-- KEYS[1]  {ns}:finished
-- ARGV[1]  prefix
-- ARGV[2]  cutoff (ms): jobs that ended at or before it go
-- ARGV[3]  limit per call
-- Returns  the number of jobs removed.
local prefix, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
index_as_list(prefix)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, limit)
local removed = 0
for _, id in ipairs(ids) do
  local st = redis.call('HGET', prefix .. ':job:' .. id, 'state')
  if st ~= 'dead' then
    redis.call('DEL', prefix .. ':job:' .. id, prefix .. ':events:' .. id, prefix .. ':log:' .. id)
    removed = removed + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
-- The index ({ns}:jobs, in enqueue order) drops removed jobs from its head: the oldest
-- usually end first. An id whose job is gone but sits behind a live one stays until it
-- reaches the head; readers skip it.
local index = prefix .. ':jobs'
for _ = 1, limit * 2 do
  local head = redis.call('LINDEX', index, '0')
  if not head or redis.call('EXISTS', prefix .. ':job:' .. head) == 1 then break end
  redis.call('LPOP', index)
end
return removed
