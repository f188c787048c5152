//! The `sequencer` binary: parses flags and the config file, starts the node, the JSON-RPC
//! server and the metrics endpoint, and stops cleanly on Ctrl-C or SIGTERM.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Instant};

use clap::Parser;
use sequencer::{
    Config, Node,
    config::duration_str,
    dev::{DEV_ACCOUNTS, DEV_MNEMONIC, dev_balance},
    host::Placement,
    rpc,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A real-time EVM sequencer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Dev mode: chain 31337, the ten anvil/hardhat dev accounts funded with 10 000 ETH each,
    /// and (without --datadir) a fresh temporary data directory.
    #[arg(long)]
    dev: bool,
    /// TOML config file (see the README for every key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (WAL, NOMT). Overrides storage.datadir.
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,
    /// JSON-RPC address, HTTP and WebSocket. Overrides rpc.addr (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    rpc_addr: Option<SocketAddr>,
    /// Prometheus endpoint address. Overrides metrics.addr.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Do not serve metrics.
    #[arg(long)]
    no_metrics: bool,
    /// libp2p listen multiaddr (repeatable), e.g. "/ip4/0.0.0.0/tcp/30333". Overrides
    /// p2p.listen.
    #[arg(long, value_name = "MULTIADDR")]
    p2p_listen: Vec<String>,
    /// Do not gossip the feed over libp2p. Sets p2p.enabled = false.
    #[arg(long)]
    no_p2p: bool,
    /// EVM block interval, e.g. "1s". Overrides blocks.evm_block_interval.
    #[arg(long, value_name = "DURATION", value_parser = duration_str::parse)]
    block_time: Option<std::time::Duration>,
    /// Longest mini-block interval, e.g. "10ms". Overrides blocks.mini_block_interval.
    #[arg(long, value_name = "DURATION", value_parser = duration_str::parse)]
    mini_block_time: Option<std::time::Duration>,
    /// Checkpoint every N EVM blocks (0: never). Overrides storage.checkpoint_interval.
    #[arg(long, value_name = "N")]
    checkpoint_interval: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,jsonrpsee=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(dir) = &cli.datadir {
        config.storage.datadir = Some(dir.clone());
    }
    if let Some(addr) = cli.rpc_addr {
        config.rpc.addr = addr;
    }
    if let Some(addr) = cli.metrics_addr {
        config.metrics.addr = addr;
    }
    if let Some(n) = cli.checkpoint_interval {
        config.storage.checkpoint_interval = n;
    }
    if cli.no_metrics {
        config.metrics.enabled = false;
    }
    if !cli.p2p_listen.is_empty() {
        config.p2p.listen = cli.p2p_listen.clone();
    }
    if cli.no_p2p {
        config.p2p.enabled = false;
    }
    if let Some(t) = cli.block_time {
        config.blocks.evm_block_interval = t;
    }
    if let Some(t) = cli.mini_block_time {
        config.blocks.mini_block_interval = t;
    }
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if cli.print_config {
        print!("{}", toml::to_string_pretty(&config).expect("config serializes"));
        return ExitCode::SUCCESS;
    }
    // Probe and check the host first, so that a host that cannot run this config is refused
    // before anything starts and the RPC threads are pinned from their first instruction.
    let datadir = sequencer::host::intended_datadir(&config, cli.dev);
    let placement = match Placement::prepare(&config, datadir.as_deref()) {
        Ok(placement) => placement,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(cpus) = placement.executor_cpus() {
        // The shared worker pool (sender recovery) runs one thread per executor CPU.
        let pinned = cpus.clone();
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(cpus.len())
            .start_handler(move |i| {
                numa::pin_to(pinned[i]);
            })
            .build_global();
        if let Err(err) = built {
            tracing::warn!(%err, "cannot set up the pinned worker pool");
        }
    }
    let rpc_cpus = placement.rpc_cpus();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(cpus) = &rpc_cpus {
        runtime.worker_threads(cpus.len());
    }
    let runtime = runtime
        .enable_all()
        .on_thread_start(move || sequencer::host::pin_current("rpc", rpc_cpus.as_deref()))
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.dev, config, placement)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dev: bool, config: Config, placement: Placement) -> Result<(), String> {
    let started = Instant::now();
    if config.metrics.enabled {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(config.metrics.addr)
            .set_buckets(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ])
            .map_err(|e| e.to_string())?
            .install()
            .map_err(|e| format!("metrics endpoint {}: {e}", config.metrics.addr))?;
    }
    let rpc_addr = config.rpc.addr;
    let node =
        tokio::task::spawn_blocking(move || Node::start_placed(config, dev, None, placement))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let (bound, handle) = rpc::serve(node.clone(), rpc_addr)
        .await
        .map_err(|e| format!("JSON-RPC server on {rpc_addr}: {e}"))?;

    if dev && node.config.chain.genesis.is_none() {
        print_dev_banner();
    }
    println!("Chain ID: {}", node.rules.chain_id);
    println!("Hard fork: {}", <&str>::from(node.rules.spec));
    println!("Data directory: {}", node.datadir().display());
    if node.config.metrics.enabled {
        println!("Metrics: http://{}/metrics", node.config.metrics.addr);
    }
    if let Some(net) = node.p2p() {
        // Followers bootstrap from these (the listeners bind a moment after start).
        let addrs = tokio::task::spawn_blocking(move || {
            for _ in 0..200 {
                match net.listening() {
                    Ok(addrs) if addrs.is_empty() => {
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                    Ok(addrs) => return addrs.into_iter().map(|a| (a, net.peer_id())).collect(),
                    Err(_) => break,
                }
            }
            Vec::new()
        })
        .await
        .unwrap_or_default();
        for (addr, peer) in addrs {
            println!("p2p listening on {addr}/p2p/{peer}");
        }
    }
    println!("RPC listening on http://{bound} and ws://{bound}");
    println!("Started in {} ms", started.elapsed().as_millis());

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = handle.stop();
    handle.stopped().await;
    tokio::task::spawn_blocking(move || node.shutdown()).await.map_err(|e| e.to_string())?;
    Ok(())
}

fn print_dev_banner() {
    let eth =
        dev_balance() / alloy_primitives::U256::from(10u64).pow(alloy_primitives::U256::from(18));
    println!("Available Accounts\n==================");
    for (i, (address, _)) in DEV_ACCOUNTS.iter().enumerate() {
        println!("({i}) {address} ({eth} ETH)");
    }
    println!("\nPrivate Keys\n==================");
    for (i, (_, key)) in DEV_ACCOUNTS.iter().enumerate() {
        println!("({i}) {key}");
    }
    println!(
        "\nWallet\n==================\nMnemonic: {DEV_MNEMONIC}\nDerivation path: m/44'/60'/0'/0/\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
