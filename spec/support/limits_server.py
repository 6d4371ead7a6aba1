#!/usr/bin/env python3
"""A raw HTTP/1.1 server for the C core's limit specs (core_limits_spec.lua,
core_tls_spec.lua). Raw sockets, not http.server, because the specs need
answers no well-behaved server sends: an endless body, a 200 KB header line,
a Content-Length that lies.

    limits_server.py [--tls CERT KEY] [--proxy]

prints "LISTENING <port>". Every request is logged; GET /_log answers the log
as JSON (and /_log?clear=1 empties it).

Origin routes:
    /length/N    200, Content-Length N, N bytes
    /chunked/N   200, chunked, N bytes
    /endless     200 application/json, no length, bytes until the client quits
    /claim/N     200, Content-Length N, but only 10 bytes, then close
    /header/N    200 with one header line of N bytes
    /headers/N   200 with N header lines of 1000 bytes each
    /upload      reads the body (Content-Length), answers what it received
    /echo        200, the request head as the body
With --proxy it is a forward proxy instead: absolute-form requests are
forwarded, CONNECT is tunnelled, and both are logged with every byte the
client sent through them.
"""
import json
import socket
import ssl
import sys
import threading

LOG = []
LOCK = threading.Lock()
CHUNK = 64 * 1024


def record(entry):
    with LOCK:
        LOG.append(entry)


def read_head(conn, buf=b""):
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def parse_head(head):
    lines = head.split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def send_all(conn, data):
    try:
        conn.sendall(data)
        return True
    except OSError:
        return False


def reply(conn, status, body, headers=()):
    head = ["HTTP/1.1 %s" % status, "Content-Length: %d" % len(body), "Connection: close"]
    head.extend(headers)
    send_all(conn, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def read_body(conn, rest, length):
    received = len(rest)
    while received < length:
        try:
            data = conn.recv(min(CHUNK, length - received))
        except OSError:
            break
        if not data:
            break
        received += len(data)
    # Anything after the declared length would be a second request or, for
    # the specs, bytes the client must never send.
    extra = 0
    conn.settimeout(0.3)
    try:
        data = conn.recv(CHUNK)
        extra = len(data)
    except OSError:
        pass
    return received, extra


def origin(conn, head, rest):
    method, target, headers = parse_head(head)
    path = target.split("?", 1)[0]
    parts = path.strip("/").split("/")
    if path == "/_log":
        with LOCK:
            body = json.dumps(LOG).encode()
            if "clear=1" in target:
                LOG.clear()
        return reply(conn, "200 OK", body, ["Content-Type: application/json"])
    record({"method": method, "path": path, "target_length": len(target), "head": head})
    if headers.get("expect", "").lower() == "100-continue":
        send_all(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
    if parts[0] == "length":
        n = int(parts[1])
        send_all(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % n)
        sent = 0
        while sent < n:
            k = min(CHUNK, n - sent)
            if not send_all(conn, b"a" * k):
                break
            sent += k
    elif parts[0] == "chunked":
        n = int(parts[1])
        send_all(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        sent = 0
        while sent < n:
            k = min(1000, n - sent)
            if not send_all(conn, b"%x\r\n%s\r\n" % (k, b"a" * k)):
                return
            sent += k
        send_all(conn, b"0\r\n\r\n")
    elif parts[0] == "endless":
        send_all(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\n\r\n[")
        sent = 0
        while send_all(conn, b"1," * (CHUNK // 2)):
            sent += CHUNK
        record({"endless_sent": sent})
    elif parts[0] == "claim":
        send_all(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n0123456789"
                 % int(parts[1]))
    elif parts[0] == "header":
        reply(conn, "200 OK", b"ok", ["X-Big: " + "h" * int(parts[1])])
    elif parts[0] == "headers":
        reply(conn, "200 OK", b"ok", ["X-H%d: %s" % (i, "h" * 990) for i in range(int(parts[1]))])
    elif parts[0] == "upload":
        declared = int(headers.get("content-length", "-1"))
        received, extra = read_body(conn, rest, declared)
        record({"upload": True, "declared": declared, "received": received, "extra": extra})
        if received == declared:
            reply(conn, "200 OK", json.dumps({"declared": declared, "received": received}).encode())
    elif parts[0] == "echo":
        reply(conn, "200 OK", head.encode("latin-1"))
    else:
        reply(conn, "404 Not Found", b"no such route")


def pump(src, dst, sink):
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            if sink is not None:
                sink.append(data)
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def proxy(conn, head, rest):
    method, target, headers = parse_head(head)
    if target.startswith("/_log"):
        return origin(conn, head, rest)
    sent = []
    if method == "CONNECT":
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        send_all(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            sent.append(rest)
            upstream.sendall(rest)
    else:
        hostport, _, path = target.split("://", 1)[1].partition("/")
        host, _, port = hostport.partition(":")
        upstream = socket.create_connection((host, int(port or 80)))
        lines = head.split("\r\n")
        lines[0] = "%s /%s HTTP/1.1" % (method, path)
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + rest)
    back = threading.Thread(target=pump, args=(upstream, conn, None), daemon=True)
    back.start()
    pump(conn, upstream, sent)
    back.join(5)
    record({"proxy": method, "target": target, "head": head,
            "tunnel": b"".join(sent).decode("latin-1")})


def serve(conn, handler, context):
    try:
        if context is not None:
            # A client that refuses our certificate ends here.
            conn = context.wrap_socket(conn, server_side=True)
        head, rest = read_head(conn)
        if head is not None:
            handler(conn, head, rest)
    except ssl.SSLError as e:
        record({"tls_error": repr(e)})
    except Exception as e:  # a spec reads the log, not a traceback
        record({"error": repr(e)})
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    args = sys.argv[1:]
    context = None
    if "--tls" in args:
        i = args.index("--tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args[i + 1], args[i + 2])
    handler = proxy if "--proxy" in args else origin
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print("LISTENING %d" % listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, handler, context), daemon=True).start()


if __name__ == "__main__":
    main()
