---@meta fish
-- A definition file: the bodies are empty and the arguments unused by design.
-- luacheck: ignore 212 241

--- Fish Audio text-to-speech and voice cloning for Lua.
--
-- `local fish = require("fish")` reads `FISH_API_KEY` (and `FISH_BASE_URL`) when a call first needs
-- them. The module's calls use a default client; `fish.new{...}` makes others, which have the same
-- calls: `client.convert{...}`, `client.voices.list{...}`.
--
-- **Errors.** Programming errors (a wrong type, a missing or misspelt field, a file that cannot be
-- opened) raise at once and name the field. Failures of the network or the API return
-- `nil, message, err`: `message` is one line such as
-- `fish.convert: HTTP 402 payment_required: Insufficient API credit`, and `err` is a
-- `fish.Error` for code that branches on `err.kind`. So `assert(fish.convert{...})` raises with that line.
--
-- This file is the API reference and the type definitions for lua-language-server (point
-- `workspace.library` at its folder). It is never loaded at run time.
-- @module fish

--- The module table, `require("fish")`.
---@class fishlib
---@field _NAME string `"fish"`
---@field _VERSION string `"fish 0.1.0"`, as `socket._VERSION` is `"LuaSocket 3.0.0"`
---@field VERSION string `"0.1.0"`, the bare version for comparisons
---@field voices fish.Voices persistent voices, on the default client
---@field asr fish.Asr speech to text, on the default client
---@field account fish.Account credit and package, on the default client
local fish = {}

-- ---- clients and conversion --------------------------------------------------

--- Options of `fish.new`.
---@class fish.Options
---@field api_key string? the API key; default `FISH_API_KEY`. With neither, `fish.new` raises before any network
---@field base_url string? `http://` or `https://` and a host; default `FISH_BASE_URL`, else `https://api.fish.audio`
---@field model string|false|nil the TTS `model` header (default `"s2-pro"`); `false` sends none (fish-speech)
---@field timeout number? seconds for a whole call attempt; default 0, no limit (0 means no limit for every limit)
---@field connect_timeout number? seconds to connect (default 10)
---@field first_byte_timeout number? seconds from sending until the first response byte (default 120)
---@field idle_timeout number? seconds without a byte during a response (default 60); a steady stream is never cut
---@field retries integer? retries of failures that are safe to repeat (default 2)
---@field user_agent string? default `"fish-lua/<version> (<Lua>; libcurl/<version>)"`
---@field ca_file string? a CA bundle to trust instead of the system's (the system's is then not read)
---@field insecure boolean? allow the key over plain http to a non-loopback host (default false)
---@field pause fun(seconds: number)? a host's sleep, e.g. `ngx.sleep`: every wait goes through it
---@field headers table<string, string>? extra request headers for every call, name to value
---@field proxy string|false|nil a proxy URL (https base URLs only); `false`: none; default from the environment
---@field max_json_bytes integer? the most bytes of a JSON answer (default 16 MiB), else kind `"too_large"`

--- Options that every API call takes besides its own fields.
-- The time limits apply to each attempt.
---@class fish.CallOptions
---@field retries integer? retries for this call
---@field timeout number? seconds for the whole attempt
---@field connect_timeout number? seconds to connect
---@field first_byte_timeout number? seconds until the first response byte
---@field idle_timeout number? seconds without a byte during the response
---@field cancel fish.CancelToken? `token:cancel()` ends the call with kind `"canceled"`
---@field headers table<string, string>? extra request headers for this call, name to value
---@field query table<string, any>? extra query parameters; a list value repeats the key
---@field api_key string? the API key for this call only

--- Make a client.
-- Raises on a bad option, a missing key, or a key that would travel over plain http to a
-- non-loopback host (unless `insecure = true`).
---@param opts fish.Options? the options; every one has a default
---@return fish.Client client a new client
function fish.new(opts) end

--- The default client that the module's calls use, made on first use from `FISH_API_KEY` and
-- `FISH_BASE_URL` (and made anew if it was closed). Raises if no key is set.
---@return fish.Client client the default client
function fish.default() end

--- Audio or an image given by path, for `references`, `voices`, `cover_image` and `audio`.
-- The C core reads the file when the request is sent, so its bytes never become a Lua string.
-- Raises at once if the file cannot be opened.
---@param path string the file's path
---@return fish.File file the file
function fish.file(path) end

--- A file given by path, made by `fish.file`.
---@class fish.File
---@field path string the path given
---@field size integer its size in bytes when `fish.file` opened it

--- One reference for one-shot cloning.
---@class fish.Reference
---@field audio string|fish.File the audio bytes, or `fish.file(path)`
---@field text string the exact transcript of the audio

