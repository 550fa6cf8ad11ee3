//! Go crypto/tls plaintext (uprobes on stripped Go binaries): etcd 3.4 (Go 1.19) with TLS and
//! client-certificate auth, the Go 1.27 HTTPS server and HTTP client of `tests/go`, etcdctl over
//! TLS. The tracer must decode the plaintext: spans like without TLS, and no `TLS connection` (nor
//! `TCP connection`) span for those connections. Includes connections established before the
//! tracer started and reused after; short-lived clients traced from their exec (`exec_ready`).

mod common;
mod etcd;
mod exec_ready;
mod go_tls;
mod grpc_links;
mod mid_connection;
