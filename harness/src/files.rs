//! Tools on PATH, unique names and temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Finds a program on PATH (or at an absolute path); panics with a clear message when missing.
pub fn require_tool(name: &str, package_hint: &str) -> PathBuf {
    if let Some(p) = find_tool(name) {
        return p;
    }
    panic!("required tool `{name}` not found on PATH; install it (Debian package: {package_hint})");
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // Root's sbin directories are not always on a test runner's PATH.
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// A unique name (process-wide counter + pid + time): `prefix` and 9 hex digits, so at most 15
/// bytes (fits a comm) when the prefix has at most 6.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let mix = (u64::from(std::process::id()) << 20) ^ (u64::from(t) >> 4) ^ (n << 40) ^ n;
    format!("{prefix}{:09x}", mix % (1 << 36))
}

/// A temporary directory (mode 0755) removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let path = base.join(format!("itest-{}", unique_name(prefix)));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir under {}: {e}", base.display()),
            }
        }
        panic!("cannot create a unique temp dir");
    }
    /// `parent/<name>-<pid>-<n>`, created afresh (whatever was there is removed): the pid in the
    /// name tells a later run whether the directory's owner is gone.
    pub fn new_in(parent: &Path, name: &str) -> std::io::Result<TempDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create_dir_all");
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
