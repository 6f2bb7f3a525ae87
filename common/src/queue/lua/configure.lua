-- Replaces the admission configuration if it is still the one the caller read
-- (compare-and-set), so two operators editing it at once cannot lose a change.
-- ARGV[1]  prefix
-- ARGV[2]  the JSON the caller read ('' when there was none)
-- ARGV[3]  the new JSON ('' to remove the configuration)
-- Returns  'ok', or 'conflict' when it changed meanwhile (nothing was written).
local prefix, expected, new = ARGV[1], ARGV[2], ARGV[3]
local k = prefix .. ':admission'
local current = redis.call('GET', k) or ''
if current ~= expected then return 'conflict' end
if new == '' then redis.call('DEL', k) else redis.call('SET', k, new) end
-- What the change lets in is admitted at the next claim: wake an idle worker.
wake(prefix)
return 'ok'
