-- The queue's shape for `scheduler status` and the metrics, in one consistent read: per
-- priority, the jobs queued (in every pool's queue and parked lane), how many of them are
-- parked, and the oldest enqueue time among the heads; per pool, its capacity, GPUs used
-- and the job holding its reservation.
-- ARGV[1]  prefix
-- Returns  { per priority p0..p2: queued, parked, oldest head's enqueued_at ('' if none) },
--          then the number of pools and per pool: name, capacity ('' when unknown), GPUs
--          used, running jobs, reserved by ('' for none), the GPUs it reserves ('0');
--          then pairs of a reason and the jobs waiting for it: a parked lane counts
--          under its head's reason, the queues under 'admissible'.
local prefix = ARGV[1]
local ctx = admission_context(prefix)
local pools = { 'default' }
local seen = { default = true }
for _, p in ipairs(redis.call('SMEMBERS', prefix .. ':pools')) do
  if not seen[p] then pools[#pools + 1] = p; seen[p] = true end
end
if ctx.cfg and type(ctx.cfg.pools) == 'table' then
  for p, _ in pairs(ctx.cfg.pools) do
    if not seen[p] then pools[#pools + 1] = p; seen[p] = true end
  end
end
table.sort(pools)
local out = {}
local waiting = {}
local function wait_for(code, n)
  if n > 0 then waiting[code] = (waiting[code] or 0) + n end
end
for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
  local queued, parked, oldest = 0, 0, nil
  local function head_age(key)
    local head = redis.call('LINDEX', key, 0)
    if head then
      local at = tonumber(job_field(prefix, head, 'enqueued_at'))
      if at and (not oldest or at < oldest) then oldest = at end
    end
  end
  for _, pool in ipairs(pools) do
    local qk = queue_key(prefix, pri, pool)
    local n = redis.call('LLEN', qk)
    queued = queued + n
    wait_for('admissible', n)
    head_age(qk)
    for _, m in ipairs(redis.call('SMEMBERS', lanes_key(prefix, pri, pool))) do
      local lk = prefix .. ':parked:' .. pri .. ':' .. pool .. ':' .. m
      local n = redis.call('LLEN', lk)
      queued = queued + n
      parked = parked + n
      head_age(lk)
      local head = redis.call('LINDEX', lk, 0)
      if head then
        local why = admit_reason(ctx, head, pri, job_field(prefix, head, 'charge') or DEFAULT_CHARGE)
        wait_for(why and why[1] or 'admissible', n)
      end
    end
  end
  out[#out + 1] = int(queued)
  out[#out + 1] = int(parked)
  if oldest then out[#out + 1] = int(oldest) else out[#out + 1] = '' end
end
out[#out + 1] = int(#pools)
for _, pool in ipairs(pools) do
  local cap = ''
  local pc = pool_cfg(ctx, pool)
  if pc or redis.call('EXISTS', prefix .. ':devices:' .. pool) == 1 then cap = int(capacity(ctx, pool)) end
  local r = reservation(ctx, pool)
  local by, need = '', '0'
  if r then
    by = r.id
    local _, _, g = parse_charge(job_field(prefix, r.id, 'charge'))
    need = int(g)
  end
  -- The preemption victims still stopping for the reservation (preempt.lua).
  local draining = {}
  if r then
    for _, v in ipairs(redis.call('SMEMBERS', prefix .. ':draining:' .. pool)) do
      local st, by = unpack(redis.call('HMGET', prefix .. ':job:' .. v, 'state', 'preempt_by'))
      if st == 'running' and by == r.id then draining[#draining + 1] = v end
    end
    table.sort(draining)
  end
  for _, v in ipairs({ pool, cap, int(used(ctx, 'g|' .. pool)), int(used(ctx, 'j|' .. pool)), by, need,
    table.concat(draining, ',') }) do
    out[#out + 1] = v
  end
end
local codes = {}
for code, _ in pairs(waiting) do codes[#codes + 1] = code end
table.sort(codes)
for _, code in ipairs(codes) do
  out[#out + 1] = code
  out[#out + 1] = int(waiting[code])
end
return out
