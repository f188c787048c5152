//! Reports: the summary tables, a report directory (`results.json`, `summary.md` and SVG
//! plots: throughput, latency CDF, time per stage), and two reports side by side.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("?")
}

/// How a result's load was offered, for tables and legends.
fn label(r: &Value) -> String {
    let mut label = match r["offered_rate"].as_f64() {
        Some(rate) => format!("{}, open loop at {rate:.0} tx/s", text(r, "target")),
        None => text(r, "target").to_string(),
    };
    label.push_str(&cpus_suffix(r));
    label
}

/// `", N CPUs"` for a run restricted to fewer CPUs (`--cpus`), else nothing.
fn cpus_suffix(r: &Value) -> String {
    match (r["cpus_restricted"].as_bool(), r["cpus"].as_u64()) {
        (Some(true), Some(n)) => format!(", {n} CPU{}", if n == 1 { "" } else { "s" }),
        _ => String::new(),
    }
}

/// One result per distinct CPU count: whose baselines to show.
fn per_cpu_count(results: &[Value]) -> Vec<&Value> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for r in results {
        if !seen.contains(&r["cpus"]) {
            seen.push(r["cpus"].clone());
            out.push(r);
        }
    }
    out
}

/// The stage names of a result's breakdown, in pipeline order.
const STAGES: [(&str, &str); 7] = [
    ("admit", "admission (sender recovery)"),
    ("execute", "execution"),
    ("diff", "diff encode + apply"),
    ("wal", "WAL append"),
    ("root", "block seal: NOMT root commit"),
    ("jit", "JIT compile"),
    ("feed", "feed publish"),
];

/// The Markdown tables of `bench run` results (one object per target, as `--json` prints):
/// throughput against the baselines, then latency and where the time went.
pub fn table(results: &[Value]) -> String {
    let mut out = String::new();
    out.push_str("| workload | pipeline | tx/s | vs baseline (parallel recovery) | vs baseline (sequential recovery) | CPU µs/tx | Mgas/s |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for r in results {
        // Open loop: the rate was chosen, so a ratio to the baselines' maximum says nothing.
        let ratio = |key: &str| match r["mode"].as_str() {
            Some("open") => "–".to_string(),
            _ => format!("{:.2}x", num(r, key)),
        };
        out.push_str(&format!(
            "| {} | ours, {} (WAL fsync + NOMT, persisted) | {:.0} | {} | {} | {:.1} | {:.1} |\n",
            text(r, "workload"),
            label(r),
            num(r, "ours"),
            ratio("ratio"),
            ratio("ratio_vs_sequential_recovery"),
            num(r, "cpu_us_per_tx"),
            num(r, "gas_per_s") / 1e6,
        ));
    }
    for r in per_cpu_count(results) {
        let stages = &r["baseline_stages_us_per_tx"];
        out.push_str(&format!(
            "| {} | baseline, parallel recovery (in memory, nothing persisted){} | {:.0} | | | recover {:.1} + execute {:.1} + MPT root {:.1} µs/tx (wall) | |\n",
            text(r, "workload"),
            cpus_suffix(r),
            num(r, "baseline"),
            num(stages, "recover"),
            num(stages, "execute"),
            num(stages, "root"),
        ));
        out.push_str(&format!(
            "| {} | baseline, sequential recovery (in memory, nothing persisted){} | {:.0} | | | | |\n",
            text(r, "workload"),
            cpus_suffix(r),
            num(r, "baseline_sequential_recovery"),
        ));
    }
    out.push_str("\nLatency, submission to receipt (µs), and the node's CPU time per transaction by stage (µs: each stage's thread CPU clock; block seal includes NOMT's threads, JIT and feed are their threads):\n\n");
    out.push_str("| pipeline | p50 | p90 | p99 | p99.9 | max | mini-block seal p50 / p99 | admit | execute | diff | WAL | block seal | JIT | feed | stages sum | CPU | stages / CPU | diff B/tx | peak RSS MiB |\n");
    out.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let l = &r["latency_us"];
        let st = &r["stages_us_per_tx"];
        let seal = &r["seal_latency_us"];
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.1} | {:.0} |\n",
            label(r),
            l["p50"],
            l["p90"],
            l["p99"],
            l["p999"],
            l["max"],
            num(seal, "p50"),
            num(seal, "p99"),
            num(st, "admit"),
            num(st, "execute"),
            num(st, "diff"),
            num(st, "wal"),
            num(st, "root"),
            num(st, "jit"),
            num(st, "feed"),
            num(st, "sum"),
            num(r, "cpu_us_per_tx"),
            num(st, "share_of_cpu") * 100.0,
            num(r, "diff_bytes_per_tx"),
            num(r, "peak_rss_mib"),
        ));
    }
    out.push_str(
        "\nCPU per transaction by thread group (µs; these add up to the process's CPU time):\n\n",
    );
    let groups = thread_groups(results);
    out.push_str(&format!("| pipeline | {} | all |\n", groups.join(" | ")));
    out.push_str(&format!("|---|{}---:|\n", "---:|".repeat(groups.len())));
    for r in results {
        let by = &r["cpu_us_per_tx_by_thread"];
        let cells: Vec<String> = groups
            .iter()
            .map(|g| by[g.as_str()].as_f64().map_or("–".to_string(), |v| format!("{v:.1}")))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {:.1} |\n",
            label(r),
            cells.join(" | "),
            num(r, "cpu_us_per_tx")
        ));
    }
    out
}

