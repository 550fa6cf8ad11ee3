//! The deterministic pseudo-random numbers of the decoders' robustness tests, so that a failure
//! reproduces (no rand crate).

/// Knuth's MMIX linear congruential generator; the state is the seed.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    /// The next number, from the state's high bits (below 2^31).
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// The next number as a `u32`.
    pub fn next_u32(&mut self) -> u32 {
        self.next() as u32
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
