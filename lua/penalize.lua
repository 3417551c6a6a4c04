-- sluice_v1_penalize: pushes a rate limit back for the whole fleet, after
-- an API answered "too many requests, retry after N ms".
-- KEYS[1]     P..'limits'     KEYS[2] the bucket P..'rl:'..NAME
-- ARGV[1]     limit name      ARGV[2] how long nothing may start, ms
-- returns     1 if the limit has a rate and was pushed back, else 0
--
-- The bucket's TAT moves to at least now + ms + (burst - 1) * T, so the
-- next reservation of any worker starts no earlier than now + ms (GCRA:
-- allow_at = TAT + T - burst * T). A TAT already later is kept.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local t, burst = string.match(v, '^(%d+) (%d+)')
if not t or tonumber(t) <= 0 then return 0 end
t, burst = tonumber(t), tonumber(burst)
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local want = now + tonumber(ARGV[2]) * 1000 + (burst - 1) * t
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < want then
  redis.call('SET', KEYS[2], string.format('%.0f', want), 'PX', math.floor((want - now) / 1000) + 1000)
end
return 1
