-- sluice_v1_webhook_done: records the outcome of a webhook delivery.
-- KEYS[1]     P..'webhooks'
-- ARGV[1]     key prefix P    ARGV[2] batch id
-- ARGV[3]     'ok', or the error text
-- ARGV[4]     when to try again, ms from now ('' : give up)
-- ARGV[5]     optional: the message id webhook_take gave with the claim
-- returns     1, or 0 when ARGV[5] is not the batch's current message
--
-- Delivered: the batch leaves the set and its hash gets webhook_at. Failed
-- with a retry: the score moves to the next attempt. Given up: the batch
-- leaves the set and keeps the last error in webhook_error. An outcome of an
-- earlier end of the batch (it ran again and ended anew while that try was
-- in flight: another message id) changes nothing, so the new message is
-- still sent.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local key, prefix, bkey, batch = KEYS[1], ARGV[1], ARGV[1] .. 'b:' .. ARGV[2], ARGV[2]
if ARGV[5] and ARGV[5] ~= '' then
  local n = tonumber(redis.call('HGET', bkey, 'webhook_end')) or 1
  if ARGV[5] ~= sl_webhook_id(prefix, batch, n) then return 0 end
end
local now = sl_now_ms()
if redis.call('EXISTS', bkey) == 1 then
  local n = redis.call('HGET', bkey, 'webhook_attempts') or '?'
  sl_log(bkey, 'webhook', 'try', n, 'outcome', ARGV[3] == 'ok' and 'delivered' or ARGV[4] ~= '' and 'retry' or 'gave_up',
         'error', ARGV[3] == 'ok' and '' or ARGV[3])
end
if ARGV[3] == 'ok' then
  redis.call('ZREM', key, batch)
  redis.call('HSET', bkey, 'webhook_at', now)
  redis.call('HDEL', bkey, 'webhook_error')
elseif ARGV[4] ~= '' then
  redis.call('ZADD', key, now + tonumber(ARGV[4]), batch)
  redis.call('HSET', bkey, 'webhook_error', ARGV[3])
else
  redis.call('ZREM', key, batch)
  redis.call('HSET', bkey, 'webhook_error', 'gave up: ' .. ARGV[3])
end
return 1
