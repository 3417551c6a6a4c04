-- sluice_v1_resume: resumes a paused batch, one bounded step per call.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- KEYS[2..4]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- ARGV[4]     the most parked items this call puts back (1-10000)
-- ARGV[5]     optional: who resumes, for the batch log (sl_by)
-- returns     {status, more}: the batch's status after the call, and 1 when
--             parked items are left to put back (call it again), else 0
-- errors      'SLUICE_NOTFOUND' when there is no such batch,
--             'SLUICE_ARGS' (a bad ARGV[4]; nothing was written)
--
-- The first call of a resume sets the status back to what it was before
-- the pause: from then on nothing of the batch is parked, and its new
-- entries run. The items parked meanwhile go back to the ends of their
-- priority streams (marked x = 1, so admission checks they have not ended
-- meanwhile), at most ARGV[4] per call (sl_unpark); the batch is listed in
-- P..'unpark' (a sorted set, score = when it was resumed) until none is
-- left, so a resume whose client died between steps is finished by any
-- worker (reclaim) or by the next resume call.
local bkey, batch, max = KEYS[1], ARGV[3], tonumber(ARGV[4])
if not string.match(ARGV[4] or '', '^%d+$') or max < 1 or max > 10000 then
  return redis.error_reply('SLUICE_ARGS the most items per call must be 1-10000')
end
local v = redis.call('HMGET', bkey, 'status', 'paused_from')
if not v[1] then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. batch .. ' in this queue')
end
local st = v[1]
local now = sl_now_ms()
if st == 'paused' then
  st = v[2] or 'running'
  redis.call('HSET', bkey, 'status', st, 'resumed_at', now)
  sl_set_status(ARGV[1], batch, 'paused', st)
  redis.call('HDEL', bkey, 'paused_from')
  sl_log(bkey, 'resumed', 'by', sl_by(ARGV[5]), 'to', st, 'parked', redis.call('XLEN', bkey .. ':p'))
  redis.call('ZADD', ARGV[1] .. 'unpark', now, batch)
  sl_maybe_finish(bkey, now)
  sl_publish(ARGV[1], ARGV[2], batch, now)
end
local more = sl_unpark(ARGV[1], {KEYS[2], KEYS[3], KEYS[4]}, batch, max)
return {redis.call('HGET', bkey, 'status') or st, more and 1 or 0}
