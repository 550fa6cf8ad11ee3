//! Builds the eBPF object (tracer-ebpf) with a pinned toolchain and embeds it in the agent.
//!
//! The toolchain is pinned to Rust 1.95.0 (LLVM 22) with RUSTC_BOOTSTRAP=1 for `-Z build-std`,
//! rather than "nightly": a newer nightly carries a newer LLVM than bpf-linker links against, and
//! the build would break on whatever day a user's nightly moves.

/// Keep in sync with xtask (which installs it) and README.
const EBPF_TOOLCHAIN: &str = "1.95.0";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("TRACER_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.into());
    // SAFETY: build scripts are single-threaded; the nested eBPF cargo build inherits it.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf"),
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=../tracer-common/src");
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))
}
