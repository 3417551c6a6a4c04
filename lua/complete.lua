-- sluice_v1_complete: records the outcome of finished attempts, exactly once.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] key prefix P    ARGV[3] queue name
-- ARGV[4]     consumer name (the caller)
-- ARGV[5..]   per attempt, 9 elements: priority (1-3), stream entry id,
--             batch id, item index, outcome, text, retry delay (ms), item JSON
--             (with 'f' only, else ''; kept in the dead letter even when the
--             stream entry is gone already), and the limit whose concurrency
--             lease the attempt held ('' for none): it is returned, and an
--             item waiting for one is woken (sl_wake)
--             outcome 's' succeeded / 'f' failed for good: text is the results line
--             'x' refused (the worker was not granted what the item asks
--                         for): counted failed and refused, with no dead
--                         letter; `retry` runs it again
--             (upper case S, F, X, R: the same, and the attempt reported
--             progress, whose field is removed)
--             outcome 'r' failed, to be retried after the delay: text is the
--                         JSON array of the errors so far (the last few),
--                         or {"errors":[...],"log":[LINES],"metrics":{...}}
--                         with the attempt's log, which goes to the batch
--                         log, and its metrics, added to the batch's sums
--             A results line's "metrics" (before its result) are added to
--             the batch's sums of all attempts (metric:NAME) and of final
--             attempts (final:NAME); an item with attempts > 1 counts in
--             the batch's reran.
-- returns     an array with one element per attempt: 1 if this call recorded
--             it, 0 if it changed nothing (the item had ended, as when this
--             call is a repeat after a lost reply), or, when the attempt was
--             fenced, a string "WORKER MS": the caller no longer holds the
--             entry because WORKER took it over at MS (ms since the epoch;
--             0 unknown; WORKER '~stale': waiting for a worker to run it),
--             or "- 0": nobody holds it although it is still in its stream
--             (Redis lost the caller's read: a rollback or failover)
-- errors      'SLUICE_ARGS' (malformed arguments; nothing was written)
--
-- Fencing: an outcome is recorded only when the caller still holds the
-- entry (pending, with the caller as its consumer) in this call, so a
-- worker that stalled past its visibility timeout never records over the
-- worker that took its item over, and nothing is recorded for a read that
-- a Redis rollback undid (the entry is delivered again). A fenced attempt
-- changes nothing, not even its concurrency lease, which moved with it.
--
-- Final outcomes are guarded by HSETNX on the batch's results hash: only the
-- first completion of an item writes its result and moves the counters. A
-- failed item also leaves a dead letter (sl_dead). A retry goes to the
-- delayed set (P..'delayed') with the next attempt number, unless the item
-- has ended, and is moved back to its stream when due (sl_promote, in
-- fetch). The entry is then acknowledged and deleted: no call deletes the
-- only copy of an item without writing what replaces it (result, retry,
-- dead letter) in the same call. One event per touched batch carries the
-- absolute counters.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, prefix, queue, me = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = sl_now_ms()
local acks = {{}, {}, {}}
local counts, exists = {}, {}
local out = {}

if #ARGV < 4 or (#ARGV - 4) % 9 ~= 0 then
  return redis.error_reply('SLUICE_ARGS completions come in groups of 9 after the consumer name')
end
for i = 5, #ARGV, 9 do
  local s, outcome = ARGV[i], ARGV[i + 4]
  outcome = string.lower(outcome)
  if (s ~= '1' and s ~= '2' and s ~= '3') or (outcome ~= 's' and outcome ~= 'f' and outcome ~= 'x' and outcome ~= 'r')
     or not tonumber(ARGV[i + 6]) then
    return redis.error_reply('SLUICE_ARGS priority must be 1-3, outcome s, f, x or r, delay a number')
  end
end

local function entry(s, eid)
  local r = redis.call('XRANGE', KEYS[s], eid, eid)
  return r[1] and r[1][2] or nil
end

-- Who holds each entry: with many completions for one stream, the
-- caller's whole pending list of it in one XPENDING (it holds about its
-- concurrency), else one XPENDING per entry.
local per = {0, 0, 0}
local mine = {}
for i = 5, #ARGV, 9 do
  local s = tonumber(ARGV[i])
  per[s] = per[s] + 1
end
for s = 1, 3 do
  if per[s] >= 16 then
    mine[s] = {}
    for _, p in ipairs(redis.call('XPENDING', KEYS[s], group, '-', '+', 100000, me)) do
      mine[s][p[1]] = p
    end
  end