/// The thread groups of these results, the costliest (in the first result) first.
fn thread_groups(results: &[Value]) -> Vec<String> {
    let mut groups: Vec<(String, f64)> = Vec::new();
    for r in results {
        if let Some(by) = r["cpu_us_per_tx_by_thread"].as_object() {
            for (g, v) in by {
                match groups.iter_mut().find(|(name, _)| name == g) {
                    Some(entry) => entry.1 = entry.1.max(v.as_f64().unwrap_or(0.0)),
                    None => groups.push((g.clone(), v.as_f64().unwrap_or(0.0))),
                }
            }
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups.into_iter().map(|(g, _)| g).collect()
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

/// Writes `results.json`, `summary.md` and the plots (`throughput.svg`, `latency_cdf.svg`,
/// `stages.svg`, `cpu.svg`) into `dir` (created if missing).
pub fn write_dir(dir: &Path, results: &[Value]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)?)?;
    let plots = "\n![throughput](throughput.svg)\n![latency CDF](latency_cdf.svg)\n![time per stage](stages.svg)\n![CPU by thread](cpu.svg)\n";
    std::fs::write(
        dir.join("summary.md"),
        format!("{}\n{}{plots}", header(results), table(results)),
    )?;
    let plot_error = |e: String| std::io::Error::other(format!("plot: {e}"));
    throughput_plot(&dir.join("throughput.svg"), results).map_err(plot_error)?;
    latency_plot(&dir.join("latency_cdf.svg"), results).map_err(plot_error)?;
    stages_plot(&dir.join("stages.svg"), results).map_err(plot_error)?;
    cpu_plot(&dir.join("cpu.svg"), results).map_err(plot_error)?;
    if per_cpu_count(results).len() > 1 {
        cpus_plot(&dir.join("throughput_vs_cpus.svg"), results).map_err(plot_error)?;
    }
    Ok(())
}

/// tx/s against the CPUs a run was given (`--cpus`): one line per target, and the baselines.
fn cpus_plot(path: &Path, results: &[Value]) -> PlotResult {
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut add = |name: String, point: (f64, f64)| match lines.iter_mut().find(|(n, _)| *n == name)
    {
        Some((_, points)) => points.push(point),
        None => lines.push((name, vec![point])),
    };
    for r in results {
        let cpus = r["cpus"].as_f64().unwrap_or(f64::NAN);
        let name = match r["offered_rate"].as_f64() {
            Some(rate) => format!("ours, {}, open loop at {rate:.0} tx/s", text(r, "target")),
            None => format!("ours, {}", text(r, "target")),
        };
        add(name, (cpus, num(r, "ours")));
    }
    for r in per_cpu_count(results) {
        let cpus = r["cpus"].as_f64().unwrap_or(f64::NAN);
        add("baseline, parallel recovery".into(), (cpus, num(r, "baseline")));
        add("baseline, sequential recovery".into(), (cpus, num(r, "baseline_sequential_recovery")));
    }
    for (_, points) in &mut lines {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let max_cpus = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0)).fold(2.0, f64::max);
    let max_tps = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Throughput against CPUs", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1f64..max_cpus, 0f64..max_tps * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("CPUs")
        .y_desc("tx/s")
        .x_labels(max_cpus as usize)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

/// Writes the results of `bench parallel` (one per workload and thread count): `results.json`,
/// `summary.md`, and `scaling.svg` (speed-up over sequential revm against threads).
pub fn write_scaling_dir(dir: &Path, results: &[Value]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)?)?;
    let mut md = String::new();
    if let Some(r) = results.first() {
        md.push_str(&format!(
            "machine: {} ({} CPUs, {} NUMA node(s)), rev {}\ncommand: {}\n\n",
            text(&r["machine"], "cpu"),
            r["machine"]["cpus"],
            r["machine"]["numa_nodes"],
            text(&r["machine"], "revision"),
            text(r, "command"),
        ));
    }
    md.push_str("| workload | threads | sequential tx/s | parallel tx/s | speed-up |\n|---|---:|---:|---:|---:|\n");
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x |\n",
            text(r, "workload"),
            r["threads"],
            num(r, "baseline"),
            num(r, "ours"),
            num(r, "ratio"),
        ));
    }
    md.push_str("\n![speed-up against threads](scaling.svg)\n");
    std::fs::write(dir.join("summary.md"), md)?;
    scaling_plot(&dir.join("scaling.svg"), results)
        .map_err(|e| std::io::Error::other(format!("plot: {e}")))
}

