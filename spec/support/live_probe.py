#!/usr/bin/python3
"""A WebSocket client for checking the local server's live TTS endpoints.

spec/server_live_spec.lua runs it as a subprocess to check the server side on
its own, independently of fish's C client. The framing and the handshake
checks (Sec-WebSocket-Accept, server frames unmasked, ...) are Debian's
python3-websockets sans-I/O ClientConnection on a plain socket, so the probe
sees every frame: fragments, pings, text frames, the close frame or its
absence.

Usage: live_probe.py '<json script>'   (or the script on stdin)
       live_probe.py --serve FIFO       (one JSON script per line from FIFO,
                                         one JSON result per line on stdout)

    {"url": "ws://127.0.0.1:PORT/v1/tts/live",
     "headers": {"Authorization": "Bearer KEY", "model": "s2-pro"},
     "drop_headers": ["Sec-WebSocket-Key"],   # remove from the handshake
     "timeout": 5,                            # overall limit, seconds
     "keep_audio": false,                     # also return all audio, base64
     "eager": [{"event": "start", ...}],      # sent with the upgrade request
     "steps": [
        {"send": {"event": "start", "request": {"text": ""}}},
        {"send": {"event": "text", "text": "Hello"}},
        {"send": {"event": "flush"}},
        {"wait": {"event": "audio", "count": 1}},   # or {"wait": "finish"}
        {"sleep": 0.1},
        {"send_text": "hi"},                 # a text frame
        {"send_bytes_b64": "..."},           # a binary message, raw bytes
        {"send_unmasked": {"event": "stop"}},# a binary frame with no mask
        {"ping": "abc"},
        {"close": {"code": 4000, "reason": "bye"}}
     ]}

Values of the form {"$bin": base64} in sent maps become msgpack bin. After
the steps the probe keeps reading until the server closes (close frame or
EOF) or the timeout passes, then prints one JSON object (see `result`).
{"parallel": [script, ...]} runs several scripts at once, on threads, and
prints a list of results.
"""

import base64
import json
import select
import socket
import struct
import sys
import threading
import time

import msgpack
from websockets.client import ClientConnection
from websockets.connection import State
from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from websockets.uri import parse_uri

OPS = {OP_TEXT: "text", OP_BINARY: "binary", OP_CONT: "cont", OP_PING: "ping",
       OP_PONG: "pong", OP_CLOSE: "close"}


