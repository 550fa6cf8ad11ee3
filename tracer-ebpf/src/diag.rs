//! Probe-side diagnostics: why a probe refused something or could not read what it wanted, at
//! debug level, through aya-log. The agent shows them in its log under the `tracer::ebpf` target.
//!
//! aya-log-ebpf tests its level first: `AYA_LOG_LEVEL`, a read-only global the agent sets at load
//! time from its own log filter. Below debug the test is a load and a branch on a constant (the
//! verifier does not run the logging code; what of it stays in the program, docs/benchmarks.md
//! says), and nothing the message needs is read or computed:
//! the arguments are evaluated only when the level is on. Only refusal and error paths log, never
//! the happy path of an event.

/// Logs a debug-level diagnostic; arguments as aya-log-ebpf's (format string, then values).
macro_rules! diag {
    ($($arg:tt)+) => {
        aya_log_ebpf::debug!(&(), target: "tracer::ebpf", $($arg)+)
    };
}

pub(crate) use diag;
