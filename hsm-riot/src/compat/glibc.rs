//! glibc's `srand()` / `rand()` (the TYPE_3 additive feedback generator), which the C SDK's key
//! derivation calls.

/// glibc `rand()` state after `srand(seed)`.
pub(crate) struct Rand {
    r: Vec<u32>,
}

impl Drop for Rand {
    fn drop(&mut self) {
        // The state is derived from secret digests.
        zeroize::Zeroize::zeroize(&mut self.r);
    }
}

impl Rand {
    pub(crate) fn new(seed: u32) -> Self {
        // srandom_r: seed 0 becomes 1; 31 words from the Park-Miller LCG in signed 32-bit
        // arithmetic (C's truncating division), then 310 discarded outputs.
        let seed = if seed == 0 { 1 } else { seed };
        let mut r: Vec<u32> = Vec::with_capacity(344 + 64);
        let mut word = seed as i32 as i64;
        r.push(word as u32);
        for _ in 1..31 {
            let hi = word / 127_773;
            let lo = word % 127_773;
            word = 16_807 * lo - 2_836 * hi;
            if word < 0 {
                word += 2_147_483_647;
            }
            r.push(word as u32);
        }
        for i in 31..34 {
            r.push(r[i - 31]);
        }
        let mut rand = Self { r };
        for _ in 34..344 {
            rand.step();
        }
        rand
    }

    fn step(&mut self) -> u32 {
        let n = self.r.len();
        let value = self.r[n - 31].wrapping_add(self.r[n - 3]);
        self.r.push(value);
        // Only the last 31 words matter.
        if self.r.len() > 4096 {
            self.r.drain(..self.r.len() - 64);
        }
        value
    }

    /// The next `rand()` value, in `[0, 2^31)`.
    pub(crate) fn next(&mut self) -> u32 {
        self.step() >> 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_glibc() {
        // glibc: srand(1); rand() x3 -> 1804289383 846930886 1681692777 (the classic sequence).
        let mut rand = Rand::new(1);
        assert_eq!(
            [rand.next(), rand.next(), rand.next()],
            [1804289383, 846930886, 1681692777]
        );
        // srand(0) is srand(1).
        assert_eq!(Rand::new(0).next(), 1804289383);
    }
}
