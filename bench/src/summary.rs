//! One `bench run` result from its runs: medians of the per-run figures, latency percentiles
//! over every run's transactions, and the ratios to the baselines measured in the same run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{
    baseline, machine, median,
    target::{RunResult, RunSettings, Target},
    tps,
    workload::Kind,
};

/// What a result is about, besides its runs.
#[derive(Debug)]
pub struct Context<'a> {
    /// Workload.
    pub kind: Kind,
    /// Target measured.
    pub target: Target,
    /// Our pipeline's settings.
    pub settings: &'a RunSettings,
    /// Funded accounts.
    pub accounts: usize,
    /// Transactions per run.
    pub txs: usize,
    /// The baseline with recovery on all cores (median run).
    pub base_par: &'a baseline::StageTimes,
    /// The baseline with sequential recovery (median run).
    pub base_seq: &'a baseline::StageTimes,
    /// The machine.
    pub machine: &'a machine::Machine,
    /// The command line.
    pub command: &'a str,
    /// The CPUs of the run.
    pub cpus: Cpus,
}

/// The CPUs a run was given.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// How many.
    pub given: usize,
    /// Fewer than the process may use (`--cpus`).
    pub restricted: bool,
    /// What the kernel let the measuring thread use, to show the restriction took.
    pub allowed: usize,
}

/// Quantiles at which the latency CDF is sampled for plots.
const CDF_POINTS: [f64; 16] =
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];

fn med(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    median(&mut v)
}

/// The result object `--json` prints: at least `workload`, `target`, `ours`, `baseline`,
/// `unit` and `ratio` (ours / baseline, > 1 is better).
pub fn of_runs(runs: &[RunResult], cx: Context<'_>) -> Value {
    assert!(!runs.is_empty(), "a result needs runs");
    let txs = cx.txs as f64;
    let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / txs;
    let ours = med(runs.iter().map(|r| tps(cx.txs, r.elapsed)));
    let base_par_tps = tps(cx.txs, cx.base_par.total);
    let base_seq_tps = tps(cx.txs, cx.base_seq.total);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for r in runs {
        latency.add(&r.latency).expect("same bounds");
    }
    let q = |quantile: f64| latency.value_at_quantile(quantile);
    let cpu = med(runs.iter().map(|r| per_tx(r.cpu)));
    let stages = runs.iter().map(|r| r.stages).collect::<Option<Vec<_>>>().map(|all| {
        let stage =
            |f: fn(&crate::target::StageTimes) -> Duration| med(all.iter().map(|s| per_tx(f(s))));
        let (admit, execute, diff, wal, root, jit, feed) = (
            stage(|s| s.admit),
            stage(|s| s.execute),
            stage(|s| s.diff),
            stage(|s| s.wal),
            stage(|s| s.root),
            stage(|s| s.jit),
            stage(|s| s.feed),
        );
        let sum = admit + execute + diff + wal + root + jit + feed;
        let wall = |i: usize| med(all.iter().map(|s| per_tx(s.wall[i])));
        json!({
            "stages_us_per_tx": {
                "admit": admit, "execute": execute, "diff": diff, "wal": wal, "root": root,
                "jit": jit, "feed": feed,
                "sum": sum,
                "share_of_cpu": sum / cpu,
            },
            "stages_wall_us_per_tx": {
                "admit": wall(0), "execute": wall(1), "diff": wall(2), "wal": wall(3),
                "root": wall(4),
            },
            "mini_blocks_per_run": med(all.iter().map(|s| s.mini_blocks as f64)),
            "seal_latency_us": {
                "p50": med(all.iter().map(|s| s.seal_p50_us as f64)),
                "p99": med(all.iter().map(|s| s.seal_p99_us as f64)),
            },
            "diff_bytes_per_tx": med(all.iter().map(|s| s.diff_bytes as f64 / txs)),
        })
    });
    // Per group, the median over runs (a group absent from a run counts as zero there).
    let mut groups: Vec<String> = Vec::new();
    for r in runs {
        for (g, _) in &r.cpu_by_thread {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
    }
    let by_thread: serde_json::Map<String, Value> = groups
        .into_iter()
        .map(|g| {
            let us = med(runs.iter().map(|r| {
                r.cpu_by_thread.iter().find(|(name, _)| *name == g).map_or(0.0, |(_, d)| per_tx(*d))
            }));
            (g, json!(us))
        })
        .collect();
    let mut result = json!({
        "workload": cx.kind,
        "target": cx.target.name(),
        "mode": if cx.settings.rate.is_some() { "open" } else { "closed" },
        "offered_rate": cx.settings.rate,
        "ours": ours,
        "baseline": base_par_tps,
        "baseline_name": "standard pipeline, recovery on all cores",
        "unit": "tx/s",
        "ratio": ours / base_par_tps,
        "ratio_vs_sequential_recovery": ours / base_seq_tps,
        "baseline_sequential_recovery": base_seq_tps,
        "gas_per_s": med(runs.iter().map(|r| r.gas as f64 / r.elapsed.as_secs_f64())),
        "cpu_us_per_tx": cpu,
        "cpu_us_per_tx_by_thread": by_thread,
        "latency_us": {
            "count": latency.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
            "p999": q(0.999), "max": latency.max(),
        },
        "latency_cdf_us": CDF_POINTS.iter().map(|&p| json!([p, q(p)])).collect::<Vec<_>>(),
        "peak_rss_mib": med(runs.iter().map(|r| r.peak_rss_bytes as f64 / (1 << 20) as f64)),
        "cpus": cx.cpus.given,
        "cpus_restricted": cx.cpus.restricted,
        "cpus_allowed": cx.cpus.allowed,
        "runs": runs.len(),
        "accounts": cx.accounts,
        "txs": cx.txs,
        "settings": cx.settings,
        "baseline_stages_us_per_tx": {
            "recover": per_tx(cx.base_par.recover),
            "execute": per_tx(cx.base_par.execute),
            "root": per_tx(cx.base_par.root),
        },
        "machine": cx.machine,
        "command": cx.command,
    });
    if let (Some(stages), Some(object)) = (stages, result.as_object_mut()) {
        object.extend(stages.as_object().cloned().unwrap_or_default());
    }
    result
}
