-- sluice_v1_stuck (read-only: FCALL_RO may call it): what holds a batch's
-- unfinished items back, for the warnings of `status` and `watch`.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[4]     the batch hash P..'b:'..BATCH
-- ARGV[1]     key prefix P    ARGV[2] consumer group
-- returns     {now, types, held...}: the server's clock (ms); per item
--             type of the batch (field types, written at submit) "TYPE
--             STATE MS": STATE 'live' (a live worker serves it), 'gone'
--             (MS: when the last worker that served it stopped counting as
--             live) or 'never' (no worker of the queue has served it in
--             the last day; MS 0), joined by '\n'; then per worker that
--             holds items of the batch but stopped heartbeating (its
--             registration P..'w:NAME' expired) four strings: the worker,
--             how many items it holds, its last beat (ms; '' unknown) and
--             the earliest time one of them may be taken over (the claim's
--             expiry, ms; '' unknown)
--
-- Bounded: it examines the first 1000 entries workers hold for the batch
-- (P..'b:ID:run', one XPENDING each) and the batch's types (at most a few
-- dozen).
local prefix, group = ARGV[1], ARGV[2]
local bkey = KEYS[4]
local now = sl_now_ms()
local out = {tostring(now), ''}
local types = {}
for t in string.gmatch(redis.call('HGET', bkey, 'types') or '', '[^,]+') do
  local v = redis.call('HGET', prefix .. 'served', t)
  local beat, ttl = string.match(v or '', '^(%d+) (%d+)$')
  local state, ms = 'never', 0
  if beat and tonumber(beat) + tonumber(ttl) > now then
    state, ms = 'live', tonumber(beat)
  elseif beat then
    state, ms = 'gone', tonumber(beat) + tonumber(ttl)
  end
  if beat and tonumber(beat) < now - 24 * 3600 * 1000 then state, ms = 'never', 0 end
  types[#types + 1] = t .. ' ' .. state .. ' ' .. ms
end
out[2] = table.concat(types, '\n')
local held, order = {}, {}
for _, m in ipairs(redis.call('ZRANGE', bkey .. ':run', 0, 999)) do
  local s, eid = tonumber(string.sub(m, 1, 1)), string.sub(m, 3)
  local p = KEYS[s] and sl_holder(KEYS[s], group, eid)
  local w = p and p[2]
  if w and w ~= SL_STALE and w ~= SL_ALONE then
    local h = held[w]
    if h == nil then
      h = redis.call('EXISTS', prefix .. 'w:' .. w) == 0 and {n = 0} or false
      held[w] = h
      if h then order[#order + 1] = w end
    end
    if h then
      h.n = h.n + 1
      local exp = tonumber(redis.call('ZSCORE', prefix .. 'claims', m))
      if exp and (not h.at or exp < h.at) then h.at = exp end
    end
  end
end
for _, w in ipairs(order) do
  local h = held[w]
  out[#out + 1] = w
  out[#out + 1] = tostring(h.n)
  out[#out + 1] = redis.call('ZSCORE', prefix .. 'workers', w) or ''
  out[#out + 1] = h.at and string.format('%d', h.at) or ''
end
return out
