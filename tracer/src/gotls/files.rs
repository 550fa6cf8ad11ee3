//! The executable files with Go TLS probes, and the target processes running each: a file's probes
//! stay while a target runs it, and for an idle period after the last one went (the next run of a
//! short-lived client, or a restarted server, finds them in place); then they are released.
//!
//! Kept apart from the kernel objects (`L` is a file's set of links) so that the bookkeeping is
//! tested on its own.

use std::collections::{BTreeSet, HashMap};

use super::plan::FileId;

pub struct AttachedFile<L> {
    /// Its key in the kernel's `GO_TLS_FILES`, and the cookie of its probes.
    pub slot: u64,
    pub links: L,
    /// Target processes running it.
    pids: BTreeSet<u32>,
    /// Kernel time (ns) when the last of them went; `None` while one runs, and always for a
    /// pinned file.
    idle_since: Option<u64>,
    /// Attached ahead of any exec (`--comm`): kept while the agent runs, however long idle.
    pinned: bool,
}

pub struct AttachedFiles<L> {
    files: HashMap<FileId, AttachedFile<L>>,
    running: HashMap<u32, FileId>,
    max_files: usize,
    idle_release_ns: u64,
    next_slot: u64,
}

/// Why a file could not get probes.
#[derive(Debug, PartialEq, Eq)]
pub struct NoRoom {
    pub max_files: usize,
}

impl<L> AttachedFiles<L> {
    pub fn new(max_files: usize, idle_release_ns: u64) -> Self {
        AttachedFiles { files: HashMap::new(), running: HashMap::new(), max_files, idle_release_ns, next_slot: 1 }
    }

    /// `pid` runs `id`: counted, if `id` has probes already (then it needs nothing else).
    pub fn join(&mut self, pid: u32, id: FileId) -> Option<&AttachedFile<L>> {
        let file = self.files.get_mut(&id)?;
        file.pids.insert(pid);
        file.idle_since = None;
        self.running.insert(pid, id);
        Some(file)
    }

    /// Makes room for one more file: when `max_files` have probes, the one idle the longest goes
    /// (returned, for its links to be released). Files that a target runs are never released.
    pub fn make_room(&mut self) -> Result<Option<(FileId, AttachedFile<L>)>, NoRoom> {
        if self.files.len() < self.max_files {
            return Ok(None);
        }
        let idlest = self.files.iter().filter_map(|(id, f)| Some((*id, f.idle_since?))).min_by_key(|&(_, since)| since);
        match idlest {
            Some((id, _)) => Ok(self.files.remove(&id).map(|f| (id, f))),
            None => Err(NoRoom { max_files: self.max_files }),
        }
    }

    /// A slot for a new file: never one in use (slots are not reused).
    pub fn next_slot(&mut self) -> u64 {
        let slot = self.next_slot;
        self.next_slot += 1;
        slot
    }

    /// `id` got its probes, for `pid` (after [`Self::make_room`]).
    pub fn insert(&mut self, id: FileId, slot: u64, links: L, pid: u32) {
        let file = AttachedFile { slot, links, pids: BTreeSet::from([pid]), idle_since: None, pinned: false };
        self.files.insert(id, file);
        self.running.insert(pid, id);
    }

    /// `id` got its probes ahead of any process running it (after [`Self::make_room`]): they stay
    /// while the agent runs, never idle, so never released nor making room for another file.
    pub fn insert_pinned(&mut self, id: FileId, slot: u64, links: L) {
        let file = AttachedFile { slot, links, pids: BTreeSet::new(), idle_since: None, pinned: true };
        self.files.insert(id, file);
    }

    pub fn contains(&self, id: &FileId) -> bool {
        self.files.contains_key(id)
    }

