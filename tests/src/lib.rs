//! Test harness for the tracer's integration tests, on top of the `harness` crate it shares with
//! the bench (processes, temp dirs, ports, the tracer's environment, servers' configurations).
//!
//! - [`OtlpReceiver`]: real OTLP receivers (gRPC via tonic, HTTP/protobuf via a small tokio server)
//!   on 127.0.0.1 that flatten what they get into [`ReceivedSpan`]s.
//! - [`Tracer`]: the `tracer` binary as a child process (stdout/stderr collected in the
//!   background), with readiness waits, SIGINT stop and `--output json` parsing.
//! - [`TraceSession`]: a tracer with its span sink; [`ending`] is how a test ends (tracer stopped,
//!   spans checked, one panic with everything).
//! - [`stack`]: the API-server-like stack (its etcd and webhook) and its load; [`nesting`]: the
//!   ground-truth checks of the traces it gives.
//! - [`procs`]: target and peer processes (python HTTP/HTTPS/echo servers, nginx, a python
//!   HTTP client), and a `curl` helper that reports per-transfer timing and local port.
//!
//! Everything listens and connects on 127.0.0.1 only. Missing tools make tests fail with a clear
//! message: nothing is skipped.

pub mod check;
pub mod ending;
pub mod etcd;
pub mod gotls;
pub mod host;
pub mod kube;
pub mod nesting;
pub mod otlp;
pub mod procs;
pub mod scripts;
pub mod session;
pub mod span;
pub mod stack;
pub mod tls_collector;
pub mod tracer;
pub mod tracer_log;

pub use check::{HttpExpect, K8s, ResourceExpect};
pub use ending::{SETTLE, SPAN_TIMEOUT};
pub use host::*;
pub use otlp::{HttpExport, OtlpReceiver, Protocol};
pub use procs::{
    ClientResult, CurlRun, EchoServer, Nginx, PythonClient, PythonHttpServer, PythonHttpsServer, RawHttp, RawResponse,
    Transfer, curl, curl_one,
};
pub use session::{Finished, Sink, TraceSession};
pub use span::{ReceivedSpan, dump};
pub use tracer::{Tracer, TracerOutput};

pub use harness::{
    Certs, Collector, Proc, TempDir, closed_port, drain_pipes, find_tool, free_port, is_listening, require_tool,
    strip_ansi, tail, unique_name, wait_for_port,
};
