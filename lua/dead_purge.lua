-- sluice_v1_dead_purge: deletes every dead letter of a queue (`sluice dead purge`).
-- KEYS[1]     the dead letters P..'dead'
-- returns     the number of dead letters deleted
--
-- Counting and deleting in one step means no letter written meanwhile is
-- deleted uncounted. Only the letters go: failed items keep their `failed`
-- results and their failed-items entries, so `sluice retry BATCH` still
-- runs them again (the entries then name letters that no longer exist,
-- which is harmless: XDEL of a missing id does nothing).
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
