//! What the tracer under test needs from its runner, tests and bench alike: its environment, its
//! readiness line and its `final stats` line.

use std::collections::BTreeMap;
use std::process::Command;
use std::str::FromStr;

use crate::collector::strip_ansi;

/// What the tracer logs once a target's probes are attached.
pub const ATTACHED: &str = "target attached";

/// Which `TRACER_*` variables the tracer under test inherits from its runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracerEnv {
    /// The tests': hermetic, see [`tracer_env`].
    Hermetic,
    /// The bench's: flags say what to trace and where to send it, so the variables they would
    /// compete with are removed (`TRACER_OTLP_ENDPOINT`, `TRACER_COMM`, `TRACER_PID`,
    /// `TRACER_LOG`); the rest of `TRACER_*` (probe mode, OTLP compression) is inherited on
    /// purpose, so that a bench run can measure those settings.
    InheritSettings,
}

impl TracerEnv {
    /// Applies the policy to `cmd`.
    pub fn apply(self, cmd: &mut Command) -> &mut Command {
        match self {
            TracerEnv::Hermetic => tracer_env(cmd),
            TracerEnv::InheritSettings => cmd
                .env_remove("TRACER_OTLP_ENDPOINT")
                .env_remove("TRACER_COMM")
                .env_remove("TRACER_PID")
                .env_remove("TRACER_LOG"),
        }
    }
}

/// Gives the tracer under test a hermetic environment: every inherited `TRACER_*` variable except
/// `TRACER_LOG`, and every `OTEL_*` variable, removed, `TRACER_LOG=info` when unset, `NO_COLOR=1`,
/// `RUST_BACKTRACE=1`, and `TRACER_PROBE_MODE` and `TRACER_GO_TLS_PROBES` from `ITEST_PROBE_MODE`
/// and `ITEST_GO_TLS_PROBES` when they are set.
fn tracer_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        // The standard OTEL_* variables configure the tracer's export too.
        if (k.starts_with("TRACER_") && k != "TRACER_LOG") || k.starts_with("OTEL_") {
            cmd.env_remove(&k);
        }
    }
    if std::env::var_os("TRACER_LOG").is_none() {
        cmd.env("TRACER_LOG", "info");
    }
    // `cargo xtask test` runs the protocol suites a second time with the syscall hooks.
    if let Some(mode) = std::env::var_os("ITEST_PROBE_MODE") {
        cmd.env("TRACER_PROBE_MODE", mode);
    }
    // ... and with the Go TLS probes at every entry and RET, then once more at Read's RETs alone.
    if let Some(probes) = std::env::var_os("ITEST_GO_TLS_PROBES") {
        cmd.env("TRACER_GO_TLS_PROBES", probes);
    }
    cmd.env("NO_COLOR", "1");
    cmd.env("RUST_BACKTRACE", "1")
}

/// Whether `line` has a `pid=<pid>` field (not a prefix of a longer number).
pub fn has_pid_field(line: &str, pid: u32) -> bool {
    let needle = format!("pid={pid}");
    let mut rest = line;
    while let Some(i) = rest.find(&needle) {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let after = &rest[i + needle.len()..];
        let after_ok = !after.starts_with(|c: char| c.is_ascii_digit());
        if before_ok && after_ok {
            return true;
        }
        rest = &rest[i + needle.len()..];
    }
    false
}

/// What the tracer logs once a process's Go TLS probes can see its first instruction.
pub const PROBES_READY: &str = "Go TLS probes ready";

/// One `Go TLS probes ready` line: whose probes, how long after its exec, and what the agent had
/// to do for its binary (`first-sight`: analysed; `cached`: analysis reused, probes attached;
/// `already-attached`: the probes were on the file already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbesReady {
    pub pid: u32,
    pub exec_to_ready_us: u64,
    pub binary: String,
}

impl ProbesReady {
    /// The readiness of `line`, if it is a `Go TLS probes ready` line with its three fields.
    pub fn parse(line: &str) -> Option<ProbesReady> {
        let line = strip_ansi(line);
        if !line.contains(PROBES_READY) {
            return None;
        }
        let field = |key: &str| {
            line.split_whitespace().find_map(|t| t.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim_matches('"')))
        };
        Some(ProbesReady {
            pid: field("pid")?.parse().ok()?,
            exec_to_ready_us: field("exec_to_ready_us")?.parse().ok()?,
            binary: field("binary")?.to_owned(),
        })
    }
}

/// The sampler's `final stats` counters, one per trace by its decision: together they count every
/// trace the agent made, kept or not.
pub const SAMPLING_DECISIONS: [&str; 5] =
    ["kept_error", "kept_slow", "kept_parent_sampled", "kept_ratio", "dropped_ratio"];

/// The last `final stats` line of the tracer's log.
pub fn final_stats_line(log: &str) -> Option<&str> {
    log.lines().rev().find(|l| l.contains("final stats"))
}

/// The numbers of the last `final stats` line of the tracer's log, by key; None without such a line.
pub fn final_stats<T: FromStr>(log: &str) -> Option<BTreeMap<String, T>> {
    final_stats_line(log).map(parse_stats)
}

/// The numeric `key=value` pairs of a stats line (ANSI colour codes, if any, removed; a value in
/// quotes counts).
fn parse_stats<T: FromStr>(line: &str) -> BTreeMap<String, T> {
    strip_ansi(line)
        .split_whitespace()
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn probes_ready_line() {
        let line = "2026-12-07T22:00:00.1Z  INFO tracer::attachments: Go TLS probes ready pid=4242 \
            exec_to_ready_us=1873 binary=\"already-attached\" comm=kubectl";
        let r = super::ProbesReady::parse(line).unwrap();
        assert_eq!((r.pid, r.exec_to_ready_us, r.binary.as_str()), (4242, 1873, "already-attached"));
        let unquoted = "INFO x: Go TLS probes ready binary=first-sight exec_to_ready_us=96000 pid=7";
        assert_eq!(super::ProbesReady::parse(unquoted).unwrap().binary, "first-sight");
        assert!(super::ProbesReady::parse("INFO x: Go TLS probes ready pid=7").is_none());
        assert!(super::ProbesReady::parse("INFO x: target attached pid=7 exec_to_ready_us=1 binary=x").is_none());
    }

    #[test]
    fn stats_line() {
        let log = "INFO tracer::run: final stats events=1\n\
            2026-01-01T00:00:00Z  INFO tracer::run: final stats events=12 lost_ringbuf_full=0 \x1b[3mspans\x1b[0m\x1b[2m=\x1b[0m5\n\
            INFO tracer::run: bye\n";
        let s = super::final_stats::<u64>(log).unwrap();
        assert_eq!(s["events"], 12);
        assert_eq!(s["lost_ringbuf_full"], 0);
        assert_eq!(s["spans"], 5);
        let log = "INFO tracer::run: final stats spans=9 kept_error=1 kept_slow=2 kept_parent_sampled=0 kept_ratio=3 \
            dropped_ratio=3 exported=6\n";
        let s = super::final_stats::<u64>(log).unwrap();
        assert_eq!(super::SAMPLING_DECISIONS.map(|k| s[k]), [1, 2, 0, 3, 3]);
        assert!(super::final_stats::<u64>("INFO tracer::run: bye\n").is_none());
    }
}
