//! Command-line flags. Every flag also reads an environment variable.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tracer",
    version,
    about = "Trace kube-apiserver requests, and the etcd and webhook calls they make, from the kernel, as OpenTelemetry spans."
)]
pub struct Cli {
    /// Trace processes with this command name (repeatable). Processes that start later are picked
    /// up. Default: kube-apiserver, when no --pid is given.
    #[arg(long = "comm", env = "TRACER_COMM", value_delimiter = ',', value_parser = parse_comm)]
    pub comms: Vec<String>,

    /// Trace this process id (repeatable).
    #[arg(long = "pid", env = "TRACER_PID", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// OTLP collector endpoint, e.g. http://127.0.0.1:4317 (grpc) or https://collector:4318 (http).
    /// Flags and TRACER_* variables take precedence over the standard OTEL_EXPORTER_OTLP_*
    /// variables (ENDPOINT, TRACES_ENDPOINT, PROTOCOL, HEADERS, TIMEOUT, COMPRESSION, CERTIFICATE,
    /// CLIENT_CERTIFICATE, CLIENT_KEY, each also per signal) and OTEL_RESOURCE_ATTRIBUTES,
    /// which are read when the flag is not given. For http, a URL without a path gets /v1/traces.
    #[arg(long, env = "TRACER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: grpc, or http (OTLP/HTTP protobuf, also spelled http/protobuf).
    /// Default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc.
    #[arg(long, env = "TRACER_OTLP_PROTOCOL", value_enum)]
    pub otlp_protocol: Option<ProtocolArg>,

    /// Compression of OTLP requests: none, or gzip (about a tenth of the bytes on the wire, for
    /// some of the agent's CPU; see docs/benchmarks.md). Default: OTEL_EXPORTER_OTLP_COMPRESSION,
    /// else none.
    #[arg(long, env = "TRACER_OTLP_COMPRESSION", value_enum)]
    pub otlp_compression: Option<CompressionArg>,

