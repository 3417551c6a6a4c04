-- sluice_v1_webhook_take: claims batch-end webhooks that are due.
-- KEYS[1]     P..'webhooks' (sorted set: batch id -> next attempt, ms)
-- ARGV[1]     key prefix P    ARGV[2] queue name    ARGV[3] lease, ms
-- ARGV[4]     most to take
-- returns     a flat array, 5 per webhook: batch id, URL, attempt (1 for
--             the first try of this end of the batch), the summary JSON to
--             POST, the message id (sl_webhook_id: the webhook-id header)
--
-- The summary (docs/webhook.schema.json) carries the batch's counters and,
-- so a receiver needs no Redis access to learn what failed, up to
-- FAILED_MAX of its failed items (found by HSCAN of its failed-items hash,
-- at most 10 pages: bounded, whatever the batch; sorted by index) with
-- their ids and errors, failed_listed, and the batch's metric sums.
--
-- A claim moves the batch's score a lease into the future, so however many
-- workers race, one of them sends it; if that worker dies the lease lapses
-- and another sends it again, with the same message id (receivers dedupe
-- with webhook-id).
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local key, prefix, queue = KEYS[1], ARGV[1], ARGV[2]
local now = sl_now_ms()
local out = {}
local FAILED_MAX = 100

-- Up to FAILED_MAX failed items of the batch: {{index, id, error}, ...}.
local function failed_items(bkey)
  local idx, cursor, pages = {}, '0', 0
  repeat
    local page = redis.call('HSCAN', bkey .. ':f', cursor, 'COUNT', FAILED_MAX)
    cursor, pages = page[1], pages + 1
    for k = 1, #page[2], 2 do
      if #idx < FAILED_MAX then idx[#idx + 1] = tonumber(page[2][k]) end
    end
  until cursor == '0' or #idx >= FAILED_MAX or pages >= 10
  table.sort(idx)
  local items = {}
  if #idx == 0 then return items end
  local lines = redis.call('HMGET', bkey .. ':r', unpack(idx))
  for k, i in ipairs(idx) do
    local ok, l = pcall(cjson.decode, lines[k] or '')
    if ok and type(l) == 'table' and l.status == 'failed' then
      items[#items + 1] = {index = i, id = l.id, error = l.error, attempts = l.attempts}
    end
  end
  return items
end

-- The batch's metric sums: {NAME = {all = X, final = Y}}, or nil.
local function metric_sums(bkey)
  local m, any = {}, false
  local all = redis.call('HGETALL', bkey)
  for k = 1, #all, 2 do
    local name = string.match(all[k], '^metric:(.+)$')
    if name then
      m[name] = m[name] or {all = 0, final = 0}
      m[name].all = tonumber(all[k + 1]) or 0
      any = true
    end
    name = string.match(all[k], '^final:(.+)$')
    if name then
      m[name] = m[name] or {all = 0, final = 0}
      m[name].final = tonumber(all[k + 1]) or 0
    end
  end
  return any and m or nil
end

for _, batch in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local bkey = prefix .. 'b:' .. batch
  local v = redis.call('HMGET', bkey, 'webhook', 'status', 'total', 'done', 'succeeded', 'failed',
                       'cancelled', 'created_at', 'finished_at', 'name', 'webhook_end')
  if not v[1] then
    redis.call('ZREM', key, batch) -- the batch expired, or has no webhook
  else
    local n = tonumber(v[11])
    if not n then
      -- ended before ends were counted: this is its first message, and
      -- its next end (HINCRBY in sl_maybe_finish) must be the second
      n = 1
      redis.call('HSET', bkey, 'webhook_end', 1)
    end
    redis.call('ZADD', key, now + tonumber(ARGV[3]), batch)
    local attempt = redis.call('HINCRBY', bkey, 'webhook_attempts', 1)
    local s = {event = 'batch.ended', queue = queue, batch = batch, name = v[10] or '',
               status = v[2], total = sl_num(v[3]), done = sl_num(v[4]),
               succeeded = sl_num(v[5]), failed = sl_num(v[6]),
               cancelled = sl_num(v[7]), created_at = sl_num(v[8]),
               finished_at = sl_num(v[9]), ts = now}
    if s.failed > 0 then
      local items = failed_items(bkey)
      if #items > 0 then s.failed_items = items end -- (cjson writes an empty table as {})
      s.failed_listed = #items
    end
    s.metrics = metric_sums(bkey)
    local summary = cjson.encode(s)
    out[#out + 1] = batch
    out[#out + 1] = v[1]
    out[#out + 1] = attempt
    out[#out + 1] = summary
    out[#out + 1] = sl_webhook_id(prefix, batch, n)
  end
end
return out
