#!/usr/bin/env python3
"""Origin and eyeball client for tests/quic_edge/run.sh (stdlib only).

origin PORT      serves /sse (3 events, 300 ms apart, each flushed) and /slow (prints
                 "slow request started", then 2 s later 1 KiB)
check EYEBALL    runs the eyeball checks through the edge; exits non-zero on the first failure
slow EYEBALL OUT GET /slow, writes the status line and body length to OUT (graceful-drain check)
"""
import base64, hashlib, http.client, os, socket, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/sse"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(3):
                self.wfile.write(f"data: event {i}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.3)
            self.close_connection = True
        elif self.path.startswith("/slow"):
            print("slow request started", flush=True)
            time.sleep(2)
            body = b"s" * 1024
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}", flush=True)


def conn(eyeball):
    host, port = eyeball.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60)


def check(eyeball):
    # GET
    c = conn(eyeball)
    c.request("GET", "/bytes/1024", headers={"Host": "app.example.com"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or len(body) != 1024:
        fail(f"GET /bytes/1024: {r.status} {len(body)} bytes")
    if not r.getheader("cf-ray"):
        fail("GET: no Cf-Ray")
    ok("GET /bytes/1024: 200, 1024 bytes, Cf-Ray " + r.getheader("cf-ray"))
    # POST with a length: the origin answers the byte count and byte sum.
    data = os.urandom(3 * 1024 * 1024 + 17)
    c.request("POST", "/upload", body=data, headers={"Host": "app.example.com"})
    r = c.getresponse()
    got = r.read().decode()
    want = f'{{"bytes":{len(data)},"sum":{sum(data)}}}'
    if r.status != 200 or got != want:
        fail(f"POST /upload: {r.status} {got!r}, want {want!r}")
    ok(f"POST /upload ({len(data)} bytes, Content-Length): checksum matches")
    # POST chunked
    def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]
    c.request("POST", "/upload", body=chunks(), headers={"Host": "app.example.com"},
              encode_chunked=True)
    r = c.getresponse()
    got = r.read().decode()
    if r.status != 200 or got != want:
        fail(f"POST /upload chunked: {r.status} {got!r}, want {want!r}")
    ok("POST /upload (chunked): checksum matches")
    # 64 MiB download
    n = 64 * 1024 * 1024
    c.request("GET", f"/bytes/{n}", headers={"Host": "app.example.com"})
    r = c.getresponse()
    t0 = time.monotonic()
    got = 0
    h = hashlib.sha256()
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        got += len(b)
        h.update(b)
    dt = time.monotonic() - t0
    if r.status != 200 or got != n:
        fail(f"64 MiB download: {r.status} {got} bytes")
    direct = os.environ.get("ORIGIN_SHA256")
    if direct and h.hexdigest() != direct:
        fail("64 MiB download: sha256 differs from the origin's")
    ok(f"GET 64 MiB: {got} bytes in {dt:.2f}s, sha256 matches the origin's")
    c.close()
    # SSE: events arrive one by one, before the stream ends.
    c = conn(eyeball)
    c.request("GET", "/sse", headers={"Host": "app.example.com", "Accept": "text/event-stream"})
    r = c.getresponse()
    if r.status != 200 or "text/event-stream" not in (r.getheader("content-type") or ""):
        fail(f"SSE: {r.status} {r.getheader('content-type')}")
    t0 = time.monotonic()
    seen = []
    buf = b""
    while len(seen) < 3:
        b = r.fp.read1(4096) if hasattr(r.fp, "read1") else r.read(1)
        if not b:
            break
        buf += b
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            ev = ev.decode()
            # chunked framing lines are consumed by http.client only via read(); strip them
            seen.append((round(time.monotonic() - t0, 2), ev.strip()))
    events = [e for _, e in seen if "data: event" in e]
    if len(events) < 3:
        fail(f"SSE: {seen}")
    if seen[0][0] > 0.5:
        fail(f"SSE: first event only after {seen[0][0]}s (buffered?)")
    ok(f"SSE: 3 events, first after {seen[0][0]}s, last after {seen[-1][0]}s")
    c.close()
    # WebSocket echo (the bench origin's /ws)
    host, port = eyeball.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        if not b:
            fail(f"WebSocket: closed during the handshake: {head!r}")
        head += b
    head, rest = head.split(b"\r\n\r\n", 1)
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    if not head.startswith(b"HTTP/1.1 101") or accept.encode() not in head:
        fail(f"WebSocket handshake: {head!r}")
    for size in (5, 300, 70000):
        payload = os.urandom(size)
        mask = os.urandom(4)
        if size < 126:
            hdr = bytes([0x82, 0x80 | size])
        elif size < 65536:
            hdr = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            hdr = bytes([0x82, 0x80 | 127]) + size.to_bytes(8, "big")
        s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        need = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + size
        while len(rest) < need:
            b = s.recv(65536)
            if not b:
                fail("WebSocket: closed before the echo")
            rest += b
        frame, rest = rest[:need], rest[need:]
        if frame[-size:] != payload:
            fail(f"WebSocket echo of {size} bytes differs")
    ok("WebSocket: 101 with the right accept, echo of 5, 300, 70000 bytes")
    s.close()


def slow(eyeball, out):
    c = conn(eyeball)
    try:
        c.request("GET", "/slow", headers={"Host": "app.example.com"})
        r = c.getresponse()
        body = r.read()
        result = f"{r.status} {len(body)}"
    except Exception as e:
        result = f"error {e}"
    with open(out, "w") as f:
        f.write(result + "\n")


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "origin":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Origin).serve_forever()
    elif role == "check":
        check(sys.argv[2])
    elif role == "slow":
        slow(sys.argv[2], sys.argv[3])
