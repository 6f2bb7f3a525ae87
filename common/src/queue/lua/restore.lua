-- Put jobs the job store knows back into Redis after Redis lost them (restart without
-- persistence, FLUSHALL). Jobs Redis still holds are skipped, so running it twice, or
-- while workers run, is harmless. The restored jobs go to the head of their priority
-- lists in the given order (oldest first): they were waiting before anything newer.
-- KEYS[1]  {ns}:jobs
-- ARGV[1]  prefix
-- ARGV[2]  n
-- then per job, 6 values: id, priority, spec JSON, attempt, attempt limit, enqueued_at (ms)
-- Returns  the number of jobs restored.
local prefix = ARGV[1]
index_as_list(prefix)
local n = tonumber(ARGV[2])
local ms = now_ms()
local restored = 0
for i = n - 1, 0, -1 do
  local base = 3 + i * 6
  local id, pri, spec = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local attempt, limit, enq = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local jk = prefix .. ':job:' .. id
  if redis.call('EXISTS', jk) == 0 then
    redis.call('HSET', jk, 'spec', spec, 'state', 'queued', 'priority', pri,
      'attempt', attempt, 'attempt_limit', limit, 'enqueued_at', enq, 'updated_at', ms)
    redis.call('LPUSH', prefix .. ':queue:' .. pri, id)
    -- Older than anything enqueued since the loss: the head of the index.
    redis.call('LPUSH', KEYS[1], id)
    event(prefix, id, '', 'queued', ms, attempt, '', 'restored from the job store')
    restored = restored + 1
  end
end
if restored > 0 then wake(prefix) end
return restored
