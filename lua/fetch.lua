-- sluice_v1_fetch: takes up to COUNT new items in strict priority order.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] consumer name    ARGV[3] COUNT
-- ARGV[4]     key prefix P      ARGV[5] queue name
-- ARGV[6]     optional: weights "H,N,L" (e.g. "6,3,1") and ARGV[7] the
--             caller's turn counter: weighted fairness instead of strict
--             priority, so low priority never starves
-- ARGV[8]     the caller's visibility timeout, ms (a concurrency lease lasts
--             the item's timeout plus this)
-- returns     a flat array: first the due time of the next delayed retry (ms
--             since the epoch, 0 when none), then 10 elements per item:
--             priority (1-3), stream entry id, batch id, item index, attempt,
--             item JSON, earlier errors (JSON array, or ''), run-alone flag ('0'),
--             wait before it may start, ms (its rate limit, sl_rate_wait),
--             concurrency lease held ('' or the limit name, sl_lease)
--
-- Due retries are moved back to their streams first (sl_promote), so they
-- compete in priority order like new items. In each stream, entries in the
-- stale pool (taken from workers that stopped beating: see reclaim) come
-- before new ones, so a dead worker's items run again at once however deep
-- the queue is. The caller's visibility timeout is recorded in P..'vis':
-- it is the timeout of every entry the caller holds. XREADGROUP's COUNT applies per
-- stream, so the streams are read one at a time, high first, each until it
-- has no new entries or COUNT is reached. Entries that may not run
-- (cancelled or vanished batch, item already ended; see sl_admit) are
-- finished here and do not count against COUNT, but every entry read
-- counts against the call's budget (COUNT + 100, and at most 100 that do
-- not run): a fetch that meets a long run of a cancelled batch's entries
-- returns short, and the next call goes on.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, consumer, want = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ctx = {prefix = ARGV[4], status = {}, touched = {}, started = {}, vis = tonumber(ARGV[8]), me = consumer}
ctx.now = sl_now_ms()
local out = {sl_promote(ARGV[4], KEYS, ctx.now, 500)}
if ctx.vis then redis.call('HSET', ARGV[4] .. 'vis', consumer, ctx.vis) end

-- Entries one call reads from the streams at most, runnable or not (those
-- of a cancelled or paused batch are finished or parked as they are met):
-- a call never examines more than this, whatever the queue holds.
-- Finishing or parking an entry costs more than handing one out, so those
-- are bounded on their own (SKIP_MAX), and entries are read READ_MAX at a
-- time: a call that meets a long run of a cancelled batch stops after
-- SKIP_MAX of them.
local budget = math.max(want, 1) + 100
local READ_MAX, SKIP_MAX = 100, 100
local skipped = 0

-- Reads up to n runnable entries from stream s; returns how many it took.
local function take(s, n)
  local got = sl_take_stale(ctx, out, s, KEYS[s], group, consumer, n)
  while n - got > 0 and budget > 0 and skipped < SKIP_MAX do
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', math.min(n - got, budget, READ_MAX),
                         'STREAMS', KEYS[s], '>')
    if not r then break end
    local entries = r[1][2]
    if #entries == 0 then break end
    budget = budget - #entries
    for _, e in ipairs(entries) do
      local f = e[2]
      ctx.extra = #f > 8
      if sl_admit(ctx, s, KEYS[s], group, e[1], f) then
        sl_emit(ctx, out, s, e[1], f)
        got = got + 1
      else
        skipped = skipped + 1
      end
    end
  end
  return got
end

local weights = {}
if ARGV[6] and ARGV[6] ~= '' then
  for w in string.gmatch(ARGV[6], '%d+') do weights[#weights + 1] = tonumber(w) end
end
if #weights == 3 and weights[1] + weights[2] + weights[3] > 0 then
  -- Smooth weighted round robin over the slots, continuing from the
  -- caller's turn: 6,3,1 gives H N H L H N H H N H ... Each priority's
  -- share is read first; what a stream cannot fill goes to the others in
  -- priority order.
  local total = weights[1] + weights[2] + weights[3]
  local cur = {0, 0, 0}
  local share = {0, 0, 0}
  local turn = tonumber(ARGV[7]) or 0
  for k = 1, (turn % total) + want do
    local best = 1
    for s = 1, 3 do
      cur[s] = cur[s] + weights[s]
      if cur[s] > cur[best] then best = s end
    end
    cur[best] = cur[best] - total
    if k > turn % total then share[best] = share[best] + 1 end
  end
  for s = 1, 3 do
    if share[s] > 0 then want = want - take(s, share[s]) end
  end
end
for s = 1, 3 do
  if want <= 0 then break end
  want = want - take(s, want)
end
sl_admit_done(ctx, ARGV[5])
return out
