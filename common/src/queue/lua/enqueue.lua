-- Enqueue one or many jobs atomically, skipping ids that already exist (idempotent).
-- KEYS[1]  {ns}:jobs            (index of all jobs, in enqueue order)
-- KEYS[2]  {ns}:resume:<key>    (only for a chunk of a resumable batch: see below)
-- ARGV[1]  prefix               ("{ns}")
-- ARGV[2]  the outbox bound: while the outbox holds more entries than this (the job
--          store is not draining it), nothing is enqueued
-- ARGV[3]  the SHA-1 of the admission configuration ({ns}:admission) the jobs were
--          checked against, '' for none: when Redis holds another, nothing is written and
--          the answer is { -2 }, for the client to check them against the new one
-- ARGV[4]  for a chunk of a resumable batch, where its first job is in the batch ('' for
--          none); ARGV[5] how long the batch stays resumable (s)
-- ARGV[6]  g, the number of groups; the jobs of a batch come in runs that share their
--          settings, in batch order. Per group:
--            priority ("p0".."p2"), max attempts, not-before (ms; a job not due yet waits
--            in {ns}:delayed as 'deferred'; 0 = start now), fresh ('1' when the client
--            generated the ids, so they cannot exist yet; 's' when it did and has also
--            written the group's pending records already, see below), charge (admission.lua; '' for
--            the default), the group's cap on running jobs ('' to leave it), who
--            enqueues it (the actor named in its history and the store), a token ('' for
--            none; see below), count, then per job: id, then the spec JSON, or with a
--            token the job's pending record, `@TOKEN US spec` (lib.lua); in an 's'
--            group, the id alone
-- Returns  { created_count, enqueued_at (ms, Redis time), existing_id_1, existing_id_2,
--          ... }, { -1, outbox length } when the outbox is over its bound, { -2 } when
--          the admission configuration changed, or { -3, jobs landed } when the chunk of
--          a resumable batch does not start where the batch's landed jobs end (nothing
--          was written in those cases).
-- A resumable batch (`scheduler batch --chunked`) goes in chunks, in order, each its own
-- call. KEYS[2] records how many of its jobs have landed ('n') and, under each chunk's
-- first position, the chunk's ids, for as long as ARGV[5] says: a run of the same batch
-- after a failure part-way reads it, reports those jobs as existing and sends only the
-- rest. Its ids are generated, so they are fresh: only the record says what landed. A
-- chunk must start at 'n', so two runs of one batch at once cannot both add a chunk.
-- An id counts as existing while its job hash or pending record exists, and after
-- retention removed the hash while the store still has the job: ids a client chose are
-- kept in {ns}:retired for that time (expire.lua), so an idempotent enqueue stays
-- idempotent.
--
-- Batches are the fast path, so the work common to many jobs is done once per chunk:
-- one EXISTS over the chunk's keys (skipped for fresh ids), one RPUSH onto the queue and
-- one onto the index (a list: appending is far cheaper than a sorted-set insert, and
-- enqueue order is time order), and one outbox entry naming the chunk's new jobs
-- ('jobs', their ids separated by spaces; 'job' when there is one). Such an entry holds
-- one transition per job: {ns}:outbox:batched counts those past the first, so that
-- XLEN plus it is the number of transitions waiting (the bound below, and the drainer's
-- ack takes them off again). Per job there is one HSET, or, in a group that comes with
-- a token (the client gives one to a big group that starts now), one field of the
-- single HSET of the chunk's pending records (lib.lua), whose shared head this script
-- writes once under the token: the records go in as they came. A group of fresh ids
-- with a token comes staged ('s'): the client wrote its records with a plain HSET just
-- before this script, in the same MULTI, so that they never become Lua strings (Redis
-- hashes every byte of every string a script is given: that was a third of its time
-- per job); a refusal below deletes them again. The job store's drainer reads the spec (which holds the priority and attempt limit) from the record or the
-- job hash, which stays until the outbox is past the job's end.
-- An id counts as existing while it has either. The creation is not written to the
-- job's history: it is implied by enqueued_at (and 'created' for deferred jobs), and
-- RedisQueue::get puts it first.
-- updated_at is absent until the first change (readers use enqueued_at).
local prefix = ARGV[1]
local pending = prefix .. ':pending'
-- The group whose header starts at ARGV[at]: whether it is staged, its job count, where
-- its jobs' values start, how many values each job has, and where the next group starts.
local function group_at(at)
  local staged, count = ARGV[at + 3] == 's', tonumber(ARGV[at + 8])
  local w = staged and 1 or 2
  return staged, count, at + 9, w, at + 9 + count * w
