#!/usr/bin/python3
"""A scripted WebSocket server for spec/live_socket_spec.lua.

Listeners on 127.0.0.1, printed once all accept as one line on stdout:
`LISTENING <port> <raw_port> <tls_port>` (tls_port is 0 without
`--tls CERT KEY`; it serves the same scripts as <port>, over TLS whose
ALPN offers h2 before http/1.1, so a client that does not insist on
HTTP/1.1 gets h2).

- <port> runs Debian's python3-websockets (10.x), a WebSocket
  implementation nobody in this project wrote, so the client is checked
  against someone else's reading of RFC 6455. The path picks the script:
    /echo                 echo every message back, as it came
    /headers              first send one message, JSON of the Upgrade
                          request's path and headers and the ALPN
                          protocol TLS chose (null without TLS), then echo
    /refuse/<status>      refuse the upgrade: that status, a JSON body,
                          and Retry-After: 7 on a 429
    /ping                 ping with b"are you there", wait for the pong
                          (websockets checks its payload), then send
                          b"pong ok" or b"no pong"
    /close/<code>/<why>   close with that code and reason at once
    /fragments            send b"abcdef" as three fragments
    /send/<n>             send one message of n bytes (b"x" * n)
    /drop                 drop the TCP connection, no close frame
    /masked               write a masked frame (a server must not)
    /count                after the client's close, send nothing; the
                          close code and reason it got go to stderr
- <raw_port> speaks bytes for faults a library will not produce:
    /bad_accept           101 with a wrong Sec-WebSocket-Accept
    /ping_between         101, then a fragmented message with a ping
                          between its fragments; reads the client's
                          frames and sends b"pong ok" once a masked pong
                          with the ping's payload came, then closes
    /refuse_chunked       429 with a chunked JSON body
    /silent               never answer
    /head_then_drop       101 head, then drop the connection at once

SIGTERM stops it. Logs go to stderr.
"""

import asyncio
import base64
import hashlib
import http
import json
import os
import signal
import ssl
import struct
import sys

import websockets

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def log(*args):
    print("ws_peer:", *args, file=sys.stderr, flush=True)


# ---- the websockets side --------------------------------------------------

def refusal(path, headers):
    parts = path.split("?")[0].split("/")
    if len(parts) >= 3 and parts[1] == "refuse":
        status = int(parts[2])
        body = json.dumps({"status": status, "message": "refused by ws_peer"}).encode()
        extra = [("Content-Type", "application/json")]
        if status == 429:
            extra.append(("Retry-After", "7"))
        return (http.HTTPStatus(status), extra, body)
    return None


async def handler(ws, path):
    parts = path.split("?")[0].split("/")
    what = parts[1] if len(parts) > 1 else ""
    try:
        if what == "headers":
            seen = {k.lower(): v for k, v in ws.request_headers.raw_items()}
            tls = ws.transport.get_extra_info("ssl_object")
            alpn = tls.selected_alpn_protocol() if tls else None
            await ws.send(json.dumps({"path": path, "headers": seen, "alpn": alpn}).encode())
            what = "echo"
        if what == "echo":
            async for message in ws:
                await ws.send(message)
        elif what == "ping":
            waiter = await ws.ping(b"are you there")
            try:
                await asyncio.wait_for(waiter, 10)
                await ws.send(b"pong ok")
            except asyncio.TimeoutError:
                await ws.send(b"no pong")
            async for _ in ws:
                pass
        elif what == "close":
            await ws.close(int(parts[2]), parts[3] if len(parts) > 3 else "")
        elif what == "fragments":
            await ws.send([b"ab", b"cd", b"ef"])
            async for _ in ws:
                pass
        elif what == "send":
            await ws.send(b"x" * int(parts[2]))
            async for _ in ws:
                pass
        elif what == "drop":
            await ws.recv()
            ws.transport.abort()
        elif what == "masked":
            ws.transport.write(bytes([0x82, 0x81, 1, 2, 3, 4, ord("x") ^ 1]))
            async for _ in ws:
                pass
        elif what == "count":
            async for _ in ws:
                pass
            log("client closed with", ws.close_code, repr(ws.close_reason))
    except websockets.ConnectionClosed:
        pass


# ---- the raw side ---------------------------------------------------------

async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return path, headers


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching(accept):
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode()


def server_frame(opcode, payload, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([b0, n]) + payload
    if n < 65536:
        return bytes([b0, 126]) + struct.pack("!H", n) + payload
    return bytes([b0, 127]) + struct.pack("!Q", n) + payload


async def read_client_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    masked = bool(b1 & 0x80)
    mask = await reader.readexactly(4) if masked else b"\0\0\0\0"
    data = bytearray(await reader.readexactly(n))
    for i in range(n):
        data[i] ^= mask[i % 4]
    return b0 & 0x0F, masked, bytes(data)


async def raw_handler(reader, writer):
    try:
        path, headers = await read_head(reader)
        accept = accept_for(headers.get("sec-websocket-key", ""))
        if path == "/bad_accept":
            writer.write(switching(accept_for("not the client's key")))
            await writer.drain()
            await reader.read()
        elif path == "/ping_between":
            writer.write(switching(accept))
            writer.write(server_frame(2, b"ab", fin=False) + server_frame(9, b"ping!")
                         + server_frame(0, b"cd"))
            await writer.drain()
            verdict = b"no pong"
            while True:
                opcode, masked, data = await read_client_frame(reader)
                if opcode == 0xA:
                    verdict = b"pong ok" if masked and data == b"ping!" else b"pong bad"
                    break
            writer.write(server_frame(2, verdict) + server_frame(8, struct.pack("!H", 1000)))
            await writer.drain()
            await reader.read()
        elif path == "/refuse_chunked":
            body = json.dumps({"status": 429, "message": "slow down"}).encode()
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\n\r\n")
            for i in range(0, len(body), 10):
                piece = body[i:i + 10]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await reader.read()
        elif path == "/silent":
            await reader.read()
        elif path == "/head_then_drop":
            writer.write(switching(accept))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve(ssl_context=None):
    return websockets.serve(handler, "127.0.0.1", 0, process_request=refusal, max_size=None,
                            compression=None, ping_interval=None, ssl=ssl_context)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    tls_port = 0
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        context.set_alpn_protocols(["h2", "http/1.1"])
        tls_server = await serve(context)
        tls_port = tls_server.sockets[0].getsockname()[1]
    async with serve() as server:
        raw = await asyncio.start_server(raw_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw_port = raw.sockets[0].getsockname()[1]
        print("LISTENING %d %d %d" % (port, raw_port, tls_port), flush=True)
        await stop
        raw.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    os._exit(0)
