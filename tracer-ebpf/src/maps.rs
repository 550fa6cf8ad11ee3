//! Maps shared by all probes, and the small helpers every probe starts with.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{Comm, SockOffsets, SocketState, TARGET_BITMAP_WORDS, counter};

/// Events to userspace. Userspace sets the real size at load time (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Bitmap of target TGIDs: bit (tgid % 64) of word (tgid / 64). An array lookup is inlined by the
/// verifier, so untraced processes pay a helper call and one load per syscall.
#[map]
pub static TARGETS: Array<u64> = Array::with_max_entries(TARGET_BITMAP_WORDS, 0);

/// The targets with Go crypto/tls probes, same layout: only their socket I/O is matched with TLS
/// calls in progress (two hash lookups the others are spared).
#[map]
pub static GO_TLS_TARGETS: Array<u64> = Array::with_max_entries(TARGET_BITMAP_WORDS, 0);

/// comm names to pick up at exec (userspace fills it from `--comm`).
#[map]
pub static TARGET_COMMS: HashMap<Comm, u8> = HashMap::with_max_entries(64, 0);

/// Sockets of targets, keyed by `socket_key(tgid, fd)`. Non-socket fds are dropped in kernel.
#[map]
pub static SOCKETS: HashMap<u64, SocketState> = HashMap::with_max_entries(65536, 0);

/// `struct sock` → its `SOCKETS` key, so a TCP state change (close, reset) finds the fd. Socket
/// hooks only. LRU: an entry whose socket was dropped from `SOCKETS` ages out.
#[map]
pub static SK_KEYS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Ciphertext bytes moved on a socket under a Go tls.Conn, by its `SOCKETS` key: counted here
/// instead of a record per syscall (its plaintext comes from the uprobes), and sent with the
/// socket's close record. Kept apart from `SocketState`: growing it by these bytes made the
/// verifier's pruning fail at `--capture-bytes 32768`. LRU: an entry whose close was missed ages
/// out.
#[map]
pub static TLS_BYTES: LruHashMap<u64, TlsBytes> = LruHashMap::with_max_entries(65536, 0);

#[derive(Clone, Copy)]
pub struct TlsBytes {
    /// The socket counted (`SocketState::sk`): a count left by the fd's previous socket is not
    /// this one's, and a late close of that one does not take this one's.
    pub sk: u64,
    /// `[received, sent]`.
    pub bytes: [u64; 2],
}

/// Adds `n` bytes of direction `dir` to the ciphertext count of the socket `sk` at `key`.
#[inline(always)]
pub fn count_tls_bytes(key: u64, sk: u64, dir: usize, n: u64) {
    match TLS_BYTES.get_ptr_mut(key) {
        Some(counts) if unsafe { (*counts).sk } == sk => unsafe { (*counts).bytes[dir & 1] += n },
        _ => {
            let mut counts = TlsBytes { sk, bytes: [0; 2] };
            counts.bytes[dir & 1] = n;
            let _ = TLS_BYTES.insert(key, counts, 0);
        }
    }
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// `--capture-bytes`, patched by userspace before load.
#[unsafe(no_mangle)]
pub static CAPTURE_BYTES: u32 = 4096;

#[inline(always)]
pub fn capture_bytes() -> u32 {
    unsafe { core::ptr::read_volatile(&CAPTURE_BYTES) }
}

/// `tracer_common::probe_mode`, patched by userspace before load.
#[unsafe(no_mangle)]
pub static PROBE_MODE: u32 = 0;

#[inline(always)]
pub fn probe_mode() -> u32 {
    unsafe { core::ptr::read_volatile(&PROBE_MODE) }
}

/// `--empty-probes`, patched by userspace: every program returns at its first instruction, so the
/// bench can measure what the hooks alone cost. A read-only global is a constant to the verifier,
/// which drops the test from the programs when it is 0.
#[unsafe(no_mangle)]
pub static EMPTY_PROBES: u32 = 0;

#[inline(always)]
pub fn empty_probes() -> bool {
    unsafe { core::ptr::read_volatile(&EMPTY_PROBES) != 0 }
}

/// `struct sock` field offsets from the kernel's BTF, patched by userspace (socket hooks).
#[unsafe(no_mangle)]
pub static SOCK_OFFSETS: SockOffsets = SockOffsets {
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: 0,
};

#[inline(always)]
pub fn sock_offsets() -> SockOffsets {
    unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) }
}

/// The current task's pid_tgid if its process is a target.
#[inline(always)]
pub fn current_target() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_target((pid_tgid >> 32) as u32) { Some(pid_tgid) } else { None }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    has_bit(&TARGETS, tgid)
}

#[inline(always)]
pub fn is_go_tls_target(tgid: u32) -> bool {
    has_bit(&GO_TLS_TARGETS, tgid)
}

#[inline(always)]
fn has_bit(bitmap: &Array<u64>, tgid: u32) -> bool {
    match bitmap.get(tgid >> 6) {
        Some(word) => (*word >> (tgid & 63)) & 1 == 1,
        None => false,
    }
}

/// Sets `tgid`'s bit in a TGID bitmap (`TARGETS`, `GO_TLS_TARGETS`) from a probe.
#[inline(always)]
pub fn set_bit(bitmap: &Array<u64>, tgid: u32) {
    change_bit(bitmap, tgid, true);
}

/// Clears `tgid`'s bit in a TGID bitmap from a probe.
#[inline(always)]
pub fn clear_bit(bitmap: &Array<u64>, tgid: u32) {
    change_bit(bitmap, tgid, false);
}

/// A word holds the bits of 64 processes, which other CPUs may change at the same moment (one
/// process execs while its neighbour exits): the change is one atomic add of the bit, made only
/// when the bit differs, so that it carries into no other bit. An add because it is the one
/// atomic the probes' instruction set (bpf-linker's generic CPU, v1) has: no atomic OR or AND.
/// A process's own bit is changed by its own exec and exit only, which do not overlap.
#[inline(always)]
fn change_bit(bitmap: &Array<u64>, tgid: u32, on: bool) {
    let Some(word) = bitmap.get_ptr_mut(tgid >> 6) else { return };
    let bit = 1u64 << (tgid & 63);
    if (unsafe { core::ptr::read_volatile(word) } & bit != 0) == on {
        return;
    }
    let delta = if on { bit } else { bit.wrapping_neg() };
    // The result is unused: LLVM emits BPF's `lock xadd`, which returns nothing.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(word, delta) };
}

/// Unread bytes in the ring past which a submit wakes the agent: a quarter of the ring, patched by
/// userspace. Below it the agent is not woken per record (each wake-up is an inter-processor
/// interrupt, a VM exit on virtual machines); it drains the ring on its own every few milliseconds
/// instead. Above it every submit raises a wake-up until the agent catches up, so it must sit well
/// above what arrives between two drains.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 256 * 1024;

/// Flags for `submit`: wake the agent only when enough is waiting.
#[inline(always)]
pub fn submit_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) } {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        unsafe { *slot += 1 };
    }
}