end
local function holder(s, eid)
  if mine[s] then return mine[s][eid] or sl_holder(KEYS[s], group, eid) end
  return sl_holder(KEYS[s], group, eid)
end

-- Adds an attempt's metrics ({"cost":0.034}) to the batch's sums:
-- metric:NAME over every attempt, and final:NAME over final attempts.
local function add_metrics(bkey, m, final)
  local n = 0
  for k, v in pairs(m) do
    n = n + 1
    if n > 16 then break end
    if type(k) == 'string' and #k <= 63 and string.match(k, '^[%w_.-]+$') and type(v) == 'number' and
       v == v and v ~= math.huge and v ~= -math.huge then
      redis.call('HINCRBYFLOAT', bkey, 'metric:' .. k, v)
      if final then redis.call('HINCRBYFLOAT', bkey, 'final:' .. k, v) end
    end
  end
end

-- The batch log of a failed attempt (sl_log): a timeout first when it was
-- one, then ev (retry, dead, refused) with the attempt and its error.
local function log_failure(bkey, ev, idx, d, att, why, ...)
  local id = sl_item_id(d or '') or ''
  why = type(why) == 'string' and why or cjson.encode(why)
  if string.sub(why, 1, 16) == 'timed out after ' then
    sl_log(bkey, 'timeout', 'i', idx, 'id', id, 'att', att, 'by', me, 'error', why)
  end
  sl_log(bkey, ev, 'i', idx, 'id', id, 'att', att, 'by', me, 'error', why, ...)
end

