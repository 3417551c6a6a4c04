-- sluice_v1_penalize: pushes a rate limit back for the whole fleet, after
-- an API answered "too many requests, retry after N ms".
-- KEYS[1]     P..'limits'     KEYS[2] the bucket P..'rl:'..NAME
-- ARGV[1]     limit name      ARGV[2] how long nothing may start, ms
-- ARGV[3]     key prefix P (optional): with an empty name, the queue's
--             default rate key (P..'config' rate_key) is pushed back
-- returns     1 if the limit has a rate and was pushed back, else 0
--
-- The bucket's TAT moves to at least now + ms + (burst - 1) * T, so the
-- next reservation of any worker starts no earlier than now + ms (GCRA:
-- allow_at = TAT + T - burst * T). A TAT already later is kept.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local name, bucket = ARGV[1], KEYS[2]
if name == '' and ARGV[3] then
  name = redis.call('HGET', ARGV[3] .. 'config', 'rate_key')
  if not name then return 0 end
  bucket = ARGV[3] .. 'rl:' .. name
end
local v = redis.call('HGET', KEYS[1], name)
if not v then return 0 end
local t, burst = string.match(v, '^(%d+) (%d+)')
if not t or tonumber(t) <= 0 then return 0 end
t, burst = tonumber(t), tonumber(burst)
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local want = now + tonumber(ARGV[2]) * 1000 + (burst - 1) * t
local tat = tonumber(redis.call('GET', bucket) or '0')
if tat < want then
  redis.call('SET', bucket, string.format('%.0f', want), 'PX', math.floor((want - now) / 1000) + 1000)
end
return 1
