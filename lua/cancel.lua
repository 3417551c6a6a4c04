-- sluice_v1_cancel: cancels a batch.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- returns     the batch's status after the call ('cancelled', or 'completed'
--             when it had already ended and there was nothing to cancel)
-- errors      'SLUICE_NOTFOUND' when there is no such batch
--
-- No item of a cancelled batch starts afterwards: fetch finishes them as
-- `cancelled`. A batch still `submitting` (its producer may have died) gets
-- its final total, the items written so far, so that it can end.
local bkey = KEYS[1]
local v = redis.call('HMGET', bkey, 'status', 'whole', 'submitted')
if not v[1] then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. ARGV[3] .. ' in this queue')
end
if v[1] == 'completed' or v[1] == 'cancelled' then return v[1] end
local now = sl_now_ms()
redis.call('HSET', bkey, 'status', 'cancelled', 'cancelled_at', now)
if v[2] ~= '1' then
  redis.call('HSET', bkey, 'whole', 1, 'total', v[3])
end
sl_maybe_finish(bkey, now)
sl_publish(ARGV[1], ARGV[2], ARGV[3], now)
return 'cancelled'
