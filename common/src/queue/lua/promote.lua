-- Promote retries whose backoff has elapsed back onto their priority lists and wake an
-- idle worker. Run by `scheduler serve`; workers also do this as part of every claim.
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  prefix
-- Returns  the number of jobs promoted.
local prefix = ARGV[1]
local moved = promote_due(prefix, KEYS[1], now_ms())
if moved > 0 then wake(prefix) end
return moved
