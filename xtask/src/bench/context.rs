//! What the scenarios share: the run's parameters, where spans go, the scenarios' figures and
//! budgets, and the context (tools, paths, findings) every scenario gets.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::procs::{self, Tracer};
use super::servers::{self, OtlpSink};

/// Run lengths and sizes; `--quick` stays under 5 minutes on 2 cores.
#[derive(Debug, Clone)]
pub struct Params {
    pub mode: &'static str,
    pub rounds: usize,
    pub wrk_secs: u64,
    pub wrk_conns: u32,
    /// h2load: connections, streams in flight on each, seconds per run.
    pub h2_conns: u32,
    pub h2_streams: u32,
    pub h2_secs: u64,
    pub etcd_secs: u64,
    pub etcd_conns: usize,
    pub etcd_inflight: usize,
    pub syscall_calls: u64,
    pub syscall_reps: u32,
    pub syscall_rounds: usize,
    pub ceiling_levels: Vec<u32>,
    pub ceiling_secs: u64,
    pub live_conns: usize,
    pub bpf_secs: u64,
    /// Also run the server scenarios with `--empty-probes` (a third arm; not in quick runs, for time).
    pub empty_probe_servers: bool,
}

impl Params {
    pub fn new(quick: bool) -> Params {
        if quick {
            Params {
                mode: "quick",
                rounds: 3,
                wrk_secs: 5,
                wrk_conns: 32,
                h2_conns: 8,
                h2_streams: 8,
                h2_secs: 3,
                etcd_secs: 5,
                etcd_conns: 8,
                etcd_inflight: 8,
                syscall_calls: 200_000,
                syscall_reps: 5,
                syscall_rounds: 4,
                ceiling_levels: vec![32, 256, 1024],
                ceiling_secs: 5,
                live_conns: 10_000,
                bpf_secs: 5,
                empty_probe_servers: false,
            }
        } else {
            Params {
                mode: "full",
                rounds: 7,
                wrk_secs: 10,
                wrk_conns: 32,
                h2_conns: 8,
                h2_streams: 8,
                h2_secs: 10,
                etcd_secs: 10,
                etcd_conns: 8,
                etcd_inflight: 8,
                syscall_calls: 200_000,
                syscall_reps: 10,
                syscall_rounds: 8,
                ceiling_levels: vec![16, 64, 256, 1024, 4096],
                ceiling_secs: 10,
                live_conns: 10_000,
                bpf_secs: 10,
                empty_probe_servers: true,
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode,
            "rounds": self.rounds,
            "wrk": format!("wrk -t1 -c{} -d{}s --latency", self.wrk_conns, self.wrk_secs),
            "h2load": format!("h2load -t1 -c{} -m{} -D {}", self.h2_conns, self.h2_streams, self.h2_secs),
            "etcd_load": format!("{} h2c connections x {} in-flight unary calls (50% Put 256 B, 50% Range), {} s",
                self.etcd_conns, self.etcd_inflight, self.etcd_secs),
            "syscall_loop": format!("fastest of {} batches of {} calls, thread CPU time", self.syscall_reps, self.syscall_calls),
            "syscall_rounds": self.syscall_rounds,
            "ceiling_levels_wrk_connections": self.ceiling_levels,
            "ceiling_secs": self.ceiling_secs,
            "live_connections": self.live_conns,
            "bpf_stats_secs": self.bpf_secs,
            "empty_probes_arm": if self.empty_probe_servers { "servers and syscall tax" } else { "syscall tax only" },
            // The tracer inherits TRACER_PROBE_MODE: `syscalls` benches the fallback hooks.
            "tracer_probe_mode": std::env::var("TRACER_PROBE_MODE").unwrap_or_else(|_| "auto".into()),
        })
    }
}

/// Where the traced runs send their spans (`XTASK_BENCH_EXPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// OTLP over gRPC to the bench's sink: the tracer's default protocol (`otlp`, the default).
    OtlpGrpc,
    /// OTLP/HTTP protobuf to the same sink (`otlp-http`).
    OtlpHttp,
    /// `--output none`: spans are built and dropped, nothing is encoded or sent (`none`).
    None,
}

