-- sluice_v1_reclaim: takes over items whose worker stopped keeping them alive.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] consumer name (the caller)
-- ARGV[3]     the caller's visibility timeout, ms (recorded in P..'vis';
--             also the timeout of a holder that recorded none)
-- ARGV[4]     max deliveries (>= 2): an entry delivered more often is poison
-- ARGV[5]     key prefix P      ARGV[6] queue name
-- ARGV[7]     COUNT: the most entries the caller takes to run (0: it only
--             moves stale entries to the stale pool, for any worker)
-- ARGV[8]     '1' if the caller runs nothing now and can run one item alone
-- returns     the same flat form as fetch, after two leading integers: how
--             many entries this call moved to the stale pool (more work for
--             the fleet), and 1 when more claims ran out than one call
--             examines, or a resume or cancel it stepped has more left
--             (call again soon), else 0; attempt numbers count every
--             delivery
--
-- Runs on every worker's timer, whether it has free slots or not, so the
-- items of a dead worker are found within a second or so of their
-- visibility timeout under any queue depth and any length of the pending
-- list. An entry is stale when it has been idle longer than its holder's
-- own visibility timeout (P..'vis', so workers with different --visibility
-- never take from each other early). Candidates come from the claim index
-- (P..'claims', see _lib.lua): the members whose claim ran out, at most
-- CANDIDATES per call, oldest first, O(log n + k). Each is checked against
-- the pending list (XPENDING of that one entry: holder, idle time,
-- deliveries); a member whose entry is no longer pending is dropped, one
-- whose holder renewed it is moved to its true expiry. Then, per stale
-- entry, with d the deliveries so far:
--   d + 1 > max:   poison. It was delivered max times and never finished
--                  (it kills or stalls its worker): failed for good with the
--                  reason, dead-lettered, acknowledged and deleted.
--   d + 1 == max:  its last chance: it waits under SL_ALONE and is claimed
--                  only by a caller that runs nothing else (ARGV[8]), one
--                  per call, and runs alone: if it kills that worker it
--                  alone is counted again. So items that merely shared a
--                  worker with a poison item are never dead-lettered with it.
--   otherwise:     claimed by the caller (counting a delivery) while it has
--                  room (ARGV[7]); the rest go to the stale pool SL_STALE
--                  without counting a delivery, where every worker's fetch
--                  takes them before new entries (sl_take_stale).
-- The caller's own entries are left alone until three times its timeout:
-- what it still runs its heartbeats renew (a due beat goes out before this
-- call), and one that stalled and woke up must not take its own running
-- items over; only an entry it lost track of (its record could not be
-- kept) comes back this way when it is the only worker.
-- With room left, the caller also takes from the stale pool. Entries whose
-- stream entry was deleted meanwhile are dropped from the pending list.
-- The sweep: each call reads the next SWEEP entries of the group's pending
-- list (XPENDING from a cursor kept in P..'claims:at', one stream after
-- the other) and indexes those the claim index lacks (ZADD NX): entries a
-- worker read with its blocking XREADGROUP and died before its accept
-- call, or that an older version left. A whole pass over a pending list of
-- n entries takes n / SWEEP calls of the fleet.
-- Consumers of workers that no longer beat (no P..'w:NAME' key) and have
-- nothing pending are removed from the group, and their P..'vis' field;
-- never one with pending entries, which XGROUP DELCONSUMER would drop. That
-- walk reads every consumer, so one call a minute per queue makes it
-- (P..'cleanup', SET NX with a 60 s expiry), not every call of every worker.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, me, myvis, maxdel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix, queue, want, alone_ok = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local ctx = {prefix = prefix, status = {}, touched = {}, started = {}, again = true, vis = myvis, me = me}
local out = {0, 0}
local finished = {}
local moved, taken = 0, 0 -- taken: entries of workers that stopped beating, for P..metrics
local CANDIDATES = 100 -- claims examined per call
local SWEEP = 100 -- pending entries the sweep reads per call
local claims = prefix .. 'claims'
ctx.now = sl_now_ms()

-- Every holder's visibility timeout.
local vkey = prefix .. 'vis'
redis.call('HSET', vkey, me, myvis)
local vis = {}
do
  local all = redis.call('HGETALL', vkey)
  for k = 1, #all, 2 do
    vis[all[k]] = tonumber(all[k + 1]) or myvis
  end
end
-- How long an entry of owner may stay idle.
local function limit_of(owner)
  if owner == me then return 3 * myvis end -- its own: see above
  return vis[owner] or myvis
end

