//! Reads the kernel ring buffer (tokio AsyncFd) and drives the pipeline; reads the kernel's
//! per-CPU drop counters for the stats.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::counter;

use crate::pipeline::Pipeline;

/// Kernel-side counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelCounters {
    pub ringbuf_full: u64,
    pub args_full: u64,
    pub sockets_full: u64,
    pub read_user_failed: u64,
    pub iov_truncated: u64,
    pub go_tls_no_socket: u64,
    pub go_tls_calls_full: u64,
    /// Socket I/O on an unknown socket in a syscall without an fd argument (io_uring...).
    pub no_syscall_fd: u64,
}

pub struct Capture {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
}

impl Capture {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("EVENTS map missing"))?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").ok_or_else(|| anyhow!("COUNTERS map missing"))?)?;
        // SAFETY: the ring buffer owns its fd and stays registered until it is dropped with us.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .context("registering the ring buffer with tokio")?;
        Ok(Capture { ring, counters })
    }

    /// Waits until records are available, then hands them all to the pipeline.
    pub async fn drain(&mut self, pipeline: &mut Pipeline) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        drain_ring(guard.get_inner_mut(), pipeline);
        guard.clear_ready();
        Ok(())
    }

    /// Like [`drain`] but returns at once when nothing is pending (periodic polls, shutdown).
    pub fn drain_now(&mut self, pipeline: &mut Pipeline) {
        drain_ring(self.ring.get_mut(), pipeline);
    }

    pub fn kernel_counters(&self) -> KernelCounters {
        let sum = |i: u32| self.counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        KernelCounters {
            ringbuf_full: sum(counter::RINGBUF_FULL),
            args_full: sum(counter::ARGS_FULL),
            sockets_full: sum(counter::SOCKETS_FULL),
            read_user_failed: sum(counter::READ_USER_FAILED),
            iov_truncated: sum(counter::IOV_TRUNCATED),
            go_tls_no_socket: sum(counter::GO_TLS_NO_SOCKET),
            go_tls_calls_full: sum(counter::GO_TLS_CALLS_FULL),
            no_syscall_fd: sum(counter::NO_SYSCALL_FD),
        }
    }
}

/// Hands the pending records to the pipeline. One pass is bounded so that housekeeping and
/// shutdown are not starved under a flood.
fn drain_ring(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) {
    for _ in 0..65536 {
        let Some(item) = ring.next() else { break };
        pipeline.handle_record(&item);
    }
}

pub const HOUSEKEEPING: Duration = Duration::from_millis(500);