def from_json(v):
    if isinstance(v, dict):
        if set(v) == {"$bin"}:
            return base64.b64decode(v["$bin"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def to_json(v):
    if isinstance(v, (bytes, bytearray)):
        return {"$bin": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, dict):
        return {str(k): to_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    return v


class Probe:
    def __init__(self, script):
        self.script = script
        self.t0 = time.monotonic()
        self.deadline = self.t0 + float(script.get("timeout", 5))
        self.wsuri = parse_uri(script["url"])
        self.conn = ClientConnection(self.wsuri, max_size=None)
        self.sock = None
        self.eof = False
        self.parts, self.part_op = [], None
        self.audio = bytearray()
        self.result = {
            "status": None, "headers": {}, "body": None, "handshake_error": None,
            "messages": [],       # decoded server messages, in order
            "frames": [],         # every frame: {op, fin, len}
            "pings": [],          # payloads of the server's pings (answered by the library)
            "close": None,        # the server's close frame {code, reason}, if any
            "eof": False,         # the server closed TCP
            "error": None,        # a protocol error the library found
            "timed_out": False,
            "audio_len": 0,
            "steps": [],          # when each step ran: {t, step}
        }

    def now(self):
        return round(time.monotonic() - self.t0, 6)

    # --- I/O --------------------------------------------------------------------

    def flush(self):
        for data in self.conn.data_to_send():
            if data:
                try:
                    self.sock.sendall(data)
                except OSError:
                    pass                           # the server may be gone already
            else:
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def read_once(self, timeout):
        """Read what arrives within `timeout`; False once nothing more can come."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
            self.result["reset"] = True
        try:
            if data:
                self.conn.receive_data(data)
            else:
                self.eof = True
                self.result["eof"] = True
                self.result["eof_t"] = self.now()
                self.conn.receive_eof()
        except EOFError as e:
            # The library raises this when the server hangs up before a
            # whole handshake response.
            self.result["error"] = "EOFError: %s" % e
        for ev in self.conn.events_received():
            self.on_event(ev)
        self.flush()
        exc = self.conn.parser_exc
        if exc is not None and not isinstance(exc, EOFError) and self.result["error"] is None:
            self.result["error"] = "%s: %s" % (type(exc).__name__, exc)
        return not self.eof

    def on_event(self, ev):
        if not hasattr(ev, "opcode"):              # the handshake Response
            r = self.result
            r["status"] = ev.status_code
            r["headers"] = {k.lower(): v for k, v in ev.headers.raw_items()}
            if ev.body is not None:
                r["body"] = ev.body.decode("utf-8", "replace")
            if self.conn.handshake_exc is not None:
                r["handshake_error"] = "%s: %s" % (type(self.conn.handshake_exc).__name__,
                                                   self.conn.handshake_exc)
            return
        op = ev.opcode
        self.result["frames"].append({"op": OPS[op], "fin": ev.fin, "len": len(ev.data),
                                      "t": self.now()})
        if op in (OP_TEXT, OP_BINARY):
            self.part_op, self.parts = op, [ev.data]
        elif op == OP_CONT:
            self.parts.append(ev.data)
        elif op == OP_PING:
            self.result["pings"].append(ev.data.decode("latin-1"))
        elif op == OP_CLOSE:
            rcvd = self.conn.close_rcvd
            self.result["close"] = {"code": rcvd.code, "reason": rcvd.reason, "t": self.now()}
        if op in (OP_TEXT, OP_BINARY, OP_CONT) and ev.fin:
            self.on_message(self.part_op, b"".join(self.parts), len(self.parts))

    def on_message(self, op, data, nframes):
        m = {"t": self.now(), "frames": nframes, "size": len(data)}
        if op == OP_TEXT:
            m["text_frame"] = data.decode("utf-8", "replace")
        else:
            try:
                msg = msgpack.unpackb(data, raw=False)
            except Exception as e:
                m["undecodable"] = str(e)
                msg = None
            if isinstance(msg, dict):
                for k, v in msg.items():
                    if k == "audio" and isinstance(v, (bytes, bytearray)):
                        m["audio_len"] = len(v)
                        m["audio_head"] = bytes(v[:8]).hex()
                        self.audio += v
                        self.result["audio_len"] += len(v)
                    else:
                        m[str(k)] = to_json(v)
            elif msg is not None:
                m["value"] = to_json(msg)
        self.result["messages"].append(m)

    # --- the script ----------------------------------------------------------------

    def handshake(self):
        host, port = self.wsuri.host, self.wsuri.port
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = self.conn.connect()
        for name in self.script.get("drop_headers", []):
            if name in request.headers:
                del request.headers[name]
        for k, v in self.script.get("headers", {}).items():
            if k in request.headers:
                del request.headers[k]
            request.headers[k] = v
        self.conn.send_request(request)
        eager = self.script.get("eager")
        if eager:
            # Events sent with the upgrade request, before the 101 arrives, in
            # the same write: the server must not lose bytes it read early.
            # A second, already-open library connection frames them.
            framer = ClientConnection(self.wsuri, state=State.OPEN)
            for ev in eager:
                framer.send_binary(msgpack.packb(from_json(ev), use_bin_type=True))
            self.sock.sendall(b"".join(self.conn.data_to_send() + framer.data_to_send()))
        self.flush()
        while self.result["status"] is None and time.monotonic() < self.deadline:
            if not self.read_once(self.deadline - time.monotonic()):
                break
        return self.conn.state is State.OPEN

    def send_frame_unmasked(self, payload):
        # Written by hand on purpose: the library always masks client frames,
        # and this step exists to see the server refuse an unmasked one.
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x82, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x82, 126, n)
        else:
            head = struct.pack("!BBQ", 0x82, 127, n)
        self.sock.sendall(head + payload)

    def waited_enough(self, want):
        msgs = self.result["messages"]
        if want == "finish" or want == {"event": "finish"}:
            return any(m.get("event") in ("finish", "error") for m in msgs)
        event, count = want.get("event"), int(want.get("count", 1))
        return sum(1 for m in msgs if event is None or m.get("event") == event) >= count

    def step(self, st):
        conn = self.conn
        self.result["steps"].append({"t": self.now(), "step": sorted(st)[0]})
        if "sleep" in st:
            end = time.monotonic() + float(st["sleep"])
            while time.monotonic() < end and self.read_once(end - time.monotonic()):
                pass
        elif "wait" in st:
            while not self.waited_enough(st["wait"]) and time.monotonic() < self.deadline:
                if not self.read_once(min(0.05, self.deadline - time.monotonic())) \
                        or conn.state is not State.OPEN:
                    break
        elif conn.state is not State.OPEN:
            self.result.setdefault("skipped", []).append(st)
        elif "send" in st:
            conn.send_binary(msgpack.packb(from_json(st["send"]), use_bin_type=True))
        elif "send_text" in st:
            conn.send_text(st["send_text"].encode("utf-8"))
        elif "send_bytes_b64" in st:
            conn.send_binary(base64.b64decode(st["send_bytes_b64"]))
        elif "send_unmasked" in st:
            self.send_frame_unmasked(msgpack.packb(from_json(st["send_unmasked"]),
                                                   use_bin_type=True))
        elif "ping" in st:
            conn.send_ping(st["ping"].encode("utf-8"))
        elif "close" in st:
            c = st["close"]
            conn.send_close(c.get("code", 1000), c.get("reason", ""))
        self.flush()

    def run(self):
        try:
            if self.handshake():
                for st in self.script.get("steps", []):
                    self.step(st)
                while not self.eof and time.monotonic() < self.deadline:
                    self.read_once(self.deadline - time.monotonic())
                self.result["timed_out"] = not self.eof
            # A refused or failed handshake ends the probe at once: the
            # server may keep an HTTP connection open after a refusal.
        except Exception as e:                     # a result, never a dead probe process
            self.result["error"] = self.result["error"] or "%s: %s" % (type(e).__name__, e)
        finally:
            if self.sock is not None:
                self.sock.close()
        self.result["state"] = self.conn.state.name
        if self.script.get("keep_audio"):
            self.result["audio_b64"] = base64.b64encode(bytes(self.audio)).decode("ascii")
        return self.result


def run_script(script):
    """One script, or {"parallel": [scripts]} run at once on threads (for
    checks of concurrent sessions); the latter gives a list of results."""
    if "parallel" in script:
        results = [None] * len(script["parallel"])

        def one(i, sc):
            results[i] = Probe(sc).run()
        threads = [threading.Thread(target=one, args=(i, sc))
                   for i, sc in enumerate(script["parallel"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
    return Probe(script).run()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        # Serve scripts, one JSON line each, read from a FIFO; answer one JSON
        # line each on stdout. Saves a Python start per probe (~0.3 s on a
        # busy machine), which is most of what a spec full of probes costs.
        with open(sys.argv[2], "r") as fifo:
            for line in fifo:
                if line.strip():
                    sys.stdout.write(json.dumps(run_script(json.loads(line))) + "\n")
                    sys.stdout.flush()
        return 0
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    sys.stdout.write(json.dumps(run_script(json.loads(raw))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
