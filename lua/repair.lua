-- sluice_v1_repair: ends or puts back items of an unfinished batch that a
-- search found nowhere (`sluice repair`, src/repair.c), one bounded step.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     batch hash P..'b:'..BATCH
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] consumer group
-- ARGV[4]     batch id        ARGV[5] mode:
--   'stuck'   ARGV[6..] pairs priority (1-3), stream entry id: entries
--             that are in their stream but pending to nobody although the
--             group has read past them, so no worker would ever read them
--             again. Each one that still is so is put back at the end of
--             its stream (a copy marked x = 1, the old entry deleted).
--   'lost'    ARGV[6] the batch's `moves` before the search began;
--             ARGV[7..] item indexes (at most 1000) found in no stream, no
--             delayed set, no parked or waiting list and with no result.
--             Their item JSON is gone with them, so they cannot run again:
--             each is ended, `failed` with an error that says so and a dead
--             letter without item (`cancelled` in a cancelled batch), and
--             counted in the batch's `lost` field.
--   'empty'   (workers, on their own) ARGV[6] a batch id or '' and ARGV[7]
--             the first item index: only while the whole queue is empty (no
--             stream entry, pending or not, no delayed item, no waiting
--             item), so that every unfinished item of a batch is truly
--             nowhere. With '' it picks the newest batch (of the last 100)
--             that is queued, running or cancelled, whole, not done and has
--             nothing parked. Ends the missing items among the next 1000 indexes as
--             'lost' does.
--             returns {batch, next index (-1: done), items ended}, or an
--             empty array when the queue is not empty or no batch qualifies
--             (KEYS[4] is then P..'batches')
-- returns     the number of items put back or ended
--
-- A worker function (sl_worker_only: a user that may XACK): it trusts the
-- caller's search, so producers and dashboards may not call it.
-- errors      'SLUICE_ARGS' (malformed arguments; nothing was written),
--             'SLUICE_NOTFOUND' (no such batch),
--             'SLUICE_MOVED' ('lost' only: an item moved between places
--             during the search, which may have missed it; nothing was
--             written: search again)
--
-- Every call that moves an unfinished item backwards (to a place the
-- search may have read already) adds one to the batch's `moves` (sl_moved);
-- a search that began at the same value saw each item in at least one
-- place, so an item it did not see is truly nowhere. An index with a
-- result by now is
-- skipped, so a step sent twice ends nothing twice.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local prefix, queue, group, batch, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local bkey = KEYS[4]
local streams = {KEYS[1], KEYS[2], KEYS[3]}
local now = sl_now_ms()
local n = 0
local why = 'lost: the item was in no stream, retry set, parked or waiting list and had no result (Redis lost ' ..
            'it: a rollback, a failover or a deletion); its item JSON is gone, so sluice repair ended it. ' ..
            'Submit it again.'

-- Ends item idx of batch bkey (status st) as lost; true if this call did.
local function end_lost(bkey, batch, st, idx)
  if st == 'cancelled' then
    return sl_cancel_item(bkey, idx, 1, '', now, 'cancelled: ' .. why)
  end
  local res = cjson.encode({id = idx, status = 'failed', attempts = 0, started_at = cjson.null,
                            finished_at = now, duration_ms = cjson.null, worker = cjson.null, error = why})
  if redis.call('HSETNX', bkey .. ':r', idx, res) == 1 then
    redis.call('HINCRBY', bkey, 'failed', 1)
    redis.call('HINCRBY', bkey, 'done', 1)
    sl_dead(prefix, batch, idx, 2, nil, 0, why, now)
    sl_metric(prefix, 'ended:failed', 1)
    return true
  end
  return false
end

local function ended(bkey, batch, n)
  if n > 0 then
    redis.call('HINCRBY', bkey, 'lost', n)
    sl_maybe_finish(bkey, now)
    sl_publish(prefix, queue, batch, now)
  end
end

if mode == 'empty' then
  for s = 1, 3 do
    if redis.call('XLEN', streams[s]) > 0 then return {} end
  end
  if redis.call('ZCARD', prefix .. 'delayed') > 0 then return {} end
  local lims = redis.call('HGETALL', prefix .. 'limits')
  for k = 1, #lims, 2 do
    if redis.call('XLEN', prefix .. 'cw:' .. lims[k]) > 0 then return {} end
  end
  local function stalled(b)
    local v = redis.call('HMGET', prefix .. 'b:' .. b, 'status', 'total', 'done', 'whole')
    return (v[1] == 'running' or v[1] == 'queued' or v[1] == 'cancelled') and v[4] == '1' and
           sl_num(v[3]) < sl_num(v[2]) and
           redis.call('XLEN', prefix .. 'b:' .. b .. ':p') == 0, sl_num(v[2]), v[1]
  end
  batch = ARGV[6] or ''
  if batch == '' then
    for _, b in ipairs(redis.call('ZRANGE', prefix .. 'batches', 0, 99, 'REV')) do
      if stalled(b) then batch = b break end
    end
    if batch == '' then return {} end
  end
  local ok, total, st = stalled(batch)
  if not ok then return {} end
  bkey = prefix .. 'b:' .. batch
  local from = tonumber(ARGV[7]) or 0
  local to = math.min(from + 1000, total)
  for i = from, to - 1 do
    if end_lost(bkey, batch, st, tostring(i)) then n = n + 1 end
  end
  ended(bkey, batch, n)
  return {batch, to < total and to or -1, n}
end

local st = redis.call('HGET', bkey, 'status')
if not st then
  return redis.error_reply('SLUICE_NOTFOUND no batch ' .. batch .. ' in this queue')
end

if mode == 'stuck' then
  for i = 6, #ARGV - 1, 2 do
    local s, eid = tonumber(ARGV[i]), ARGV[i + 1]
    if s ~= 1 and s ~= 2 and s ~= 3 then
      return redis.error_reply('SLUICE_ARGS priority must be 1-3')
    end
    local r = redis.call('XRANGE', streams[s], eid, eid)
    if r[1] and not sl_holder(streams[s], group, eid) then
      local last = nil
      for _, g in ipairs(redis.call('XINFO', 'GROUPS', streams[s])) do
        for k = 1, #g - 1, 2 do
          if g[k] == 'name' and g[k + 1] == group then last = g end
        end
      end
      local delivered = nil
      for k = 1, last and #last - 1 or 0, 2 do
        if last[k] == 'last-delivered-id' then delivered = last[k + 1] end
      end
      local function before(a, b) -- stream id a <= b
        local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
        local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
        a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
        return a1 < b1 or (a1 == b1 and a2 <= b2)
      end
      if delivered and before(eid, delivered) then
        local f = {'p', s}
        for _, v in ipairs(r[1][2]) do f[#f + 1] = v end
        sl_putback(streams, f)
        redis.call('XDEL', streams[s], eid)
        n = n + 1
      end
    end
  end
  return n
end

if mode ~= 'lost' or not string.match(ARGV[6] or '', '^%d+$') or #ARGV - 6 > 1000 then
  return redis.error_reply('SLUICE_ARGS mode must be stuck or lost; lost takes the moves counter and at most ' ..
                           '1000 indexes')
end
if (redis.call('HGET', bkey, 'moves') or '0') ~= ARGV[6] then
  return redis.error_reply('SLUICE_MOVED items moved during the search; search again')
end
for i = 7, #ARGV do
  local idx = ARGV[i]
  if not string.match(idx, '^%d+$') then
    return redis.error_reply('SLUICE_ARGS item indexes are decimal numbers')
  end
  if end_lost(bkey, batch, st, idx) then n = n + 1 end
end
ended(bkey, batch, n)
return n
