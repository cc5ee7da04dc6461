//! Deterministic pseudo-random numbers for the simulator (SplitMix64).
//!
//! A copy of the generator in `fleet::demo`, plus the few distributions the simulator draws from.
//! Every draw is a pure function of the seed and the number of draws before it, so a simulation
//! is reproducible from its workload's seed.

/// SplitMix64: small, fast, and good enough for simulation noise.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// A generator for one keyed sub-stream (for example one attempt of one task), so that a
    /// draw does not depend on how many other draws happened before it in the simulation.
    pub fn keyed(seed: u64, a: u64, b: u64) -> Self {
        let mut mix = SplitMix::new(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let first = mix.next_u64();
        SplitMix::new(first ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.unit() * (hi - lo)
    }

    /// Uniform integer in [lo, hi] (inclusive); `lo` when `hi <= lo`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Exponentially distributed with the given rate (mean `1 / rate`).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1], so ln is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal multiplier with mean 1 and log-space standard deviation `sigma`.
    pub fn lognormal_unit_mean(&mut self, sigma: f64) -> f64 {
        if sigma <= 0.0 {
            return 1.0;
        }
        (sigma * self.normal() - sigma * sigma / 2.0).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix::new(42);
        let mut b = SplitMix::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn keyed_streams_differ() {
        let x = SplitMix::keyed(1, 2, 3).next_u64();
        assert_eq!(x, SplitMix::keyed(1, 2, 3).next_u64());
        assert_ne!(x, SplitMix::keyed(1, 3, 2).next_u64());
        assert_ne!(x, SplitMix::keyed(1, 2, 4).next_u64());
    }

    #[test]
    fn distributions_have_expected_means() {
        let mut rng = SplitMix::new(7);
        let n = 20_000;
        let unit: f64 = (0..n).map(|_| rng.unit()).sum::<f64>() / n as f64;
        assert!((unit - 0.5).abs() < 0.02, "{unit}");
        let exp: f64 = (0..n).map(|_| rng.exponential(4.0)).sum::<f64>() / n as f64;
        assert!((exp - 0.25).abs() < 0.02, "{exp}");
        let ln: f64 = (0..n).map(|_| rng.lognormal_unit_mean(0.5)).sum::<f64>() / n as f64;
        assert!((ln - 1.0).abs() < 0.03, "{ln}");
        assert_eq!(rng.lognormal_unit_mean(0.0), 1.0);
    }

    #[test]
    fn range_inclusive_stays_in_bounds() {
        let mut rng = SplitMix::new(3);
        for _ in 0..1000 {
            let v = rng.range_inclusive(2, 5);
            assert!((2..=5).contains(&v));
        }
        assert_eq!(rng.range_inclusive(4, 4), 4);
    }
}
