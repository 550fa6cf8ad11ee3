//! The agent's lifecycle: load, attach targets, run the capture loop, shut down cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    agent::{Agent, RecordStats},
    assemble::Assembler,
    attachments::Attachments,
    capture::{Capture, HOUSEKEEPING, KernelCounters, PollPeriod},
    cli::{Cli, OutputArg},
    clock::Clock,
    correlate::{Correlator, SampleConfig, SlowThresholds},
    export::{self, AgentCounters, ExportConfig, Health, MetricsConfig, Output},
    gotls::GoTls,
    otel_env,
    pipeline::{DataFlowCounters, Pipeline},
    probes, procfs,
    targets::Targets,
};

/// Exit status of a run that otherwise went well but lost spans to a collector that was down.
pub const EXIT_EXPORT_FAILED: i32 = 3;

pub enum Outcome {
    Clean,
    /// Spans could not be delivered to the collector (the message says how many and where).
    ExportFailed(String),
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    // First: a signal during start-up then ends the run cleanly once it is attached, instead of
    // killing it half-way (the default action).
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Explicit pids must exist: a typo should fail now, not trace nothing silently.
    for &pid in &cli.pids {
        if !procfs::exists(pid) {
            bail!("no such process: pid {pid}");
        }
    }
    // Before any probe is loaded: a bad setting or TLS file is an error now.
    let otlp = otel_env::resolve(&cli, &|name| std::env::var(name).ok())?;
    let traces = &otlp.traces;
    export::check_otlp(traces)?;
    if let Some(endpoint) = &traces.traces_endpoint {
        warn_if_unreachable(traces, endpoint).await?;
    }
    let health = Arc::new(Health::default());
    let metrics = metrics_config(&cli, &otlp.metrics, &health)?;
    let metrics_on = metrics.is_some();
    let mut ebpf = probes::load(&cli)?;
    let mut capture = Capture::new(&mut ebpf)?;
    let targets = Targets::new(&mut ebpf, cli.target_comms())?;

    let (export, exporter) = export::start(ExportConfig {
        metrics,
        otlp_endpoint: traces.traces_endpoint.clone(),
        otlp_protocol: traces.protocol,
        otlp_gzip: traces.gzip,
        otlp_headers: traces.headers.clone(),
        otlp_tls: traces.tls.clone(),
        export_timeout: traces.timeout,
        resource_attributes: otlp.resource.clone(),
        output: output(cli.output, traces.traces_endpoint.is_some()),
        queue_capacity: cli.export_queue as usize,
        buffer_bytes: usize::try_from(cli.otlp_buffer_bytes).unwrap_or(usize::MAX),
        ..ExportConfig::default()
    })?;
    let export_stats = export.stats();
    let gotls = GoTls::load(&mut ebpf, cli.go_tls_probes, Duration::from_secs(cli.go_tls_idle_release))?;
    let assembler = Assembler::new(Clock::new(), cli.etcd_ports.clone());
    let correlator = Correlator::with_sampling(sample_config(&cli));
    let pipeline = Pipeline::new(cli.max_connections as usize, assembler, correlator, export);
    let mut agent = Agent::new(Attachments::new(ebpf, gotls, targets), pipeline);

    // First, so that a target exec'd while the rest starts finds its probes.
    agent.attach_ahead_by_comm();
    for &pid in &cli.pids {
        agent.attach(pid)?;
    }
    agent.attach_by_comm();
    if let Some(comms) = agent.waiting_for() {
        tracing::info!("waiting for a process named {comms}");
    }

