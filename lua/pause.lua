-- sluice_v1_pause: pauses a batch: no new item of it starts until resume.
-- KEYS[1]     batch hash P..'b:'..BATCH
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- ARGV[4]     optional: who pauses, for the batch log (sl_by)
-- returns     the batch's status after the call ('paused', or the status of
--             a batch that has ended or was cancelled)
-- errors      'SLUICE_NOTFOUND' when there is no such batch
--
-- Running items finish. Items workers meet afterwards are parked in the
-- batch's own stream P..'b:ID:p' (see sl_admit), so they are neither run
-- nor lost; resume puts them back. The status before the pause is kept in
-- paused_from.
local bkey = KEYS[1]
local st = redis.call('HGET', bkey, 'status')
if not st then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. ARGV[3] .. ' in this queue')
end
if st == 'completed' or st == 'cancelled' or st == 'paused' then return st end
local now = sl_now_ms()
redis.call('HSET', bkey, 'status', 'paused', 'paused_from', st, 'paused_at', now)
sl_set_status(ARGV[1], ARGV[3], st, 'paused')
sl_log(bkey, 'paused', 'by', sl_by(ARGV[4]), 'from', st)
sl_publish(ARGV[1], ARGV[2], ARGV[3], now)
return 'paused'
