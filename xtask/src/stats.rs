//! Medians over pairs and their bootstrap intervals: every benchmark
//! reports these, never means of noisy runs.

/// 90 % bootstrap interval of the median of `v` (2,000 resamples, fixed seed
/// so a report can be reproduced from its numbers).
pub(crate) fn median_ci(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // xorshift64*: a resampling index generator needs no crate.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| median((0..v.len()).map(|_| v[next(v.len())]).collect()))
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[100], medians[1899])
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median of per-pair values with its 90 % bootstrap interval, e.g. "+46 [+38–+55]".
pub(crate) fn with_ci(v: &[f64], decimals: usize) -> String {
    let (lo, hi) = median_ci(v);
    format!(
        "{:+.d$} [{lo:+.d$}–{hi:+.d$}]",
        median(v.to_vec()),
        d = decimals
    )
}

/// Every value with `d` decimals, comma-separated (a report's "per pair" column).
pub(crate) fn fmt_all(v: &[f64], d: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.d$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "median [low–high]" of `v` (90 % bootstrap interval) with `d` decimals.
pub(crate) fn ci(v: &[f64], d: usize) -> String {
    let (lo, hi) = median_ci(v);
    format!("{:.d$} [{lo:.d$}–{hi:.d$}]", median(v.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_ci_formats_median_and_interval() {
        assert_eq!(with_ci(&[46.0; 5], 0), "+46 [+46–+46]");
        assert_eq!(with_ci(&[-1.25; 3], 1), "-1.2 [-1.2–-1.2]");
    }

    #[test]
    fn median_ci_brackets_the_median() {
        assert_eq!(median_ci(&[0.98; 7]), (0.98, 0.98));
        let v: Vec<f64> = (1..=9).map(f64::from).collect();
        let (lo, hi) = median_ci(&v);
        assert!(lo < 5.0 && 5.0 < hi, "({lo}, {hi})");
        assert!(lo >= 1.0 && hi <= 9.0, "({lo}, {hi})");
        // More pairs with the same spread give a narrower interval.
        let wide: Vec<f64> = (0..45).map(|i| f64::from(i % 9 + 1)).collect();
        let (wlo, whi) = median_ci(&wide);
        assert!(whi - wlo < hi - lo, "({wlo}, {whi}) vs ({lo}, {hi})");
    }
}
