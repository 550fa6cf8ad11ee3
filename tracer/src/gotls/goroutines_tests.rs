//! Site discovery on real binaries: Debian's etcd and etcdctl (Go 1.19, stripped, grpc-go 1.33,
//! x/net 0.7 and net/http's bundled http2), the machine's kubectl (client-go), and a stripped
//! Go 1.27 build of tests/go/https-server (net/http/internal/http2). The expected sites are each
//! function's entry by its exact name (pclntab lookup), and its RETs by disassembly.

use std::path::Path;

use super::*;
use crate::gobin::{GoBinary, tests::env_bin};

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("{} is required for this test: {e}", path.display()))
}

/// The points of program `prog` (offset, site argument), sorted.
fn points_of(s: &GoroutineSites, prog: usize) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = s.points.iter().filter(|p| p.0 == prog).map(|&(_, o, a)| (o, a)).collect();
    v.sort();
    v
}

/// The entry of the function named exactly `name`, as a point with no site argument.
fn entry(bin: &GoBinary, name: &str) -> Vec<(u64, u32)> {
    let f = bin.function(name).unwrap_or_else(|| panic!("{name} is in this binary"));
    vec![(f.file_offset, 0)]
}

/// Checks the spawn probes: newproc1's entry, and exactly its RETs.
fn check_spawn(bin: &GoBinary, s: &GoroutineSites) {
    let newproc1 = bin.function(NEWPROC1).expect("runtime.newproc1");
    assert_eq!(points_of(s, GO_SPAWN_ENTER), [(newproc1.file_offset, 0)]);
    let rets: Vec<(u64, u32)> = bin.ret_offsets(&newproc1).unwrap().into_iter().map(|o| (o, 0)).collect();
    assert!(!rets.is_empty());
    assert_eq!(points_of(s, GO_SPAWN_RET), rets);
    assert_eq!(s.spawn_rets, rets.len());
    // RETs before the entry: an entry seen before its RET's probe exists would be left behind.
    let first_entry = s.points.iter().position(|p| p.0 == GO_SPAWN_ENTER).unwrap();
    assert!(s.points[..first_entry].iter().all(|p| p.0 == GO_SPAWN_RET));
}

fn check_http1_client(bin: &GoBinary, s: &GoroutineSites) {
    assert!(s.http1_client);
    assert_eq!(points_of(s, GO_HTTP1_ROUND_TRIP), entry(bin, HTTP1_ROUND_TRIP));
    assert_eq!(points_of(s, GO_HTTP1_WRITE), entry(bin, HTTP1_WRITE));
}

fn check_grpc(bin: &GoBinary, s: &GoroutineSites) {
    assert!(s.grpc);
    assert_eq!(points_of(s, GO_GRPC_PUT), entry(bin, GRPC_PUT));
    assert_eq!(points_of(s, GO_GRPC_HEADER), entry(bin, GRPC_HEADER));
}

/// The HTTP/2 server handlers expected, by exact name, each with its connection offset.
fn h2_handlers(bin: &GoBinary, names: &[(&str, u32)]) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> =
        names.iter().map(|(n, arg)| (bin.function(n).unwrap_or_else(|| panic!("{n}")).file_offset, *arg)).collect();
    v.sort();
    v
}

#[test]
fn etcd_has_every_site_and_both_http2_servers() {
    let bin = open(Path::new("/usr/bin/etcd"));
    let s = sites(&bin).unwrap();
    check_spawn(&bin, &s);
    check_grpc(&bin, &s);
    check_http1_client(&bin, &s);
    let expected = h2_handlers(
        &bin,
        &[("net/http.(*http2serverConn).runHandler", 24), ("golang.org/x/net/http2.(*serverConn).runHandler", 24)],
    );
    assert_eq!(points_of(&s, GO_H2_HANDLER), expected);
    assert_eq!(s.h2_servers, 2);
}

#[test]
fn etcdctl_is_a_grpc_client_without_http2_server() {
    let bin = open(Path::new("/usr/bin/etcdctl"));
    let s = sites(&bin).unwrap();
    check_spawn(&bin, &s);
    check_grpc(&bin, &s);
    check_http1_client(&bin, &s);
    assert_eq!(s.h2_servers, 0);
}

#[test]
fn kubectl_has_spawns_the_http1_client_and_no_grpc() {
    let path = which("kubectl");
    let bin = open(&path);
    let s = sites(&bin).unwrap();
    check_spawn(&bin, &s);
    check_http1_client(&bin, &s);
    assert!(!s.grpc);
    assert!(points_of(&s, GO_GRPC_PUT).is_empty() && points_of(&s, GO_GRPC_HEADER).is_empty());
    // client-go's kubectl links net/http's server too (its bundled HTTP/2 copy).
    let expected = h2_handlers(&bin, &[("net/http.(*http2serverConn).runHandler", 24)]);
    assert_eq!(points_of(&s, GO_H2_HANDLER), expected);
}

#[test]
fn go_1_27_server_uses_the_internal_http2_layout() {
    let bin = open(&env_bin("GO_HTTPS_SERVER_BIN"));
    assert!(bin.go_version().is_some_and(|v| v.starts_with("go1.27")), "{:?}", bin.go_version());
    let s = sites(&bin).unwrap();
    check_spawn(&bin, &s);
    let expected = h2_handlers(&bin, &[("net/http/internal/http2.(*serverConn).runHandler", 32)]);
    assert_eq!(points_of(&s, GO_H2_HANDLER), expected);
    assert!(!s.grpc);
}

#[test]
fn cookies_carry_the_file_slot_and_the_site_argument() {
    let s =
        GoroutineSites { points: vec![(GO_H2_HANDLER, 0x1000, 32), (GO_SPAWN_ENTER, 0x2000, 0)], ..Default::default() };
    let cookies: Vec<_> = s.cookies(7).collect();
    assert_eq!(cookies, [(GO_H2_HANDLER, 0x1000, 32 << 32 | 7), (GO_SPAWN_ENTER, 0x2000, 7)]);
    assert_eq!(tracer_common::go_cookie_slot(cookies[0].2), 7);
    assert_eq!(tracer_common::go_cookie_arg(cookies[0].2), 32);
}

/// `name` on PATH.
fn which(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is required on PATH for this test"))
}
