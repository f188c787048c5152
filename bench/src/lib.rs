//! `bench`: workloads, the load driver, baselines measured in the same run, and reports — and
//! the conformance runner that checks the execution path against Ethereum's state tests.
//!
//! It owns measuring and checking; it changes nothing in the crates it measures.

pub mod baseline;
pub mod latency;
pub mod machine;
pub mod memory;
pub mod parallel;
pub mod report;
pub mod statetest;
pub mod target;
pub mod workload;

use std::time::Duration;

/// The median of some durations (the mean of the middle two for an even count).
pub fn median(values: &mut [Duration]) -> Duration {
    assert!(!values.is_empty(), "median of nothing");
    values.sort();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2 }
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
