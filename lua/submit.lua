-- sluice_v1_submit: writes one chunk of a batch, atomically.
-- KEYS[1]     batch hash      P..'b:'..BATCH
-- KEYS[2..4]  streams         P..'s:high', P..'s:normal', P..'s:low'
-- KEYS[5]     batch index     P..'batches' (sorted set, score = created_at)
-- ARGV[1]     batch id        ARGV[2] queue name    ARGV[3] key prefix P
-- ARGV[4]     chunk number, from 0
-- ARGV[5]     '1' if this is the last chunk, else '0'
-- ARGV[6]     batch name (chunk 0 only; may be '')
-- ARGV[7]     consumer group name
-- ARGV[8..]   per item: priority (1 high, 2 normal, 3 low), item index, item JSON
-- returns     the number of items of the batch written so far
-- errors      'SLUICE_EXISTS' (chunk 0 of an existing batch),
--             'SLUICE_CANCELLED' (the batch was cancelled meanwhile),
--             'SLUICE_ORDER' (a chunk is missing before this one)
--
-- The batch is `submitting` (whole = 0) until the last chunk, which sets
-- total, whole = 1 and status `queued` in the same call. A chunk sent again
-- after a lost reply is recognized by its number and not written twice.
local bkey, batch, queue, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local seq, last = tonumber(ARGV[4]), ARGV[5] == '1'
local now = sl_now_ms()

if seq == 0 then
  if redis.call('EXISTS', bkey) == 1 then
    local chunks = redis.call('HGET', bkey, 'chunks')
    if chunks and tonumber(chunks) >= 1 then
      return tonumber(redis.call('HGET', bkey, 'submitted'))
    end
    return redis.error_reply('SLUICE_EXISTS batch ' .. batch .. ' exists')
  end
  for i = 2, 4 do
    local e = sl_ensure_group(KEYS[i], ARGV[7])
    if e then return e end
  end
  redis.call('HSET', bkey, 'id', batch, 'queue', queue, 'name', ARGV[6], 'status', 'submitting',
             'whole', 0, 'total', 0, 'submitted', 0, 'chunks', 0, 'done', 0, 'succeeded', 0,
             'failed', 0, 'cancelled', 0, 'created_at', now)
  redis.call('ZADD', KEYS[5], now, batch)
else
  local v = redis.call('HMGET', bkey, 'status', 'chunks', 'submitted')
  if not v[1] then
    return redis.error_reply('SLUICE_ORDER batch ' .. batch .. ' has no first chunk')
  end
  if v[1] == 'cancelled' then
    return redis.error_reply('SLUICE_CANCELLED batch ' .. batch .. ' was cancelled')
  end
  if tonumber(v[2]) > seq then return tonumber(v[3]) end
  if tonumber(v[2]) < seq then
    return redis.error_reply('SLUICE_ORDER batch ' .. batch .. ' chunk ' .. seq .. ' before ' .. v[2])
  end
end

local n = 0
for i = 8, #ARGV, 3 do
  redis.call('XADD', KEYS[1 + tonumber(ARGV[i])], '*', 'b', batch, 'i', ARGV[i + 1], 'a', 1,
             'd', ARGV[i + 2])
  n = n + 1
end
local submitted = redis.call('HINCRBY', bkey, 'submitted', n)
redis.call('HINCRBY', bkey, 'chunks', 1)
if last then
  redis.call('HSET', bkey, 'total', submitted, 'whole', 1, 'status', 'queued', 'queued_at', now)
  sl_maybe_finish(bkey, now)
  sl_publish(prefix, queue, batch, now)
else
  redis.call('HSET', bkey, 'total', submitted, 'updated_at', now)
end
return submitted
