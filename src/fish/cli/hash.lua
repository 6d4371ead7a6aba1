-- FNV-1a (32 bits) in plain Lua arithmetic, so the same code gives the same
-- hash on 5.1/LuaJIT (doubles, no bit operators) and on 5.3+ (integers).
--
-- batch keeps one hash per row: of the canonical request the row sends. It
-- answers one question, "is this the request that made the file on disk?",
-- for one row at a time, against that row's own previous request. A change
-- slips through only if the new request hashes to exactly the old value,
-- about 1 in 4 billion per edit; the state also keeps the length of the
-- canonical request, which an edit usually changes too. It is not a defence
-- against an adversary, and need not be: whoever can edit the manifest can
-- delete the audio files as well.
local hash = {}

local OFFSET = 2166136261
local TWO_32 = 4294967296
local TWO_24 = 16777216

-- a XOR b for bytes, as one table lookup: XOR[a * 256 + b]. Built from the
-- XOR of 4-bit halves, so that making it costs 65,536 lookups rather than
-- half a million bit steps (about 60 ms at every start of batch on 5.4).
local XOR
local function xor_table()
  local nibble = {}
  for a = 0, 15 do
    for b = 0, 15 do
      local x, bit, ra, rb = 0, 1, a, b
      for _ = 1, 4 do
        if ra % 2 ~= rb % 2 then x = x + bit end
        ra, rb, bit = (ra - ra % 2) / 2, (rb - rb % 2) / 2, bit * 2
      end
      nibble[a * 16 + b] = x
    end
  end
  local t = {}
  for a = 0, 255 do
    local high, low = math.floor(a / 16) * 16, a % 16 * 16
    for b = 0, 255 do
      t[a * 256 + b] = nibble[high + math.floor(b / 16)] * 16 + nibble[low + b % 16]
    end
  end
  return t
end

-- Continue a hash `h` (default: FNV's offset basis) over the bytes of `s`.
-- h * 16777619 mod 2^32 is worked out as h * 403 + (h mod 2^8) * 2^24,
-- because 16777619 = 2^24 + 403: every step stays below 2^53, exact in a
-- double.
function hash.fnv1a(s, h)
  XOR = XOR or xor_table()
  h = h or OFFSET
  for i = 1, #s do
    local low = h % 256
    h = h - low + XOR[low * 256 + s:byte(i)]
    h = (h * 403 + (h % 256) * TWO_24) % TWO_32
  end
  return h
end

function hash.hex(h)
  return ("%08x"):format(h)
end

-- The canonical form of a request: each field as <length>:<bytes>; so no
-- two different field lists give the same string.
function hash.canonical(fields)
  local parts = {}
  for i, value in ipairs(fields) do
    value = tostring(value)
    parts[i] = #value .. ":" .. value .. ";"
  end
  return table.concat(parts)
end

return hash
