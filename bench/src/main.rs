//! The `bench` binary.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use bench::{
    baseline, machine, progress, report,
    target::{self, RunSettings, Target},
    workload::{self, Kind},
};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Benchmarks and conformance checks for the sequencer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// Our targets to measure: inprocess (the library), rpc (HTTP batches), ws
        /// (WebSocket batches), realtime (`realtime_sendRawTransaction`, one call per
        /// transaction, `--connections` in flight).
        #[arg(long, value_delimiter = ',', default_values_t = [Target::Inprocess, Target::Rpc], value_enum)]
        targets: Vec<Target>,
        /// Open loop: send this many transactions per second on a fixed schedule (latency
        /// under load; a transaction's latency counts from when it was due). Default: closed
        /// loop, as fast as the node takes them.
        #[arg(long)]
        rate: Option<f64>,
        /// `blocks.mini_block_gather` of our pipeline (default: the sequencer's).
        #[arg(long, value_parser = sequencer::config::duration_str::parse)]
        mini_block_gather: Option<Duration>,
        /// Also measure on fewer cores: for each N, every thread of the run (the baselines'
        /// and our pipeline's alike) may only use the first N CPUs this process may use. One
        /// result per target and N; with two or more, the report plots throughput against
        /// CPUs. Default: all of them.
        #[arg(long, value_delimiter = ',')]
        cpus: Vec<usize>,
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
        /// Build no block witnesses (`feed.witnesses = false`), to measure what they cost.
        #[arg(long)]
        no_witnesses: bool,
        /// Also write a report directory: results.json, summary.md, and plots (throughput,
        /// latency CDF, time per stage) as SVG.
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
    /// Random state reads over a large state in huge pages vs plain pages (each page kind in
    /// its own child process of this run), and bytes per account and per storage slot.
    Memory {
        /// Accounts in the state.
        #[arg(long, default_value_t = 10_000_000)]
        accounts: u64,
        /// Storage slots (ten per account on the first accounts).
        #[arg(long, default_value_t = 2_000_000)]
        slots: u64,
        /// Random reads per run (accounts, then slots).
        #[arg(long, default_value_t = 5_000_000)]
        reads: u64,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// State seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Page policies to measure; `off` (plain pages) is the baseline and always measured.
        #[arg(long, value_delimiter = ',', default_values_t = ["thp".to_string(), "2m".to_string()])]
        pages: Vec<String>,
        /// As root, raise /proc/sys/vm/nr_hugepages for the `2m` run if too few pages are free,
        /// and put it back afterwards.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        reserve: bool,
        /// Print one JSON object per result.
        #[arg(long)]
        json: bool,
    },
    /// The parallel executor against sequential revm on the same blocks (lockstep, diffs
    /// checked equal): independent ETH and ERC-20 transfers, AMM swaps over many pools and
    /// one hot pool, and a fully dependent chain (one sender).
    Parallel {
        /// Worker threads, one result per count.
        #[arg(long, value_delimiter = ',', default_values_t = [2usize])]
        threads: Vec<usize>,
        /// Workloads: eth, erc20, amm, amm-hot, chain, mix, compute (snailtracer calls; give it
        /// fewer transactions and smaller blocks).
        #[arg(long, value_delimiter = ',', default_values_t = ["eth".to_string(), "erc20".to_string(), "amm".to_string(), "amm-hot".to_string(), "chain".to_string()])]
        workloads: Vec<String>,
        /// Funded accounts.
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Transactions per run.
        #[arg(long, default_value_t = 20_000)]
        txs: usize,
        /// Transactions per block.
        #[arg(long, default_value_t = 1000)]
        block_txs: usize,
        /// Runs; medians are reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The engine's gate: blocks predicted to average less gas per transaction run
        /// sequentially. 0 runs every block on the workers (measures the engine itself).
        #[arg(long, default_value_t = sequencer::parallel::ExecutorConfig::default().min_parallel_gas)]
        min_parallel_gas: u64,
        /// Print one JSON object per result.
        #[arg(long)]
        json: bool,
        /// Also write a report directory: results.json, summary.md and the speed-up against
        /// threads per workload (scaling.svg).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// One core verifying blocks statelessly from their witnesses (the `prover` crate) against
    /// the sequencer producing them on one core (execution, apply, NOMT commit with witness),
    /// and witness bytes per transaction.
    Prover {
        /// Workloads: eth, erc20, amm, amm-hot, mix.
        #[arg(long, value_delimiter = ',', default_values_t = ["eth".to_string(), "erc20".to_string(), "amm".to_string()])]
        workloads: Vec<String>,
        /// Funded accounts.
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Transactions per workload.
        #[arg(long, default_value_t = 100_000)]
        txs: usize,
        /// Transactions per block.
        #[arg(long, default_value_t = 1_000)]
        block_txs: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One JSON object per workload.
        #[arg(long)]
        json: bool,
    },
    /// Bytes per transaction of the state-diff stream (memstate's codec) against the RLP of
    /// the changed accounts and slots, and a full node's decode + apply rate against the
    /// sequencer's execution, on the same blocks.
    Statesync {
        /// Workloads: eth, erc20, amm, amm-hot, mix.
        #[arg(long, value_delimiter = ',', default_values_t = ["eth".to_string(), "erc20".to_string(), "amm".to_string()])]
        workloads: Vec<String>,
        /// Funded accounts (all known to the receiver: the steady state).
        #[arg(long, default_value_t = 100_000)]
        accounts: usize,
        /// Transactions per workload.
        #[arg(long, default_value_t = 1_000_000)]
        txs: usize,
        /// Transactions per message: a mini-block at 100k tx/s and the default 10 ms interval.
        #[arg(long, default_value_t = 1000)]
        block_txs: usize,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train the codec's zstd dictionary on these workloads instead (seed + 1000, so that
        /// measured runs are not the training set, in messages of 10, 100 and `--block-txs`
        /// transactions) and write it to FILE.
        #[arg(long, value_name = "FILE")]
        train_dict: Option<PathBuf>,
        /// Print one JSON object per result.
        #[arg(long)]
        json: bool,
    },
    /// One page kind of `bench memory` (run by it in a child process).
    #[command(hide = true)]
    MemoryChild {
        #[arg(long)]
        pages: String,
        #[arg(long)]
        accounts: u64,
        #[arg(long)]
        slots: u64,
        #[arg(long)]
        reads: u64,
        #[arg(long)]
        runs: usize,
        #[arg(long)]
        seed: u64,
    },
    /// revm's interpreter vs the JIT on the same transactions (same run, alternating, medians;
    /// compile time and code size reported apart). Arguments: state-test JSON files (one case
    /// per data entry), `FILE.hex[@CALLDATA]` runtime code, `burntpix[@ITERATIONS]` (revm's
    /// burntpix contracts, `run(0, ITERATIONS)`, default 20 000), or `erc20` (a token transfer).
    Jit {
        /// Cases (see above). Default: the compute fixtures in bench/fixtures and erc20.
        cases: Vec<String>,
        /// Timed runs per engine (the median is reported).
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// LLVM optimisation level of the compiled code.
        #[arg(long, value_enum, default_value = "o2")]
        opt_level: OptArg,
        /// One JSON object per case.
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
        /// Run the cases through the parallel executor's worker path instead of the
        /// sequential one.
        #[arg(long, conflicts_with = "jit")]
        parallel: bool,
        /// Run every contract as JIT-compiled code (compiled on its first call) and report
        /// how many contracts were compiled and how many fell back to the interpreter, and why.
        #[arg(long)]
        jit: bool,
    },
    /// Ethereum BlockchainTests (valid blocks) through the prover's stateless path: each block
    /// executed as the sequencer does (its receipts must match Ethereum's header), committed
    /// with its witness, and verified from the witness alone. Counts what was verified and
    /// what does not fit this chain (withdrawals, blobs, uncles).
    Blocktest {
        /// Test files or directories (searched recursively for .json).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print one JSON object with the counts and every failure.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Named, so that `bench run` can tell sender recovery's CPU time from the node's threads.
    let _ = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("rayon-{i}")).build_global();
    // The allocator setting a sequencer starts with (`memory.allocator_purge_ms`), for the whole
    // process: the baselines and our pipeline run in one process and get the same allocator.
    numa::set_allocator_purge_delay(sequencer::Config::default().memory.allocator_purge_ms);
    match cli.command {
        Command::Prover { workloads, accounts, txs, block_txs, seed, json } => {
            match prover_bench(&workloads, accounts, txs, block_txs.max(1), seed, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Statesync { workloads, accounts, txs, block_txs, seed, train_dict, json } => {
            let result = match train_dict {
                Some(path) => train_dict_to(&path, &workloads, accounts, txs, block_txs, seed),
                None => statesync(&workloads, accounts, txs, block_txs.max(1), seed, json),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Parallel {
            threads,
            workloads,
            accounts,
            txs,
            block_txs,
            runs,
            seed,
            min_parallel_gas,
            json,
            out,
        } => {
            let sizes = (accounts, txs, block_txs, runs.max(1));
            let outputs = (json, out.as_deref());
            match parallel(&threads, &workloads, sizes, seed, min_parallel_gas, outputs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Memory { accounts, slots, reads, runs, seed, pages, reserve, json } => {
            match memory(accounts, slots, reads, runs.max(1), seed, &pages, reserve, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::MemoryChild { pages, accounts, slots, reads, runs, seed } => {
            let result = bench::memory::parse_policy(&pages).and_then(|policy| {
                bench::memory::child(policy, accounts, slots, reads, runs, seed)
            });
            match result {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).expect("result serializes"));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Jit { cases, runs, opt_level, json } => {
            match jit_bench(&cases, runs, opt_level, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Statetest { paths, json, show, parallel, jit } => {
            let engine = if parallel {
                bench::statetest::Engine::Parallel
            } else if jit {
                bench::statetest::Engine::Jit
            } else {
                bench::statetest::Engine::Sequential
            };
            statetest(&paths, json, show, engine)
        }
        Command::Blocktest { paths, json } => {
            let files = bench::statetest::collect_files(&paths);
            let summary = bench::blocktest::run_files(&files);
            if json {
                println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            } else {
                for (file, test, block, reason) in &summary.failed {
                    println!("FAIL {file} {test} block {block}: {reason}");
                }
                println!(
                    "{} tests: {} blocks verified statelessly, {} tests failed, {} skipped {:?}",
                    summary.tests,
                    summary.verified,
                    summary.failed.len(),
                    summary.skipped.values().sum::<usize>(),
                    summary.skipped
                );
            }
            if summary.failed.is_empty() && summary.verified > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
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
            no_witnesses,
            rate,
            mini_block_gather,
            cpus,
        } => {
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                eprintln!("error: --rate must be a positive number of transactions per second");
                return ExitCode::from(2);
            }
            let defaults = sequencer::Config::default().blocks;
            let settings = RunSettings {
                block_time,
                mini_block_time: defaults.mini_block_interval,
                mini_block_gather: mini_block_gather.unwrap_or(defaults.mini_block_gather),
                batch,
                connections,
                witnesses: !no_witnesses,
                rate,
            };
            match run(
                workload,
                accounts,
                txs,
                block_txs,
                runs.max(1),
                seed,
                (&targets, &cpus),
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
    let defaults = sequencer::Config::default().blocks;
    let settings = RunSettings {
        block_time,
        mini_block_time: defaults.mini_block_interval,
        mini_block_gather: defaults.mini_block_gather,
        batch: 1,
        connections: 1,
        witnesses: true,
        rate: None,
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
    (targets, cpu_counts): (&[Target], &[usize]),
    settings: &RunSettings,
    json: bool,
    out: Option<&std::path::Path>,
) -> Result<(), target::RunError> {
    let allowed = numa::current_affinity();
    if let Some(&n) = cpu_counts.iter().find(|&&n| n == 0 || n > allowed.len()) {
        return Err(target::RunError::Io(format!(
            "--cpus {n}: this process may use 1 to {} CPUs",
            allowed.len()
        )));
    }
    let machine = machine::describe();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let spinner = progress::spinner(json, format!("signing {txs} transactions"));
    let prepared = workload::prepare(kind, seed, accounts, txs);
    spinner.finish_and_clear();
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
            "workload: {kind:?}, {accounts} accounts, {txs} transactions signed in {:.1} s; median of {runs} runs; {}",
            started.elapsed().as_secs_f64(),
            match settings.rate {
                Some(rate) => format!("open loop at {rate:.0} tx/s"),
                None => "closed loop".to_string(),
            }
        );
    }

    let counts: Vec<Option<usize>> = match cpu_counts {
        [] => vec![None],
        counts => counts.iter().map(|&n| Some(n)).collect(),
    };
    let io = |e: std::io::Error| target::RunError::Io(e.to_string());
    let mut results = Vec::new();
    for count in counts {
        let cpus = count.unwrap_or(allowed.len());
        if count.is_some() {
            numa::restrict_process(&allowed[..cpus]).map_err(io)?;
        }
        let measured = measure_on(
            &prepared,
            (kind, accounts, txs, block_txs, runs),
            targets,
            settings,
            json,
            (&machine, &command),
            (cpus, count.is_some()),
        );
        if count.is_some() {
            numa::restrict_process(&allowed).map_err(io)?;
        }
        results.extend(measured?);
    }
    if !json {
        println!();
        print!("{}", report::table(&results));
    }
    if let Some(dir) = out {
        report::write_dir(dir, &results).map_err(io)?;
        if !json {
            println!("report: {}", dir.display());
        }
    }
    Ok(())
}

/// The baselines and every target, on the CPUs this process may use now.
fn measure_on(
    prepared: &workload::Prepared,
    (kind, accounts, txs, block_txs, runs): (Kind, usize, usize, usize, usize),
    targets: &[Target],
    settings: &RunSettings,
    json: bool,
    (machine, command): (&machine::Machine, &str),
    (given, restricted): (usize, bool),
) -> Result<Vec<serde_json::Value>, target::RunError> {
    // What the kernel lets this thread use now, to check the restriction took.
    let cpus = bench::summary::Cpus { given, restricted, allowed: numa::current_affinity().len() };
    let spinner = progress::spinner(json, format!("baselines on {given} CPUs"));
    let measure_baseline = |parallel: bool| {
        let mut all: Vec<baseline::StageTimes> =
            (0..runs).map(|_| baseline::run(prepared, block_txs, parallel)).collect();
        all.sort_by_key(|t| t.total);
        all[all.len() / 2]
    };
    let base_par = measure_baseline(true);
    let base_seq = measure_baseline(false);
    spinner.finish_and_clear();

    let mut results = Vec::new();
    for &target in targets {
        let mut all = Vec::new();
        for i in 0..runs {
            let bar =
                progress::bar(json, txs as u64, format!("{} run {}/{runs}", target.name(), i + 1));
            let result = target::run(prepared, settings, target, &bar);
            bar.finish_and_clear();
            all.push(result?);
        }
        let result = bench::summary::of_runs(
            &all,
            bench::summary::Context {
                kind,
                target,
                settings,
                accounts,
                txs,
                base_par: &base_par,
                base_seq: &base_seq,
                machine,
                command,
                cpus,
            },
        );
        if json {
            println!("{result}");
        }
        results.push(result);
    }
    Ok(results)
}

fn parallel(
    threads: &[usize],
    workloads: &[String],
    (accounts, txs, block_txs, runs): (usize, usize, usize, usize),
    seed: u64,
    min_parallel_gas: u64,
    (json, out): (bool, Option<&std::path::Path>),
) -> Result<(), String> {
    let (machine, command) = machine_and_command(json);
    let mut results = Vec::new();
    if !json {
        println!(
            "{txs} transactions in blocks of {block_txs}, {accounts} accounts; median of {runs} runs; min_parallel_gas {min_parallel_gas}"
        );
        println!(
            "\n| workload | threads | sequential tx/s | parallel tx/s | speed-up | CPU s seq / par | re-executions per tx | blocks parallel / sequential |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    for name in workloads {
        let prepared = match name.as_str() {
            "eth" => workload::prepare(Kind::Eth, seed, accounts, txs),
            "erc20" => workload::prepare(Kind::Erc20, seed, accounts, txs),
            "amm" => workload::prepare(Kind::Amm, seed, accounts, txs),
            "amm-hot" => workload::prepare(Kind::AmmHot, seed, accounts, txs),
            "compute" => workload::prepare(Kind::Compute, seed, accounts, txs),
            "mix" => workload::prepare(Kind::Mix, seed, accounts, txs),
            // One account: every transaction depends on the one before (its nonce and balance).
            "chain" => workload::prepare(Kind::Eth, seed, 1, txs),
            other => return Err(format!("unknown workload {other:?}")),
        };
        for &n in threads {
            let r = bench::parallel::measure(
                &prepared,
                name,
                n.max(1),
                block_txs,
                runs,
                min_parallel_gas,
            )?;
            let tps = |s: f64| r.txs as f64 / s;
            let result = serde_json::json!({
                "workload": r.workload,
                "target": format!("parallel, {} threads", r.threads),
                "threads": r.threads,
                "ours": tps(r.parallel_s),
                "baseline": tps(r.sequential_s),
                "baseline_name": "sequential revm over memstate",
                "unit": "tx/s",
                "ratio": r.ratio,
                "result": r,
                "machine": machine,
                "command": command,
            });
            if json {
                println!("{result}");
            } else {
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.2} / {:.2} | {:.2} | {} / {} |",
                    r.workload,
                    r.threads,
                    tps(r.sequential_s),
                    tps(r.parallel_s),
                    r.ratio,
                    r.sequential_cpu_s,
                    r.parallel_cpu_s,
                    r.reexecutions_per_tx,
                    r.parallel_blocks,
                    r.sequential_blocks
                );
            }
            results.push(result);
        }
    }
    if let Some(dir) = out {
        report::write_scaling_dir(dir, &results).map_err(|e| e.to_string())?;
        if !json {
            println!("report: {}", dir.display());
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn memory(
    accounts: u64,
    slots: u64,
    reads: u64,
    runs: usize,
    seed: u64,
    pages: &[String],
    reserve: bool,
    json: bool,
) -> Result<(), String> {
    use bench::memory::{ChildResult, main_kind, pages_wanted, parse_policy};
    let median = |values: &[f64]| {
        if values.is_empty() { f64::NAN } else { bench::median(&mut values.to_vec()) }
    };
    let machine = machine::describe();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut policies = vec!["off".to_string()];
    for p in pages {
        parse_policy(p)?;
        if p != "off" && p != "plain" && !policies.contains(p) {
            policies.push(p.clone());
        }
    }
    if !json {
        println!(
            "machine: {} ({} CPUs, {} NUMA node(s), {:.1} GiB), Linux {}, rev {}",
            machine.cpu,
            machine.cpus,
            machine.numa_nodes,
            machine.memory_gib,
            machine.kernel,
            machine.revision
        );
        println!("command: {command}");
        println!(
            "state: {accounts} accounts, {slots} slots; {reads} random reads per run, median of {runs} runs, one thread"
        );
    }
    // Reserve 2 MiB pages for the `2m` child if root and short, and put the pool back after.
    const NR: &str = "/proc/sys/vm/nr_hugepages";
    let read_nr = || -> Option<u64> { std::fs::read_to_string(NR).ok()?.trim().parse().ok() };
    let mut restore = None;
    if reserve && policies.iter().any(|p| p == "2m") {
        let wanted = pages_wanted(accounts, slots);
        let free = numa::free_huge_pages(2 << 20);
        if let (true, Some(nr)) = (free < wanted, read_nr())
            && std::fs::write(NR, (nr + wanted - free).to_string()).is_ok()
        {
            restore = Some(nr);
            if !json {
                println!("reserved {} more 2 MiB pages (restored afterwards)", wanted - free);
            }
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut results: Vec<(String, ChildResult)> = Vec::new();
    let mut failure = None;
    for policy in &policies {
        let out = std::process::Command::new(&exe)
            .args(["memory-child", "--pages", policy])
            .args(["--accounts", &accounts.to_string(), "--slots", &slots.to_string()])
            .args(["--reads", &reads.to_string(), "--runs", &runs.to_string()])
            .args(["--seed", &seed.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            failure = Some(format!(
                "the {policy} run failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            break;
        }
        let parsed: ChildResult =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("{policy} run: {e}"))?;
        results.push((policy.clone(), parsed));
    }
    if let Some(nr) = restore {
        let _ = std::fs::write(NR, nr.to_string());
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let base = &results[0].1;
    let base_account = median(&base.account_read_ns);
    let base_slot = median(&base.slot_read_ns);
    if !json {
        println!(
            "\n| pages asked | pages got | account read ns | ratio | slot read ns | ratio | bytes/account | bytes/slot | build s |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    for (policy, r) in &results {
        let account = median(&r.account_read_ns);
        let slot = median(&r.slot_read_ns);
        if json {
            for (what, ours, baseline) in
                [("account_reads", account, base_account), ("slot_reads", slot, base_slot)]
            {
                println!(
                    "{}",
                    serde_json::json!({
                        "workload": format!("memory_{what}"),
                        "pages": policy,
                        "pages_got": main_kind(r),
                        "ours": ours,
                        "baseline": baseline,
                        "baseline_name": "plain 4 KiB pages",
                        "unit": "ns/read",
                        "ratio": baseline / ours,
                        "bytes_per_account": r.bytes_per_account,
                        "bytes_per_slot": r.bytes_per_slot,
                        "accounts": r.accounts,
                        "slots": r.slots,
                        "reads": reads,
                        "runs": runs,
                        "machine": machine,
                        "command": command,
                    })
                );
            }
        } else {
            println!(
                "| {policy} | {} | {account:.0} | {:.2}x | {slot:.0} | {:.2}x | {:.0} | {:.0} | {:.1} |",
                main_kind(r),
                base_account / account,
                base_slot / slot,
                r.bytes_per_account,
                r.bytes_per_slot,
                r.build_s
            );
        }
    }
    Ok(())
}

fn statetest(
    paths: &[PathBuf],
    json: bool,
    show: usize,
    engine: bench::statetest::Engine,
) -> ExitCode {
    let files = bench::statetest::collect_files(paths);
    if files.is_empty() {
        eprintln!("error: no .json state tests under {paths:?}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let summary = match bench::statetest::run_files(&files, engine) {
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
        if let Some(stats) = &summary.jit {
            print_jit_stats(stats);
        }
    }
    let fallback_ok = summary.jit.as_ref().is_none_or(|s| jit_fallback_share(s) < 0.01);
    if !fallback_ok {
        eprintln!("error: 1% or more of the contracts executed fell back to the interpreter");
    }
    if summary.failed.is_empty() && fallback_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The machine and the exact command, printed first unless the output is JSON.
fn sync_workload(
    name: &str,
    seed: u64,
    accounts: usize,
    txs: usize,
) -> Result<workload::Prepared, String> {
    let kind = match name {
        "eth" => Kind::Eth,
        "erc20" => Kind::Erc20,
        "amm" => Kind::Amm,
        "amm-hot" => Kind::AmmHot,
        "mix" => Kind::Mix,
        other => {
            return Err(format!("unknown workload {other:?} (eth, erc20, amm, amm-hot, mix)"));
        }
    };
    Ok(workload::prepare(kind, seed, accounts, txs))
}

fn prover_bench(
    workloads: &[String],
    accounts: usize,
    txs: usize,
    block_txs: usize,
    seed: u64,
    json: bool,
) -> Result<(), String> {
    let (machine, command) = machine_and_command(json);
    if !json {
        println!(
            "{txs} transactions per workload in blocks of {block_txs}, {accounts} accounts; one core each side"
        );
        println!(
            "\n| workload | produce tx/s | verify tx/s | verify / produce | of produce: commit+witness | witness B/tx |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
    }
    for name in workloads {
        let prepared = sync_workload(name, seed, accounts, txs)?;
        let r = bench::prover::measure(&prepared, name, block_txs)?;
        let tps = |s: f64| r.txs as f64 / s;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": r.workload,
                    "ours": tps(r.verify_s),
                    "baseline": tps(r.produce_s),
                    "baseline_name": "the sequencer producing the blocks on one core (execute, apply, NOMT commit with witness)",
                    "unit": "tx/s",
                    "ratio": r.ratio,
                    "witness_bytes_per_tx": r.witness_bytes_per_tx,
                    "result": r,
                    "machine": machine,
                    "command": command,
                })
            );
        } else {
            println!(
                "| {} | {:.0} | {:.0} | {:.2}x | {:.0}% | {:.1} |",
                r.workload,
                tps(r.produce_s),
                tps(r.verify_s),
                r.ratio,
                100.0 * r.commit_s / r.produce_s,
                r.witness_bytes_per_tx
            );
        }
    }
    Ok(())
}

fn statesync(
    workloads: &[String],
    accounts: usize,
    txs: usize,
    block_txs: usize,
    seed: u64,
    json: bool,
) -> Result<(), String> {
    let (machine, command) = machine_and_command(json);
    if !json {
        println!(
            "{txs} transactions per workload in messages of {block_txs}, {accounts} accounts (all known to the receiver)"
        );
        println!(
            "\n| workload | raw B/tx | raw+zstd B/tx | ours B/tx | raw / ours | Mbps at 100k tx/s ours / raw | execute tx/s | decode+apply tx/s | apply / execute |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for name in workloads {
        let prepared = sync_workload(name, seed, accounts, txs)?;
        let r = bench::statesync::measure(&prepared, name, block_txs)?;
        let tps = |s: f64| r.txs as f64 / s;
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": r.workload,
                    "ours": r.ours_bytes_per_tx,
                    "baseline": r.raw_bytes_per_tx,
                    "baseline_name": "RLP of changed accounts and slots",
                    "unit": "bytes/tx",
                    "ratio": r.ratio,
                    "result": r,
                    "machine": machine,
                    "command": command,
                })
            );
            println!(
                "{}",
                serde_json::json!({
                    "workload": format!("{}/apply", r.workload),
                    "ours": tps(r.apply_s),
                    "baseline": tps(r.execute_s),
                    "baseline_name": "sequential execution + apply on the sequencer",
                    "unit": "tx/s",
                    "ratio": r.apply_ratio,
                    "machine": machine,
                    "command": command,
                })
            );
        } else {
            println!(
                "| {} | {:.1} | {:.1} | {:.2} | {:.1}x | {:.1} / {:.1} | {:.0} | {:.0} | {:.1}x |",
                r.workload,
                r.raw_bytes_per_tx,
                r.raw_zstd_bytes_per_tx,
                r.ours_bytes_per_tx,
                r.ratio,
                r.mbps_at_100k,
                r.raw_mbps_at_100k,
                tps(r.execute_s),
                tps(r.apply_s),
                r.apply_ratio,
            );
        }
    }
    Ok(())
}

fn train_dict_to(
    path: &std::path::Path,
    workloads: &[String],
    accounts: usize,
    txs: usize,
    block_txs: usize,
    seed: u64,
) -> Result<(), String> {
    let mut samples = Vec::new();
    for name in workloads {
        let prepared = sync_workload(name, seed + 1000, accounts, txs)?;
        for size in [10, 100, block_txs.max(1)] {
            samples.extend(bench::statesync::samples(&prepared, size)?);
        }
    }
    let dict = zstd::dict::from_samples(&samples, DICT_BYTES).map_err(|e| e.to_string())?;
    std::fs::write(path, &dict).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{}: {} bytes from {} samples", path.display(), dict.len(), samples.len());
    Ok(())
}

/// Size of the codec's dictionary.
const DICT_BYTES: usize = 16 * 1024;

fn machine_and_command(json: bool) -> (machine::Machine, String) {
    let machine = machine::describe();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if !json {
        println!(
            "machine: {} ({} CPUs, {} NUMA node(s)), Linux {}, rev {}",
            machine.cpu, machine.cpus, machine.numa_nodes, machine.kernel, machine.revision
        );
        println!("command: {command}");
    }
    (machine, command)
}

/// LLVM optimisation levels on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OptArg {
    O0,
    O1,
    O2,
    O3,
}

/// The default `bench jit` cases: the compute set and an ERC-20 transfer.
const JIT_DEFAULT_CASES: &[&str] = &[
    "bench/fixtures/evm-benchmarks/main/snailtracer.json",
    "bench/fixtures/evm-benchmarks/main/swap_math.json",
    "bench/fixtures/evm-benchmarks/main/structarray_alloc.json",
    "bench/fixtures/evm-benchmarks/main/blake2b_shifts.json",
    "bench/fixtures/evm-benchmarks/main/sha1_shifts.json",
    "bench/fixtures/revm-bench/snailtracer.hex@30627b7c",
    "burntpix@1000",
    "bench/fixtures/evm-benchmarks/micro/JUMPDEST_n0.json",
    "bench/fixtures/evm-benchmarks/micro/jump_around.json",
    "bench/fixtures/evm-benchmarks/micro/loop_with_many_jumpdests.json",
    "bench/fixtures/evm-benchmarks/micro/memory_grow_mload.json",
    "bench/fixtures/evm-benchmarks/micro/memory_grow_mstore.json",
    "bench/fixtures/evm-benchmarks/micro/signextend.json",
    "erc20",
];

fn jit_bench(args: &[String], runs: usize, opt: OptArg, json: bool) -> Result<(), String> {
    let opt = match opt {
        OptArg::O0 => jit::OptLevel::O0,
        OptArg::O1 => jit::OptLevel::O1,
        OptArg::O2 => jit::OptLevel::O2,
        OptArg::O3 => jit::OptLevel::O3,
    };
    let args: Vec<String> = if args.is_empty() {
        JIT_DEFAULT_CASES.iter().map(|s| s.to_string()).collect()
    } else {
        args.to_vec()
    };
    // Every case is read before anything is printed: a bad argument is only an error.
    let cases = bench::jitbench::cases(&args)?;
    let (machine, command) = machine_and_command(json);
    if !json {
        println!("median of {runs} runs per engine, alternating; opt level {opt:?}\n");
        println!(
            "| case | gas | interpreter µs | JIT µs | speed-up | contracts | compile ms | code KiB |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    }
    let (mut all, mut ratios) = (Vec::new(), Vec::new());
    for case in cases {
        let r = bench::jitbench::run_case(case, runs.max(1), opt)?;
        all.push(r.ratio);
        if r.declined.is_empty() {
            ratios.push(r.ratio);
        }
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "workload": r.workload,
                    "ours": r.ours,
                    "baseline": r.baseline,
                    "baseline_name": "revm interpreter",
                    "unit": r.unit,
                    "ratio": r.ratio,
                    "result": r,
                    "machine": machine,
                    "command": command,
                })
            );
        } else {
            let name = if r.declined.is_empty() {
                r.workload.clone()
            } else {
                format!("{} (declined: {})", r.workload, r.declined.join(", "))
            };
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.2}x | {} | {:.1} | {:.1} |",
                name,
                r.gas_used,
                r.baseline,
                r.ours,
                r.ratio,
                r.contracts,
                r.compile_ms,
                r.code_bytes as f64 / 1024.0
            );
        }
    }
    if !json {
        println!(
            "\ngeometric mean speed-up over the {} cases whose contracts all ran compiled: {:.2}x; \
             over all {} cases: {:.2}x",
            ratios.len(),
            bench::jitbench::geomean(&ratios),
            all.len(),
            bench::jitbench::geomean(&all)
        );
    }
    Ok(())
}

/// Share of the distinct contracts executed that the JIT declined.
fn jit_fallback_share(s: &jit::JitStats) -> f64 {
    let declined: u64 = s.declined.iter().map(|(_, n)| n).sum();
    let total = s.compiled + s.loaded_aot + declined;
    if total == 0 { 0.0 } else { declined as f64 / total as f64 }
}

fn print_jit_stats(s: &jit::JitStats) {
    let declined: u64 = s.declined.iter().map(|(_, n)| n).sum();
    let reasons: Vec<String> =
        s.declined.iter().map(|(r, n)| format!("{n} {}", r.as_str())).collect();
    println!(
        "jit: {} contracts compiled ({:.1} s compiling, {} KiB of code), {} fell back ({:.2}%){}",
        s.compiled + s.loaded_aot,
        s.compile_micros as f64 / 1e6,
        s.code_bytes / 1024,
        declined,
        100.0 * jit_fallback_share(s),
        if reasons.is_empty() { String::new() } else { format!(": {}", reasons.join(", ")) },
    );
    println!(
        "jit: {} call frames ran compiled code, {} ran in the interpreter (frames of declined \
         contracts; create frames always do and are not counted)",
        s.frames_compiled, s.frames_interpreted
    );
}
