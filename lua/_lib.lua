-- Helpers shared by the sluice functions (top level of the library).
-- Key layout (docs/PROTOCOL.md): every key of queue Q starts with the prefix
-- P = 'sluice:{Q}:' so a queue lives in one cluster slot.

-- Server time in ms since the epoch: one clock for the whole fleet.
-- Worker functions (fetch, accept, complete, beat, reclaim, release,
-- progress, penalize, the webhook pair, init, repair) refuse a Redis user that may
-- not acknowledge stream entries: ACLs cannot tell one function from
-- another, but the README's producer and dashboard users lack XACK, so they
-- cannot take items or record outcomes through FCALL. Checked before any
-- write. Returns an error reply, or nil for a worker.
local function sl_worker_only(key)
  if not redis.acl_check_cmd('XACK', key, 'workers', '0-0') then
    return redis.error_reply('NOPERM sluice worker functions need a Redis user that may XACK (a worker user; see ' ..
                             'the README on ACL users)')
  end
end

-- Redis Cluster resharding. While the queue's slot moves to another node
-- (MIGRATING on this node, or IMPORTING here and reached through ASK), a
-- function could find only part of the queue's keys, and Redis would stop
-- it at the first key it lacks, after some of its writes. So every function
-- (cmake/embed_lua.cmake puts the call first) touches two keys of the slot,
-- one of which never exists: Redis refuses that exactly while the slot is
-- open (TRYAGAIN or ASK on the source, TRYAGAIN on the target), before
-- anything is written, and the caller tries again; once the move is done it
-- is served by the new owner (MOVED). On a standalone Redis, or a slot that
-- is not moving, it is one EXISTS. Returns an error reply, or nil.
local function sl_slot_moving(keys)
  if #keys == 0 then return nil end
  local r = redis.pcall('EXISTS', keys[1], keys[1] .. ':~')
  if type(r) == 'table' and r.err then
    return redis.error_reply('TRYAGAIN the queue\'s slot is moving to another cluster node; try again (' ..
                             r.err .. ')')
  end
end

local function sl_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function sl_num(v)
  return tonumber(v) or 0
end

-- Adds n to a counter field of a batch hash, when the batch still exists
-- (a counter of a batch that expired must not bring back a hash without
-- an expiry).
local function sl_count(bkey, field, n)
  if redis.call('EXISTS', bkey) == 1 then redis.call('HINCRBY', bkey, field, n) end
end

