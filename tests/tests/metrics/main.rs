//! Metrics of the tracer binary: a known workload through real traced servers (nginx over
//! HTTP/1.1, etcd over gRPC with a traced grpcio client), then the request counts per route,
//! status and etcd operation as a real OTLP receiver gets them, and as the Prometheus page shows
//! them; `/healthz` while capture runs.
//!
//! Needs root (the tracer loads eBPF programs), the tracer binary, and nginx, curl, etcd and
//! python3 (with grpcio in a venv) on the machine; a missing one fails the test with a message.

mod common;
mod etcd;
mod flags;
mod http;
