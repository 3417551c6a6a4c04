-- sluice_v1_resume: resumes a paused batch.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- KEYS[2..4]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- returns     the batch's status after the call
-- errors      'SLUICE_NOTFOUND' when there is no such batch
--
-- The status goes back to what it was before the pause, and the parked
-- items go back to the end of their priority streams (marked x = 1, so
-- admission checks they have not ended meanwhile).
local bkey = KEYS[1]
local v = redis.call('HMGET', bkey, 'status', 'paused_from')
if not v[1] then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. ARGV[3] .. ' in this queue')
end
if v[1] ~= 'paused' then return v[1] end
local now = sl_now_ms()
redis.call('HSET', bkey, 'status', v[2] or 'running', 'resumed_at', now)
redis.call('HDEL', bkey, 'paused_from')
local streams = {KEYS[2], KEYS[3], KEYS[4]}
for _, e in ipairs(redis.call('XRANGE', bkey .. ':p', '-', '+')) do
  sl_putback(streams, e[2])
end
redis.call('DEL', bkey .. ':p')
sl_maybe_finish(bkey, now)
sl_publish(ARGV[1], ARGV[2], ARGV[3], now)
return v[2] or 'running'
