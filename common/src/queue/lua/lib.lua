-- Shared helpers, prepended to every script by queue/scripts.rs.
-- Every key is built from the namespace prefix (e.g. "{gpuq}"), whose hash tag puts all of
-- the queue's keys in one Redis Cluster slot, so these scripts are valid on a cluster even
-- though they derive job keys from ids they read.

-- Numbers go to Redis as strings built once: Redis formats a Lua number argument with
-- printf("%.17g"), and that formatting took a tenth of Redis's time when draining no-op
-- jobs. So timestamps and counters are strings here, and tonumber() is used only where
-- arithmetic or comparison needs it.

-- Server time in milliseconds and in microseconds, as strings (one TIME call).
local function server_time()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)),
    t[1] .. string.format('%06d', tonumber(t[2]))
end

-- Server time in milliseconds, as a string.
local function now_ms()
  return (server_time())
end

-- An integer as a decimal string (without the "%.17g" path).
local function int(n)
  return string.format('%d', n)
end

-- The outbox is never trimmed: an entry leaves it only once the job store has it (or
-- the drainer set it aside in {ns}:outbox:dead). Enqueue refuses new jobs while it holds
-- more than its bound instead (see enqueue.lua), so a long store outage is loud, not lossy.

-- A transition is written twice, in the same script as the state change, so both exist
-- exactly when the change does:
--  * to the outbox stream that `scheduler serve` drains into the job store;
--  * to the job's history: a field of the job hash named `h:<outbox entry id>`, so the
--    history sorts in stream order and needs no key of its own (RedisQueue::get reads
--    it). Its value is tab-separated, `state at attempt worker detail`, detail last so
--    it may hold anything (worker ids cannot hold a tab).
-- `at` and `attempt` are strings (see above). `extra` holds additional outbox fields
-- (limit, code).

-- Appends the outbox entry; returns the history field and value for the caller's HSET
-- (the hot paths fold it into the HSET they make anyway).
local function transition(prefix, id, from, state, at, attempt, worker, detail, extra)
  worker, detail = worker or '', detail or ''
  local sid
  if extra then
    local fields = { 'job', id, 'from', from or '', 'to', state, 'at', at, 'attempt', attempt,
      'worker', worker, 'detail', detail }
    for k, v in pairs(extra) do
      table.insert(fields, k)
      table.insert(fields, v)
    end
    sid = redis.call('XADD', prefix .. ':outbox', '*', unpack(fields))
  else
    sid = redis.call('XADD', prefix .. ':outbox', '*', 'job', id,
      'from', from or '', 'to', state, 'at', at, 'attempt', attempt, 'worker', worker, 'detail', detail)
  end
  return 'h:' .. sid, state .. '\t' .. at .. '\t' .. attempt .. '\t' .. worker .. '\t' .. detail
end

-- Records one transition with its own HSET of the history field.
local function event(prefix, id, from, state, at, attempt, worker, detail, extra)
  local field, entry = transition(prefix, id, from, state, at, attempt, worker, detail, extra)
  redis.call('HSET', prefix .. ':job:' .. id, field, entry)
end

-- The index of all jobs ({ns}:jobs) was a sorted set by enqueue time before it became a
-- list in enqueue order. Scripts that write it convert an old one first, once, keeping
-- its order, so upgrading needs no downtime step.
local function index_as_list(prefix)
  local k = prefix .. ':jobs'
  if redis.call('TYPE', k).ok ~= 'zset' then return end
  local ids = redis.call('ZRANGE', k, '0', '-1')
  redis.call('DEL', k)
  for i = 1, #ids, 1000 do
    redis.call('RPUSH', k, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- Marks a job as ended, for retention (finished jobs leave Redis after a while).
local function ended(prefix, id, ms)
  redis.call('ZADD', prefix .. ':finished', ms, id)
end

-- Leaves one wake-up token for idle workers blocked on BLPOP. At most one token is kept:
-- the worker that takes it claims a job and, if work remains, leaves a token for the next.
local function wake(prefix)
  local k = prefix .. ':wake'
  if redis.call('LLEN', k) == 0 then
    redis.call('RPUSH', k, '1')
  end
end

-- Leases. A worker's in-flight hash maps job id -> 'SEQ:ATTEMPT:TOKEN': the claim's
-- sequence number (recovery restores queue order by it), the attempt the lease is for
-- (a report naming another attempt is stale), and the claim call's token (the worker
-- knows which claims it has heard back from, so a lease whose claim reply was lost can
-- be told from one whose attempt is about to start), then '|' and the job's charge
-- (admission.lua), which releasing the lease returns. Leases of earlier versions hold
-- the sequence number alone, or no charge.
local function lease_value(seq, attempt, token)
  return seq .. ':' .. attempt .. ':' .. (token or '')
end

local function lease_seq(v)
  return tonumber(string.match(v or '', '^(%d+)')) or 0
end

-- The attempt a lease is for, or nil for a lease of an earlier version.
local function lease_attempt(v)
  return string.match(v or '', '^%d+:(%d+)')
end

