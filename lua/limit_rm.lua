-- sluice_v1_limit_rm: removes a limit and its state.
-- KEYS[1]     P..'limits'     KEYS[2..4] streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] limit name
-- returns     1 if the limit existed, 0 if not
--
-- Items waiting for one of its concurrency leases go back to the ends of
-- their streams (they are not limited any more); the bucket and the leases
-- are deleted.
local prefix, name = ARGV[1], ARGV[2]
local existed = redis.call('HDEL', KEYS[1], name)
local streams = {KEYS[2], KEYS[3], KEYS[4]}
while sl_wake(prefix, streams, name, 1000) > 0 do end
redis.call('DEL', prefix .. 'rl:' .. name, prefix .. 'cl:' .. name, prefix .. 'cw:' .. name)
return existed
