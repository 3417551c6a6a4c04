-- sluice_v1_webhook_done: records the outcome of a webhook delivery.
-- KEYS[1]     P..'webhooks'
-- ARGV[1]     key prefix P    ARGV[2] batch id
-- ARGV[3]     'ok', or the error text
-- ARGV[4]     when to try again, ms from now ('' : give up)
-- returns     1
--
-- Delivered: the batch leaves the set and its hash gets webhook_at. Failed
-- with a retry: the score moves to the next attempt. Given up: the batch
-- leaves the set and keeps the last error in webhook_error.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local key, bkey, batch = KEYS[1], ARGV[1] .. 'b:' .. ARGV[2], ARGV[2]
local now = sl_now_ms()
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