-- The entries of a batch that workers hold, P..'b:ID:run': member
-- "S:ENTRY", score = when it may start (handed out, plus its rate-limit
-- wait), for sl_live (running and waiting) and `status --items` (the
-- holder comes from the pending list). Every call that hands an entry out
-- adds it (sl_emit, so a takeover moves its start); every call that ends
-- a holder's claim on it (complete, release, an abort, reclaim's poison
-- and stale pool, admission refusing a redelivered entry) drops it.
-- Members are queued in ctx.run (batch -> flat score/member list) and
-- written by sl_run_write, one ZADD per batch and call (sl_admit_done),
-- so handing out 1,000 items costs a few commands, not 1,000.
local SL_RUN_CHUNK = 500 -- members per ZADD / ZREM (Lua's unpack has a limit)
local function sl_run_add(ctx, batch, s, eid, wait)
  ctx.now = ctx.now or sl_now_ms()
  ctx.run = ctx.run or {}
  local l = ctx.run[batch]
  if not l then
    l = {}
    ctx.run[batch] = l
  end
  l[#l + 1] = ctx.now + wait
  l[#l + 1] = s .. ':' .. eid
end

local function sl_run_write(ctx)
  for batch, l in pairs(ctx.run or {}) do
    for i = 1, #l, 2 * SL_RUN_CHUNK do
      redis.call('ZADD', ctx.prefix .. 'b:' .. batch .. ':run', unpack(l, i, math.min(i + 2 * SL_RUN_CHUNK - 1, #l)))
    end
  end
  ctx.run = nil
end

-- Drops members ("S:ENTRY") of a batch's set: one ZREM per chunk.
local function sl_run_drop_all(prefix, batch, members)
  for i = 1, #members, SL_RUN_CHUNK do
    redis.call('ZREM', prefix .. 'b:' .. batch .. ':run', unpack(members, i, math.min(i + SL_RUN_CHUNK - 1, #members)))
  end
end

local function sl_run_drop(prefix, batch, s, eid)
  redis.call('ZREM', prefix .. 'b:' .. batch .. ':run', s .. ':' .. eid)
end

-- ---- The live state of a batch (DESIGN: Progress; docs/PROTOCOL.md) ----
--
-- Where each unfinished item of a batch is, counted without reading the
-- items (a few O(1) and O(log n) reads, whatever the batch's size):
--   running    handed to a worker and started: members of P..'b:ID:run'
--              (sl_run_add) whose start time has come
--   waiting    held back by a limit: run members whose rate-limit wait has
--              not ended, plus the items parked for a concurrency lease
--              (field cwait, kept by sl_lease and sl_wake)
--   retrying   in the delayed set after a failed attempt, for its backoff
--              (field retrying, kept by sl_delay and the takers of its
--              members)
--   scheduled  in the delayed set for a start time or delay of its own
--              (the batch's delayed index P..'b:ID:dl' minus retrying)
--   paused     parked in the batch's P..'b:ID:p' while it is paused
--   queued     the rest: in a stream, waiting for a worker (also an item
--              whose worker stopped beating, once it waits in the stale
--              pool for another)
-- With succeeded, failed and cancelled (whose sum is done), they add up to
-- total. done and pct are defined here and nowhere else: pct is done/total
-- in tenths of a percent rounded down, 0 until the batch is whole, 100 for
-- a whole batch of no items. rate is the recent completion rate (items/s,
-- from the checkpoints sl_publish keeps: eta_t0/eta_d0, at least 10 s old)
-- and eta_ms the time left at that rate; both nil while unknown (nothing
-- ended since the checkpoint, the batch not running).
local SL_LIVE_FIELDS = {'queued', 'scheduled', 'waiting', 'running', 'retrying', 'paused'}
local function sl_live(bkey, now)
  local v = redis.call('HMGET', bkey, 'total', 'done', 'cwait', 'retrying', 'eta_t0', 'eta_d0', 'started_at',
                       'status', 'whole')
  local run = bkey .. ':run'
  local total, done = sl_num(v[1]), sl_num(v[2])
  local live = {running = redis.call('ZCOUNT', run, '-inf', now), retrying = sl_num(v[4]),
                paused = redis.call('XLEN', bkey .. ':p'), total = total, done = done}
  live.waiting = sl_num(v[3]) + redis.call('ZCOUNT', run, '(' .. now, '+inf')
  live.scheduled = redis.call('HLEN', bkey .. ':dl') - live.retrying
  live.queued = total - done - live.running - live.waiting - live.retrying - live.scheduled - live.paused
  live.pct = 0
  if v[9] == '1' and total > 0 then
    live.pct = math.floor(done * 1000 / total) / 10
  elseif v[9] == '1' then
    live.pct = 100
  end
  local t0 = math.max(sl_num(v[5]), sl_num(v[7]))
  if v[8] == 'running' and t0 > 0 and now - t0 >= 1000 and done > sl_num(v[6]) then
    live.rate = (done - sl_num(v[6])) * 1000 / (now - t0)
    if v[9] == '1' then live.eta_ms = math.ceil((total - done) * 1000 / live.rate) end
  end
  return live
end

-- A delayed item (a retry, or an item scheduled for later) is a member
-- "PRIORITY\nBATCH\nINDEX\nATTEMPT" of the queue's set P..'delayed',
-- score = when it is due (ms), and a field "INDEX\nATTEMPT" of its batch's
-- hash P..'b:BATCH:dl' with the value "PRIORITY\nERRORS\nD" (its earlier
-- errors, a JSON array or '', and the item JSON). The hash is the batch's
-- own index of its delayed items: a cancel reads it, not the queue's whole
-- set, and the set's members stay short. Members of an older version
-- carry "\nERRORS\nD" themselves; they are read as such.
local function sl_delay(prefix, s, batch, idx, att, errs, d, due)
  if redis.call('HSET', prefix .. 'b:' .. batch .. ':dl', idx .. '\n' .. att, s .. '\n' .. errs .. '\n' .. d) == 1 and
     tonumber(att) > 1 then
    sl_count(prefix .. 'b:' .. batch, 'retrying', 1) -- a retry (sl_live), not an item scheduled for later
  end
  redis.call('ZADD', prefix .. 'delayed', due, s .. '\n' .. batch .. '\n' .. idx .. '\n' .. att)
end

-- The parts of delayed member m, which the caller removed from the set:
-- priority (a number), batch, index, attempt, errors, item JSON (nil when
-- the batch's hash no longer has it: the batch was deleted). Removes its
-- field of the batch's hash.
local function sl_delayed_take(prefix, m)
  local p1 = string.find(m, '\n', 1, true)
  local p2 = string.find(m, '\n', p1 + 1, true)
  local p3 = string.find(m, '\n', p2 + 1, true)
  local p4 = string.find(m, '\n', p3 + 1, true)
  local s, batch, idx = tonumber(string.sub(m, 1, p1 - 1)), string.sub(m, p1 + 1, p2 - 1), string.sub(m, p2 + 1, p3 - 1)
  if p4 then -- an older member, whole
    local p5 = string.find(m, '\n', p4 + 1, true)
    return s, batch, idx, string.sub(m, p3 + 1, p4 - 1), string.sub(m, p4 + 1, p5 - 1), string.sub(m, p5 + 1)
  end
  local att = string.sub(m, p3 + 1)
  local hkey = prefix .. 'b:' .. batch .. ':dl'
  local v = redis.call('HGET', hkey, idx .. '\n' .. att)
  if not v then return s, batch, idx, att, '', nil end
  redis.call('HDEL', hkey, idx .. '\n' .. att)
  if att ~= '1' then sl_count(prefix .. 'b:' .. batch, 'retrying', -1) end
  local q1 = string.find(v, '\n', 1, true)
  local q2 = string.find(v, '\n', q1 + 1, true)
  return s, batch, idx, att, string.sub(v, q1 + 1, q2 - 1), string.sub(v, q2 + 1)
end

-- A batch's counter of backward moves (field `moves` of its hash): every
-- call that moves an unfinished item of the batch to a place `sluice
-- repair` may already have read adds one: from a stream to the delayed
-- set (a retry), to the batch's parked stream (a pause) or to a limit's
-- waiting stream, and from the results back to a stream (retry, dead
-- requeue). Moves to the end of a stream are not counted: the search reads
-- the streams last, to their end. A search that began and ended at the
-- same value saw every item somewhere (sluice_v1_repair).
local function sl_moved(bkey)
  redis.call('HINCRBY', bkey, 'moves', 1)
end

-- The batch index by status: P..'bs:STATUS' (submitting, queued, running,
-- paused, completed, cancelled) lists the batches in that status, with the
-- score they have in P..'batches' (created_at, ms), so `sluice batches
-- --status S` pages one set instead of reading every batch's hash. Every
-- change of a batch's status goes through here, in the call that makes it;
-- the sets are trimmed with P..'batches' (submit). from: the status it
-- leaves (nil for a new batch).
local SL_STATUSES = {'submitting', 'queued', 'running', 'paused', 'completed', 'cancelled'}

-- The key prefix P and the batch id of a batch hash key P..'b:'..BATCH.
local function sl_bkey_split(bkey)
  return string.match(bkey, '^(.*)b:([^:]*)$')
end

local function sl_set_status(prefix, batch, from, to)
  if from == to then return end
  if from then redis.call('ZREM', prefix .. 'bs:' .. from, batch) end
  local score = redis.call('ZSCORE', prefix .. 'batches', batch)
  if score then redis.call('ZADD', prefix .. 'bs:' .. to, score, batch) end
end

-- Publishes the batch's state as one JSON object on the queue's channel
-- and on the batch's own channel (DESIGN: Events): its counters, its live
-- state (sl_live: the counts by state, pct, rate and eta_ms, null while
-- unknown) and its metric sums. Also moves the checkpoints of the recent
-- completion rate (eta_t0/eta_d0 <- eta_t/eta_d <- now/done) once the last
-- one is 10 s old. Returns nothing.
local SL_RATE_STEP_MS = 10000
local function sl_publish(prefix, queue, batch, now)
  local bkey = prefix .. 'b:' .. batch
  local v = redis.call('HMGET', bkey, 'status', 'succeeded', 'failed', 'cancelled', 'tenant', 'eta_t', 'eta_d',
                       'done', 'reran')
  if not v[1] then return end
  if now - sl_num(v[6]) >= SL_RATE_STEP_MS then
    redis.call('HSET', bkey, 'eta_t0', v[6] or now, 'eta_d0', v[7] or v[8] or 0, 'eta_t', now, 'eta_d', v[8] or 0)
  end
  local live = sl_live(bkey, now)
  local parts = {string.format('{"queue":"%s","batch":"%s","status":"%s","total":%d,"done":%d,"succeeded":%d,' ..
                               '"failed":%d,"cancelled":%d,"pct":%.1f', queue, batch, v[1], live.total, live.done,
                               sl_num(v[2]), sl_num(v[3]), sl_num(v[4]), live.pct)}
  for _, k in ipairs(SL_LIVE_FIELDS) do parts[#parts + 1] = string.format(',"%s":%d', k, live[k]) end
  parts[#parts + 1] = live.rate and string.format(',"rate":%.2f', live.rate) or ',"rate":null'
  parts[#parts + 1] = live.eta_ms and string.format(',"eta_ms":%d', live.eta_ms) or ',"eta_ms":null'
  if sl_num(v[9]) > 0 then parts[#parts + 1] = ',"reran":' .. sl_num(v[9]) end
  local m = {}
  local h = redis.call('HGETALL', bkey) -- a few dozen fields
  local final = {}
  for k = 1, #h, 2 do
    local name = string.match(h[k], '^final:(.+)$')
    if name then final[name] = h[k + 1] end
  end
  for k = 1, #h, 2 do
    local name = string.match(h[k], '^metric:(.+)$')
    if name and #m < 32 then
      m[#m + 1] = string.format('"%s":{"all":%.15g,"final":%.15g}', name, sl_num(h[k + 1]), sl_num(final[name]))
    end
  end
  if #m > 0 then parts[#parts + 1] = ',"metrics":{' .. table.concat(m, ',') .. '}' end
  parts[#parts + 1] = string.format(',"ts":%d%s}', now, v[5] and (',"tenant":"' .. v[5] .. '"') or '')
  local msg = table.concat(parts)
  redis.call('SPUBLISH', prefix .. 'events', msg)
  redis.call('SPUBLISH', prefix .. 'events:' .. batch, msg)
end

-- The batch log, P..'b:ID:log' (DESIGN: the story of a batch): a stream
-- with one entry per change of the batch's state (submitted, whole,
-- started, paused, resumed, cancelled, aborted, retried, ended, webhook)
-- and per item event worth knowing (retry, timeout, takeover, dead,
-- poison, refused, requeued). Each entry has e (the event), then the
-- caller's pairs: i (the item's index) and id (its id, a JSON string), by
-- (who acted: a worker id, or "HOST pid N (PROGRAM)" of a command), and
-- the event's own. The stream keeps about the newest SL_LOG_MAX entries
-- (trimmed approximately: O(1) per call) and expires with the batch
-- (sl_maybe_finish). Nothing is logged to a batch that is gone.
local SL_LOG_MAX = 10000
local function sl_log(bkey, ev, ...)
  redis.call('XADD', bkey .. ':log', 'MAXLEN', '~', SL_LOG_MAX, '*', 'e', ev, ...)
end

-- Who acted, from an optional argument of a command: at most 200 bytes of
-- printable ASCII, else ''.
local function sl_by(v)
  if type(v) ~= 'string' or #v > 200 or string.find(v, '[^\32-\126]') then return '' end
  return v
end

-- Marks the batch ended when every item of a whole batch is done.
-- An ended batch and its results expire after its retention (default 7
-- days), so finished work does not grow Redis without bound.
local SL_RETENTION_MS = 7 * 24 * 3600 * 1000
local function sl_maybe_finish(bkey, now)
  local v = redis.call('HMGET', bkey, 'status', 'total', 'done', 'whole', 'retention_ms', 'webhook')
  if v[4] == '1' and sl_num(v[3]) >= sl_num(v[2]) then
    local ended = false
    if v[1] ~= 'cancelled' and v[1] ~= 'completed' then
      redis.call('HSET', bkey, 'status', 'completed', 'finished_at', now)
      local prefix, batch = sl_bkey_split(bkey)
      sl_set_status(prefix, batch, v[1], 'completed')
      ended = true
    elseif v[1] == 'cancelled' then
      ended = redis.call('HSETNX', bkey, 'finished_at', now) == 1
    end
    if ended and v[6] then
      -- its completion webhook is due now (sluice_v1_webhook_take): a new
      -- message (sl_webhook_id) with tries of its own, nothing delivered yet
      local prefix, batch = sl_bkey_split(bkey)
      redis.call('HINCRBY', bkey, 'webhook_end', 1)
      redis.call('HDEL', bkey, 'webhook_attempts', 'webhook_at', 'webhook_error')
      redis.call('ZADD', prefix .. 'webhooks', now, batch)
    end
    if ended then
      local c = redis.call('HMGET', bkey, 'status', 'succeeded', 'failed', 'cancelled')
      sl_log(bkey, 'ended', 'status', c[1], 'succeeded', c[2] or '0', 'failed', c[3] or '0',
             'cancelled', c[4] or '0')
    end
    local keep = tonumber(v[5]) or SL_RETENTION_MS
    for _, k in ipairs({bkey, bkey .. ':r', bkey .. ':f', bkey .. ':skip', bkey .. ':progress', bkey .. ':dl',
                        bkey .. ':log', bkey .. ':run'}) do
      redis.call('PEXPIRE', k, keep)
    end
  end
end

-- The Standard Webhooks message id (header webhook-id) of a batch's
-- completion webhook: 'msg_' BATCH '_' N '_' Q8, where N is the batch's end
-- count (field webhook_end: 1 for its first end, 2 after it ran again and
-- ended anew) and Q8 the first 8 hex digits of the SHA-1 of the queue name
-- (taken from the prefix 'sluice:{Q}:'), so batches of two queues that share
-- an id get different messages. Every try of one end carries the same id;
-- receivers dedupe with it. It never contains a '.', which the signed
-- content "ID.TIMESTAMP.BODY" must not have in its id: batch ids are
-- [0-9A-Za-z_-] and the queue name, which may have '.', is only hashed.
-- When you change this: docs/PROTOCOL.md (Completion webhooks) and README.
local function sl_webhook_id(prefix, batch, n)
  local queue = string.match(prefix, '{(.*)}') or prefix
  return 'msg_' .. batch .. '_' .. n .. '_' .. string.sub(redis.sha1hex(queue), 1, 8)
end

-- A batch running again (retry, dead requeue) keeps its keys until it ends anew.
local function sl_keep_batch(bkey)
  for _, k in ipairs({bkey, bkey .. ':r', bkey .. ':f', bkey .. ':log'}) do
    redis.call('PERSIST', k)
  end
end

-- Creates the consumer group on a stream (and the stream) unless it exists.
local function sl_ensure_group(key, group)
  local ok = redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
    return redis.error_reply(ok.err)
  end
end

-- Finishes one item of a cancelled batch as `cancelled` (exactly once:
-- HSETNX of its results line), with the item's own id. Returns true if
-- this call counted it.
local function sl_item_id(d)
  -- The item's id as its JSON string token, without decoding the item
  -- (which may be large). The canonical item (_lib_item.lua) has no quote
  -- in its head, so the first ',"id":"' begins the id; items stored before
  -- that form begin {"id":"...","type":" (quotes inside an id are escaped).
  local q = string.find(d, ',"id":"', 1, true)
  if q and string.sub(d, 1, 9) == '{"type":"' then
    local e = sl_json_string(d, q + 6)
    if e then return string.sub(d, q + 6, e - 1) end
  end
  local id = string.match(d, '^{"id":"(.-)","type":"')
  return id and ('"' .. id .. '"') or nil
end

-- The queue's counters for /metrics (sluice serve), in the hash P..'metrics':
-- ended:succeeded, ended:failed, ended:cancelled (items that ended),
-- retries (failed attempts sent to be retried), takeovers (entries taken
-- from workers that stopped beating), rate_waits (items that had to wait
-- for their rate limit), and the durations of the attempts that ended items
-- as a histogram: dur:I counts those of at most SL_DUR_BUCKETS_MS[I] ms
-- (not cumulative; I past the last: longer), dur_sum_ms and dur_count.
-- One HINCRBY per field a completing or reclaiming call changes; an item
-- ended as cancelled (sl_cancel_item) adds one, as it does to its batch's
-- counters, and a cancel step handles at most a bounded number of them.
local SL_DUR_BUCKETS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000}
local function sl_metric(prefix, field, n)
  if n and n > 0 then redis.call('HINCRBY', prefix .. 'metrics', field, n) end
end
local function sl_dur_bucket(ms)
  for i, b in ipairs(SL_DUR_BUCKETS_MS) do
    if ms <= b then return i end
  end
  return #SL_DUR_BUCKETS_MS + 1
end

local function sl_cancel_item(bkey, idx, att, d, now, why)
  local id = sl_item_id(d) or cjson.encode(tostring(idx))
  local res = '{"id":' .. id .. ',"status":"cancelled","attempts":' .. ((tonumber(att) or 1) - 1) ..
              ',"started_at":null,"finished_at":' .. now .. ',"duration_ms":null,"worker":null,"error":' ..
              cjson.encode(why or 'cancelled: the batch was cancelled before this item started') .. '}'
  if redis.call('HSETNX', bkey .. ':r', idx, res) == 1 then
    redis.call('HINCRBY', bkey, 'cancelled', 1)
    redis.call('HINCRBY', bkey, 'done', 1)
    sl_metric((sl_bkey_split(bkey)), 'ended:cancelled', 1)
    return true
  end
  return false
end

-- One bounded step of a cancel (sluice_v1_cancel; reclaim finishes what a
-- cancel whose client died left): finishes as `cancelled` at most about
-- max of the batch's items that are in no stream: parked ones first, then
-- its delayed items, found in its own index P..'b:BATCH:dl' (sl_delay) by
-- an HSCAN whose cursor the batch keeps in cancel_cursor between steps
-- (members of an older version, not in that index, are finished when they
-- fall due: admission ends the items of a cancelled batch). The batch
-- leaves P..'drain' when both are done. Returns true when there is more.
local function sl_cancel_step(prefix, batch, dkey, max, now)
  if not redis.call('ZSCORE', prefix .. 'drain', batch) then return false end
  local bkey = prefix .. 'b:' .. batch
  local pkey = bkey .. ':p'
  local budget = max
  for _, e in ipairs(redis.call('XRANGE', pkey, '-', '+', 'COUNT', budget)) do
    local f = e[2] -- p, s, b, B, i, IDX, a, A, d, D, ...
    sl_cancel_item(bkey, f[6], f[8], f[10], now)
    redis.call('XDEL', pkey, e[1])
    budget = budget - 1
  end
  if redis.call('XLEN', pkey) > 0 then return true end
  redis.call('DEL', pkey)
  -- Its delayed items, from its own index (sl_delay): "INDEX\nATTEMPT" ->
  -- "PRIORITY\nERRORS\nD".
  local dl = bkey .. ':dl'
  local cursor = redis.call('HGET', bkey, 'cancel_cursor') or '0'
  repeat
    local r = redis.call('HSCAN', dl, cursor, 'COUNT', math.min(budget, 1000))
    cursor = r[1]
    budget = budget - math.max(#r[2] / 2, 100)
    for k = 1, #r[2], 2 do
      local field, v = r[2][k], r[2][k + 1]
      local q = string.find(field, '\n', 1, true)
      local p1 = string.find(v, '\n', 1, true)
      local p2 = p1 and string.find(v, '\n', p1 + 1, true)
      if q and p2 and redis.call('ZREM', dkey, string.sub(v, 1, p1 - 1) .. '\n' .. batch .. '\n' .. field) == 1 then
        if string.sub(field, q + 1) ~= '1' then redis.call('HINCRBY', bkey, 'retrying', -1) end
        sl_cancel_item(bkey, string.sub(field, 1, q - 1), string.sub(field, q + 1), string.sub(v, p2 + 1), now)
      end
      redis.call('HDEL', dl, field)
    end
  until cursor == '0' or budget <= 0
  if cursor ~= '0' then
    redis.call('HSET', bkey, 'cancel_cursor', cursor)
    return true
  end
  redis.call('HDEL', bkey, 'cancel_cursor')
  redis.call('ZREM', prefix .. 'drain', batch)
  return false
end

-- ---- The claim index ----
--
-- P..'claims' is a sorted set of the stream entries workers hold, member
-- "S:ENTRY" (priority, entry id), score = when the claim runs out (ms since
-- the epoch): the holder's last fetch, accept, takeover or heartbeat plus
-- its visibility timeout. Reclaim reads only the members that ran out
-- (ZRANGEBYSCORE ... LIMIT), so finding a dead worker's items costs
-- O(log n + k) however long the pending list is. The index is a hint, the
-- pending list the truth: reclaim checks each candidate's holder and idle
-- time with XPENDING before it takes anything, drops members whose entry
-- is no longer pending, and moves a member whose holder renewed it to the
-- true time. So a member left behind (an entry acknowledged elsewhere)
-- costs one look when it runs out, and an entry that entered the pending
-- list outside a function (the worker's blocking XREADGROUP, when the
-- worker died before its accept call) is indexed by reclaim's sweep of
-- the pending list, a bounded page per call.
local SL_VIS_DEFAULT = 30000
local SL_CLAIMS_CHUNK = 500 -- members per ZADD / ZREM (Lua's unpack has a limit)

-- Queues a claim on entry eid of stream s in ctx.claims (written by
-- sl_claims_write): it runs out at ctx.now plus the caller's visibility.
local function sl_claim(ctx, s, eid)
  ctx.now = ctx.now or sl_now_ms()
  local c = ctx.claims
  if not c then
    c = {}
    ctx.claims = c
  end
  c[#c + 1] = ctx.now + (ctx.vis or SL_VIS_DEFAULT)
  c[#c + 1] = s .. ':' .. eid
end

-- ZADD of a flat score/member list (flags: nil or 'NX'), in chunks.
local function sl_claims_write(prefix, list, flags)
  if not list then return end
  local key = prefix .. 'claims'
  for i = 1, #list, 2 * SL_CLAIMS_CHUNK do
    local args = {}
    for k = i, math.min(i + 2 * SL_CLAIMS_CHUNK - 1, #list) do args[#args + 1] = list[k] end
    if flags then
      redis.call('ZADD', key, flags, unpack(args))
    else
      redis.call('ZADD', key, unpack(args))
    end
  end
end

-- ZREM of a list of members ("S:ENTRY"), in chunks.
local function sl_claims_drop(prefix, members)
  local key = prefix .. 'claims'
  for i = 1, #members, SL_CLAIMS_CHUNK do
    local args = {}
    for k = i, math.min(i + SL_CLAIMS_CHUNK - 1, #members) do args[#args + 1] = members[k] end
    redis.call('ZREM', key, unpack(args))
  end
end

-- Decides whether a delivered stream entry may run (used by fetch, accept
-- and reclaim). ctx = {prefix, status = {}, touched = {}, started = {}, now,
-- again, extra}; s is the entry's priority, f its fields (b, i, a, d, ...).
--   batch cancelled:  the item is finished as `cancelled`;
--   batch paused:     the entry is parked in the batch's P..'b:ID:p' stream
--                     (resume puts it back);
--   batch gone, or the item ended already (a later attempt or delivery):
--                     dropped;
--   otherwise it runs; the first item of a queued batch turns it `running`.
-- Entries that do not run are acknowledged and deleted here. Returns true
-- when the item should run.
local function sl_admit_batch(ctx, s, key, group, eid, f)
  local batch, idx, att, d = f[2], f[4], f[6], f[8]
  local bkey = ctx.prefix .. 'b:' .. batch
  local st = ctx.status[batch]
  if st == nil then
    st = redis.call('HGET', bkey, 'status') or '-'
    ctx.status[batch] = st
  end
  -- A later attempt (a retry, or a takeover) of an item that has ended
  -- meanwhile (a slow first attempt finished after all) does not run again.
  -- A first delivery of a first attempt cannot have ended: no check there
  -- (an entry given back by a stopping worker carries x = 1: ctx.extra).
  if (ctx.again or ctx.extra or att ~= '1') and st ~= '-' and redis.call('HEXISTS', bkey .. ':r', idx) == 1 then
    st = '-'
  end
  if st == 'queued' or (st == 'submitting' and not ctx.started[batch]) then
    ctx.now = ctx.now or sl_now_ms()
    if st == 'queued' then
      redis.call('HSET', bkey, 'status', 'running')
      sl_set_status(ctx.prefix, batch, 'queued', 'running')
      ctx.status[batch] = 'running'
      ctx.touched[batch] = true
    end
    if redis.call('HSETNX', bkey, 'started_at', ctx.now) == 1 then
      sl_log(bkey, 'started', 'by', ctx.me or '')
    end
    ctx.started[batch] = true
    return true
  end
  if st == 'cancelled' then
    ctx.now = ctx.now or sl_now_ms()
    if sl_cancel_item(bkey, idx, att, d, ctx.now) then ctx.touched[batch] = true end
  elseif st == 'paused' then
    redis.call('XADD', bkey .. ':p', '*', 'p', s, unpack(f))
    sl_moved(bkey)
  elseif st ~= '-' then
    return true
  end
  if ctx.again or ctx.extra then sl_run_drop(ctx.prefix, batch, s, eid) end -- a takeover: it ran before
  redis.call('XACK', key, group, eid)
  redis.call('XDEL', key, eid)
  return false
end

-- Writes the claims of the entries handed out (sl_emit) and publishes the
-- state of every batch that sl_admit changed.
local function sl_admit_done(ctx, queue)
  sl_claims_write(ctx.prefix, ctx.claims)
  ctx.claims = nil
  sl_run_write(ctx)
  for batch in pairs(ctx.touched) do
    if ctx.status[batch] == 'cancelled' then
      sl_maybe_finish(ctx.prefix .. 'b:' .. batch, ctx.now)
    end
    sl_publish(ctx.prefix, queue, batch, ctx.now or sl_now_ms())
  end
end

-- The rate key and timeout (ms) of a stored item. Items are stored in
-- the canonical form (_lib_item.lua), which begins
-- {"type":"T"[,"rate_key":"K"],"timeout_ms":N, so one anchored match reads
-- both. Entries written by sluice before 0.2 began {"id":"...","type":"..."
-- with the rate key after the type and the timeout later: read as they
-- were written then, by position (the first '","type":"' is the item's own,
-- quotes inside the id string are escaped).
local function sl_item_head(d)
  local k, t = string.match(d, '^{"type":"[%w_.:-]+","rate_key":"([%w_.:-]+)","timeout_ms":(%d+),')
  if k then return k, tonumber(t) end
  t = string.match(d, '^{"type":"[%w_.:-]+","timeout_ms":(%d+),')
  if t then return nil, tonumber(t) end
  if string.sub(d, 1, 7) ~= '{"id":"' then return nil, nil end
  local p = string.find(d, '","type":"', 1, true)
  local q = p and string.find(d, '"', p + 10, true)
  if q and string.sub(d, q, q + 13) == '","rate_key":"' then k = string.match(d, '^([%w_.:-]+)"', q + 14) end
  t = string.match(d, ',"timeout_ms":(%d+),"backoff_ms":%d+,"backoff_max_ms":%d+}$')
  return k, tonumber(t)
end

-- Token bucket as GCRA, on the server's clock, with reservations: an item
-- of rate key K may start at max(TAT, now) + T - burst * T, where T is the
-- emission interval; its start is reserved at once (TAT moves on by T), so
-- the fleet as a whole starts at most burst + t / T items in any window of
-- length t. Returns the wait before the item may start, ms (0: now). A key
-- with no limit set (P..'limits') is not limited. Limits are cached in ctx.
-- The rate key an item runs under: its own, else the queue's default
-- (field rate_key of P..'config', set by `sluice limit set ... --default`).
local function sl_item_key(ctx, d)
  local key = sl_item_head(d)
  if key then return key end
  if ctx.default_key == nil then
    ctx.default_key = redis.call('HGET', ctx.prefix .. 'config', 'rate_key') or false
  end
  return ctx.default_key or nil
end

-- The limit named `key` ({t = interval µs or 0, burst, conc = 0 or N}),
-- or false; cached in ctx. Format of P..'limits': "T_US BURST RATE [CONC]".
local function sl_limit(ctx, key)
  ctx.limits = ctx.limits or {}
  local lim = ctx.limits[key]
  if lim == nil then
    local v = redis.call('HGET', ctx.prefix .. 'limits', key)
    lim = false
    if v then
      local t, burst, conc = string.match(v, '^(%d+) (%d+) %S+ ?(%d*)')
      if t then lim = {t = tonumber(t), burst = tonumber(burst), conc = tonumber(conc) or 0} end
    end
    ctx.limits[key] = lim
  end
  return lim
end

local function sl_rate_wait(ctx, d)
  local key = sl_item_key(ctx, d)
  if not key then return 0 end
  local lim = sl_limit(ctx, key)
  if not lim or lim.t <= 0 then return 0 end
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
  local rkey = ctx.prefix .. 'rl:' .. key
  local tat = tonumber(redis.call('GET', rkey) or '0')
  if tat < now then tat = now end
  local new_tat = tat + lim.t
  local allow_at = new_tat - lim.burst * lim.t
  redis.call('SET', rkey, string.format('%.0f', new_tat), 'PX',
             math.floor((new_tat - now) / 1000) + 1000)
  if allow_at <= now then return 0 end
  sl_metric(ctx.prefix, 'rate_waits', 1)
  return math.ceil((allow_at - now) / 1000)
end

-- Puts a held entry back at the end of its priority stream. f holds
-- "p", S, then the entry's own fields (as parked by a pause or a lease
-- wait); the copy is marked x = 1, so admission checks that its item has
-- not ended meanwhile.
local function sl_putback(streams, f)
  local fields = {}
  local marked = false
  for k = 3, #f do
    fields[#fields + 1] = f[k]
    if k % 2 == 1 and f[k] == 'x' then marked = true end
  end
  if not marked then
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = '1'
  end
  redis.call('XADD', streams[tonumber(f[2])], '*', unpack(fields))
end

-- One bounded step of a resume (sluice_v1_resume; reclaim finishes what a
-- resume whose client died left): puts back at most max of the items
-- parked in P..'b:BATCH:p' while the batch was paused, oldest first, at the
-- ends of their streams (sl_putback). A batch that is paused again or was
-- cancelled keeps them (the next resume, or cancel, deals with them). The
-- batch leaves P..'unpark' once nothing is left to do. Returns true when
-- parked items are left to put back.
local function sl_unpark(prefix, streams, batch, max)
  local bkey = prefix .. 'b:' .. batch
  local st = redis.call('HGET', bkey, 'status')
  if not st or st == 'paused' or st == 'cancelled' then
    redis.call('ZREM', prefix .. 'unpark', batch)
    return false
  end
  local pkey = bkey .. ':p'
  for _, e in ipairs(redis.call('XRANGE', pkey, '-', '+', 'COUNT', max)) do
    sl_putback(streams, e[2])
    redis.call('XDEL', pkey, e[1])
  end
  if redis.call('XLEN', pkey) > 0 then return true end
  redis.call('DEL', pkey)
  redis.call('ZREM', prefix .. 'unpark', batch)
  return false
end

-- The most waiting items one function call wakes for one limit (sl_wake's
-- callers cap n with it): Redis serves nobody else while a function runs,
-- so no call does work that grows with the number of items waiting.
-- sl_limit_set and sl_limit_rm (src/limit.c) wake the rest in more calls.
local SL_WAKE_MAX = 250

-- Moves up to n items waiting for a concurrency lease of limit NAME
-- (P..'cw:NAME') back to the ends of their streams, oldest first. Returns
-- how many.
local function sl_wake(prefix, streams, name, n)
  if n <= 0 then return 0 end
  local moved = 0
  for _, e in ipairs(redis.call('XRANGE', prefix .. 'cw:' .. name, '-', '+', 'COUNT', n)) do
    sl_putback(streams, e[2])
    sl_count(prefix .. 'b:' .. e[2][4], 'cwait', -1) -- fields p, S, b, BATCH, ...
    redis.call('XDEL', prefix .. 'cw:' .. name, e[1])
    moved = moved + 1
  end
  return moved
end

-- One bounded step of waking the items waiting for limit NAME that may run
-- now (limit_set, limit_wake, limit_rm); lkey is P..'limits'. With the
-- limit gone, or without a concurrency, every waiting item may run; with a
-- concurrency N, as many as leases are free: N minus the leases held once
-- the lapsed ones are removed (none when N is at or below them, as after a
-- lowered limit). Wakes at most max of them, oldest first (sl_wake), and
-- deletes P..'cw:NAME' once it is empty. Returns {moved, more}: the items woken, and how many
-- more this state would let run (the items still waiting, at most the free
-- leases left; 0: done). Each step reads the state anew, so a step sent
-- again moves nothing that must not run.
local function sl_wake_step(prefix, lkey, streams, name, max)
  local cwkey = prefix .. 'cw:' .. name
  local v = redis.call('HGET', lkey, name)
  local conc = v and tonumber(string.match(v, '^%d+ %d+ %S+ (%d+)$') or '0') or 0
  local free = nil -- nil: no concurrency, all may run
  if conc > 0 then
    local ckey = prefix .. 'cl:' .. name
    redis.call('ZREMRANGEBYSCORE', ckey, '-inf', sl_now_ms())
    free = conc - redis.call('ZCARD', ckey)
    if free < 0 then free = 0 end
  end
  local n = max
  if free and free < n then n = free end
  local moved = sl_wake(prefix, streams, name, n)
  local left = redis.call('XLEN', cwkey)
  if left == 0 then
    redis.call('DEL', cwkey)
    redis.call('ZREM', prefix .. 'rmlimit', name) -- a removal's items are all woken
  end
  local more = left
  if free and free - moved < more then more = free - moved end
  return {moved, more}
end

-- Fleet-wide concurrency per rate key: an item whose limit has a
-- concurrency N takes a lease (P..'cl:NAME', member "S:ENTRY", score =
-- expiry: its timeout plus the visibility timeout, so a dead worker's lease
-- lapses; sl_emit adds the item's rate wait, which comes after the lease).
-- With N leases out, the entry is parked in P..'cw:NAME' and
-- acknowledged; a completion that returns a lease wakes one (complete), and
-- reclaim wakes what lapsed leases freed. Sets ctx.lease to the limit name
-- when a lease was taken. Returns true when the item may run now.
local function sl_lease(ctx, s, key, group, eid, f)
  ctx.lease = ''
  local name = sl_item_key(ctx, f[8])
  if not name then return true end
  local lim = sl_limit(ctx, name)
  if not lim or lim.conc <= 0 then return true end
  ctx.now = ctx.now or sl_now_ms()
  local ckey = ctx.prefix .. 'cl:' .. name
  local member = s .. ':' .. eid
  redis.call('ZREMRANGEBYSCORE', ckey, '-inf', ctx.now)
  if redis.call('ZSCORE', ckey, member) or redis.call('ZCARD', ckey) < lim.conc then
    local _, timeout = sl_item_head(f[8])
    timeout = timeout or 30000
    ctx.lease_exp = ctx.now + timeout + (ctx.vis or 30000)
    redis.call('ZADD', ckey, ctx.lease_exp, member)
    ctx.lease = name
    return true
  end
  redis.call('XADD', ctx.prefix .. 'cw:' .. name, '*', 'p', s, unpack(f))
  sl_moved(ctx.prefix .. 'b:' .. f[2])
  redis.call('HINCRBY', ctx.prefix .. 'b:' .. f[2], 'cwait', 1) -- sl_live: waiting
  if ctx.again or ctx.extra then sl_run_drop(ctx.prefix, f[2], s, eid) end
  redis.call('XACK', key, group, eid)
  redis.call('XDEL', key, eid)
  return false
end

-- Returns the concurrency lease an entry may hold (given back, aborted)
-- and wakes an item waiting for it.
local function sl_lease_return(ctx, streams, s, eid, d)
  local name = sl_item_key(ctx, d)
  if not name then return end
  if redis.call('ZREM', ctx.prefix .. 'cl:' .. name, s .. ':' .. eid) == 1 then
    sl_wake(ctx.prefix, streams, name, 1)
  end
end

-- sl_admit_batch, then the item's concurrency lease (sl_lease).
local function sl_admit(ctx, s, key, group, eid, f)
  if not sl_admit_batch(ctx, s, key, group, eid, f) then return false end
  return sl_lease(ctx, s, key, group, eid, f)
end

-- Appends an entry the worker may run to out: priority, entry id, batch,
-- item index, attempt, item JSON, earlier errors (a JSON array or ''),
-- '1' when the item must run alone on its worker (its last allowed
-- delivery: see reclaim) else '0', the wait in ms before it may start
-- (its rate limit; 0: at once), and the limit whose concurrency lease it
-- holds ('' for none; the worker hands it back with the completion).
local function sl_emit(ctx, out, s, eid, f, attempt, alone)
  sl_claim(ctx, s, eid)
  out[#out + 1] = s
  out[#out + 1] = eid
  out[#out + 1] = f[2]
  out[#out + 1] = f[4]
  out[#out + 1] = tostring(attempt or f[6])
  out[#out + 1] = f[8]
  local errs = ''
  for k = 9, #f - 1, 2 do
    if f[k] == 'e' then errs = f[k + 1] end -- optional fields: e (errors), x (given back)
  end
  out[#out + 1] = errs
  out[#out + 1] = alone and '1' or '0'
  local wait = sl_rate_wait(ctx, f[8])
  sl_run_add(ctx, f[2], s, eid, wait)
  out[#out + 1] = wait
  out[#out + 1] = ctx.lease or ''
  if wait > 0 and ctx.lease and ctx.lease ~= '' then
    -- the worker holds the lease while it sleeps out the wait: the lease
    -- lapses that much later, or another item could take it meanwhile
    redis.call('ZADD', ctx.prefix .. 'cl:' .. ctx.lease, 'XX', ctx.lease_exp + wait, s .. ':' .. eid)
  end
end

-- ---- Takeover and fencing ----
--
-- An entry whose worker stopped beating for longer than that worker's
-- visibility timeout (P..'vis': consumer -> ms, written by its fetch and
-- reclaim calls, so the timeout travels with the claim) is moved by any
-- worker's reclaim timer to the group's consumer SL_STALE, the stale pool,
-- with XCLAIM JUSTID: no delivery is counted and the worker that lost it no
-- longer owns it. Every worker takes stale entries before new ones (fetch,
-- reclaim), so a dead worker's items run again within seconds under any
-- queue depth. An entry on its last allowed delivery waits under SL_ALONE
-- for a worker that runs nothing else (reclaim). Who took an entry over,
-- and when, is kept for an hour in P..'tk:S:ENTRY' ("WORKER MS"), so the
-- worker that lost it can say so when its completion is refused.
local SL_STALE = '~stale'
local SL_ALONE = '~alone'
local SL_TAKEN_TTL_MS = 3600000

local function sl_taken(prefix, s, eid, who, now)
  redis.call('SET', prefix .. 'tk:' .. s .. ':' .. eid, who .. ' ' .. now, 'PX', SL_TAKEN_TTL_MS)
end

-- Fencing at the point of truth: the pending entry eid of stream key
-- ({id, consumer, idle ms, deliveries}), or nil when nobody holds it.
-- The caller records an outcome only when the consumer is itself.
local function sl_holder(key, group, eid)
  return redis.call('XPENDING', key, group, eid, eid, 1)[1]
end

-- Why a caller that does not hold entry eid (p: sl_holder's answer) may
-- not record it: "WORKER MS", who took it over and when (MS 0: unknown),
-- or "- 0" when nobody holds it although it is still in the stream (Redis
-- lost the caller's read: a rollback or a failover). nil when the entry is
-- gone and was never taken over, or taken over by the caller itself: the
-- item ended by this caller's own earlier call (a completion sent again
-- after a lost reply).
local function sl_fence(prefix, s, key, eid, p, me)
  local tk = redis.call('GET', prefix .. 'tk:' .. s .. ':' .. eid)
  if p then return tk or (p[2] .. ' 0') end
  if #redis.call('XRANGE', key, eid, eid) > 0 then return '- 0' end
  if tk and string.sub(tk, 1, #me + 1) == me .. ' ' then return nil end -- it took the entry over itself
  return tk or nil
end

-- Claims up to n entries of stream s (key) from the stale pool for
-- consumer me (a delivery is counted) and appends those that may run to
-- out. Returns how many it appended.
local function sl_take_stale(ctx, out, s, key, group, me, n)
  if n <= 0 then return 0 end
  local got = 0
  for _, p in ipairs(redis.call('XPENDING', key, group, '-', '+', n, SL_STALE)) do
    local eid, d = p[1], tonumber(p[4])
    local r = redis.call('XRANGE', key, eid, eid)
    local f = r[1] and r[1][2]
    if not f then
      redis.call('XACK', key, group, eid) -- deleted meanwhile
    elseif #redis.call('XCLAIM', key, group, me, 0, eid) > 0 then
      ctx.now = ctx.now or sl_now_ms()
      ctx.extra = true -- a later delivery: admission checks it has not ended
      if sl_admit(ctx, s, key, group, eid, f) then
        sl_log(ctx.prefix .. 'b:' .. f[2], 'taken', 'i', f[4], 'id', sl_item_id(f[8]) or '', 'att',
               tonumber(f[6]) + d, 'by', me)
        sl_taken(ctx.prefix, s, eid, me, ctx.now)
        sl_emit(ctx, out, s, eid, f, tonumber(f[6]) + d)
        got = got + 1
      end
    end
  end
  return got
end

-- Moves due retries from the delayed set back to their streams (each
-- exactly once: ZREM decides who moves it). A member is
-- "priority\nbatch\nindex\nattempt\nerrors\nitem JSON". Returns the due
-- time of the next retry, 0 when none.
local function sl_promote(prefix, streams, now, max)
  local dkey = prefix .. 'delayed'
  local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, max)
  for _, m in ipairs(due) do
    local s, batch, idx, att, errs, d
    if redis.call('ZREM', dkey, m) == 1 then s, batch, idx, att, errs, d = sl_delayed_take(prefix, m) end
    if d then
      local fields = {'b', batch, 'i', idx, 'a', att, 'd', d}
      if errs ~= '' then
        fields[#fields + 1] = 'e'
        fields[#fields + 1] = errs
      end
      redis.call('XADD', streams[s], '*', unpack(fields))
    end
  end
  local nxt = redis.call('ZRANGE', dkey, 0, 0, 'WITHSCORES')
  return nxt[2] and tonumber(nxt[2]) or 0
end


-- Records that an item has failed for good: its item JSON goes to the
-- batch's failed-items hash (so `sluice retry BATCH` can run it again) and a
-- dead letter goes to the queue's dead-letter stream, capped at about
-- DEAD_MAX entries (the oldest are trimmed) and in bytes: a letter keeps
-- the item whole up to DEAD_ITEM_MAX bytes, else only its id and type
-- ({"id":...,"type":...}) with `dcut` = the item's size (the whole item
-- stays in the failed-items hash, which dead requeue reads then), and the
-- first DEAD_ERROR_MAX bytes of the error (the results line keeps it
-- whole). f holds the stream entry's fields (b, i, a, d[, e]); reason is
-- the readable error.
local DEAD_MAX = 100000
local DEAD_ITEM_MAX = 1024
local DEAD_ERROR_MAX = 2048
local function sl_dead(prefix, batch, idx, s, f, attempts, reason, now)
  local d = f and f[8] or ''
  local id = prefix .. 'dead'
  local before = redis.call('XLEN', id)
  local letter = {'b', batch, 'i', idx, 'p', s, 'a', attempts, 'at', now, 'error',
                  string.sub(reason, 1, DEAD_ERROR_MAX), 'd', d}
  if #d > DEAD_ITEM_MAX then
    -- a canonical item: everything before its payload (type, rate key,
    -- limits and id); one written before 0.2: {"id":...,"type":...}
    local head = '{}'
    local q = string.match(d, '^{"type":"[%w_.:-]+"[^{]-,"id":()')
    local e = q and string.byte(d, q) == 34 and sl_json_string(d, q)
    if e and e < DEAD_ITEM_MAX then
      head = string.sub(d, 1, e - 1) .. '}'
    elseif not q and string.sub(d, 1, 6) == '{"id":' then
      local p = string.find(d, '","type":"', 1, true)
      q = p and string.find(d, '"', p + 10, true)
      if q and q < DEAD_ITEM_MAX then head = string.sub(d, 1, q) .. '}' end
    end
    letter[14] = head
    letter[15] = 'dcut'
    letter[16] = #d
  end
  local did = redis.call('XADD', id, 'MAXLEN', '~', DEAD_MAX, '*', unpack(letter))
  local dropped = before + 1 - redis.call('XLEN', id)
  if dropped > 0 then
    -- the cap trimmed the oldest dead letters: counted, so list and stats can say so
    redis.call('INCRBY', prefix .. 'dead:dropped', dropped)
  end
  redis.call('HSET', prefix .. 'b:' .. batch .. ':f', idx, s .. '\n' .. did .. '\n' .. d)
end

-- ---- Re-running failed items (retry, dead_requeue) ----

-- Splits a failed-items hash value "priority\ndead letter id\nitem JSON"
-- (written by sl_dead). Returns the priority (1-3; nil when malformed), the
-- dead letter id and the item JSON ('' when the failure had none); nothing
-- at all when the value is not of this form.
local function sl_failed_parse(v)
  local p1 = v and string.find(v, '\n', 1, true)
  local p2 = p1 and string.find(v, '\n', p1 + 1, true)
  if not p2 then return nil end
  local s = tonumber(string.sub(v, 1, p1 - 1))
  if s ~= 1 and s ~= 2 and s ~= 3 then s = nil end
  return s, string.sub(v, p1 + 1, p2 - 1), string.sub(v, p2 + 1)
end

-- The decoded results line when its own status is `failed`, else nil.
local function sl_result_failed(line)
  if not line then return nil end
  local ok, r = pcall(cjson.decode, line)
  if ok and type(r) == 'table' and r.status == 'failed' then return r end
  return nil
end

-- Puts a failed item back at the end of its priority stream as a fresh first
-- attempt (fields b, i, a = 1, d, like sluice_v1_submit; earlier errors are
-- not carried) and removes what its failure left in the batch: the results
-- line and the failed-items entry. The caller has checked that the result is
-- `failed` and that the streams have their consumer group, removes the dead
-- letter and moves the counters (sl_reopen).
local function sl_requeue(bkey, streams, batch, idx, s, d)
  redis.call('HDEL', bkey .. ':r', idx)
  redis.call('HDEL', bkey .. ':f', idx)
  redis.call('XADD', streams[s], '*', 'b', batch, 'i', idx, 'a', 1, 'd', d)
  sl_moved(bkey)
end

-- Takes n re-queued items off a batch's `failed` and `done` counters; a
-- `completed` batch is running again (no finished_at until it ends anew).
local function sl_reopen(bkey, n)
  redis.call('HINCRBY', bkey, 'failed', -n)
  redis.call('HINCRBY', bkey, 'done', -n)
  sl_keep_batch(bkey) -- no expiry while it runs again
  if redis.call('HGET', bkey, 'status') == 'completed' then
    redis.call('HSET', bkey, 'status', 'running')
    local prefix, batch = sl_bkey_split(bkey)
    sl_set_status(prefix, batch, 'completed', 'running')
    redis.call('HDEL', bkey, 'finished_at')
  end
end
