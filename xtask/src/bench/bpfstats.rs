//! Kernel eBPF run-time statistics: turned on with `BPF_ENABLE_STATS` (an fd: they go off again
//! when it is closed, even if the bench dies), read per program from the tracer's
//! `/proc/PID/fdinfo` (`prog_id`, `run_time_ns`, `run_cnt`), named via `BPF_OBJ_GET_INFO_BY_FD`.

use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{Result, bail};

const BPF_PROG_GET_NEXT_ID: i64 = 11;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;
const BPF_ENABLE_STATS: i64 = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const ATTR_SIZE: usize = 128;

fn bpf(cmd: i64, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed union bpf_attr prefix of ATTR_SIZE bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE as u32) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn put_u32(attr: &mut [u8; ATTR_SIZE], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Stats are collected while this lives.
pub struct StatsOn(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<StatsOn> {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, BPF_STATS_RUN_TIME);
    match bpf(BPF_ENABLE_STATS, &mut attr) {
        // SAFETY: the kernel returned a new fd we own.
        Ok(fd) => Ok(StatsOn(unsafe { OwnedFd::from_raw_fd(fd as i32) })),
        Err(e) => bail!("BPF_ENABLE_STATS: {e} (kernel ≥ 5.8 and root needed)"),
    }
}

/// `kernel.bpf_stats_enabled`: when someone left it on, every program run pays for two clock reads.
pub fn sysctl_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

#[derive(Debug, Clone, Default)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Name and type of a program by id (`struct bpf_prog_info`: type at 0, name[16] at 64).
fn prog_info(id: u32) -> Option<ProgInfo> {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).ok()?;
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u8; 256];
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, std::os::fd::AsRawFd::as_raw_fd(&fd) as u32);
    put_u32(&mut attr, 4, info.len() as u32);
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Some(ProgInfo {
        id,
        prog_type: u32::from_ne_bytes(info[0..4].try_into().unwrap()),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        ..ProgInfo::default()
    })
}

/// Every eBPF program loaded on the machine (id, type, name).
pub fn all_programs() -> Vec<ProgInfo> {
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; ATTR_SIZE];
        put_u32(&mut attr, 0, id);
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr).is_err() {
            break;
        }
        id = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
        if let Some(p) = prog_info(id) {
            out.push(p);
        }
    }
    out
}

/// The programs a process holds, with their counters, by program id.
pub fn process_programs(pid: u32) -> Result<BTreeMap<u32, ProgInfo>> {
    let mut out = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("reading {dir}: {e}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let field =
            |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(':')?.trim().parse::<u64>().ok());
        let Some(id) = field("prog_id") else { continue };
        let id = id as u32;
        if out.contains_key(&id) {
            continue;
        }
        let mut p = prog_info(id).unwrap_or(ProgInfo { id, name: format!("prog{id}"), ..ProgInfo::default() });
        p.prog_type = field("prog_type").map(|v| v as u32).unwrap_or(p.prog_type);
        p.run_time_ns = field("run_time_ns").unwrap_or(0);
        p.run_cnt = field("run_cnt").unwrap_or(0);
        out.insert(id, p);
    }
    Ok(out)
}

/// Per program: counters of `after` minus `before`.
pub fn delta(before: &BTreeMap<u32, ProgInfo>, after: &BTreeMap<u32, ProgInfo>) -> Vec<ProgInfo> {
    after
        .values()
        .map(|a| {
            let b = before.get(&a.id);
            ProgInfo {
                run_time_ns: a.run_time_ns - b.map_or(0, |b| b.run_time_ns.min(a.run_time_ns)),
                run_cnt: a.run_cnt - b.map_or(0, |b| b.run_cnt.min(a.run_cnt)),
                ..a.clone()
            }
        })
        .collect()
}
