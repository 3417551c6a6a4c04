-- sluice_v1_dead_requeue: runs the items of dead letters again
-- (`sluice dead requeue`), by entry id or the oldest first.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     the dead letters P..'dead'
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] consumer group
-- ARGV[4]     'ids': ARGV[5..] are dead letter ids (MS-SEQ)
--             'oldest': ARGV[5] the most dead letters examined (1-10000),
--             ARGV[6] examine those after this id (exclusive; '0-0' from the
--             start), ARGV[7] and up to this one (inclusive; '+' for no bound)
-- returns     {requeued, skipped, examined, last}: items re-queued, dead
--             letters that were not, dead letters looked at (ids: the ids
--             given), and the id of the last one looked at ('' if none)
-- errors      'SLUICE_ARGS' (malformed arguments; nothing was written)
--
-- A dead letter whose item still has a `failed` results line in an existing
-- batch is re-queued as by sluice_v1_retry (sl_requeue: result and
-- failed-items entry removed, attempt 1 at the end of its priority stream,
-- `failed` and `done` down by one, a `completed` batch `running` again) and
-- deleted, with the dead letter the failed-items entry names if that is
-- another one. Every other dead letter is skipped: one whose item no longer
-- has a failed result (its batch expired, or the item was retried) is
-- deleted; one whose item is still failed but cannot run again (its batch was
-- cancelled, or the letter holds no item JSON) stays. An id that is not in
-- the stream (deleted already, as by this call sent twice) counts as skipped
-- and changes nothing. One event per batch with re-queued items.
local streams = {KEYS[1], KEYS[2], KEYS[3]}
local dkey = KEYS[4]
local prefix, queue, group, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function is_id(v)
  return v ~= nil and string.match(v, '^%d+%-%d+$') ~= nil
end

local entries
if mode == 'ids' then
  for i = 5, #ARGV do
    if not is_id(ARGV[i]) then
      return redis.error_reply('SLUICE_ARGS dead letter ids are MS-SEQ, got ' .. ARGV[i])
    end
  end
elseif mode == 'oldest' then
  local n = tonumber(ARGV[5])
  if not string.match(ARGV[5] or '', '^%d+$') or n < 1 or n > 10000 or not is_id(ARGV[6])
     or not (ARGV[7] == '+' or is_id(ARGV[7])) then
    return redis.error_reply('SLUICE_ARGS oldest needs a count of 1-10000, an id and an id or +')
  end
  entries = redis.call('XRANGE', dkey, '(' .. ARGV[6], ARGV[7], 'COUNT', n)
else
  return redis.error_reply('SLUICE_ARGS mode must be ids or oldest')
end
for s = 1, 3 do
  local e = sl_ensure_group(streams[s], group)
  if e then return e end
end

local requeued, skipped, examined, last = 0, 0, 0, ''
local counts = {}

-- One dead letter: eid and its fields f (flat, as XRANGE gives them).
local function one(eid, f)
  local m = {}
  for j = 1, #f - 1, 2 do m[f[j]] = f[j + 1] end
  local batch, idx = m.b, m.i
  if batch and idx then
    local bkey = prefix .. 'b:' .. batch
    local st = redis.call('HGET', bkey, 'status')
    if st and sl_result_failed(redis.call('HGET', bkey .. ':r', idx)) then
      local fs, fdid, fd = sl_failed_parse(redis.call('HGET', bkey .. ':f', idx))
      local s, d = tonumber(m.p), m.d
      if s ~= 1 and s ~= 2 and s ~= 3 then s = fs end
      if d == nil or d == '' or m.dcut then d = fd end -- a letter with a cut item: the whole one
      if st == 'cancelled' or not s or d == nil or d == '' then
        skipped = skipped + 1 -- still failed, but cannot run again: the letter stays
        return
      end
      sl_requeue(bkey, streams, batch, idx, s, d)
      sl_log(bkey, 'requeued', 'i', idx, 'id', sl_item_id(d) or '', 'from', 'dead letter ' .. eid)
      if fdid and fdid ~= eid then redis.call('XDEL', dkey, fdid) end
      redis.call('XDEL', dkey, eid)
      counts[batch] = (counts[batch] or 0) + 1
      requeued = requeued + 1
      return
    end
  end
  redis.call('XDEL', dkey, eid)
  skipped = skipped + 1
end

if mode == 'ids' then
  for i = 5, #ARGV do
    local r = redis.call('XRANGE', dkey, ARGV[i], ARGV[i])
    if r[1] then
      one(ARGV[i], r[1][2])
    else
      skipped = skipped + 1
    end
    examined = examined + 1
    last = ARGV[i]
  end
else
  for _, e in ipairs(entries) do
    one(e[1], e[2])
    examined = examined + 1
    last = e[1]
  end
end

if requeued > 0 then
  local now = sl_now_ms()
  for batch, n in pairs(counts) do
    sl_reopen(prefix .. 'b:' .. batch, n)
    sl_publish(prefix, queue, batch, now)
  end
end
return {requeued, skipped, examined, last}
