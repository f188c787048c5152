//! The `bench` binary.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use bench::{
    baseline, machine, median, report,
    target::{self, RunSettings},
    tps,
    workload::{self, Kind},
};
use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Benchmarks and conformance checks for the sequencer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// The sequencer as a library.
    Inprocess,
    /// Through its JSON-RPC server, HTTP batches.
    Rpc,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput of a workload end to end (recovery, execution, WAL fsync, NOMT root), against
    /// the standard pipeline (recovery, sequential revm, MPT root per block) in the same run.
    Run {
        /// Workload.
        workload: Kind,
        /// Funded accounts.
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Transactions per run.
        #[arg(long, default_value_t = 100_000)]
        txs: usize,
        /// Transactions per block in the baseline.
        #[arg(long, default_value_t = 10_000)]
        block_txs: usize,
        /// Runs per measurement; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Our targets to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [Target::Inprocess, Target::Rpc], value_enum)]
        targets: Vec<Target>,
        /// EVM block interval of our pipeline (the sequencer's default). The run ends when the
        /// block holding the last transaction is sealed, so a run waits up to one interval more.
        #[arg(long, default_value = "1s", value_parser = sequencer::config::duration_str::parse)]
        block_time: Duration,
        /// Transactions per submission (in-process) or JSON-RPC batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Concurrent JSON-RPC connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Print one JSON object per result instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write a report directory (results.json, summary.md).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Two report directories side by side.
    Compare {
        /// The first report directory.
        a: PathBuf,
        /// The second.
        b: PathBuf,
    },
    /// Latency of one client sending transfers one at a time, each awaited: over
    /// `realtime_sendRawTransaction` and over send + receipt polling.
    Latency {
        /// Transfers per method.
        #[arg(long, default_value_t = 2000)]
        txs: usize,
        /// Receipt polling interval of the send + poll client.
        #[arg(long, default_value = "1ms", value_parser = sequencer::config::duration_str::parse)]
        poll: Duration,
        /// EVM block interval.
        #[arg(long, default_value = "1s", value_parser = sequencer::config::duration_str::parse)]
        block_time: Duration,
        /// Print one JSON object per method.
        #[arg(long)]
        json: bool,
    },
    /// Run Ethereum GeneralStateTests (files or directories) through the execution path and
    /// check each post-state root and logs hash.
    Statetest {
        /// Test files or directories (searched recursively for .json).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print one JSON object with the counts and every failure.
        #[arg(long)]
        json: bool,
        /// Print at most this many failures (0: all).
        #[arg(long, default_value_t = 50)]
        show: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Statetest { paths, json, show } => statetest(&paths, json, show),
        Command::Compare { a, b } => match (report::read_dir(&a), report::read_dir(&b)) {
            (Ok(ra), Ok(rb)) => {
                println!("A: {}\nB: {}\n", a.display(), b.display());
                print!("{}", report::compare(&ra, &rb));
                ExitCode::SUCCESS
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Latency { txs, poll, block_time, json } => {
            match latency(txs, poll, block_time, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            workload,
            accounts,
            txs,
            block_txs,
            runs,
            seed,
            targets,
            block_time,
            batch,
            connections,
            json,
            out,
        } => {
            let settings = RunSettings {
                block_time,
                mini_block_time: sequencer::Config::default().blocks.mini_block_interval,
                batch,
                connections,
            };
            match run(
                workload,
                accounts,
                txs,
                block_txs,
                runs.max(1),
                seed,
                &targets,
                &settings,
                json,
                out.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn latency(
    txs: usize,
    poll: Duration,
    block_time: Duration,
    json: bool,
) -> Result<(), target::RunError> {
    use bench::latency::{Method, measure};
    let machine = machine::describe();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    // One sender per transfer keeps every transaction independent of the one before.
    let prepared = workload::prepare(Kind::Eth, 11, txs, txs);
    let settings = RunSettings {
        block_time,
        mini_block_time: sequencer::Config::default().blocks.mini_block_interval,
        batch: 1,
        connections: 1,
    };
    if !json {
        println!(
            "machine: {} ({} CPUs), Linux {}, rev {}",
            machine.cpu, machine.cpus, machine.kernel, machine.revision
        );
        println!("command: {command}");
        println!("| method | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | transfers |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }
    for method in [Method::Realtime, Method::SendAndPoll] {
        let p = measure(&prepared, &settings, method, poll)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"workload": "latency", "result": p, "machine": machine, "command": command})
            );
        } else {
            println!(
                "| {:?} | {} | {} | {} | {} | {} | {} |",
                p.method, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us, p.count
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    kind: Kind,
    accounts: usize,
    txs: usize,
    block_txs: usize,
    runs: usize,
    seed: u64,
    targets: &[Target],
    settings: &RunSettings,
    json: bool,
    out: Option<&std::path::Path>,
) -> Result<(), target::RunError> {
    let machine = machine::describe();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let prepared = workload::prepare(kind, seed, accounts, txs);
    if !json {
        println!(
            "machine: {} ({} CPUs, {} NUMA node(s), {:.1} GiB, {} huge pages), Linux {}, rev {}",
            machine.cpu,
            machine.cpus,
            machine.numa_nodes,
            machine.memory_gib,
            machine.hugepages,
            machine.kernel,
            machine.revision
        );
        println!("command: {command}");
        println!(
            "workload: {kind:?}, {accounts} accounts, {txs} transactions signed in {:.1} s; median of {runs} runs",
            started.elapsed().as_secs_f64()
        );
    }

    let measure_baseline = |parallel: bool| {
        let mut all: Vec<baseline::StageTimes> =
            (0..runs).map(|_| baseline::run(&prepared, block_txs, parallel)).collect();
        all.sort_by_key(|t| t.total);
        all[all.len() / 2]
    };
    let base_par = measure_baseline(true);
    let base_seq = measure_baseline(false);
    let base_par_tps = tps(txs, base_par.total);
    let base_seq_tps = tps(txs, base_seq.total);

    let mut results = Vec::new();
    for target in targets {
        let mut elapsed = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let result = match target {
                Target::Inprocess => target::inprocess(&prepared, settings)?,
                Target::Rpc => target::rpc(&prepared, settings)?,
            };
            elapsed.push(result.elapsed);
            cpu.push(result.cpu);
        }
        let ours = tps(txs, median(&mut elapsed));
        let cpu_us = median(&mut cpu).as_secs_f64() * 1e6 / txs as f64;
        let name = match target {
            Target::Inprocess => "inprocess",
            Target::Rpc => "rpc",
        };
        let per_tx = |d: Duration| d.as_secs_f64() * 1e6 / txs as f64;
        let result = serde_json::json!({
            "workload": kind,
            "target": name,
            "ours": ours,
            "baseline": base_par_tps,
            "baseline_name": "standard pipeline, recovery on all cores",
            "unit": "tx/s",
            "ratio": ours / base_par_tps,
            "ratio_vs_sequential_recovery": ours / base_seq_tps,
            "baseline_sequential_recovery": base_seq_tps,
            "cpu_us_per_tx": cpu_us,
            "runs": runs,
            "accounts": accounts,
            "txs": txs,
            "settings": settings,
            "baseline_stages_us_per_tx": {
                "recover": per_tx(base_par.recover),
                "execute": per_tx(base_par.execute),
                "root": per_tx(base_par.root),
            },
            "machine": machine,
            "command": command,
        });
        if json {
            println!("{result}");
        }
        results.push(result);
    }
    if !json {
        println!();
        print!("{}", report::table(&results));
    }
    if let Some(dir) = out {
        report::write_dir(dir, &results).map_err(|e| target::RunError::Io(e.to_string()))?;
        if !json {
            println!("report: {}", dir.display());
        }
    }
    Ok(())
}

fn statetest(paths: &[PathBuf], json: bool, show: usize) -> ExitCode {
    let files = bench::statetest::collect_files(paths);
    if files.is_empty() {
        eprintln!("error: no .json state tests under {paths:?}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let summary = match bench::statetest::run_files(&files) {
        Ok(summary) => summary,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string(&summary).expect("summary serializes"));
    } else {
        let limit = if show == 0 { usize::MAX } else { show };
        for failure in summary.failed.iter().take(limit) {
            println!(
                "FAIL {} {} [{} #{}]: {}",
                failure.file, failure.test, failure.fork, failure.index, failure.reason
            );
        }
        for (file, reason) in &summary.unreadable {
            println!("SKIP {file}: not expressible as a state test: {reason}");
        }
        for name in &summary.skipped_tests {
            let reason = bench::statetest::SKIPPED_TESTS
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, r)| r);
            println!("SKIP {name}: {reason}");
        }
        println!(
            "statetest: {} files in {:.1} s; skipped: {} cases of forks revm lacks, {} files, {} tests",
            files.len(),
            started.elapsed().as_secs_f64(),
            summary.skipped,
            summary.unreadable.len(),
            summary.skipped_tests.len()
        );
        println!("{} passed, {} failed", summary.passed, summary.failed.len());
    }
    if summary.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