type PlotResult = Result<(), String>;

/// One coloured line per named series, and the legend.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: Vec<(String, Vec<(f64, f64)>)>,
    legend_at: SeriesLabelPosition,
) -> PlotResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Speed-up against threads, one line per workload, with the break-even line.
fn scaling_plot(path: &Path, results: &[Value]) -> PlotResult {
    let mut workloads: Vec<String> = Vec::new();
    for r in results {
        let w = text(r, "workload").to_string();
        if !workloads.contains(&w) {
            workloads.push(w);
        }
    }
    let max_threads = results.iter().filter_map(|r| r["threads"].as_f64()).fold(2.0, f64::max);
    let max_ratio =
        results.iter().map(|r| num(r, "ratio")).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Parallel executor: speed-up over sequential revm", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..max_threads, 0f64..(max_ratio * 1.15).max(max_threads))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .x_labels(max_threads as usize)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("speed-up (sequential time / parallel time)")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new([(1.0, 1.0), (max_threads, 1.0)], BLACK.mix(0.5)))
        .map_err(err)?
        .label("break-even")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .draw_series(LineSeries::new([(1.0, 1.0), (max_threads, max_threads)], BLACK.mix(0.2)))
        .map_err(err)?
        .label("linear")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.2)));
    let lines: Vec<(String, Vec<(f64, f64)>)> = workloads
        .iter()
        .map(|workload| {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| text(r, "workload") == workload)
                .filter_map(|r| Some((r["threads"].as_f64()?, num(r, "ratio"))))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (workload.clone(), points)
        })
        .collect();
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Horizontal bars: tx/s of each target and of the two baselines.
fn throughput_plot(path: &Path, results: &[Value]) -> PlotResult {
    let mut bars: Vec<(String, f64)> =
        results.iter().map(|r| (format!("ours, {}", label(r)), num(r, "ours"))).collect();
    let ours = bars.len();
    for r in per_cpu_count(results) {
        let cpus = cpus_suffix(r);
        bars.push((format!("baseline, parallel recovery{cpus}"), num(r, "baseline")));
        bars.push((
            format!("baseline, sequential recovery{cpus}"),
            num(r, "baseline_sequential_recovery"),
        ));
    }
    let max = bars.iter().map(|b| b.1).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.1;
    let title = format!(
        "{}: transactions per second",
        results.first().map_or("?", |r| text(r, "workload"))
    );
    let root = SVGBackend::new(path, (900, 120 + 50 * bars.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..max, (0..bars.len().max(1) - 1).into_segmented())
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("tx/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let color = if i < ours { Palette99::pick(0) } else { Palette99::pick(1) };
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))],
                color.mix(0.8).filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(err)?;
    root.present().map_err(err)
}

