//! Command-line and error-path behaviour of the tracer binary: exit codes, one-line `error: `
//! messages, never a panic.

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An idle process to point `--pid` at.
fn idle_process() -> Proc {
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    Proc::spawn("sleep", cmd)
}

#[test]
fn bad_flag_values_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--capture-bytes", "0"], "capture-bytes"),
        (&["--capture-bytes", "63"], "capture-bytes"),
        (&["--capture-bytes", "32769"], "capture-bytes"),
        (&["--capture-bytes", "lots"], "capture-bytes"),
        (&["--otlp-protocol", "bogus"], "otlp-protocol"),
        (&["--output", "bogus"], "output"),
        (&["--probe-mode", "kprobes"], "probe-mode"),
        (&["--pid", "not-a-pid"], "pid"),
        (&["--no-such-flag"], "no-such-flag"),
    ];
    for (args, needle) in cases {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--duration", "2"]);
        let out = Tracer::run(&full, RUN_TIMEOUT);
        out.assert_error(2, &[needle]);
    }
}

/// `--probe-mode` picks the hooks, and the log says which; this kernel (6.18) has both.
#[test]
fn probe_mode_is_chosen_and_logged() {
    require_root();
    let idle = idle_process();
    for (mode, needle) in [
        ("auto", "sock_send_length/sock_recv_length tracepoints"),
        ("socket", "sock_send_length/sock_recv_length tracepoints"),
        ("syscalls", "capturing socket I/O with sys_enter/sys_exit"),
    ] {
        let pid = idle.pid().to_string();
        let mut t = Tracer::start(&["--probe-mode", mode, "--pid", &pid, "--output", "none"]);
        t.wait_attached(idle.pid());
        let out = t.stop();
        out.assert_code(0);
        assert!(out.stderr.contains(needle), "--probe-mode {mode}: no {needle:?} in:\n{}", out.stderr);
    }
}

#[test]
fn capture_bytes_bounds_are_accepted() {
    // 64 and 32768 are valid: the tracer starts (it waits for its default comm) and exits after
    // --duration with 0. With both hook sets: the verifier checks the capture loops at load, and
    // the largest size is where its state pruning has failed before.
    require_root();
    for mode in ["socket", "syscalls"] {
        for v in ["64", "32768"] {
            let out = Tracer::run(
                &[
                    "--capture-bytes",
                    v,
                    "--probe-mode",
                    mode,
                    "--comm",
                    &unique_name("nx-"),
                    "--duration",
                    "1",
                    "--output",
                    "none",
                ],
                RUN_TIMEOUT,
            );
            out.assert_no_panic();
            out.assert_code(0);
        }
    }
}

#[test]
fn missing_pid_is_a_runtime_error() {
    require_root();
    let out = Tracer::run(&["--pid", "999999999", "--duration", "5"], RUN_TIMEOUT);
    out.assert_error(1, &["no such process", "999999999"]);

    // a pid that existed a moment ago
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let out = Tracer::run(&["--pid", &pid.to_string(), "--duration", "5"], RUN_TIMEOUT);
    out.assert_error(1, &["no such process", &pid.to_string()]);
}

#[test]
fn missing_btf_is_a_runtime_error() {
    require_root();
    let target = idle_process();
    let path = "/nonexistent/itest/vmlinux";
    let out = Tracer::run(&["--pid", &target.pid().to_string(), "--btf", path, "--duration", "5"], RUN_TIMEOUT);
    out.assert_error(1, &["btf", path]);
}

