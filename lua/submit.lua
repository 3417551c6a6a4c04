-- sluice_v1_submit: writes one chunk of a batch, atomically.
-- KEYS[1]     batch hash      P..'b:'..BATCH
-- KEYS[2..4]  streams         P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[5]     batch index     P..'batches' (sorted set, score = created_at)
-- ARGV[1]     batch id ([0-9A-Za-z_-], 1-64 characters)
-- ARGV[2]     queue name      ARGV[3] key prefix P
-- ARGV[4]     chunk number, from 0
-- ARGV[5]     '1' if this is the last chunk, else '0'
-- ARGV[6]     chunk 0 only: the batch name, or a JSON object of batch options
--             {"name":"...","retention_ms":N,"dedupe_ttl_ms":M,"webhook":URL,
--             "idempotency_key":K,"idempotency_ttl_ms":T,"tenant":U} (N: how long the
--             ended batch and its results are kept, ms, default 7 days; M: how
--             long a dedupe key is remembered, ms, default 24 h; K: 1-256
--             bytes naming this submit, T: how long K is remembered, ms,
--             default 24 h). A batch created with K is remembered in
--             P..'idem:'..K; chunk 0 of another batch with the same K within T
--             writes nothing and answers 'SLUICE_IDEMPOTENT FIRST_BATCH_ID'.
--             U: the tenant the batch belongs to (sluice serve), a name of
--             [A-Za-z0-9_.-], 1-64 characters, kept in the hash's `tenant`;
--             with a tenant, K is that tenant's (P..'idem:'..U..':'..K).
--             "by": who submits, logged with `submitted` (sl_by).
--             "labels": "key=value,..." or an object {"key":"value"}: up to
--             16, a key 1-63 characters of [A-Za-z0-9_./-], a value 0-63
--             of [A-Za-z0-9_./:@+-], each key once; kept in the hash's
--             `labels` as "key=value,..." sorted by key.
-- ARGV[7]     consumer group name
-- ARGV[8]     'items': each further argument is one item object, exactly as
--             in the README's JSON Lines format, in any formatting. Items
--             take the next indexes of the batch, in order (chunk 0 starts
--             at 0). Every field is checked (_lib_item.lua); an item without
--             an id gets its position in the batch, from 1.
--             'normalized': sluice's C client, which checked the items
--             itself: per item a priority argument, the item index and the
--             canonical item (_lib_item.lua, verified byte for byte). The
--             priority argument is 1 (high), 2 (normal) or 3 (low), then
--             optionally "@T" (not before T, ms since the epoch) or "+D" (D
--             ms from now, on the server's clock), then optionally "#KEY"
--             (the dedupe key, any bytes to the end).
--             An item with a start time waits in the delayed set
--             (P..'delayed') until then, like retries. An item with a dedupe
--             key seen in the queue within the TTL is skipped (not written,
--             not counted; P..'b:ID:skip' maps its index to BATCH:INDEX of the
--             item that holds the key).
-- returns     the number of items of the batch written so far
-- errors      'SLUICE_ITEM item index I (id "ID"): field "F": ...' (an item
--             refused, with the same words as `sluice submit`; nothing of
--             the chunk was written),
--             'SLUICE_ARGS' (other malformed arguments; nothing was written),
--             'SLUICE_IDEMPOTENT ID' (chunk 0 of a batch whose idempotency key
--             batch ID took first, within its TTL: nothing was written; the
--             caller reports batch ID),
--             'SLUICE_CANCELLED' (the batch was cancelled meanwhile),
--             'SLUICE_ORDER' (a chunk is missing before this one),
--             'SLUICE_WHOLE' (a chunk after the last one)
--
-- The batch is `submitting` (whole = 0) until the last chunk, which sets
-- total, whole = 1 and status `queued` in the same call. A chunk sent again
-- after a lost reply is recognized by its number and not written twice (so
-- is chunk 0: batch ids carry 80 random bits, a collision is not a concern).
-- Every argument is checked before anything is written.
local bkey, batch, queue, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local seq, last = tonumber(ARGV[4]), ARGV[5] == '1'

if not string.match(batch, '^[0-9A-Za-z_-]+$') or #batch > 64 then
  return redis.error_reply('SLUICE_ARGS batch id must be 1-64 characters of [0-9A-Za-z_-]')
end
local mode = ARGV[8]
if not string.match(ARGV[4], '^%d+$') or (mode ~= 'items' and mode ~= 'normalized') or
   (mode == 'normalized' and (#ARGV - 8) % 3 ~= 0) then
  return redis.error_reply("SLUICE_ARGS chunk number, mode ('items' or 'normalized') or item triples malformed")
end
-- Batch labels (src/labels.c has the same rules): the stored form, or nil
-- and why not.
local function labels_canon(v)
  local l, n = {}, 0
  local function add(k, val)
    n = n + 1
    if n > 16 then return 'more than 16 labels' end
    if type(k) ~= 'string' or type(val) ~= 'string' then return 'label keys and values must be strings' end
    if not string.match(k, '^[%w_./-]+$') or #k > 63 then
      return 'label key "' .. string.sub(k, 1, 80) .. '" must be 1-63 characters of [A-Za-z0-9_./-]'
    end
    if not string.match(val, '^[%w_./:@+-]*$') or #val > 63 then
      return 'label "' .. k .. '": the value must be 0-63 characters of [A-Za-z0-9_./:@+-]'
    end
    if l[k] then return 'label key "' .. k .. '" given twice' end
    l[k] = val
    return nil
  end
  local e
  if type(v) == 'string' then
    for part in string.gmatch(v .. ',', '([^,]*),') do
      local k, val = string.match(part, '^([^=]*)=(.*)$')
      if not k then return nil, 'label "' .. string.sub(part, 1, 80) .. '": expected key=value' end
      e = add(k, val)
      if e then return nil, e end
    end
  elseif type(v) == 'table' then
    for k, val in pairs(v) do
      e = add(k, val)
      if e then return nil, e end
    end
  else
    return nil, 'labels must be "key=value,..." or an object'
  end
  local keys = {}
  for k in pairs(l) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = k .. '=' .. l[k] end
  return table.concat(keys, ',')
end

-- The priority argument: "2", then optionally "@T" or "+D" (start time),
-- then optionally "#KEY" (dedupe key, any bytes to the end).
local function parse_prio(p)
  local s = tonumber(string.sub(p, 1, 1))
  local mark, t, rest = string.match(p, '^[123]([@+]?)(%d*)(.*)$')
  if not s or s < 1 or s > 3 or not mark or (mark ~= '' and t == '') or (mark == '' and t ~= '') then
    return nil
  end
  if rest ~= '' and string.sub(rest, 1, 1) ~= '#' then return nil end
  return s, mark, tonumber(t), rest ~= '' and string.sub(rest, 2) or nil
end

-- The chunk's items, all checked before anything is written: per item its
-- priority (1-3), index, canonical item, start (mark '@' or '+' and t) and
-- dedupe key.
local items = {}
if mode == 'normalized' then
  local heads = {}
  for i = 9, #ARGV, 3 do
    local s, mark, t, key = parse_prio(ARGV[i])
    if not s then
      return redis.error_reply('SLUICE_ARGS item priority must be 1, 2 or 3 (optionally @MS or +MS, then #KEY), got ' ..
                               string.sub(ARGV[i], 1, 80))
    end
    if not string.match(ARGV[i + 1], '^%d+$') then
      return redis.error_reply('SLUICE_ARGS item index must be a number, got ' .. string.sub(ARGV[i + 1], 1, 40))
    end
    local bad = sl_item_verify(ARGV[i + 2], heads)
    if bad then
      return redis.error_reply('SLUICE_ITEM item index ' .. ARGV[i + 1] .. ': not a canonical item (' .. bad ..
                               '); send it as an item object instead')
    end
    items[#items + 1] = {s, ARGV[i + 1], ARGV[i + 2], mark, t, key}
  end
else
  local first = tonumber(redis.call('HGET', bkey, 'indexed') or '0')
  for i = 9, #ARGV do
    local idx = first + i - 9
    local it, why = sl_item_read(ARGV[i], idx + 1)
    if not it then
      local ok, o = pcall(cjson.decode, ARGV[i])
      local id = ok and type(o) == 'table' and (type(o.id) == 'string' or type(o.id) == 'number') and
                 sl_json_quote(string.sub(tostring(o.id), 1, 60))
      return redis.error_reply('SLUICE_ITEM item index ' .. idx .. (id and (' (id ' .. id .. ')') or '') .. ': ' .. why)
    end
    local mark, t = '', nil
    if it.start_at ~= 0 then
      mark, t = '@', it.start_at
    elseif it.delay ~= 0 then
      mark, t = '+', it.delay
    end
    items[#items + 1] = {it.prio, tostring(idx), it.d, mark, t, it.dedupe}
  end
end

local now = sl_now_ms()
local v = redis.call('HMGET', bkey, 'status', 'chunks', 'submitted', 'whole')
if v[1] then
  local chunks = tonumber(v[2])
  if seq < chunks then return tonumber(v[3]) end -- a chunk sent again
  if v[1] == 'cancelled' then
    return redis.error_reply('SLUICE_CANCELLED batch ' .. batch .. ' was cancelled')
  end
  if v[4] == '1' then
    return redis.error_reply('SLUICE_WHOLE batch ' .. batch .. ' already has its last chunk')
  end
  if seq > chunks then
    return redis.error_reply('SLUICE_ORDER batch ' .. batch .. ' chunk ' .. seq .. ' before ' .. chunks)
  end
elseif seq == 0 then
  local name, retention, dedupe_ttl, webhook, idem, idem_ttl, tenant = ARGV[6], nil, nil, nil, nil, 86400000, nil
  local labels, by = nil, ''
  if string.sub(name, 1, 1) == '{' then
    local ok, o = pcall(cjson.decode, name)
    if not ok or type(o) ~= 'table' then
      return redis.error_reply('SLUICE_ARGS batch options must be a JSON object')
    end
    name = type(o.name) == 'string' and o.name or ''
    retention = tonumber(o.retention_ms)
    dedupe_ttl = tonumber(o.dedupe_ttl_ms)
    webhook = type(o.webhook) == 'string' and o.webhook or nil
    if o.idempotency_key ~= nil then
      idem = o.idempotency_key
      if type(idem) ~= 'string' or #idem < 1 or #idem > 256 or string.find(idem, '%z') then
        return redis.error_reply('SLUICE_ARGS idempotency_key must be a string of 1-256 bytes without \\u0000')
      end
    end
    if o.tenant ~= nil then
      tenant = o.tenant
      if type(tenant) ~= 'string' or not string.match(tenant, '^[%w_.-]+$') or #tenant > 64 then
        return redis.error_reply('SLUICE_ARGS tenant must be 1-64 characters of [A-Za-z0-9_.-]')
      end
    end
    by = sl_by(o.by)
    if o.labels ~= nil and o.labels ~= '' then
      local why
      labels, why = labels_canon(o.labels)
      if not labels then return redis.error_reply('SLUICE_ARGS ' .. why) end
      if labels == '' then labels = nil end
    end
    if o.idempotency_ttl_ms ~= nil then
      idem_ttl = tonumber(o.idempotency_ttl_ms)
      if not idem_ttl or idem_ttl < 1 or idem_ttl > 31536000000 or idem_ttl % 1 ~= 0 then
        return redis.error_reply('SLUICE_ARGS idempotency_ttl_ms must be an integer from 1 to 31536000000')
      end
    end
  end
  -- Idempotency: the first batch to take the key within its TTL is the
  -- answer to every later submit with it (itself included: a chunk 0 sent
  -- again after a lost reply finds its own id).
  if idem then
    local ikey = prefix .. 'idem:' .. (tenant and (tenant .. ':') or '') .. idem
    local first = redis.call('SET', ikey, batch, 'NX', 'PX', idem_ttl, 'GET')
    if first and first ~= batch then return redis.error_reply('SLUICE_IDEMPOTENT ' .. first) end
  end
  for i = 2, 4 do
    local e = sl_ensure_group(KEYS[i], ARGV[7])
    if e then return e end
  end
  redis.call('HSET', bkey, 'id', batch, 'queue', queue, 'name', name, 'status', 'submitting',
             'whole', 0, 'total', 0, 'submitted', 0, 'chunks', 0, 'done', 0, 'succeeded', 0,
             'failed', 0, 'cancelled', 0, 'created_at', now)
  if retention then redis.call('HSET', bkey, 'retention_ms', math.floor(retention)) end
  if dedupe_ttl then redis.call('HSET', bkey, 'dedupe_ttl_ms', math.floor(dedupe_ttl)) end
  if webhook then redis.call('HSET', bkey, 'webhook', webhook) end
  if labels then redis.call('HSET', bkey, 'labels', labels) end
  sl_log(bkey, 'submitted', 'by', by)
  if tenant then
    -- The tenant's own index of its batches (sluice serve lists from it),
    -- trimmed like the queue's: the 10 oldest looked at, 90 days at most.
    local tkey = prefix .. 'bt:' .. tenant
    redis.call('HSET', bkey, 'tenant', tenant)
    redis.call('ZADD', tkey, now, batch)
    for _, old in ipairs(redis.call('ZRANGE', tkey, 0, 9)) do
      if redis.call('EXISTS', prefix .. 'b:' .. old) == 0 then redis.call('ZREM', tkey, old) end
    end
    redis.call('ZREMRANGEBYSCORE', tkey, '-inf', now - 90 * 24 * 3600 * 1000)
  end
  redis.call('ZADD', KEYS[5], now, batch)
  sl_set_status(prefix, batch, nil, 'submitting')
  -- The index forgets batches whose keys expired (their retention after
  -- they ended): the 10 oldest are looked at with each new batch, so it
  -- shrinks at least as fast as batches come; and anything older than 90
  -- days, whatever happened to it.
  for _, old in ipairs(redis.call('ZRANGE', KEYS[5], 0, 9)) do
    if redis.call('EXISTS', prefix .. 'b:' .. old) == 0 then
      redis.call('ZREM', KEYS[5], old)
      for _, st in ipairs(SL_STATUSES) do redis.call('ZREM', prefix .. 'bs:' .. st, old) end
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 90 * 24 * 3600 * 1000)
  for _, st in ipairs(SL_STATUSES) do
    redis.call('ZREMRANGEBYSCORE', prefix .. 'bs:' .. st, '-inf', now - 90 * 24 * 3600 * 1000)
  end
else
  return redis.error_reply('SLUICE_ORDER batch ' .. batch .. ' has no first chunk')
end

local n, skipped = 0, 0
local ttl = nil
local types, newtypes = nil, {} -- the batch's item types (field types: `status` warns when no worker serves one)
for _, it in ipairs(items) do
  local s, idx, d, mark, t, key = it[1], it[2], it[3], it[4], it[5], it[6]
  local ty = string.match(d, '^{"type":"([%w_.:-]+)"')
  if ty and not newtypes[ty] then
    if not types then
      local had = redis.call('HGET', bkey, 'types') or ''
      types = had == '' and ',' or (',' .. had .. ',')
    end
    newtypes[ty] = true
    if not string.find(types, ',' .. ty .. ',', 1, true) and #types < 1024 then
      types = types .. ty .. ','
    end
  end
  local due = mark == '@' and t or (mark == '+' and now + t) or nil
  if key then
    -- Dedupe: the first item with this key within the TTL wins, across
    -- batches of the queue; later ones are skipped, recorded in P..b:ID:skip.
    ttl = ttl or tonumber(redis.call('HGET', bkey, 'dedupe_ttl_ms') or '') or 86400000
    local holder = redis.call('SET', prefix .. 'dd:' .. key, batch .. ':' .. idx, 'NX', 'PX', ttl, 'GET')
    if holder then
      redis.call('HSET', bkey .. ':skip', idx, holder)
      skipped = skipped + 1
      s = nil
    end
  end
  if not s then
    -- skipped as a duplicate
  elseif due and due > now then
    sl_delay(prefix, s, batch, idx, 1, '', d, due)
  else
    redis.call('XADD', KEYS[1 + s], '*', 'b', batch, 'i', idx, 'a', 1, 'd', d)
  end
  if s then n = n + 1 end
end
if types then redis.call('HSET', bkey, 'types', string.sub(types, 2, -2)) end
if skipped > 0 then redis.call('HINCRBY', bkey, 'skipped', skipped) end
redis.call('HINCRBY', bkey, 'indexed', n + skipped)
local submitted = redis.call('HINCRBY', bkey, 'submitted', n)
redis.call('HINCRBY', bkey, 'chunks', 1)
if last then
  local st = redis.call('HGET', bkey, 'status')
  if st == 'paused' then
    redis.call('HSET', bkey, 'total', submitted, 'whole', 1, 'paused_from', 'queued', 'queued_at', now)
  else
    redis.call('HSET', bkey, 'total', submitted, 'whole', 1, 'status', 'queued', 'queued_at', now)
    sl_set_status(prefix, batch, st, 'queued')
  end
  sl_log(bkey, 'whole', 'total', submitted)
  sl_maybe_finish(bkey, now)
else
  redis.call('HSET', bkey, 'total', submitted, 'updated_at', now)
end
sl_publish(prefix, queue, batch, now)
return submitted
