-- Why a queued job is not running yet, computed with the claim's own rules
-- (admission.lua), and where it stands. Reads only, apart from dropping a reservation
-- whose job has moved on.
-- ARGV[1]  prefix
-- ARGV[2]  job id
-- Returns  {} when the job is not queued; else { position, reason code, figures... }:
--          position is the number of jobs ahead of it at its priority or a more urgent
--          one, in its pool (-1 when it is in no list: a protocol fault).
local prefix, id = ARGV[1], ARGV[2]
local st, pri, charge = unpack(job_fields(prefix, id, 'state', 'priority', 'charge'))
if st ~= 'queued' then return {} end
local pool, team, gpus, group = parse_charge(charge)

-- Everything queued or parked in a priority and pool.
local function depth(p)
  local n = redis.call('LLEN', queue_key(prefix, p, pool))
  for _, m in ipairs(redis.call('SMEMBERS', lanes_key(prefix, p, pool))) do
    n = n + redis.call('LLEN', prefix .. ':parked:' .. p .. ':' .. pool .. ':' .. m)
  end
  return n
end

local ahead = 0
for _, p in ipairs({ 'p0', 'p1', 'p2' }) do
  if p == pri then break end
  ahead = ahead + depth(p)
end
local own = redis.call('LPOS', queue_key(prefix, pri, pool), id)
if not own then
  -- In its lane: behind the lane's jobs, and the other lanes' that are ahead of it.
  local lk = lane_key(prefix, pri, pool, team, group, gpus)
  own = redis.call('LPOS', lk, id)
end
local position = -1
if own then position = ahead + own end

local ctx = admission_context(prefix)
local why = admit_reason(ctx, id, pri, charge or DEFAULT_CHARGE)
local out = { int(position) }
if why then
  for _, v in ipairs(why) do out[#out + 1] = tostring(v) end
elseif position > 0 then
  out[#out + 1] = 'behind'
  out[#out + 1] = tostring(position)
else
  out[#out + 1] = 'worker'
  out[#out + 1] = pool
  out[#out + 1] = tostring(gpus)
end
return out
