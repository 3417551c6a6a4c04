-- sluice_v1_init: makes sure the queue's streams and consumer group exist.
-- KEYS[1..3]  the priority streams P..'s:high', P..'s:normal', P..'s:low'
-- ARGV[1]     consumer group name
-- returns     'OK'
do local denied = sl_worker_only(KEYS[1]) if denied then return denied end end
for i = 1, 3 do
  local e = sl_ensure_group(KEYS[i], ARGV[1])
  if e then return e end
end
return 'OK'
