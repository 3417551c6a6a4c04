-- sluice_v1_release: gives back items a worker took but will not run (it is
-- stopping), so another worker can start them at once instead of after the
-- visibility timeout.
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] consumer name (the caller)
-- ARGV[3..]   per item: priority (1-3), stream entry id
-- returns     the number of items given back
--
-- Each entry still owned by the caller is appended again to its stream (a
-- new id, at the end) and the old one acknowledged and deleted, in one step.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group, me = ARGV[1], ARGV[2]
local n = 0
local gone = {} -- their claims (P..'claims')
local ctx = {prefix = string.sub(KEYS[1], 1, -7)} -- P..'s:high' -> P
for i = 3, #ARGV, 2 do
  local s, eid = tonumber(ARGV[i]), ARGV[i + 1]
  local p = redis.call('XPENDING', KEYS[s], group, eid, eid, 1)
  if p[1] and p[1][2] == me then
    local r = redis.call('XRANGE', KEYS[s], eid, eid)
    if r[1] then
      local f = r[1][2]
      sl_lease_return(ctx, KEYS, s, eid, f[8])
      sl_run_drop(ctx.prefix, f[2], s, eid)
      local marked = false
      for k = 9, #f, 2 do
        if f[k] == 'x' then marked = true end
      end
      if not marked then
        f[#f + 1] = 'x' -- given back: admission checks whether it ended meanwhile
        f[#f + 1] = '1'
      end
      redis.call('XADD', KEYS[s], '*', unpack(f))
      n = n + 1
    end
    redis.call('XACK', KEYS[s], group, eid)
    redis.call('XDEL', KEYS[s], eid)
    gone[#gone + 1] = s .. ':' .. eid
  end
end
sl_claims_drop(ctx.prefix, gone)
return n
