-- ---- Items at submit: the README's item object, checked field by field ----
--
-- sluice_v1_submit takes the item objects a producer writes (the JSON Lines
-- format of the README), in any formatting: field order, whitespace,
-- escapes in names and number spellings such as 1e3 or 30000.0 do not
-- change how an item runs, and a field given twice is refused. Every field
-- is checked as src/item.c checks it, in the same order and with the same
-- message, so the CLI and the function refuse the same items. The payload
-- is kept byte for byte; the payloads of the built-in types (http, sleep)
-- are checked by the CLI and again by the worker before it runs them.
--
-- What is stored (the stream entry's `d`) is the canonical item, written
-- here, or written by sluice's C client and verified here byte for byte
-- (sl_item_check, sl_item_verify):
--
--   {"type":"T"[,"rate_key":"K"],"timeout_ms":N,"max_attempts":N,"backoff_ms":N,
--    "backoff_max_ms":N,"id":"ID","payload":<as given>}
--
-- so the functions read the type, rate key and timeout with one anchored
-- match at the start (sl_item_head), never by searching the text.

-- The limits of include/sluice/sluice.h.
local SL_ITEM_MAX_LINE = 1048576
local SL_ITEM_MAX_PAYLOAD = 524288
local SL_ITEM_MAX_DEPTH = 64
local SL_ITEM_MAX_ID = 128
local SL_ITEM_MAX_MEMBERS = 32
local SL_NAME_MAX = 64
local SL_DEDUPE_MAX = 256
local SL_ITEM_KNOWN = 'id, type, payload, priority, max_attempts, timeout_ms, backoff_ms, backoff_max_ms, ' ..
                      'rate_key, run_at, delay_ms, dedupe'
local SL_PRIORITIES = {high = 1, normal = 2, low = 3}

-- A raw JSON number token as an exact integer in [lo, hi]: 5, 5.0, 5e0 and
-- 0.5e1 all are 5. Returns the value; false when it is an integer outside
-- the range (or too large to tell); nil when it is not an integer (5.5,
-- 1e-3) or not a number. src/jsonstr.c's sl__json_int reads the same way.
local function sl_json_int(v, lo, hi)
  local neg, int, frac, exp = string.match(v, '^(%-?)(%d+)%.?(%d*)[eE]?([+-]?%d*)$')
  if not neg then return nil end
  local digits = string.gsub(int .. frac, '^0+', '')
  local e = (tonumber(exp) or 0) - #frac
  if digits == '' then return (0 >= lo and 0 <= hi) and 0 or false end
  local zeros = string.match(digits, '0*$')
  digits = string.sub(digits, 1, #digits - #zeros)
  e = e + #zeros
  if e < 0 then return nil end
  if #digits + e > 16 then return false end
  local n = tonumber(digits) * 10 ^ e
  if neg == '-' then n = -n end
  if n < lo or n > hi then return false end
  return n
end

-- Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar.
local function sl_days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local SL_MONTHS = {'January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September',
                   'October', 'November', 'December'}
local SL_MONTH_DAYS = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

-- An RFC 3339 time ("2026-11-23T10:00:00Z", "...T10:00:00.250+02:00") as
-- ms since the epoch; or nil and why not (src/item.c, sl__rfc3339_check).
local function sl_rfc3339(s)
  local y, mo, d, h, mi, sec, rest = string.match(s, '^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$')
  if not y or #s < 20 then return nil, 'not of the form 2026-11-23T10:00:00Z' end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if y < 1970 or y > 9999 then return nil, string.format('year %04d is outside 1970-9999', y) end
  if mo < 1 or mo > 12 then return nil, string.format('month %02d does not exist', mo) end
  local dim = SL_MONTH_DAYS[mo]
  if mo == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then dim = 29 end
  if d < 1 or d > dim then return nil, string.format('%s %d has %d days, not %d', SL_MONTHS[mo], y, dim, d) end
  if h > 23 or mi > 59 or sec > 59 then return nil, string.format('%02d:%02d:%02d is not a time of day', h, mi, sec) end
  local frac_ms = 0
  if string.sub(rest, 1, 1) == '.' then
    local digits = string.match(rest, '^%.(%d*)')
    if digits == '' then return nil, "a '.' needs digits after it" end
    frac_ms = tonumber(string.sub(digits .. '00', 1, 3))
    rest = string.sub(rest, #digits + 2)
  end
  local off = 0
  local c = string.sub(rest, 1, 1)
  if c == 'Z' or c == 'z' then
    rest = string.sub(rest, 2)
  else
    local sign, oh, om = string.match(rest, '^([+-])(%d%d):(%d%d)')
    if not sign then return nil, 'it needs an offset: Z or +HH:MM' end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil, 'offset ' .. string.sub(rest, 1, 6) .. ' is outside -23:59..+23:59' end
    off = (sign == '-' and -1 or 1) * (oh * 3600 + om * 60)
    rest = string.sub(rest, 7)
  end
  if rest ~= '' then return nil, 'unexpected text after the offset' end
  return ((sl_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - off) * 1000 + frac_ms
end

-- What src/item.c calls a value's kind, for messages.
local function sl_json_kind(v)
  local c = string.sub(v, 1, 1)
  if c == '{' then return 'an object' end
  if c == '[' then return 'an array' end
  if c == '"' then return 'a string' end
  if c == 't' or c == 'f' then return 'a boolean' end
  if c == 'n' then return 'null' end
  return 'a number'
end

local function sl_name_valid(s)
  return #s >= 1 and #s <= SL_NAME_MAX and not string.find(s, '[^%w_.:-]')
end

-- The first 40 bytes of a raw value, for messages (as src/item.c cuts it).
local function sl_cut40(v)
  return string.sub(v, 1, 40)
end

-- Reads one item object `text`, the item at position `pos` of its batch
-- (from 1, its id when it has none). Returns a table {id, prio (1-3),
-- start_at or delay (ms), dedupe, d (canonical)}; or nil and the message,
-- which names the field (src/item.c's text, word for word).
local function sl_item_read(text, pos)
  if #text > SL_ITEM_MAX_LINE then
    return nil, string.format('line is %d bytes, over the limit of %d', #text, SL_ITEM_MAX_LINE)
  end
  if string.sub(text, 1, 3) == '\239\187\191' then
    return nil, 'invalid JSON at column 1: a UTF-8 byte order mark; save the file without it'
  end
  local m = {}
  local at, why = sl_json_check(text, SL_ITEM_MAX_DEPTH, m)
  if at then
    if why == 'nesting deeper than the limit' then
      return nil, string.format('invalid JSON at column %d: nesting deeper than %d levels', at + 1, SL_ITEM_MAX_DEPTH)
    end
    return nil, string.format('invalid JSON at column %d: %s', at + 1, why)
  end
  if string.sub(text, sl_json_skip_ws(text, 1), sl_json_skip_ws(text, 1)) ~= '{' then
    return nil, 'an item must be a JSON object, like {"type":"noop","payload":{}}'
  end
  if #m > 2 * SL_ITEM_MAX_MEMBERS then
    return nil, string.format('an item has at most %d fields', SL_ITEM_MAX_MEMBERS)
  end
  local f = {}
  local prio, attempts, timeout, backoff, backoff_max = 2, 1, 30000, 1000, 60000
  local start_at, delay, has_start = 0, 0, false
  for k = 1, #m, 2 do
    local key, v = m[k], m[k + 1]
    local c = string.sub(v, 1, 1)
    local n
    if key == 'id' then
      if c ~= '"' and c ~= '-' and not string.find(c, '%d') then
        return nil, 'field "id": expected a string or an integer, got ' .. sl_json_kind(v)
      end
    elseif key == 'type' or key == 'payload' then
      -- checked below, in src/item.c's order
    elseif key == 'priority' then
      prio = c == '"' and SL_PRIORITIES[sl_json_unquote(v, string.find(v, '\\', 1, true))]
      if not prio then
        return nil, 'field "priority": unknown priority ' .. sl_cut40(v) .. ' (expected "high", "normal" or "low")'
      end
    elseif key == 'max_attempts' then
      attempts = sl_json_int(v, 1, 1000)
      if not attempts then return nil, 'field "max_attempts": expected an integer from 1 to 1000, got ' .. sl_cut40(v) end
    elseif key == 'timeout_ms' then
      timeout = sl_json_int(v, 1, 86400000)
      if not timeout then
        return nil, 'field "timeout_ms": expected an integer from 1 to 86400000 (ms), got ' .. sl_cut40(v)
      end
    elseif key == 'backoff_ms' or key == 'backoff_max_ms' then
      n = sl_json_int(v, 0, 86400000)
      if not n then
        return nil, 'field "' .. key .. '": expected an integer from 0 to 86400000 (ms), got ' .. sl_cut40(v)
      end
      if key == 'backoff_ms' then backoff = n else backoff_max = n end
    elseif key == 'rate_key' then
      if c ~= '"' or not sl_name_valid(sl_json_unquote(v, string.find(v, '\\', 1, true))) then
        return nil, string.format('field "rate_key": expected a limit name of 1-%d characters [A-Za-z0-9_.:-], got %s',
                                  SL_NAME_MAX, sl_cut40(v))
      end
    elseif key == 'run_at' then
      local why2 = 'not a string'
      if c == '"' then start_at, why2 = sl_rfc3339(sl_json_unquote(v, string.find(v, '\\', 1, true))) end
      if c ~= '"' or not start_at then
        return nil, 'field "run_at": expected an RFC 3339 time like "2026-11-23T10:00:00Z", got ' .. sl_cut40(v) ..
                    ': ' .. why2
      end
      has_start = true
    elseif key == 'delay_ms' then
      delay = sl_json_int(v, 0, 31536000000)
      if not delay then
        return nil, 'field "delay_ms": expected an integer from 0 to 31536000000 (ms), got ' .. sl_cut40(v)
      end
      has_start = true
    elseif key == 'dedupe' then
      if c ~= '"' then return nil, 'field "dedupe": expected a string key, got ' .. sl_json_kind(v) end
    else
      return nil, 'field "' .. string.sub(key, 1, 40) .. '": unknown field (known: ' .. SL_ITEM_KNOWN .. ')'
    end
    f[key] = v
  end
  if start_at ~= 0 and delay ~= 0 then return nil, 'field "delay_ms": give run_at or delay_ms, not both' end
  local tv = f.type
  if not tv then return nil, 'field "type": missing (which handler runs the item, e.g. "http")' end
  local ty = string.sub(tv, 1, 1) == '"' and sl_json_unquote(tv, string.find(tv, '\\', 1, true))
  if not ty or not sl_name_valid(ty) then
    return nil, string.format('field "type": expected a name of 1-%d characters [A-Za-z0-9_.:-], got %s',
                              SL_NAME_MAX, sl_cut40(tv))
  end
  local payload = f.payload
  if not payload then return nil, 'field "payload": missing (use {} or null for none)' end
  if #payload > SL_ITEM_MAX_PAYLOAD then
    return nil, string.format('field "payload": %d bytes, over the limit of %d', #payload, SL_ITEM_MAX_PAYLOAD)
  end
  -- The id: a string as given, an integer as its decimal text, or the position.
  local id = tostring(pos)
  local iv = f.id
  if iv and string.sub(iv, 1, 1) == '"' then
    id = sl_json_unquote(iv, string.find(iv, '\\', 1, true))
    if #id > SL_ITEM_MAX_ID then
      return nil, string.format('field "id": %d bytes, over the limit of %d', #id, SL_ITEM_MAX_ID)
    end
    if id == '' then return nil, 'field "id": empty' end
    if string.find(id, '%z') then return nil, 'field "id": must not contain \\u0000' end
  elseif iv then
    local n = sl_json_int(iv, -9007199254740991, 9007199254740991)
    if not n then return nil, 'field "id": an integer id must be exact and below 2^53; use a string' end
    id = string.format('%.0f', n)
  end
  local dedupe
  if f.dedupe then
    dedupe = sl_json_unquote(f.dedupe, string.find(f.dedupe, '\\', 1, true))
    if dedupe == '' or #dedupe > SL_DEDUPE_MAX or string.find(dedupe, '%z') then
      return nil, string.format('field "dedupe": expected a key of 1-%d bytes (no \\u0000)', SL_DEDUPE_MAX)
    end
  end
  local rk = f.rate_key and sl_json_unquote(f.rate_key, string.find(f.rate_key, '\\', 1, true))
  local d = '{"type":"' .. ty .. '"' .. (rk and (',"rate_key":"' .. rk .. '"') or '') ..
            string.format(',"timeout_ms":%d,"max_attempts":%d,"backoff_ms":%d,"backoff_max_ms":%d,"id":',
                          timeout, attempts, backoff, backoff_max) ..
            sl_json_quote(id) .. ',"payload":' .. payload .. '}'
  if not has_start then start_at, delay = 0, 0 end
  return {id = id, prio = prio, start_at = start_at, delay = delay, dedupe = dedupe, d = d}
end

-- Checks that d is a canonical item exactly as sl_item_read writes it
-- (sluice's C client sends items already in this form). Returns nil when
-- it is, else what is wrong. The payload is not looked into: the worker
-- checks it before it runs the item.
local function sl_item_check(d)
  local ty, rk, p = string.match(d, '^{"type":"([%w_.:-]+)","rate_key":"([%w_.:-]+)"()')
  if not ty then ty, p = string.match(d, '^{"type":"([%w_.:-]+)"()') end
  if not ty then return 'it does not begin {"type":"NAME"' end
  if #ty > SL_NAME_MAX or (rk and #rk > SL_NAME_MAX) then return 'a type or rate key is over 64 bytes' end
  local t, a, b, bm, q = string.match(d, '^,"timeout_ms":([1-9]%d*),"max_attempts":([1-9]%d*),' ..
                                      '"backoff_ms":(%d+),"backoff_max_ms":(%d+),"id":()', p)
  if not t then return 'timeout_ms, max_attempts, backoff_ms, backoff_max_ms and id do not follow in this order' end
  if tonumber(t) > 86400000 or tonumber(a) > 1000 or tonumber(b) > 86400000 or tonumber(bm) > 86400000 or
     (#b > 1 and string.sub(b, 1, 1) == '0') or (#bm > 1 and string.sub(bm, 1, 1) == '0') then
    return 'a number is out of range or not written in its shortest form'
  end
  if string.byte(d, q) ~= 34 then return 'the id is not a string' end
  local e, esc = sl_json_string(d, q)
  if not e then return 'the id is not a valid JSON string' end
  if e - q - 2 > SL_ITEM_MAX_ID and #sl_json_unquote(string.sub(d, q, e - 1), esc) > SL_ITEM_MAX_ID then
    return 'the id is over ' .. SL_ITEM_MAX_ID .. ' bytes'
  end
  if string.sub(d, e, e + 10) ~= ',"payload":' or string.sub(d, -1) ~= '}' or #d < e + 12 then
    return 'the payload does not follow the id'
  end
  return nil
end

-- sl_item_check, fast for a chunk of items that share their head (type,
-- rate key and numbers), as a chunk from one file mostly does. heads
-- (one table per call) remembers the heads, up to and including ',"id":"',
-- already checked. The head holds no quote of its own, so the first
-- ',"id":"' of a canonical item ends it; a head that is not canonical is
-- not in heads and goes through the full check. An id of printable ASCII
-- without '"' or '\\' is checked with one match; any other goes through
-- the full check. (About 0.4 us an item instead of 1.9 us on Redis 7.0.)
local function sl_item_verify(d, heads)
  local q = string.find(d, ',"id":"', 1, true)
  if not q or not heads[string.sub(d, 1, q + 6)] then
    local bad = sl_item_check(d)
    if bad or not q then return bad end
    heads[string.sub(d, 1, q + 6)] = true
    return nil
  end
  local _, e = string.find(d, '^[]-~ !#-[]*","payload":.', q + 7)
  if e and e - q - 7 <= SL_ITEM_MAX_ID + 12 and e < #d and string.byte(d, -1) == 125 then return nil end
  return sl_item_check(d)
end