-- The token of the claim that took a lease ('' for a lease of an earlier version).
local function lease_token(v)
  return string.match(v or '', '^%d+:%d+:([^|]*)') or ''
end

-- True when a report naming `attempt` and `token` ('0' and '' when unknown) is about the
-- attempt this lease is for. The attempt alone is not enough: a job handed back without
-- counting the attempt and claimed again by the same worker gets the same number.
local function lease_matches(lease, attempt, token)
  if not lease then return false end
  local a = lease_attempt(lease)
  if attempt ~= '0' and a and a ~= attempt then return false end
  local t = lease_token(lease)
  if token ~= '' and t ~= '' and t ~= token then return false end
  return true
end

-- True when the worker's heartbeat key exists: only then may it claim or report.
local function alive(prefix, worker)
  return redis.call('EXISTS', prefix .. ':worker:' .. worker) == 1
end

-- The Redis server's run id, which changes when the server restarts or another one takes
-- over (failover).
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
end

-- After a restart or failover, heartbeats may have expired while nobody could refresh
-- them, and the last writes before a crash (a claim, a finish) may be gone. So once a
-- change of run id is seen, nothing is claimed or reaped for a while: long enough for
-- every live worker to heartbeat, compare what it runs with its leases, and stop what it
-- no longer holds ({ns}:beats holds, per worker, the ms it needs for that). Returns the
-- ms the hold still lasts (0 when none). A namespace seen for the first time holds
-- nothing.
-- INFO is too dear to call on every claim (it cost a quarter of the drain rate), so a
-- claim reads the run id only when LASTSAVE changed: a server sets it when it starts (and
-- after each RDB save), so a restart, or another server after a failover, changes it,
-- unless it happens within the same second as the last start or save. The heartbeat and
-- reap scripts (`force`) read the run id every time, so that case is caught within a
-- heartbeat interval.
local function restart_hold(prefix, ms, force)
  local ek = prefix .. ':epoch'
  local saved = tostring(redis.call('LASTSAVE'))
  local known_save, hold_until = unpack(redis.call('HMGET', ek, 'lastsave', 'hold_until'))
  if force or known_save ~= saved then
    local rid = run_id()
    local known = redis.call('HGET', ek, 'run_id')
    if known ~= rid then
      local need = 0
      if known then
        for _, v in ipairs(redis.call('HVALS', prefix .. ':beats')) do
          need = math.max(need, tonumber(v) or 0)
        end
      end
      hold_until = int(tonumber(ms) + need)
      redis.call('HSET', ek, 'run_id', rid, 'hold_until', hold_until, 'changed_at', ms)
      if known then
        redis.log(redis.LOG_WARNING, 'gpuq ' .. prefix .. ': server run id changed (restart or failover); ' ..
          'claims and reaping wait ' .. int(need) .. ' ms for workers to check their leases')
      end
    end
    redis.call('HSET', ek, 'lastsave', saved)
  end
  local left = tonumber(hold_until or '0') - tonumber(ms)
  if left < 0 then return 0 end
  return left
end

-- Reads a job's fields without raising: nil when the key is not a hash (something else
-- overwrote it). Scripts that move many jobs use it so that one broken job cannot stop
-- them half-way.
local function read_job(jk, ...)
  local fields = redis.pcall('HMGET', jk, ...)
  if fields.err then return nil, fields.err end
  return fields
end

-- Sets aside a job whose key something else overwrote: it goes to the dead-letter list,
-- with a line in the Redis log.
local function set_aside(prefix, id, why)
  redis.log(redis.LOG_WARNING, 'gpuq: job ' .. id .. ' is unreadable (' .. tostring(why) .. '); dead-lettered')
  redis.call('RPUSH', prefix .. ':dead', id)
end

-- Pending records. A job that a batch enqueued, queued at once, waits without a hash of
-- its own: its enqueue-time fields are one value of {ns}:pending, keyed by its id. One
-- HSET of a whole chunk into that hash costs Redis a third of what a hash per job does
-- (a key, an object and a listpack each), and batch enqueue is bounded by Redis's time.
-- The job gets its hash (is materialized) the first time a script changes it: a claim,
-- a cancel, a park that marks it held up, a preemption it triggers; readers that change
-- nothing read the record where it is (job_fields, and RedisQueue::get in Rust).
--
-- A record is `@TOKEN US spec`: the client builds it (US, the unit separator \31), so the
-- enqueue hands Redis's value on as it came, and the fields a group's jobs share (its
-- head) are written once, in {ns}:pending:heads under the group's random TOKEN, with
-- the number of records that use it under `TOKEN#`; the head goes with the last of
-- them. Building each record in Lua (head .. spec) cost Redis a fifth of its time per
-- job: every Lua string is hashed whole. A head is `priority US attempt_limit US
-- enqueued_at US enqueued_us US by US charge US idem US`, and a record of the earlier
-- version is the head and the spec in one value (read still, never written); US cannot
-- occur in a head's fields, and the spec, last, may hold anything. Empty fields are
-- absent from the hash; the state is 'queued' and the attempt 0. queue/pending.rs
-- decodes the same format.
local function pending_head(pri, max, ms, us, by, charge, idem)
  return table.concat({ pri, max, ms, us, by, charge, idem, '' }, '\31')
