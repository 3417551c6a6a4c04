-- sluice_v1_limit_set: sets (or replaces) a limit and wakes, in the same
-- step, the items waiting for its leases that may run under it now.
-- KEYS[1]     P..'limits'     KEYS[2..4] streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] limit name (1-64 of [A-Za-z0-9_.:-])
-- ARGV[3]     the limit "T_US BURST RATE CONC" (docs/PROTOCOL.md, section 1)
-- returns     {moved, more}: the waiting items woken (at most SL_WAKE_MAX),
--             and how many more may run now; the caller wakes those with
--             sluice_v1_limit_wake (0: nothing left to do)
-- errors      'SLUICE_ARGS' (malformed name or value; nothing written)
--
-- A raised concurrency wakes as many waiting items as leases are free (the
-- new CONC minus the leases held); a concurrency removed (CONC 0) wakes
-- them all, in bounded steps. The bucket P..'rl:NAME' and the leases
-- P..'cl:NAME' are kept.
local prefix, name, value = ARGV[1], ARGV[2], ARGV[3]
if not name or #name < 1 or #name > 64 or not string.match(name, '^[%w_.:-]+$') then
  return redis.error_reply('SLUICE_ARGS the limit name must be 1-64 characters of [A-Za-z0-9_.:-]')
end
local t, burst, rate, conc = string.match(value or '', '^(%d+) (%d+) (%S+) (%d+)$')
burst, conc = tonumber(burst), tonumber(conc)
if not t or burst < 1 or burst > 1000000 or conc > 1000000 or (t == '0' and conc == 0) or
   (t == '0') ~= (rate == '-') then
  return redis.error_reply('SLUICE_ARGS the limit must be "T_US BURST RATE CONC": T_US > 0 with a RATE, ' ..
                           'or 0 with RATE -, BURST 1-1000000, CONC 0-1000000, not both T_US and CONC 0')
end
redis.call('HSET', KEYS[1], name, value)
return sl_wake_step(prefix, KEYS[1], {KEYS[2], KEYS[3], KEYS[4]}, name, SL_WAKE_MAX)
