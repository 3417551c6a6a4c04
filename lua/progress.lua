-- sluice_v1_progress: records and publishes the progress of running items.
-- KEYS[1..3]  the queue's streams (high, normal, low): the queue's slot
-- ARGV[1]     key prefix P    ARGV[2] queue name
-- ARGV[3]     consumer group  ARGV[4] consumer name (the caller)
-- ARGV[5..]   per item: priority (1-3), stream entry id, batch id, item
--             index, percent (0-100)
-- returns     the entry ids among them that the caller no longer holds
--             (fenced: taken over, or ended): it stops those attempts
--
-- Progress is recorded only for an entry the caller still holds (pending,
-- with the caller as its consumer), so a worker that lost an item cannot
-- move its bar. P..'b:ID:progress' maps item index -> percent while the
-- item runs (the completion removes its field; the hash expires with the
-- batch). One event per batch, {"type":"progress","queue","batch",
-- "items":{"IDX":pct,...},"ts"}, goes to the batch's channel and the
-- queue's; batch events carry no "type", so subscribers tell them apart.
-- Workers send this at most every 500 ms, so a chatty handler cannot flood
-- Redis.
do local denied = sl_worker_only(ARGV[1] .. 's:high') if denied then return denied end end
local prefix, queue, group, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local streams = {prefix .. 's:high', prefix .. 's:normal', prefix .. 's:low'}
local now = sl_now_ms()
local by_batch = {}
local lost = {}
for i = 5, #ARGV, 5 do
  local s, eid, batch, idx = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local pct = tonumber(ARGV[i + 4]) or 0
  local bkey = prefix .. 'b:' .. batch
  if pct < 0 then pct = 0 end
  if pct > 100 then pct = 100 end
  local p = streams[s] and sl_holder(streams[s], group, eid)
  if not p or p[2] ~= me then
    lost[#lost + 1] = eid
  elseif redis.call('EXISTS', bkey) == 1 and redis.call('HEXISTS', bkey .. ':r', idx) == 0 then
    redis.call('HSET', bkey .. ':progress', idx, pct)
    by_batch[batch] = by_batch[batch] or {}
    by_batch[batch][idx] = pct
  end
end
for batch, items in pairs(by_batch) do
  local msg = cjson.encode({type = 'progress', queue = queue, batch = batch, items = items, ts = now})
  redis.call('SPUBLISH', prefix .. 'events', msg)
  redis.call('SPUBLISH', prefix .. 'events:' .. batch, msg)
end
return lost
