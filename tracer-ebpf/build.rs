use which::which;

/// Rebuild when bpf-linker changes (a new linker can change the object), as aya-template does.
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
