-- ---- Strict JSON, read exactly as sluice's C side reads it ----
--
-- The submit function takes item objects written by any language, so it
-- cannot trust cjson: Redis's cjson accepts 0x10, 01, +1, invalid UTF-8,
-- raw tabs in strings and lone surrogates, and keeps the last of two equal
-- keys. sl_json_check accepts exactly what src/json.c's strict scanner
-- accepts (RFC 8259: valid UTF-8, no raw control bytes in strings, a key at
-- most once per object, compared by its decoded text, nesting at most
-- `maxdepth` deep) and fails at the same byte with the same message, so a
-- producer hears the same thing from `sluice submit` and from the function.
-- It works a token at a time with anchored string.find, so its cost grows
-- with the number of tokens, not with the length of long strings.

local SL_JSON_ESCAPES = {['"'] = true, ['\\'] = true, ['/'] = true, b = true, f = true, n = true, r = true, t = true}

-- The length of the valid UTF-8 sequence at s[i] (a byte >= 0x80), or 0:
-- overlong forms, surrogates and code points past U+10FFFF are invalid.
local function sl_utf8_seq(s, i)
  local c = string.byte(s, i)
  local n, cp
  if c >= 0xc2 and c <= 0xdf then
    n, cp = 2, c - 0xc0
  elseif c >= 0xe0 and c <= 0xef then
    n, cp = 3, c - 0xe0
  elseif c >= 0xf0 and c <= 0xf4 then
    n, cp = 4, c - 0xf0
  else
    return 0
  end
  for k = 1, n - 1 do
    local b = string.byte(s, i + k)
    if not b or b < 0x80 or b > 0xbf then return 0 end
    cp = cp * 64 + (b - 0x80)
  end
  if (n == 3 and cp < 0x800) or (n == 4 and cp < 0x10000) or cp > 0x10ffff or (cp >= 0xd800 and cp <= 0xdfff) then
    return 0
  end
  return n
end

-- True when run is valid UTF-8. Each valid sequence becomes one ASCII
-- byte (lead bytes tell the length, so no pass can join the bytes of two),
-- and what is left must be ASCII: a few passes in C, not a step per
-- character.
local function sl_utf8_valid(run)
  if not string.find(run, '[\128-\255]') then return true end
  run = string.gsub(run, '[\194-\223][\128-\191]', '.')
  run = string.gsub(run, '\224[\160-\191][\128-\191]', '.')
  run = string.gsub(run, '[\225-\236\238\239][\128-\191][\128-\191]', '.')
  run = string.gsub(run, '\237[\128-\159][\128-\191]', '.')
  run = string.gsub(run, '\240[\144-\191][\128-\191][\128-\191]', '.')
  run = string.gsub(run, '[\241-\243][\128-\191][\128-\191][\128-\191]', '.')
  run = string.gsub(run, '\244[\128-\143][\128-\191][\128-\191]', '.')
  return not string.find(run, '[\128-\255]')
end

-- Scans the string token that starts at s[i] ('"'). Returns the index after
-- its closing quote and whether it holds an escape; or nil, the index of
-- the problem and the message.
local function sl_json_string(s, i)
  local j, esc = i + 1, false
  while true do
    local _, e = string.find(s, '^[^"\\%z\1-\31]*', j)
    if e >= j and not sl_utf8_valid(string.sub(s, j, e)) then
      while true do -- the first invalid byte of the run, for the message
        local _, a = string.find(s, '^[^"\\%z\1-\31\128-\255]*', j)
        j = a + 1
        local n = sl_utf8_seq(s, j)
        if n == 0 then return nil, j, 'invalid UTF-8 in string' end
        j = j + n
      end
    end
    j = e + 1
    local c = string.byte(s, j)
    if c == 34 then return j + 1, esc end
    if not c then return nil, j, 'unterminated string' end
    if c == 92 then
      esc = true
      local x = string.sub(s, j + 1, j + 1)
      if x == 'u' then
        local h = string.match(s, '^%x%x%x%x', j + 2)
        if not h then return nil, j, 'bad \\u escape in string (expected 4 hex digits)' end
        local cp = tonumber(h, 16)
        if cp >= 0xdc00 and cp <= 0xdfff then
          return nil, j, 'a lone UTF-16 surrogate (\\uDC00-\\uDFFF without a high one before it) is not a character'
        end
        if cp >= 0xd800 and cp <= 0xdbff then
          local l = string.match(s, '^\\u(%x%x%x%x)', j + 6)
          local lo = l and tonumber(l, 16)
          if not lo or lo < 0xdc00 or lo > 0xdfff then
            return nil, j, 'a lone UTF-16 surrogate (\\uD800-\\uDBFF without a low one after it) is not a character'
          end
          j = j + 6
        end
        j = j + 6
      elseif x == '' then
        return nil, j, 'unterminated string'
      elseif SL_JSON_ESCAPES[x] then
        j = j + 2
      else
        return nil, j, 'bad escape in string'
      end
    else
      return nil, j, 'raw control byte inside a string (escape it, e.g. \\n)'
    end
  end
end

-- Scans the number token at s[i]. Returns the index after it, or nil, the
-- index of the problem and the message.
local function sl_json_number(s, i)
  local p = i
  if string.byte(s, p) == 45 then p = p + 1 end
  local c = string.byte(s, p)
  if not c or c < 48 or c > 57 then return nil, p, 'bad number' end
  local _, e
  if c == 48 then
    p = p + 1
  else
    _, e = string.find(s, '^%d+', p)
    p = e + 1
  end
  if string.byte(s, p) == 46 then
    _, e = string.find(s, '^%d+', p + 1)
    if not e then return nil, p + 1, "bad number (digits expected after '.')" end
    p = e + 1
  end
  c = string.byte(s, p)
  if c == 101 or c == 69 then
    p = p + 1
    c = string.byte(s, p)
    if c == 43 or c == 45 then p = p + 1 end
    _, e = string.find(s, '^%d+', p)
    if not e then return nil, p, 'bad number (digits expected in exponent)' end
    p = e + 1
  end
  return p