--- Prosody of `fish.convert`.
---@class fish.Prosody
---@field speed number? 0.5 to 2
---@field volume number? in dB
---@field normalize_loudness boolean? loudness normalisation

--- Audio formats of `fish.convert`.
---@alias fish.Format
---| "mp3" # MPEG audio (the server's default)
---| "wav" # RIFF WAVE
---| "pcm" # raw 16-bit PCM
---| "opus" # Ogg Opus

--- Latency modes of `fish.convert`.
---@alias fish.Latency
---| "low" # lowest latency
---| "normal" # the best quality
---| "balanced" # between the two

--- The fields of `fish.convert`: every field of `POST /v1/tts`, and the options of
-- `fish.CallOptions`. Only the fields you set are sent (plus `text`).
---@class fish.ConvertArgs: fish.CallOptions
---@field text string the text to speak (required)
---@field references fish.Reference[]|fish.Reference[][]|nil one-shot cloning; a list of lists for multi-speaker
---@field reference_id string|string[]|nil a saved voice's id (a list for multi-speaker)
---@field format fish.Format? the audio format
---@field sample_rate integer? e.g. 44100
---@field mp3_bitrate integer? 64, 128 or 192
---@field opus_bitrate integer? -1000, 24000, 32000, 48000 or 64000
---@field chunk_length integer? 100 to 300
---@field normalize boolean? text normalisation
---@field latency fish.Latency? the latency mode
---@field prosody fish.Prosody? speed and volume
---@field top_p number? 0 to 1
---@field temperature number? 0 to 1
---@field max_new_tokens integer? advanced
---@field repetition_penalty number? advanced
---@field min_chunk_length integer? advanced
---@field condition_on_previous_chunks boolean? advanced
---@field early_stop_threshold number? advanced
---@field features string[]? e.g. `{ "quality-guard" }`
---@field extra table<string, any>? fields the API adds later; sent after the known ones, sorted by key
---@field model string|false|nil the `model` header for this call; `false` sends none
---@field out string? stream the audio into this file: it is written beside it and renamed over it on success
---@field on_chunk fun(bytes: string)? receive each chunk of audio as it arrives
---@field on_progress fun(sent: integer, send_total: integer?, received: integer, receive_total: integer?)? bytes moved
---@field max_bytes integer? the most audio bytes held in memory (unread, for `on_chunk`), else kind `"too_large"`

