-- sluice_v1_cancel: cancels a batch.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- KEYS[2]     the queue's delayed set P..'delayed'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- ARGV[4]     '1' to abort running items too (optional): their workers learn
--             it with their next heartbeat (sluice_v1_beat), stop them, and
--             the items are counted cancelled
-- returns     the batch's status after the call ('cancelled', or 'completed'
--             when it had already ended and there was nothing to cancel)
-- errors      'SLUICE_NOTFOUND' when there is no such batch
--
-- No item of a cancelled batch starts afterwards: fetch finishes the ones
-- still in the streams as `cancelled` when it meets them. Items that are
-- not in a stream are finished here at once: those parked by a pause
-- (P..'b:ID:p') and those waiting in the delayed set (scheduled for later,
-- or a retry). A batch still `submitting` (its producer may have died) gets
-- its final total, the items written so far, so that it can end.
local bkey, dkey, prefix, batch = KEYS[1], KEYS[2], ARGV[1], ARGV[3]
local v = redis.call('HMGET', bkey, 'status', 'whole', 'submitted')
if not v[1] then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. batch .. ' in this queue')
end
if v[1] == 'cancelled' and ARGV[4] == '1' then
  redis.call('HSET', bkey, 'abort', 1) -- cancelled before, aborted now
  return 'cancelled'
end
if v[1] == 'completed' or v[1] == 'cancelled' then return v[1] end
local now = sl_now_ms()
redis.call('HSET', bkey, 'status', 'cancelled', 'cancelled_at', now)
if ARGV[4] == '1' then redis.call('HSET', bkey, 'abort', 1) end
if v[2] ~= '1' then
  redis.call('HSET', bkey, 'whole', 1, 'total', v[3])
end
-- Parked items (the batch was paused).
for _, e in ipairs(redis.call('XRANGE', bkey .. ':p', '-', '+')) do
  local f = e[2] -- p, s, b, B, i, IDX, a, A, d, D, ...
  sl_cancel_item(bkey, f[6], f[8], f[10], now)
end
redis.call('DEL', bkey .. ':p')
-- Delayed items of this batch: members "p\nBATCH\nidx\nattempt\nerrors\nd".
local cursor = '0'
repeat
  local r = redis.call('ZSCAN', dkey, cursor, 'MATCH', '?\n' .. batch .. '\n*', 'COUNT', 1000)
  cursor = r[1]
  for k = 1, #r[2], 2 do
    local m = r[2][k]
    if redis.call('ZREM', dkey, m) == 1 then
      local p1 = string.find(m, '\n', 1, true)
      local p2 = string.find(m, '\n', p1 + 1, true)
      local p3 = string.find(m, '\n', p2 + 1, true)
      local p4 = string.find(m, '\n', p3 + 1, true)
      local p5 = string.find(m, '\n', p4 + 1, true)
      sl_cancel_item(bkey, string.sub(m, p2 + 1, p3 - 1), string.sub(m, p3 + 1, p4 - 1),
                     string.sub(m, p5 + 1), now)
    end
  end
until cursor == '0'
sl_maybe_finish(bkey, now)
sl_publish(prefix, ARGV[2], batch, now)
return 'cancelled'
