//! The executables a `--comm NAME` target would run, found before any of them runs: files named
//! NAME in the directories of PATH and the standard system ones, on the host's filesystem. Their
//! probes can then be attached ahead of the first exec, which a short-lived client (done within
//! milliseconds) would otherwise end before.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Component, Path, PathBuf},
};

use super::plan::FileId;

/// Searched after PATH's directories: where packages and installers put executables, whatever
/// the agent's own PATH (a container's) says.
pub const SYSTEM_DIRS: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Files kept per name: more are unlikely to be the binaries of one target, and each costs an
/// analysis at start-up and a place among the files with probes.
pub const MAX_FILES_PER_COMM: usize = 16;

/// The kernel's comm is the executable's file name cut to this many bytes (TASK_COMM_LEN - 1).
const COMM_LEN: usize = 15;

/// One executable found for a comm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path as the host names it (links followed), for the log.
    pub host_path: PathBuf,
    /// Its path as the agent can open it (under `root`).
    pub path: PathBuf,
    pub id: FileId,
}

/// The root of the host's filesystem as the agent sees it: `/` when the agent shares PID 1's mount
/// namespace, else `/proc/1/root` (the agent runs as a host-PID container).
pub fn host_root() -> PathBuf {
    let own = fs::read_link("/proc/self/ns/mnt");
    let host = fs::read_link("/proc/1/ns/mnt");
    match (own, host) {
        (Ok(own), Ok(host)) if own != host => PathBuf::from("/proc/1/root"),
        _ => PathBuf::from("/"),
    }
}

/// The directories to search: `path_var`'s (absolute ones only: a relative entry means the
/// agent's working directory, not the target's), then [`SYSTEM_DIRS`], each once.
pub fn search_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let from_path = path_var.map(|p| std::env::split_paths(p).collect::<Vec<_>>()).unwrap_or_default();
    let mut seen = HashSet::new();
    from_path
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

/// Whether an executable named `file_name` runs with comm `comm`.
pub fn runs_as(file_name: &OsStr, comm: &str) -> bool {
    let name = file_name.as_bytes();
    if comm.len() == COMM_LEN { name.starts_with(comm.as_bytes()) } else { name == comm.as_bytes() }
}

/// The regular files (links followed, within `root`) in `dirs` that run with comm `comm`, each
/// file once (by identity), in the order of `dirs`; and how many more than `max` there were.
pub fn executables_for(root: &Path, dirs: &[PathBuf], comm: &str, max: usize) -> (Vec<Found>, usize) {
    let mut found: Vec<Found> = Vec::new();
    let mut over = 0;
    for dir in dirs {
        let Ok(entries) = fs::read_dir(under(root, dir)) else { continue };
        let mut names: Vec<_> =
            entries.filter_map(|e| Some(e.ok()?.file_name())).filter(|n| runs_as(n, comm)).collect();
        names.sort();
        for name in names {
            let Some(host_path) = resolve(root, &dir.join(name)) else { continue };
            let path = under(root, &host_path);
            let Ok(meta) = fs::metadata(&path) else { continue };
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                continue;
            }
            let Ok(id) = FileId::of(&path) else { continue };
            if found.iter().any(|f| f.id == id) {
                continue;
            }
            if found.len() == max {
                over += 1;
                continue;
            }
            found.push(Found { host_path, path, id });
        }
    }
    (found, over)
}

/// `host_path` (absolute) as the agent opens it, under `root`.
fn under(root: &Path, host_path: &Path) -> PathBuf {
    root.join(host_path.strip_prefix("/").unwrap_or(host_path))
}

/// The host path `host_path` names once every symbolic link in it is followed, an absolute link
/// target taken from the host's root (not the agent's, as the kernel would under /proc/1/root);
/// `None` for a dangling link or a loop.
fn resolve(root: &Path, host_path: &Path) -> Option<PathBuf> {
    const MAX_LINKS: usize = 40;
    let mut links = 0;
    let mut done = PathBuf::from("/");
    let mut todo: Vec<PathBuf> = components_reversed(host_path);
    while let Some(part) = todo.pop() {
        if part == Path::new("..") {
            done.pop();
            continue;
        }
        let next = done.join(&part);
        let meta = fs::symlink_metadata(under(root, &next)).ok()?;
        if !meta.file_type().is_symlink() {
            done = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return None;
        }
        let target = fs::read_link(under(root, &next)).ok()?;
        if target.is_absolute() {
            done = PathBuf::from("/");
        }
        todo.extend(components_reversed(&target));
    }
    Some(done)
}

