//! One harness for the integration tests (package `integration-tests`) and the bench (`cargo
//! xtask bench`):
//!
//! - [`Proc`]: a child process with stdout/stderr collected in the background ([`Collector`]),
//!   killed on drop;
//! - [`TempDir`], [`find_tool`], ports on 127.0.0.1 ([`free_port`], [`wait_for_port`]);
//! - the tracer under test ([`TracerProc`]): started with an environment policy ([`TracerEnv`]),
//!   its readiness line of a pid, its stop, and its `final stats` line ([`final_stats`]);
//! - the servers' configurations: nginx ([`NginxConf`]), an etcd member's flags
//!   ([`etcd_member_args`]) and TLS certificates ([`Certs`]);
//! - the GOPATH build of the etcd variant of the API-server-like Go server
//!   ([`go_etcd_build_command`]).
//!
//! Everything listens and connects on 127.0.0.1 only.

mod collector;
mod files;
mod gobuild;
mod net;
mod proc;
mod servers;
mod tracer;
mod tracer_proc;

pub use collector::{Collector, drain_pipes, strip_ansi, tail};
pub use files::{TempDir, find_tool, require_tool, unique_name};
pub use gobuild::{DEBIAN_GO, DEBIAN_GOCODE, GO_ETCD_PACKAGES, go_etcd_build_command, go_etcd_sources_installed};
pub use net::{closed_port, free_port, is_listening, wait_for_port};
pub use proc::{Proc, die_with_parent};
pub use servers::{Certs, NginxConf, etcd_member_args, etcd_tls_args};
pub use tracer::{
    ATTACHED, PROBES_READY, ProbesReady, SAMPLING_DECISIONS, TracerEnv, final_stats, final_stats_line, has_pid_field,
};
pub use tracer_proc::{ATTACH_TIMEOUT, STOP_TIMEOUT, TracerProc};
