-- Claim up to N jobs for a worker: promote due retries, then admit jobs in strict
-- priority (all of p0 this worker may take before any of p1), and record each in the
-- worker's in-flight hash with its charge, adding the charge to the usage, all in one
-- atomic step: a worker killed at any instant leaves every job either queued or in
-- flight, and the usage equal to the sum of the leases.
-- Per priority and pool served, in order:
--   0. the job holding the pool's reservation, if it is of this priority;
--   1. the parked lanes (admission.lua), oldest head first: a lane's head, and in a
--      best-effort pool up to DEPTH jobs behind it, are admitted if they can be (first
--      only what needs no borrowing, then, after the queue, what borrows); a lane that
--      its team, group or the pool's capacity holds up for one GPU is passed over
--      without reading its jobs;
--   2. the queue: each job that can be admitted is taken; one that cannot is parked in
--      its lane (its team, group or the pool's capacity holds it up), or, when the
--      reason holds up the whole pool and the pool is strict, stops the pool.
-- A job admissible but needing more GPUs than this worker has free is left in place for
-- another worker; past DEPTH of them, the pool is left alone in this call (so no less
-- urgent job of the pool is taken while a more urgent one waits for devices). A job held
-- up like that, or by the pool's capacity, for the pool's reserve_after reserves the
-- pool: nothing of its priority or lower that needs GPUs is admitted there until it is.
-- A worker whose heartbeat is gone claims nothing: the reaper could take such a lease at
-- once, while the worker starts the job. Nothing is claimed either while the hold after
-- a Redis restart lasts (lib.lua, restart_hold).
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  N, the most jobs to claim (free slots; at most 1000 are taken per call)
-- ARGV[4]  the claim's token, recorded in each lease (see lib.lua)
-- ARGV[5]  the pools this worker serves, comma-separated, or '*' for all
-- ARGV[6]  the GPUs this worker has free, or -1 when it holds no devices (Kubernetes)
-- Returns  'fenced' when the worker's heartbeat is gone; { 'held', ms left } during the
--          hold; else 'ok' followed by 6 values per claimed job:
--          id, spec JSON, attempt, priority, enqueued_at, attempt_limit
local prefix, worker, want, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] or ''
local served, free = ARGV[5] or '*', tonumber(ARGV[6] or '-1')
-- Bounded so the leases fit one HSET (Lua's unpack takes a few thousand values at most).
want = math.min(want, 1000)
-- How far past jobs that cannot start here one call looks, per list.
local DEPTH = 16
-- Most jobs one call parks per queue, to bound its run time (the next call goes on).
local PARK_LIMIT = 500
-- Microseconds too, kept for latency measurements (enqueue-to-start).
local ms, us = server_time()

if not alive(prefix, worker) then return { 'fenced' } end
local hold = restart_hold(prefix, ms)
if hold > 0 then return { 'held', int(hold) } end

promote_due(prefix, KEYS[1], ms)

local ctx = admission_context(prefix)
local pools = {}
if served == '*' then
  pools[1] = 'default'
  local known = redis.call('SMEMBERS', prefix .. ':pools')
  table.sort(known)
  for _, p in ipairs(known) do
    if p ~= 'default' then pools[#pools + 1] = p end
  end
else
  for p in string.gmatch(served, '[^,]+') do pools[#pools + 1] = p end
end

local out = { 'ok' }
local leased, attempts, charges_of = {}, {}, {}
local delta = {}
ctx.pending = delta
local gpus_left = free
-- Pools left alone for the rest of this call (strict queueing, a cap, or devices).
local stopped = {}
local all_stopped = false
local more = false
-- Whether the first pass over the lanes left something that would borrow, or a
-- reservation ended: the second pass can admit more only then, when the queue parked
-- jobs just now, or when the first pass took or dropped jobs from a lane that still has
-- more (they were beyond what it looked at: one job in a strict pool). Usage only grows
-- within a claim, so nothing else it held up fits now.
local borrowers = false
local moved = false
local FIELDS = { 'state', 'attempt', 'spec', 'enqueued_at', 'attempt_limit', 'charge', 'blocked_since',
  'preempt_by' }

-- The pending records (lib.lua) of jobs read by this call that have no hash yet: a job
-- taken gets its hash in the claim's HSET (and its record goes in one HDEL at the end),
-- one marked held up just before.
local records = {}
local recorded, recorded_recs = {}, {}

local function take(id, jk, f, pri, pool)
  local previous = tonumber(f[2]) or 0
  local attempt = int(previous + 1)
  local charge = f[6] or ''
  local field, entry = transition(prefix, id, 'queued', 'running', ms, attempt, worker)
  local fields = { 'state', 'running', 'attempt', attempt, 'worker', worker, 'started_at', ms,
    'started_us', us, 'updated_at', ms, field, entry }
  local rec = records[id]
  if rec then
    records[id] = nil
    recorded[#recorded + 1] = id
    recorded_recs[#recorded_recs + 1] = rec
    pending_fields(prefix, rec, fields)
  end
  redis.call('HSET', jk, unpack(fields))
  -- What an earlier attempt left; a job never started has none of it.
  if previous > 0 then redis.call('HDEL', jk, 'exit_code', 'reason', 'progress', 'finished_at') end
  if f[7] then redis.call('HDEL', jk, 'blocked_since') end
  -- A victim flagged before its worker died (preempt.lua): the flag was for that attempt.
  if f[8] then
    redis.call('HDEL', jk, 'preempt_by', 'preempt_at', 'preempt_reason', 'checkpoint_at')
  end
  for _, v in ipairs({ id, f[3], attempt, pri, f[4], f[5] }) do out[#out + 1] = v end
  leased[#leased + 1] = id
  attempts[#attempts + 1] = attempt
  if charges(ctx, charge) then
    charges_of[#charges_of + 1] = '|' .. charge
    add_charge(delta, charge, 1)
    if ctx.usage then add_charge(ctx.usage, charge, 1) end
  else
    charges_of[#charges_of + 1] = ''
  end
  local _, _, gpus = parse_charge(charge)
  if free >= 0 then gpus_left = gpus_left - gpus end
  local r = reservation(ctx, pool)
  if r and r.id == id then borrowers = true end
  unreserve(ctx, pool, id)
end

-- Marks a job held up by capacity or devices, and reserves its pool once it has waited
-- long enough.
local function held_up(id, jk, f, pri, pool)
  local since = f[7]
  if not since then
    since = ms
    f[7] = ms
    if records[id] then
      records[id] = nil
      materialize(prefix, id)
    end
    redis.call('HSET', jk, 'blocked_since', ms)
  end
  if may_reserve(ctx, pool, since, ms) then reserve(ctx, pool, id, pri) end
end

-- What to do with one queued job: 'take', 'skip' (leave it for another worker),
-- 'park', 'stop' (nothing more from this pool), 'end' (nothing more at all) or 'stale'.
local function decide(id, jk, f, pri, pool, no_borrow)
  if f[1] ~= 'queued' then return 'stale' end
  local charge = f[6]
  local why = admit_reason(ctx, id, pri, charge, no_borrow)
  if not why then
    local _, _, gpus = parse_charge(charge)
    if free < 0 or gpus <= gpus_left then return 'take' end
    if gpus > 0 then held_up(id, jk, f, pri, pool) end
    return 'skip'
  end
  local code = why[1]
  if code == 'borrowing' then
    borrowers = true
    return 'skip'
  end
  if code == 'global_cap' then return 'end' end
  if code == 'pool_cap' then return 'stop' end
  if code == 'pool_full' then held_up(id, jk, f, pri, pool) end
  if POOL_WIDE[code] and strict(ctx, pool) then return 'stop' end
  return 'park'
end

local function read(id)
  local jk = prefix .. ':job:' .. id
  local rec = redis.call('HGET', prefix .. ':pending', id)
  if rec and redis.call('EXISTS', jk) == 0 then
    -- FIELDS from the record: state, attempt, spec, enqueued_at, attempt_limit, charge.
    local _, max, at, _, _, charge, _, spec = record_parts(prefix, rec)
    if spec then
      records[id] = rec
      return jk, { 'queued', '0', spec, at, max, charge ~= '' and charge or false, false, false }
    end
  end
  -- A hash written while the record waited (lib.lua, materialize).
  if rec then materialize(prefix, id) end
  local f, err = read_job(jk, unpack(FIELDS))
  if not f then
    set_aside(prefix, id, err)
    return jk, nil
  end
  return jk, f
end

-- 1. Parked lanes of one priority and pool: first without borrowing (a team below its
-- quota gets back what frees), then, after the queue, with it.
-- Per pool, whether it has parked lanes at any priority: one EXISTS instead of a
-- SMEMBERS per priority and pass, on the common path where nothing is parked.
local has_lanes = {}

local function from_lanes(pri, pool, no_borrow)
  if has_lanes[pool] == nil then
    has_lanes[pool] = redis.call('EXISTS', lanes_key(prefix, 'p0', pool), lanes_key(prefix, 'p1', pool),
      lanes_key(prefix, 'p2', pool)) > 0
  end
  if not has_lanes[pool] then return end
  local index = lanes_key(prefix, pri, pool)
  local members = redis.call('SMEMBERS', index)
  if #members == 0 then return end
  local lanes = {}
  for _, m in ipairs(members) do
    local team, group, kind = string.match(m, '^([^:]*):([^:]*):([gc])$')
    -- What holds up the whole lane needs no read of its jobs: checked for the least any
    -- of its jobs needs (one GPU in a GPU lane). A lane held up by its team or group is
    -- left alone; one held up by the pool has its head looked at (which may hold the
    -- reservation, or reserve the pool), and in a strict pool stops the pool there.
    local least = 0
    if kind == 'g' then least = 1 end
    local why = admit_parts(ctx, '', pri, pool, team or '', least, group or '', no_borrow)
    if why and why[1] == 'borrowing' then borrowers = true end
    if why and why[1] == 'global_cap' then all_stopped = true return end
    if why and why[1] == 'pool_cap' then stopped[pool] = true return end
    local depth = nil
    if why and (why[1] == 'pool_full' or why[1] == 'reserved') then depth = 1 end
    if not team then
      -- A lane of an earlier layout: looked at in full.
      why = nil
    end
    if not why or depth then
      local lk = prefix .. ':parked:' .. pri .. ':' .. pool .. ':' .. m
      local head = redis.call('LINDEX', lk, 0)
      if not head then
        redis.call('SREM', index, m)
      else
        local at = job_field(prefix, head, 'enqueued_us') or '0'
        lanes[#lanes + 1] = { key = lk, member = m, at = tonumber(at) or 0, depth = depth }
      end
    end
  end
  table.sort(lanes, function(a, b)
    if a.at ~= b.at then return a.at < b.at end
    return a.member < b.member
  end)
  local depth = DEPTH
  if strict(ctx, pool) then depth = 1 end
  for _, lane in ipairs(lanes) do
    if #leased >= want or stopped[pool] or all_stopped then return end
    local ids = redis.call('LRANGE', lane.key, 0, (lane.depth or depth) - 1)
    local gone = {}
    for _, id in ipairs(ids) do
      if #leased >= want then break end
      local jk, f = read(id)
      local what = 'stale'
      if f then what = decide(id, jk, f, pri, pool, no_borrow) end
      if what == 'take' then
        take(id, jk, f, pri, pool)
        gone[#gone + 1] = id
      elseif what == 'stale' then
        gone[#gone + 1] = id
      elseif what == 'end' then
        all_stopped = true
        break
      elseif what == 'stop' then
        stopped[pool] = true
        break
      elseif (lane.depth or depth) == 1 then
        break
      end
    end
    for _, id in ipairs(gone) do redis.call('LREM', lane.key, 1, id) end
    if redis.call('EXISTS', lane.key) == 0 then
      redis.call('SREM', index, lane.member)
    elseif #gone > 0 then
      moved = true
    end
  end
end

-- 0. The job holding the pool's reservation, wherever it waits: nothing else of its
-- priority or lower may take the GPUs it waits for, so it must never wait behind them.
local function reserved_first(pri, pool)
  local r = reservation(ctx, pool)
  if not r or r.pri ~= pri or #leased >= want then return end
  local jk, f = read(r.id)
  if f and decide(r.id, jk, f, pri, pool, false) == 'take' then
    unqueue(prefix, r.id, pri, f[6])
    take(r.id, jk, f, pri, pool)
  end
end

-- 2. The queue of one priority and pool.
local function from_queue(pri, pool)
  -- Returns how many jobs it parked (their lanes may hold jobs that fit now).
  local qk = queue_key(prefix, pri, pool)
  -- Jobs popped but to stay (left for another worker, or not looked at), in order: they
  -- go back to the head at the end. Nothing between the pop and that push may raise.
  local back = {}
  local skipped, parked = 0, 0
  -- Per charge: its lane and whether the lane is parked (one lookup per distinct charge).
  -- Charges that differ only in their GPU count share a lane, and so one record of it:
  -- once one of them parks, the others wait behind it.
  local lanes_of, lanes_by_key = {}, {}
  while #leased < want and not stopped[pool] and not all_stopped do
    local ids = redis.call('LPOP', qk, int(math.min(want - #leased, 100)))
    if not ids then break end
    for i, id in ipairs(ids) do
      if #leased >= want or stopped[pool] or all_stopped then
        back[#back + 1] = id
      else
        local jk, f = read(id)
        local what = 'stale'
        if f and f[1] == 'queued' then
          local ck = f[6] or ''
          local lane = lanes_of[ck]
          if not lane then
            local _, team, gpus, group = parse_charge(f[6])
            local lk = lane_key(prefix, pri, pool, team, group, gpus)
            lane = lanes_by_key[lk]
            if not lane then
              lane = { key = lk, member = lane_member(team, group, gpus), parked = redis.call('EXISTS', lk) == 1 }
              lanes_by_key[lk] = lane
            end
            lanes_of[ck] = lane
          end
          -- Its lane is parked: it waits behind the lane's jobs (FIFO within a team).
          if lane.parked then what = 'park' else what = decide(id, jk, f, pri, pool) end
          if what == 'park' then
            redis.call('RPUSH', lane.key, id)
            redis.call('SADD', lanes_key(prefix, pri, pool), lane.member)
            has_lanes[pool] = true
            lane.parked = true
            parked = parked + 1
            if parked >= PARK_LIMIT then
              stopped[pool] = true
              more = true
            end
          end
        end
        if what == 'take' then
          take(id, jk, f, pri, pool)
        elseif what == 'skip' then
          back[#back + 1] = id
          skipped = skipped + 1
          if skipped >= DEPTH then stopped[pool] = true end
        elseif what == 'stop' then
          back[#back + 1] = id
          stopped[pool] = true
        elseif what == 'end' then
          back[#back + 1] = id
          all_stopped = true
        end
      end
    end
  end
  if #back > 0 then
    local rev = {}
    for i = #back, 1, -1 do rev[#rev + 1] = back[i] end
    for i = 1, #rev, 1000 do
      redis.call('LPUSH', qk, unpack(rev, i, math.min(i + 999, #rev)))
    end
  end
  return parked
end

for _, pri in ipairs({ 'p0', 'p1', 'p2' }) do
  for _, pool in ipairs(pools) do
    if #leased >= want or all_stopped then break end
    borrowers, moved = false, false
    if not stopped[pool] then reserved_first(pri, pool) end
    if not stopped[pool] then from_lanes(pri, pool, true) end
    local parked = 0
    if not stopped[pool] then parked = from_queue(pri, pool) end
    -- Then what borrows, and jobs behind ones parked just now that fit.
    if not stopped[pool] and (borrowers or moved or parked > 0) then from_lanes(pri, pool, false) end
  end
end

if #leased > 0 then
  -- Each lease records its claim's sequence number, so recovery can restore queue order.
  local last = redis.call('INCRBY', prefix .. ':claims', #leased)
  local pairs_ = {}
  for i, id in ipairs(leased) do
    pairs_[#pairs_ + 1] = id
    pairs_[#pairs_ + 1] = lease_value(int(last - #leased + i), attempts[i], token) .. charges_of[i]
  end
  redis.call('HSET', prefix .. ':inflight:' .. worker, unpack(pairs_))
  drop_records(prefix, recorded, recorded_recs)
  redis.call('SADD', prefix .. ':workers', worker)
  apply_usage(prefix, delta)
  if #leased == want and (#pools > 1 or any_queued(prefix)) then wake(prefix) end
end
if more then wake(prefix) end
return out
