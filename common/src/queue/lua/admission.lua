-- Admission: which queued job may take GPUs now. Prepended (after lib.lua) to every
-- script, so the claim, the reasons (`why.lua`) and the releases share one definition.
--
-- A job's charge is what its lease holds: 'POOL|TEAM|GPUS|GROUP' (the job hash's
-- `charge` field, absent for the common 'default|default|0|'). Pool, team and group
-- names cannot hold '|' or ':' (spec validation). Usage ({ns}:usage) is the sum of the
-- charges of all leases, and only the scripts that write or remove a lease (claim,
-- finish, release, reap) change it, in the same step:
--   j                  running jobs
--   t|TEAM             running jobs of a team
--   j|POOL             running jobs in a pool
--   g|POOL             GPUs used in a pool
--   j|POOL|TEAM        running jobs of a team in a pool
--   g|POOL|TEAM        GPUs a team uses in a pool
--   grp|GROUP          running jobs of a group
--
-- The configuration ({ns}:admission, JSON written by `scheduler quota`), all optional:
--   max_running        cap on running jobs
--   teams.T.max_running
--   pools.P.capacity   GPUs (absent: the sum of what live workers of P advertise)
--   pools.P.max_running, pools.P.strategy ('strict' | 'best-effort'), pools.P.reserve_after_secs
--   pools.P.quotas.T   { nominal, borrowing_limit, lending_limit, cohort }
-- Group caps live in {ns}:groups (group -> most running at once), set at enqueue.

local DEFAULT_CHARGE = 'default|default|0|'

-- The common charge costs no parsing: it is absent from the job hash, and empty in a
-- lease ('SEQ:ATTEMPT:TOKEN|').
local function is_default(c)
  return not c or c == '' or c == DEFAULT_CHARGE
end

-- Charges repeat (a batch shares one), so each is parsed once per script call.
local PARSED = {}

local function parse_charge(c)
  if is_default(c) then return 'default', 'default', 0, '' end
  local p = PARSED[c]
  if not p then
    local pool, team, gpus, group = string.match(c, '^([^|]*)|([^|]*)|(%d+)|(.*)$')
    if pool then p = { pool, team, tonumber(gpus), group } else p = { 'default', 'default', 0, '' } end
    PARSED[c] = p
  end
  return p[1], p[2], p[3], p[4]
end

