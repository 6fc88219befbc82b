//! Zipf-distributed choice among `n` items: item `i` (0-based) has weight
//! `1 / (i + 1)^s`. `s = 0` is uniform; production merchant popularity is
//! usually around 1.
use rand::Rng;

#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n >= 1`, `s >= 0` (validated by the scenario).
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for i in 0..n {
            acc += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The share of all draws item `i` gets.
    pub fn share(&self, i: usize) -> f64 {
        let prev = if i == 0 { 0.0 } else { self.cdf[i - 1] };
        self.cdf[i] - prev
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn draws_follow_the_weights() {
        let z = Zipf::new(100, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 100];
        for _ in 0..200_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Item 0 gets 1/H(100) ~ 19.3%; item 1 half of that.
        let share0 = f64::from(counts[0]) / 200_000.0;
        assert!((share0 - z.share(0)).abs() < 0.01, "{share0}");
        assert!((z.share(0) - 0.1928).abs() < 0.001);
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((ratio - 2.0).abs() < 0.1, "{ratio}");
        assert!(counts.iter().all(|&c| c > 0));
    }

    #[test]
    fn zero_skew_is_uniform() {
        let z = Zipf::new(4, 0.0);
        for i in 0..4 {
            assert!((z.share(i) - 0.25).abs() < 1e-12);
        }
    }
}