    /// A header sent with every OTLP request, NAME=VALUE (repeatable), e.g. an API key; added to
    /// OTEL_EXPORTER_OTLP_HEADERS, replacing a header of the same name. Values are never logged.
    #[arg(long = "otlp-header", env = "TRACER_OTLP_HEADERS", hide_env_values = true, value_delimiter = ',',
          value_parser = parse_secret)]
    pub otlp_headers: Vec<Secret>,

    /// PEM file of the CA that signed the collector's certificate, trusted instead of the system's
    /// roots for https:// endpoints. Default: OTEL_EXPORTER_OTLP_CERTIFICATE.
    #[arg(long, env = "TRACER_OTLP_CA")]
    pub otlp_ca: Option<PathBuf>,

    /// PEM file of the client certificate for mutual TLS, with --otlp-client-key.
    /// Default: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE.
    #[arg(long, env = "TRACER_OTLP_CLIENT_CERT")]
    pub otlp_client_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key. Default: OTEL_EXPORTER_OTLP_CLIENT_KEY.
    #[arg(long, env = "TRACER_OTLP_CLIENT_KEY")]
    pub otlp_client_key: Option<PathBuf>,

    /// Bound on one OTLP export, retries included: milliseconds, or with a unit (500ms, 10s).
    /// Default: OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds), else 5s.
    #[arg(long, env = "TRACER_OTLP_TIMEOUT", value_parser = parse_timeout)]
    pub otlp_timeout: Option<Duration>,

    /// Bytes of encoded OTLP requests kept while the collector is down or failing, delivered oldest
    /// first when it is back; beyond it the oldest are dropped (and counted). The default holds
    /// about a minute of spans at 5,000 a second (docs/benchmarks.md).
    #[arg(long, env = "TRACER_OTLP_BUFFER_BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(0..=1 << 36))]
    pub otlp_buffer_bytes: u64,

    /// Local output: terminal (live waterfall), json (one span per line on stdout) or none.
    /// Default: terminal without a collector (--otlp-endpoint or OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT),
    /// none with one.
    #[arg(long, env = "TRACER_OUTPUT", value_enum)]
    pub output: Option<OutputArg>,

    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, env = "TRACER_DURATION", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Payload bytes captured per syscall. 4096 holds a request line with its headers (bearer
    /// tokens included) and dozens of HTTP/2 frame headers; bodies beyond it are counted, not read.
    #[arg(long, env = "TRACER_CAPTURE_BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(64..=tracer_common::MAX_CAPTURE_BYTES as i64))]
    pub capture_bytes: u32,

    /// Size of the kernel ring buffer in bytes (a power of two, at least 64 KiB). Its pages are
    /// mapped twice, so it counts double in RSS.
    #[arg(long, env = "TRACER_RING_BUFFER_BYTES", default_value_t = 8 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,

    /// Connections followed at once; beyond it the oldest idle ones are evicted (and counted).
    #[arg(long, env = "TRACER_MAX_CONNECTIONS", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub max_connections: u32,

    /// Spans queued for export at most; more are dropped (and counted) rather than wait.
    #[arg(long, env = "TRACER_EXPORT_QUEUE", default_value_t = 8192,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub export_queue: u32,

    /// Server port of etcd (repeatable): HTTP/2 streams to or on it are etcd calls even while
    /// their names are unknown (connections joined mid-way).
    #[arg(long = "etcd-port", env = "TRACER_ETCD_PORT", value_delimiter = ',', default_value = "2379")]
    pub etcd_ports: Vec<u16>,

    /// Log filter (tracing EnvFilter syntax), e.g. info or tracer=debug; at debug, or with
    /// tracer::ebpf=debug, the probes' own diagnostics (aya-log) too.
    #[arg(long, env = "TRACER_LOG", default_value = "info")]
    pub log_level: String,

    /// Kernel BTF, required to load the probes.
    #[arg(long = "btf", env = "TRACER_BTF", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf_path: PathBuf,

    /// Hooks that capture socket I/O. socket: the kernel's sock_send_length/sock_recv_length
    /// tracepoints (Linux 6.3+), run only for socket I/O. syscalls: raw sys_enter/sys_exit, run
    /// for every syscall of every process (a cost docs/benchmarks.md measures). auto: socket if
    /// the kernel has it.
    #[arg(long, env = "TRACER_PROBE_MODE", value_enum, default_value_t = ProbeModeArg::Auto)]
    pub probe_mode: ProbeModeArg,

    /// Where Go crypto/tls calls are probed. Each probe hit is a trap. auto: one probe per call
    /// where the binary's code allows it, on an instruction the kernel emulates in one trap (the
    /// copy in Read, the stack check's branch in Write); the rest as rets. rets: Read at its RETs
    /// only where it keeps its arguments in their spill slots, everything else at entry and RETs
    /// (what auto falls back to). entry-and-rets: each call's entry and every RET, several traps
    /// per call, as most tracers do; for a Go build whose code auto misreads.
    #[arg(long, env = "TRACER_GO_TLS_PROBES", value_enum, default_value_t = GoTlsProbesArg::Auto)]
    pub go_tls_probes: GoTlsProbesArg,

    /// Seconds the Go TLS probes of an executable stay after the last traced process running it
    /// went: the next run of a short-lived client, or a restarted server, finds them in place.
    #[arg(long, env = "TRACER_GO_TLS_IDLE_RELEASE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub go_tls_idle_release: u64,

    /// A measurement aid, not for tracing: attach every probe as usual, but make each one return at
    /// its first instruction. Nothing is traced. What the target still pays is the cost of the
    /// hooks themselves (uprobe traps, tracepoint dispatch), which `cargo xtask bench` reports.
    #[arg(long, env = "TRACER_EMPTY_PROBES")]
    pub empty_probes: bool,

    /// Seconds between statistics log lines (0: only at exit).
    #[arg(long, env = "TRACER_STATS_INTERVAL", default_value_t = 60)]
    pub stats_interval: u64,

    /// Share of ordinary traces exported, from 0 to 1 (1: all). Decided from the trace id (its
    /// rightmost 56 bits, as OpenTelemetry's TraceIdRatioBased sampler), so agents that see the
    /// same trace agree. Traces with an error, slow traces and traces whose caller's traceparent
    /// says sampled are always exported.
    #[arg(long, env = "TRACER_SAMPLE_RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub sample_ratio: f64,

    /// A trace is slow, and always exported, when a single-object call (get, create, update,
    /// patch, delete of one object) in it took longer than this (kube-apiserver's SLO: 1s).
    /// Durations: 500ms, 1s, 1.5s, 2m.
    #[arg(long, env = "TRACER_SLOW_SINGLE_OBJECT", default_value = "1s", value_parser = parse_duration)]
    pub slow_single_object: Duration,

    /// Slow for a list (or deletecollection) in one namespace (kube-apiserver's SLO: 5s).
    #[arg(long, env = "TRACER_SLOW_NAMESPACE_LIST", default_value = "5s", value_parser = parse_duration)]
    pub slow_namespace_list: Duration,

    /// Slow for a list (or deletecollection) across the cluster (kube-apiserver's SLO: 30s).
    #[arg(long, env = "TRACER_SLOW_CLUSTER_LIST", default_value = "30s", value_parser = parse_duration)]
    pub slow_cluster_list: Duration,

    /// Slow for a span without a Kubernetes verb: etcd and other gRPC calls, non-resource paths
    /// such as /healthz. Watches and other long-running requests are never slow.
    #[arg(long, env = "TRACER_SLOW_OTHER", default_value = "1s", value_parser = parse_duration)]
    pub slow_other: Duration,

    /// Serve the metrics in the Prometheus text format on http://HOST:PORT/metrics, and /healthz
    /// (200 while capture runs) for a liveness probe. Off by default.
    #[arg(long, env = "TRACER_METRICS_ADDR", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub metrics_addr: Option<String>,

    /// Seconds between two exports of the metrics to the OTLP collector. Default:
    /// OTEL_METRIC_EXPORT_INTERVAL (milliseconds), else 60 s.
    #[arg(long, env = "TRACER_METRICS_INTERVAL", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub metrics_interval: Option<u64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeModeArg {
    Auto,
    Socket,
    Syscalls,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoTlsProbesArg {
    Auto,
    Rets,
    EntryAndRets,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    Grpc,
    #[value(alias = "http/protobuf")]
    Http,
}

/// A flag's value that may be a credential (`--otlp-header`): checked later, by a parser that
/// never quotes it (clap's own errors would), and never shown by Debug.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Gzip,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputArg {
    Terminal,
    Json,
    None,
}

