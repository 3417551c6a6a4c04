-- sluice_v1_limit_wake: wakes, in one bounded step, items waiting for a
-- limit's leases that may run now. sl_limit_set and sl_limit_rm call it
-- after sluice_v1_limit_set or sluice_v1_limit_rm until nothing is left.
-- KEYS[1]     P..'limits'     KEYS[2..4] streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] limit name
-- ARGV[3]     the most items this call wakes, 1 to SL_WAKE_MAX (250)
-- returns     {moved, more}, as sluice_v1_limit_set
-- errors      'SLUICE_ARGS' (ARGV[3] malformed; nothing written)
--
-- With the limit gone or without a concurrency every waiting item may run;
-- with one, as many as leases are free now (sl_wake_step). A step sent
-- again wakes only what may run then.
local max = tonumber(ARGV[3])
if not max or max < 1 or max > SL_WAKE_MAX or max ~= math.floor(max) then
  return redis.error_reply('SLUICE_ARGS the count must be a whole number from 1 to ' .. SL_WAKE_MAX)
end
return sl_wake_step(ARGV[1], KEYS[1], {KEYS[2], KEYS[3], KEYS[4]}, ARGV[2], max)
