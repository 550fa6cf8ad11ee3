//! Kernel timestamps (CLOCK_MONOTONIC, what bpf_ktime_get_ns returns) to wall-clock time.
//! The offset is taken once, so span durations stay exact differences of kernel timestamps.

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn new() -> Self {
        // Bracket the realtime reading with two monotonic ones to halve the error.
        let m1 = now_ns(libc::CLOCK_MONOTONIC);
        let r = now_ns(libc::CLOCK_REALTIME);
        let m2 = now_ns(libc::CLOCK_MONOTONIC);
        Clock { offset_ns: r - (m1 + m2) / 2 }
    }

    pub fn to_unix_nanos(&self, ktime_ns: u64) -> u64 {
        u64::try_from(i128::from(ktime_ns) + self.offset_ns).unwrap_or(0)
    }

    /// Kernel time now, for housekeeping (idle timeouts).
    pub fn ktime_now() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_now_to_now() {
        let c = Clock::new();
        let wall = c.to_unix_nanos(Clock::ktime_now());
        let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(real) < 50_000_000, "{wall} vs {real}");
    }
}