end

-- The decoded text of a scanned string token (quotes included).
local function sl_json_unquote(tok, esc)
  if not esc then return string.sub(tok, 2, -2) end
  return cjson.decode(tok) -- exact on a token sl_json_string accepted
end

local function sl_json_skip_ws(s, p)
  local _, e = string.find(s, '^[ \t\n\r]*', p)
  return e + 1
end

local sl_json_value

-- Scans the object or array at s[i]; `close` is the byte that ends it.
-- When `members` is a table, the object's members go there: decoded key,
-- then the raw text of its value.
local function sl_json_container(s, i, close, depth, maxdepth, members)
  if depth > maxdepth then return nil, i, 'nesting deeper than the limit' end
  local obj = close == 125
  local p = sl_json_skip_ws(s, i + 1)
  if string.byte(s, p) == close then return p + 1 end
  local keys, dup = obj and {} or nil, nil
  while true do
    local key, ep, msg
    if obj then
      if string.byte(s, p) ~= 34 then return nil, p, 'expected a string key in object' end
      local q = string.match(s, '^"[^"\\%z\1-\31\128-\255]*"()', p)
      if q then
        key = string.sub(s, p + 1, q - 2)
      else
        local a, b
        q, a, b = sl_json_string(s, p)
        if not q then return nil, a, b end
        key = sl_json_unquote(string.sub(s, p, q - 1), a)
      end
      if keys[key] then
        dup = dup or {p, string.sub(s, p, q - 1)}
      else
        keys[key] = true
      end
      p = string.byte(s, q) == 58 and q or sl_json_skip_ws(s, q)
      if string.byte(s, p) ~= 58 then return nil, p, "expected ':' after object key" end
      p = p + 1
      local c = string.byte(s, p)
      if c == 32 or c == 9 or c == 10 or c == 13 then p = sl_json_skip_ws(s, p) end
    end
    local v0 = p
    -- Plain integers and ASCII strings without escapes, the bulk of most
    -- payloads, in one match (what follows them is checked below);
    -- everything else by sl_json_value.
    local q = string.match(s, '^%-?[1-9]%d*()[^%d.eE]', p) or string.match(s, '^"[^"\\%z\1-\31\128-\255]*"()', p)
    if q then
      p = q
    else
      p, ep, msg = sl_json_value(s, p, depth, maxdepth)
      if not p then return nil, ep, msg end
    end
    if members then
      members[#members + 1] = key
      members[#members + 1] = string.sub(s, v0, p - 1)
    end
    local c = string.byte(s, p)
    if c == 32 or c == 9 or c == 10 or c == 13 then
      p = sl_json_skip_ws(s, p)
      c = string.byte(s, p)
    end
    if not c then return nil, p, obj and 'unterminated object' or 'unterminated array' end
    if c == close then
      if dup then return nil, dup[1], 'key ' .. string.sub(dup[2], 1, 60) .. ' appears twice in one object' end
      return p + 1
    end
    if c ~= 44 then
      return nil, p, obj and "expected ',' or '}' in object" or "expected ',' or ']' in array"
    end
    p = p + 1
    c = string.byte(s, p)
    if c == 32 or c == 9 or c == 10 or c == 13 then p = sl_json_skip_ws(s, p) end
  end
end

sl_json_value = function(s, p, depth, maxdepth, members)
  local c = string.byte(s, p)
  if not c then return nil, p, 'unexpected end of input' end
  if c == 123 then return sl_json_container(s, p, 125, depth + 1, maxdepth, members) end
  if c == 91 then return sl_json_container(s, p, 93, depth + 1, maxdepth) end
  if c == 34 then
    local q, e, msg = sl_json_string(s, p)
    if not q then return nil, e, msg end
    return q
  end
  if c == 116 or c == 102 or c == 110 then
    local w = c == 116 and 'true' or (c == 102 and 'false' or 'null')
    if string.sub(s, p, p + #w - 1) ~= w then return nil, p, 'unexpected character' end
    return p + #w
  end
  if c == 45 or (c >= 48 and c <= 57) then return sl_json_number(s, p) end
  if c < 32 then return nil, p, 'raw control byte' end
  if c >= 128 and sl_utf8_seq(s, p) == 0 then return nil, p, 'invalid UTF-8' end
  return nil, p, 'unexpected character'
end

-- Checks that s is exactly one JSON value (whitespace around it allowed).
-- Returns nil when it is; else the byte offset of the problem (from 0,
-- like src/json.c) and the message. When the value is an object and
-- `members` is a table, its top-level members go there (sl_json_container).
local function sl_json_check(s, maxdepth, members)
  local p = sl_json_skip_ws(s, 1)
  local q, e, msg = sl_json_value(s, p, 0, maxdepth, members)
  if not q then return e - 1, msg end
  q = sl_json_skip_ws(s, q)
  local c = string.byte(s, q)
  if c then
    return q - 1, c < 32 and 'raw control byte after the value' or 'trailing characters after the JSON value'
  end
  return nil
end

-- The JSON string of raw bytes s, escaped as src/jsonstr.c writes it: '"'
-- and '\' escaped, \n \r \t, other control bytes as \u00XX, the rest as is
-- (s is valid UTF-8 here).
local SL_JSON_QUOTE = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
local function sl_json_quote(s)
  return '"' .. string.gsub(s, '[%z\1-\31"\\]', function(c)
    return SL_JSON_QUOTE[c] or string.format('\\u%04x', string.byte(c))
  end) .. '"'
end
