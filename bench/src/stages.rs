//! The sequencer's own stage timers, read in this process: a `metrics` recorder that keeps each
//! histogram's sum and distribution and each counter, so a run can report where its time went
//! (sender recovery, execution, diff, WAL, root commit) from the timers the node already has.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use hdrhistogram::Histogram as Hdr;
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

/// One histogram's values so far.
#[derive(Debug)]
struct Values {
    sum: f64,
    count: u64,
    /// Values in millionths of their unit (µs for seconds), 1 to 10^9 at 3 digits.
    hdr: Hdr<u64>,
}

impl Values {
    fn new() -> Self {
        Self { sum: 0.0, count: 0, hdr: Hdr::new_with_bounds(1, 1_000_000_000, 3).expect("bounds") }
    }
}

#[derive(Debug)]
struct Hist(Mutex<Values>);

impl HistogramFn for Hist {
    fn record(&self, value: f64) {
        let mut v = self.0.lock().expect("not poisoned");
        v.sum += value;
        v.count += 1;
        v.hdr.saturating_record((value * 1e6).round().max(1.0) as u64);
    }
}

#[derive(Default)]
struct Inner {
    histograms: RwLock<HashMap<String, Arc<Hist>>>,
    counters: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

fn entry<T>(map: &RwLock<HashMap<String, Arc<T>>>, name: &str, new: impl FnOnce() -> T) -> Arc<T> {
    if let Some(found) = map.read().expect("not poisoned").get(name) {
        return found.clone();
    }
    map.write()
        .expect("not poisoned")
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(new()))
        .clone()
}

/// What one histogram recorded.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Their sum, in the metric's unit (seconds for `_seconds`).
    pub sum: f64,
    /// Median, in millionths of the unit.
    pub p50: u64,
    /// 99th percentile, in millionths of the unit.
    pub p99: u64,
    /// Largest, in millionths of the unit.
    pub max: u64,
}

/// The recorder. Labels are ignored: values are kept by metric name.
#[derive(Clone, Default)]
pub struct Stages(Arc<Inner>);

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stages").finish_non_exhaustive()
    }
}

impl Stages {
    /// The process's recorder, installed on first use. `None` if another recorder was
    /// installed first (then no stage times are available).
    pub fn global() -> Option<&'static Stages> {
        static GLOBAL: OnceLock<Option<Stages>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let stages = Stages::default();
                metrics::set_global_recorder(stages.clone()).ok().map(|()| stages)
            })
            .as_ref()
    }

    /// Forgets every value recorded so far.
    pub fn reset(&self) {
        for h in self.0.histograms.read().expect("not poisoned").values() {
            *h.0.lock().expect("not poisoned") = Values::new();
        }
        for c in self.0.counters.read().expect("not poisoned").values() {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// A histogram's values since the last reset (zero if never recorded).
    pub fn histogram(&self, name: &str) -> Summary {
        let Some(h) = self.0.histograms.read().expect("not poisoned").get(name).cloned() else {
            return Summary::default();
        };
        let v = h.0.lock().expect("not poisoned");
        if v.count == 0 {
            return Summary::default();
        }
        Summary {
            count: v.count,
            sum: v.sum,
            p50: v.hdr.value_at_quantile(0.5),
            p99: v.hdr.value_at_quantile(0.99),
            max: v.hdr.max(),
        }
    }

    /// A counter's value since the last reset.
    pub fn counter(&self, name: &str) -> u64 {
        self.0
            .counters
            .read()
            .expect("not poisoned")
            .get(name)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Stages {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(entry(&self.0.counters, key.name(), AtomicU64::default))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(entry(&self.0.histograms, key.name(), || {
            Hist(Mutex::new(Values::new()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_sums_histograms_and_counters_by_name_and_resets() {
        let stages = Stages::default();
        metrics::with_local_recorder(&stages, || {
            metrics::histogram!("x_seconds").record(0.001);
            metrics::histogram!("x_seconds", "label" => "a").record(0.003);
            metrics::counter!("n_total").increment(5);
        });
        let x = stages.histogram("x_seconds");
        assert_eq!(x.count, 2);
        assert!((x.sum - 0.004).abs() < 1e-12);
        // hdrhistogram keeps 3 significant digits.
        assert!((2997..=3003).contains(&x.max), "{}", x.max);
        assert_eq!(stages.counter("n_total"), 5);
        assert_eq!(stages.histogram("missing").count, 0);
        stages.reset();
        assert_eq!(stages.histogram("x_seconds").count, 0);
        assert_eq!(stages.counter("n_total"), 0);
    }
}
