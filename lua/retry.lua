-- sluice_v1_retry: runs the failed items of a batch again (`sluice retry BATCH`).
-- KEYS[1]     batch hash P..'b:'..BATCH
-- KEYS[2]     its results hash P..'b:'..BATCH..':r'
-- KEYS[3]     its failed-items hash P..'b:'..BATCH..':f'
-- KEYS[4..6]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[7]     the dead letters P..'dead'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] batch id
-- ARGV[4]     the most items this call re-queues (1-10000)
-- ARGV[5]     consumer group
-- ARGV[6]     optional: the HSCAN cursor of the caller's walk ('0' or absent:
--             from the start)
-- ARGV[7]     optional: the time the retry began (ms, server clock): items
--             whose failure was recorded at or after it are left failed (they
--             failed again while this retry ran: a retry moves each failed
--             item once, however fast workers fail it again)
-- ARGV[8]     optional: who retries, for the batch log (sl_by)
-- returns     {requeued, more, cursor}: the items this call put back, 1 when
--             the walk goes on (call it again with the cursor), else 0
-- errors      'SLUICE_ARGS' (malformed arguments; nothing was written),
--             'SLUICE_NOTFOUND' (no such batch), 'SLUICE_CANCELLED' (the batch
--             was cancelled: its items would not run)
--
-- Each entry of the failed-items hash whose results line still says `failed`
-- is re-queued (sl_requeue): its result and entry are removed, its dead
-- letter deleted, and it goes back to its priority stream as attempt 1; the
-- batch's `failed` and `done` go down by one each and a `completed` batch is
-- `running` again. An entry whose result is not `failed` (or gone) is stale and
-- only removed; an entry without item JSON (sl_dead got no stream entry) stays, and
-- its item stays failed. A moved item has no result any more, so HSCAN
-- returning it twice does not move it twice, and a second call (or a call
-- sent again after a lost reply) finds nothing left: retry is idempotent.
-- Each call examines about ARGV[4] entries (whole HSCAN pages) from the
-- caller's cursor, so its work is bounded whatever the hash holds.
-- One event is published when anything moved.
local bkey, rkey, fkey, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[7]
local streams = {KEYS[4], KEYS[5], KEYS[6]}
local prefix, queue, batch, group = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local max = tonumber(ARGV[4])

if not string.match(ARGV[4] or '', '^%d+$') or max < 1 or max > 10000 then
  return redis.error_reply('SLUICE_ARGS the most items per call must be 1-10000')
end
local st = redis.call('HGET', bkey, 'status')
if not st then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. batch .. ' in this queue')
end
if st == 'cancelled' then
  return redis.error_reply('SLUICE_CANCELLED batch ' .. batch ..
                           ' was cancelled; its failed items would not run again')
end
for s = 1, 3 do
  local e = sl_ensure_group(streams[s], group)
  if e then return e end
end

local moved, refused, examined = 0, 0, 0
local cursor = ARGV[6] or '0'
local before = tonumber(ARGV[7] or '')
repeat
  local page = redis.call('HSCAN', fkey, cursor, 'COUNT', max)
  cursor = page[1]
  local kv = page[2]
  for j = 1, #kv, 2 do
    examined = examined + 1
    local idx = kv[j]
    local s, did, d = sl_failed_parse(kv[j + 1])
    local line = redis.call('HGET', rkey, idx)
    local res = sl_result_failed(line)
    if not res then
      redis.call('HDEL', fkey, idx) -- stale: the item has no failed result
    elseif before and (tonumber(res.finished_at) or 0) >= before then
      -- failed again since this retry began: it stays failed
    elseif s and d ~= '' then
      if string.find(line, '"refused":true', 1, true) then refused = refused + 1 end
      sl_requeue(bkey, streams, batch, idx, s, d)
      if did ~= '' then redis.call('XDEL', dkey, did) end -- a refused item has no dead letter
      moved = moved + 1
    end
  end
until cursor == '0' or examined >= max
local more = cursor == '0' and 0 or 1

if moved > 0 then
  sl_log(bkey, 'retried', 'by', sl_by(ARGV[8]), 'items', moved)
  sl_reopen(bkey, moved)
  if refused > 0 then redis.call('HINCRBY', bkey, 'refused', -refused) end
  sl_publish(prefix, queue, batch, sl_now_ms())
end
return {moved, more, cursor}
