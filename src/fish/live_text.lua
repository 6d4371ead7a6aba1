-- Where fish.live's auto_flush cuts text: after each sentence end, so the
-- server synthesises a sentence as soon as its last word has been sent
-- instead of waiting for chunk_length characters (live-tts.md §4, item 8).
--
-- A sentence ends at `.` `!` `?` `。` `！` `？` or a newline. A run of them
-- ("?!", "...") ends one sentence, closing quotes and brackets after it stay
-- with it, and so does the white space that follows. An ASCII `.` `!` `?`
-- ends a sentence only before white space or at the end of the piece: "3.14"
-- and "fish.audio" are not cut. The full-width marks and the newline end a
-- sentence wherever they are (Chinese and Japanese put no space after them).
local live_text = {}

-- Full-width sentence ends, as UTF-8.
local WIDE_ENDS = {
  ["\227\128\130"] = true, -- 。
  ["\239\188\129"] = true, -- ！
  ["\239\188\159"] = true, -- ？
}

-- Closing marks that belong to the sentence before them.
local CLOSERS = {
  ['"'] = true, ["'"] = true, [")"] = true, ["]"] = true,
  ["\226\128\157"] = true, -- ”
  ["\226\128\153"] = true, -- ’
  ["\227\128\141"] = true, -- 」
  ["\227\128\143"] = true, -- 』
  ["\239\188\137"] = true, -- ）
}

-- The sentence end at byte i: its length and whether it needs white space
-- (or the end of the text) after it. nil if there is none.
local function end_at(s, i)
  local b = s:byte(i)
  if b == 46 or b == 33 or b == 63 then return 1, true end -- . ! ?
  if b == 10 then return 1, false end
  if WIDE_ENDS[s:sub(i, i + 2)] then return 3, false end
  return nil
end

local function closer_at(s, i)
  local c = s:sub(i, i)
  if CLOSERS[c] then return 1 end
  if CLOSERS[s:sub(i, i + 2)] then return 3 end
  return nil
end

-- Where the sentence ending at i (a sentence end starts there) stops: the
-- last byte of its marks, closers and trailing white space, or nil if it
-- is not a sentence end after all.
local function sentence_stop(s, i)
  local n = #s
  local needs_space = false
  local j = i
  -- the run of marks
  while j <= n do
    local len, space = end_at(s, j)
    if not len then break end
    needs_space = space -- the last mark of the run decides
    j = j + len
  end
  while j <= n do
    local len = closer_at(s, j)
    if not len then break end
    j = j + len
  end
  if needs_space and j <= n and not s:sub(j, j):find("^%s") then return nil, j end
  local after = s:find("[^ \t\r\n]", j) -- white space stays with the sentence
  return (after or n + 1) - 1
end

-- Cut `text` after each sentence end. Returns a list of pieces in order,
-- each { text = ..., flush = true|false }: flush after a piece that ends a
-- sentence. Only the last piece can have flush = false. Empty text gives
-- an empty list.
function live_text.split(text)
  local pieces = {}
  local start, i, n = 1, 1, #text
  while i <= n do
    local at = text:find("[%.!?\n\227\239]", i)
    if not at then break end
    if end_at(text, at) then
      local stop, resume = sentence_stop(text, at)
      if stop then
        pieces[#pieces + 1] = { text = text:sub(start, stop), flush = true }
        start = stop + 1
        i = start
      else
        i = resume
      end
    else
      i = at + 1
    end
  end
  if start <= n then pieces[#pieces + 1] = { text = text:sub(start), flush = false } end
  return pieces
end

return live_text
