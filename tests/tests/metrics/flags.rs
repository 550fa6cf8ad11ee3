//! `--metrics-addr` errors: one `error:` line each, never a panic.

use std::time::Duration;

use integration_tests::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An address that is not HOST:PORT is a bad flag (exit 2); one that cannot be listened on (taken)
/// is a runtime error naming it (exit 1).
#[test]
fn bad_metrics_addresses_are_one_error_line() {
    for bad in ["9464", ":9464", "localhost:http"] {
        let out = Tracer::run(&["--metrics-addr", bad, "--duration", "2"], RUN_TIMEOUT);
        out.assert_error(2, &["metrics-addr"]);
    }
    require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let comm = unique_name("nx-");
    let out =
        Tracer::run(&["--metrics-addr", &addr, "--comm", &comm, "--output", "none", "--duration", "5"], RUN_TIMEOUT);
    out.assert_error(1, &[&addr, "metrics-addr"]);
}
