//! Trace and span ids.

use rand::{RngCore, SeedableRng, rngs::SmallRng};

/// Ids must be unique, not secret: a small fast generator seeded from the OS, instead of the
/// ChaCha generator behind `rand::random` (which showed in profiles).
pub struct IdGenerator(SmallRng);

impl IdGenerator {
    pub fn from_os_rng() -> Self {
        IdGenerator(SmallRng::from_os_rng())
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        self.non_zero()
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        self.non_zero()
    }

    fn non_zero<const N: usize>(&mut self) -> [u8; N] {
        let mut id = [0u8; N];
        // All zeros is the invalid id; the chance is nil, but it costs one comparison.
        while id == [0u8; N] {
            self.0.fill_bytes(&mut id);
        }
        id
    }
}