local returned = {}
local gone = {} -- claims of the entries acknowledged here (P..'claims')
local held = {} -- the same entries by batch, for b:BATCH:run
local retries, dur = 0, {} -- for P..'metrics': retries, and durations by bucket
local dur_sum, dur_n = 0, 0
for i = 5, #ARGV, 9 do
  local s, eid, batch, idx, outcome, text = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2],
                                           ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local bkey = prefix .. 'b:' .. batch
  local p = holder(s, eid)
  local first = 0
  local fenced = nil
  if not p or p[2] ~= me then
    fenced = sl_fence(prefix, s, KEYS[s], eid, p, me)
  elseif outcome ~= string.lower(outcome) then
    -- an upper-case outcome: the attempt reported progress; it ends here
    redis.call('HDEL', bkey .. ':progress', idx)
  end
  outcome = string.lower(outcome)
  if exists[batch] == nil then
    exists[batch] = redis.call('EXISTS', bkey) == 1
  end
  if p and p[2] == me then
    gone[#gone + 1] = ARGV[i] .. ':' .. eid
    local r = held[batch] -- its member of b:BATCH:run goes (sl_run_drop_all, below)
    if not r then
      r = {}
      held[batch] = r
    end
    r[#r + 1] = ARGV[i] .. ':' .. eid
  end
  if not p or p[2] ~= me then
    -- not this caller's any more (fenced), or ended by its own earlier call
  elseif outcome == 'r' then
    -- deliveries of this entry: a taken-over attempt counts every delivery
    local deliveries = tonumber(p[4])
    local f = entry(s, eid)
    redis.call('XACK', KEYS[s], group, eid)
    if f and exists[batch] and redis.call('HEXISTS', bkey .. ':r', idx) == 0 then
      local ok, errs = pcall(cjson.decode, text)
      local log = ''
      if ok and type(errs) == 'table' and type(errs.errors) == 'table' then
        -- {"errors":[...],"log":[...]}: the attempt's log goes to the batch log
        if type(errs.log) == 'table' then
          for k, l in ipairs(errs.log) do
            if type(l) == 'string' then log = log .. (k > 1 and '\n' or '') .. l end
          end
        end
        if type(errs.metrics) == 'table' then add_metrics(bkey, errs.metrics, false) end
        errs = errs.errors
        text = cjson.encode(errs)
      end
      local why = ok and type(errs) == 'table' and type(errs[#errs]) == 'string' and errs[#errs] or text
      log_failure(bkey, 'retry', idx, f[8], tonumber(f[6]) + deliveries - 1, why,
                  'next_at', now + tonumber(ARGV[i + 6]), 'log', string.sub(log, 1, 4096))
      sl_delay(prefix, s, batch, idx, tonumber(f[6]) + deliveries, text, f[8], now + tonumber(ARGV[i + 6]))
      sl_moved(bkey)
      first = 1
      retries = retries + 1
    end
    -- replaced by the retry just written, or the item ended, or its batch is gone
    redis.call('XDEL', KEYS[s], eid)
  else
    local ack = acks[s]
    ack[#ack + 1] = eid
    if exists[batch] and redis.call('HSETNX', bkey .. ':r', idx, text) == 1 then
      first = 1
      -- the line's head (id, status, attempts, times, worker, metrics) comes
      -- before its result: only that is searched
      local head = string.sub(text, 1, 2048)
      local mt = string.find(head, ',"metrics":{', 1, true)
      if mt then
        local ok, m = pcall(cjson.decode, string.match(head, '^%b{}', mt + 11) or '')
        if ok and type(m) == 'table' then add_metrics(bkey, m, true) end
      end
      local att = tonumber(string.match(head, ',"attempts":(%d+),'))
      if att and att > 1 then redis.call('HINCRBY', bkey, 'reran', 1) end
      local c = counts[batch]
      if not c then
        c = {s = 0, f = 0, x = 0}
        counts[batch] = c
      end
      c[outcome] = c[outcome] + 1
      -- the results line of a worker: "duration_ms" comes before any text
      -- of the item's own (its id, a JSON string, holds no bare quote)
      local ms = tonumber(string.match(text, '"duration_ms":(%d+)'))
      if ms then
        local b = sl_dur_bucket(ms)
        dur[b] = (dur[b] or 0) + 1
        dur_sum, dur_n = dur_sum + ms, dur_n + 1
      end
      if outcome == 'x' then
        -- refused: kept for `retry` (no dead letter id), not a dead letter
        local f = entry(s, eid)
        local d = f and f[8] or ARGV[i + 7]
        local ok, res = pcall(cjson.decode, text)
        redis.call('HSET', bkey .. ':f', idx, s .. '\n\n' .. d)
        log_failure(bkey, 'refused', idx, d, ok and type(res) == 'table' and res.attempts or 0,
                    ok and type(res) == 'table' and res.error or text)
      elseif outcome == 'f' then
        local ok, res = pcall(cjson.decode, text)
        local reason = ok and type(res) == 'table' and res.error or text
        local att = ok and type(res) == 'table' and res.attempts or 0
        local f = entry(s, eid)
        if not f and ARGV[i + 7] ~= '' then
          f = {'b', batch, 'i', idx, 'a', tostring(att), 'd', ARGV[i + 7]}
        end
        sl_dead(prefix, batch, idx, s, f, att, tostring(reason), now)
        log_failure(bkey, 'dead', idx, f and f[8] or '', att, reason)
      end
    end
  end
  out[#out + 1] = fenced or first
  if not fenced and ARGV[i + 8] ~= '' and
     redis.call('ZREM', prefix .. 'cl:' .. ARGV[i + 8], ARGV[i] .. ':' .. eid) == 1 then
    returned[ARGV[i + 8]] = (returned[ARGV[i + 8]] or 0) + 1
  end
end
for name, n in pairs(returned) do
  sl_wake(prefix, KEYS, name, n)
end
for s = 1, 3 do
  if #acks[s] > 0 then
    redis.call('XACK', KEYS[s], group, unpack(acks[s]))
    redis.call('XDEL', KEYS[s], unpack(acks[s]))
  end
end
sl_claims_drop(prefix, gone)
for batch, members in pairs(held) do sl_run_drop_all(prefix, batch, members) end
-- Throughput: items ended per minute (sluice stats).
local ended, ok_n = 0, 0
for _, c in pairs(counts) do
  ended = ended + c.s + c.f + c.x
  ok_n = ok_n + c.s
end
sl_metric(prefix, 'ended:succeeded', ok_n)
sl_metric(prefix, 'ended:failed', ended - ok_n)
sl_metric(prefix, 'retries', retries)
for b, n in pairs(dur) do sl_metric(prefix, 'dur:' .. b, n) end
sl_metric(prefix, 'dur_sum_ms', dur_sum)
sl_metric(prefix, 'dur_count', dur_n)
if ended > 0 then
  local tkey = prefix .. 'tput:' .. math.floor(now / 60000)
  redis.call('INCRBY', tkey, ended)
  redis.call('PEXPIRE', tkey, 3600000) -- an hour: stats show the last 30 minutes
end
for batch, c in pairs(counts) do
  local bkey = prefix .. 'b:' .. batch
  redis.call('HINCRBY', bkey, 'done', c.s + c.f + c.x)
  if c.s > 0 then redis.call('HINCRBY', bkey, 'succeeded', c.s) end
  if c.f + c.x > 0 then redis.call('HINCRBY', bkey, 'failed', c.f + c.x) end
  if c.x > 0 then redis.call('HINCRBY', bkey, 'refused', c.x) end
  sl_maybe_finish(bkey, now)
  sl_publish(prefix, queue, batch, now)
end
return out