end

-- A head's parts, then the spec: priority, attempt limit, enqueued_at, enqueued_us, by,
-- charge, idem, spec. One match: a loop of finds cost the claim more than the record
-- saved the enqueue.
local RECORD = '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$'

-- The token of a record with a shared head and where its spec starts; nil for one
-- without.
local function record_token(rec)
  if string.byte(rec, 1) ~= 64 then return nil end
  local cut = string.find(rec, '\31', 2, true)
  if not cut then return nil end
  return string.sub(rec, 2, cut - 1), cut + 1
end

-- The heads this call has read, by token (false: none), each as RECORD's captures.
local heads_read = {}

-- A record's parts, as RECORD captures them from a head and spec; nil for something that
-- is not a record (or whose head is gone).
local function record_parts(prefix, rec)
  local tok, from = record_token(rec)
  if not tok then return string.match(rec, RECORD) end
  local h = heads_read[tok]
  if h == nil then
    local head = redis.call('HGET', prefix .. ':pending:heads', tok)
    h = head and { string.match(head, RECORD) } or false
    if h and not h[8] then h = false end
    heads_read[tok] = h
  end
  if not h then return nil end
  return h[1], h[2], h[3], h[4], h[5], h[6], h[7], string.sub(rec, from)
end

-- Takes the records of `ids` (`recs`, in the same order) off {ns}:pending; a shared head
-- goes with the last record that uses it.
local function drop_records(prefix, ids, recs)
  if #ids == 0 then return end
  redis.call('HDEL', prefix .. ':pending', unpack(ids))
  local uses, order = {}, {}
  for _, rec in ipairs(recs) do
    local tok = record_token(rec)
    if tok then
      if not uses[tok] then order[#order + 1] = tok end
      uses[tok] = (uses[tok] or 0) + 1
    end
  end
  local hk = prefix .. ':pending:heads'
  for _, tok in ipairs(order) do
    if redis.call('HINCRBY', hk, tok .. '#', -uses[tok]) <= 0 then redis.call('HDEL', hk, tok, tok .. '#') end
  end
end

-- Appends a record's fields, as the job hash holds them, to an HSET's arguments; false
-- for something that is not a record.
local function pending_fields(prefix, rec, out)
  local pri, max, at, us, by, charge, idem, spec = record_parts(prefix, rec)
  if not spec then return false end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 'spec', spec, 'priority', pri
  out[n + 5], out[n + 6], out[n + 7], out[n + 8] = 'attempt_limit', max, 'enqueued_at', at
  out[n + 9], out[n + 10] = 'enqueued_us', us
  if by ~= '' then out[#out + 1] = 'by'; out[#out + 1] = by end
  if charge ~= '' then out[#out + 1] = 'charge'; out[#out + 1] = charge end
  if idem ~= '' then out[#out + 1] = 'idem'; out[#out + 1] = idem end
  return true
end

-- The job hash's fields held in a record, as a table field -> value.
local function pending_decode(prefix, rec)
  local args = {}
  local f = { state = 'queued', attempt = '0' }
  if not pending_fields(prefix, rec, args) then return f end
  for i = 1, #args, 2 do f[args[i]] = args[i + 1] end
  return f
end

-- Gives a job with a pending record its hash, and returns its key. Fields the hash holds
-- already win (something wrote them while the record waited); a key that is not a hash
-- (something overwrote it) is left for the reader to set aside.
local function materialize(prefix, id)
  local jk = prefix .. ':job:' .. id
  local rec = redis.call('HGET', prefix .. ':pending', id)
  if not rec then return jk end
  local args = { 'state', 'queued', 'attempt', '0' }
  -- Read before the record goes: its head may go with it.
  local readable = pending_fields(prefix, rec, args)
  drop_records(prefix, { id }, { rec })
  if not readable then
    -- Something else wrote it: the job goes where unreadable jobs go.
    set_aside(prefix, id, 'its pending record is unreadable')
    return jk
  end
  if redis.call('EXISTS', jk) == 0 then
    redis.call('HSET', jk, unpack(args))
  else
    for i = 1, #args, 2 do redis.pcall('HSETNX', jk, args[i], args[i + 1]) end
  end
  return jk
end

-- HMGET of a job's fields, from its pending record while it has one (nothing written).
local function job_fields(prefix, id, ...)
  local rec = redis.call('HGET', prefix .. ':pending', id)
  if rec then
    local f = pending_decode(prefix, rec)
    local out = {}
    for i, name in ipairs({ ... }) do out[i] = f[name] or false end
    return out
  end
  return redis.call('HMGET', prefix .. ':job:' .. id, ...)
end

-- One field of a job (job_fields), nil when absent.
local function job_field(prefix, id, name)
  return job_fields(prefix, id, name)[1] or nil
end

-- True when the job is in Redis: its hash or its pending record.
local function job_exists(prefix, id)
  return redis.call('EXISTS', prefix .. ':job:' .. id) == 1
    or redis.call('HEXISTS', prefix .. ':pending', id) == 1
end
