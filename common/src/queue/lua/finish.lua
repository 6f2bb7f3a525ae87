-- Record the end of one or many attempts of one worker and release its leases on them,
-- returning their charges to the usage.
-- A worker reports the attempts that ended while its previous report was in flight in
-- one call; each is settled on its own, exactly as if reported alone.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  n, the number of attempts reported
-- then per attempt, 7 values:
--          job id;
--          attempt number as claimed ('0' when the caller does not know it);
--          the token of the claim that took it ('' when the caller does not know it);
--          outcome: succeeded | failed | cancelled | fatal (failed, no retry);
--          exit code ('' when none); reason ('' when none);
--          retry delay in ms (used when the attempt failed and attempts remain)
-- Returns  per attempt, the job's new state; 'stale' when this worker no longer holds the
--          job, or holds it for another attempt (its lease expired and the job was
--          recovered; the newer attempt owns it); 'fenced' for all of them when the
--          worker's heartbeat is gone (it must heartbeat again and compare its leases
--          before anything it reports can count);
--          or 'error:MESSAGE' when settling it failed, in which case its lease is kept
--          (the report can be repeated, and if the worker dies the job is recovered).
--          One attempt failing does not stop the others from being settled.
local prefix, worker, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local inflight = prefix .. ':inflight:' .. worker
if not alive(prefix, worker) then
  local out = {}
  for i = 1, n do out[i] = 'fenced' end
  return out
end
local ms = now_ms()
-- Leases are checked for the whole report in one call, and the leases of the attempts
-- settled are released in one call at the end.
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[4 + i * 7] end
local held = redis.call('HMGET', inflight, unpack(ids))
local release = {}
-- Ended jobs, as ZADD arguments for {ns}:finished: one call for the whole report.
local done = {}

local function finish(id, attempt, outcome, code, reason, delay)
  local jk = prefix .. ':job:' .. id
  local limit, cancel, asked
  -- A success needs nothing from the hash when the worker says which attempt it was:
  -- the lease proves that attempt is the job's current one.
  if outcome ~= 'succeeded' or attempt == '0' then
    local a
    a, limit, cancel, asked = unpack(redis.call('HMGET', jk, 'attempt', 'attempt_limit', 'cancel_requested', 'reason'))
    -- Read and checked before anything is written (a write is not undone when a later
    -- step raises).
    if not tonumber(a) or not tonumber(limit) then error('job ' .. id .. ' has no attempt or attempt limit') end
    attempt = a
  end
  if cancel == '1' and outcome ~= 'succeeded' then
    outcome = 'cancelled'
    -- The cancellation's own reason ("cancelled by <who>: <why>", kept by cancel.lua)
    -- says who stopped the job; the worker only knows that it was stopped.
    if asked and asked ~= '' then reason = asked end
  end

  local extra = nil
  if code ~= '' then extra = { code = code } end
  local state
  local from = 'running'
  local failed_field, failed_entry
  if outcome == 'succeeded' or outcome == 'cancelled' then
    state = outcome
  else
    failed_field, failed_entry = transition(prefix, id, 'running', 'failed', ms, attempt, worker, reason, extra)
    from = 'failed'
    if outcome == 'failed' and tonumber(attempt) < tonumber(limit) then
      state = 'retrying'
      redis.call('ZADD', KEYS[1], int(tonumber(ms) + delay), id)
    else
      state = 'dead'
      redis.call('RPUSH', prefix .. ':dead', id)
    end
  end
  local detail = reason
  if state == 'retrying' then detail = 'next attempt in ' .. int(delay) .. ' ms' end
  local field, entry = transition(prefix, id, from, state, ms, attempt, worker, detail, extra)
  local fields = { 'state', state, 'updated_at', ms, 'reason', reason, field, entry }
  if state ~= 'retrying' then
    table.insert(fields, 'finished_at')
    table.insert(fields, ms)
    table.insert(done, ms)
    table.insert(done, id)
  end
  if failed_field then
    table.insert(fields, failed_field)
    table.insert(fields, failed_entry)
  end
  if code ~= '' then
    table.insert(fields, 'exit_code')
    table.insert(fields, code)
  end
  redis.call('HSET', jk, unpack(fields))
  return state
end

local out = {}
local settled = {}
-- The charges of the leases released go back to the usage in the same step.
local delta = {}
local freed = false
for i = 0, n - 1 do
  local b = 4 + i * 7
  -- A job named twice in one report is settled once; the repeat is stale.
  local id, claimed, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  -- A lease for another attempt (or claim) of the job: this report is from an older one.
  if lease_matches(held[i + 1], claimed, token) and not settled[id] then
    settled[id] = true
    -- A failure (a job hash something else overwrote) must not abort the script: the
    -- attempts after it would be left half-settled.
    local ok, state = pcall(finish, id, ARGV[b + 1], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5],
      tonumber(ARGV[b + 6]))
    if ok then
      out[i + 1] = state
      table.insert(release, id)
      uncharge_lease(delta, held[i + 1])
      local c = lease_charge(held[i + 1])
      if c and not is_default(c) then freed = true end
    else
      if type(state) == 'table' then state = state.err end
      out[i + 1] = 'error:' .. tostring(state)
    end
  else
    out[i + 1] = 'stale'
  end
end
if #release > 0 then redis.call('HDEL', inflight, unpack(release)) end
if #done > 0 then redis.call('ZADD', prefix .. ':finished', unpack(done)) end
if next(delta) then
  apply_usage(prefix, delta)
  -- What was freed may let a job that waits for it be admitted: wake an idle worker.
  if freed or redis.call('EXISTS', prefix .. ':admission') == 1 then wake(prefix) end
end
return out
