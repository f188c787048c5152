//! The `bench` binary.

use std::{path::PathBuf, process::ExitCode, time::Instant};

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
    }
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