/// The latency CDF of each target (latency on a log axis).
fn latency_plot(path: &Path, results: &[Value]) -> PlotResult {
    let curves: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| {
            let points = r["latency_cdf_us"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[1].as_f64()?.max(1.0), p[0].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            (label(r), points)
        })
        .collect();
    let max = curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency, submission to receipt (CDF)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..max).log_scale(), 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency, µs (log)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("share of transactions")
        .draw()
        .map_err(err)?;
    draw_lines(&mut chart, curves, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)
}

/// Stacked horizontal bars: µs per transaction in each stage, per target, and the baseline's
/// stages.
fn stages_plot(path: &Path, results: &[Value]) -> PlotResult {
    let mut rows: Vec<(String, Vec<f64>)> = results
        .iter()
        .map(|r| {
            let st = &r["stages_us_per_tx"];
            (format!("ours, {}", label(r)), STAGES.iter().map(|(k, _)| num(st, k)).collect())
        })
        .collect();
    if let Some(r) = results.first() {
        let b = &r["baseline_stages_us_per_tx"];
        rows.push((
            "baseline (wall time)".into(),
            vec![num(b, "recover"), num(b, "execute"), 0.0, 0.0, num(b, "root"), 0.0, 0.0],
        ));
    }
    let legend: Vec<String> = STAGES.iter().map(|(_, name)| name.to_string()).collect();
    stacked_plot(
        path,
        "Time per transaction by stage (µs: ours CPU, the baseline's wall)",
        &rows,
        &legend,
    )
}

/// Stacked horizontal bars: CPU µs per transaction by thread group, per target.
fn cpu_plot(path: &Path, results: &[Value]) -> PlotResult {
    let groups = thread_groups(results);
    let rows: Vec<(String, Vec<f64>)> = results
        .iter()
        .map(|r| {
            let by = &r["cpu_us_per_tx_by_thread"];
            (format!("ours, {}", label(r)), groups.iter().map(|g| num(by, g)).collect())
        })
        .collect();
    stacked_plot(path, "CPU per transaction by thread group (µs)", &rows, &groups)
}

