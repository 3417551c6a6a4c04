-- sluice_v1_state (read-only: FCALL_RO may call it, on a replica too): the
-- state of batches as one snapshot, so its counts add up.
-- KEYS[1..N]  batch hashes P..'b:'..BATCH (N <= 100), of one queue
-- returns     per key, the batch hash's fields and values (HGETALL; empty
--             when the batch does not exist) followed by its live state
--             (sl_live) as fields live:queued, live:scheduled,
--             live:waiting, live:running, live:retrying, live:paused,
--             live:pct, live:rate and live:eta_ms ('' while unknown) and
--             live:now (the server's clock, ms), every value a string
--
-- Each count is an O(1) or O(log n) read of the batch's own keys, so a
-- call costs the same for a batch of ten items and of ten million.
if #KEYS > 100 then return redis.error_reply('SLUICE_ARGS at most 100 batches per call') end
local now = sl_now_ms()
local out = {}
for i, bkey in ipairs(KEYS) do
  local h = redis.call('HGETALL', bkey)
  if #h > 0 then
    local live = sl_live(bkey, now)
    for _, k in ipairs(SL_LIVE_FIELDS) do
      h[#h + 1] = 'live:' .. k
      h[#h + 1] = tostring(live[k])
    end
    h[#h + 1] = 'live:pct'
    h[#h + 1] = string.format('%.1f', live.pct)
    h[#h + 1] = 'live:rate'
    h[#h + 1] = live.rate and string.format('%.2f', live.rate) or ''
    h[#h + 1] = 'live:eta_ms'
    h[#h + 1] = live.eta_ms and tostring(live.eta_ms) or ''
    h[#h + 1] = 'live:now'
    h[#h + 1] = tostring(now)
  end
  out[i] = h
end
return out
