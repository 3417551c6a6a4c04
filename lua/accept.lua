-- sluice_v1_accept: admits entries a worker received from its blocking
-- XREADGROUP (which cannot run inside a script).
-- KEYS[1..3]  streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group    ARGV[2] key prefix P    ARGV[3] queue name
-- ARGV[4..]   per entry: priority (1-3), stream entry id, batch id, item index,
--             attempt, item JSON
-- returns     the entries that may run, in the same flat form as fetch
local group = ARGV[1]
local ctx = {prefix = ARGV[2], status = {}, touched = {}, started = {}}
local out = {}
for i = 4, #ARGV, 6 do
  local s = tonumber(ARGV[i])
  if sl_admit(ctx, KEYS[s], group, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]) then
    out[#out + 1] = s
    for k = 1, 5 do out[#out + 1] = ARGV[i + k] end
  end
end
sl_admit_done(ctx, ARGV[3])
return out
