//! A fixed-size log-linear latency histogram in microseconds: 8 sub-buckets per power of two
//! (a value is known within 12.5%), from 1 µs to about 134 s (beyond, the last bucket).
//! Fixed size, no allocation on record, mergeable by addition.

/// Sub-buckets per power of two (as a shift).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Highest power of two kept apart: 2^27 µs ≈ 134 s.
const TOP_EXP: usize = 27;
/// Number of buckets.
pub const LEN: usize = (TOP_EXP - SUB_BITS as usize + 2) * SUB;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: [u32; LEN],
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; LEN], count: 0, max_us: 0 }
    }
}

/// The bucket of a value.
fn index(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (exp - SUB_BITS as usize)) as usize) & (SUB - 1);
    ((exp - SUB_BITS as usize + 1) * SUB + sub).min(LEN - 1)
}

/// The middle of a bucket's range.
fn middle(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let exp = index / SUB + SUB_BITS as usize - 1;
    let sub = (index % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS as usize);
    ((SUB as u64 + sub) << (exp - SUB_BITS as usize)) + width / 2
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        if let Some(slot) = self.counts.get_mut(index(us)) {
            *slot = slot.saturating_add(1);
        }
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value at quantile `q` (0..=1), in µs: the middle of its bucket, never above the
    /// largest value seen. 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return middle(i).min(self.max_us);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it_within_an_eighth() {
        for us in (0..100_000u64).chain([1 << 20, 123_456_789, 1 << 26]) {
            let i = index(us);
            let mid = middle(i);
            let error = mid.abs_diff(us) as f64 / us.max(1) as f64;
            assert!(error <= 0.0625 + 1e-9 || us < SUB as u64 && mid == us, "{us} -> {i} -> {mid}");
        }
        assert_eq!(index(u64::MAX), LEN - 1);
    }

    #[test]
    fn quantiles_of_a_mixture_find_the_slow_tail() {
        let mut h = Histogram::default();
        for _ in 0..90 {
            h.record(300);
        }
        for _ in 0..10 {
            h.record(20_000);
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((280..=320).contains(&p50), "{p50}");
        assert!((18_750..=20_000).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), 20_000);
        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!((merged.count(), merged.quantile_us(0.99)), (200, p99));
    }
}