/// Rows of stacked segments, one colour per segment kind, with a legend.
fn stacked_plot(
    path: &Path,
    title: &str,
    rows: &[(String, Vec<f64>)],
    legend: &[String],
) -> PlotResult {
    let total = |v: &Vec<f64>| v.iter().filter(|x| x.is_finite()).sum::<f64>();
    let max = rows.iter().map(|r| total(&r.1)).fold(1.0, f64::max) * 1.1;
    let root =
        SVGBackend::new(path, (900, 200 + 50 * rows.len() as u32 + 20 * legend.len() as u32))
            .into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..max, (0..rows.len().max(1) - 1).into_segmented())
        .map_err(err)?;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("µs per transaction")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    for (segment, name) in legend.iter().enumerate() {
        let color = Palette99::pick(segment).to_rgba();
        let bars: Vec<Rectangle<(f64, SegmentValue<usize>)>> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (_, values))| {
                let start: f64 = values[..segment].iter().filter(|x| x.is_finite()).sum();
                let width = values.get(segment).copied().unwrap_or(f64::NAN);
                (width.is_finite() && width > 0.0).then(|| {
                    let mut bar = Rectangle::new(
                        [
                            (start, SegmentValue::Exact(i)),
                            (start + width, SegmentValue::Exact(i + 1)),
                        ],
                        color.filled(),
                    );
                    bar.set_margin(6, 6, 0, 0);
                    bar
                })
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Reads the results of a report directory.
pub fn read_dir(dir: &Path) -> Result<Vec<Value>, String> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Two reports side by side, matched by workload, target and offered load. Results only one
/// report has are listed with a dash for the other.
pub fn compare(a: &[Value], b: &[Value]) -> String {
    let mut out = String::from(
        "| workload | target | A tx/s | B tx/s | B / A | A vs its baseline | B vs its baseline | A p50 / p99 µs | B p50 / p99 µs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let same = |x: &Value, y: &Value| {
        x["workload"] == y["workload"]
            && x["target"] == y["target"]
            && x["offered_rate"] == y["offered_rate"]
            && x["cpus"] == y["cpus"]
    };
    let cell = |r: Option<&Value>, f: &dyn Fn(&Value) -> String| r.map_or("–".to_string(), f);
    let latency =
        |r: &Value| match (r["latency_us"]["p50"].as_u64(), r["latency_us"]["p99"].as_u64()) {
            (Some(p50), Some(p99)) => format!("{p50} / {p99}"),
            _ => "–".to_string(),
        };
    let rows = a
        .iter()
        .map(|ra| (Some(ra), b.iter().find(|rb| same(ra, rb))))
        .chain(b.iter().filter(|rb| !a.iter().any(|ra| same(ra, rb))).map(|rb| (None, Some(rb))));
    for (ra, rb) in rows {
        let any = ra.or(rb).expect("one side");
        let ratio = match (ra, rb) {
            (Some(ra), Some(rb)) => format!("{:.2}x", num(rb, "ours") / num(ra, "ours")),
            _ => "–".to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {ratio} | {} | {} | {} | {} |\n",
            text(any, "workload"),
            label(any),
            cell(ra, &|r| format!("{:.0}", num(r, "ours"))),
            cell(rb, &|r| format!("{:.0}", num(r, "ours"))),
            cell(ra, &|r| format!("{:.2}x", num(r, "ratio"))),
            cell(rb, &|r| format!("{:.2}x", num(r, "ratio"))),
            cell(ra, &latency),
            cell(rb, &latency),
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
        let mut b = vec![result("inprocess", 150.0, 200.0), result("ws", 90.0, 200.0)];
        b[0]["latency_us"] = serde_json::json!({"p50": 700, "p99": 9000});
        let side = compare(&a, &b);
        assert!(
            side.contains(
                "| erc20 | inprocess | 100 | 150 | 1.50x | 0.50x | 0.75x | – | 700 / 9000 |"
            ),
            "{side}"
        );
        // Only in B: listed, with nothing to compare it with.
        assert!(side.contains("| erc20 | ws | – | 90 | – | – | 0.45x | – | – |"), "{side}");
        assert!(read_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_scaling_report_plots_each_workload_against_threads() {
        let dir = tempfile::tempdir().unwrap();
        let results: Vec<Value> =
            [("erc20", 1, 1.0), ("erc20", 2, 0.8), ("compute", 1, 1.0), ("compute", 2, 1.9)]
                .iter()
                .map(|(w, t, ratio)| {
                    serde_json::json!({"workload": w, "threads": t, "ours": 100.0 * ratio,
                    "baseline": 100.0, "ratio": ratio, "command": "bench parallel",
                    "machine": {"cpu": "x", "cpus": 2, "numa_nodes": 1, "revision": "r"}})
                })
                .collect();
        write_scaling_dir(dir.path(), &results).unwrap();
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.contains("| compute | 2 | 100 | 190 | 1.90x |"), "{md}");
        let svg = std::fs::read_to_string(dir.path().join("scaling.svg")).unwrap();
        for legend in ["compute", "erc20", "break-even", "linear"] {
            assert!(svg.contains(&format!("\n{legend}\n</text>")), "{legend} in the legend");
        }
        assert_eq!(read_dir(dir.path()).unwrap(), results);
    }
}