#[test]
fn unusable_tracefs_is_a_runtime_error() {
    require_root();
    let target = idle_process();
    // A machine where tracefs is absent and cannot be mounted: in a private mount namespace,
    // /sys/kernel is replaced by an empty read-only tmpfs, so /sys/kernel/tracing does not exist
    // and cannot be created. BTF is passed from a copy, since /sys/kernel/btf is hidden too.
    let unshare = integration_tests::require_tool("unshare", "util-linux");
    let dir = std::env::temp_dir().join(format!("itest-tracefs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let btf = dir.join("vmlinux");
    std::fs::copy("/sys/kernel/btf/vmlinux", &btf).expect("copy kernel BTF");
    let tracer = integration_tests::tracer_bin();
    let pid = target.pid().to_string();
    let args = [
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o ro none /sys/kernel && exec \"$0\" \"$@\"",
        tracer.to_str().unwrap(),
        "--btf",
        btf.to_str().unwrap(),
        "--pid",
        &pid,
        "--duration",
        "5",
    ];
    let out = Tracer::start_program(&unshare, &args).wait_exit(RUN_TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_error(1, &["tracefs"]);
}

#[test]
fn not_root_is_a_runtime_error() {
    require_root(); // to switch to nobody
    let target = idle_process();
    let t = Tracer::start_unprivileged(&["--pid", &target.pid().to_string(), "--duration", "5"]);
    let out = t.wait_exit(RUN_TIMEOUT);
    out.assert_no_panic();
    assert!(!out.stderr.contains("setpriv:"), "setpriv itself failed, not the tracer:\n{}", out.describe());
    out.assert_error(1, &[]);
    let lc = out.stderr.to_lowercase();
    assert!(
        lc.contains("root") || lc.contains("cap_bpf"),
        "the error should mention root or CAP_BPF\n{}",
        out.describe()
    );
}

#[test]
fn waiting_for_an_absent_comm_until_duration() {
    require_root();
    let name = unique_name("nx-");
    let t0 = Instant::now();
    let mut t = Tracer::start(&["--comm", &name, "--duration", "2", "--output", "json"]);
    let line = t.wait_for_stderr("waiting for", Duration::from_secs(60));
    assert!(line.contains(&name), "the waiting line should name the comm {name:?}: {line:?}");
    let out = t.wait_exit(RUN_TIMEOUT);
    let elapsed = t0.elapsed();
    out.assert_no_panic();
    out.assert_code(0);
    assert!(elapsed >= Duration::from_secs(2), "exited after {elapsed:?}, before --duration 2");
    assert!(out.stderr.contains("final stats"), "{}", out.describe());
    assert!(out.json_spans().is_empty(), "no target, yet spans:\n{}", out.describe());
}

/// The collector is down: capture goes on (spans still reach --output json), and the exit code is
/// 3 with a message naming the endpoint.
fn collector_down(protocol: &str) {
    require_root();
    let srv = PythonHttpServer::start();
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut t = Tracer::start(&[
        "--pid",
        &srv.pid().to_string(),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol,
        "--output",
        "json",
        "--duration",
        "6",
    ]);
    t.wait_attached(srv.pid());
    for i in 0..3 {
        assert_eq!(curl_one(&[srv.url(&format!("/api/v1/namespaces/down/pods/p{i}"))]).code, 200);
    }
    let out = t.wait_exit(RUN_TIMEOUT);
    out.assert_error(3, &[&format!("127.0.0.1:{port}")]);
    assert!(out.stderr.contains("final stats"), "{}", out.describe());
    let spans = out.json_spans();
    let n = spans
        .iter()
        .filter(|s| s.attr_str("url.path").is_some_and(|p| p.starts_with("/api/v1/namespaces/down/pods/")))
        .count();
    assert_eq!(n, 3, "capture must go on while the collector is down\n{}\n{}", dump(&spans), out.describe());
}

#[test]
fn collector_down_grpc_exits_3() {
    collector_down("grpc");
}

#[test]
fn collector_down_http_exits_3() {
    collector_down("http");
}

#[test]
fn environment_variables_configure_the_tracer() {
    // TRACER_CAPTURE_BYTES is validated like the flag.
    let none: &[&str] = &[];
    let out =
        Tracer::start_env(none, &[("TRACER_CAPTURE_BYTES", "0"), ("TRACER_DURATION", "2")]).wait_exit(RUN_TIMEOUT);
    out.assert_error(2, &[]);

    // TRACER_COMM + TRACER_DURATION + TRACER_OUTPUT: wait for that comm, exit 0 after a second.
    require_root();
    let name = unique_name("nx-");
    let mut t = Tracer::start_env(none, &[("TRACER_COMM", &name), ("TRACER_DURATION", "1"), ("TRACER_OUTPUT", "json")]);
    let line = t.wait_for_stderr("waiting for", Duration::from_secs(60));
    assert!(line.contains(&name), "TRACER_COMM not used: {line:?}");
    let out = t.wait_exit(RUN_TIMEOUT);
    out.assert_no_panic();
    out.assert_code(0);
}
