-- sluice_v1_beat: a worker's heartbeat: registers it in the fleet and keeps
-- the claim on its items alive, checking it still owns each one.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     the fleet index P..'workers' (sorted set, score = last beat, ms)
-- KEYS[5]     the worker's hash P..'w:'..NAME
-- ARGV[1]     consumer group    ARGV[2] consumer name = worker id
-- ARGV[3]     registry TTL, ms (the hash expires when beats stop)
-- ARGV[4]     the worker's description: JSON object (host, pid, queue, running, ...)
-- ARGV[5..]   per item held: priority (1-3), stream entry id, batch id
-- returns     the entry ids the worker no longer owns (taken over, or ended):
--             it must stop those attempts (fencing); an id prefixed with '!'
--             belongs to a batch cancelled with --abort: the item is counted
--             cancelled here, and the worker stops the attempt
--
-- Its cost is O(items in the call), and it reads no item body: a worker
-- holding many items sends one call per 500 (src/lease.c), sorted by
-- priority and id. Per stream, the caller's own pending entries between the
-- call's lowest and highest id come from one XPENDING with the consumer
-- filter (one per entry when it holds only a few there), the batches'
-- status and abort flag from one HMGET per batch, and the claims are
-- renewed by multi-id XCLAIM ... JUSTID calls (which reset the idle time
-- without counting a delivery), and in the claim index (P..'claims', one
-- ZADD per CLAIM_MAX entries: each claim now runs out one visibility
-- timeout from now). Only an aborted item's entry is read, to
-- write its cancelled result. XCLAIM does not check who owns an entry, so
-- a late heartbeat of a worker that lost an item would take it back:
-- ownership is checked here, in the same call.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, me = ARGV[1], ARGV[2]
local now = sl_now_ms()
local lost = {}
local prefix = string.sub(KEYS[4], 1, -8) -- P..'workers' -> P
local aborting = {}
local touched = {}
local CLAIM_MAX = 1000 -- entry ids per XCLAIM (Lua's unpack has a limit)
local ctx = {prefix = prefix, now = now, vis = tonumber(redis.call('HGET', prefix .. 'vis', me))}
local gone = {}
redis.call('HSET', KEYS[5], 'info', ARGV[4], 'beat', now)
redis.call('PEXPIRE', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], now, me)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 24 * 3600 * 1000)
-- The item types it serves ("types":[...] of its description): P..'served'
-- maps each to "BEAT TTL" of the last worker that served it, so `status`
-- can say how long a batch's type has had no live worker (sluice_v1_stuck).
do
  local types = string.match(ARGV[4], '"types":%[([^%]]*)%]')
  local n = 0
  for t in string.gmatch(types or '', '"([%w_.:-]+)"') do
    n = n + 1
    if n > 64 then break end
    redis.call('HSET', prefix .. 'served', t, now .. ' ' .. ARGV[3])
  end
end

local held = {{}, {}, {}}
for i = 5, #ARGV - 2, 3 do
  local s = tonumber(ARGV[i])
  if held[s] then
    local h = held[s]
    h[#h + 1] = {ARGV[i + 1], ARGV[i + 2]}
  end
end

-- Stream entry id a < b ("MS-SEQ", compared as numbers).
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am) or 0, tonumber(bm) or 0
  if am ~= bm then return am < bm end
  return (tonumber(as) or 0) < (tonumber(bs) or 0)
end

local function abort_of(batch)
  if aborting[batch] == nil then
    local v = redis.call('HMGET', prefix .. 'b:' .. batch, 'status', 'abort')
    aborting[batch] = v[1] == 'cancelled' and v[2] == '1'
  end
  return aborting[batch]
end

for s = 1, 3 do
  local h = held[s]
  if #h > 0 then
    local mine, partial = nil, false
    if #h > 8 then
      -- the caller's own entries between the lowest and the highest id of
      -- this call (the worker sends them sorted, a contiguous range per call)
      local lo, hi = h[1][1], h[1][1]
      for k = 2, #h do
        if id_lt(h[k][1], lo) then lo = h[k][1] end
        if id_lt(hi, h[k][1]) then hi = h[k][1] end
      end
      local limit = #h + 1000
      local pending = redis.call('XPENDING', KEYS[s], group, lo, hi, limit, me)
      mine = {}
      for _, p in ipairs(pending) do
        mine[p[1]] = true
      end
      partial = #pending == limit -- more of its own than that: look the rest up one by one
    end
    local claim = {}
    for _, e in ipairs(h) do
      local eid, batch = e[1], e[2]
      local owned
      if mine and (mine[eid] or not partial) then
        owned = mine[eid] or false
      else
        local p = sl_holder(KEYS[s], group, eid)
        owned = p ~= nil and p[2] == me
      end
      if not owned then
        lost[#lost + 1] = eid
      elseif abort_of(batch) then
        local r = redis.call('XRANGE', KEYS[s], eid, eid)
        local f = r[1] and r[1][2]
        if f then
          local bkey = prefix .. 'b:' .. f[2]
          sl_lease_return({prefix = prefix}, KEYS, s, eid, f[8])
          sl_run_drop(prefix, f[2], s, eid)
          sl_cancel_item(bkey, f[4], tonumber(f[6]) + 1, f[8], now,
                         'cancelled: aborted while running (sluice cancel --abort)')
          touched[f[2]] = true
        end
        redis.call('XACK', KEYS[s], group, eid)
        redis.call('XDEL', KEYS[s], eid)
        gone[#gone + 1] = s .. ':' .. eid
        lost[#lost + 1] = '!' .. eid
      else
        claim[#claim + 1] = eid
        sl_claim(ctx, s, eid)
        if #claim == CLAIM_MAX then
          claim[#claim + 1] = 'JUSTID'
          redis.call('XCLAIM', KEYS[s], group, me, 0, unpack(claim))
          claim = {}
        end
      end
    end
    if #claim > 0 then
      claim[#claim + 1] = 'JUSTID'
      redis.call('XCLAIM', KEYS[s], group, me, 0, unpack(claim))
    end
  end
end
sl_claims_write(prefix, ctx.claims)
sl_claims_drop(prefix, gone)
for batch in pairs(touched) do
  sl_maybe_finish(prefix .. 'b:' .. batch, now)
  local q = redis.call('HGET', prefix .. 'b:' .. batch, 'queue') or ''
  sl_publish(prefix, q, batch, now)
end
return lost
