-- Takes entries off the outbox once the job store has their transitions, and sets aside
-- the transitions it refused, in one atomic step.
-- KEYS[1]  {ns}:outbox
-- KEYS[2]  {ns}:outbox:batched (transitions past the first of enqueue entries: see
--          enqueue.lua)
-- KEYS[3]  {ns}:outbox:dead
-- ARGV[1]  d, the number of refused transitions to add to {ns}:outbox:dead first; per
--          transition: the number of field and value arguments, then those (its fields,
--          'origin' (its id) and 'error' among them)
-- Then     per entry to take off: its id, and how many transitions it carries past the
--          first
-- Returns  the number of entries taken off.
-- An entry already gone (another drainer took it) is left alone, and so is the counter:
-- it only ever counts what the outbox holds.
local at = 2
for _ = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[at])
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, at + 1, at + n))
  at = at + n + 1
end
local removed = 0
for i = at, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    removed = removed + 1
    local extra = tonumber(ARGV[i + 1])
    if extra > 0 then
      if redis.call('DECRBY', KEYS[2], extra) <= 0 then redis.call('DEL', KEYS[2]) end
    end
  end
end
return removed