    let deadline = async {
        match cli.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    // The probes wake the agent only when a lot is waiting (see tracer-ebpf maps.rs); this timer
    // collects the rest, so a span is never held back for longer than one period.
    let mut period = PollPeriod::default();
    let poll = tokio::time::sleep(period.current());
    tokio::pin!(poll);
    let stats_every = (cli.stats_interval > 0).then(|| Duration::from_secs(cli.stats_interval));
    let mut last_stats = tokio::time::Instant::now();

    health.set_capturing(true);
    loop {
        tokio::select! {
            r = capture.drain(&mut agent) => {
                let next = period.after_read(r?);
                poll.as_mut().reset(tokio::time::Instant::now() + next);
            }
            _ = &mut poll => {
                let next = period.after_read(capture.drain_now(&mut agent));
                // On the grid of the last deadline, as an interval would be: "now + period"
                // would add the read's own time and the timer wheel's rounding up to each period.
                let deadline = (poll.deadline() + next).max(tokio::time::Instant::now());
                poll.as_mut().reset(deadline);
            }
            _ = housekeeping.tick() => {
                // Catch --comm processes whose exec the probe may have missed (e.g. while loading).
                agent.attach_by_comm();
                // Exec records still in the ring may be of an idle file's new process: read them
                // first, so that its probes are not released under it.
                capture.drain_now(&mut agent);
                agent.release_idle_probes();
                if metrics_on {
                    health.update(agent_counters(&Counters::new(&agent, capture.kernel_counters())));
                }
                if stats_every.is_some_and(|every| last_stats.elapsed() >= every) {
                    log_stats("stats", &Counters::new(&agent, capture.kernel_counters()), &export_stats);
                    last_stats = tokio::time::Instant::now();
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline => break,
        }
    }

    health.set_capturing(false);
    capture.drain_now(&mut agent);
    agent.finish();
    let counters = Counters::new(&agent, capture.kernel_counters());
    health.update(agent_counters(&counters));
    drop(capture);
    drop(agent); // detaches every probe
    let flushed = exporter.shutdown(Duration::from_secs(5)).await;
    // After the last export, so that `exported` counts every span that reached the collector.
    log_stats("final stats", &counters, &export_stats);
    flushed?;

    // Spans delivered after an outage are not lost; those the retry buffer had no room for, or
    // still held at exit, are.
    let lost = export_stats.lost_to_collector();
    if lost > 0 {
        let endpoint = otlp.traces.traces_endpoint.unwrap_or_default();
        return Ok(Outcome::ExportFailed(format!(
            "{lost} spans could not be exported to {endpoint} (is the collector up?)"
        )));
    }
    Ok(Outcome::Clean)
}

/// One line at start-up if the collector is not there (capture goes on; export retries); an error
/// if it is there but its certificate is not trusted.
async fn warn_if_unreachable(settings: &export::OtlpSettings, endpoint: &str) -> Result<()> {
    if let export::transport::Reach::Unreachable(why) =
        export::transport::reach(settings, endpoint, Duration::from_secs(2)).await?
    {
        tracing::warn!(
            "collector at {endpoint} is not reachable ({why}); spans are kept for it (within --otlp-buffer-bytes) until it is"
        );
    }
    Ok(())
}

/// The agent's and the kernel's counters at one moment.
struct Counters {
    records: RecordStats,
    data: DataFlowCounters,
    kernel: KernelCounters,
}

impl Counters {
    fn new(agent: &Agent, kernel: KernelCounters) -> Self {
        let (records, data) = agent.counters();
        Counters { records, data, kernel }
    }
}

fn log_stats(what: &str, c: &Counters, e: &export::ExportStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let (r, p, a, k) = (&c.records, &c.data.pipeline, &c.data.assemble, &c.kernel);
    let sampled = &c.data.correlate.sampling;
    let (t, parented, roots) = (&c.data.correlate, &c.data.correlate.parented, &c.data.correlate.root_reasons);
    tracing::info!(
        events = r.events,
        corrupt_events = r.corrupt_events,
        lost_ringbuf_full = k.ringbuf_full,
        lost_args_full = k.args_full,
        lost_sockets_full = k.sockets_full,
        read_user_failed = k.read_user_failed,
        iov_truncated = k.iov_truncated,
        go_tls_no_socket = k.go_tls_no_socket,
        go_tls_calls_full = k.go_tls_calls_full,
        no_syscall_fd = k.no_syscall_fd,
        go_spawn_no_entry = k.go_spawn_no_entry,
        go_link_no_caller = k.go_link_no_caller,
        go_link_no_socket = k.go_link_no_socket,
        go_link_bad_layout = k.go_link_bad_layout,
        connections = c.data.connections,
        connections_evicted = c.data.connections_evicted,
        stale_closes = p.stale_closes,
        spans = a.spans,
        desyncs = a.desyncs,
        lost_resets = a.lost_resets,
        requests_abandoned = a.requests_abandoned,
        unmatched_responses = a.unmatched_responses,
        pending_overflow = a.pending_overflow,
        unnamed_streams = a.unnamed_streams,
        grpc_links_used = a.grpc_links_used,
        grpc_links_expired = a.grpc_links_expired,
        trace_roots = t.roots,
        trace_remote_parents = t.remote_parents,
        parented_server_request = parented.server_request,
        parented_grpc_link = parented.grpc_link,
        parented_http1_link = parented.http1_link,
        parented_both_ends = parented.both_ends,
        parented_late = parented.late,
        roots_request = roots.request,
        roots_no_goroutine = roots.no_goroutine,
        roots_no_link = roots.no_link,
        roots_link_off = roots.link_off,
        roots_no_request = roots.no_request,
        roots_parent_not_seen = roots.parent_not_seen,
        roots_parent_forgotten = roots.parent_forgotten,
        roots_peer_not_seen = roots.peer_not_seen,
        roots_process_gone = roots.process_gone,
        held_spans = t.held,
        expired_waits = t.expired_waits,
        dropped_to_root = t.dropped_to_root,
        goroutines = t.goroutines,
        goroutines_evicted = t.goroutines_evicted,
        links_dropped = t.links_dropped,
        link_disagreements = t.link_disagreements,
        link_kinds_switched_off = t.link_kinds_switched_off,
        kept_error = sampled.kept_error,
        kept_slow = sampled.kept_slow,
        kept_parent_sampled = sampled.kept_parent_sampled,
        kept_ratio = sampled.kept_ratio,
        dropped_ratio = sampled.dropped_ratio,
        exported = e.exported.load(Relaxed),
        dropped_queue_full = e.dropped_queue_full.load(Relaxed),
        dropped_export_failed = e.dropped_export_failed.load(Relaxed),
        rejected_by_collector = e.rejected_by_collector.load(Relaxed),
        exported_after_retry = e.exported_after_retry.load(Relaxed),
        export_retries = e.export_retries.load(Relaxed),
        dropped_buffer_full = e.dropped_buffer_full.load(Relaxed),
        dropped_buffer_full_batches = e.dropped_buffer_full_batches.load(Relaxed),
        buffered_spans = e.buffered_spans.load(Relaxed),
        buffered_bytes = e.buffered_bytes.load(Relaxed),
        "{what}"
    );
}

/// The metrics' settings: on when there is somewhere to send them (a collector, `--metrics-addr`).
fn metrics_config(cli: &Cli, otlp: &export::OtlpSettings, health: &Arc<Health>) -> Result<Option<MetricsConfig>> {
    export::check_otlp(otlp)?;
    let push = otlp.metrics_endpoint.is_some().then(|| otlp.clone());
    if push.is_none() && cli.metrics_addr.is_none() {
        return Ok(None);
    }
    let interval = export::metrics_interval(cli.metrics_interval, std::env::var("OTEL_METRIC_EXPORT_INTERVAL").ok())?;
    Ok(Some(MetricsConfig { otlp: push, interval, listen: cli.metrics_addr.clone(), health: health.clone() }))
}

/// The counters the metrics report, in the order of `AgentCounters::lost_events`.
fn agent_counters(c: &Counters) -> AgentCounters {
    let k = &c.kernel;
    AgentCounters {
        events: c.records.events,
        lost_events: [
            k.ringbuf_full,
            k.args_full,
            k.sockets_full,
            k.read_user_failed,
            k.go_tls_no_socket,
            k.go_tls_calls_full,
            c.records.corrupt_events,
        ],
    }
}

/// Where spans go besides OTLP: the terminal by default, nothing once a collector is given (by a
/// flag or an `OTEL_*` variable).
fn output(flag: Option<OutputArg>, collector: bool) -> Output {
    match (flag, collector) {
        (Some(OutputArg::Terminal), _) | (None, false) => Output::Terminal,
        (Some(OutputArg::Json), _) => Output::Json,
        (Some(OutputArg::None), _) | (None, true) => Output::None,
    }
}

fn sample_config(cli: &Cli) -> SampleConfig {
    SampleConfig {
        ratio: cli.sample_ratio,
        slow: SlowThresholds {
            single_object: cli.slow_single_object,
            namespace_collection: cli.slow_namespace_list,
            cluster_collection: cli.slow_cluster_list,
            other: cli.slow_other,
        },
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn output_defaults_to_the_terminal_until_a_collector_is_given() {
        let cli = Cli::try_parse_from(["tracer"]).unwrap();
        assert_eq!(output(cli.output, cli.otlp_endpoint.is_some()), Output::Terminal);
        let cli = Cli::try_parse_from(["tracer", "--pid", "7", "--otlp-endpoint", "http://127.0.0.1:4317"]).unwrap();
        assert_eq!(output(cli.output, cli.otlp_endpoint.is_some()), Output::None);
        assert_eq!(output(None, true), Output::None);
    }

    /// The flag's default is the exporter's (cli.rs cannot name export's constant).
    #[test]
    fn the_buffer_flag_defaults_to_the_exporters_bound() {
        let cli = Cli::try_parse_from(["tracer"]).unwrap();
        assert_eq!(cli.otlp_buffer_bytes as usize, export::DEFAULT_BUFFER_BYTES);
    }
}
