//! Copies the payload of a data syscall into ring-buffer chunk records.
//!
//! A syscall's captured bytes (at most `--capture-bytes`) go out as one or more `DataEvent`
//! chunks, each of the smallest size class that holds it (no payload, 128 B, 512 B, 2 KiB, a
//! page), so that a 40-byte etcd request does not occupy a page of the ring: the ring's footprint
//! is a cost of every record.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated};
use core::ffi::c_void;
use tracer_common::{
    CHUNK_LARGE, CHUNK_MEDIUM, CHUNK_SMALL, CHUNK_TINY, DataEvent, MAX_CHUNKS, MAX_IOVECS, counter, data_flags, kind,
};

use crate::{
    diag::diag,
    maps::{EVENTS, capture_bytes, count, submit_flags},
    sockets::header,
};

/// What the chunks of one syscall share. They are emitted by the task that made the call.
pub struct DataCtx {
    pub fd: i32,
    pub direction: u8,
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes the syscall moved.
    pub total: u64,
    pub seq: u32,
    pub source: u8,
    /// The goroutine (its `g`) that made the call, for Go uprobes; 0 for syscall hooks.
    pub goid: u64,
}

/// `iovcnt` passed to [`emit_data`] when the bytes never were in user memory (sendfile).
pub const NO_CAPTURE: u64 = u64::MAX;

/// Emits the syscall's bytes: from one buffer at `ptr` when `iovcnt` is 0, from an iovec array at
/// `ptr` otherwise, or none at all for [`NO_CAPTURE`].
///
/// The loops are shaped for the verifier: a buffer that fits one chunk is one record of the
/// class that fits it; a larger one is cut into up to MAX_CHUNKS page-sized chunks. An iovec
/// array gives at most one chunk per iovec, of the class that fits it (iovecs of socket I/O are
/// headers + body pieces; the first 4 KiB of each are what decoders need).
#[inline(always)]
pub fn emit_data(d: &DataCtx, ptr: u64, iovcnt: u64) {
    let limit = capture_bytes() as u64;
    let capturable = if d.total < limit { d.total } else { limit };
    if iovcnt == NO_CAPTURE || capturable == 0 {
        chunk::<0>(d, 0, 0, 0, data_flags::FIRST | data_flags::LAST);
    } else if iovcnt == 0 {
        if capturable <= CHUNK_MEDIUM as u64 {
            sized_chunk(d, ptr, capturable, 0, data_flags::FIRST | data_flags::LAST);
        } else {
            pages(d, ptr, capturable);
        }
    } else {
        iovecs(d, ptr, iovcnt, capturable);
    }
}

/// One chunk of `n` bytes (at most a page) in the smallest class that holds them.
#[inline(always)]
fn sized_chunk(d: &DataCtx, src: u64, n: u64, offset: u64, flags: u8) -> bool {
    if n <= CHUNK_TINY as u64 {
        chunk::<CHUNK_TINY>(d, src, n, offset, flags)
    } else if n <= CHUNK_SMALL as u64 {
        chunk::<CHUNK_SMALL>(d, src, n, offset, flags)
    } else if n <= CHUNK_MEDIUM as u64 {
        chunk::<CHUNK_MEDIUM>(d, src, n, offset, flags)
    } else {
        chunk::<CHUNK_LARGE>(d, src, n, offset, flags)
    }
}

/// A buffer larger than one chunk, cut into page-sized chunks.
#[inline(always)]
fn pages(d: &DataCtx, ptr: u64, capturable: u64) {
    let mut done = 0u64;
    for _ in 0..MAX_CHUNKS {
        let mut n = capturable - done;
        if n > CHUNK_LARGE as u64 {
            n = CHUNK_LARGE as u64;
        }
        let mut flags = if done == 0 { data_flags::FIRST } else { 0 };
        if done + n >= capturable {
            flags |= data_flags::LAST;
        }
        if !chunk::<CHUNK_LARGE>(d, ptr + done, n, done, flags) {
            return;
        }
        done += n;
        if done >= capturable {
            return;
        }
    }
}

#[inline(always)]
fn iovecs(d: &DataCtx, ptr: u64, iovcnt: u64, capturable: u64) {
    if iovcnt > MAX_IOVECS as u64 {
        count(counter::IOV_TRUNCATED);
    }
    let mut done = 0u64;
    for i in 0..MAX_IOVECS {
        if i as u64 >= iovcnt {
            break;
        }
        let Ok([base, len]) = (unsafe { bpf_probe_read_user((ptr + i as u64 * 16) as *const [u64; 2]) }) else {
            break;
        };
        let mut n = len;
        if n > capturable - done {
            n = capturable - done;
        }
        if n > CHUNK_LARGE as u64 {
            n = CHUNK_LARGE as u64;
        }
        let mut flags = if done == 0 { data_flags::FIRST } else { 0 };
        // The last iovec looked at, or the capture is full: what follows is uncaptured.
        if done + n >= capturable || i + 1 == MAX_IOVECS || i as u64 + 1 >= iovcnt || n < len {
            flags |= data_flags::LAST;
        }
        // Most iovecs are small (headers, frame headers): the smallest record that fits.
        let sent = sized_chunk(d, base, n, done, flags);
        if !sent || flags & data_flags::LAST != 0 {
            return;
        }
        done += n;
    }
}

/// Reserves one record of size class `N`, fills it and submits it. False when the ring was full or
/// user memory could not be read (the record then says LAST, so the rest counts as uncaptured).
#[inline(never)]
fn chunk<const N: usize>(d: &DataCtx, src: u64, n: u64, offset: u64, flags: u8) -> bool {
    let Some(mut entry) = EVENTS.reserve::<DataEvent<N>>(0) else {
        count(counter::RINGBUF_FULL);
        return false;
    };
    let ev = entry.as_mut_ptr();
    let mut len = n as u32;
    if len > N as u32 {
        len = N as u32;
    }
    let mut flags = flags;
    let mut ok = true;
    unsafe {
        if len > 0 {
            let dst = (&raw mut (*ev).data).cast::<c_void>();
            let rc = generated::bpf_probe_read_user(dst, len, src as *const c_void);
            if rc != 0 {
                count(counter::READ_USER_FAILED);
                diag!("fd {}: reading {} bytes of user memory at {:x} failed ({})", d.fd, len, src, rc);
                len = 0;
                flags |= data_flags::LAST;
                ok = false;
            }
        }
        // pid_tgid is asked for here rather than passed in: that helper call clobbers the
        // caller-saved registers, and without a call at this point the verifier's state pruning
        // fails (over 1M instructions at --capture-bytes 32768, measured). It is the cheapest
        // helper that does it; a clock read, used before, costs more.
        (*ev).hdr = header(kind::DATA, bpf_get_current_pid_tgid(), d.exit_ns);
        (*ev).hdr.goid = d.goid;
        (*ev).enter_ns = d.enter_ns;
        (*ev).total_len = d.total;
        (*ev).fd = d.fd;
        (*ev).offset = offset as u32;
        (*ev).cap_len = len;
        (*ev).seq = d.seq;
        (*ev).direction = d.direction;
        (*ev).source = d.source;
        (*ev).flags = flags;
        (*ev)._pad = [0; 5];
    }
    entry.submit(submit_flags());
    ok
}
