-- Recomputes the usage from the leases (the in-flight hashes of every worker that may
-- hold one) and, when asked, writes it, in one atomic step: `scheduler quota check`.
-- Leases of versions that did not charge count for nothing, as they did.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  '1' to repair the usage, '0' to only compare
-- Returns  a flat list of field, recorded value, value from the leases, for each field
--          that differs.
local prefix, repair = ARGV[1], ARGV[2] == '1'
local truth = {}
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local flat = redis.call('HGETALL', prefix .. ':inflight:' .. w)
  for i = 2, #flat, 2 do
    local c = lease_charge(flat[i])
    if c then add_charge(truth, c, 1) end
  end
end
local recorded = {}
local flat = redis.call('HGETALL', prefix .. ':usage')
for i = 1, #flat, 2 do recorded[flat[i]] = tonumber(flat[i + 1]) or 0 end
local out = {}
local fields = {}
for f, _ in pairs(truth) do fields[f] = true end
for f, _ in pairs(recorded) do fields[f] = true end
local names = {}
for f, _ in pairs(fields) do names[#names + 1] = f end
table.sort(names)
for _, f in ipairs(names) do
  local want, have = truth[f] or 0, recorded[f] or 0
  if want ~= have then
    out[#out + 1] = f
    out[#out + 1] = int(have)
    out[#out + 1] = int(want)
    if repair then
      if want == 0 then redis.call('HDEL', prefix .. ':usage', f) else redis.call('HSET', prefix .. ':usage', f, int(want)) end
    end
  end
end
return out
