-- sluice_v1_complete: records the final state of finished items, exactly once.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] key prefix P    ARGV[3] queue name
-- ARGV[4..]   per item: priority (1-3), stream entry id, batch id, item index,
--             outcome ('s' succeeded, 'f' failed), result JSON (one results line)
-- returns     an array with one integer per item: 1 if this call recorded it,
--             0 if it had been recorded before (a second completion changes nothing)
-- errors      'SLUICE_ARGS' (malformed arguments; nothing was written)
--
-- The guard is HSETNX on the batch's results hash: only the first completion
-- of an item writes its result and moves the counters. The stream entry is
-- acknowledged and deleted either way, so finished items leave the streams.
-- One event per touched batch carries the absolute counters after the call.
local group, prefix, queue = ARGV[1], ARGV[2], ARGV[3]
local now = sl_now_ms()
local acks = {{}, {}, {}}
local counts, exists = {}, {}
local out = {}

if (#ARGV - 3) % 6 ~= 0 then
  return redis.error_reply('SLUICE_ARGS completions come in groups of 6')
end
for i = 4, #ARGV, 6 do
  local s, outcome = ARGV[i], ARGV[i + 4]
  if (s ~= '1' and s ~= '2' and s ~= '3') or (outcome ~= 's' and outcome ~= 'f') then
    return redis.error_reply('SLUICE_ARGS priority must be 1-3 and outcome s or f')
  end
end
for i = 4, #ARGV, 6 do
  local s, eid, batch, idx, outcome, res = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2],
                                          ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local bkey = prefix .. 'b:' .. batch
  local ack = acks[s]
  ack[#ack + 1] = eid
  if exists[batch] == nil then
    exists[batch] = redis.call('EXISTS', bkey) == 1
  end
  local first = 0
  if exists[batch] and redis.call('HSETNX', bkey .. ':r', idx, res) == 1 then
    first = 1
    local c = counts[batch]
    if not c then
      c = {s = 0, f = 0}
      counts[batch] = c
    end
    c[outcome] = c[outcome] + 1
  end
  out[#out + 1] = first
end
for s = 1, 3 do
  if #acks[s] > 0 then
    redis.call('XACK', KEYS[s], group, unpack(acks[s]))
    redis.call('XDEL', KEYS[s], unpack(acks[s]))
  end
end
for batch, c in pairs(counts) do
  local bkey = prefix .. 'b:' .. batch
  redis.call('HINCRBY', bkey, 'done', c.s + c.f)
  if c.s > 0 then redis.call('HINCRBY', bkey, 'succeeded', c.s) end
  if c.f > 0 then redis.call('HINCRBY', bkey, 'failed', c.f) end
  sl_maybe_finish(bkey, now)
  sl_publish(prefix, queue, batch, now)
end
return out
