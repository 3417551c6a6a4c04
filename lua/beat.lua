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
--             it must stop those attempts (fencing); an id prefixed with '!'
--             belongs to a batch cancelled with --abort: the item is counted
--             cancelled here, and the worker stops the attempt
--
-- XCLAIM does not check who owns an entry, so a late heartbeat of a worker
-- that lost an item would take it back: ownership is checked with XPENDING
-- in the same script. XCLAIM ... JUSTID resets the idle time without
-- counting a delivery.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, me = ARGV[1], ARGV[2]
local now = sl_now_ms()
local lost = {}
local prefix = string.sub(KEYS[4], 1, -8) -- P..'workers' -> P
local aborting = {}
local touched = {}
redis.call('HSET', KEYS[5], 'info', ARGV[4], 'beat', now)
redis.call('PEXPIRE', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], now, me)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 24 * 3600 * 1000)
for i = 5, #ARGV, 2 do
  local s, eid = tonumber(ARGV[i]), ARGV[i + 1]
  local p = redis.call('XPENDING', KEYS[s], group, eid, eid, 1)
  if p[1] and p[1][2] == me then
    local r = redis.call('XRANGE', KEYS[s], eid, eid)
    local f = r[1] and r[1][2]
    local abort = false
    if f then
      local batch = f[2]
      if aborting[batch] == nil then
        local v = redis.call('HMGET', prefix .. 'b:' .. batch, 'status', 'abort')
        aborting[batch] = v[1] == 'cancelled' and v[2] == '1'
      end
      abort = aborting[batch]
    end
    if abort then
      local bkey = prefix .. 'b:' .. f[2]
      sl_lease_return({prefix = prefix}, KEYS, s, eid, f[8])
      sl_cancel_item(bkey, f[4], tonumber(f[6]) + 1, f[8], now,
                     'cancelled: aborted while running (sluice cancel --abort)')
      redis.call('XACK', KEYS[s], group, eid)
      redis.call('XDEL', KEYS[s], eid)
      touched[f[2]] = true
      lost[#lost + 1] = '!' .. eid
    else
      redis.call('XCLAIM', KEYS[s], group, me, 0, eid, 'JUSTID')
    end
  else
    lost[#lost + 1] = eid
  end
end
for batch in pairs(touched) do
  sl_maybe_finish(prefix .. 'b:' .. batch, now)
  local q = redis.call('HGET', prefix .. 'b:' .. batch, 'queue') or ''
  sl_publish(prefix, q, batch, now)
end
return lost