    /// `pid` exited or exec'd: its file is idle from `now_ns` if no other target runs it.
    pub fn leave(&mut self, pid: u32, now_ns: u64) {
        let Some(id) = self.running.remove(&pid) else { return };
        if let Some(file) = self.files.get_mut(&id) {
            file.pids.remove(&pid);
            if file.pids.is_empty() && !file.pinned {
                file.idle_since = Some(now_ns);
            }
        }
    }

    /// The files idle for the idle period at `now_ns`, taken out to be released.
    pub fn expired(&mut self, now_ns: u64) -> Vec<(FileId, AttachedFile<L>)> {
        let period = self.idle_release_ns;
        let due: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, f)| f.idle_since.is_some_and(|since| now_ns.saturating_sub(since) >= period))
            .map(|(id, _)| *id)
            .collect();
        due.into_iter().filter_map(|id| self.files.remove(&id).map(|f| (id, f))).collect()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Takes out, to be released, the files for which `changed` holds.
    pub fn take_if(&mut self, changed: impl Fn(&FileId, &AttachedFile<L>) -> bool) -> Vec<(FileId, AttachedFile<L>)> {
        let due: Vec<FileId> = self.files.iter().filter(|(id, f)| changed(id, f)).map(|(id, _)| *id).collect();
        for id in &due {
            self.running.retain(|_, running| running != id);
        }
        due.into_iter().filter_map(|id| self.files.remove(&id).map(|f| (id, f))).collect()
    }

    /// Targets for which `gone(pid, file)` holds leave their file, as at an exit.
    pub fn forget_pids(&mut self, gone: impl Fn(u32, &FileId) -> bool, now_ns: u64) {
        let pids: Vec<u32> = self.running.iter().filter(|(pid, id)| gone(**pid, id)).map(|(pid, _)| *pid).collect();
        for pid in pids {
            self.leave(pid, now_ns);
        }
    }
}

impl<L> AttachedFile<L> {
    pub fn pinned(&self) -> bool {
        self.pinned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn id(ino: u64) -> FileId {
        FileId { dev: 2049, ino, size: 1000, mtime_ns: 0 }
    }

    /// Files as tests see them: the links are the file's name.
    fn files(max: usize) -> AttachedFiles<&'static str> {
        AttachedFiles::new(max, 60 * SECOND)
    }

    /// File `ino` gets its probes (`links`) for `pid`; returns its slot.
    fn attach(f: &mut AttachedFiles<&'static str>, ino: u64, links: &'static str, pid: u32) -> u64 {
        assert!(matches!(f.make_room(), Ok(None)), "room for file {ino}");
        let slot = f.next_slot();
        f.insert(id(ino), slot, links, pid);
        slot
    }

