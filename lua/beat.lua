-- sluice_v1_beat: a worker's heartbeat: registers it in the fleet and keeps
-- the claim on its items alive, checking it still owns each one.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     the fleet index P..'workers' (sorted set, score = last beat, ms)
-- KEYS[5]     the worker's hash P..'w:'..NAME
-- ARGV[1]     consumer group    ARGV[2] consumer name = worker id
-- ARGV[3]     registry TTL, ms (the hash expires when beats stop)
-- ARGV[4]     the worker's description: JSON object (host, pid, queue, running, ...)
-- ARGV[5..]   per item held: priority (1-3), stream entry id
-- returns     the entry ids the worker no longer owns (taken over, or ended):
--             it must stop those attempts (fencing)
--
-- XCLAIM does not check who owns an entry, so a late heartbeat of a worker
-- that lost an item would take it back: ownership is checked with XPENDING
-- in the same script. XCLAIM ... JUSTID resets the idle time without
-- counting a delivery.
local group, me = ARGV[1], ARGV[2]
local now = sl_now_ms()
local lost = {}
redis.call('HSET', KEYS[5], 'info', ARGV[4], 'beat', now)
redis.call('PEXPIRE', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], now, me)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 24 * 3600 * 1000)
for i = 5, #ARGV, 2 do
  local s, eid = tonumber(ARGV[i]), ARGV[i + 1]
  local p = redis.call('XPENDING', KEYS[s], group, eid, eid, 1)
  if p[1] and p[1][2] == me then
    redis.call('XCLAIM', KEYS[s], group, me, 0, eid, 'JUSTID')
  else
    lost[#lost + 1] = eid
  end
end
return lost
