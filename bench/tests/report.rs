//! A run's report: the stage timers the node records reach the result, the result object has
//! the fields scripts read, and `bench run --json --out` writes a report that parses.
//!
//! Alone in its test binary: the stage timers are the process's metrics recorder, which
//! another test running at the same time would reset.

use std::time::Duration;

/// Equal up to float printing and parsing (serde_json parses the last digit approximately).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

/// Runs the bench binary with `args` and `--json --out dir`; it must succeed. Its lines.
fn bench_json(args: &[&str], dir: &std::path::Path) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .args(["--json", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn round_trip(v: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

use bench::{
    baseline, machine, report, summary,
    target::{self, RunSettings, Target},
    workload::{self, Kind},
};

#[test]
fn a_run_reports_its_stages_latency_and_ratios_and_the_report_parses() {
    let prepared = workload::prepare(Kind::Erc20, 21, 30, 120);
    let settings = RunSettings {
        block_time: Duration::from_millis(100),
        mini_block_time: Duration::from_millis(10),
        mini_block_gather: Duration::ZERO,
        batch: 20,
        connections: 2,
        witnesses: true,
        rate: None,
    };
    let run =
        target::run(&prepared, &settings, Target::Inprocess, &indicatif::ProgressBar::hidden())
            .unwrap();
    let stages = run.stages.expect("this test binary's recorder is the bench's");
    assert!(stages.admit > Duration::ZERO && stages.execute > Duration::ZERO);
    assert!(stages.wal > Duration::ZERO && stages.root > Duration::ZERO);
    assert!(stages.diff > Duration::ZERO && stages.diff_bytes > 0);
    assert!(stages.mini_blocks > 0 && stages.seal_p50_us > 0);
    assert!(run.peak_rss_bytes > 0);
    // The stages are CPU times of the threads that ran them: never above their wall time.
    for (cpu, wall) in
        [stages.admit, stages.execute, stages.diff, stages.wal].iter().zip(stages.wall)
    {
        assert!(*cpu <= wall && wall > Duration::ZERO, "{cpu:?} of CPU in {wall:?}");
    }

    let base_par = baseline::run(&prepared, 40, true);
    let base_seq = baseline::run(&prepared, 40, false);
    let machine = machine::describe();
    let result = summary::of_runs(
        std::slice::from_ref(&run),
        summary::Context {
            kind: Kind::Erc20,
            target: Target::Inprocess,
            settings: &settings,
            accounts: 30,
            txs: 120,
            base_par: &base_par,
            base_seq: &base_seq,
            machine: &machine,
            command: "test",
            cpus: summary::Cpus { given: 2, restricted: false, allowed: 2 },
        },
    );
    let ours = 120.0 / run.elapsed.as_secs_f64();
    assert_eq!(result["ours"].as_f64().unwrap(), ours);
    assert_eq!(result["ratio"].as_f64().unwrap(), ours / (120.0 / base_par.total.as_secs_f64()));
    assert_eq!(result["unit"], "tx/s");
    assert_eq!(result["latency_us"]["count"], 120);
    let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / 120.0;
    assert_eq!(result["stages_us_per_tx"]["admit"].as_f64().unwrap(), per_tx(stages.admit));
    assert_eq!(result["stages_wall_us_per_tx"]["root"].as_f64().unwrap(), per_tx(stages.wall[4]));
    let sum = result["stages_us_per_tx"]["sum"].as_f64().unwrap();
    let share = result["stages_us_per_tx"]["share_of_cpu"].as_f64().unwrap();
    assert!(close(share, sum / result["cpu_us_per_tx"].as_f64().unwrap()), "{share}");
    assert_eq!(result["diff_bytes_per_tx"].as_f64().unwrap(), stages.diff_bytes as f64 / 120.0);

    let dir = tempfile::tempdir().unwrap();
    report::write_dir(dir.path(), std::slice::from_ref(&result)).unwrap();
    for plot in ["throughput.svg", "latency_cdf.svg", "stages.svg", "cpu.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{plot}");
        assert!(svg.contains("<rect") || svg.contains("<polyline"), "{plot} draws something");
    }
    assert!(
        std::fs::read_to_string(dir.path().join("stages.svg"))
            .unwrap()
            .contains("NOMT root commit")
    );
    assert_eq!(report::read_dir(dir.path()).unwrap(), vec![round_trip(&result)]);
}

#[test]
fn bench_run_json_prints_one_result_per_target_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let lines = bench_json(
        &["run", "mix", "--accounts", "30", "--txs", "90", "--runs", "1", "--block-txs", "30"]
            .into_iter()
            .chain(["--block-time", "100ms", "--batch", "30", "--targets", "inprocess,ws"])
            .collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(lines.len(), 2);
    for (line, target) in lines.iter().zip(["inprocess", "ws"]) {
        assert_eq!(line["workload"], "mix");
        assert_eq!(line["target"], target);
        let (ours, baseline) = (line["ours"].as_f64().unwrap(), line["baseline"].as_f64().unwrap());
        assert!(ours > 0.0 && baseline > 0.0);
        assert!(close(line["ratio"].as_f64().unwrap(), ours / baseline), "{line}");
        assert_eq!(line["latency_us"]["count"], 90);
        assert!(line["stages_us_per_tx"]["sum"].as_f64().unwrap() > 0.0);
    }
    let written = report::read_dir(dir.path()).unwrap();
    assert_eq!(written.len(), 2);
    for (w, line) in written.iter().zip(&lines) {
        assert_eq!((&w["target"], &w["latency_us"]), (&line["target"], &line["latency_us"]));
        assert!(close(w["ours"].as_f64().unwrap(), line["ours"].as_f64().unwrap()));
    }
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("| mix | ours, ws (WAL fsync + NOMT, persisted) |"), "{summary}");
    assert!(summary.contains("![latency CDF](latency_cdf.svg)"));
}

#[test]
fn bench_run_cpus_measures_on_each_cpu_count_and_plots_throughput_against_cpus() {
    let available = numa::current_affinity().len();
    let counts: Vec<usize> = if available >= 2 { vec![1, 2] } else { vec![1] };
    let list = counts.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let dir = tempfile::tempdir().unwrap();
    let lines = bench_json(
        &["run", "eth", "--accounts", "20", "--txs", "40", "--runs", "1", "--block-txs", "20"]
            .into_iter()
            .chain(["--block-time", "100ms", "--targets", "inprocess", "--cpus", &list])
            .collect::<Vec<_>>(),
        dir.path(),
    );
    assert_eq!(lines.len(), counts.len());
    for (line, n) in lines.iter().zip(&counts) {
        assert_eq!(line["cpus"], *n);
        assert_eq!(line["cpus_restricted"], true);
        // The kernel really held the run to that many CPUs.
        assert_eq!(line["cpus_allowed"], *n);
        assert!(line["ours"].as_f64().unwrap() > 0.0 && line["baseline"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(dir.path().join("throughput_vs_cpus.svg").exists(), counts.len() > 1);
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        summary.contains("| eth | ours, inprocess, 1 CPU (WAL fsync + NOMT, persisted) |"),
        "{summary}"
    );

    // More CPUs than the process may use is refused, and nothing is measured.
    let too_many = (available + 1).to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["run", "eth", "--accounts", "2", "--txs", "2", "--runs", "1", "--cpus", &too_many])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cpus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
