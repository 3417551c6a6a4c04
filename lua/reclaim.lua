-- sluice_v1_reclaim: takes over items whose worker stopped keeping them alive.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] consumer name (the caller)
-- ARGV[3]     visibility timeout, ms: entries idle longer are taken over
-- ARGV[4]     max deliveries (>= 2): an entry delivered more often is poison
-- ARGV[5]     key prefix P      ARGV[6] queue name    ARGV[7] COUNT (most entries taken)
-- ARGV[8]     '1' if the caller runs nothing now and can run one item alone
-- returns     the same flat form as fetch (leading due time 0); attempt
--             numbers count every delivery
--
-- Candidates come from XPENDING with an IDLE filter, which also tells how
-- often each was delivered, before anything is claimed (XAUTOCLAIM would
-- claim first, and claiming counts a delivery). Then, per entry, with d the
-- deliveries so far:
--   d + 1 > max:   poison. It was delivered max times and never finished
--                  (it kills or stalls its worker): failed for good with the
--                  reason, dead-lettered, acknowledged and deleted.
--   d + 1 == max:  its last chance. It is claimed only by a caller that runs
--                  nothing else (ARGV[8]), one per call, and runs alone: if
--                  it kills that worker it alone is counted again. So items
--                  that merely shared a worker with a poison item are never
--                  dead-lettered with it.
--   otherwise:     claimed (XCLAIM, counting the delivery) and run.
-- Entries whose stream entry was deleted meanwhile are dropped from the
-- pending list. Consumers of workers that no longer beat (no P..'w:NAME'
-- key) and have nothing pending are removed from the group; never one with
-- pending entries, which XGROUP DELCONSUMER would drop.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, me, idle, maxdel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix, queue, want, alone_ok = ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1'
local ctx = {prefix = prefix, status = {}, touched = {}, started = {}, again = true, vis = idle}
local out = {0}
local finished = {}
ctx.now = sl_now_ms()

for s = 1, 3 do
  if want <= 0 then break end
  local pending = redis.call('XPENDING', KEYS[s], group, 'IDLE', idle, '-', '+', want * 4)
  for _, p in ipairs(pending) do
    if want <= 0 then break end
    local eid, owner, d = p[1], p[2], tonumber(p[4])
    local r = redis.call('XRANGE', KEYS[s], eid, eid)
    local f = r[1] and r[1][2]
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
        finished[f[2]] = true
      end
      redis.call('XACK', KEYS[s], group, eid)
      redis.call('XDEL', KEYS[s], eid)
    elseif d + 1 < maxdel or (alone_ok and #out == 1) then
      local alone = d + 1 == maxdel
      if #redis.call('XCLAIM', KEYS[s], group, me, idle, eid) > 0 and
         sl_admit(ctx, s, KEYS[s], group, eid, f) then
        sl_emit(ctx, out, s, eid, f, tonumber(f[6]) + d, alone)
        want = want - 1
      end
      if alone then
        want = 0 -- it runs alone: nothing else this call
        alone_ok = false
      end
    end
  end
end
for batch in pairs(finished) do
  sl_maybe_finish(prefix .. 'b:' .. batch, ctx.now)
  ctx.touched[batch] = true
end
sl_admit_done(ctx, queue)

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

-- Consumers of dead workers with nothing pending.
for s = 1, 3 do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[s], group)) do
    local name, npending = c[2], c[4]
    if name ~= me and npending == 0 and redis.call('EXISTS', prefix .. 'w:' .. name) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[s], group, name)
    end
  end
end
return out
