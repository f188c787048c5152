//! The `fullnode` binary: follows the sequencer over libp2p (and first from its DA archive
//! when given one), applying every signed diff and checking every block's state root. After a
//! root mismatch it re-syncs from genesis.

use std::{path::PathBuf, process::ExitCode};

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
    /// Catch up from this DA archive directory first (the sequencer's `feed.archive_dir`, by
    /// default `<datadir>/archive`).
    #[arg(long)]
    archive: Option<PathBuf>,
    /// Follow a `sequencer --dev` on this host: the dev genesis, the dev feed signer, chain
    /// 31337, and the sequencer's dev p2p address as bootstrap.
    #[arg(long)]
    dev: bool,
    /// Multiaddr of a peer to follow (repeatable); `--dev` adds /ip4/127.0.0.1/tcp/30333.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<p2p::Address>,
    /// libp2p listen multiaddr. Default /ip4/127.0.0.1/tcp/0 (a free port).
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/127.0.0.1/tcp/0")]
    p2p_listen: p2p::Address,
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
    /// Apply what the archive holds, then exit instead of following the network.
    #[arg(long, requires = "archive")]
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
    std::fs::create_dir_all(&cli.datadir).map_err(|e| format!("{}: {e}", cli.datadir.display()))?;
    let nomt_dir = cli.datadir.join("nomt");
    let archive = match &cli.archive {
        Some(dir) => Some(LocalArchive::open(dir).map_err(|e| e.to_string())?),
        None => None,
    };
    let start = |config: &FollowerConfig| -> Result<Follower, String> {
        let mut follower = Follower::new(config.clone(), &nomt_dir).map_err(|e| e.to_string())?;
        if let Some(archive) = &archive {
            let applied = follower.catch_up(archive).map_err(|e| e.to_string())?;
            report(&follower, applied);
        }
        Ok(follower)
    };
    let mut follower = start(&config)?;
    if cli.once {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut bootstrap = cli.bootstrap.clone();
    if cli.dev {
        bootstrap.push("/ip4/127.0.0.1/tcp/30333".parse().expect("a multiaddr"));
    }
    let p2p_config = p2p::P2pConfig {
        chain_id: config.chain_id,
        listen: vec![cli.p2p_listen.clone()],
        bootstrap,
    };
    let (net, events) = p2p::P2p::start(runtime.handle(), p2p::random_key(), p2p_config, None)
        .map_err(|e| e.to_string())?;
    println!("following as peer {}", net.peer_id());
    loop {
        if let Err(err) = fullnode::follow_network(&mut follower, &net, &events, |_| false) {
            tracing::error!(%err, "re-syncing from genesis");
            follower = start(&config)?;
        }
    }
}

fn report(follower: &Follower, applied: u64) {
    if applied > 0 {
        let head = follower.headers().last().expect("applied blocks");
        println!(
            "applied through block {} (state root {}, {} accounts)",
            head.number,
            head.state_root,
            follower.state().account_count()
        );
    }
}
