-- Refresh a worker's heartbeat and hand back its leases, so the worker can compare them
-- with what it runs in the same round trip: it stops an attempt whose lease is gone (the
-- job was recovered while the worker could not heartbeat) and hands back a lease it holds
-- but does not run (a lost claim reply, or a report Redis lost in a crash).
-- A heartbeat that had expired is created again: if the reaper has not taken the leases
-- yet, they are still this worker's and still valid; if it has, they are gone from the
-- hash and the worker learns it here.
-- KEYS[1]  {ns}:workers
-- ARGV[1]  prefix
-- ARGV[2]  worker id
-- ARGV[3]  heartbeat JSON
-- ARGV[4]  TTL (ms)
-- ARGV[5]  ms this worker needs to heartbeat and stop what it lost (for the restart hold)
-- ARGV[6]  the pool its devices count in ('' for none)
-- ARGV[7]  the GPU devices it holds ('0' for none): they count in that pool's capacity
--          ({ns}:devices:POOL) until it is reaped or leaves
-- Returns  { 1 if the heartbeat still existed else 0, ms the restart hold lasts,
--            the in-flight hash as a flat list of id, lease }
local prefix, worker, info, ttl, need = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pools, devices = ARGV[6] or '', tonumber(ARGV[7] or '0') or 0
local ms = now_ms()
-- The run id itself is read here every time (once per interval per worker): LASTSAVE,
-- which the hot paths use, has one-second resolution.
local hold = restart_hold(prefix, ms, true)
local hk = prefix .. ':worker:' .. worker
local existed = redis.call('EXISTS', hk)
redis.call('SET', hk, info, 'PX', ttl)
redis.call('SADD', KEYS[1], worker)
redis.call('HSET', prefix .. ':beats', worker, need)
if devices > 0 and pools ~= '' then
  for p in string.gmatch(pools, '[^,]+') do redis.call('HSET', prefix .. ':devices:' .. p, worker, devices) end
  redis.call('HSET', prefix .. ':worker_pools', worker, pools)
  if pools ~= 'default' then redis.call('SADD', prefix .. ':pools', pools) end
end
return { existed, int(hold), redis.call('HGETALL', prefix .. ':inflight:' .. worker) }
