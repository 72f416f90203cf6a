//! The statistics of reports and comparisons: percentiles, histograms, the Mann–Whitney U test.

/// The `q` quantile (0..=1) of sorted values, by nearest rank; 0 for none.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied().unwrap_or(0)
}

/// Counts of sorted durations (ns) in `bins` log-spaced bins between the smallest and largest;
/// returns the bins' lower edges (ns) and counts.
pub fn histogram(sorted: &[u64], bins: usize) -> Vec<(f64, u64)> {
    let (Some(&low), Some(&high)) = (sorted.first(), sorted.last()) else { return Vec::new() };
    let (low, high) = ((low.max(1)) as f64, (high.max(1)) as f64 * 1.000_001);
    let step = (high / low).ln() / bins as f64;
    let mut counts = vec![0u64; bins];
    for &value in sorted {
        let at = if step > 0.0 { (((value.max(1) as f64) / low).ln() / step) as usize } else { 0 };
        if let Some(count) = counts.get_mut(at.min(bins - 1)) {
            *count += 1;
        }
    }
    counts.into_iter().enumerate().map(|(i, c)| (low * (step * i as f64).exp(), c)).collect()
}

/// The two-sided p-value of the Mann–Whitney U test of two samples (normal approximation with
/// the tie correction; exact enough from about ten values each). 1 when either is empty.
pub fn mann_whitney_p(a: &[u64], b: &[u64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(u64, bool)> =
        a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    all.sort_unstable_by_key(|&(v, _)| v);
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while all.get(j + 1).is_some_and(|next| Some(next.0) == all.get(i).map(|x| x.0)) {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        let tied = (j - i + 1) as f64;
        tie_term += tied * tied * tied - tied;
        rank_sum_a += mean_rank * all.get(i..=j).map_or(0, |s| s.iter().filter(|x| x.1).count()) as f64;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0).abs() / variance.sqrt();
    (2.0 * normal_upper_tail(z)).min(1.0)
}

/// P(Z > z) of the standard normal (Abramowitz–Stegun 7.1.26 for erfc, error < 1.5e-7).
fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    0.5 * poly * (-x * x).exp()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 0.9), 90);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn mann_whitney_tells_shifted_samples_from_equal_ones() {
        let a: Vec<u64> = (0..50).map(|i| 1000 + i * 7 % 13).collect();
        let b: Vec<u64> = (0..50).map(|i| 1500 + i * 5 % 11).collect();
        assert!(mann_whitney_p(&a, &b) < 1e-10);
        let c: Vec<u64> = (0..50).map(|i| 1000 + i * 11 % 13).collect();
        assert!(mann_whitney_p(&a, &c) > 0.05, "{}", mann_whitney_p(&a, &c));
        assert_eq!(mann_whitney_p(&a, &[]), 1.0);
        // All tied: no evidence.
        assert_eq!(mann_whitney_p(&[5; 10], &[5; 10]), 1.0);
        // U = 0 of 5 and 5: z = 12.5 / sqrt(25 * 11 / 12), p = erfc(z / sqrt 2) = 0.0090234.
        let p = mann_whitney_p(&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]);
        assert!((p - 0.009_023_4).abs() < 1e-5, "{p}");
    }

    #[test]
    fn histogram_bins_cover_every_value() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let bins = histogram(&values, 20);
        assert_eq!(bins.len(), 20);
        assert_eq!(bins.iter().map(|b| b.1).sum::<u64>(), 1000);
        assert!((bins[0].0 - 1000.0).abs() < 1e-6);
        assert_eq!(histogram(&[5, 5, 5], 4).iter().map(|b| b.1).sum::<u64>(), 3);
    }
}
