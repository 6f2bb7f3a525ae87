-- What the worker must do about the jobs it runs, checked every cancel-check interval:
-- stop one whose cancellation was requested, or stop one that preempt.lua flagged while
-- its preemptor still holds the pool's reservation. A flag whose reservation is gone
-- (the preemptor was cancelled, or started elsewhere) is cleared: the job keeps running.
-- ARGV[1]  prefix
-- ARGV[2..] job ids
-- Returns  per job: '' (go on), 'cancel', or 'preempt', the preemptor and the default
--          grace in seconds, tab-separated
local prefix = ARGV[1]
local ctx = admission_context(prefix)
local grace = 60
if ctx.cfg and type(ctx.cfg.preemption) == 'table' and tonumber(ctx.cfg.preemption.grace_secs) then
  grace = tonumber(ctx.cfg.preemption.grace_secs)
end
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local jk = prefix .. ':job:' .. id
  local cancel, by, charge = unpack(redis.call('HMGET', jk, 'cancel_requested', 'preempt_by', 'charge'))
  local what = ''
  if cancel == '1' then
    what = 'cancel'
  elseif by then
    local pool = parse_charge(charge)
    local r = reservation(ctx, pool)
    if r and r.id == by then
      what = 'preempt\t' .. by .. '\t' .. grace
    else
      redis.call('HDEL', jk, 'preempt_by', 'preempt_at', 'preempt_reason')
      redis.call('SREM', prefix .. ':draining:' .. pool, id)
    end
  end
  out[#out + 1] = what
end
return out
