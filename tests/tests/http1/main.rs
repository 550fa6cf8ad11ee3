//! HTTP/1.1 (and non-HTTP TCP/TLS) integration tests of the tracer binary, against real
//! target processes on 127.0.0.1. Each test traces its own pids with its own tracer and sink, so
//! tests may run concurrently.
//!
//! Needs root (the tracer loads eBPF programs), the tracer binary (`$TRACER_BIN` or
//! `target/debug/tracer`), and python3, curl, openssl and nginx on the machine; a missing one
//! fails the test with a message naming it.

mod common;
mod connections;
mod framing;
mod servers;
mod targets;
