-- sluice_v1_limit_rm: removes a limit and its state.
-- KEYS[1]     P..'limits'     KEYS[2..4] streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] limit name
-- returns     1 if the limit existed, 0 if not
--
-- The bucket and the leases are deleted, and up to SL_WAKE_MAX (250) of
-- the items waiting for one of its leases go back to the ends of their
-- streams (they are not limited any more). Any left are woken by
-- sluice_v1_limit_wake, which sl_limit_rm calls next until none is left;
-- P..'cw:NAME' is deleted once it is empty. Until then the name is listed
-- in P..'rmlimit', so the items of a removal whose client died between its
-- steps are woken by the workers (reclaim), not left waiting.
local prefix, name = ARGV[1], ARGV[2]
local existed = redis.call('HDEL', KEYS[1], name)
redis.call('DEL', prefix .. 'rl:' .. name, prefix .. 'cl:' .. name) -- cl: at most the leases held
local r = sl_wake_step(prefix, KEYS[1], {KEYS[2], KEYS[3], KEYS[4]}, name, SL_WAKE_MAX)
if r[2] > 0 then redis.call('ZADD', prefix .. 'rmlimit', sl_now_ms(), name) end
return existed
