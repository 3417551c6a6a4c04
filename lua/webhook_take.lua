-- sluice_v1_webhook_take: claims batch-end webhooks that are due.
-- KEYS[1]     P..'webhooks' (sorted set: batch id -> next attempt, ms)
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] lease, ms
-- ARGV[4]     most to take
-- returns     a flat array, 5 per webhook: batch id, URL, attempt (1 for
--             the first try of this end of the batch), the summary JSON to
--             POST, the message id (sl_webhook_id: the webhook-id header)
--
-- A claim moves the batch's score a lease into the future, so however many
-- workers race, one of them sends it; if that worker dies the lease lapses
-- and another sends it again, with the same message id (receivers dedupe
-- with webhook-id).
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local key, prefix, queue = KEYS[1], ARGV[1], ARGV[2]
local now = sl_now_ms()
local out = {}
for _, batch in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local bkey = prefix .. 'b:' .. batch
  local v = redis.call('HMGET', bkey, 'webhook', 'status', 'total', 'done', 'succeeded', 'failed',
                       'cancelled', 'created_at', 'finished_at', 'name', 'webhook_end')
  if not v[1] then
    redis.call('ZREM', key, batch) -- the batch expired, or has no webhook
  else
    local n = tonumber(v[11])
    if not n then
      -- ended before ends were counted: this is its first message, and
      -- its next end (HINCRBY in sl_maybe_finish) must be the second
      n = 1
      redis.call('HSET', bkey, 'webhook_end', 1)
    end
    redis.call('ZADD', key, now + tonumber(ARGV[3]), batch)
    local attempt = redis.call('HINCRBY', bkey, 'webhook_attempts', 1)
    local summary = cjson.encode({event = 'batch.ended', queue = queue, batch = batch, name = v[10] or '',
                                  status = v[2], total = sl_num(v[3]), done = sl_num(v[4]),
                                  succeeded = sl_num(v[5]), failed = sl_num(v[6]),
                                  cancelled = sl_num(v[7]), created_at = sl_num(v[8]),
                                  finished_at = sl_num(v[9]), ts = now})
    out[#out + 1] = batch
    out[#out + 1] = v[1]
    out[#out + 1] = attempt
    out[#out + 1] = summary
    out[#out + 1] = sl_webhook_id(prefix, batch, n)
  end
end
return out