impl Cli {
    /// `--comm` with its default applied.
    pub fn target_comms(&self) -> Vec<String> {
        if self.comms.is_empty() && self.pids.is_empty() {
            vec!["kube-apiserver".to_owned()]
        } else {
            self.comms.clone()
        }
    }
}

fn parse_comm(s: &str) -> Result<String, String> {
    // The kernel keeps 15 bytes of a command name; a longer --comm could never match.
    match s.len() {
        0 => Err("empty command name".into()),
        1..=15 => Ok(s.to_owned()),
        _ => Err(format!("command names are at most 15 bytes (the kernel truncates them): use '{}'", truncate_comm(s))),
    }
}

fn truncate_comm(s: &str) -> &str {
    let mut end = 15;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("'{s}' is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("'{s}' has no host"));
    }
    Ok(s.to_owned())
}

/// `HOST:PORT`, `[V6]:PORT`; the host is resolved when the listener is made.
fn parse_host_port(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("'{s}' is not HOST:PORT"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("'{s}' has no host (0.0.0.0:9464 listens on every address)"));
    }
    port.parse::<u16>().map_err(|e| format!("'{s}': port: {e}"))?;
    Ok(s.to_owned())
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret(s.to_owned()))
}

/// Milliseconds, or a number with the unit ms or s.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    // A bare number is milliseconds, as in OTEL_EXPORTER_OTLP_TIMEOUT; minutes are no export
    // timeout (a collector that slow holds up every batch behind it).
    let t = s.trim();
    let parsed = if t.bytes().all(|b| b.is_ascii_digit()) {
        parse_duration(&format!("{t}ms"))
    } else if t.ends_with('s') {
        parse_duration(t)
    } else {
        Err(String::new())
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("'{s}' is not a timeout above zero, e.g. 10000, 500ms or 10s")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number from 0 to 1")),
    }
}

