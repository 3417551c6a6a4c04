-- sluice_v1_quota: charges a tenant's submit quotas (sluice serve), both
-- or neither: a token bucket (GCRA, on the server's clock, like the rate
-- limits of _lib.lua) counted in batches, and one counted in items.
-- KEYS[1]     the batches bucket  P..'quota:TENANT:batches'
-- KEYS[2]     the items bucket    P..'quota:TENANT:items'
-- ARGV[1]     batches: emission interval, us (0: no batch quota)
-- ARGV[2]     batches: burst (how many at once)
-- ARGV[3]     batches to charge (1)
-- ARGV[4]     items: emission interval, us (0: no item quota)
-- ARGV[5]     items: burst
-- ARGV[6]     items to charge
-- returns     {0} when charged; else {WAIT_MS, 'batches' or 'items'}: how
--             long until the charge would fit, and nothing is charged
-- errors      'SLUICE_ARGS' (malformed arguments; nothing written)
--
-- A charge of n fits when the bucket's theoretical arrival time, moved on
-- by n intervals, is at most `burst` intervals ahead of now; a charge that
-- does not fit at all (n over the burst) answers the wait for the burst to
-- refill, and the caller says it can never fit.
local nums = {}
for i = 1, 6 do
  nums[i] = tonumber(ARGV[i])
  if not string.match(ARGV[i] or '', '^%d+$') then
    return redis.error_reply('SLUICE_ARGS quota arguments must be non-negative integers')
  end
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000000 + tonumber(tm[2])
local new = {}
local checks = {{KEYS[1], nums[1], nums[2], nums[3], 'batches'}, {KEYS[2], nums[4], nums[5], nums[6], 'items'}}
for i, c in ipairs(checks) do
  local key, t, burst, n, what = c[1], c[2], c[3], c[4], c[5]
  if t > 0 and n > 0 then
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local new_tat = tat + n * t
    if new_tat - now > burst * t then
      return {math.ceil((new_tat - burst * t - now) / 1000), what}
    end
    new[i] = new_tat
  end
end
for i, c in ipairs(checks) do
  if new[i] then
    redis.call('SET', c[1], string.format('%.0f', new[i]), 'PX', math.floor((new[i] - now) / 1000) + 1000)
  end
end
return {0}