-- The list a queued job waits in while its team, group and pool are not held up: one
-- per priority and pool (the default pool's is the plain priority list).
local function queue_key(prefix, pri, pool)
  if pool == 'default' then return prefix .. ':queue:' .. pri end
  return prefix .. ':queue:' .. pri .. ':' .. pool
end

-- A lane: the jobs of one priority, pool, team and group set aside ("parked") while its
-- head cannot be admitted, so that they hold up neither other teams nor the claim. Jobs
-- of a parked lane go to its tail, not to the queue, so FIFO holds within a team. Jobs
-- that need GPUs and jobs that need none have lanes of their own ('g' and 'c'): every job
-- of a GPU lane needs at least one, so a claim can tell from the lane alone, without
-- reading a job, that a team held up for one GPU has nothing there to admit. The index
-- {ns}:parked:PRI:POOL lists its parked lanes as 'TEAM:GROUP:g|c'.
local function lane_member(team, group, gpus)
  local kind = 'c'
  if gpus > 0 then kind = 'g' end
  return team .. ':' .. group .. ':' .. kind
end

local function lane_key(prefix, pri, pool, team, group, gpus)
  return prefix .. ':parked:' .. pri .. ':' .. pool .. ':' .. lane_member(team, group, gpus)
end

local function lanes_key(prefix, pri, pool)
  return prefix .. ':parked:' .. pri .. ':' .. pool
end

-- Puts a queued job back in line: at the head (it was ahead of what waits: a released or
-- recovered lease) or the tail. It joins its lane when the lane is parked.
local function requeue(prefix, id, pri, charge, at_head)
  local pool, team, gpus, group = parse_charge(charge)
  local lk = lane_key(prefix, pri, pool, team, group, gpus)
  local key = queue_key(prefix, pri, pool)
  if redis.call('EXISTS', lk) == 1 then key = lk end
  if at_head then redis.call('LPUSH', key, id) else redis.call('RPUSH', key, id) end
  if pool ~= 'default' then redis.call('SADD', prefix .. ':pools', pool) end
end

-- Removes a queued job from wherever it waits. Returns true when it was found.
local function unqueue(prefix, id, pri, charge)
  local pool, team, gpus, group = parse_charge(charge)
  if redis.call('LREM', queue_key(prefix, pri, pool), 1, id) > 0 then return true end
  local lk = lane_key(prefix, pri, pool, team, group, gpus)
  if redis.call('LREM', lk, 1, id) > 0 then
    if redis.call('EXISTS', lk) == 0 then
      redis.call('SREM', lanes_key(prefix, pri, pool), lane_member(team, group, gpus))
    end
    return true
  end
  return false
end

local function any_queued(prefix)
  for _, p in ipairs({ 'p0', 'p1', 'p2' }) do
    if redis.call('LLEN', prefix .. ':queue:' .. p) > 0 then return true end
  end
  return false
end

-- Moves retries whose backoff has elapsed from the delayed set to the tail of their
-- queue (or parked lane) (at most 100 per call, to bound the script's run time).
local function promote_due(prefix, delayed_key, ms)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', ms, 'LIMIT', '0', '100')
  local moved = 0
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed_key, id)
    local jk = prefix .. ':job:' .. id
    local st, pri, attempt, charge = unpack(redis.call('HMGET', jk, 'state', 'priority', 'attempt', 'charge'))
    if st == 'retrying' or st == 'deferred' then
      redis.call('HSET', jk, 'state', 'queued', 'updated_at', ms)
      requeue(prefix, id, pri, charge, false)
      local why = 'backoff elapsed'
      if st == 'deferred' then why = 'start time reached' end
      event(prefix, id, st, 'queued', ms, attempt, '', why)
      moved = moved + 1
    end
  end
  return moved
end


-- The usage fields a charge adds to (or, with sign -1, takes from), accumulated in `acc`.
-- Per charge, the usage fields it counts in and by how much, built once per call.
local FIELDS = {}

local function charge_fields(charge)
  local key = charge or ''
  if is_default(charge) then key = '' end
  local fs = FIELDS[key]
  if fs then return fs end
  local pool, team, gpus, group = parse_charge(charge)
  fs = { 'j', 1, 't|' .. team, 1, 'j|' .. pool, 1, 'j|' .. pool .. '|' .. team, 1 }
  if gpus > 0 then
    for _, v in ipairs({ 'g|' .. pool, gpus, 'g|' .. pool .. '|' .. team, gpus }) do fs[#fs + 1] = v end
  end
  if group ~= '' then
    fs[#fs + 1] = 'grp|' .. group
    fs[#fs + 1] = 1
  end
  FIELDS[key] = fs
  return fs
end

local function add_charge(acc, charge, sign)
  local fs = charge_fields(charge)
  for i = 1, #fs, 2 do
    local f = fs[i]
    acc[f] = (acc[f] or 0) + sign * fs[i + 1]
  end
end

-- Writes accumulated usage changes; a counter back at zero is removed.
local function apply_usage(prefix, acc)
  local k = prefix .. ':usage'
  for f, d in pairs(acc) do
    if d ~= 0 then
      if redis.call('HINCRBY', k, f, d) == 0 then redis.call('HDEL', k, f) end
    end
  end
end

-- The charge a lease holds (nil for leases of versions that did not charge).
local function lease_charge(v)
  return string.match(v or '', '|(.*)$')
end

-- Returns a lease's charge to the usage accumulated in `acc`.
local function uncharge_lease(acc, lease)
  local c = lease_charge(lease)
  if c then add_charge(acc, c, -1) end
end

-- What admission reads, once per script call. The usage is read whole (its fields are
-- bounded by pools x teams + groups running) and kept up to date in memory as jobs are
-- admitted, so later decisions in the same call see them.
local function admission_context(prefix)
  local ctx = { prefix = prefix, groups = {}, capacity = {}, reservation = {} }
  local raw = redis.call('GET', prefix .. ':admission')
  if raw then ctx.cfg = cjson.decode(raw) end
  return ctx
end

-- The usage, read on first need (a claim of jobs no rule applies to never reads it),
-- with what this call has charged so far (`ctx.pending`, written at its end) on top.
local function usage_of(ctx)
  if not ctx.usage then
    ctx.usage = {}
    local flat = redis.call('HGETALL', ctx.prefix .. ':usage')
    for i = 1, #flat, 2 do ctx.usage[flat[i]] = tonumber(flat[i + 1]) end
    for f, d in pairs(ctx.pending or {}) do ctx.usage[f] = (ctx.usage[f] or 0) + d end
  end
  return ctx.usage
end

local function used(ctx, f)
  return usage_of(ctx)[f] or 0
end

-- Whether a claim charges a job's lease. Always, except for the common charge while no
-- configuration exists: nothing reads those counters then, and leaving them alone keeps
-- the plain queue as fast as it was. Such a lease carries no charge ('SEQ:ATTEMPT:TOKEN',
-- as leases of earlier versions), so releasing it returns nothing; if a configuration
-- appears meanwhile, those jobs count for nothing until they end.
local function charges(ctx, charge)
  return ctx.cfg ~= nil or not is_default(charge)
end

local function pool_cfg(ctx, pool)
  local cfg = ctx.cfg
  if not cfg or type(cfg.pools) ~= 'table' then return nil end
  return cfg.pools[pool]
end

local function group_cap(ctx, group)
  if group == '' then return nil end
  local c = ctx.groups[group]
  if c == nil then
    c = tonumber(redis.call('HGET', ctx.prefix .. ':groups', group)) or false
    ctx.groups[group] = c
  end
  return c or nil
end

-- A pool's GPUs: declared, or what its live workers advertise ({ns}:devices:POOL,
-- worker -> count, written by their heartbeats and removed when they are reaped).
local function capacity(ctx, pool)
  local c = ctx.capacity[pool]
  if c ~= nil then return c end
  local pc = pool_cfg(ctx, pool)
  if pc and pc.capacity then
    c = pc.capacity
  else
    c = 0
    for _, v in ipairs(redis.call('HVALS', ctx.prefix .. ':devices:' .. pool)) do c = c + (tonumber(v) or 0) end
  end
  ctx.capacity[pool] = c
  return c
end

-- The job holding a pool's reservation, as { id, pri }, or false. A reservation whose
-- job is no longer queued is dropped.
local function reservation(ctx, pool)
  local r = ctx.reservation[pool]
  if r ~= nil then return r end
  r = false
  -- Only a configured pool has reservations (admit_reason checks them only there).
  if not pool_cfg(ctx, pool) then
    ctx.reservation[pool] = r
    return r
  end
  local rk = ctx.prefix .. ':reserve:' .. pool
  local v = redis.call('GET', rk)
  if v then
    -- 'ID|PRI', or 'ID|PRI|all' for a preemption's, which holds the victims' GPUs
    -- against every priority (preempt.lua).
    local all = false
    local id, pri = string.match(v, '^([^|]*)|(p%d)|all$')
    if id then all = true else id, pri = string.match(v, '^(.*)|(p%d)$') end
    if id and job_field(ctx.prefix, id, 'state') == 'queued' then
      r = { id = id, pri = pri, all = all }
    else
      redis.call('DEL', rk)
    end
  end
  ctx.reservation[pool] = r
  return r
end

local function reserve(ctx, pool, id, pri, all)
  local v = id .. '|' .. pri
  if all then v = v .. '|all' end
  redis.call('SET', ctx.prefix .. ':reserve:' .. pool, v)
  ctx.reservation[pool] = { id = id, pri = pri, all = all == true }
end

local function unreserve(ctx, pool, id)
  local r = reservation(ctx, pool)
  if r and r.id == id then
    redis.call('DEL', ctx.prefix .. ':reserve:' .. pool)
    ctx.reservation[pool] = false
  end
end

-- Checks a team's quota in a pool for `gpus` more. Returns nil, or the reason:
-- { 'quota', team, pool, used, nominal, borrowing limit (-1: none), lendable left in the
-- cohort }.
-- A pool's quota entries, built once per script call: per team its nominal quota,
-- limits, cohort and usage field; teams without an entry share what the entries leave
-- of the capacity, as one entry ('*') that lends its unused part to the pool's default
-- cohort and borrows nothing.
local function quota_entries(ctx, pc, pool)
  ctx.quotas = ctx.quotas or {}
  local q = ctx.quotas[pool]
  if q then return q end
  local entries, assigned = {}, 0
  for t, e in pairs(pc.quotas) do
    entries[t] = { nominal = e.nominal or 0, borrowing = e.borrowing_limit, lending = e.lending_limit,
      cohort = e.cohort or '', field = 'g|' .. pool .. '|' .. t }
    assigned = assigned + (e.nominal or 0)
  end
  entries['*'] = { nominal = math.max(0, capacity(ctx, pool) - assigned), borrowing = 0, cohort = '' }
  q = { entries = entries, pool_field = 'g|' .. pool }
  ctx.quotas[pool] = q
  return q
end

-- The GPUs an entry uses now ('*': what the pool's users without an entry use).
local function entry_used(ctx, q, key)
  local e = q.entries[key]
  if e.field then return used(ctx, e.field) end
  local u = used(ctx, q.pool_field)
  for _, m in pairs(q.entries) do
    if m.field then u = u - used(ctx, m.field) end
  end
  return u
end

local QUOTA = { 'quota' }

local function quota_reason(ctx, id, pc, pool, team, gpus, no_borrow)
  local quotas = pc.quotas
  if type(quotas) ~= 'table' or next(quotas) == nil then return nil end
  local q = quota_entries(ctx, pc, pool)
  local key = team
  if not quotas[team] then key = '*' end
  local e = q.entries[key]
  local e_used = entry_used(ctx, q, key)
  if e_used + gpus <= e.nominal then return nil end
  local limit = -1
  if e.borrowing then limit = e.borrowing end
  if limit >= 0 and e_used + gpus - e.nominal > limit then
    -- A claim's look at a whole lane (no job id) needs only the code.
    if id == '' then return QUOTA end
    return { 'quota', team, pool, e_used, e.nominal, limit, 0 }
  end
  -- Borrowing: the cohort must have that much unused, less what other members keep for
  -- themselves (their nominal beyond their lending limit).
  local total, use, kept = 0, 0, 0
  for t, m in pairs(q.entries) do
    if m.cohort == e.cohort then
      local u = entry_used(ctx, q, t)
      total = total + m.nominal
      use = use + u
      if t ~= key and m.lending then
        kept = kept + math.max(0, (m.nominal - m.lending) - u)
      end
    end
  end
  local lendable = total - use - kept
  if gpus > lendable then
    return { 'quota', team, pool, e_used, e.nominal, limit, math.max(0, lendable) }
  end
  -- It may borrow. The claim first admits what needs no borrowing, so a team below its
  -- quota gets the capacity that frees before anyone borrows it again.
  if no_borrow then return { 'borrowing' } end
  return nil
end

-- Reasons that hold up every job of the pool behind them (strict queueing stops there).
local POOL_WIDE = { pool_cap = true, pool_full = true, reserved = true, global_cap = true }

-- Why a job cannot be admitted now (nil when it can), as a list: a code, then its
-- figures. With `no_borrow`, a job that would have to borrow gets { 'borrowing' } (the
-- claim's first pass). Checked in this order: group, team cap, global cap, pool cap, reservation,
-- team quota (with borrowing), pool capacity. The worker's own devices are not part of
-- it: they only decide which worker takes the job.
local function admit_parts(ctx, id, pri, pool, team, gpus, group, no_borrow)
  local g = group_cap(ctx, group)
  if g and used(ctx, 'grp|' .. group) >= g then
    return { 'group', group, used(ctx, 'grp|' .. group), g }
  end
  local cfg = ctx.cfg
  if cfg then
    local tc = type(cfg.teams) == 'table' and cfg.teams[team]
    if tc and tc.max_running and used(ctx, 't|' .. team) >= tc.max_running then
      return { 'team_cap', team, used(ctx, 't|' .. team), tc.max_running }
    end
    if cfg.max_running and used(ctx, 'j') >= cfg.max_running then
      return { 'global_cap', used(ctx, 'j'), cfg.max_running }
    end
  end
  local pc = pool_cfg(ctx, pool)
  if not pc then return nil end
  if pc.max_running and used(ctx, 'j|' .. pool) >= pc.max_running then
    return { 'pool_cap', pool, used(ctx, 'j|' .. pool), pc.max_running }
  end
  if gpus == 0 then return nil end
  local r = reservation(ctx, pool)
  if r and r.id ~= id and (r.pri <= pri or r.all) then
    return { 'reserved', pool, r.id }
  end
  local q = quota_reason(ctx, id, pc, pool, team, gpus, no_borrow)
  if q then return q end
  local cap = capacity(ctx, pool)
  if used(ctx, 'g|' .. pool) + gpus > cap then
    return { 'pool_full', pool, used(ctx, 'g|' .. pool), cap, gpus }
  end
  return nil
end

local function admit_reason(ctx, id, pri, charge, no_borrow)
  local pool, team, gpus, group = parse_charge(charge)
  return admit_parts(ctx, id, pri, pool, team, gpus, group, no_borrow)
end

-- Whether a job that could not be admitted for `reason` has waited long enough to
-- reserve its pool: only capacity (or a worker with enough free devices) keeps it out,
-- and it has been held up for the pool's reserve_after (default 10 min).
local function may_reserve(ctx, pool, since, ms)
  local pc = pool_cfg(ctx, pool)
  if not pc or reservation(ctx, pool) then return false end
  local after = (pc.reserve_after_secs or 600) * 1000
  return tonumber(ms) - (tonumber(since) or tonumber(ms)) >= after
end

local function strict(ctx, pool)
  local pc = pool_cfg(ctx, pool)
  return pc ~= nil and pc.strategy == 'strict'
end
