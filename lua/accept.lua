-- sluice_v1_accept: admits entries a worker received from its blocking
-- XREADGROUP (which cannot run inside a script).
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] key prefix P    ARGV[3] queue name
-- ARGV[4]     the caller's visibility timeout, ms (for concurrency leases)
-- ARGV[5..]   per entry: priority (1-3), stream entry id
-- returns     the entries that may run, in the same flat form as fetch
--             (without the leading due time)
--
-- The entries are read again here (XRANGE) rather than passed in, so what
-- runs is what the stream holds.
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
local group = ARGV[1]
local ctx = {prefix = ARGV[2], status = {}, touched = {}, started = {}, vis = tonumber(ARGV[4])}
local out = {}
for i = 5, #ARGV, 2 do
  local s, eid = tonumber(ARGV[i]), ARGV[i + 1]
  local r = redis.call('XRANGE', KEYS[s], eid, eid)
  if r[1] then
    local f = r[1][2]
    ctx.extra = #f > 8
    if sl_admit(ctx, s, KEYS[s], group, eid, f) then
      sl_emit(ctx, out, s, eid, f)
    end
  else
    redis.call('XACK', KEYS[s], group, eid) -- deleted meanwhile
  end
end
sl_admit_done(ctx, ARGV[3])
return out
