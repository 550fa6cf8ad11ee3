//! Python programs the tests run as targets and peers (standard library only).

/// `server.py PORTFILE [CERT KEY]`: threaded HTTP/1.1 keep-alive server on 127.0.0.1:0 (TLS when
/// a certificate is given). Writes the port to PORTFILE once listening.
///
/// Routes:
/// - `/healthz`, `/readyz`, `/livez`: 200 `ok` (text/plain)
/// - `/status/NNN`: status NNN with a small JSON body
/// - `/api/...`, `/apis/...`: Kubernetes-shaped JSON. An object named `missing` (or any path
///   containing `/missing`) answers 404 with a Status body; POST answers 201; `?watch=true` (or
///   `/watch/` in the path) streams two chunked events then ends the response; an object named
///   `big` answers `?size=N` bytes (default 50000).
/// - `/echo` (any method): 200 with the received body length as the body
/// - anything else: 404
///
/// `/status/204` and `/status/304` have neither body nor Content-Length. `?close=N` on any path
/// answers N bytes without Content-Length and closes the connection (close-delimited body).
/// `Expect: 100-continue` gets an interim `100 Continue` (http.server does that).
/// `?sleepMs=N` on any path delays the answer by N ms. Every response has a Content-Length except
/// watches (chunked). Request bodies are read by Content-Length.
pub const HTTP_SERVER: &str = r#"
import json, os, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "itest-server/1.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()

    def send(self, code, body, ctype="application/json"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        data = b""
        while len(data) < n:
            chunk = self.rfile.read(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def watch(self, path):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(2):
            ev = json.dumps({"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "w%d" % i}}}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            time.sleep(0.05)
        self.wfile.write(b"0\r\n\r\n")

    def handle_any(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        path = u.path
        body = self.read_body()
        if "sleepMs" in q:
            time.sleep(int(q["sleepMs"][0]) / 1000.0)
        if path in ("/healthz", "/readyz", "/livez"):
            return self.send(200, "ok", "text/plain")
        if "close" in q:
            # HTTP/1.0-style framing: no Content-Length, the body ends when the connection closes
            body = b"c" * int(q["close"][0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            if code in (204, 304):
                self.send_response(code)
                self.end_headers()
                return
            return self.send(code, json.dumps({"code": code}))
        if path == "/echo":
            return self.send(200, str(len(body)), "text/plain")
        if path.startswith("/api/") or path.startswith("/apis/") or path in ("/api", "/apis"):
            if q.get("watch", [""])[0] in ("true", "1") or "/watch/" in path:
                return self.watch(path)
            name = path.rstrip("/").split("/")[-1]
            if name == "missing" or "/missing" in path:
                return self.send(404, json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                  "reason": "NotFound", "code": 404}))
            if name == "big":
                size = int(q.get("size", ["50000"])[0])
                return self.send(200, b"x" * size, "application/octet-stream")
            if self.command == "POST":
                return self.send(201, json.dumps({"kind": "Status", "created": True, "received": len(body)}))
            return self.send(200, json.dumps({"kind": "Pod", "apiVersion": "v1",
                                              "metadata": {"name": name}, "received": len(body)}))
        return self.send(404, json.dumps({"error": "not found", "path": path}))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


def main():
    port_file = sys.argv[1]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if len(sys.argv) > 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


main()
"#;

/// `echo.py PORTFILE [blocking]`: raw TCP echo server on 127.0.0.1:0, a thread per connection.
/// The main thread waits in select(2) before each accept(2), or, with `blocking`, sits in a
/// blocking accept(2).
pub const ECHO_SERVER: &str = r#"
import os, select, socket, sys, threading

def serve(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
port_file = sys.argv[1]
with open(port_file + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
blocking = len(sys.argv) > 2 and sys.argv[2] == "blocking"
while True:
    if not blocking:
        select.select([s], [], [])
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// `client.py PLAN_JSON`: an HTTP/1.1 client (http.client, one keep-alive connection).
///
/// Plan fields: `host`, `port`, `requests` (list of `{method, path, body_size?, headers?}`),
/// `wait_stdin` (bool: wait for a line before starting, and for another one (or EOF) before
/// exiting), `sleep_ms` (pause between requests), `decoy_dir` (if set: first write and read
/// regular files and a pipe whose bytes look like HTTP). A request with `half_close: true` shuts
/// down the client's sending side (`shutdown(SHUT_WR)`) before reading its response, after
/// `half_close_delay_ms` if given.
///
/// Prints JSON lines: `{"event":"ready","pid":N}`, one `{"event":"response",...}` per request
/// (status, elapsed seconds, local_port, body_len), `{"event":"done"}`.
pub const HTTP_CLIENT: &str = r#"
import http.client, json, os, socket, sys, time

plan = json.loads(sys.argv[1])

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

out({"event": "ready", "pid": os.getpid()})
if plan.get("wait_stdin"):
    sys.stdin.readline()

decoy = plan.get("decoy_dir")
if decoy:
    req = (b"GET /api/v1/namespaces/default/pods/decoy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"User-Agent: decoy\r\nAccept: */*\r\n\r\n")
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    p = os.path.join(decoy, "decoy-http.txt")
    with open(p, "wb") as f:          # write(2)
        f.write(req)
        f.flush()
        f.write(resp)
    with open(p, "rb") as f:          # read(2)
        assert f.read() == req + resp
    fd = os.open(os.path.join(decoy, "decoy2.txt"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.writev(fd, [req, resp])        # writev(2)
    os.pwrite(fd, req, 0)             # pwrite64(2)
    os.pread(fd, 4096, 0)             # pread64(2)
    os.lseek(fd, 0, os.SEEK_SET)
    os.readv(fd, [bytearray(len(req)), bytearray(len(resp))])  # readv(2)
    os.close(fd)
    r, w = os.pipe()                  # a pipe, both directions of a fake exchange
    os.write(w, req); os.read(r, 4096)
    os.write(w, resp); os.read(r, 4096)
    os.close(r); os.close(w)
    out({"event": "decoy_done"})

conn = http.client.HTTPConnection(plan["host"], plan["port"], timeout=30)
for i, r in enumerate(plan.get("requests", [])):
    n = r.get("body_size", 0)
    body = b"b" * n if n or r["method"] in ("POST", "PUT", "PATCH") else None
    headers = dict(r.get("headers", {}))
    headers.setdefault("User-Agent", plan.get("user_agent", "itest-python-client/1.0"))
    t0 = time.monotonic()
    conn.request(r["method"], r["path"], body=body, headers=headers)
    local_port = conn.sock.getsockname()[1]
    if r.get("half_close"):
        time.sleep(r.get("half_close_delay_ms", 0) / 1000.0)
        conn.sock.shutdown(socket.SHUT_WR)
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.monotonic() - t0
    out({"event": "response", "index": i, "status": resp.status, "elapsed": elapsed,
         "local_port": local_port, "body_len": len(data)})
    if plan.get("sleep_ms"):
        time.sleep(plan["sleep_ms"] / 1000.0)
out({"event": "done"})
if plan.get("wait_stdin"):
    sys.stdin.readline()
conn.close()
"#;
