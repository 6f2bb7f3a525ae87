-- Preemption: per configured pool, the most urgent queued job that its quota admits but
-- the pool's free capacity does not (reason pool_full) takes GPUs from running jobs it
-- may preempt. Victims are chosen, the pool is reserved for the preemptor and the
-- victims are flagged, in one atomic step; their workers see the flag (watch.lua) and
-- stop them gently, and release.lua hands each back uncounted.
--
-- Who may preempt whom ({ns}:admission, `preemption`):
--   policy.pN          the priorities a job of pN may preempt (default p0: p1, p2;
--                      p1: p2; p2: none)
--   reclaim            a team below its nominal quota in the pool takes it back from jobs
--                      of teams running over theirs, whatever their priority (default on)
--   min_runtime_secs   a job younger than this is left alone (default 300)
--   max_per_minute     most victims per pool in any 60 s (default 10)
--   max_preemptions    a job preempted this often is not preempted again (default 3)
--   enabled            false turns it all off
-- A running job is never a victim when its spec says "preemptible": false, or when it is
-- already flagged for another preemptor.
--
-- Victims, for a preemptor J that needs `need` GPUs more than the pool has free:
--   1. candidates: J's policy allows their priority, or J reclaims and their team is over
--      its nominal quota (a team stops being a reclaim candidate once the victims chosen
--      so far bring it down to its nominal);
--   2. ordered: jobs on borrowed quota first, then the lowest priority, then the least
--      work lost (GPUs x ms since the job's last checkpoint, or since its start), then
--      the job id, so the choice is deterministic;
--   3. taken in that order until they free `need`; if they cannot, nothing happens;
--   4. then, in reverse order of choice, each victim the others make unnecessary is
--      dropped (as Kueue does).
-- On a pool whose workers hold devices, the victims are all on one worker (the one
-- needing the fewest, then losing the least), since J can only start on one worker's
-- free devices.
-- The pool's reservation ({ns}:reserve:POOL) then names J, marked 'all': nothing else
-- that needs GPUs, of any priority, is admitted in the pool until J is, and the claim
-- admits J as soon as the victims' GPUs are back. Cancelling J, or J starting, drops the reservation
-- (admission.lua); a victim whose worker has not stopped it yet then keeps running.
-- One preemption per pool at a time: a pool with flagged victims of a live reservation
-- is left alone.
-- ARGV[1]  prefix
-- Returns  per preemption made: pool, preemptor id, victim count, then the victim ids
local prefix = ARGV[1]
local ctx = admission_context(prefix)
if not ctx.cfg or type(ctx.cfg.pools) ~= 'table' then return {} end
local pc = ctx.cfg.preemption
if type(pc) ~= 'table' then pc = {} end
if pc.enabled == false then return {} end
local ms = tonumber(now_ms())

local DEFAULT_POLICY = { p0 = { 'p1', 'p2' }, p1 = { 'p2' }, p2 = {} }
local policy = {}
for _, p in ipairs({ 'p0', 'p1', 'p2' }) do
  local list = DEFAULT_POLICY[p]
  if type(pc.policy) == 'table' and type(pc.policy[p]) == 'table' then list = pc.policy[p] end
  policy[p] = {}
  for _, v in ipairs(list) do policy[p][v] = true end
end
local reclaim_on = pc.reclaim ~= false
local min_runtime = (tonumber(pc.min_runtime_secs) or 300) * 1000
local per_minute = tonumber(pc.max_per_minute) or 10
local max_preemptions = tonumber(pc.max_preemptions) or 3
-- How deep into each list the search for a preemptor looks.
local DEPTH = 16

-- A team's nominal quota in a pool and the GPUs it uses there (teams without a quota
-- share the '*' entry), or nil when the pool has no quotas.
local function team_quota(pcfg, pool, team)
  if type(pcfg.quotas) ~= 'table' or next(pcfg.quotas) == nil then return nil end
  local q = quota_entries(ctx, pcfg, pool)
  local key = team
  if not pcfg.quotas[team] then key = '*' end
  return q.entries[key].nominal, entry_used(ctx, q, key), key
end

