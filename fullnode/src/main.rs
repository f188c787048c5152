//! The `fullnode` binary: follows the sequencer over libp2p (and first from its DA archive
//! when given one), applying every signed diff and checking every block's state root, and
//! serves the read-only JSON-RPC over what it applied (transactions are forwarded to the
//! sequencer). After a root mismatch it stops serving, re-syncs from genesis and serves again.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use alloy_primitives::Address;
use clap::Parser;
use feed::{LocalArchive, Signer};
use fullnode::{Follower, FollowerConfig};
use jsonrpsee::server::ServerHandle;

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
    /// Multiaddr of a peer to follow (repeatable); with none, `--dev` follows
    /// /ip4/127.0.0.1/tcp/30333 (a `sequencer --dev` on this host).
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
    /// NOMT page cache, MiB (as the sequencer's `storage.nomt_page_cache_mib`).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    nomt_page_cache_mib: u32,
    /// NOMT leaf cache, MiB (as the sequencer's `storage.nomt_leaf_cache_mib`).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    nomt_leaf_cache_mib: u32,
    /// Apply what the archive holds, then exit instead of following the network.
    #[arg(long, requires = "archive")]
    once: bool,
    /// Address of the JSON-RPC server (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8546")]
    rpc_addr: SocketAddr,
    /// Serve no JSON-RPC.
    #[arg(long)]
    no_rpc: bool,
    /// The sequencer's JSON-RPC URL, where transactions sent here are forwarded.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    sequencer_rpc: String,
    /// The chain's hard fork (as the sequencer's `chain.hardfork`), for `eth_call`.
    #[arg(long, default_value = "osaka")]
    hardfork: String,
    /// Gas cap of `eth_call`, `eth_estimateGas` and `eth_createAccessList`.
    #[arg(long, default_value_t = 50_000_000)]
    rpc_gas_cap: u64,
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
        nomt_cache_mib: (cli.nomt_page_cache_mib as usize, cli.nomt_leaf_cache_mib as usize),
    })
}

fn run(cli: &Cli, config: FollowerConfig) -> Result<(), String> {
    std::fs::create_dir_all(&cli.datadir).map_err(|e| format!("{}: {e}", cli.datadir.display()))?;
    let nomt_dir = cli.datadir.join("nomt");
    let archive = match &cli.archive {
        Some(dir) => Some(LocalArchive::open(dir).map_err(|e| e.to_string())?),
        None => None,
    };
    let spec = chain_rpc::evm::parse_spec(&cli.hardfork).ok_or_else(|| {
        format!("unknown hard fork {:?} (shanghai, cancun, prague, osaka)", cli.hardfork)
    })?;
    let rules = chain_rpc::evm::ChainRules { spec, chain_id: config.chain_id };
    let settings = chain_rpc::Settings { gas_cap: cli.rpc_gas_cap, ..Default::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // A follower at genesis, serving RPC (unless `--no-rpc`) while it catches up from the
    // archive.
    let start = |config: &FollowerConfig| -> Result<(Follower, Option<ServerHandle>), String> {
        let mut follower = Follower::new(config.clone(), &nomt_dir).map_err(|e| e.to_string())?;
        let server = if cli.no_rpc || cli.once {
            None
        } else {
            let module = fullnode::rpc::module(
                &follower,
                rules,
                settings,
                fullnode::rpc::Forwarder::new(cli.sequencer_rpc.clone()),
            )
            .map_err(|e| e.to_string())?;
            let (bound, handle) = runtime
                .block_on(fullnode::rpc::serve(module, cli.rpc_addr))
                .map_err(|e| format!("JSON-RPC on {}: {e}", cli.rpc_addr))?;
            println!("JSON-RPC on http://{bound} (ws://{bound})");
            Some(handle)
        };
        if let Some(archive) = &archive {
            let applied = follower.catch_up(archive).map_err(|e| e.to_string())?;
            report(&follower, applied);
        }
        Ok((follower, server))
    };
    let (mut follower, mut server) = start(&config)?;
    if cli.once {
        return Ok(());
    }
    let mut bootstrap = cli.bootstrap.clone();
    if cli.dev && bootstrap.is_empty() {
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
            tracing::error!(%err, "stopped serving; re-syncing from genesis");
            if let Some(server) = server.take() {
                let _ = server.stop();
                runtime.block_on(server.stopped());
            }
            (follower, server) = start(&config)?;
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
