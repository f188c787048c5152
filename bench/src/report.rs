//! Reports: the summary table, a report directory (`results.json`, `summary.md`), and two
//! reports side by side.

use std::path::Path;

use serde_json::Value;

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

/// The Markdown table of `bench run` results (one object per target, as `--json` prints).
pub fn table(results: &[Value]) -> String {
    let mut out = String::new();
    out.push_str("| workload | pipeline | tx/s | vs baseline (parallel recovery) | vs baseline (sequential recovery) | CPU µs/tx |\n");
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | ours, {} (WAL fsync + NOMT, persisted) | {:.0} | {:.2}x | {:.2}x | {:.1} |\n",
            text(r, "workload"),
            text(r, "target"),
            num(r, "ours"),
            num(r, "ratio"),
            num(r, "ratio_vs_sequential_recovery"),
            num(r, "cpu_us_per_tx"),
        ));
    }
    if let Some(r) = results.first() {
        let stages = &r["baseline_stages_us_per_tx"];
        out.push_str(&format!(
            "| {} | baseline, parallel recovery (in memory, nothing persisted) | {:.0} | | | recover {:.1} + execute {:.1} + MPT root {:.1} µs/tx (wall) |\n",
            text(r, "workload"),
            num(r, "baseline"),
            num(stages, "recover"),
            num(stages, "execute"),
            num(stages, "root"),
        ));
        out.push_str(&format!(
            "| {} | baseline, sequential recovery (in memory, nothing persisted) | {:.0} | | | |\n",
            text(r, "workload"),
            num(r, "baseline_sequential_recovery"),
        ));
    }
    out
}

/// The machine and command lines that head a report.
pub fn header(results: &[Value]) -> String {
    let Some(r) = results.first() else { return String::new() };
    let m = &r["machine"];
    format!(
        "machine: {} ({} CPUs, {} NUMA node(s), {:.1} GiB, {} huge pages), Linux {}, rev {}\ncommand: {}\nmedian of {} runs, {} accounts, {} transactions\n",
        text(m, "cpu"),
        m["cpus"],
        m["numa_nodes"],
        num(m, "memory_gib"),
        m["hugepages"],
        text(m, "kernel"),
        text(m, "revision"),
        text(r, "command"),
        r["runs"],
        r["accounts"],
        r["txs"],
    )
}

/// Writes `results.json` and `summary.md` into `dir` (created if missing).
pub fn write_dir(dir: &Path, results: &[Value]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)?)?;
    std::fs::write(dir.join("summary.md"), format!("{}\n{}", header(results), table(results)))
}

/// Reads the results of a report directory.
pub fn read_dir(dir: &Path) -> Result<Vec<Value>, String> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Two reports side by side, matched by workload and target.
pub fn compare(a: &[Value], b: &[Value]) -> String {
    let mut out = String::from(
        "| workload | target | A tx/s | B tx/s | B / A | A vs its baseline | B vs its baseline |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for ra in a {
        let found =
            b.iter().find(|rb| rb["workload"] == ra["workload"] && rb["target"] == ra["target"]);
        let (b_tps, b_ratio) =
            found.map_or((f64::NAN, f64::NAN), |rb| (num(rb, "ours"), num(rb, "ratio")));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.2}x |\n",
            text(ra, "workload"),
            text(ra, "target"),
            num(ra, "ours"),
            b_tps,
            b_tps / num(ra, "ours"),
            num(ra, "ratio"),
            b_ratio,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(target: &str, ours: f64, baseline: f64) -> Value {
        serde_json::json!({"workload": "erc20", "target": target, "ours": ours, "baseline": baseline,
            "ratio": ours / baseline, "ratio_vs_sequential_recovery": 1.0, "cpu_us_per_tx": 80.0,
            "baseline_sequential_recovery": 1.0, "unit": "tx/s",
            "baseline_stages_us_per_tx": {"recover": 1.0, "execute": 2.0, "root": 3.0},
            "machine": {"cpu": "x", "cpus": 2}, "command": "bench run erc20", "runs": 5})
    }

    #[test]
    fn a_report_directory_round_trips_and_compares() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![result("inprocess", 100.0, 200.0)];
        write_dir(dir.path(), &a).unwrap();
        assert_eq!(read_dir(dir.path()).unwrap(), a);
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.contains(
                "| erc20 | ours, inprocess (WAL fsync + NOMT, persisted) | 100 | 0.50x |"
            ),
            "{summary}"
        );
        let b = vec![result("inprocess", 150.0, 200.0)];
        let side = compare(&a, &b);
        assert!(
            side.contains("| erc20 | inprocess | 100 | 150 | 1.50x | 0.50x | 0.75x |"),
            "{side}"
        );
        assert!(read_dir(&dir.path().join("missing")).is_err());
    }
}
