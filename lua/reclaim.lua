-- sluice_v1_reclaim: takes over items whose worker stopped keeping them alive.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] consumer name (the caller)
-- ARGV[3]     visibility timeout, ms: entries idle longer are taken over
-- ARGV[4]     max deliveries: an entry delivered more often goes to the dead letters
-- ARGV[5]     key prefix P      ARGV[6] queue name    ARGV[7] COUNT (most entries taken)
-- returns     the same flat form as fetch (leading due time 0), attempt
--             numbers counting every delivery
--
-- XAUTOCLAIM is run per stream until its cursor comes back to 0-0 or COUNT
-- entries were taken: on Redis 7.0 deleted entries use up COUNT, so an empty
-- answer with a non-zero cursor does not mean "done". Claiming without
-- JUSTID increments the delivery count, which XPENDING then reports. An
-- entry delivered more than max-deliveries times (it kills its worker every
-- time, say) is failed for good with the reason and leaves a dead letter
-- (poison). Consumers of workers that no longer beat (no P..'w:NAME' key)
-- and hold no pending entries are removed from the group; never one with
-- pending entries, which XGROUP DELCONSUMER would drop.
local group, me, idle, maxdel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local prefix, queue, want = ARGV[5], ARGV[6], tonumber(ARGV[7])
local ctx = {prefix = prefix, status = {}, touched = {}, started = {}, again = true}
local out = {0}
local counts = {}
ctx.now = sl_now_ms()

for s = 1, 3 do
  local cursor, rounds = '0-0', 0
  repeat
    rounds = rounds + 1
    local r = redis.call('XAUTOCLAIM', KEYS[s], group, me, idle, cursor, 'COUNT', want)
    cursor = r[1]
    for _, e in ipairs(r[2]) do
      local eid, f = e[1], e[2]
      local p = redis.call('XPENDING', KEYS[s], group, eid, eid, 1)
      local deliveries = p[1] and tonumber(p[1][4]) or 1
      local attempt = tonumber(f[6]) + deliveries - 1
      if deliveries > maxdel then
        local bkey = prefix .. 'b:' .. f[2]
        local reason = string.format('poison: delivered %d times without finishing (max-deliveries %d);' ..
                                     ' its worker died or stalled every time', deliveries - 1, maxdel)
        local ok, item = pcall(cjson.decode, f[8])
        local res = cjson.encode({id = (ok and type(item) == 'table' and item.id) or f[4],
                                  status = 'failed', attempts = deliveries - 1,
                                  started_at = cjson.null, finished_at = ctx.now,
                                  duration_ms = cjson.null, worker = cjson.null, error = reason})
        if redis.call('EXISTS', bkey) == 1 and redis.call('HSETNX', bkey .. ':r', f[4], res) == 1 then
          redis.call('HINCRBY', bkey, 'failed', 1)
          redis.call('HINCRBY', bkey, 'done', 1)
          sl_dead(prefix, f[2], f[4], s, f, deliveries - 1, reason, ctx.now)
          counts[f[2]] = true
        end
        redis.call('XACK', KEYS[s], group, eid)
        redis.call('XDEL', KEYS[s], eid)
      elseif sl_admit(ctx, KEYS[s], group, eid, f[2], f[4], f[6], f[8]) then
        sl_emit(out, s, eid, f, attempt)
        want = want - 1
      end
    end
  until cursor == '0-0' or want <= 0 or rounds >= 32
end
for batch in pairs(counts) do
  sl_maybe_finish(prefix .. 'b:' .. batch, ctx.now)
  ctx.touched[batch] = true
end
sl_admit_done(ctx, queue)

-- Consumers of dead workers with nothing pending.
for s = 1, 3 do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[s], group)) do
    local name, pending = c[2], c[4]
    if name ~= me and pending == 0 and redis.call('EXISTS', prefix .. 'w:' .. name) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[s], group, name)
    end
  end
end
return out
