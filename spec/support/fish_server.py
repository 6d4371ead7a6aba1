#!/usr/bin/python3
"""Local stand-in for the Fish Audio HTTP API, used by the `fish` spec suite.

It speaks the wire protocol described in /work/shared/fish-api.md closely
enough for the SDK to be tested end to end without the network:

  * /v1/tts, /v1/asr, /model, /model/{id}, /wallet/{user}/api-credit and
    /wallet/{user}/package behave like the real API (auth, status codes,
    body shapes, 422 arrays), and TTS returns real, decodable audio;
  * /v1/tts/live and /v1/tts/live/with-timestamp speak live TTS over
    WebSocket on the same port (fish-api.md §5, live-tts.md §1): start,
    text, flush, stop in; audio (plus alignment on /with-timestamp) and
    finish out. The framing is Debian's python3-websockets (sans-I/O), so
    the client is tested against a codec nobody here wrote;
  * /_test/... is a control API (no auth) that lets a spec inspect every
    request the server received, queue faults (errors, resets, stalls,
    truncation, ...; on the live paths also refused handshakes, finish/error,
    error events, drops, fragments, pings, stalls, odd PCM splits, ...),
    read what each live session received (/_test/live), change timings and
    force voice training to fail.

Usage:
    /usr/bin/python3 spec/support/fish_server.py --port 0 --api-key KEY \
        [--train-delay S] [--tts-delay S] [--host 127.0.0.1] [--quiet]

It prints exactly one line, `LISTENING <port>`, on stdout once it accepts
connections; everything else (logs) goes to stderr. SIGTERM/SIGINT stop it.

Only the standard library and Debian's python3-msgpack are used, plus
python3-websockets (10.x) for the live paths; without it they answer 501.
"""

import argparse
import array
import base64
import collections
import hmac
import io
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import wave
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote

import msgpack

# The WebSocket side (/v1/tts/live) uses Debian's python3-websockets for its
# framing, so the C client is tested against a codec nobody here wrote. The
# HTTP API works without it; the live paths then answer 501.
try:
    from websockets.datastructures import Headers as WSHeaders
    from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
    from websockets.connection import State as WSState
    from websockets.http11 import Request as WSRequest
    from websockets.server import ServerConnection as WSServerConnection
except ImportError:                      # pragma: no cover - depends on the host
    WSServerConnection = None

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

CHUNK = 8192                      # size of the pieces a streamed body is sent in
MAX_BODY = 128 * 1024 * 1024      # larger request bodies get 413
IDLE_TIMEOUT = 120                # seconds an idle keep-alive connection may linger
DEFAULT_AFTER_BYTES = 16384       # where mid-body faults strike by default
LIVE_PATHS = ("/v1/tts/live", "/v1/tts/live/with-timestamp")
LIVE_AUDIO_CHUNK = 8192           # audio bytes per live `audio` event by default
LIVE_CHUNK_LENGTH = 300           # the API's chunk_length default (fish-api.md §2.2)
LIVE_CLOSE_WAIT = 2.0             # how long to wait for the client's close frame

# Measured on the real API for a wrong key (fish-api.md §2.5): plain text, not JSON.
UNAUTHORIZED_TEXT = "No permission -- see authorization schemes"

LOCAL_USER = {"_id": "10ca1f15000000000000000000000001",
              "nickname": "local-tester", "avatar": ""}
SEED_AUTHOR = {"_id": "5eed0000000000000000000000000001",
               "nickname": "Fish Audio", "avatar": "https://local.fish/avatars/fish.png"}
SEED_VOICE_ID = "seed-voice-1"
SEED_CREATED = 1735689600.0       # 2025-01-01T00:00:00Z

TRANSCRIPT = "hello from the local fish server"

FORMATS = ("wav", "pcm", "mp3", "opus")
SAMPLE_RATES = {
    "wav": (8000, 16000, 24000, 32000, 44100),
    "pcm": (8000, 16000, 24000, 32000, 44100),
    "mp3": (32000, 44100),
    "opus": (48000,),
}
DEFAULT_SAMPLE_RATE = {"wav": 44100, "pcm": 44100, "mp3": 44100, "opus": 48000}
AUDIO_CONTENT_TYPES = {"wav": "audio/wav", "pcm": "application/octet-stream",
                       "mp3": "audio/mpeg", "opus": "audio/ogg"}
MP3_BITRATES = (64, 128, 192)
# The API lists bps values since 2026-06; the Python SDK still sends kbps (32).
OPUS_BITRATES = (-1000, 24000, 32000, 48000, 64000, 24, 32, 48, 64)
LATENCIES = ("low", "normal", "balanced")
VISIBILITIES = ("public", "unlist", "private")
SORT_KEYS = ("score", "task_count", "created_at")
FILE_FIELDS = ("voices", "cover_image")       # form fields that carry files

FAULT_KEYS = {
    "status": int, "body": (str, dict, list), "content_type": str, "headers": dict,
    "big_body": int, "reset": str, "after_bytes": int, "truncate": bool,
    "close": bool, "slow_headers": (int, float), "stall_body": (int, float),
    "pause_after_first": (int, float), "empty_body": bool, "bad_json": bool,
    "redirect": str, "delay": (int, float),
    # Live TTS (WebSocket) faults; see LiveSession. They act after the
    # handshake, for the whole socket.
    "after_audio": int, "finish_error": str, "error_event": str, "error_key": str,
    "drop": str, "no_close_frame": bool, "close_code": int, "close_reason": str,
    "fragment": int, "ping": int, "oversized": int, "stall": (int, float),
    "stall_mid_frame": bool, "audio_chunk": int, "audio_delay": (int, float),
    "text_frame": str, "send_event": dict, "alignment_fix": bool, "keep_open": bool,
    "bad_accept": bool, "ping_every": (int, float),
}

LOG_QUIET = False


def log(msg):
    """Log to stderr. Callers never pass secrets (the API key) in here."""
    if not LOG_QUIET:
        sys.stderr.write("[fish-server] %s\n" % msg)
        sys.stderr.flush()


def iso(ts):
    """ISO 8601 UTC with milliseconds, the way the API writes dates."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id():
    return secrets.token_hex(16)          # 32 lowercase hex chars, like real ids


def parse_bool(text):
    """Query/form boolean the way FastAPI-style servers read it; None if invalid."""
    t = str(text).strip().lower()
    if t in ("true", "1", "yes", "on", "t", "y"):
        return True
    if t in ("false", "0", "no", "off", "f", "n"):
        return False
    return None


# ---------------------------------------------------------------------------
# Errors and replies
# ---------------------------------------------------------------------------

class Reply:
    """A response waiting to be written.

    Either `body` (bytes, sent with Content-Length) or `stream` (an iterator
    of bytes). A stream is sent chunked when `chunked`, else with
    Content-Length `length`. `length` is also used, when known, to place
    mid-body faults inside short bodies.
    """

    def __init__(self, status, headers=None, body=b"", stream=None,
                 length=None, chunked=False):
        self.status = status
        self.headers = list(headers or [])
        self.body = body
        self.stream = stream
        self.length = length if stream is not None else len(body)
        self.chunked = chunked

    def set_header(self, name, value):
        low = name.lower()
        self.headers = [(k, v) for (k, v) in self.headers if k.lower() != low]
        self.headers.append((name, str(value)))


def json_reply(status, obj, headers=None):
    body = json.dumps(obj).encode("utf-8")
    return Reply(status, [("Content-Type", "application/json")] + list(headers or []), body)


def error_reply(status, message, headers=None):
    """The API's usual error body: {"status": N, "message": "..."}."""
    return json_reply(status, {"status": status, "message": message}, headers)


def text_reply(status, text):
    return Reply(status, [("Content-Type", "text/plain")], text.encode("utf-8"))


class HttpError(Exception):
    """Raised anywhere in a handler to answer with `reply` at once."""

    def __init__(self, reply):
        super().__init__(reply.status)
        self.reply = reply


