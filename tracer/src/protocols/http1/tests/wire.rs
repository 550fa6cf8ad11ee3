// ---- Wire bytes -------------------------------------------------------------------------
// Recorded with a raw socket on the other end (see each comment); byte for byte.

/// `curl -v 'http://127.0.0.1:18080/api/v1/namespaces/default/pods?limit=500'` (curl 7.88.1).
pub(super) const CURL_GET: &[u8] = b"GET /api/v1/namespaces/default/pods?limit=500 HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      \r\n";

/// `curl -X POST -H 'Authorization: Bearer s3cr3t-t0ken' -H 'Content-Type: application/json'
/// -d '{...}' http://127.0.0.1:18080/api/v1/namespaces/default/configmaps`.
pub(super) const CURL_POST: &[u8] = b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      Authorization: Bearer s3cr3t-t0ken\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 65\r\n\
      \r\n\
      {\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"demo\"}}";

/// `curl -X PUT -H 'Transfer-Encoding: chunked' --data-binary @up.txt
/// http://127.0.0.1:18080/upload`.
pub(super) const CURL_CHUNKED_PUT: &[u8] = b"PUT /upload HTTP/1.1\r\n\
      Host: 127.0.0.1:18080\r\n\
      User-Agent: curl/7.88.1\r\n\
      Accept: */*\r\n\
      Transfer-Encoding: chunked\r\n\
      Content-Type: application/x-www-form-urlencoded\r\n\
      \r\n\
      14\r\n\
      hello chunked world\n\
      \r\n\
      0\r\n\
      \r\n";

/// nginx/1.22.1, one keep-alive connection: `GET /status.json` then `GET /missing`.
pub(super) const NGINX_KEEPALIVE: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: keep-alive\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      Accept-Ranges: bytes\r\n\
      \r\n\
      {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\"}\n\
      HTTP/1.1 404 Not Found\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: text/html\r\n\
      Content-Length: 153\r\n\
      Connection: close\r\n\
      \r\n\
      <html>\r\n\
      <head><title>404 Not Found</title></head>\r\n\
      <body>\r\n\
      <center><h1>404 Not Found</h1></center>\r\n\
      <hr><center>nginx/1.22.1</center>\r\n\
      </body>\r\n\
      </html>\r\n";

/// nginx/1.22.1 with `gzip on`: `GET /big.txt` with `Accept-Encoding: gzip` → chunked.
pub(super) const NGINX_GZIP_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: text/plain\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Transfer-Encoding: chunked\r\n\
      Connection: close\r\n\
      ETag: W/\"6b0714ab-bb9\"\r\n\
      Content-Encoding: gzip\r\n\
      \r\n\
      32\r\n\
      \x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03\xed\xd0!\x01\x00\x00\x00\x02\xa0\xeeb\xe7{\xc3\x00\x13h1`\xc0\x80\x01\x03\x06\x0c\x180`\xe0} \x03_\x9f!\x0c\xb9\x0b\x00\x00\r\n\
      0\r\n\
      \r\n";

/// nginx/1.22.1: `GET /status.json` with a matching `If-None-Match`.
pub(super) const NGINX_304: &[u8] = b"HTTP/1.1 304 Not Modified\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:41 GMT\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: close\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      \r\n";

/// nginx/1.22.1: `HEAD /status.json` (Content-Length of the GET body, no body).
pub(super) const NGINX_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Server: nginx/1.22.1\r\n\
      Date: Wed, 25 Nov 2026 17:02:39 GMT\r\n\
      Content-Type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      Connection: close\r\n\
      ETag: \"6b0714ab-37\"\r\n\
      Accept-Ranges: bytes\r\n\
      \r\n";

/// `python3 -m http.server` (3.11.7): HTTP/1.0 with Content-Length.
pub(super) const PY_SIMPLE: &[u8] = b"HTTP/1.0 200 OK\r\n\
      Server: SimpleHTTP/0.6 Python/3.11.7\r\n\
      Date: Wed, 25 Nov 2026 17:02:45 GMT\r\n\
      Content-type: application/json\r\n\
      Content-Length: 55\r\n\
      Last-Modified: Wed, 25 Nov 2026 17:02:35 GMT\r\n\
      \r\n\
      {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\"}\n";

/// Python `BaseHTTPRequestHandler` writing a body without Content-Length: ends at close.
pub(super) const PY_NO_LENGTH: &[u8] = b"HTTP/1.0 200 OK\r\n\
      Server: BaseHTTP/0.6 Python/3.11.7\r\n\
      Date: Wed, 25 Nov 2026 17:02:45 GMT\r\n\
      Content-Type: text/plain\r\n\
      \r\n\
      streamed without length\n";

// Go net/http formats (no Go toolchain here to record them; written to its exact layout:
// handler headers sorted, then Date/Content-Type/Transfer-Encoding, lower-case hex sizes).

/// kubectl (client-go) starting a watch.
pub(super) const KUBECTL_WATCH: &[u8] =
    b"GET /api/v1/namespaces/default/pods?resourceVersion=4711&watch=true HTTP/1.1\r\n\
      Host: 10.96.0.1:443\r\n\
      User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc\r\n\
      Accept: application/json\r\n\
      Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXdhdGNo\r\n\
      Accept-Encoding: gzip\r\n\
      \r\n";

/// kube-apiserver's watch response head; the chunked body never ends.
pub(super) const APISERVER_WATCH_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
      Audit-Id: 0b8f5c2e-6d1c-4c55-9a43-2f1f7f0e3b7a\r\n\
      Cache-Control: no-cache, private\r\n\
      Content-Type: application/json\r\n\
      X-Kubernetes-Pf-Flowschema-Uid: 8d9e5a2c-1f2b-4e3a-9c0d-5b6a7e8f9a0b\r\n\
      X-Kubernetes-Pf-Prioritylevel-Uid: 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d\r\n\
      Date: Wed, 25 Nov 2026 17:10:00 GMT\r\n\
      Transfer-Encoding: chunked\r\n\
      \r\n";

/// kubectl exec asking for SPDY.
pub(super) const KUBECTL_EXEC: &[u8] = b"POST /api/v1/namespaces/default/pods/web-0/exec?command=sh&container=web&stdin=true&stdout=true&tty=true HTTP/1.1\r\n\
      Host: 10.96.0.1:443\r\n\
      User-Agent: kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc\r\n\
      Content-Length: 0\r\n\
      Connection: Upgrade\r\n\
      Upgrade: SPDY/3.1\r\n\
      X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
      \r\n";

/// kube-apiserver accepting it.
pub(super) const APISERVER_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
      Connection: Upgrade\r\n\
      Upgrade: SPDY/3.1\r\n\
      X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
      Date: Wed, 25 Nov 2026 17:12:00 GMT\r\n\
      \r\n";

/// Start of a SPDY/3.1 SYN_STREAM control frame, as sent right after the switch.
pub(super) const SPDY_FRAME: &[u8] =
    b"\x80\x03\x00\x01\x00\x00\x00\x32\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x78\xbb";

/// Start of a TLS 1.2+ ClientHello.
pub(super) const TLS_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1f\x00\x2b";

/// Go net/http handler writing 2500 bytes without Content-Length: its 2048-byte buffer
/// becomes the first chunk (0x800), the rest (0x1c4) a second one, then the last chunk.
pub(super) fn go_chunked_response() -> Vec<u8> {
    let mut wire = b"HTTP/1.1 200 OK\r\n\
          Date: Wed, 25 Nov 2026 17:10:00 GMT\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n"
        .to_vec();
    for (size_line, len) in [(&b"800\r\n"[..], 2048), (&b"1c4\r\n"[..], 452)] {
        wire.extend_from_slice(size_line);
        wire.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

/// One watch event as kube-apiserver flushes it: one chunk holding a JSON line.
pub(super) fn watch_chunk(event_type: &str, name: &str, rv: u32) -> Vec<u8> {
    let json = format!(
        "{{\"type\":\"{event_type}\",\"object\":{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":\
             {{\"name\":\"{name}\",\"namespace\":\"default\",\"resourceVersion\":\"{rv}\"}}}}}}\n"
    );
    let mut chunk = format!("{:x}\r\n", json.len()).into_bytes();
    chunk.extend_from_slice(json.as_bytes());
    chunk.extend_from_slice(b"\r\n");
    chunk
}