-- The first job of a pool that preemption could start: queued, and held up by the pool's
-- capacity only. Looks at the head of each parked lane and the first DEPTH of the queue,
-- most urgent priority first, oldest first within one.
local function preemptor(pool)
  for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
    local ids = redis.call('LRANGE', queue_key(prefix, pri, pool), 0, DEPTH - 1)
    for _, m in ipairs(redis.call('SMEMBERS', lanes_key(prefix, pri, pool))) do
      local head = redis.call('LINDEX', prefix .. ':parked:' .. pri .. ':' .. pool .. ':' .. m, 0)
      if head then ids[#ids + 1] = head end
    end
    local found = {}
    for _, id in ipairs(ids) do
      local st, charge, at = unpack(job_fields(prefix, id, 'state', 'charge', 'enqueued_us'))
      if st == 'queued' then
        local why = admit_reason(ctx, id, pri, charge, false)
        if why and why[1] == 'pool_full' then
          found[#found + 1] = { id = id, charge = charge, at = tonumber(at) or 0 }
        end
      end
    end
    table.sort(found, function(a, b)
      if a.at ~= b.at then return a.at < b.at end
      return a.id < b.id
    end)
    if found[1] then
      local j = found[1]
      local _, team, gpus = parse_charge(j.charge)
      return { id = j.id, pri = pri, team = team, gpus = gpus }
    end
  end
  return nil
end

-- Running jobs of a pool that hold GPUs, from the leases of every worker.
local function running_in(pool)
  local out = {}
  for _, w in ipairs(redis.call('SMEMBERS', prefix .. ':workers')) do
    local flat = redis.call('HGETALL', prefix .. ':inflight:' .. w)
    for i = 1, #flat, 2 do
      local c = lease_charge(flat[i + 1])
      if c then
        local p, team, gpus = parse_charge(c)
        if p == pool and gpus > 0 then
          out[#out + 1] = { id = flat[i], team = team, gpus = gpus, worker = w }
        end
      end
    end
  end
  return out
end

local function preemptible(v)
  local f = redis.call('HMGET', prefix .. ':job:' .. v.id, 'state', 'priority', 'started_at',
    'checkpoint_at', 'preemptions', 'preempt_by', 'spec')
  if f[1] ~= 'running' or f[6] then return false end
  v.pri = f[2] or 'p1'
  v.started = tonumber(f[3]) or ms
  if ms - v.started < min_runtime then return false end
  if (tonumber(f[5]) or 0) >= max_preemptions then return false end
  local ok, spec = pcall(cjson.decode, f[7] or '{}')
  if ok and type(spec) == 'table' and spec.preemptible == false then return false end
  local since = math.max(v.started, tonumber(f[4]) or 0)
  v.lost = v.gpus * (ms - since)
  return true
end

-- The victims among `candidates` (in order) that free `need` GPUs, or nil: taken in
-- order until they do (a reclaim takes only what a team holds over its nominal quota),
-- then, in reverse order, each one the others make unnecessary is dropped.
local function plan(candidates, need)
  local left = {}
  local chosen, freed = {}, 0
  for _, v in ipairs(candidates) do
    if freed >= need then break end
    local e = v.entry
    local ok = v.by_priority
    if not ok and e then ok = (left[e] or e.used) > e.nominal end
    if ok then
      chosen[#chosen + 1] = v
      freed = freed + v.gpus
      if e then left[e] = (left[e] or e.used) - v.gpus end
    end
  end
  if freed < need or #chosen == 0 then return nil end
  for i = #chosen, 1, -1 do
    if freed - chosen[i].gpus >= need then
      freed = freed - chosen[i].gpus
      table.remove(chosen, i)
    end
  end
  return chosen
end

local function lost_of(victims)
  local n = 0
  for _, v in ipairs(victims) do n = n + v.lost end
  return n
end

local out = {}
local pool_names = {}
for p in pairs(ctx.cfg.pools) do pool_names[#pool_names + 1] = p end
table.sort(pool_names)
for _, pool in ipairs(pool_names) do
  local pcfg = ctx.cfg.pools[pool]
  local r = reservation(ctx, pool)
  local busy = false
  if r then
    -- A reservation with victims still running under its flag is a preemption in
    -- progress; a victim that has ended (or whose flag moved on) leaves the set.
    for _, v in ipairs(redis.call('SMEMBERS', prefix .. ':draining:' .. pool)) do
      local st, by = unpack(redis.call('HMGET', prefix .. ':job:' .. v, 'state', 'preempt_by'))
      if st == 'running' and by == r.id then
        busy = true
      else
        redis.call('SREM', prefix .. ':draining:' .. pool, v)
      end
    end
  end
  local j = nil
  if not busy then j = preemptor(pool) end
  if j then
    local window = prefix .. ':preempted:' .. pool
    redis.call('ZREMRANGEBYSCORE', window, '-inf', ms - 60000)
    local allowance = per_minute - redis.call('ZCARD', window)
    local need = j.gpus - (capacity(ctx, pool) - used(ctx, 'g|' .. pool))
    local j_nominal, j_used = team_quota(pcfg, pool, j.team)
    local reclaims = reclaim_on and j_nominal ~= nil and j_used + j.gpus <= j_nominal
    -- Per quota entry, its nominal and use now.
    local entries = {}
    local function entry(team)
      local nominal, use, key = team_quota(pcfg, pool, team)
      if not nominal then return nil end
      if not entries[key] then entries[key] = { nominal = nominal, used = use } end
      return entries[key]
    end
    local running = {}
    local candidates = {}
    if allowance > 0 and need > 0 then
      running = running_in(pool)
      for _, v in ipairs(running) do
        if v.id ~= j.id and preemptible(v) then
          v.entry = entry(v.team)
          v.borrowed = v.entry ~= nil and v.entry.used > v.entry.nominal
          v.by_priority = policy[j.pri][v.pri] == true
          v.reclaim = reclaims and v.borrowed and v.team ~= j.team
          if v.by_priority or v.reclaim then candidates[#candidates + 1] = v end
        end
      end
    end
    table.sort(candidates, function(a, b)
      if a.borrowed ~= b.borrowed then return a.borrowed end
      if a.pri ~= b.pri then return a.pri > b.pri end
      if a.lost ~= b.lost then return a.lost < b.lost end
      return a.id < b.id
    end)
    local chosen = nil
    if #candidates > 0 then
      -- A worker that holds devices runs a job only on its own free ones, so the victims
      -- must be on one such worker, and free what it lacks as well as what the pool
      -- lacks. Workers without devices (Kubernetes) share the pool's capacity.
      local devices = redis.call('HGETALL', prefix .. ':devices:' .. pool)
      if #devices == 0 then
        chosen = plan(candidates, need)
      else
        local held = {}
        for _, v in ipairs(running) do held[v.worker] = (held[v.worker] or 0) + v.gpus end
        local plans = {}
        local has_devices = {}
        for i = 1, #devices, 2 do
          local w, count = devices[i], tonumber(devices[i + 1]) or 0
          has_devices[w] = true
          if count >= j.gpus then
            local mine = {}
            for _, v in ipairs(candidates) do
              if v.worker == w then mine[#mine + 1] = v end
            end
            local lacks = j.gpus - (count - (held[w] or 0))
            plans[#plans + 1] = plan(mine, math.max(need, lacks))
          end
        end
        local shared = {}
        for _, v in ipairs(candidates) do
          if not has_devices[v.worker] then shared[#shared + 1] = v end
        end
        if #shared > 0 then plans[#plans + 1] = plan(shared, need) end
        -- The fewest victims, then the least work lost.
        for _, p in pairs(plans) do
          if p and (not chosen or #p < #chosen or (#p == #chosen and lost_of(p) < lost_of(chosen))) then
            chosen = p
          end
        end
      end
    end
    if chosen and #chosen <= allowance then
      -- Held against every priority: the victims' GPUs are the preemptor's alone.
      reserve(ctx, pool, j.id, j.pri, true)
      local ids = {}
      for _, v in ipairs(chosen) do
        local why = 'priority'
        if not v.by_priority then why = 'reclaim' end
        redis.call('HSET', prefix .. ':job:' .. v.id, 'preempt_by', j.id, 'preempt_at', ms,
          'preempt_reason', why)
        redis.call('SADD', prefix .. ':draining:' .. pool, v.id)
        redis.call('ZADD', window, ms, v.id .. ':' .. ms)
        ids[#ids + 1] = v.id
      end
      redis.call('HSET', materialize(prefix, j.id), 'preempting', table.concat(ids, ','))
      out[#out + 1] = pool
      out[#out + 1] = j.id
      out[#out + 1] = #ids
      for _, id in ipairs(ids) do out[#out + 1] = id end
    end
  end
end
return out
