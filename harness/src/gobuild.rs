//! The build of the etcd variant of the API-server-like test server (tests/go/apiserver with
//! `-tags etcd`): Debian's Go 1.19 in GOPATH mode over the Go sources of Debian's
//! golang-etcd-server-dev and golang-google-grpc-dev (etcd 3.4's clientv3 over grpc-go 1.33, the
//! client of a kube-apiserver of that age). Shared by `cargo xtask test` and the tests' own
//! fallback build.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's Go 1.19 (package golang-1.19-go, pulled by golang-go).
pub const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";
/// Where Debian's golang-*-dev packages put their Go sources (a GOPATH).
pub const DEBIAN_GOCODE: &str = "/usr/share/gocode";
/// The Debian packages of the build.
pub const GO_ETCD_PACKAGES: &[&str] = &["golang-go", "golang-etcd-server-dev", "golang-google-grpc-dev"];

/// Whether Debian's Go and the etcd client's and grpc-go's sources are installed.
pub fn go_etcd_sources_installed() -> bool {
    let src = Path::new(DEBIAN_GOCODE).join("src");
    Path::new(DEBIAN_GO).is_file()
        && src.join("go.etcd.io/etcd/clientv3").is_dir()
        && src.join("google.golang.org/grpc").is_dir()
}

/// The `go build` of the etcd variant into `bin`, stripped (`-s -w`), with `root` the workspace.
/// tests/go is seen at import path `tracer/tests/go` through a link in a GOPATH under
/// target/, so that the program and its `internal` package keep the module's import paths.
pub fn go_etcd_build_command(root: &Path, bin: &Path) -> std::io::Result<Command> {
    let gopath = root.join("target/go-etcd-path");
    let link_dir = gopath.join("src/tracer/tests");
    std::fs::create_dir_all(&link_dir)?;
    let link = link_dir.join("go");
    if std::fs::read_link(&link).ok().as_deref() != Some(root.join("tests/go").as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(root.join("tests/go"), &link)?;
    }
    let mut cmd = Command::new(DEBIAN_GO);
    cmd.args(["build", "-tags", "etcd", "-ldflags=-s -w", "-o"])
        .arg(bin)
        .arg("tracer/tests/go/apiserver")
        .env("GO111MODULE", "off")
        .env("GOPATH", join_paths(&[gopath, PathBuf::from(DEBIAN_GOCODE)]))
        .env("GOCACHE", root.join("target/go-cache-1.19"))
        .env("CGO_ENABLED", "0")
        .env_remove("GOFLAGS")
        .env_remove("GOROOT");
    Ok(cmd)
}

fn join_paths(paths: &[PathBuf]) -> std::ffi::OsString {
    std::env::join_paths(paths).expect("GOPATH entries without ':'")
}
