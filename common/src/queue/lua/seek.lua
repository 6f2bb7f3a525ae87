-- Where a page of `list` that starts after a cursor begins in the index ({ns}:jobs, in
-- enqueue order): a binary search for the last entry enqueued at or before the cursor's
-- time, so that a page deep in the index costs about log2(length) reads, not a walk.
-- Reads only.
-- ARGV[1]  prefix
-- ARGV[2]  the cursor's enqueue time (ms)
-- Returns  the index position to read back from (-1 when nothing is that old).
local prefix, ms = ARGV[1], tonumber(ARGV[2])
local index = prefix .. ':jobs'
if redis.call('TYPE', index).ok ~= 'list' then return -1 end
local n = redis.call('LLEN', index)
-- The enqueue time at position i, or at the nearest live job after it: the ids of jobs
-- retention removed stay in the index until it is trimmed. nil when none is near.
local function at(i)
  for j = i, math.min(i + 63, n - 1) do
    local id = redis.call('LINDEX', index, j)
    local t = id and job_field(prefix, id, 'enqueued_at')
    if t then return tonumber(t) end
  end
  return nil
end
local lo, hi, found = 0, n - 1, -1
while lo <= hi do
  local mid = math.floor((lo + hi) / 2)
  local t = at(mid)
  -- Removed jobs are the old ones: a stretch of them counts as older than the cursor.
  if t == nil or t <= ms then
    found = mid
    lo = mid + 1
  else
    hi = mid - 1
  end
end
return found
