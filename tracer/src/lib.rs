//! kube-apiserver tracer: eBPF probes on socket syscalls → OpenTelemetry spans.
//!
//! The data path, one module per stage:
//! probes (load/attach) → capture (ring buffer) → events (records) → pipeline → connections
//! (table, stream continuity) → protocols (wire: http1, http2, hpack, grpc) → meaning (k8s, etcd)
//! → assemble (spans) → export (otlp, json, terminal). Targets come from `targets` (with
//! `procfs`); `clock` turns kernel time into wall time.

pub mod agent;
pub mod assemble;
pub mod attachments;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod connections;
pub mod correlate;
pub mod events;
pub mod export;
pub mod gobin;
pub mod gotls;
pub mod kernel_btf;
pub mod local_addrs;
pub mod meaning;
pub mod pipeline;
pub mod probes;
pub mod procfs;
pub mod protocols;
pub mod run;
pub mod span;
pub mod stream;
pub mod targets;
