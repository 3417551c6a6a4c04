-- sluice_v1_cancel: cancels a batch, one bounded step per call.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- KEYS[2]     the queue's delayed set P..'delayed'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- ARGV[4]     '1' to abort running items too: their workers learn it with
--             their next heartbeat (sluice_v1_beat), stop them, and the
--             items are counted cancelled
-- ARGV[5]     the most parked or delayed entries this call examines
--             (1-10000; optional, 1000)
-- ARGV[6]     optional: who cancels, for the batch log (sl_by)
-- returns     {status, more}: the batch's status after the call
--             ('cancelled', or 'completed' when it had already ended and
--             there was nothing to cancel), and 1 when parked or delayed
--             items of it are left to finish (call it again), else 0
-- errors      'SLUICE_NOTFOUND' when there is no such batch, 'SLUICE_ARGS'
--
-- The first call marks the batch cancelled: from then on no item of it
-- starts (fetch, accept and reclaim finish the ones still in the streams
-- as `cancelled` when they meet them), and a batch still `submitting` (its
-- producer may have died) gets its final total, the items written so far.
-- The items that are not in a stream are finished in steps (sl_cancel_step):
-- those parked by a pause (P..'b:ID:p'), then those waiting in the delayed
-- set (scheduled for later, or a retry), found in the batch's own index of
-- them (P..'b:ID:dl', sl_delay) with an HSCAN whose cursor the batch keeps
-- in its field cancel_cursor: a step's work depends on the batch's delayed
-- items, never on the rest of the queue's delayed set. Until that is done the batch
-- is listed in P..'drain', so a cancel whose client died between steps is
-- finished by any worker (reclaim) or by the next cancel call.
local bkey, dkey, prefix, batch = KEYS[1], KEYS[2], ARGV[1], ARGV[3]
local max = tonumber(ARGV[5] or '1000')
if not max or max < 1 or max > 10000 then
  return redis.error_reply('SLUICE_ARGS the most entries per call must be 1-10000')
end
local v = redis.call('HMGET', bkey, 'status', 'whole', 'submitted')
if not v[1] then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. batch .. ' in this queue')
end
if v[1] == 'completed' then return {'completed', 0} end
local now = sl_now_ms()
if v[1] ~= 'cancelled' then
  redis.call('HSET', bkey, 'status', 'cancelled', 'cancelled_at', now)
  sl_set_status(prefix, batch, v[1], 'cancelled')
  if v[2] ~= '1' then
    redis.call('HSET', bkey, 'whole', 1, 'total', v[3])
  end
  redis.call('ZADD', prefix .. 'drain', now, batch)
  sl_log(bkey, 'cancelled', 'by', sl_by(ARGV[6]), 'from', v[1])
end
if ARGV[4] == '1' and redis.call('HSETNX', bkey, 'abort', 1) == 1 then
  sl_log(bkey, 'aborted', 'by', sl_by(ARGV[6]))
end
local more = sl_cancel_step(prefix, batch, dkey, max, now)
sl_maybe_finish(bkey, now)
sl_publish(prefix, ARGV[2], batch, now)
return {'cancelled', more and 1 or 0}
