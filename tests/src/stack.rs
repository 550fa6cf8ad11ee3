//! The API-server-like stack of the trace tests: the server of `tests/go/apiserver` in one of its
//! two builds, its validating webhook (`tests/go/webhook`) and, for the etcd build, a real etcd
//! over TLS with client certificates; and the load client (`tests/go/apiload`) that sends it
//! requests whose ground truth is known (see [`crate::nesting`]).

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use harness::{Certs, Proc, TempDir};

use crate::etcd::{Etcd, EtcdTls};
use crate::gotls::{APISERVER_ETCD_VAR, GoServer, apiserver_bin, go_program};

/// How long one load run may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Which build of the API-server-like server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Debian's Go 1.19, GOPATH mode, with the etcd client (clientv3 over grpc-go) and the
    /// webhook: etcd calls over gRPC and webhook calls over HTTP/2 and HTTP/1.1.
    Etcd,
    /// Go 1.27, standard library only: webhook calls over HTTP/2 and HTTP/1.1.
    Stdlib,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Etcd => "etcd (Go 1.19, grpc-go)",
            Variant::Stdlib => "stdlib (Go 1.27)",
        }
    }
}

/// The running stack. Field order = drop order: the server goes before what it calls.
pub struct ApiStack {
    pub apiserver: GoServer,
    pub webhook: GoServer,
    pub etcd: Option<Etcd>,
    pub variant: Variant,
    certs: Certs,
    _dir: TempDir,
}

impl ApiStack {
    /// Starts etcd (etcd build), the webhook answering after `webhook_delay`, and the server,
    /// which has called every etcd method once by the time it listens.
    pub fn start(variant: Variant, webhook_delay: Duration) -> ApiStack {
        let dir = TempDir::new("apistk");
        let etcd = (variant == Variant::Etcd).then(|| Etcd::start_with(EtcdTls::Mutual));
        let certs = match &etcd {
            Some(e) => e.certs().expect("etcd with TLS has certificates").clone(),
            None => Certs::make(dir.path()),
        };
        let (cert, key, ca) = (path(&certs.server_cert), path(&certs.server_key), path(&certs.ca));
        let delay = format!("{}ms", webhook_delay.as_millis());
        let webhook = GoServer::start_with(
            "go-webhook",
            &go_program("GO_WEBHOOK_BIN"),
            "https",
            &["-cert", &cert, "-key", &key, "-delay", &delay],
        );
        let webhook_url = webhook.url("");
        let mut args = vec!["-cert", &cert, "-key", &key, "-ca", &ca, "-webhook", &webhook_url];
        let (etcd_url, client_cert, client_key) =
            (etcd.as_ref().map(|e| e.url("")).unwrap_or_default(), path(&certs.client_cert), path(&certs.client_key));
        let bin = match variant {
            Variant::Etcd => {
                args.extend(["-etcd", &etcd_url, "-etcd-cert", &client_cert, "-etcd-key", &client_key]);
                go_program(APISERVER_ETCD_VAR)
            }
            Variant::Stdlib => apiserver_bin(),
        };
        let apiserver = GoServer::start_with("go-apiserver", &bin, "https", &args);
        ApiStack { apiserver, webhook, etcd, variant, certs, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.apiserver.pid()
    }

    /// The CA of the server's, the webhook's and etcd's certificates.
    pub fn ca(&self) -> &std::path::Path {
        &self.certs.ca
    }

    /// Sends `requests` with `concurrency` in flight (apiload); panics unless each was answered
    /// below 500. Returns apiload's lines (`STATUS PROTO METHOD PATH`).
    pub fn load(&self, requests: &[ApiRequest], concurrency: usize) -> Vec<String> {
        let mut cmd = Command::new(go_program("GO_APILOAD_BIN"));
        cmd.args(["-base", &self.apiserver.url(""), "-ca", &path(&self.certs.ca), "-c", &concurrency.to_string()]);
        let mut proc = Proc::spawn("apiload", cmd);
        let mut input = String::new();
        for r in requests {
            let _ = writeln!(input, "{}", r.line());
        }
        proc.send_line(input.trim_end());
        proc.close_stdin();
        let st = proc.wait_exit(LOAD_TIMEOUT);
        assert!(st.success(), "apiload failed ({st})\n{}", proc.describe());
        let lines: Vec<String> = proc.stdout().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), requests.len(), "apiload answered {} of {} requests", lines.len(), requests.len());
        lines
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// What a request asks of the server (the calls it then makes are [`ApiRequest::calls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    List,
    Create,
    Update,
    Delete,
    /// A watch of the namespace that lasts one second.
    Watch,
}

