//! `bench`: workloads, the load driver, baselines measured in the same run, and reports — and
//! the conformance runner that checks the execution path against Ethereum's state tests.
//!
//! It owns measuring and checking; it changes nothing in the crates it measures.

pub mod baseline;
pub mod blocktest;
pub mod jitbench;
pub mod latency;
pub mod machine;
pub mod memory;
pub mod mpt;
pub mod parallel;
pub mod progress;
pub mod prover;
pub mod report;
pub mod stages;
pub mod statesync;
pub mod statetest;
pub mod summary;
pub mod target;
pub mod threads;
pub mod workload;

use std::time::Duration;

/// Values a median can be taken of: ordered, and the mean of two can be formed.
pub trait Medianable: Copy + PartialOrd {
    /// The mean of `a` and `b`.
    fn mean(a: Self, b: Self) -> Self;
}

impl Medianable for Duration {
    fn mean(a: Self, b: Self) -> Self {
        (a + b) / 2
    }
}

impl Medianable for f64 {
    fn mean(a: Self, b: Self) -> Self {
        (a + b) / 2.0
    }
}

/// The median (the mean of the middle two for an even count). Sorts `values`.
pub fn median<T: Medianable>(values: &mut [T]) -> T {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { T::mean(values[mid - 1], values[mid]) }
}

/// Transactions per second.
pub fn tps(txs: usize, elapsed: Duration) -> f64 {
    txs as f64 / elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_rate() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), Duration::from_micros(2500));
        assert_eq!(tps(1000, Duration::from_millis(500)), 2000.0);
    }
}