class Validation:
    """Collects 422 items in the API's shape (fish-api.md §2.5)."""

    def __init__(self, where="body"):
        self.items = []
        self.where = where

    def add(self, loc, typ, msg, ctx=None):
        self.items.append({"loc": [str(p) for p in loc], "type": typ, "msg": msg,
                           "ctx": ctx or {}, "in": self.where})

    def raise_if_any(self):
        if self.items:
            raise HttpError(json_reply(422, self.items))

    # --- typed checks; each returns the cleaned value or None on error ----

    def string(self, loc, v, non_empty=False):
        if not isinstance(v, str):
            self.add(loc, "string_type", "Input should be a valid string")
            return None
        if non_empty and v == "":
            self.add(loc, "string_too_short", "String should have at least 1 character",
                     {"min_length": 1})
            return None
        return v

    def number(self, loc, v, lo=None, hi=None, integer=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            if integer:
                self.add(loc, "int_type", "Input should be a valid integer")
            else:
                self.add(loc, "float_type", "Input should be a valid number")
            return None
        if isinstance(v, float) and not math.isfinite(v):
            self.add(loc, "finite_number", "Input should be a finite number")
            return None
        if integer:
            if isinstance(v, float) and not v.is_integer():
                self.add(loc, "int_from_float",
                         "Input should be a valid integer, got a number with a fractional part")
                return None
            v = int(v)
        if lo is not None and v < lo:
            self.add(loc, "greater_than_equal", "Input should be greater than or equal to %s" % lo,
                     {"ge": lo})
            return None
        if hi is not None and v > hi:
            self.add(loc, "less_than_equal", "Input should be less than or equal to %s" % hi,
                     {"le": hi})
            return None
        return v

    def boolean(self, loc, v):
        if not isinstance(v, bool):
            self.add(loc, "bool_type", "Input should be a valid boolean")
            return None
        return v

    def choice(self, loc, v, allowed):
        # bool is an int in Python; never let True pass for 1.
        if isinstance(v, bool) or v not in allowed:
            shown = [repr(a) if isinstance(a, str) else str(a) for a in allowed]
            expected = ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
            self.add(loc, "literal_error", "Input should be %s" % expected,
                     {"expected": expected})
            return None
        return v


# ---------------------------------------------------------------------------
# Audio generation (real, decodable streams; content is a quiet tone/silence)
# ---------------------------------------------------------------------------

_TONE_CACHE = {}
_TONE_LOCK = threading.Lock()


def tone_second(sample_rate):
    """One second of a quiet 440 Hz sine, int16 LE mono.

    440 whole cycles fit in one second, so the buffer loops seamlessly;
    it is computed once per rate and shared by all requests.
    """
    with _TONE_LOCK:
        cached = _TONE_CACHE.get(sample_rate)
        if cached is None:
            amp = 1200.0                  # about -29 dBFS: audible but quiet
            step = 2.0 * math.pi * 440.0 / sample_rate
            samples = array.array("h", (int(round(amp * math.sin(step * i)))
                                        for i in range(sample_rate)))
            if sys.byteorder == "big":
                samples.byteswap()
            cached = _TONE_CACHE[sample_rate] = samples.tobytes()
        return cached


def repeat_bytes(pattern, total):
    """Yield `total` bytes taken cyclically from `pattern`, in ≤ CHUNK pieces."""
    plen = len(pattern)
    pos = 0
    while pos < total:
        start = pos % plen
        n = min(CHUNK, total - pos, plen - start)
        yield pattern[start:start + n]
        pos += n


def wav_header(sample_rate, data_bytes):
    """44-byte canonical RIFF/WAVE header, 16-bit mono PCM, true sizes."""
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


def pcm_audio(duration, sample_rate):
    nbytes = int(round(duration * sample_rate)) * 2
    return nbytes, repeat_bytes(tone_second(sample_rate), nbytes)


def wav_audio(duration, sample_rate):
    nbytes, pcm = pcm_audio(duration, sample_rate)
    header = wav_header(sample_rate, nbytes)

    def gen():
        yield header
        yield from pcm
    return len(header) + nbytes, gen()


def mp3_frame(sample_rate, kbps):
    """One silent MPEG-1 Layer III mono frame.

    Header: sync + MPEG-1 + Layer III + no CRC (FF FB), bitrate/rate indexes,
    no padding, mono (0xC4 = mono, original). The 17-byte mono side info is
    all zero (main_data_begin 0, part2_3_length 0 in both granules), which
    decoders play as digital silence; the rest of the frame is zero filler.
    """
    bitrate_index = {64: 5, 128: 9, 192: 11}[kbps]
    rate_index = {44100: 0, 48000: 1, 32000: 2}[sample_rate]
    header = bytes([0xFF, 0xFB, (bitrate_index << 4) | (rate_index << 2), 0xC4])
    size = 144 * kbps * 1000 // sample_rate      # 417 bytes at 128 kbps / 44.1 kHz
    return header + bytes(size - 4)


def mp3_audio(duration, sample_rate, kbps):
    frame = mp3_frame(sample_rate, kbps)
    frames = max(1, math.ceil(duration * sample_rate / 1152.0))
    total = frames * len(frame)
    return total, repeat_bytes(frame * 20, total)


def _ogg_crc_table():
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            r &= 0xFFFFFFFF
        table.append(r)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_crc(data):
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, init 0, no final xor."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def ogg_page(packets, granule, serial, seq, flags):
    """One Ogg page holding whole packets (each < 255 bytes × 255 segments)."""
    lacing = bytearray()
    for p in packets:
        n = len(p)
        lacing += b"\xff" * (n // 255) + bytes([n % 255])
    header = (b"OggS" + bytes([0, flags]) + struct.pack("<qII", granule, serial, seq)
              + b"\0\0\0\0" + bytes([len(lacing)]) + bytes(lacing))
    page = bytearray(header + b"".join(packets))
    page[22:26] = struct.pack("<I", ogg_crc(page))
    return bytes(page)


OPUS_SILENCE = b"\xf8\xff\xfe"     # TOC: CELT-only fullband 20 ms mono, 1 frame; silent
OPUS_PRESKIP = 312


def opus_audio(duration):
    """A complete Ogg Opus stream (RFC 7845) of 20 ms silent packets."""
    serial = 0x46495348              # "FISH"
    head = (b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", OPUS_PRESKIP, 48000, 0, 0))
    vendor = b"fish local test server"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [ogg_page([head], 0, serial, 0, 0x02),       # BOS
             ogg_page([tags], 0, serial, 1, 0x00)]
    wanted = int(round(duration * 48000))
    packets = max(1, math.ceil((OPUS_PRESKIP + wanted) / 960.0))
    per_page = 50                                       # one second of audio per page
    seq, done = 2, 0
    while done < packets:
        n = min(per_page, packets - done)
        done += n
        last = done == packets
        # The final granule trims the stream to the exact duration (RFC 7845 §4.4).
        granule = OPUS_PRESKIP + wanted if last else done * 960
        pages.append(ogg_page([OPUS_SILENCE] * n, granule, serial, seq, 0x04 if last else 0))
        seq += 1
    data = b"".join(pages)
    return len(data), repeat_bytes(data, len(data))


def make_audio(fmt, text, sample_rate, mp3_kbps):
    """(length, iterator) of audio whose duration grows with the text."""
    duration = max(0.2, 0.05 * len(text))
    if fmt == "wav":
        return wav_audio(duration, sample_rate)
    if fmt == "pcm":
        return pcm_audio(duration, sample_rate)
    if fmt == "mp3":
        return mp3_audio(duration, sample_rate, mp3_kbps)
    return opus_audio(duration)


def audio_duration(data):
    """Seconds of audio in an uploaded clip: from a WAV header when it parses,
    else assuming 16 kHz 16-bit mono (32000 bytes/s)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, frame_bytes = w.getframerate(), w.getnchannels() * w.getsampwidth()
            frames = w.getnframes()
            # Streamed WAVs carry placeholder sizes; trust the bytes we have.
            available = max(0, len(data) - 44) // max(1, frame_bytes)
            if frames <= 0 or frames > available:
                frames = available
            if rate > 0:
                return round(frames / float(rate), 3)
    except Exception:
        pass
    return round(len(data) / 32000.0, 3)


# ---------------------------------------------------------------------------
# Request body parsing
# ---------------------------------------------------------------------------

class FilePart:
    """A file value: a multipart part with a filename, or msgpack bin."""

    def __init__(self, data, filename=None, content_type=None):
        self.data = data
        self.filename = filename
        self.content_type = content_type


def media_type(content_type):
    return (content_type or "").split(";", 1)[0].strip().lower()


def header_params(value):
    """Parameters of a header like `form-data; name="a"; filename="b.wav"`."""
    params = {}
    for m in re.finditer(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value or ""):
        key, val = m.group(1).lower(), m.group(2).strip()
        if val.startswith('"') and val.endswith('"') and len(val) >= 2:
            # As email.utils.unquote (and so python-multipart) reads it: only
            # \\ and \" are escapes. libcurl sends a backslash in a file
            # name as it is (HTML5 form encoding), so "a\b.wav" stays.
            val = val[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        if key.endswith("*"):                      # RFC 5987: utf-8''percent-encoded
            key = key[:-1]
            if "''" in val:
                charset, _, enc = val.partition("''")
                val = unquote(enc, encoding=charset or "utf-8", errors="replace")
        params[key] = val
    return params


def parse_multipart(body, content_type):
    """Split a multipart/form-data body into parts, in wire order.

    Each part is a dict {name, filename, content_type, data}. Written by hand
    (not with `email`) so binary parts come through byte-exact. Raises
    ValueError on a malformed body.
    """
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise ValueError("multipart body without boundary")
    delim = b"--" + boundary.encode("latin-1")
    pos = body.find(delim)
    if pos < 0:
        raise ValueError("multipart boundary not found")
    parts = []
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts                           # closing delimiter
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError("truncated multipart body")
        start = eol + 2
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise ValueError("multipart part without closing boundary")
        parts.append(_parse_part(body[start:end]))
        pos = end + 2


def _parse_part(raw):
    if raw.startswith(b"\r\n"):
        head, data = b"", raw[2:]
    else:
        split = raw.find(b"\r\n\r\n")
        if split < 0:
            raise ValueError("multipart part without header end")
        head, data = raw[:split], raw[split + 4:]
    headers = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    disp = header_params(headers.get("content-disposition", ""))
    return {"name": disp.get("name"), "filename": disp.get("filename"),
            "content_type": headers.get("content-type"), "data": data}


def decode_msgpack(body):
    # raw=False: str → Python str; bin stays bytes, which is how we tell them apart.
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def jsonable(value):
    """Render a decoded msgpack value as JSON: bytes become {"$bin": base64}."""
    if isinstance(value, (bytes, bytearray)):
        return {"$bin": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else json.dumps(jsonable(k))): jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    return {"$repr": repr(value)}


def fields_from_mapping(obj, file_fields=()):
    """Turn a JSON/msgpack map into the same name → [values] shape multipart gives.

    Lists become repeated values, bytes become files, booleans "true"/"false".
    JSON has no bytes type, so strings under `file_fields` count as files
    holding their UTF-8 bytes.
    """
    fields = {}
    for key, value in obj.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None:
                continue
            if isinstance(v, str) and key in file_fields:
                v = FilePart(v.encode("utf-8"))
            elif isinstance(v, (bytes, bytearray)):
                v = FilePart(bytes(v))
            elif isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (int, float)):
                v = str(v)
            elif not isinstance(v, str):
                v = json.dumps(jsonable(v))
            fields.setdefault(str(key), []).append(v)
    return fields


def fields_from_parts(parts):
    fields = {}
    for p in parts:
        if p["name"] is None:
            continue
        if p["filename"] is not None:
            v = FilePart(p["data"], p["filename"], p["content_type"])
        else:
            v = p["data"].decode("utf-8", "replace")
        fields.setdefault(p["name"], []).append(v)
    return fields


# ---------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------

class Voice:
    """A voice model. Its training state is derived lazily from timestamps."""

    def __init__(self, vid, title, created, train_delay, is_self, author, **extra):
        self.id = vid
        self.title = title
        self.created = created
        self.updated = created
        self.train_delay = float(train_delay)
        self.will_fail = False
        self.is_self = is_self
        self.author = dict(author)
        self.description = extra.get("description", "")
        self.cover_image = extra.get("cover_image", "")
        self.visibility = extra.get("visibility", "public")
        self.tags = list(extra.get("tags", []))
        self.languages = list(extra.get("languages", []))
        self.samples = list(extra.get("samples", []))
        self.texts = list(extra.get("texts", []))
        self.files = list(extra.get("files", []))
        self.task_count = extra.get("task_count", 0)
        self.like_count = extra.get("like_count", 0)
        self.mark_count = extra.get("mark_count", 0)
        self.shared_count = extra.get("shared_count", 0)

    def state(self, now):
        """created → training (after D/2) → trained/failed (after D)."""
        elapsed = now - self.created
        if elapsed >= self.train_delay:
            return "failed" if self.will_fail else "trained"
        if elapsed >= self.train_delay / 2.0:
            return "training"
        return "created"

    def updated_at(self, now):
        # A state change counts as an update, so updated_at moves with it.
        stamps = [self.updated]
        for t in (self.created + self.train_delay / 2.0, self.created + self.train_delay):
            if t <= now:
                stamps.append(t)
        return max(stamps)

    def entity(self, now):
        """The ModelEntity JSON of fish-api.md §3.2."""
        return {
            "_id": self.id,
            "type": "tts",
            "title": self.title,
            "description": self.description,
            "cover_image": self.cover_image,
            "train_mode": "fast",
            "state": self.state(now),
            "tags": list(self.tags),
            "samples": list(self.samples),
            "created_at": iso(self.created),
            "updated_at": iso(self.updated_at(now)),
            "languages": list(self.languages),
            "visibility": self.visibility,
            "lock_visibility": False,
            "like_count": self.like_count,
            "mark_count": self.mark_count,
            "shared_count": self.shared_count,
            "task_count": self.task_count,
            "liked": False,
            "unliked": False,
            "marked": False,
            "author": dict(self.author),
        }


def seed_voice():
    return Voice(SEED_VOICE_ID, "Seed Voice", SEED_CREATED, 0, False, SEED_AUTHOR,
                 description="Pre-trained voice that is always present.",
                 cover_image="https://local.fish/covers/seed-voice-1.png",
                 visibility="public", tags=["seed", "english"], languages=["en"],
                 task_count=42, like_count=7, mark_count=3, shared_count=1)


# ---------------------------------------------------------------------------
# Server-wide state (shared by all handler threads; guarded by one lock)
# ---------------------------------------------------------------------------

class State:
    def __init__(self, api_key, train_delay, tts_delay):
        self.api_key = api_key
        self.startup_config = {"train_delay": float(train_delay), "tts_delay": float(tts_delay),
                               "live": True, "live_chunk": LIVE_AUDIO_CHUNK,
                               "live_delay": 0.0}
        self.lock = threading.Lock()
        # Signalled whenever a live session changes, for /_test/live?wait=S.
        self.live_changed = threading.Condition(self.lock)
        self.active_connections = 0
        self.current_tts = 0
        self.active_live = 0
        self.reset()

    def reset(self):
        with self.lock:
            self.config = dict(self.startup_config)
            self.voices = {SEED_VOICE_ID: seed_voice()}     # insertion-ordered
            self.requests = []
            self.faults = []
            self.live_sessions = []     # LiveSession.record dicts, in handshake order
            # In-flight TTS requests keep counting; the maximum restarts from them.
            self.max_concurrent_tts = self.current_tts

    # --- captured requests and faults -----------------------------------

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)

    def add_fault(self, path, method, times, spec):
        with self.lock:
            self.faults.append({"path": path, "method": method, "times": times, "fault": spec})
            return len(self.faults)

    def take_fault(self, method, path):
        """Consume one use of the oldest queued fault matching this request."""
        with self.lock:
            for f in self.faults:
                if f["method"] and f["method"] != method:
                    continue
                pattern = f["path"]
                if pattern.endswith("*"):
                    if not path.startswith(pattern[:-1]):
                        continue
                elif pattern != path:
                    continue
                f["times"] -= 1
                if f["times"] <= 0:
                    self.faults.remove(f)
                return dict(f["fault"])
            return None

    # --- counters ----------------------------------------------------------

    def conn_delta(self, d):
        with self.lock:
            self.active_connections += d

    def live_delta(self, d):
        with self.lock:
            self.active_live += d
            self.live_changed.notify_all()

    def tts_delta(self, d):
        with self.lock:
            self.current_tts += d
            self.max_concurrent_tts = max(self.max_concurrent_tts, self.current_tts)


# ---------------------------------------------------------------------------
# HTTP handler
# ---------------------------------------------------------------------------

class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """What the router needs to know about one request, body already read."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path            # raw, still percent-encoded
        self.query = query          # raw query string ("" if none)
        self.headers = headers      # http.client.HTTPMessage
        self.body = body
        self.content_type = headers.get("Content-Type")
        self.media_type = media_type(self.content_type)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive and chunked responses
    server_version = "fish-local/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes; with Nagle on, the client's
    # delayed ACK costs ~40 ms per request.
    disable_nagle_algorithm = True

    # --- connection bookkeeping ---------------------------------------------

    def setup(self):
        super().setup()
        self.server.state.conn_delta(+1)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.state.conn_delta(-1)

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def handle_expect_100(self):
        # Defer "100 Continue" until we decide to read the body, so a `close`
        # fault can hang up without sending a single byte.
        return True

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_OPTIONS(self):
        self.dispatch()

    @property
    def state(self):
        return self.server.state

    # --- top level -----------------------------------------------------------

    def dispatch(self):
        self.headers_sent = False
        target = self.path
        m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(/.*)?$", target)   # absolute-form
        if m:
            target = m.group(1) or "/"
        path, _, query = target.partition("?")
        counted_tts = False
        try:
            if path.startswith("/_test/"):
                self.serve_control(path, query)
                return
            fault = self.state.take_fault(self.command, path)
            if fault and fault.get("close"):
                self.record(path, query, None)
                log("fault: closing connection without answering")
                self.close_connection = True
                return
            body = self.read_body()
            self.record(path, query, body)
            if path == "/v1/tts" and self.command == "POST":
                self.state.tts_delta(+1)
                counted_tts = True
            self.serve(Request(self.command, path, query, self.headers, body), fault or {})
        except BodyError as e:
            self.close_connection = True
            self.safe_send(text_reply(e.status, e.message), {})
        except Exception as e:  # never let bad input kill the thread silently
            log("internal error on %s %s: %r" % (self.command, path, e))
            self.safe_send(error_reply(500, "Internal server error: %s" % type(e).__name__), {})
        finally:
            if counted_tts:
                self.state.tts_delta(-1)

    def safe_send(self, reply, fault):
        if self.headers_sent:
            self.close_connection = True          # too late for a clean answer
            return
        try:
            self.send(reply, fault)
        except OSError:
            self.close_connection = True

    # --- reading and recording ----------------------------------------------

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        cl = self.headers.get("Content-Length")
        chunked = "chunked" in te.lower()
        length = 0
        if not chunked and cl is not None:
            try:
                length = int(cl)
                if length < 0:
                    raise ValueError
            except ValueError:
                raise BodyError(400, "Invalid Content-Length")
            if length > MAX_BODY:
                raise BodyError(413, "Request body too large")
        if (chunked or length > 0) and \
                self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if chunked:
            return self.read_chunked()
        data = self.rfile.read(length) if length else b""
        if len(data) != length:
            raise BodyError(400, "Incomplete request body")
        return data

    def read_chunked(self):
        out = bytearray()
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "Invalid chunked request body")
            if size == 0:
                break
            if len(out) + size > MAX_BODY:
                raise BodyError(413, "Request body too large")
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.read(2) != b"\r\n":
                raise BodyError(400, "Incomplete chunked request body")
            out += data
        while True:                                  # trailers, up to the blank line
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return bytes(out)

    def record(self, path, query, body):
        """Capture a request for /_test/requests (before any fault or delay)."""
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        ct = self.headers.get("Content-Type")
        mt = media_type(ct)
        entry = {"method": self.command, "path": path, "query": query, "headers": headers,
                 "body_b64": base64.b64encode(body or b"").decode("ascii"),
                 "body_read": body is not None, "content_type": ct,
                 "msgpack": None, "json": None, "parts": None, "form": None,
                 "t": time.time()}                # arrival, epoch seconds (body read)
        if body:
            try:
                if mt in ("application/msgpack", "application/x-msgpack"):
                    entry["msgpack"] = jsonable(decode_msgpack(body))
                elif mt == "application/json":
                    entry["json"] = json.loads(body.decode("utf-8"))
                elif mt == "multipart/form-data":
                    entry["parts"] = [
                        {"name": p["name"], "filename": p["filename"],
                         "content_type": p["content_type"],
                         "data_b64": base64.b64encode(p["data"]).decode("ascii")}
                        for p in parse_multipart(body, ct)]
                elif mt == "application/x-www-form-urlencoded":
                    entry["form"] = [list(kv) for kv in parse_qsl(
                        body.decode("utf-8", "replace"), keep_blank_values=True)]
            except Exception:
                pass                               # unparseable: body_b64 still has it
        self.state.record(entry)

    # --- writing ---------------------------------------------------------------

    def send(self, reply, fault):
        """Write `reply`, shaped by the streaming faults in `fault`.

        slow_headers delays the status line; stall_body and pause_after_first
        sleep between body bytes; truncate stops before the final 0-chunk and
        closes cleanly (FIN); reset=mid_body stops and sends an RST.
        """
        if fault.get("slow_headers"):
            time.sleep(float(fault["slow_headers"]))
        truncate = bool(fault.get("truncate"))
        cut_rst = fault.get("reset") == "mid_body"
        chunked = reply.chunked or truncate
        no_body = reply.status in (204, 304)

        self.send_response(reply.status)
        for k, v in reply.headers:
            if k.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(k, v)
        if no_body:
            pass
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(reply.length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.headers_sent = True
        if no_body:
            return

        after = int(fault.get("after_bytes", DEFAULT_AFTER_BYTES))

        def offset():
            # Strike inside the body even when it is shorter than after_bytes.
            if reply.length is not None and after >= reply.length:
                return reply.length // 2
            return after

        events = []                                  # (byte offset, action)
        if fault.get("stall_body"):
            events.append((offset(), "stall"))
        if truncate or cut_rst:
            events.append((offset(), "cut"))
        events.sort(key=lambda e: (e[0], e[1] == "cut"))
        pause = fault.get("pause_after_first")

        source = reply.stream if reply.stream is not None else \
            (reply.body[i:i + CHUNK] for i in range(0, len(reply.body), CHUNK))
        sent = 0
        for chunk in rechunk(source):
            while chunk:
                if events and sent + len(chunk) >= events[0][0]:
                    n = max(0, events[0][0] - sent)
                    head, chunk = chunk[:n], chunk[n:]
                    self.write_piece(head, chunk=chunked)
                    sent += len(head)
                    if self.fire(events.pop(0)[1], fault, cut_rst):
                        return
                    continue
                self.write_piece(chunk, chunk=chunked)
                sent += len(chunk)
                chunk = b""
            if pause:
                time.sleep(float(pause))             # only after the first chunk
                pause = None
        for _, action in events:                     # body shorter than the offsets
            if self.fire(action, fault, cut_rst):
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def fire(self, action, fault, cut_rst):
        """Run a mid-body fault action; True when the response is over."""
        if action == "stall":
            time.sleep(float(fault["stall_body"]))
            return False
        if cut_rst:
            log("fault: reset mid-body")
            # Give the peer time to read what was sent: an RST makes its kernel
            # drop received-but-unread data, which would make tests flaky.
            time.sleep(0.1)
            self.abort_rst()
        else:
            log("fault: truncated chunked body, closing")
            self.close_connection = True
        return True

    def write_piece(self, data, chunk):
        if not data:
            return
        if chunk:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.wfile.write(data)

    def abort_rst(self):
        """Close the socket with SO_LINGER 0 so the peer gets an RST."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach(): rfile/wfile hold references that would delay close().
            os.close(sock.detach())
        except OSError:
            pass

    # --- faults ------------------------------------------------------------------

    def serve(self, req, fault):
        if fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if fault.get("reset") == "before_headers":
            log("fault: reset before headers")
            self.abort_rst()
            return
        reply = self.fault_reply(req, fault)
        if reply is None and req.path in LIVE_PATHS:
            reply = self.live_handshake(req, fault)
            if reply is None:
                return                             # the socket was a WebSocket; it is over
        if reply is None:
            try:
                reply = self.route(req)
            except HttpError as e:
                reply = e.reply
        for k, v in (fault.get("headers") or {}).items():
            reply.set_header(str(k), v)
        try:
            self.send(reply, fault)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                socket.timeout) as e:
            log("client went away: %r" % e)
            self.close_connection = True

    def fault_reply(self, req, fault):
        """A reply that replaces the normal answer, or None to answer normally."""
        if "redirect" in fault:
            status = fault.get("status", 302)
            return Reply(status, [("Location", fault["redirect"])], b"")
        if fault.get("empty_body"):
            ct = fault.get("content_type") or \
                ("audio/mpeg" if req.path == "/v1/tts" else "application/json")
            return Reply(200, [("Content-Type", ct)], b"")
        if fault.get("bad_json"):
            return Reply(200, [("Content-Type", "application/json")], b'{"_id": "x", "state": ')
        if "big_body" in fault:
            size = int(fault["big_body"])
            ct = fault.get("content_type", "text/plain")
            return Reply(int(fault.get("status", 500)), [("Content-Type", ct)],
                         stream=repeat_bytes(b"x" * 65536, size), length=size)
        if "status" in fault:
            status = int(fault["status"])
            body = fault.get("body")
            if body is None:
                try:
                    phrase = HTTPStatus(status).phrase
                except ValueError:                 # e.g. 599: no standard phrase
                    phrase = "Error"
                body = json.dumps({"status": status, "message": "%s (injected fault)" % phrase})
            elif not isinstance(body, str):
                body = json.dumps(body)
            ct = fault.get("content_type")
            if ct is None:
                try:
                    json.loads(body)
                    ct = "application/json"
                except ValueError:
                    ct = "text/plain"
            return Reply(status, [("Content-Type", ct)], body.encode("utf-8"))
        return None

    # --- live TTS (WebSocket) handshake ----------------------------------------------

    def live_handshake(self, req, fault):
        """A request to /v1/tts/live[/with-timestamp].

        Returns a Reply when the answer is plain HTTP (a refusal), or None
        once the connection has run as a WebSocket session and is over.
        """
        if not self.authorized(req):
            return text_reply(401, UNAUTHORIZED_TEXT)     # first, as on every API path
        if not self.state.config["live"]:
            # Self-hosted fish-speech has no WebSocket endpoint (live-tts.md
            # §1.6); its router answers these paths like any unknown one.
            return error_reply(404, "Not Found")
        if req.method != "GET" or "websocket" not in req.headers.get("Upgrade", "").lower():
            # A guess at the real API: ASGI frameworks route HTTP and WebSocket
            # requests separately, so a plain request to a WebSocket-only path
            # finds no HTTP route and gets the usual 404.
            return error_reply(404, "Not Found")
        if WSServerConnection is None:
            return error_reply(501, "python3-websockets is not installed on the test server")
        # The library checks the upgrade request (Connection, Upgrade,
        # Sec-WebSocket-Key, Sec-WebSocket-Version) and builds the 101, or a
        # 400/426 refusal. Extensions are not offered (no compression, as
        # protocol-decisions.md says the client sends none).
        target = req.path + ("?" + req.query if req.query else "")
        handshake = WSServerConnection()
        response = handshake.accept(WSRequest(target, WSHeaders(list(req.headers.items()))))
        if response.status_code != 101:
            return Reply(response.status_code,
                         [(k, v) for k, v in response.headers.raw_items()
                          if k.lower() not in ("content-length", "connection", "date")],
                         response.body or b"")
        for k, v in (fault.get("headers") or {}).items():
            if k in response.headers:
                del response.headers[k]
            response.headers[k] = str(v)
        if fault.get("bad_accept"):
            # The accept value for another key: a client that checks it must refuse.
            del response.headers["Sec-WebSocket-Accept"]
            response.headers["Sec-WebSocket-Accept"] = base64.b64encode(b"\0" * 20).decode()
        self.close_connection = True                # never HTTP again on this socket
        log("%s GET %s: 101, live session" % (self.address_string(), req.path))
        LiveSession(self, req, fault).run(response)
        return None

    def take_buffered(self):
        """Bytes the client sent after its upgrade request that rfile has
        already buffered (a client may send `start` without waiting for the
        101). Non-blocking: a buffered reader on a non-blocking socket returns
        what it holds, or nothing."""
        sock = self.connection
        old = sock.gettimeout()
        sock.setblocking(False)
        try:
            data = self.rfile.peek(1 << 16)
        except (BlockingIOError, OSError, ValueError):
            data = b""
        finally:
            sock.settimeout(old)
        if data:
            data = self.rfile.read(len(data))
        return data or b""

    # --- control API (/_test/...) ---------------------------------------------------

    def serve_control(self, path, query):
        try:
            body = self.read_body()
            reply = self.control(path, query, body)
        except HttpError as e:
            reply = e.reply
        self.send(reply, {})

    def control_json(self, body):
        if not body.strip():
            return {}
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise HttpError(error_reply(400, "control body must be JSON: %s" % e))
        if not isinstance(obj, dict):
            raise HttpError(error_reply(400, "control body must be a JSON object"))
        return obj

    def control(self, path, query, body):
        st, method = self.state, self.command
        if path == "/_test/reset" and method == "POST":
            st.reset()
            return json_reply(200, {})
        if path == "/_test/requests" and method == "GET":
            # Optional filters: ?path=/v1/tts&method=POST (exact matches).
            want = dict(parse_qsl(query))
            with st.lock:
                return json_reply(200, [r for r in st.requests
                                        if r["path"] == want.get("path", r["path"])
                                        and r["method"] == want.get("method", r["method"])])
        if path == "/_test/faults":
            if method == "POST":
                return self.control_add_fault(self.control_json(body))
            if method == "GET":
                with st.lock:
                    return json_reply(200, [dict(f) for f in st.faults])
            if method == "DELETE":
                with st.lock:
                    st.faults = []
                return json_reply(200, {})
        if path == "/_test/config":
            if method == "POST":
                return self.control_config(self.control_json(body))
            if method == "GET":
                with st.lock:
                    return json_reply(200, dict(st.config))
        m = re.match(r"^/_test/voices/([^/]+)/fail$", path)
        if m and method == "POST":
            vid = unquote(m.group(1))
            with st.lock:
                voice = st.voices.get(vid)
                if voice is None:
                    return error_reply(404, "Model not found")
                voice.will_fail = True
            return json_reply(200, {})
        if path == "/_test/stats" and method == "GET":
            with st.lock:
                return json_reply(200, {"active_connections": st.active_connections,
                                        "max_concurrent_tts": st.max_concurrent_tts,
                                        "current_tts": st.current_tts,
                                        "active_live": st.active_live,
                                        "requests": len(st.requests)})
        if path == "/_test/live" and method == "GET":
            return self.control_live(query)
        return error_reply(404, "Unknown control endpoint %s %s" % (method, path))

    def control_add_fault(self, obj):
        path = obj.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise HttpError(error_reply(400, "fault needs a 'path' starting with /"))
        method = obj.get("method")
        if method is not None and not isinstance(method, str):
            raise HttpError(error_reply(400, "'method' must be a string"))
        times = obj.get("times", 1)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise HttpError(error_reply(400, "'times' must be an integer >= 1"))
        spec = obj.get("fault", {})
        if not isinstance(spec, dict):
            raise HttpError(error_reply(400, "'fault' must be an object"))
        for key, value in spec.items():
            kind = FAULT_KEYS.get(key)
            if kind is None:
                # A typo would otherwise silently leave the request unfaulted.
                raise HttpError(error_reply(400, "unknown fault field %r" % key))
            if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
                raise HttpError(error_reply(400, "bad type for fault field %r" % key))
        if spec.get("reset") not in (None, "before_headers", "mid_body"):
            raise HttpError(error_reply(400, "'reset' must be before_headers or mid_body"))
        if "status" in spec and not 200 <= spec["status"] <= 599:
            raise HttpError(error_reply(400, "'status' must be 200..599"))
        if spec.get("drop") not in (None, "fin", "rst"):
            raise HttpError(error_reply(400, "'drop' must be fin or rst"))
        if spec.get("error_key") not in (None, "message", "error"):
            raise HttpError(error_reply(400, "'error_key' must be message or error"))
        for key in ("after_audio", "ping", "ping_every"):
            if spec.get(key, 0) < 0:
                raise HttpError(error_reply(400, "%r must be >= 0" % key))
        for key in ("fragment", "oversized", "audio_chunk"):
            if key in spec and spec[key] < 1:
                raise HttpError(error_reply(400, "%r must be >= 1" % key))
        if "close_code" in spec and not (spec["close_code"] in (1000, 1001, 1002, 1003, 1007,
                                                                1008, 1009, 1010, 1011)
                                         or 3000 <= spec["close_code"] <= 4999):
            # The library refuses to send reserved codes such as 1005/1006.
            raise HttpError(error_reply(400, "'close_code' must be a code a close frame may carry"))
        pending = self.state.add_fault(path, method.upper() if method else None, times, spec)
        return json_reply(200, {"queued": True, "pending": pending})

    def control_live(self, query):
        """The recorded live sessions. ?path=P keeps one endpoint's; ?wait=S
        first waits up to S seconds until no session is still running, so a
        spec reads the close code the client sent after its own side ended."""
        st = self.state
        want = dict(parse_qsl(query))
        try:
            wait = float(want.get("wait", 0))
        except ValueError:
            raise HttpError(error_reply(400, "'wait' must be a number"))
        deadline = time.monotonic() + wait
        with st.lock:
            while st.active_live > 0 and time.monotonic() < deadline:
                st.live_changed.wait(max(0.0, deadline - time.monotonic()))
            sessions = [dict(r) for r in st.live_sessions
                        if r["path"] == want.get("path", r["path"])]
            return json_reply(200, sessions)

    def control_config(self, obj):
        st = self.state
        for key in obj:
            if key not in ("train_delay", "tts_delay", "voice_id", "live", "live_chunk",
                           "live_delay"):
                raise HttpError(error_reply(400, "unknown config field %r" % key))
        for key in ("train_delay", "tts_delay", "live_delay"):
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise HttpError(error_reply(400, "%r must be a number >= 0" % key))
        if "live" in obj and not isinstance(obj["live"], bool):
            raise HttpError(error_reply(400, "'live' must be a boolean"))
        if "live_chunk" in obj:
            v = obj["live_chunk"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise HttpError(error_reply(400, "'live_chunk' must be an integer >= 1"))
        with st.lock:
            vid = obj.get("voice_id")
            if vid is not None:
                # Per-voice training time, counted from that voice's creation.
                voice = st.voices.get(vid)
                if voice is None:
                    return error_reply(404, "Model not found")
                if "train_delay" in obj:
                    voice.train_delay = float(obj["train_delay"])
            else:
                for key in ("train_delay", "tts_delay", "live_delay"):
                    if key in obj:
                        st.config[key] = float(obj[key])
                for key in ("live", "live_chunk"):
                    if key in obj:
                        st.config[key] = obj[key]
            return json_reply(200, dict(st.config))

    # --- the API proper ---------------------------------------------------------------

    def authorized(self, req):
        auth = req.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and \
            hmac.compare_digest(token.strip().encode(), self.state.api_key.encode())

    def route(self, req):
        if not self.authorized(req):
            return text_reply(401, UNAUTHORIZED_TEXT)
        p, m = req.path, req.method
        if p == "/v1/tts":
            return self.allow(m, ("POST",)) or self.tts(req)
        if p == "/v1/asr":
            return self.allow(m, ("POST",)) or self.asr(req)
        if p == "/model":
            if m == "GET":
                return self.list_voices(req)
            return self.allow(m, ("GET", "POST")) or self.create_voice(req)
        match = re.match(r"^/model/([^/]+)$", p)
        if match:
            vid = unquote(match.group(1))
            if m == "GET":
                return self.get_voice(vid)
            if m == "PATCH":
                return self.update_voice(req, vid)
            return self.allow(m, ("GET", "PATCH", "DELETE")) or self.delete_voice(vid)
        match = re.match(r"^/wallet/([^/]+)/(api-credit|package)$", p)
        if match:
            return self.allow(m, ("GET",)) or self.wallet(req, unquote(match.group(1)),
                                                          match.group(2))
        return error_reply(404, "Not Found")

    @staticmethod
    def allow(method, methods):
        if method not in methods:
            return error_reply(405, "Method Not Allowed", [("Allow", ", ".join(methods))])
        return None

    def parse_body(self, req, accepted):
        """Decode the body by media type: (kind, value). 415 if not accepted,
        400 plain text if it cannot be parsed (the API's documented behaviour)."""
        mt = req.media_type
        kinds = {"application/msgpack": "msgpack", "application/x-msgpack": "msgpack",
                 "application/json": "json", "multipart/form-data": "multipart",
                 "application/x-www-form-urlencoded": "form"}
        kind = kinds.get(mt)
        if kind not in accepted:
            raise HttpError(error_reply(415, "Unsupported Media Type: %s (expected %s)" % (
                mt or "none", ", ".join(k for k, v in kinds.items() if v in accepted))))
        try:
            if kind == "msgpack":
                return kind, decode_msgpack(req.body)
            if kind == "json":
                return kind, json.loads(req.body.decode("utf-8"))
            if kind == "multipart":
                return kind, parse_multipart(req.body, req.content_type)
            return kind, parse_qsl(req.body.decode("utf-8"), keep_blank_values=True,
                                   strict_parsing=False)
        except Exception as e:
            raise HttpError(text_reply(400, "Could not parse %s body: %s" % (
                kind, str(e) or type(e).__name__)))

    def body_fields(self, req, accepted):
        """Body as name → [str | FilePart] for the form-like endpoints."""
        if not req.body and not req.media_type:
            return {}                              # no body at all: no fields
        kind, value = self.parse_body(req, accepted)
        if kind == "multipart":
            return fields_from_parts(value)
        if kind == "form":
            fields = {}
            for k, v in value:
                fields.setdefault(k, []).append(v)
            return fields
        if not isinstance(value, dict):
            v = Validation()
            v.add([], "model_attributes_type", "Input should be a valid dictionary or object")
            v.raise_if_any()
        return fields_from_mapping(value, FILE_FIELDS if kind == "json" else ())

    # --- TTS --------------------------------------------------------------------------

    def tts(self, req):
        _, obj = self.parse_body(req, ("msgpack", "json"))
        params = validate_tts(obj)
        self.check_references(params["reference_ids"])
        delay = self.state.config["tts_delay"]
        if delay > 0:
            time.sleep(delay)                      # models generation time
        fmt = params["format"]
        length, stream = make_audio(fmt, params["text"], params["sample_rate"],
                                    params["mp3_bitrate"])
        return Reply(200, [("Content-Type", AUDIO_CONTENT_TYPES[fmt])],
                     stream=stream, length=length, chunked=True)

    def check_references(self, ids):
        now = time.time()
        with self.state.lock:
            for vid in ids:
                if vid == "":
                    continue                       # empty string = default voice
                voice = self.state.voices.get(vid)
                if voice is None:
                    raise HttpError(error_reply(400, "Reference not found"))
                state = voice.state(now)
                if state != "trained":
                    raise HttpError(error_reply(
                        400, "Reference model is not ready (state: %s)" % state))

    # --- ASR --------------------------------------------------------------------------

    def asr(self, req):
        kind, value = self.parse_body(req, ("msgpack", "multipart"))
        v = Validation()
        audio, language, ignore = None, None, True      # server default: ignore timestamps
        if kind == "msgpack":
            if not isinstance(value, dict):
                v.add([], "model_attributes_type", "Input should be a valid dictionary")
                v.raise_if_any()
            audio = value.get("audio")
            if audio is not None and not isinstance(audio, bytes):
                v.add(["audio"], "bytes_type", "Input should be a valid bytes")
                audio = None
            if value.get("language") is not None:
                language = v.string(["language"], value["language"])
            if value.get("ignore_timestamps") is not None:
                ignore = v.boolean(["ignore_timestamps"], value["ignore_timestamps"])
        else:
            fields = fields_from_parts(value)
            got = fields.get("audio", [])
            if got:
                audio = got[0].data if isinstance(got[0], FilePart) else got[0].encode()
            if fields.get("language"):
                language = str(fields["language"][0])
            if fields.get("ignore_timestamps"):
                ignore = parse_bool(fields["ignore_timestamps"][0])
                if ignore is None:
                    v.add(["ignore_timestamps"], "bool_parsing",
                          "Input should be a valid boolean, unable to interpret input")
        if audio is None and ["audio"] not in [i["loc"] for i in v.items]:
            v.add(["audio"], "missing", "Field required")
        elif audio is not None and len(audio) == 0:
            v.add(["audio"], "bytes_too_short", "Audio must not be empty", {"min_length": 1})
        v.raise_if_any()
        duration = audio_duration(audio)
        return json_reply(200, {"text": TRANSCRIPT, "duration": duration,
                                "segments": [] if ignore else transcript_segments(duration),
                                "language": language or "en"})

    # --- wallet -------------------------------------------------------------------------

    def wallet(self, req, user, what):
        if user not in ("self", LOCAL_USER["_id"]):
            return error_reply(403, "Permission denied")
        created, now = SEED_CREATED, time.time()
        if what == "package":
            return json_reply(200, {"_id": "package-" + LOCAL_USER["_id"][:24],
                                    "user_id": LOCAL_USER["_id"], "type": "free",
                                    "total": 1000, "balance": 800,
                                    "created_at": iso(created), "updated_at": iso(now),
                                    "finished_at": iso(created + 366 * 86400 * 5)})
        check = False
        for k, val in parse_qsl(req.query, keep_blank_values=True):
            if k == "check_free_credit":
                check = parse_bool(val)
                if check is None:
                    v = Validation("query")
                    v.add(["check_free_credit"], "bool_parsing",
                          "Input should be a valid boolean, unable to interpret input")
                    v.raise_if_any()
        return json_reply(200, {"_id": "credit-" + LOCAL_USER["_id"][:25],
                                "user_id": LOCAL_USER["_id"], "credit": "10.00",
                                "cumulative_top_up": "10.00", "created_at": iso(created),
                                "updated_at": iso(now), "has_phone_sha256": False,
                                "has_free_credit": True if check else None})

    # --- voices -------------------------------------------------------------------------

    def create_voice(self, req):
        fields = self.body_fields(req, ("multipart", "json", "msgpack", "form"))
        spec = validate_create(fields)
        now = time.time()
        vid = new_id()
        with self.state.lock:
            delay = self.state.config["train_delay"]
            samples = []
            if spec["generate_sample"]:
                samples.append({"title": "Default sample", "text": TRANSCRIPT,
                                "task_id": new_id(),
                                "audio": "https://local.fish/samples/%s.mp3" % vid})
            voice = Voice(vid, spec["title"], now, delay, True, LOCAL_USER,
                          description=spec["description"],
                          cover_image=("https://local.fish/covers/%s.png" % vid)
                          if spec["cover_image"] else "",
                          visibility=spec["visibility"], tags=spec["tags"],
                          texts=spec["texts"], files=spec["files"], samples=samples)
            self.state.voices[vid] = voice
            return json_reply(201, voice.entity(now))

    def get_voice(self, vid):
        with self.state.lock:
            voice = self.state.voices.get(vid)
            if voice is None:
                return error_reply(404, "Model not found")
            return json_reply(200, voice.entity(time.time()))

    def owned_voice(self, vid):
        voice = self.state.voices.get(vid)
        if voice is None:
            raise HttpError(error_reply(404, "Model not found"))
        if not voice.is_self:
            raise HttpError(error_reply(403, "You do not have permission to modify this model"))
        return voice

    def update_voice(self, req, vid):
        with self.state.lock:
            self.owned_voice(vid)                  # 404/403 before looking at the body
        fields = self.body_fields(req, ("form", "multipart", "json", "msgpack"))
        changes = validate_update(fields)
        with self.state.lock:
            voice = self.owned_voice(vid)          # may have been deleted meanwhile
            for key, value in changes.items():
                if key == "cover_image":
                    voice.cover_image = "https://local.fish/covers/%s-%d.png" % (
                        vid, int(time.time() * 1000))
                else:
                    setattr(voice, key, value)
            voice.updated = time.time()
        return json_reply(200, {"status": "ok"})

    def delete_voice(self, vid):
        with self.state.lock:
            self.owned_voice(vid)
            del self.state.voices[vid]
        return json_reply(200, {"status": "ok"})

    def list_voices(self, req):
        q = parse_list_query(req.query)
        now = time.time()
        with self.state.lock:
            voices = list(self.state.voices.values())
            matched = [vo for vo in voices if voice_matches(vo, q)]
            if q["sort_by"] == "created_at":
                matched.sort(key=lambda vo: -vo.created)
            elif q["sort_by"] == "task_count":
                matched.sort(key=lambda vo: (-vo.task_count, -vo.created))
            else:                                  # "score": popularity, then recency
                matched.sort(key=lambda vo: (-(vo.task_count + vo.like_count), -vo.created))
            start = (q["page_number"] - 1) * q["page_size"]
            page = matched[start:start + q["page_size"]]
            return json_reply(200, {"total": len(matched),
                                    "items": [vo.entity(now) for vo in page]})


# ---------------------------------------------------------------------------
# Validation of the API bodies (pure functions; raise HttpError with a 422)
# ---------------------------------------------------------------------------

def validate_tts(obj):
    """Check a TTSRequest (fish-api.md §2.2). Unknown keys are ignored."""
    v = Validation()
    if not isinstance(obj, dict):
        v.add([], "model_attributes_type", "Input should be a valid dictionary or object")
        v.raise_if_any()
    out = {"reference_ids": []}

    if "text" not in obj:
        v.add(["text"], "missing", "Field required")
    else:
        out["text"] = v.string(["text"], obj["text"], non_empty=True)

    fmt = "mp3"
    if "format" in obj:
        fmt = v.choice(["format"], obj["format"], FORMATS)
    out["format"] = fmt

    ranges = {"temperature": (0, 1, False), "top_p": (0, 1, False),
              "chunk_length": (100, 300, True), "min_chunk_length": (0, 100, True),
              "early_stop_threshold": (0, 1, False), "max_new_tokens": (None, None, True),
              "repetition_penalty": (None, None, False)}
    for key, (lo, hi, integer) in ranges.items():
        if key in obj:
            v.number([key], obj[key], lo, hi, integer)
    for key in ("normalize", "condition_on_previous_chunks"):
        if key in obj:
            v.boolean([key], obj[key])
    if "latency" in obj:
        v.choice(["latency"], obj["latency"], LATENCIES)

    out["mp3_bitrate"] = 128
    if "mp3_bitrate" in obj:
        out["mp3_bitrate"] = v.choice(["mp3_bitrate"], obj["mp3_bitrate"], MP3_BITRATES)
    if "opus_bitrate" in obj:
        v.choice(["opus_bitrate"], obj["opus_bitrate"], OPUS_BITRATES)

    rate = obj.get("sample_rate")
    if rate is not None:
        rate = v.number(["sample_rate"], rate, integer=True)
        if rate is not None and fmt is not None:
            rate = v.choice(["sample_rate"], rate, SAMPLE_RATES[fmt])
    elif fmt is not None:
        rate = DEFAULT_SAMPLE_RATE[fmt]
    out["sample_rate"] = rate

    prosody = obj.get("prosody")
    if prosody is not None:
        if not isinstance(prosody, dict):
            v.add(["prosody"], "model_type", "Input should be a valid dictionary or object")
        else:
            if "speed" in prosody:
                v.number(["prosody", "speed"], prosody["speed"], 0.5, 2)
            if "volume" in prosody:
                v.number(["prosody", "volume"], prosody["volume"])
            if "normalize_loudness" in prosody:
                v.boolean(["prosody", "normalize_loudness"], prosody["normalize_loudness"])

    refs = obj.get("references")
    if refs is not None:
        if not isinstance(refs, list):
            v.add(["references"], "list_type", "Input should be a valid list")
        else:
            for i, ref in enumerate(refs):
                if isinstance(ref, list):          # multi-speaker: a list per speaker
                    for j, r in enumerate(ref):
                        check_reference(v, ["references", i, j], r)
                else:
                    check_reference(v, ["references", i], ref)

    rid = obj.get("reference_id")
    if rid is not None:
        if isinstance(rid, str):
            out["reference_ids"] = [rid]
        elif isinstance(rid, list) and all(isinstance(x, str) for x in rid):
            out["reference_ids"] = list(rid)       # multi-speaker
        else:
            v.add(["reference_id"], "string_type", "Input should be a valid string")

    if "features" in obj and obj["features"] is not None:
        if not isinstance(obj["features"], list):
            v.add(["features"], "list_type", "Input should be a valid list")
    v.raise_if_any()
    return out


def check_reference(v, loc, ref):
    if not isinstance(ref, dict):
        v.add(loc, "model_type", "Input should be a valid dictionary or object")
        return
    if "audio" not in ref:
        v.add(loc + ["audio"], "missing", "Field required")
    elif not isinstance(ref["audio"], bytes):
        # JSON has no bytes type: inline reference audio needs msgpack bin.
        v.add(loc + ["audio"], "bytes_type", "Input should be a valid bytes")
    if "text" not in ref:
        v.add(loc + ["text"], "missing", "Field required")
    else:
        v.string(loc + ["text"], ref["text"])


def _text_value(v, fields, name, errors_loc=None):
    """The single text value of a form field, or None when absent."""
    values = fields.get(name)
    if not values:
        return None
    value = values[-1]
    if isinstance(value, FilePart):
        try:
            return value.data.decode("utf-8")
        except UnicodeDecodeError:
            v.add([errors_loc or name], "string_type", "Input should be a valid string")
            return None
    return value


def _bool_field(v, fields, name, default):
    raw = _text_value(v, fields, name)
    if raw is None:
        return default
    b = parse_bool(raw)
    if b is None:
        v.add([name], "bool_parsing", "Input should be a valid boolean, unable to interpret input")
        return default
    return b


def _text_list(v, fields, name):
    out = []
    for i, value in enumerate(fields.get(name, [])):
        if isinstance(value, FilePart):
            try:
                value = value.data.decode("utf-8")
            except UnicodeDecodeError:
                v.add([name, i], "string_type", "Input should be a valid string")
                continue
        out.append(value)
    return out


def validate_create(fields):
    """Check a POST /model body (fish-api.md §3.1)."""
    v = Validation()
    typ = _text_value(v, fields, "type")
    if typ is None:
        v.add(["type"], "missing", "Field required")
    elif typ != "tts":
        v.choice(["type"], typ, ("tts",))
    title = _text_value(v, fields, "title")
    if title is None:
        v.add(["title"], "missing", "Field required")
    elif title.strip() == "":
        v.add(["title"], "string_too_short", "String should have at least 1 character",
              {"min_length": 1})
    mode = _text_value(v, fields, "train_mode")
    if mode is None:
        v.add(["train_mode"], "missing", "Field required")
    elif mode != "fast":
        v.choice(["train_mode"], mode, ("fast",))

    voices = fields.get("voices", [])
    if not voices:
        v.add(["voices"], "missing", "Field required")
    elif len(voices) > 20:
        v.add(["voices"], "too_long", "List should have at most 20 items after validation",
              {"max_length": 20, "actual_length": len(voices)})
    files = []
    for i, f in enumerate(voices):
        if not isinstance(f, FilePart):
            v.add(["voices", i], "value_error", "Expected UploadFile, received: <class 'str'>")
        elif not f.data:
            v.add(["voices", i], "value_error", "Uploaded voice file is empty")
        else:
            files.append({"filename": f.filename, "content_type": f.content_type,
                          "size": len(f.data)})

    visibility = _text_value(v, fields, "visibility") or "public"
    if visibility not in VISIBILITIES:
        v.choice(["visibility"], visibility, VISIBILITIES)
    covers = fields.get("cover_image", [])
    cover = covers[-1] if covers else None
    if cover is not None and not isinstance(cover, FilePart):
        v.add(["cover_image"], "value_error", "Expected UploadFile, received: <class 'str'>")
        cover = None
    if visibility == "public" and cover is None:
        v.add(["cover_image"], "missing", "Cover image is required for public models")

    texts = _text_list(v, fields, "texts")
    if len(texts) > len(voices):
        v.add(["texts"], "value_error",
              "Number of texts (%d) must not exceed number of voices (%d)"
              % (len(texts), len(voices)))
    tags = _text_list(v, fields, "tags")
    _bool_field(v, fields, "enhance_audio_quality", True)
    generate = _bool_field(v, fields, "generate_sample", False)
    description = _text_value(v, fields, "description") or ""
    v.raise_if_any()
    return {"title": title, "visibility": visibility, "cover_image": cover is not None,
            "texts": texts, "tags": tags, "description": description, "files": files,
            "generate_sample": generate}


def validate_update(fields):
    """Check a PATCH /model/{id} body; returns the attributes to change."""
    v = Validation()
    changes = {}
    title = _text_value(v, fields, "title")
    if title is not None:
        if title.strip() == "":
            v.add(["title"], "string_too_short", "String should have at least 1 character",
                  {"min_length": 1})
        changes["title"] = title
    description = _text_value(v, fields, "description")
    if description is not None:
        changes["description"] = description
    visibility = _text_value(v, fields, "visibility")
    if visibility is not None:
        if v.choice(["visibility"], visibility, VISIBILITIES) is not None:
            changes["visibility"] = visibility
    if "tags" in fields:
        changes["tags"] = _text_list(v, fields, "tags")
    covers = fields.get("cover_image", [])
    if covers:
        if isinstance(covers[-1], FilePart) and covers[-1].data:
            changes["cover_image"] = True
        else:
            v.add(["cover_image"], "value_error", "Expected UploadFile, received: <class 'str'>")
    v.raise_if_any()
    return changes


def parse_list_query(query):
    """GET /model query (fish-api.md §3.3); 422 (in: query) on bad values."""
    v = Validation("query")
    pairs = parse_qsl(query, keep_blank_values=True)
    q = {"page_size": 10, "page_number": 1, "title": None, "tags": [], "self": False,
         "author_id": None, "languages": [], "sort_by": "score"}
    for key, value in pairs:
        if key in ("page_size", "page_number"):
            lo, hi = (1, 100) if key == "page_size" else (1, None)
            try:
                n = int(value)
            except ValueError:
                v.add([key], "int_parsing",
                      "Input should be a valid integer, unable to parse string as an integer")
                continue
            if v.number([key], n, lo, hi, integer=True) is not None:
                q[key] = n
        elif key == "title":
            q["title"] = value
        elif key == "tag":
            q["tags"].append(value)
        elif key == "language":
            q["languages"].append(value)
        elif key == "author_id":
            q["author_id"] = value
        elif key == "self":
            b = parse_bool(value)
            if b is None:
                v.add(["self"], "bool_parsing",
                      "Input should be a valid boolean, unable to interpret input")
            else:
                q["self"] = b
        elif key == "sort_by":
            if v.choice(["sort_by"], value, SORT_KEYS) is not None:
                q["sort_by"] = value
        # title_language and unknown keys: accepted and ignored.
    v.raise_if_any()
    return q


def voice_matches(voice, q):
    if q["self"]:
        if not voice.is_self:
            return False
    elif q["author_id"] is not None and voice.author["_id"] != q["author_id"]:
        return False                               # author_id is ignored when self=true
    if q["title"] and q["title"].lower() not in voice.title.lower():
        return False
    if q["tags"] and not all(t in voice.tags for t in q["tags"]):
        return False                               # every requested tag must be present
    if q["languages"] and not any(lang in voice.languages for lang in q["languages"]):
        return False
    return True


def transcript_segments(duration):
    """Split the fixed transcript into two timed segments."""
    words = TRANSCRIPT.split()
    half = len(words) // 2
    mid = round(duration / 2.0, 3)
    return [{"text": " ".join(words[:half]), "start": 0.0, "end": mid},
            {"text": " ".join(words[half:]), "start": mid, "end": round(duration, 3)}]


def rechunk(pieces, size=CHUNK):
    """Coalesce an iterator of byte strings into pieces of exactly `size`
    (the last may be shorter), so clients see uniform 8 KiB chunks."""
    buf = bytearray()
    for p in pieces:
        buf += p
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


# ---------------------------------------------------------------------------
# Live TTS over WebSocket (/v1/tts/live, /v1/tts/live/with-timestamp)
# ---------------------------------------------------------------------------

def word_alignment(text, duration, closed):
    """Segments {text,start,end} for the words of one synthesis chunk, times
    relative to the chunk. Each word gets time in proportion to its length
    plus one for the space after it; normally a word ends 15 % early, a pause
    before the next. `closed` closes those gaps: the "corrected" snapshot an
    alignment-only event carries."""
    words = text.split()
    total = sum(len(w) + 1 for w in words) or 1
    segments, at = [], 0.0
    for w in words:
        span = duration * (len(w) + 1) / total
        end = at + (span if closed else span * 0.85)
        segments.append({"text": w, "start": round(at, 3), "end": round(end, 3)})
        at += span
    return segments


class LiveSession:
    """One WebSocket connection to a live TTS endpoint, run on the handler's
    thread once the 101 has been written.

    Framing (masking checks, ping answers, fragment limits, the close
    handshake) is python3-websockets' sans-I/O ServerConnection: this class
    feeds it the bytes it reads and writes what it gives back. The session
    logic on top follows fish-api.md §5 and live-tts.md §1:

      * `start` first, with a /v1/tts request (text may be ""), validated
        like /v1/tts; `text` appends to a buffer, synthesised when it
        reaches `chunk_length` characters; `flush` synthesises it now;
        `stop` synthesises the rest, sends finish/stop and closes.
      * A request-level failure (invalid start, an event before start, a
        second start, a message that is not a msgpack map with an `event`)
        ends the session: /with-timestamp sends `{"event":"error",
        "message":...}`, the only endpoint where that event is documented
        (live-tts.md §1.3); /v1/tts/live sends the documented
        `{"event":"finish","reason":"error","message":...}`. Then it closes.
      * Unknown client events are recorded and ignored, as clients must
        ignore unknown server events; text frames too.

    Audio goes out the moment a synthesis happens (no delay unless the
    `live_delay` config or an `audio_delay` fault asks for one), so a bench
    can time flush -> first audio. Outgoing items wait in a queue so that a
    stall or delay keeps reading: pongs and the client's close are still
    seen and recorded meanwhile.
    """

    def __init__(self, handler, req, fault):
        self.handler = handler
        self.state = handler.state
        self.sock = handler.connection
        self.fault = fault
        self.timestamps = req.path.endswith("/with-timestamp")
        cfg = self.state.config
        self.chunk_size = int(fault.get("audio_chunk", cfg["live_chunk"]))
        self.audio_delay = float(fault.get("audio_delay", cfg["live_delay"]))
        self.after_audio = int(fault.get("after_audio", 0))
        self.pings_left = int(fault.get("ping", 0))
        # Keepalive-style pings on a timer, idle or not (a client must answer
        # them between events too).
        self.ping_every = float(fault.get("ping_every", 0))
        self.next_ping = time.monotonic() + self.ping_every if self.ping_every > 0 else None
        # One-shot extras, sent just before the session's first audio event.
        self.before_first = [k for k in ("oversized", "text_frame", "send_event") if k in fault]
        # Faults that strike once `after_audio` audio events have gone out
        # (at the latest in place of finish): a stall first, then one ending.
        self.strikes = []
        if "stall" in fault:
            self.strikes.append("stall")
        for k in ("drop", "finish_error", "error_event"):
            if k in fault:
                self.strikes.append(k)
                break
        self.conn = None
        self.outq = collections.deque()
        self.resume_at = 0.0
        self.closing_deadline = None
        self.over = False
        self.eof = False
        self.msg_op, self.msg_parts = None, []
        self.started = False
        self.stopping = False
        self.params = None
        self.buffer = ""
        self.chunk_seq = 0
        self.offset = 0.0
        self.t0 = time.monotonic()
        self.ping_seq = 0
        headers = {}
        for k, v in req.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        self.record = {
            "path": req.path, "query": req.query, "headers": headers,
            "t_open": time.time(), "t_close": None, "ended": False, "end": None,
            "events": [],             # client events, in order
            "audio_events": 0, "audio_bytes": 0, "finish": None, "errors_sent": [],
            "pings_sent": [], "pongs": [], "pings_received": [],
            "client_close": None, "server_close": None,
            "masked": True, "protocol_error": None, "fault": dict(fault),
        }

    # --- bookkeeping (the control API reads the record under the lock) -------

    def note(self, **kv):
        with self.state.lock:
            self.record.update(kv)
            self.state.live_changed.notify_all()

    def add(self, key, item):
        with self.state.lock:
            self.record[key].append(item)

    # --- the connection -----------------------------------------------------------

    def run(self, response):
        st = self.state
        with st.lock:
            self.record["id"] = len(st.live_sessions) + 1
            st.live_sessions.append(self.record)
        st.live_delta(+1)
        try:
            self.sock.sendall(response.serialize())
            self.conn = WSServerConnection(state=WSState.OPEN, max_size=MAX_BODY)
            early = self.handler.take_buffered()
            if early:
                self.feed(early)
            if self.fault.get("bad_accept"):
                self.stopping = True               # nothing to say: wait for the client to go
                self.closing_deadline = time.monotonic() + LIVE_CLOSE_WAIT
            self.loop()
            if not self.record["end"]:
                self.note(end="closed" if self.conn.state is WSState.CLOSED else "timeout")
        except OSError as e:
            self.note(end="socket error: %s" % (e.strerror or type(e).__name__))
        except Exception as e:                     # a bug here must not go unnoticed
            log("live session error: %r" % e)
            self.note(end="server error: %r" % e)
        finally:
            self.note(ended=True, t_close=time.time())
            st.live_delta(-1)

    def loop(self):
        while not self.over:
            self.pump()
            if self.over or self.eof:
                return
            now = time.monotonic()
            if self.next_ping is not None and now >= self.next_ping \
                    and self.conn.state is WSState.OPEN:
                self.send_ping()
                self.next_ping = now + self.ping_every
            timeout = IDLE_TIMEOUT
            if self.next_ping is not None:
                timeout = max(0.0, self.next_ping - now)
            if self.closing_deadline is not None:
                if self.conn.state is WSState.CLOSED:
                    return
                timeout = self.closing_deadline - now
                if timeout <= 0:
                    return                         # the client never finished the close
            elif self.outq:
                timeout = min(timeout, max(0.0, self.resume_at - now))
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                self.feed(self.sock.recv(1 << 16))
            elif not self.outq and self.closing_deadline is None and self.next_ping is None:
                # Idle for IDLE_TIMEOUT with nothing queued: hang up politely.
                self.conn.send_close(1000, "idle")
                self.flush()
                self.note(server_close={"code": 1000, "reason": "idle"})
                self.closing_deadline = time.monotonic() + LIVE_CLOSE_WAIT

    def feed(self, data):
        conn = self.conn
        if data:
            conn.receive_data(data)
        else:
            self.eof = True
            conn.receive_eof()
        for frame in conn.events_received():
            self.on_frame(frame)
        self.flush()
        exc = conn.parser_exc
        if exc is not None and self.record["protocol_error"] is None:
            if isinstance(exc, EOFError):
                self.note(protocol_error="EOF without a close frame")
            else:
                # e.g. ProtocolError("incorrect masking"): the library failed
                # the connection with 1002 (or 1009 for a too-big message).
                self.note(protocol_error="%s: %s" % (type(exc).__name__, exc),
                          masked="masking" not in str(exc))
        if conn.state is not WSState.OPEN and self.closing_deadline is None:
            self.stopping = True
            self.outq.clear()
            self.closing_deadline = time.monotonic() + LIVE_CLOSE_WAIT

    def flush(self):
        for data in self.conn.data_to_send():
            if data:
                self.sock.sendall(data)
            else:                                  # the library's "send EOF"
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def on_frame(self, frame):
        op = frame.opcode
        if op in (OP_TEXT, OP_BINARY):
            self.msg_op, self.msg_parts = op, [frame.data]
        elif op == OP_CONT:
            self.msg_parts.append(frame.data)
        if op in (OP_TEXT, OP_BINARY, OP_CONT):
            if frame.fin:
                data, nframes = b"".join(self.msg_parts), len(self.msg_parts)
                self.msg_parts = []
                self.on_message(self.msg_op, data, nframes)
        elif op == OP_PING:                         # the library has queued the pong
            self.add("pings_received", frame.data.decode("latin-1"))
        elif op == OP_PONG:
            self.add("pongs", {"data": frame.data.decode("latin-1"), "t": time.time()})
        elif op == OP_CLOSE:
            rcvd = self.conn.close_rcvd
            self.note(client_close={"code": rcvd.code, "reason": rcvd.reason})

    # --- client events ----------------------------------------------------------

    def on_message(self, op, data, nframes):
        entry = {"event": None, "t": time.time(), "frames": nframes}
        if op == OP_TEXT:
            entry.update(kind="text_frame", text=data.decode("utf-8", "replace"),
                         ignored="text frame")
            self.add("events", entry)
            return
        try:
            msg = decode_msgpack(data)
        except Exception:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            entry.update(kind="invalid", data_b64=base64.b64encode(data).decode("ascii"))
            self.add("events", entry)
            if not self.stopping:
                self.refuse("Invalid message: expected a msgpack map with an 'event'")
            return
        ev = entry["event"] = msg["event"]
        if ev == "start":
            entry["request"] = jsonable(msg.get("request"))
        elif ev == "text":
            entry["text"] = jsonable(msg.get("text"))
        if self.stopping:
            entry["ignored"] = "after stop"
            self.add("events", entry)
            return
        if ev not in ("start", "text", "flush", "stop"):
            entry["ignored"] = "unknown event"
            self.add("events", entry)
            return
        self.add("events", entry)
        if ev == "start":
            if self.started:
                self.refuse("Invalid event: start received twice")
                return
            try:
                self.begin(msg.get("request"))
            except HttpError as e:
                self.refuse(self.error_message(e.reply))
            return
        if not self.started:
            self.refuse("Invalid event: %r before start" % ev)
            return
        if ev == "text":
            text = msg.get("text")
            if not isinstance(text, str):
                self.refuse("Invalid text event: 'text' must be a string")
                return
            self.buffer += text
            if len(self.buffer) >= self.params["chunk_length"]:
                self.synthesize()
        elif ev == "flush":
            self.synthesize()
        else:                                      # stop
            self.synthesize()
            self.outq.append(("finish",))
            self.stopping = True

    @staticmethod
    def error_message(reply):
        """One line from a /v1/tts error reply: the 422 list or the message."""
        try:
            body = json.loads(reply.body.decode("utf-8"))
        except ValueError:
            return reply.body.decode("utf-8", "replace")
        if isinstance(body, list):
            return "Invalid start request: " + "; ".join(
                "%s: %s" % (".".join(item["loc"]), item["msg"]) for item in body)
        return str(body.get("message", body))

    def begin(self, request):
        """Validate `start`'s request as /v1/tts's body, except that `text`
        may be "" or missing (the SDKs send "")."""
        if not isinstance(request, dict):
            v = Validation()
            v.add(["request"], "model_attributes_type",
                  "Input should be a valid dictionary or object")
            v.raise_if_any()
        text = request.get("text", "")
        probe = dict(request)
        if text == "":
            probe["text"] = "-"                    # stands in for the empty text
        params = validate_tts(probe)
        self.handler.check_references(params["reference_ids"])
        params["text"] = text
        params["chunk_length"] = request.get("chunk_length") or LIVE_CHUNK_LENGTH
        self.params = params
        self.started = True
        self.buffer = text
        self.chunk_seq, self.offset = 0, 0.0
        self.t0 = time.monotonic()
        if len(self.buffer) >= params["chunk_length"]:
            self.synthesize()

    def refuse(self, message):
        """A request-level failure: the error event of this endpoint, then close."""
        self.outq.clear()
        key = self.fault.get("error_key", "message")
        if self.timestamps:
            self.send_event({"event": "error", key: message})
        else:
            self.send_event({"event": "finish", "reason": "error", "message": message})
            self.note(finish={"reason": "error", "message": message})
        self.add("errors_sent", message)
        self.close_after_finish(normal=False)

    # --- audio ---------------------------------------------------------------------

    def synthesize(self):
        text, self.buffer = self.buffer, ""
        if not text.strip():
            return                                 # nothing to say, nothing sent
        p = self.params
        fmt, rate = p["format"], p["sample_rate"]
        duration = max(0.2, 0.05 * len(text))      # as make_audio: grows with the text
        _, pieces = make_audio(fmt, text, rate, p["mp3_bitrate"])
        audio = b"".join(pieces)
        size = self.chunk_size
        if self.audio_delay > 0:
            self.outq.append(("wait", self.audio_delay))
        seq, offset = self.chunk_seq, round(self.offset, 6)
        full = word_alignment(text, duration, closed=False)
        shown = -1
        for start in range(0, len(audio), size):
            piece = audio[start:start + size]
            extras = None
            if self.timestamps:
                # Cumulative snapshot of the words whose audio has begun by the
                # end of this piece; None (unchanged) when no word was added.
                covered = duration * (start + len(piece)) / len(audio)
                words = [s for s in full if s["start"] < covered]
                if start + size >= len(audio):
                    words = full
                alignment = None
                if len(words) != shown:
                    shown = len(words)
                    alignment = {"audio_duration": round(duration, 3), "segments": words}
                extras = {"content": text, "alignment": alignment, "chunk_seq": seq,
                          "chunk_audio_offset_sec": offset}
            self.outq.append(("audio", piece, extras))
        if self.timestamps and self.fault.get("alignment_fix"):
            # An audio event with no audio that only corrects the alignment
            # (live-tts.md §1.1): clients must not take it for the end.
            self.outq.append(("audio", b"", {
                "content": text,
                "alignment": {"audio_duration": round(duration, 3),
                              "segments": word_alignment(text, duration, closed=True)},
                "chunk_seq": seq, "chunk_audio_offset_sec": offset}))
        self.chunk_seq += 1
        self.offset += duration

    # --- sending -----------------------------------------------------------------------

    def pump(self):
        """Send queued items whose time has come."""
        while self.outq and not self.over:
            if self.conn.state is not WSState.OPEN:
                self.outq.clear()
                return
            now = time.monotonic()
            if self.resume_at > now:
                return
            item = self.outq[0]
            if item[0] in ("audio", "finish") and self.strikes \
                    and self.record["audio_events"] >= self.after_audio:
                self.strike(self.strikes.pop(0))
                continue
            self.outq.popleft()
            if item[0] == "wait":
                self.resume_at = now + item[1]
            elif item[0] == "audio":
                self.send_audio(item[1], item[2])
            elif item[0] == "finish":
                self.send_event({"event": "finish", "reason": "stop"})
                self.note(finish={"reason": "stop"})
                self.close_after_finish(normal=True)

    def strike(self, kind):
        f = self.fault
        if kind == "stall":
            if f.get("stall_mid_frame"):
                self.stall_mid_frame = float(f["stall"])   # the next message stalls inside
            else:
                self.resume_at = time.monotonic() + float(f["stall"])
            self.note(stalled=True)
        elif kind == "drop":
            self.drop(f["drop"])
        elif kind == "finish_error":
            self.outq.clear()
            self.send_event({"event": "finish", "reason": "error", "message": f["finish_error"]})
            self.note(finish={"reason": "error", "message": f["finish_error"]})
            self.close_after_finish(normal=False)
        elif kind == "error_event":
            self.outq.clear()
            self.send_event({"event": "error", f.get("error_key", "message"): f["error_event"]})
            self.add("errors_sent", f["error_event"])
            self.close_after_finish(normal=False)

    def drop(self, how):
        """Hang up mid-stream with no close frame: FIN, or RST."""
        self.outq.clear()
        self.over = True
        if how == "rst":
            # An RST makes the peer's kernel discard unread data; give it a
            # moment to read what was sent, as the HTTP mid_body fault does.
            time.sleep(0.1)
            self.handler.abort_rst()
        else:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.note(end="dropped (%s)" % how)

    def send_audio(self, piece, extras):
        for kind in self.before_first:
            if kind == "oversized":
                # One audio event whose whole message is exactly N bytes.
                want = int(self.fault["oversized"])
                n = max(0, want - len(msgpack.packb({"event": "audio", "audio": b""})))
                while n > 0 and len(msgpack.packb({"event": "audio", "audio": bytes(n)})) > want:
                    n -= 1
                self.send_message(msgpack.packb({"event": "audio", "audio": bytes(n)}))
            elif kind == "text_frame":
                # Text frames carry no events here; clients must ignore them.
                self.conn.send_text(self.fault["text_frame"].encode("utf-8"))
                self.flush()
            else:
                self.send_event(self.fault["send_event"])
        self.before_first = []
        msg = {"event": "audio", "audio": piece}
        if extras is not None:
            msg.update(extras)
            msg["time"] = int((time.monotonic() - self.t0) * 1000)
        ping = self.pings_left > 0
        if ping:
            self.pings_left -= 1
        self.send_message(msgpack.packb(msg, use_bin_type=True), ping=ping)
        with self.state.lock:
            self.record["audio_events"] += 1
            self.record["audio_bytes"] += len(piece)

    def send_ping(self):
        self.ping_seq += 1
        payload = b"fish-ping-%d" % self.ping_seq
        self.add("pings_sent", payload.decode("ascii"))
        self.conn.send_ping(payload)
        self.flush()

    def send_event(self, event):
        self.send_message(msgpack.packb(event, use_bin_type=True))

    def send_message(self, data, ping=False):
        """One binary message; fragmented into continuation frames of N bytes
        under a `fragment` fault, with a ping between the first two fragments
        when one is due (control frames may sit inside a fragmented message)."""
        conn, frag = self.conn, self.fault.get("fragment")
        payload = None
        if ping:
            self.ping_seq += 1
            payload = b"fish-ping-%d" % self.ping_seq
            self.add("pings_sent", payload.decode("ascii"))
        if frag and len(data) > frag:
            parts = [data[i:i + frag] for i in range(0, len(data), frag)]
            conn.send_binary(parts[0], fin=False)
            if payload is not None:
                conn.send_ping(payload)
            for i, part in enumerate(parts[1:], 2):
                conn.send_continuation(part, fin=i == len(parts))
        else:
            if payload is not None:
                conn.send_ping(payload)
            conn.send_binary(data)
        stall = getattr(self, "stall_mid_frame", None)
        if stall is None:
            self.flush()
            return
        # Write half of the library's bytes for this message, then stall with
        # the socket open: the client sits inside an unfinished frame.
        self.stall_mid_frame = None
        out = b"".join(self.conn.data_to_send())
        half = len(out) // 2
        self.sock.sendall(out[:half])
        held = bytearray()
        deadline = time.monotonic() + stall
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    self.eof = True                # the client gave up: stop here
                    self.over = True
                    self.note(end="client hung up during a mid-frame stall")
                    return
                held += chunk                      # read after the frame is complete
        self.sock.sendall(out[half:])
        if held:
            self.feed(bytes(held))

    def close_after_finish(self, normal):
        """After finish (or an error event): close the way the fault says."""
        self.outq.clear()
        if normal and self.fault.get("keep_open"):
            # Another start may follow on this socket (live-tts.md §1.1).
            self.started, self.stopping, self.params = False, False, None
            return
        self.stopping = True
        if self.fault.get("no_close_frame"):
            # What the real server often does (live-tts.md §1.4): finish,
            # then a plain TCP close (FIN) with no close frame.
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.over = True
            self.note(end="closed without a close frame")
            return
        code = int(self.fault.get("close_code", 1000))
        reason = self.fault.get("close_reason", "")
        self.conn.send_close(code, reason)
        self.flush()
        self.note(server_close={"code": code, "reason": reason})
        self.closing_deadline = time.monotonic() + LIVE_CLOSE_WAIT


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True          # in-flight responses never block shutdown
    block_on_close = False
    request_queue_size = 1024      # 200+ simultaneous connects must not be refused
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can hang.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def handle_error(self, request, client_address):
        log("connection error from %s: %r" % (client_address[0], sys.exc_info()[1]))


def main(argv=None):
    global LOG_QUIET
    ap = argparse.ArgumentParser(description="Local Fish Audio API test server")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--train-delay", type=float, default=0.0,
                    help="seconds a new voice takes to become trained")
    ap.add_argument("--tts-delay", type=float, default=0.0,
                    help="seconds /v1/tts waits before its response headers")
    ap.add_argument("--quiet", action="store_true", help="no per-request logs")
    args = ap.parse_args(argv)
    LOG_QUIET = args.quiet

    server = Server((args.host, args.port), Handler)
    server.state = State(args.api_key, args.train_delay, args.tts_delay)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sys.stdout.write("LISTENING %d\n" % server.server_address[1])
    sys.stdout.flush()
    # The first tone at a rate takes ~20 ms to compute; do the default rate
    # now, so the first flush -> audio a bench times is not that computation.
    threading.Thread(target=tone_second, args=(44100,), daemon=True).start()
    log("serving on %s:%d" % (args.host, server.server_address[1]))
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