end
-- Deletes the records of the staged groups, for an answer that writes nothing.
local function unstage()
  local at = 7
  for _ = 1, tonumber(ARGV[6]) do
    local staged, _, jobs, _, next_at = group_at(at)
    at = next_at
    if staged then
      for first = jobs, at - 1, 1000 do
        redis.call('HDEL', pending, unpack(ARGV, first, math.min(first + 999, at - 1)))
      end
    end
  end
end
local outbox = prefix .. ':outbox'
local batched = outbox .. ':batched'
local backlog = redis.call('XLEN', outbox) + tonumber(redis.call('GET', batched) or '0')
if backlog > tonumber(ARGV[2]) then unstage() return { -1, backlog } end
local admission = redis.call('GET', prefix .. ':admission')
if (admission and redis.sha1hex(admission) or '') ~= ARGV[3] then unstage() return { -2 } end
local resume, first_at = KEYS[2], tonumber(ARGV[4])
if resume then
  local landed = tonumber(redis.call('HGET', resume, 'n') or '0')
  if landed ~= first_at then unstage() return { -3, landed } end
end
index_as_list(prefix)
local groups = tonumber(ARGV[6])
-- Microseconds too, kept for latency measurements (enqueue-to-start).
local ms, us = server_time()
local ms_n = tonumber(ms)
local retired = prefix .. ':retired'
-- Values per variadic call stay well under Lua's unpack limit (LUAI_MAXCSTACK, 8000).
local CHUNK = 1000
local heads = pending .. ':heads'
local created = 0
local existing = {}
local seen = {}
-- The chunk's ids in order, for a resumable batch's record.
local all, nall = resume and {}, 0
local at = 7
for _ = 1, groups do
  local pri, max = ARGV[at], ARGV[at + 1]
  local fresh = ARGV[at + 3] ~= '0'
  local not_before, charge, cap = ARGV[at + 2], ARGV[at + 4], ARGV[at + 5]
  local state = 'queued'
  if tonumber(not_before) > ms_n then state = 'deferred' end
  local by, tok = ARGV[at + 6], ARGV[at + 7]
  -- Values per job (w): the id, and its spec or record unless staged.
  local staged, count, jobs, w
  staged, count, jobs, w, at = group_at(at)
  -- Where the group's queued jobs go: its pool's queue, or the tail of its lane while
  -- the lane is parked (FIFO within a team).
  local pool, team, gpus, group = parse_charge(charge ~= '' and charge or nil)
  local target = queue_key(prefix, pri, pool)
  local lk = lane_key(prefix, pri, pool, team, group, gpus)
  if redis.call('EXISTS', lk) == 1 then target = lk end
  if pool ~= 'default' then redis.call('SADD', prefix .. ':pools', pool) end
  if cap ~= '' and group ~= '' then redis.call('HSET', prefix .. ':groups', group, cap) end
  local extra = {}
  if by ~= '' then extra[#extra + 1] = 'by'; extra[#extra + 1] = by end
  if charge ~= '' then extra[#extra + 1] = 'charge'; extra[#extra + 1] = charge end
  -- The client chose these ids: retention keeps them in {ns}:retired (see above).
  if not fresh then extra[#extra + 1] = 'idem'; extra[#extra + 1] = '1' end
  local head = pending_head(pri, max, ms, us, by, charge, fresh and '' or '1')
  -- With a token, each job's value is its record, and its spec starts at `cut`. The
  -- group's jobs wait as records while they are queued (not deferred), under the head
  -- written here; should the token be taken already (64 random bits: never, in
  -- practice), each record is written whole instead.
  local cut = #tok + 3
  local as_records = tok ~= '' and state == 'queued'
  local shared = as_records and redis.call('HSETNX', heads, tok, head) == 1
  if staged and not shared then
    -- The staged records name a head that is another group's: each is written whole.
    for i = 0, count - 1 do
      local id = ARGV[jobs + i]
      local rec = redis.call('HGET', pending, id)
      redis.call('HSET', pending, id, head .. string.sub(rec, cut))
    end
  end
  local uses = 0
  for first = 0, count - 1, CHUNK do
    local last = math.min(first + CHUNK, count) - 1
    local queued = {}
    local index = {}
    -- The records of a chunk go in one HSET. Jobs of a group without a token (a small
    -- one, or one that waits for a start time) get their hashes now: there the per-job
    -- hash costs little next to the call, and a job claimed or read soon after (a single
    -- enqueue's usual fate) finds its hash in place.
    local records = nil
    if as_records and not staged then records = {} end
    -- Ids the client chose may exist: as a hash, a pending record (lib.lua), or, once
    -- retention removed the job from Redis while the store keeps it, in {ns}:retired.
    local some_exist, gone = false, {}
    if not fresh then
      local ids, keys = {}, {}
      for i = first, last do
        ids[#ids + 1] = ARGV[jobs + i * w]
        keys[#keys + 1] = prefix .. ':job:' .. ids[#ids]
      end
      some_exist = redis.call('EXISTS', unpack(keys)) > 0
      if not some_exist and redis.call('EXISTS', pending) == 1 then
        for _, rec in ipairs(redis.call('HMGET', pending, unpack(ids))) do
          if rec then some_exist = true break end
        end
      end
      if redis.call('EXISTS', retired) == 1 then
        for k, score in ipairs(redis.call('ZMSCORE', retired, unpack(ids))) do
          if score then gone[ids[k]] = true end
        end
      end
    end
    for i = first, last do
      local id = ARGV[jobs + i * w]
      local value = not staged and ARGV[jobs + i * w + 1]
      if all then nall = nall + 1; all[nall] = id end
      -- Only a job written as a hash needs its key.
      local jk = not as_records and prefix .. ':job:' .. id
      if seen[id] or gone[id] or (some_exist and job_exists(prefix, id)) then
        existing[#existing + 1] = id
      else
        seen[id] = true
        if staged then
          if shared then uses = uses + 1 end
        elseif records then
          records[#records + 1] = id
          -- As it came, or whole where the head could not be shared.
          records[#records + 1] = shared and value or head .. string.sub(value, cut)
          if shared then uses = uses + 1 end
        else
          local spec = tok ~= '' and string.sub(value, cut) or value
          if #extra == 0 then
            -- One HSET per job; the fields a group may leave out (no actor, no
            -- charge, a fresh id) stay absent rather than written empty.
            redis.call('HSET', jk, 'spec', spec, 'state', state, 'priority', pri, 'attempt', '0',
              'attempt_limit', max, 'enqueued_at', ms, 'enqueued_us', us)
          else
            local fields = { 'spec', spec, 'state', state, 'priority', pri, 'attempt', '0',
              'attempt_limit', max, 'enqueued_at', ms, 'enqueued_us', us }
            for k = 1, #extra do fields[#fields + 1] = extra[k] end
            redis.call('HSET', jk, unpack(fields))
          end
        end
        if state == 'queued' then
          queued[#queued + 1] = id
        else
          -- Rare: a second write rather than a longer HSET for every job.
          redis.call('HSET', jk, 'created', 'deferred')
          redis.call('ZADD', prefix .. ':delayed', not_before, id)
        end
        index[#index + 1] = id
        created = created + 1
      end
    end
    if records and #records > 0 then redis.call('HSET', pending, unpack(records)) end
    if #queued > 0 then
      redis.call('RPUSH', target, unpack(queued))
    end
    if #index > 0 then
      redis.call('RPUSH', KEYS[1], unpack(index))
      if #index == 1 then
        redis.call('XADD', outbox, '*', 'job', index[1], 'to', state, 'at', ms, 'by', by)
      else
        redis.call('XADD', outbox, '*', 'jobs', table.concat(index, ' '), 'to', state, 'at', ms, 'by', by)
        redis.call('INCRBY', batched, #index - 1)
      end
    end
  end
  -- The head goes with the last record that uses it (lib.lua), or now, when none does.
  if shared then
    if uses > 0 then redis.call('HSET', heads, tok .. '#', uses) else redis.call('HDEL', heads, tok) end
  end
end
if resume then
  redis.call('HSET', resume, 'n', first_at + nall, first_at, table.concat(all, ' '))
  redis.call('EXPIRE', resume, ARGV[5])
end
if created > 0 then wake(prefix) end
local out = { created, ms }
for _, id in ipairs(existing) do table.insert(out, id) end
return out