--- Text to speech (`POST /v1/tts`), on the default client.
-- Returns the audio bytes; with `out = path`, `path, size` (a failure leaves no file, or the old
-- file untouched); with `on_chunk`, the total number of bytes. A misspelt or unknown field raises
-- at once with its name. Failures return `nil, message, err`.
-- `on_progress(sent, send_total, received, receive_total)` (also taken by `voices.create` and
-- `asr.transcribe`) is called from fish's wait, never from inside libcurl, after each step that moved
-- the transfer, and once more when it ends, with the final counts: `sent` and `send_total` are the
-- request body's bytes (0 for none), `received` and `receive_total` the answer's body bytes (an error
-- page's too). A total is nil while unknown: before the request goes out, and for an answer sent
-- without a length (streamed audio). A retry counts again from zero. If it raises, the transfer is
-- closed and the error propagates, as with `on_chunk`.
---@param args fish.ConvertArgs the text, the voice and the options
---@return string|integer|nil result the audio bytes; the path with `out`; the byte count with `on_chunk`
---@return integer|string|nil size the size in bytes with `out`; on failure, the one-line message
---@return fish.Error? err on failure, the error object
function fish.convert(args) end

-- ---- live text-to-speech -------------------------------------------------------

--- The fields of `fish.live`: every field of `POST /v1/tts` (sent in the session's `start`
-- event, checked and encoded as for `fish.convert`), and the session's own options.
-- The time limits default to the client's: `connect_timeout` (10 s), `first_byte_timeout`
-- (120 s, for `first_audio_timeout`) and `idle_timeout` (60 s); 0 means no limit.
---@class fish.LiveArgs
---@field text string? first text, as if given to `session.send` at once
---@field references fish.Reference[]|fish.Reference[][]|nil one-shot cloning; a list of lists for multi-speaker
---@field reference_id string|string[]|nil a saved voice's id (a list for multi-speaker)
---@field format fish.Format? the audio format; `"pcm"` gives whole 16-bit samples to `on_audio`
---@field sample_rate integer? e.g. 24000 (PCM's `info.rate`; the API's default is 44100)
---@field mp3_bitrate integer? 64, 128 or 192
---@field opus_bitrate integer? -1000, 24000, 32000, 48000 or 64000
---@field chunk_length integer? 100 to 300: text buffered before the server synthesises unasked
---@field normalize boolean? text normalisation
---@field latency fish.Latency? the latency mode
---@field prosody fish.Prosody? speed and volume
---@field top_p number? 0 to 1
---@field temperature number? 0 to 1
---@field max_new_tokens integer? advanced
---@field repetition_penalty number? advanced
---@field min_chunk_length integer? advanced
---@field condition_on_previous_chunks boolean? advanced
---@field early_stop_threshold number? advanced
---@field features string[]? e.g. `{ "quality-guard" }`
---@field extra table<string, any>? fields the API adds later; sent after the known ones, sorted by key
---@field model string|false|nil the `model` header for this session; `false` sends none
---@field on_audio fun(bytes: string, info: fish.LiveAudio)? each block of audio, as it arrives
---@field on_alignment fun(words: fish.Word[], info: fish.LiveAlignment)? each new timing snapshot (needs `timestamps`)
---@field timestamps boolean? use `/v1/tts/live/with-timestamp`: word timings in `info.alignment` and `on_alignment`
---@field auto_flush boolean? flush after each sentence end (`.` `!` `?` before a space, `。` `！` `？`, a newline)
---@field out string? write all the audio into this file: written beside it, renamed over it when the session finishes
---@field max_message integer? the largest message accepted from the server (default 16 MiB), else kind `"too_large"`
---@field retries integer? retries of a refused or failed connection (429, 5xx, network), never once the socket is open
---@field connect_timeout number? seconds until the socket is open
---@field first_audio_timeout number? seconds from the first flush (or `stop`) after some words until the first audio
---@field idle_timeout number? seconds without a message from the server after `stop`, until `finish`
---@field cancel fish.CancelToken? `token:cancel()` cancels the session
---@field headers table<string, string>? extra headers for the WebSocket upgrade, name to value
---@field api_key string? the API key for this session only

--- One word of `/v1/tts/live/with-timestamp`'s timings, in seconds from the start of the
-- session's audio (the server's `chunk_audio_offset_sec` plus the segment's time).
---@class fish.Word
---@field text string the word
---@field start number where it starts, in seconds
---@field ["end"] number where it ends, in seconds

--- A block of audio: the second argument of `on_audio`, and the audio events of
-- `session.events()` (the same table).
---@class fish.LiveAudio
---@field type string `"audio"`
---@field audio string the bytes (with `format = "pcm"`, whole 16-bit samples)
---@field seq integer the block's number, from 1
---@field bytes integer audio bytes delivered before this block
---@field rate integer? PCM only: samples per second (`sample_rate`, else 44100)
---@field channels integer? PCM only: 1
---@field bits integer? PCM only: 16
---@field time number? PCM only: seconds of audio before this block
---@field chunk_seq integer? with `timestamps`: the server's chunk number
---@field chunk_offset number? with `timestamps`: where that chunk starts, in seconds
---@field alignment fish.Word[]? with `timestamps`: the latest word timings, nil until the first

--- New word timings: the second argument of `on_alignment`, and the alignment events of
-- `session.events()`. A snapshot replaces the one before (it grows as a chunk's audio comes, and
-- an event with no audio may correct it).
---@class fish.LiveAlignment
---@field type string `"alignment"`
---@field alignment fish.Word[] the words of the server's current chunk, in session time
---@field chunk_seq integer? the server's chunk number
---@field chunk_offset number? where that chunk starts, in seconds

--- What `session.events()` yields: `fish.LiveAudio` and `fish.LiveAlignment` tables, then
-- `{ type = "finish" }` or `{ type = "error", message = ..., error = fish.Error }`, then nil.
---@alias fish.LiveEvent fish.LiveAudio|fish.LiveAlignment|table

--- States of a live session (`session.state()`).
---@alias fish.LiveState
---| "connecting" # the WebSocket is not open yet (or waits to retry)
---| "open" # text can be sent
---| "stopping" # `stop` was sent; the server is finishing
---| "done" # `finish` came: all the audio was delivered
---| "failed" # ended by an error
---| "canceled" # ended by `cancel()`, a token, a task's cancel or `client.close()`

--- Live text-to-speech over a WebSocket (`/v1/tts/live`), on the default client: send text as it
-- is produced (an LLM's output), receive audio as it is made. Returns a session at once, already
-- connecting and sending `start`; it never blocks. A misspelt or unknown field raises at once
-- with its name. Failures come out of `session.finish()` (and `send`/`flush` once the session
-- has failed). Callbacks run from `session.finish()`, `session.events()` and `fish.step`, never
-- from inside the network code; one that raises closes the session and the error goes on to
-- whichever of those ran it. A session nobody refers to any more is closed by the collector.
---@param args fish.LiveArgs the voice, the format, the callbacks and the options
---@return fish.LiveSession session the session
function fish.live(args) end

-- ---- voices -------------------------------------------------------------------

--- Voices: persistent voices, trained once.
-- Upload samples once, wait until the voice is trained, then speak with
-- `reference_id = voice.id`. `fish.voices.*` use the default client; `client.voices.*` are the same
-- calls on a client. Failures return `nil, message, err`.
-- @section voices
---@class fish.Voices
local voices = {}

--- Visibility of a voice.
---@alias fish.Visibility
---| "public" # listed; needs a cover image
---| "unlist" # reachable by id, not listed
---| "private" # yours only (fish's default)

--- Training states of a voice.
---@alias fish.VoiceState
---| "created" # uploaded, not yet training
---| "training" # training
---| "trained" # ready: speak with `reference_id = voice.id`
---| "failed" # training failed

--- Orders of `fish.voices.list`.
---@alias fish.SortBy
---| "score" # by score
---| "task_count" # by use
---| "created_at" # newest first

--- A voice (a model, in the API's words): the server's fields, plus `id`.
---@class fish.Voice
---@field id string the voice's id, for `reference_id` (a copy of `_id`)
---@field _id string the id as the server names it
---@field title string the title
---@field state fish.VoiceState the training state
---@field [string] any the server's other fields (description, tags, visibility, samples...)

--- The fields of `fish.voices.create`, and the options of `fish.CallOptions`.
-- `on_progress` reports the upload of the samples, as for `fish.convert`.
---@class fish.VoiceCreateArgs: fish.CallOptions
---@field title string the title (required)
---@field voices string|fish.File|(string|fish.File)[] one sample or more: bytes or `fish.file(path)`
---@field texts string|string[]|nil the transcripts of `voices`, in order (the server transcribes those left out)
---@field tags string|string[]|nil tags
---@field description string? a description
---@field visibility fish.Visibility? default `"private"`
---@field cover_image string|fish.File|nil bytes or `fish.file(path)`; required for a public voice
---@field enhance_audio_quality boolean? ask the server to clean up the samples
---@field train_mode string? default `"fast"`
---@field type string? default `"tts"`
---@field generate_sample boolean? ask the server for a sample of the new voice
---@field on_progress fun(sent: integer, send_total: integer?, received: integer, receive_total: integer?)? bytes moved

--- The fields of `fish.voices.update`, and the options of `fish.CallOptions`.
---@class fish.VoiceUpdateArgs: fish.CallOptions
---@field title string? a new title
---@field description string? a new description
---@field visibility fish.Visibility? a new visibility
---@field tags string|string[]|nil new tags
---@field cover_image string|fish.File|nil a new cover image: bytes or `fish.file(path)`

--- The filters of `fish.voices.list` and `fish.voices.each`, and the options of `fish.CallOptions`.
---@class fish.VoiceListArgs: fish.CallOptions
---@field page_size integer? voices per page (`each` asks for 100)
---@field page_number integer? the page, from 1
---@field title string? voices whose title matches
---@field tag string|string[]|nil voices with this tag (or these)
---@field tags string|string[]|nil the same as `tag`; give one of the two
---@field self boolean? only your own voices
---@field author_id string? only this author's voices
---@field language string|string[]|nil voices in this language (or these)
---@field title_language string|string[]|nil titles in this language (or these)
---@field sort_by fish.SortBy? the order

--- A page of `fish.voices.list`.
---@class fish.VoicePage
---@field total integer how many voices match
---@field items fish.Voice[] the voices on this page
---@field [string] any the server's other fields

--- The options of `fish.voices.wait_trained`.
-- Every call option applies to each poll, except `timeout`, which bounds the whole wait.
---@class fish.WaitOptions: fish.CallOptions
---@field timeout number? seconds to wait in all (default 300; 0: no limit)
---@field interval number? seconds between polls (default 5)
---@field on_state fun(state: fish.VoiceState, voice: fish.Voice)? called on each change of state
---@field cancel fish.CancelToken? `token:cancel()` ends the wait with kind `"canceled"`

--- Options of `fish.openresty.start`.
---@class fish.OpenrestyOptions
---@field max_connections integer? at most this many connections from this worker to the API (default: no limit)
---@field max_host_connections integer? the same, per host (default: no limit)
---@field tick number? the longest the driver sleeps between looks at the sockets, in seconds (default 0.01)

--- Create a voice from samples (`POST /model`). Checked before sending: a title, at least one
-- sample, no more texts than samples, a cover image for a public voice.
---@param args fish.VoiceCreateArgs the title, the samples and the options
---@return fish.Voice|nil voice the new voice (its state is usually `"created"` or `"training"`)
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.create(args) end

--- Get a voice (`GET /model/{id}`).
---@param id_or_voice string|fish.Voice the voice's id, or a voice table
---@param opts fish.CallOptions? the call's options
---@return fish.Voice|nil voice the voice
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.get(id_or_voice, opts) end

--- Change a voice's title, description, visibility, tags or cover image (`PATCH /model/{id}`).
---@param id_or_voice string|fish.Voice the voice's id, or a voice table
---@param args fish.VoiceUpdateArgs what to change
---@return true|nil ok `true`
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.update(id_or_voice, args) end

--- Delete a voice (`DELETE /model/{id}`).
---@param id_or_voice string|fish.Voice the voice's id, or a voice table
---@param opts fish.CallOptions? the call's options
---@return true|nil ok `true`
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.delete(id_or_voice, opts) end

--- One page of voices (`GET /model`).
---@param args fish.VoiceListArgs? filters, page and order
---@return fish.VoicePage|nil page `{ total = n, items = { voice, ... } }`
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.list(args) end

--- An iterator over every matching voice, fetching pages as needed.
-- `for voice in fish.voices.each{ self = true } do ... end`. If fetching a page fails, the
-- iterator raises the `fish.Error` (as `io.lines` raises), so nothing is skipped silently.
-- PUC Lua 5.1 cannot suspend a task from inside a `for` loop's iterator: in a task there, call
-- the iterator yourself (`local next_voice = fish.voices.each{...}`, then `next_voice()`).
---@param args fish.VoiceListArgs? the same filters as `fish.voices.list`
---@return fun():fish.Voice? iterator the next voice on each call, then nil
function voices.each(args) end

--- Poll a voice until it is trained (created, then training, then trained), sleeping between
-- polls without using CPU, or suspending only its task inside `fish.spawn`. Returns at once for a
-- voice table that is already trained. Fails with kind `"failed"` if training failed, and with
-- kind `"timeout"` (`err.timeout == "training"`; the message and `err.state` name the last state)
-- when time runs out.
---@param id_or_voice string|fish.Voice the voice's id, or a voice table
---@param opts fish.WaitOptions? timeout, interval, on_state and cancel
---@return fish.Voice|nil voice the trained voice
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function voices.wait_trained(id_or_voice, opts) end

-- ---- speech to text -------------------------------------------------------------

--- Speech to text.
-- `fish.asr.*` use the default client; `client.asr.*` are the same calls on a client.
-- @section asr
---@class fish.Asr
local asr = {}

--- The fields of `fish.asr.transcribe`, and the options of `fish.CallOptions`.
-- `on_progress` reports the upload of the audio, as for `fish.convert`.
---@class fish.TranscribeArgs: fish.CallOptions
---@field audio string|fish.File the audio: bytes or `fish.file(path)` (required)
---@field language string? the language, e.g. `"en"`; default: detected
---@field timestamps boolean? segment timestamps (default true)
---@field on_progress fun(sent: integer, send_total: integer?, received: integer, receive_total: integer?)? bytes moved

--- The answer of `fish.asr.transcribe`.
---@class fish.Transcript
---@field text string the text
---@field duration number the audio's duration in seconds
---@field segments fish.Segment[] the segments, with timestamps

--- A segment of a `fish.Transcript`.
---@class fish.Segment
---@field text string the segment's text
---@field start number where it starts, in seconds
---@field ["end"] number where it ends, in seconds

--- Transcribe audio (`POST /v1/asr`).
---@param args fish.TranscribeArgs the audio and the options
---@return fish.Transcript|nil transcript `{ text, duration, segments }`
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function asr.transcribe(args) end

-- ---- account -----------------------------------------------------------------------

--- Account: API credit and the platform package.
-- `fish.account.*` use the default client; `client.account.*` are the same calls on a client.
-- @section account
---@class fish.Account
local account = {}

--- The fields of `fish.account.credits`, and the options of `fish.CallOptions`.
---@class fish.CreditsArgs: fish.CallOptions
---@field check_free_credit boolean? ask the server to check free credit as well

--- The API credit (`GET /wallet/self/api-credit`), as the server sends it.
---@param args fish.CreditsArgs? the options
---@return table|nil credit e.g. `{ credit = "12.50", ... }`
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function account.credits(args) end

--- The platform package (`GET /wallet/self/package`), as the server sends it.
---@param opts fish.CallOptions? the call's options
---@return table|nil package the package
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function account.package(opts) end

-- ---- tasks ---------------------------------------------------------------------------

--- Tasks: many calls at once in one Lua state.
-- Inside a task a fish call suspends only that task;
-- outside, calls block (sleeping in the network wait, not using CPU). A frame loop calls
-- `fish.step(0)` each frame; a host event loop calls it from a timer.
-- @section tasks

--- Run `fn(...)` as a task. Called outside any task (frame code, a script), it runs the task at once,
-- until its first wait, before returning: a request the task makes goes out now, and the next
-- `fish.step` can see the answer. (So the body's first slice cannot use the variable that the returned
-- task is assigned to.) Called inside a task, the new task starts at the next pass of the scheduler.
---@param fn function the task's body
---@param ... any arguments for `fn`
---@return fish.Task task the task
function fish.spawn(fn, ...) end

--- Drive every task until none is left. An error in a task that nobody waits for goes to the error
-- handler (`fish.on_error`), never out of this call. Raises when called inside a fish task.
---@return nil
function fish.run() end

--- Drive transfers and tasks once, waiting at most `timeout` seconds for something to happen.
-- `fish.step(0)` never waits, even with hundreds of transfers in flight. Task errors nobody waits
-- for go to the error handler, as in `fish.run`. Raises when called inside a fish task.
-- With `budget`, it stops resuming tasks once that much Lua time has gone (it always resumes at
-- least one); the others run, in order, in the next steps. Tasks that started requests have them
-- sent before the step returns, so a request started in a frame goes out in that frame.
---@param timeout number? seconds to wait at most (default 0)
---@param budget number? seconds of Lua time this step may spend resuming tasks (default: no bound)
---@return integer count the number of tasks still alive
function fish.step(timeout, budget) end

--- Pause for `seconds`: inside a task only the task waits; outside, the caller sleeps.
---@param seconds number a non-negative number of seconds (not NaN)
---@return nil
function fish.sleep(seconds) end

--- Set the handler for errors in tasks that nobody waits for (with `task:wait` or
-- `task:result`): `fn(message, task)` gets each such error once, `message` being
-- `fish task failed: ...` with the task's traceback. Such errors never raise from `fish.run` or
-- `fish.step`, which may belong to someone else. The default handler, which `nil` restores, writes
-- them to `io.stderr`, or shows them with `vim.notify` under Neovim. If `fn` raises, its error
-- goes to the default handler too.
---@param fn fun(message: string, task: fish.Task)? the handler, or nil for the default
---@return nil
function fish.on_error(fn) end

--- `pcall` that lets fish calls inside `fn` suspend their task, on every ABI. PUC Lua 5.1 cannot
-- yield across `pcall`, so `pcall(fish.convert, ...)` in a task fails there; this works.
---@param fn function the function to call
---@param ... any its arguments
---@return boolean ok true if `fn` returned, false if it raised
---@return any ... the results of `fn`, or the error it raised
function fish.pcall(fn, ...) end

--- A cancel token: pass it as `cancel = token` to any call; `token:cancel()` ends those calls.
---@return fish.CancelToken token a new token
function fish.cancel_token() end

--- Is `value` a `fish.Error`?
---@param value any any value
---@return boolean is true for an error object
function fish.is_error(value) end

--- States of a task (`task.status`).
---@alias fish.TaskStatus
---| "running" # not finished
---| "done" # returned
---| "error" # raised
---| "canceled" # ended by `task:cancel()`

-- ---- errors ---------------------------------------------------------------------------

--- Errors.
-- A failure of the network or the API returns `nil, message, err`; `err` is a
-- `fish.Error`, and `tostring(err)` is the same line as `message`. The API key never appears
-- in an error: fish removes it even when a server echoes it back.
-- @section errors

--- The kinds of `fish.Error`.
---@alias fish.ErrorKind
---| "auth" # HTTP 401: the key is missing or wrong
---| "permission" # HTTP 403
---| "not_found" # HTTP 404
---| "rate_limit" # HTTP 429 (retried; see `retry_after`)
---| "server" # HTTP 5xx (retried); or a live session's `finish` (reason `error`) or `error` event (`err.event`)
---| "http" # any other status outside 2xx, e.g. 400, 402, 422
---| "network" # no HTTP answer; `cause` says why
---| "timeout" # a time limit ran out; `timeout` says which
---| "canceled" # a cancel token, `task:cancel()`, `client.close()` or `session.cancel()` ended the call
---| "failed" # voice training failed (`fish.voices.wait_trained`)
---| "invalid_response" # an empty 200, JSON that does not parse, or JSON of the wrong shape
---| "too_large" # an answer past `max_bytes` / `max_json_bytes`, or headers past libcurl's limits
---| "io" # a local file failed: the output could not be written, or an upload changed size while sent
---| "resources" # the process ran out of file descriptors (not retried)

--- Which time limit ended a call (`err.timeout`).
---@alias fish.TimeoutKind
---| "connect" # `connect_timeout` (of a call, or until a live session's socket is open)
---| "first_byte" # `first_byte_timeout`
---| "first_audio" # a live session's `first_audio_timeout`
---| "idle" # `idle_timeout` (of a call, or of a live session after `stop`)
---| "total" # `timeout`
---| "training" # the `timeout` of `fish.voices.wait_trained`

--- Why no HTTP answer came (`err.cause`).
---@alias fish.NetworkCause
---| "connect" # the connection failed
---| "tls" # the TLS handshake or the certificate check failed
---| "network" # the connection broke
---| "closed" # a live session's connection closed before `finish`

--- The error object of a failure.
---@class fish.Error
---@field kind fish.ErrorKind what went wrong
---@field status integer the HTTP status, or 0
---@field message string one line: the server's `message` or `detail`, a 422 list, or its text
---@field call string? the public call that failed, e.g. `"fish.convert"`
---@field body string? the error body as received (its first 64 KiB)
---@field json any the decoded body, when it was JSON
---@field body_truncated boolean? true when `body` was cut at 64 KiB
---@field retry_after number? seconds from a `Retry-After` header, else from `X-RateLimit-Reset` (capped at 60)
---@field attempts integer? how many tries were made
---@field timeout fish.TimeoutKind? which time limit ran out (kind `"timeout"`)
---@field cause fish.NetworkCause? why no answer came (kind `"network"`)
---@field location string? the `Location` header of a redirect (redirects are never followed)
---@field event string? a live session's server error: `"finish"` (reason `error`) or `"error"`
---@field close_code integer? a live session closed early: the code of the server's close frame
---@field close_reason string? a live session closed early: the reason in that close frame
---@field state fish.VoiceState? the voice's last state (`wait_trained`)
---@field voice fish.Voice? the voice as last seen (`wait_trained`)

-- ---- objects -------------------------------------------------------------------------

--- A client, made by `fish.new`. Its calls are called with a dot, like the module's:
-- `client.convert{...}`, `client.voices.create{...}`, `client.asr.transcribe{...}`,
-- `client.account.credits()` (`client:convert{...}` works too). On Lua 5.4,
-- `local client <close> = fish.new{...}` closes it at the end of the scope.
-- @type Client
---@class fish.Client
---@field base_url string the API's base URL, without a trailing slash
---@field voices fish.Voices the voice calls of this client
---@field asr fish.Asr the speech-to-text call of this client
---@field account fish.Account the account calls of this client
local Client = {}

-- client.convert is fish.convert on this client.
Client.convert = fish.convert

-- client.live is fish.live on this client.
Client.live = fish.live

--- Close the client: its requests in flight are canceled, and later calls raise. Closing twice
-- does nothing.
---@return nil
function Client.close() end

--- Has the client been closed?
---@return boolean closed true after `client.close()`
function Client.closed() end

--- A live TTS session, made by `fish.live`. Its functions are called with a dot
-- (`session.send(text)`; `session:send(text)` works too).
--
-- After `stop()` or `finish()`, `send` and `flush` raise: the caller said there was no more text.
-- After a failure or a cancel (perhaps from another task) they return `nil, message, err`
-- instead. `finish()` may be called again and returns the same result; `cancel()` twice is
-- harmless.
-- @type LiveSession
---@class fish.LiveSession
local LiveSession = {}

--- Send text (UTF-8; checked like `fish.convert`'s). Returns at once; an empty string sends
-- nothing. With `auto_flush`, a flush follows each sentence end.
---@param text string the text
---@return true|nil ok `true`
---@return string? message once the session has failed or was canceled, the one-line message
---@return fish.Error? err then, the error object
function LiveSession.send(text) end

--- Ask the server to synthesise the text buffered so far, now. The session stays open.
---@return true|nil ok `true`
---@return string? message once the session has failed or was canceled, the one-line message
---@return fish.Error? err then, the error object
function LiveSession.flush() end

--- Say there is no more text (the `stop` event), without waiting: the server synthesises what
-- is buffered and ends with `finish`. For `session.events()`; `finish()` does it itself.
---@return true|nil ok `true`
---@return string? message once the session has failed or was canceled, the one-line message
---@return fish.Error? err then, the error object
function LiveSession.stop() end

--- Stop, then wait until the server has sent all the audio and `finish`, delivering it to the
-- callbacks (and `out`). Blocks, or suspends only its task. Errors are those of `fish.convert`:
-- a refused upgrade gives its status and body (`"not_found"`, saying live TTS is not supported,
-- from a server without the endpoint); `finish` with reason `error` and the `error` event give
-- kind `"server"` with the server's message (`err.event` says which); a close before `finish` is
-- `"network"` (`err.close_code`); the limits give `"timeout"`; a cancel gives `"canceled"`.
-- With `format = "pcm"`, a last odd byte that no sample completes is dropped.
---@return true|nil ok `true` when the session finished
---@return string? message on failure, the one-line message
---@return fish.Error? err on failure, the error object
function LiveSession.finish() end

--- Drop the session at once: the socket is closed (the protocol has no cancel event), audio
-- received but not yet delivered is discarded, no `out` file is left, and `finish()` returns
-- kind `"canceled"`.
---@return boolean canceled true if the session was still running
function LiveSession.cancel() end

--- Close the session: `cancel()` if it is still running, nothing if it has ended. Idempotent,
-- and the session's `__close`, so `local s <close> = fish.live{...}` (Lua 5.4) never leaves a
-- session open when the block ends, by an error too.
---@return nil
function LiveSession.close() end

--- An iterator over the session's events: `for ev in session.events() do ... end` yields each
-- audio and alignment event, then one `{ type = "finish" }` or `{ type = "error", ... }`. Each
-- step waits (blocking, or suspending its task). Call `stop()` first, or send and finish from
-- another task. Without `on_audio` the events are kept from the start; with it, `on_audio` is
-- still called for each block and the iterator sees the events from its first call on.
-- PUC Lua 5.1 cannot suspend a task from inside a `for` loop's iterator: in a task there, call
-- the iterator yourself (`local next_event = session.events()`, then `next_event()`).
---@return fun():fish.LiveEvent? iterator the next event on each call, then nil
function LiveSession.events() end

--- Where the session is.
---@return fish.LiveState state the state
function LiveSession.state() end

--- A task, made by `fish.spawn`.
-- @type Task
---@class fish.Task
---@field status fish.TaskStatus where the task is
local Task = {}

--- Wait for the task to end and return its results. From another task it suspends that task;
-- outside tasks it drives the loop. If the task raised, raises the same error with its
-- traceback. A canceled task that returned nothing gives `nil, message, err` (kind `"canceled"`),
-- and so does a waiting task that is canceled while it waits. Raises when a task waits for itself.
---@return any ... the task's results
function Task:wait() end

--- The task's results without waiting: `false` while it runs; `true, ...` when done;
-- `true, false, error` if it raised.
---@return boolean done true once the task has ended
---@return any ... its results
function Task:result() end

--- Cancel the task: the call it waits on returns `nil, message, err` with kind `"canceled"` (an
-- `out` file is not left behind), and its later fish calls return at once.
---@return boolean canceled true if the task was running
function Task:cancel() end

--- A cancel token, made by `fish.cancel_token`.
-- @type CancelToken
---@class fish.CancelToken
---@field canceled boolean true once `token:cancel()` was called
local CancelToken = {}

--- End every call that was given this token, and any later one, with kind `"canceled"`.
---@return boolean first true the first time, false after
function CancelToken:cancel() end

--- `require("fish.nvim")`: fish driven by Neovim's event loop. Requiring it (once per Lua state;
-- plugins share it) installs the driver: a `vim.uv` poll handle per socket libcurl uses and one
-- `vim.uv` timer for the earliest due time, never a periodic tick. Tasks resume in `vim.schedule`,
-- and `fish.spawn` alone starts one.
-- @type nvim
---@class fish.nvim
local nvim = {}

--- What the driver did so far: `socket_events` (socket events handled), `timer_fires` (timer
-- expiries), `passes` (passes that resumed tasks), `sockets` (poll handles open now).
---@return { socket_events: integer, timer_fires: integer, passes: integer, sockets: integer } stats
function nvim.stats() end

--- `require("fish.openresty")`: fish in an nginx worker with the lua module and lua-resty-core.
-- @type openresty
---@class fish.openresty
local openresty = {}

--- Install the driver in this worker (call it again to change the options): one light thread
-- (`ngx.timer.at`) moves every transfer, and a handler waiting for its call sleeps on an
-- `ngx.semaphore` that the driver posts when the transfer ends. Raises outside nginx, and on a bad
-- option, naming it.
---@param opts fish.OpenrestyOptions? the options
---@return nil
function openresty.start(opts) end

--- The driver's counters in this worker: `passes` (looks at the sockets), `posts` (waiting calls
-- woken), `drivers` (light threads started), `running` (transfers now).
---@return { passes: integer, posts: integer, drivers: integer, running: integer } stats
function openresty.stats() end

fish.voices = voices
fish.asr = asr
fish.account = account

return fish