/// One request of the load: its namespace is its ground-truth id, found again in the etcd key
/// and the webhook path of every call it causes.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub op: Op,
    pub ns: String,
    pub http2: bool,
    pub traceparent: Option<String>,
}

/// The name of every pod of the load.
pub const POD: &str = "p";

impl ApiRequest {
    pub fn new(op: Op, ns: &str, http2: bool) -> ApiRequest {
        ApiRequest { op, ns: ns.to_owned(), http2, traceparent: None }
    }

    pub fn method(&self) -> &'static str {
        match self.op {
            Op::Get | Op::List | Op::Watch => "GET",
            Op::Create => "POST",
            Op::Update => "PUT",
            Op::Delete => "DELETE",
        }
    }

    pub fn path(&self) -> String {
        let ns = &self.ns;
        match self.op {
            Op::List | Op::Create => format!("/api/v1/namespaces/{ns}/pods"),
            Op::Watch => format!("/api/v1/namespaces/{ns}/pods?watch=true&timeoutSeconds=1"),
            Op::Get | Op::Update | Op::Delete => format!("/api/v1/namespaces/{ns}/pods/{POD}"),
        }
    }

    fn line(&self) -> String {
        let proto = if self.http2 { "h2" } else { "h1" };
        let tp = self.traceparent.as_deref().unwrap_or("");
        format!("{} {} {proto} {tp}", self.method(), self.path())
    }

    /// The client calls the server makes for this request in `variant`.
    pub fn calls(&self, variant: Variant) -> Vec<Call> {
        let key = format!("/registry/pods/{}/{POD}", self.ns);
        let prefix = format!("/registry/pods/{}/", self.ns);
        let webhook = |http2| Call::Webhook { path: format!("/validate/{}/{POD}", self.ns), http2 };
        let etcd = |method: &'static str, key: String| Call::Etcd { method, key };
        match (variant, self.op) {
            (Variant::Stdlib, Op::Create) => vec![webhook(true)],
            (Variant::Stdlib, Op::Update) => vec![webhook(false)],
            (Variant::Stdlib, _) => vec![],
            (Variant::Etcd, Op::Get) => vec![etcd("Range", key)],
            (Variant::Etcd, Op::List) => vec![etcd("Range", prefix)],
            (Variant::Etcd, Op::Watch) => vec![etcd("Watch", prefix)],
            (Variant::Etcd, Op::Create) => vec![webhook(true), etcd("Txn", key)],
            (Variant::Etcd, Op::Update) => vec![webhook(false), etcd("Put", key)],
            (Variant::Etcd, Op::Delete) => vec![etcd("DeleteRange", key)],
        }
    }
}

/// One client call of the server, as the ground truth knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// An etcd RPC (`rpc.method`) of `key` (`etcd.key`).
    Etcd { method: &'static str, key: String },
    /// A webhook POST of `path` over HTTP/2 or HTTP/1.1.
    Webhook { path: String, http2: bool },
}

/// A load of `n` requests, request `i` in namespace `{prefix}-{i}` (its own: the id that ties
/// its calls to it), cycling through the operations the variant's calls cover, every other one
/// over HTTP/2. A GET, update or delete of a pod that is not there still makes its one etcd call.
pub fn mixed_load(variant: Variant, prefix: &str, n: usize) -> Vec<ApiRequest> {
    let ops: &[Op] = match variant {
        Variant::Etcd => &[Op::Create, Op::Get, Op::List, Op::Update, Op::Delete],
        Variant::Stdlib => &[Op::Create, Op::Update, Op::Get],
    };
    (0..n).map(|i| ApiRequest::new(ops[i % ops.len()], &format!("{prefix}-{i}"), i % 2 == 0)).collect()
}