/// The normal and `..` components of `p`, last first (to be popped in order).
fn components_reversed(p: &Path) -> Vec<PathBuf> {
    p.components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("tracer-ahead-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn exe(path: &Path, body: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn comm_is_the_file_name_cut_to_15_bytes() {
        assert!(runs_as(OsStr::new("kubectl"), "kubectl"));
        assert!(!runs_as(OsStr::new("kubectl-1.32"), "kubectl"));
        assert!(!runs_as(OsStr::new("kube"), "kubectl"));
        // 15 bytes: any longer name with that start runs under it.
        assert!(runs_as(OsStr::new("kube-controller-manager"), "kube-controller"));
        assert!(runs_as(OsStr::new("kube-controller"), "kube-controller"));
        assert!(!runs_as(OsStr::new("kube-controlle"), "kube-controller"));
    }

    #[test]
    fn path_dirs_first_then_system_ones_each_once_relative_ones_skipped() {
        let dirs = search_dirs(Some(OsStr::new("/opt/bin:bin:/usr/bin::/opt/bin")));
        let mut want = vec![PathBuf::from("/opt/bin"), PathBuf::from("/usr/bin")];
        want.extend(SYSTEM_DIRS.iter().map(PathBuf::from).filter(|d| d != Path::new("/usr/bin")));
        assert_eq!(dirs, want);
        assert_eq!(search_dirs(None), SYSTEM_DIRS.map(PathBuf::from).to_vec());
    }

    /// A root laid out like a host's: links, relative and absolute (taken from that root), to the
    /// same file count once; non-executables, directories and dangling links are not kept.
    #[test]
    fn files_found_under_a_root_links_followed_duplicates_removed() {
        let t = tmp("root");
        let root = &t.0;
        exe(&root.join("opt/k8s/kubectl"), "real");
        exe(&root.join("usr/local/bin/kubectl"), "another");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("/opt/k8s/kubectl", root.join("usr/bin/kubectl")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        symlink("../opt/k8s/kubectl", root.join("bin/kubectl")).unwrap();
        fs::create_dir_all(root.join("sbin")).unwrap();
        symlink("/nowhere/kubectl", root.join("sbin/kubectl")).unwrap();
        fs::create_dir_all(root.join("usr/sbin/kubectl")).unwrap();
        fs::create_dir_all(root.join("usr/local/sbin")).unwrap();
        fs::write(root.join("usr/local/sbin/kubectl"), "not executable").unwrap();
        exe(&root.join("usr/local/bin/kubectl-plugin"), "other name");

        let dirs = search_dirs(None);
        let (found, over) = executables_for(root, &dirs, "kubectl", 16);
        let paths: Vec<&Path> = found.iter().map(|f| f.host_path.as_path()).collect();
        assert_eq!(paths, [Path::new("/usr/local/bin/kubectl"), Path::new("/opt/k8s/kubectl")]);
        assert_eq!(found[1].path, root.join("opt/k8s/kubectl"));
        assert_eq!(over, 0);
    }

    #[test]
    fn a_15_byte_comm_finds_longer_names_and_the_bound_counts_the_rest() {
        let t = tmp("long");
        let root = &t.0;
        for name in ["kube-controller-manager", "kube-controller", "kube-controller-x", "kube-control"] {
            exe(&root.join("usr/bin").join(name), name);
        }
        let dirs = [PathBuf::from("/usr/bin")];
        let (found, over) = executables_for(root, &dirs, "kube-controller", 16);
        let names: Vec<_> = found.iter().map(|f| f.host_path.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["kube-controller", "kube-controller-manager", "kube-controller-x"]);
        assert_eq!(over, 0);
        let (found, over) = executables_for(root, &dirs, "kube-controller", 2);
        assert_eq!((found.len(), over), (2, 1));
    }

    #[test]
    fn a_link_loop_is_skipped() {
        let t = tmp("loop");
        let root = &t.0;
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("/usr/bin/b", root.join("usr/bin/a")).unwrap();
        symlink("/usr/bin/a", root.join("usr/bin/b")).unwrap();
        let (found, _) = executables_for(root, &[PathBuf::from("/usr/bin")], "a", 16);
        assert!(found.is_empty());
    }
}
