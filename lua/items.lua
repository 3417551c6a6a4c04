-- sluice_v1_items (read-only: FCALL_RO may call it): one page of a batch's
-- unfinished items, from one of the places they can be, for `sluice status
-- --items` (sl_batch_items, src/unfinished.c, calls it place by place).
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     the batch hash P..'b:'..BATCH
-- ARGV[1]     key prefix P   ARGV[2] consumer group   ARGV[3] batch id
-- ARGV[4]     the place: 'run' (held by workers: running, or waiting for
--             their rate limit), 'dl' (retrying and scheduled), 'p'
--             (paused), 'cw' (waiting for a concurrency lease: the limits'
--             waiting streams), 'q' (queued: the three streams)
-- ARGV[5]     the cursor: '0' to begin, then what the last page returned
-- ARGV[6]     how many entries to examine (1-1000)
-- returns     {NOW, CURSOR ('' when the place is done), rows...}; a row is
--             7 strings: item index, item id (its JSON string token),
--             state, attempt, time (running: since when, ms; waiting:
--             until when its rate wait ends, or '' for a lease; retrying
--             and scheduled: when it is due; '' otherwise), worker (the
--             holder of a running item, '~stale' for a queued one taken
--             from a worker that stopped, else ''), detail (the limit of a
--             waiting item, else '')
--
-- Each call examines at most ARGV[6] entries of one place (for 'cw' and
-- 'q', entries of the whole queue, of which it keeps the batch's), so a
-- listing never holds Redis for long; it is a snapshot taken in steps:
-- an item that moves between two calls may be listed twice or not at all.
local prefix, group, batch, place, cursor = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = math.max(1, math.min(1000, tonumber(ARGV[6]) or 100))
local bkey = KEYS[4]
local now = sl_now_ms()
local out = {tostring(now), ''}

local function row(idx, d, state, att, t, worker, detail)
  out[#out + 1] = tostring(idx)
  out[#out + 1] = d and sl_item_id(d) or ''
  out[#out + 1] = state
  out[#out + 1] = tostring(att or '')
  out[#out + 1] = t and string.format('%d', t) or ''
  out[#out + 1] = worker or ''
  out[#out + 1] = detail or ''
end

-- The attempt an entry runs as: its own, plus the deliveries after the first.
local function attempt(f, p)
  return tonumber(f[6]) + (p and math.max(0, tonumber(p[4]) - 1) or 0)
end

if place == 'run' then
  local off = tonumber(cursor) or 0
  local ms = redis.call('ZRANGE', bkey .. ':run', off, off + count - 1, 'WITHSCORES')
  for k = 1, #ms, 2 do
    local m, at = ms[k], tonumber(ms[k + 1])
    local s, eid = tonumber(string.sub(m, 1, 1)), string.sub(m, 3)
    local r = KEYS[s] and redis.call('XRANGE', KEYS[s], eid, eid)[1]
    if r then
      local p = sl_holder(KEYS[s], group, eid)
      row(r[2][4], r[2][8], at > now and 'waiting' or 'running', attempt(r[2], p), at, p and p[2] or '',
          at > now and 'rate limit' or '')
    end
  end
  if #ms == 2 * count then out[2] = tostring(off + count) end
elseif place == 'dl' then
  local r = redis.call('HSCAN', bkey .. ':dl', cursor, 'COUNT', count)
  for k = 1, #r[2], 2 do
    local field, v = r[2][k], r[2][k + 1]
    local q = string.find(field, '\n', 1, true)
    local p1 = string.find(v, '\n', 1, true)
    local p2 = p1 and string.find(v, '\n', p1 + 1, true)
    if q and p2 then
      local idx, att = string.sub(field, 1, q - 1), string.sub(field, q + 1)
      local due = redis.call('ZSCORE', prefix .. 'delayed', string.sub(v, 1, p1 - 1) .. '\n' .. batch .. '\n' .. field)
      row(idx, string.sub(v, p2 + 1), att == '1' and 'scheduled' or 'retrying', att, tonumber(due))
    end
  end
  if r[1] ~= '0' then out[2] = r[1] end
elseif place == 'p' then
  local es = redis.call('XRANGE', bkey .. ':p', cursor == '0' and '-' or ('(' .. cursor), '+', 'COUNT', count)
  for _, e in ipairs(es) do
    local f = e[2] -- p, S, b, BATCH, i, IDX, a, A, d, D, ...
    row(f[6], f[10], 'paused', f[8])
  end
  if #es == count then out[2] = es[#es][1] end
elseif place == 'cw' or place == 'q' then
  -- cursor "K ENTRY": the K-th stream (a limit's waiting stream for 'cw',
  -- in the order of the limits' names; a priority for 'q'), after ENTRY
  local k, after = string.match(cursor, '^(%d+) (%d+%-%d+)$')
  k, after = tonumber(k) or 1, after or '0-0'
  local keys = {}
  if place == 'q' then
    keys = {KEYS[1], KEYS[2], KEYS[3]}
  else
    local names = {}
    local lims = redis.call('HGETALL', prefix .. 'limits')
    for j = 1, #lims, 2 do names[#names + 1] = lims[j] end
    table.sort(names)
    for _, n in ipairs(names) do keys[#keys + 1] = prefix .. 'cw:' .. n end
  end
  local budget = count
  while keys[k] and budget > 0 do
    local es = redis.call('XRANGE', keys[k], '(' .. after, '+', 'COUNT', budget)
    budget = budget - #es
    for _, e in ipairs(es) do
      local f = e[2]
      if place == 'cw' and f[4] == batch then
        row(f[6], f[10], 'waiting', f[8], nil, '', 'lease ' .. string.sub(keys[k], #prefix + 4))
      elseif place == 'q' and f[2] == batch and not redis.call('ZSCORE', bkey .. ':run', k .. ':' .. e[1]) then
        local p = sl_holder(keys[k], group, e[1])
        if not p or p[2] == SL_STALE or p[2] == SL_ALONE then
          row(f[4], f[8], 'queued', attempt(f, p), nil, p and p[2] or '')
        end
      end
    end
    if budget > 0 then
      k, after = k + 1, '0-0'
    else
      after = es[#es][1]
    end
  end
  if keys[k] then out[2] = k .. ' ' .. after end
else
  return redis.error_reply('SLUICE_ARGS the place must be run, dl, p, cw or q')
end
return out
