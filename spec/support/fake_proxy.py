"""A stand-in HTTP proxy for the proxy specs: it accepts connections on a free
loopback port, writes the first bytes of each one (the request line and
headers a client sent to its proxy) to a log file, then hangs up. It never
relays anything, so a spec learns exactly what a client would have shown a
proxy, and nothing reaches the network.

    python3 fake_proxy.py LOGFILE      prints "LISTENING <port> <pid>"
"""
import os
import socket
import sys
import threading


def serve(conn, log, lock):
    data = b""
    conn.settimeout(5)
    try:
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    with lock:
        with open(log, "ab") as f:
            f.write(data + b"\n--- end of connection ---\n")
    conn.close()


def main():
    log = sys.argv[1]
    lock = threading.Lock()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print("LISTENING %d %d" % (listener.getsockname()[1], os.getpid()), flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, log, lock), daemon=True).start()


if __name__ == "__main__":
    main()