    #[test]
    fn a_second_process_of_a_file_joins_its_probes() {
        let mut f = files(4);
        assert!(f.join(10, id(1)).is_none(), "no probes yet");
        let slot = attach(&mut f, 1, "kubectl", 10);
        let joined = f.join(11, id(1)).expect("attached already");
        assert_eq!((joined.slot, joined.links), (slot, "kubectl"));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn probes_stay_while_one_process_runs_the_file_and_go_after_the_idle_period() {
        let mut f = files(4);
        attach(&mut f, 1, "server", 10);
        f.join(11, id(1));
        f.leave(10, 5 * SECOND);
        assert!(f.expired(500 * SECOND).is_empty(), "pid 11 still runs it");
        f.leave(11, 600 * SECOND);
        // Idle from 600 s: not before 660 s.
        assert!(f.expired(659 * SECOND).is_empty());
        // A restart within the period finds the probes, and is idle no more.
        assert!(f.join(12, id(1)).is_some());
        assert!(f.expired(10_000 * SECOND).is_empty());
        f.leave(12, 700 * SECOND);
        let released = f.expired(760 * SECOND);
        assert_eq!(released.len(), 1);
        assert_eq!((released[0].0, released[0].1.links), (id(1), "server"));
        assert_eq!(f.len(), 0);
        assert!(f.join(13, id(1)).is_none(), "released: a new run attaches again");
    }

    #[test]
    fn leaving_twice_or_unknown_pids_changes_nothing() {
        let mut f = files(4);
        attach(&mut f, 1, "a", 10);
        f.join(11, id(1));
        f.leave(10, SECOND);
        f.leave(10, SECOND);
        f.leave(99, SECOND);
        assert!(f.expired(1000 * SECOND).is_empty(), "pid 11 still runs it");
    }

    #[test]
    fn at_the_bound_the_longest_idle_file_makes_room_and_running_files_never_do() {
        let mut f = files(2);
        attach(&mut f, 1, "a", 10);
        attach(&mut f, 2, "b", 20);
        assert_eq!(f.make_room().err(), Some(NoRoom { max_files: 2 }), "both run");
        f.leave(20, 3 * SECOND);
        f.leave(10, 4 * SECOND);
        let (gone, file) = f.make_room().unwrap().expect("one released");
        assert_eq!((gone, file.links), (id(2), "b"), "idle since 3 s, the longest");
        assert!(matches!(f.make_room(), Ok(None)));
        let slot = f.next_slot();
        assert_eq!(slot, 3, "slots are never reused");
        f.insert(id(3), slot, "c", 30);
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn a_pinned_file_is_never_idle_nor_makes_room() {
        let mut f = files(2);
        assert!(matches!(f.make_room(), Ok(None)));
        let slot = f.next_slot();
        f.insert_pinned(id(1), slot, "kubectl");
        assert!(f.contains(&id(1)));
        assert!(f.expired(10_000 * SECOND).is_empty(), "pinned with no process");
        let joined = f.join(10, id(1)).expect("its probes are there before any run");
        assert_eq!(joined.slot, slot);
        f.leave(10, SECOND);
        assert!(f.expired(10_000 * SECOND).is_empty(), "pinned after its last run went");
        attach(&mut f, 2, "server", 20);
        assert_eq!(f.make_room().err(), Some(NoRoom { max_files: 2 }), "the pinned file stays");
        f.leave(20, 2 * SECOND);
        let (gone, _) = f.make_room().unwrap().expect("the idle file goes");
        assert_eq!(gone, id(2));
        assert!(f.contains(&id(1)));
    }

    #[test]
    fn a_pid_that_execs_another_file_moves_to_it() {
        let mut f = files(4);
        attach(&mut f, 1, "shell", 10);
        attach(&mut f, 2, "client", 20);
        f.leave(10, SECOND);
        f.join(10, id(2));
        assert_eq!(f.expired(100 * SECOND).len(), 1, "the shell's file is idle");
        f.leave(20, 100 * SECOND);
        assert!(f.expired(150 * SECOND).is_empty(), "pid 10 runs the client's file");
    }

    #[test]
    fn a_changed_file_is_taken_out_at_once_with_its_processes() {
        let mut f = files(4);
        attach(&mut f, 1, "server", 10);
        attach(&mut f, 2, "client", 20);
        let taken = f.take_if(|id, _| id.ino == 1);
        assert_eq!(taken.iter().map(|(id, _)| id.ino).collect::<Vec<_>>(), [1]);
        assert!(!f.contains(&id(1)) && f.contains(&id(2)));
        // Its process no longer counts anywhere; the other file is untouched.
        f.leave(10, SECOND);
        assert!(f.expired(100 * SECOND).is_empty(), "pid 20 still runs file 2");
    }

    #[test]
    fn processes_gone_without_an_exit_record_leave_their_file() {
        let mut f = files(4);
        attach(&mut f, 1, "server", 10);
        f.join(11, id(1));
        f.forget_pids(|pid, _| pid == 10, SECOND);
        assert!(f.expired(100 * SECOND).is_empty(), "pid 11 still runs it");
        f.forget_pids(|_, _| true, 2 * SECOND);
        assert_eq!(f.expired(62 * SECOND).len(), 1, "idle from the sweep that found the last one gone");
    }
}