impl Export {
    pub fn from_env() -> Result<Export> {
        match std::env::var("XTASK_BENCH_EXPORT").as_deref() {
            Err(_) | Ok("otlp") | Ok("otlp-grpc") => Ok(Export::OtlpGrpc),
            Ok("otlp-http") => Ok(Export::OtlpHttp),
            Ok("none") => Ok(Export::None),
            Ok(v) => bail!("XTASK_BENCH_EXPORT={v:?}: expected otlp, otlp-http or none"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Export::OtlpGrpc => "OTLP/gRPC to the bench's sink (tests/go/otlp-sink)",
            Export::OtlpHttp => "OTLP/HTTP to the bench's sink (tests/go/otlp-sink)",
            Export::None => "none (--output none: spans are built, not encoded or sent)",
        }
    }
}

/// What a scenario's figure must meet.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    None,
    /// traced / baseline ≥ x
    MinRatio(f64),
    /// traced / baseline ≤ x
    MaxRatio(f64),
    /// traced − baseline ≤ x
    MaxDelta(f64),
    /// traced ≤ x
    MaxTraced(f64),
    /// decided by the scenario (zero lost events at a rate)
    Given(bool, &'static str),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub baseline: Option<f64>,
    pub traced: Option<f64>,
    pub unit: &'static str,
    pub budget: Budget,
    pub note: String,
    pub samples_baseline: Vec<f64>,
    pub samples_traced: Vec<f64>,
}

impl Scenario {
    pub fn new(name: &str, unit: &'static str, budget: Budget) -> Scenario {
        Scenario {
            name: name.to_owned(),
            baseline: None,
            traced: None,
            unit,
            budget,
            note: String::new(),
            samples_baseline: Vec::new(),
            samples_traced: Vec::new(),
        }
    }

    /// Medians of both sample sets.
    pub fn samples(mut self, baseline: Vec<f64>, traced: Vec<f64>) -> Scenario {
        self.baseline = median(&baseline);
        self.traced = median(&traced);
        self.samples_baseline = baseline;
        self.samples_traced = traced;
        self
    }

    pub fn values(mut self, baseline: Option<f64>, traced: Option<f64>) -> Scenario {
        self.baseline = baseline;
        self.traced = traced;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Scenario {
        self.note = note.into();
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        match (self.baseline, self.traced) {
            (Some(b), Some(t)) if b != 0.0 => Some(t / b),
            _ => None,
        }
    }

    pub fn delta(&self) -> Option<f64> {
        Some(self.traced? - self.baseline?)
    }

    pub fn budget_text(&self) -> Option<String> {
        match self.budget {
            Budget::None => None,
            Budget::MinRatio(x) => Some(format!("ratio >= {x}")),
            Budget::MaxRatio(x) => Some(format!("ratio <= {x}")),
            Budget::MaxDelta(x) => Some(format!("added <= {x} {}", self.unit)),
            Budget::MaxTraced(x) => Some(format!("traced <= {x} {}", self.unit)),
            Budget::Given(_, text) => Some(text.to_owned()),
        }
    }

    pub fn meets(&self) -> Option<bool> {
        match self.budget {
            Budget::None => None,
            Budget::MinRatio(x) => Some(self.ratio()? >= x),
            Budget::MaxRatio(x) => Some(self.ratio()? <= x),
            Budget::MaxDelta(x) => Some(self.delta()? <= x),
            Budget::MaxTraced(x) => Some(self.traced? <= x),
            Budget::Given(ok, _) => Some(ok),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "baseline": self.baseline,
            "traced": self.traced,
            "ratio": self.ratio(),
            "delta": self.delta(),
            "unit": self.unit,
            "budget": self.budget_text(),
            "meets_budget": self.meets(),
            "note": self.note,
            "samples": { "baseline": self.samples_baseline, "traced": self.samples_traced },
        })
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

/// Tools, paths and findings shared by the scenarios.
pub struct Ctx {
    pub p: Params,
    pub work: PathBuf,
    pub tracer: PathBuf,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    pub nginx: PathBuf,
    pub etcd: PathBuf,
    pub gcc: PathBuf,
    pub openssl: PathBuf,
    pub export: Export,
    /// Receives the traced runs' spans, unless `export` is `None`.
    pub sink: Option<OtlpSink>,
    pub scenarios: Vec<Scenario>,
    pub extra: BTreeMap<&'static str, Value>,
    pub warnings: Vec<String>,
}

impl Ctx {
    /// Starts the tracer on `pid` with `extra` arguments, exporting to the sink if there is one.
    pub fn start_tracer(&self, pid: u32, extra: &[&str]) -> Result<Tracer> {
        let endpoint = self.sink.as_ref().map(OtlpSink::endpoint);
        let mut args: Vec<&str> = extra.to_vec();
        if let Some(e) = &endpoint {
            args.extend([
                "--otlp-endpoint",
                e,
                "--otlp-protocol",
                if self.export == Export::OtlpHttp { "http" } else { "grpc" },
            ]);
        }
        Tracer::start(&self.tracer, pid, &args)
    }

    /// The sink's counts and CPU time so far (zero without a sink).
    pub fn sink_snapshot(&self) -> Result<(servers::SinkCounts, f64)> {
        match &self.sink {
            Some(s) => Ok((s.counts()?, procs::cpu_seconds(s.pid())?)),
            None => Ok(Default::default()),
        }
    }
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}
