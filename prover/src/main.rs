//! The `prover` binary. `prover verify --archive DIR --from N --to M` verifies blocks offline
//! from a sequencer's DA archive (batches and witnesses), on all cores and in any order, and
//! prints one verdict per block.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use alloy_primitives::Address;
use clap::{Parser, Subcommand};
use prover::{ProofBackend, Reexecution, archive::Archive};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Verifies the sequencer's blocks statelessly from their witnesses")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify blocks from a DA archive directory (the sequencer's `feed.archive_dir`).
    Verify {
        /// The archive directory.
        #[arg(long)]
        archive: PathBuf,
        /// First block (at least 1; genesis has no witness). Default 1.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last block. Default: the newest in the archive.
        #[arg(long)]
        to: Option<u64>,
        /// Blocks of a `sequencer --dev` (its feed signer, chain 31337).
        #[arg(long)]
        dev: bool,
        /// Address of the sequencer's feed key (required without `--dev`).
        #[arg(long)]
        sequencer: Option<Address>,
        /// Chain id.
        #[arg(long, default_value_t = 31337)]
        chain_id: u64,
        /// The chain's hard fork (the sequencer's `chain.hardfork`).
        #[arg(long, default_value = "osaka")]
        hardfork: String,
        /// Worker threads. Default: one per core.
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Verify { archive, from, to, dev, sequencer, chain_id, hardfork, threads } =
        Cli::parse().command;
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let sequencer = match (dev, sequencer) {
        (true, _) => feed::Signer::dev().address(),
        (false, Some(address)) => address,
        (false, None) => return fail("--sequencer ADDRESS is required without --dev".into()),
    };
    let Some(spec) = chain_rpc::evm::parse_spec(&hardfork) else {
        return fail(format!("unknown hard fork {hardfork:?} (shanghai, cancun, prague, osaka)"));
    };
    let archive = match Archive::open(&archive, sequencer, chain_id) {
        Ok(archive) => archive,
        Err(err) => return fail(err.to_string()),
    };
    let to = match to {
        Some(to) => to,
        None => match archive.last() {
            Ok(Some(last)) => last,
            Ok(None) => return fail("the archive holds no block".into()),
            Err(err) => return fail(err.to_string()),
        },
    };
    let from = from.max(1);
    if from > to {
        return fail(format!("nothing to verify: --from {from} is after --to {to}"));
    }
    let backend = Reexecution { rules: chain_rpc::evm::ChainRules { spec, chain_id } };
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build() {
        Ok(pool) => pool,
        Err(err) => return fail(err.to_string()),
    };
    let started = Instant::now();
    let verdicts: Vec<(u64, Result<prover::Verdict, String>)> = pool.install(|| {
        (from..=to)
            .into_par_iter()
            .map(|n| {
                let verdict = archive.input(n).map(|input| backend.verify(&input));
                (n, verdict.map_err(|e| e.to_string()))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut invalid = 0;
    for (n, verdict) in &verdicts {
        match verdict {
            Ok(v) if v.is_valid() => {
                println!("block {n}: valid (hash {}, root {})", v.block_hash, v.post_root)
            }
            Ok(v) => {
                invalid += 1;
                println!("block {n}: INVALID: {}", v.outcome.as_ref().unwrap_err());
            }
            Err(err) => {
                invalid += 1;
                println!("block {n}: not verified: {err}");
            }
        }
    }
    println!(
        "{} blocks verified by {} in {:.3} s: {} valid, {} not",
        verdicts.len(),
        backend.name(),
        elapsed.as_secs_f64(),
        verdicts.len() - invalid,
        invalid
    );
    if invalid > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
