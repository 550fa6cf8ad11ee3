//! The probes' own diagnostics (aya-log) reach the agent's log at debug level, and only then.
//!
//! A target sending UDP datagrams makes the socket hook refuse each datagram's socket (not TCP),
//! which the probe says at debug level under the `tracer::ebpf` target. The socket hooks are asked
//! for: the syscall hooks never look at a socket they were not told of, so have nothing to refuse.

use std::process::Command;
use std::time::Duration;

use integration_tests::*;

/// What the socket hook says when it refuses a socket that is not TCP (tracer-ebpf's sockio.rs).
const REFUSAL: &str = "not followed, not TCP over IPv4/IPv6";

/// A python process that sends a UDP datagram to 127.0.0.1 for each line on its stdin.
fn udp_sender() -> Proc {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  print('ready', flush=True)\n\
                  for n, line in enumerate(sys.stdin, 1):\n\
                  \x20   s.sendto(b'probe-log', ('127.0.0.1', 9))\n\
                  \x20   print(f'sent {n}', flush=True)\n";
    let mut cmd = Command::new(python());
    cmd.args(["-c", script]);
    let mut proc = Proc::spawn("udp-sender", cmd);
    proc.wait_stdout_line("ready", |l| l == "ready", Duration::from_secs(20));
    proc
}

/// Traces a UDP sender at `log_level`, makes it send, and returns the tracer's output once the
/// sends are done (and, at debug level, once the refusal was logged).
fn run_at(log_level: &str) -> TracerOutput {
    let mut sender = udp_sender();
    let pid = sender.pid().to_string();
    let mut t = Tracer::start(&["--pid", &pid, "--probe-mode", "socket", "--output", "none", "--log-level", log_level]);
    t.wait_attached(sender.pid());
    for _ in 0..3 {
        sender.send_line("go");
    }
    sender.wait_stdout_line("sent 3", |l| l == "sent 3", Duration::from_secs(20));
    if log_level == "debug" {
        t.wait_for_stderr(REFUSAL, Duration::from_secs(20));
    } else {
        // The probes ran at the sends; what they would log arrives within milliseconds.
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = t.stop();
    out.assert_code(0);
    out
}

#[test]
fn probe_diagnostics_show_at_debug_level_only() {
    require_root();
    let debug = run_at("debug");
    let line = debug.stderr.lines().find(|l| l.contains(REFUSAL)).expect("checked by run_at");
    assert!(line.contains("DEBUG") && line.contains("tracer::ebpf"), "not a debug line of the probes: {line}");

    let info = run_at("info");
    assert!(!info.stderr.contains(REFUSAL), "a probe diagnostic at info level:\n{}", info.stderr);
    assert!(!info.stderr.contains("tracer::ebpf"), "probe log lines at info level:\n{}", info.stderr);
}