-- The batch log of a takeover (sl_log): item f's attempt att was lost with
-- worker from, idle for idle ms; to is the worker that runs it now, or
-- SL_STALE (the first worker with a free slot: 'taken' is logged then).
local function log_takeover(f, att, from, idle, to)
  local bkey = prefix .. 'b:' .. f[2]
  if redis.call('EXISTS', bkey) == 1 then
    sl_log(bkey, 'takeover', 'i', f[4], 'id', sl_item_id(f[8]) or '', 'att', att, 'from', from, 'idle_ms', idle,
           'to', to, 'by', me)
  end
end

local drop, later = {}, {}
local due = redis.call('ZRANGEBYSCORE', claims, '-inf', ctx.now, 'LIMIT', 0, CANDIDATES)
if #due == CANDIDATES then out[2] = 1 end
for _, m in ipairs(due) do
  local s, eid = tonumber(string.sub(m, 1, 1)), string.sub(m, 3)
  local p = KEYS[s] and sl_holder(KEYS[s], group, eid)
  local owner = p and p[2]
  local idle, d = p and tonumber(p[3]), p and tonumber(p[4])
  if not p or owner == SL_STALE or owner == SL_ALONE then
    drop[#drop + 1] = m -- ended, or waiting in a pool (no claim there)
  elseif idle < limit_of(owner) then
    later[#later + 1] = ctx.now + limit_of(owner) - idle -- renewed meanwhile
    later[#later + 1] = m
  else
    drop[#drop + 1] = m -- a claim to the caller comes back through sl_emit
    local r = redis.call('XRANGE', KEYS[s], eid, eid)
    local f = r[1] and r[1][2]
    if f then sl_run_drop(prefix, f[2], s, eid) end -- sl_emit adds it again if it runs
    if not f then
      redis.call('XACK', KEYS[s], group, eid) -- deleted meanwhile
    elseif d + 1 > maxdel then
      local bkey = prefix .. 'b:' .. f[2]
      local reason = string.format('poison: delivered %d times without finishing (max-deliveries %d);' ..
                                   ' it killed or stalled its worker every time (last: %s)', d, maxdel, owner)
      local ok, item = pcall(cjson.decode, f[8])
      local res = cjson.encode({id = (ok and type(item) == 'table' and item.id) or f[4],
                                status = 'failed', attempts = tonumber(f[6]) + d - 1,
                                started_at = cjson.null, finished_at = ctx.now,
                                duration_ms = cjson.null, worker = cjson.null, error = reason})
      if redis.call('EXISTS', bkey) == 1 and redis.call('HSETNX', bkey .. ':r', f[4], res) == 1 then
        redis.call('HINCRBY', bkey, 'failed', 1)
        redis.call('HINCRBY', bkey, 'done', 1)
        sl_dead(prefix, f[2], f[4], s, f, tonumber(f[6]) + d - 1, reason, ctx.now)
        sl_log(bkey, 'poison', 'i', f[4], 'id', sl_item_id(f[8]) or '', 'att', tonumber(f[6]) + d - 1,
               'from', owner, 'idle_ms', idle, 'by', me, 'error', reason)
        sl_metric(prefix, 'ended:failed', 1)
        finished[f[2]] = true
      end
      redis.call('XACK', KEYS[s], group, eid)
      redis.call('XDEL', KEYS[s], eid)
    elseif d + 1 == maxdel then
      redis.call('XCLAIM', KEYS[s], group, SL_ALONE, 0, eid, 'JUSTID')
      sl_taken(prefix, s, eid, SL_ALONE, ctx.now)
      log_takeover(f, tonumber(f[6]) + d - 1, owner, idle, SL_ALONE)
    elseif want > 0 then
      if #redis.call('XCLAIM', KEYS[s], group, me, 0, eid) > 0 and
         sl_admit(ctx, s, KEYS[s], group, eid, f) then
        log_takeover(f, tonumber(f[6]) + d - 1, owner, idle, me)
        sl_taken(prefix, s, eid, me, ctx.now)
        sl_emit(ctx, out, s, eid, f, tonumber(f[6]) + d)
        want = want - 1
        taken = taken + 1
      end
    else
      redis.call('XCLAIM', KEYS[s], group, SL_STALE, 0, eid, 'JUSTID')
      sl_taken(prefix, s, eid, SL_STALE, ctx.now)
      log_takeover(f, tonumber(f[6]) + d - 1, owner, idle, SL_STALE)
      moved = moved + 1
      taken = taken + 1
    end
  end
end
sl_claims_drop(prefix, drop)
sl_claims_write(prefix, later)

-- The sweep: the next page of the pending list, indexed where the claim
-- index lacks it.
do
  local at = redis.call('HMGET', claims .. ':at', 's', 'e')
  local s, start = tonumber(at[1]) or 1, at[2] or '-'
  if not KEYS[s] then s, start = 1, '-' end
  local pending = redis.call('XPENDING', KEYS[s], group, start, '+', SWEEP)
  local add = {}
  for _, p in ipairs(pending) do
    local owner = p[2]
    if owner ~= SL_STALE and owner ~= SL_ALONE then
      add[#add + 1] = ctx.now + math.max(0, limit_of(owner) - tonumber(p[3]))
      add[#add + 1] = s .. ':' .. p[1]
    end
  end
  sl_claims_write(prefix, add, 'NX')
  if #pending == SWEEP then
    start = '(' .. pending[#pending][1]
  else
    s, start = s % 3 + 1, '-'
  end
  redis.call('HSET', claims .. ':at', 's', s, 'e', start)
end

for s = 1, 3 do
  if want > 0 then
    want = want - sl_take_stale(ctx, out, s, KEYS[s], group, me, want)
  end
end
-- One item on its last allowed delivery, for a caller that runs nothing.
for s = 1, 3 do
  if not alone_ok or #out > 2 then break end
  for _, p in ipairs(redis.call('XPENDING', KEYS[s], group, '-', '+', 1, SL_ALONE)) do
    local eid, d = p[1], tonumber(p[4])
    local r = redis.call('XRANGE', KEYS[s], eid, eid)
    local f = r[1] and r[1][2]
    if not f then
      redis.call('XACK', KEYS[s], group, eid)
    elseif #redis.call('XCLAIM', KEYS[s], group, me, 0, eid) > 0 and
           sl_admit(ctx, s, KEYS[s], group, eid, f) then
      sl_taken(prefix, s, eid, me, ctx.now)
      sl_emit(ctx, out, s, eid, f, tonumber(f[6]) + d, true)
    end
  end
end
out[1] = moved
sl_metric(prefix, 'takeovers', taken)
for batch in pairs(finished) do
  sl_maybe_finish(prefix .. 'b:' .. batch, ctx.now)
  ctx.touched[batch] = true
end
sl_admit_done(ctx, queue)

-- A resume, a cancel or a limit removal whose client died between its
-- steps: one step of each here; with more left, the reply says so and the
-- worker calls again soon.
do
  local b = redis.call('ZRANGE', prefix .. 'unpark', 0, 0)[1]
  if b and sl_unpark(prefix, KEYS, b, 200) then out[2] = 1 end
  b = redis.call('ZRANGE', prefix .. 'drain', 0, 0)[1]
  if b then
    if sl_cancel_step(prefix, b, prefix .. 'delayed', 200, ctx.now) then out[2] = 1 end
    sl_maybe_finish(prefix .. 'b:' .. b, ctx.now)
    sl_publish(prefix, queue, b, ctx.now)
  end
  -- and of a limit removal (limit rm): its waiting items go back
  local name = redis.call('ZRANGE', prefix .. 'rmlimit', 0, 0)[1]
  if name and redis.call('HEXISTS', prefix .. 'limits', name) == 1 then
    redis.call('ZREM', prefix .. 'rmlimit', name) -- set again since: its leases wake them
  elseif name and sl_wake_step(prefix, prefix .. 'limits', KEYS, name, 200)[2] > 0 then
    out[2] = 1
  end
end

-- Concurrency leases that lapsed (their worker died) free places: wake as
-- many waiting items, at most SL_WAKE_MAX per limit in one call.
local lims = redis.call('HGETALL', prefix .. 'limits')
for k = 1, #lims, 2 do
  local conc = tonumber(string.match(lims[k + 1], '^%d+ %d+ %S+ (%d+)$') or '0')
  if conc > 0 then
    local ckey = prefix .. 'cl:' .. lims[k]
    redis.call('ZREMRANGEBYSCORE', ckey, '-inf', ctx.now)
    sl_wake(prefix, KEYS, lims[k], math.min(conc - redis.call('ZCARD', ckey), SL_WAKE_MAX))
  end
end

-- Consumers of dead workers with nothing pending: at most once a minute
-- per queue, fleet-wide (P..'cleanup' is the minute's token).
for s = 1, (redis.call('SET', prefix .. 'cleanup', me, 'PX', 60000, 'NX') and 3 or 0) do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[s], group)) do
    local name, npending = c[2], c[4]
    if name ~= me and npending == 0 and redis.call('EXISTS', prefix .. 'w:' .. name) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[s], group, name)
      if s == 3 then redis.call('HDEL', vkey, name) end
    end
  end
end
return out
