-- sluice_v1_progress: records and publishes the progress of running items.
-- ARGV[1]     key prefix P    ARGV[2] queue name
-- ARGV[3..]   per item: batch id, item index, percent (0-100)
-- returns     the number of items recorded
--
-- P..'b:ID:progress' maps item index -> percent while the item runs (the
-- completion removes its field; the hash expires with the batch). One event
-- per batch, {"type":"progress","queue","batch","items":{"IDX":pct,...},"ts"},
-- goes to the batch's channel and the queue's; batch events carry no
-- "type", so subscribers tell them apart. Workers send this at most every
-- 500 ms, so a chatty handler cannot flood Redis.
do local denied = sl_worker_only(ARGV[1] .. 's:high') if denied then return denied end end
local prefix, queue = ARGV[1], ARGV[2]
local now = sl_now_ms()
local by_batch = {}
local n = 0
for i = 3, #ARGV, 3 do
  local batch, idx, pct = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) or 0
  local bkey = prefix .. 'b:' .. batch
  if pct < 0 then pct = 0 end
  if pct > 100 then pct = 100 end
  if redis.call('EXISTS', bkey) == 1 and redis.call('HEXISTS', bkey .. ':r', idx) == 0 then
    redis.call('HSET', bkey .. ':progress', idx, pct)
    by_batch[batch] = by_batch[batch] or {}
    by_batch[batch][idx] = pct
    n = n + 1
  end
end
for batch, items in pairs(by_batch) do
  local msg = cjson.encode({type = 'progress', queue = queue, batch = batch, items = items, ts = now})
  redis.call('PUBLISH', prefix .. 'events', msg)
  redis.call('PUBLISH', prefix .. 'events:' .. batch, msg)
end
return n