/// `500ms`, `1s`, `1.5s`, `2m`: a non-negative decimal number and its unit.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration such as 500ms, 1s or 2m");
    let t = s.trim();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
    let (number, unit) = t.split_at(digits);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * seconds_per_unit).map_err(|_| bad())
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("'{s}': {e}"))?;
    if v < 65536 || !v.is_power_of_two() {
        return Err(format!("{v} is not a power of two of at least 65536"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_env_free_parsing() {
        let cli = Cli::try_parse_from(["tracer"]).unwrap();
        assert_eq!(cli.target_comms(), vec!["kube-apiserver"]);
        assert_eq!(cli.capture_bytes, 4096);
        assert_eq!(cli.otlp_compression, None);
        assert_eq!(cli.otlp_buffer_bytes, 256 << 20);
        let cli = Cli::try_parse_from(["tracer", "--otlp-buffer-bytes", "65536"]).unwrap();
        assert_eq!(cli.otlp_buffer_bytes, 65536);
        assert_eq!(cli.go_tls_idle_release, 60);
        let cli = Cli::try_parse_from(["tracer", "--otlp-compression", "gzip"]).unwrap();
        assert_eq!(cli.otlp_compression, Some(CompressionArg::Gzip));
        let cli = Cli::try_parse_from(["tracer", "--pid", "7", "--otlp-endpoint", "http://127.0.0.1:4317"]).unwrap();
        assert!(cli.target_comms().is_empty());
    }

    #[test]
    fn sampling_flags() {
        let cli = Cli::try_parse_from(["tracer"]).unwrap();
        assert_eq!(cli.sample_ratio, 1.0);
        let secs = Duration::from_secs;
        assert_eq!(
            (cli.slow_single_object, cli.slow_namespace_list, cli.slow_cluster_list, cli.slow_other),
            (secs(1), secs(5), secs(30), secs(1))
        );
        let cli = Cli::try_parse_from([
            "tracer",
            "--sample-ratio",
            "0.1",
            "--slow-single-object",
            "250ms",
            "--slow-namespace-list",
            "1.5s",
            "--slow-cluster-list",
            "2m",
            "--slow-other",
            "0s",
        ])
        .unwrap();
        assert_eq!(cli.sample_ratio, 0.1);
        assert_eq!(
            (cli.slow_single_object, cli.slow_namespace_list, cli.slow_cluster_list, cli.slow_other),
            (Duration::from_millis(250), Duration::from_millis(1500), secs(120), secs(0))
        );
        for ok in ["0", "1", "0.0", "1.0", "0.5"] {
            assert!(Cli::try_parse_from(["tracer", "--sample-ratio", ok]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["tracer", "--capture-bytes", "0"][..],
            &["tracer", "--capture-bytes", "1000000"],
            &["tracer", "--otlp-protocol", "bogus"],
            &["tracer", "--otlp-compression", "zstd"],
            &["tracer", "--otlp-buffer-bytes", "-1"],
            &["tracer", "--otlp-buffer-bytes", "1e9"],
            &["tracer", "--otlp-buffer-bytes", "100000000000000"],
            &["tracer", "--otlp-endpoint", "127.0.0.1:4317"],
            &["tracer", "--ring-buffer-bytes", "100000"],
            &["tracer", "--pid", "0"],
            &["tracer", "--comm", "a-name-longer-than-fifteen"],
            &["tracer", "--metrics-addr", "9464"],
            &["tracer", "--metrics-addr", ":9464"],
            &["tracer", "--metrics-addr", "localhost:http"],
            &["tracer", "--metrics-interval", "0"],
            &["tracer", "--otlp-timeout", "0"],
            &["tracer", "--otlp-timeout", "5m"],
            &["tracer", "--go-tls-idle-release", "-1"],
            &["tracer", "--go-tls-idle-release", "86401"],
            &["tracer", "--sample-ratio", "1.5"],
            &["tracer", "--sample-ratio", "-0.1"],
            &["tracer", "--sample-ratio", "NaN"],
            &["tracer", "--sample-ratio", "ten percent"],
            &["tracer", "--slow-other", "1"],
            &["tracer", "--slow-other", "-1s"],
            &["tracer", "--slow-other", "1h"],
            &["tracer", "--slow-single-object", "ms"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} should be rejected");
        }
    }

    #[test]
    fn otlp_flags() {
        let cli = Cli::try_parse_from([
            "tracer",
            "--otlp-protocol",
            "http/protobuf",
            "--otlp-header",
            "x-api-key=secret",
            "--otlp-header",
            "b=2",
            "--otlp-timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(cli.otlp_protocol, Some(ProtocolArg::Http));
        assert_eq!(cli.otlp_headers, [Secret("x-api-key=secret".into()), Secret("b=2".into())]);
        assert_eq!(cli.otlp_timeout, Some(Duration::from_secs(2)));
        assert!(!format!("{cli:?}").contains("secret"));
        // --help would show TRACER_OTLP_HEADERS's value.
        let cmd = <Cli as clap::CommandFactory>::command();
        assert!(cmd.get_arguments().any(|a| a.get_id() == "otlp_headers" && a.is_hide_env_values_set()));
        assert_eq!(parse_timeout("750").unwrap(), Duration::from_millis(750));
        assert_eq!(parse_timeout("750ms").unwrap(), Duration::from_millis(750));
        assert_eq!(parse_timeout("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["0", "0ms", "", "10x", "-1s"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }
}
