//! The `fullnode` binary. For now it follows a sequencer's DA archive directory: it applies
//! every batch there (checking signatures, decoding diffs, checking every block's state root),
//! then waits for new ones.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use alloy_primitives::Address;
use clap::Parser;
use feed::{LocalArchive, Signer};
use fullnode::{Follower, FollowerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Follows the sequencer: applies its signed state diffs and checks every state root"
)]
struct Cli {
    /// The sequencer's DA archive directory (its `feed.archive_dir`, by default
    /// `<datadir>/archive`).
    #[arg(long)]
    archive: PathBuf,
    /// Follow a `sequencer --dev` chain: the dev genesis, the dev feed signer, chain 31337.
    #[arg(long)]
    dev: bool,
    /// Address of the sequencer's feed key (required without `--dev`).
    #[arg(long)]
    sequencer: Option<Address>,
    /// Genesis `alloc` JSON, as the sequencer's `chain.genesis` (required without `--dev`).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Chain id.
    #[arg(long, default_value_t = 31337)]
    chain_id: u64,
    /// Data directory (NOMT). Default `./fullnode-data`.
    #[arg(long, default_value = "fullnode-data")]
    datadir: PathBuf,
    /// NOMT hash-table buckets (as the sequencer's `storage.nomt_buckets`).
    #[arg(long, default_value_t = 16_384)]
    nomt_buckets: u32,
    /// Apply what the archive holds, then exit instead of waiting for more.
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match config(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match run(&cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn config(cli: &Cli) -> Result<FollowerConfig, String> {
    let (sequencer, genesis) = if cli.dev {
        (Signer::dev().address(), feed::dev::dev_alloc())
    } else {
        let sequencer = cli.sequencer.ok_or("--sequencer ADDRESS is required without --dev")?;
        let path = cli.genesis.as_ref().ok_or("--genesis FILE is required without --dev")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let genesis =
            memstate::parse_alloc(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        (sequencer, genesis)
    };
    Ok(FollowerConfig {
        chain_id: cli.chain_id,
        sequencer,
        genesis,
        nomt_buckets: cli.nomt_buckets,
    })
}

fn run(cli: &Cli, config: FollowerConfig) -> Result<(), String> {
    let archive = LocalArchive::open(&cli.archive).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cli.datadir).map_err(|e| format!("{}: {e}", cli.datadir.display()))?;
    let mut follower =
        Follower::new(config, &cli.datadir.join("nomt")).map_err(|e| e.to_string())?;
    loop {
        let applied = follower.catch_up(&archive).map_err(|e| e.to_string())?;
        if applied > 0 {
            let head = follower.headers().last().expect("applied blocks");
            println!(
                "applied through block {} (state root {}, {} accounts)",
                head.number,
                head.state_root,
                follower.state().account_count()
            );
        }
        if cli.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
