//! kube-apiserver tracer: eBPF probes on socket I/O and Go uprobes → OpenTelemetry traces.
//!
//! The data path, one module per stage, each using only the stages before it:
//! probes (load) → events (records) → capture (ring buffer) → connections (table, stream
//! continuity) → protocols (wire: http1, http2, hpack, grpc) → meaning (k8s, etcd) → assemble
//! (spans) → correlate (trace and span ids) → export (otlp, json, terminal).
//!
//! Around it: `run` (start-up and the main loop) drives the `agent`, which sends each ring record
//! down that line; `attachments` (with `targets`, `gotls`, `gobin`, `procfs`, `kernel_btf`) is
//! which processes are traced and with which probes; `pipeline` is the data flow from connections
//! to export. `span` and `stream` are the shared data types; `clock` turns kernel time into wall
//! time.
//!
//! Modules are private, so that the compiler reports what nothing uses; the binary takes `cli`
//! and `run`, and the fuzz targets and the `agent_cost` example take what [`internals`] lists.

mod agent;
mod assemble;
mod attachments;
mod capture;
pub mod cli;
mod clock;
mod connections;
mod correlate;
mod events;
mod export;
mod gobin;
mod gotls;
mod kernel_btf;
mod local_addrs;
mod meaning;
mod otel_env;
mod pipeline;
mod probes;
mod procfs;
mod protocols;
pub mod run;
mod span;
mod stream;
mod targets;

/// The stages that the fuzz targets and the `agent_cost` example drive without a kernel.
#[doc(hidden)]
pub mod internals {
    pub use crate::{
        assemble::{Assembler, Conn},
        clock::Clock,
        connections::Connection,
        correlate::Correlator,
        events::{Event, parse as parse_event},
        export::export_request,
        gobin::GoBinary,
        meaning::etcd::{
            EtcdOp, EtcdRequest, EtcdResponse, KEY_MAX, decode_request, decode_request_prefix, decode_response,
            decode_response_prefix, push_attributes,
        },
        protocols::{
            hpack::{ALLOWED_NAMES, HpackDecoder, Lookup},
            http1::{Http1Decoder, MessageKind},
            http2::{DATA_CAPTURE_LIMIT, H2Connection, H2Decoder, H2Event, build as http2_build},
        },
        span::{AttrValue, ProcessInfo, SpanRecord, recycle},
        stream::{Role, Segment},
    };
}
