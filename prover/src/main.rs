//! The `prover` binary. `prover verify --archive DIR --from N --to M` verifies blocks offline
//! from a sequencer's DA archive (batches and witnesses), on all cores and in any order, and
//! prints one verdict per block. `prover run` follows a sequencer over libp2p and sends it a
//! signed verdict per block.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Instant};

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
    /// Follow a sequencer over libp2p: fetch each block's batch and witness, verify it, and
    /// send the signed verdict back.
    Run {
        /// Follow a `sequencer --dev` on this host (its feed signer, chain 31337, and
        /// /ip4/127.0.0.1/tcp/30333 unless `--bootstrap` is given).
        #[arg(long)]
        dev: bool,
        /// Multiaddr of the sequencer (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<p2p::Address>,
        /// Address of the sequencer's feed key (required without `--dev`).
        #[arg(long)]
        sequencer: Option<Address>,
        /// File holding this prover's verdict key (32 bytes, hex); created when missing.
        /// Default: a new key for this run (its address is printed).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Chain id.
        #[arg(long, default_value_t = 31337)]
        chain_id: u64,
        /// The chain's hard fork (the sequencer's `chain.hardfork`).
        #[arg(long, default_value = "osaka")]
        hardfork: String,
        /// First block to verify.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Stop after this block (default: follow forever).
        #[arg(long)]
        to: Option<u64>,
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
    let command = Cli::parse().command;
    if let Command::Run { .. } = command {
        return run(command);
    }
    let Command::Verify { archive, from, to, dev, sequencer, chain_id, hardfork, threads } =
        command
    else {
        unreachable!("run returned above")
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

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// The prover's verdict key from `path` (created with a random key when missing).
fn verdict_key(path: Option<&PathBuf>) -> Result<feed::Signer, String> {
    let Some(path) = path else { return Ok(feed::Signer::random()) };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = alloy_primitives::hex::decode(text.trim())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let bytes: [u8; 32] =
                bytes.try_into().map_err(|_| format!("{}: not 32 bytes", path.display()))?;
            feed::Signer::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = feed::Signer::random();
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            std::io::Write::write_all(
                &mut file,
                alloy_primitives::hex::encode(key.secret_bytes()).as_bytes(),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn run(command: Command) -> ExitCode {
    let Command::Run {
        dev,
        mut bootstrap,
        sequencer,
        key_file,
        chain_id,
        hardfork,
        from,
        to,
        threads,
    } = command
    else {
        unreachable!("called for run")
    };
    let sequencer = match (dev, sequencer) {
        (true, _) => feed::Signer::dev().address(),
        (false, Some(address)) => address,
        (false, None) => return fail("--sequencer ADDRESS is required without --dev".into()),
    };
    if dev && bootstrap.is_empty() {
        bootstrap.push("/ip4/127.0.0.1/tcp/30333".parse().expect("a multiaddr"));
    }
    let Some(spec) = chain_rpc::evm::parse_spec(&hardfork) else {
        return fail(format!("unknown hard fork {hardfork:?} (shanghai, cancun, prague, osaka)"));
    };
    let key = match verdict_key(key_file.as_ref()) {
        Ok(key) => key,
        Err(err) => return fail(err),
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => return fail(err.to_string()),
        };
    let config = p2p::P2pConfig {
        chain_id,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
        bootstrap,
    };
    let (net, events) = match p2p::P2p::start(runtime.handle(), p2p::random_key(), config, None) {
        Ok(started) => started,
        Err(err) => return fail(err.to_string()),
    };
    // Witnesses published with their blocks are kept for a while (the newest 1 024 blocks);
    // other gossip is not this node's business. None is forwarded: a prover cannot vouch for
    // a witness before it has verified with it.
    net.subscribe(p2p::Topic::Witnesses);
    let witnesses = std::sync::Arc::new(parking_lot::Mutex::new(BTreeMap::<u64, Vec<u8>>::new()));
    let (reporter, cache) = (net.clone(), witnesses.clone());
    std::thread::spawn(move || {
        for event in events {
            if let p2p::Event::Message { topic, data, id, source } = event {
                if topic == p2p::Topic::Witnesses
                    && let Some((number, witness)) = data.split_first_chunk::<8>()
                {
                    let mut cache = cache.lock();
                    cache.insert(u64::from_be_bytes(*number), witness.to_vec());
                    while cache.len() > 1024 {
                        cache.pop_first();
                    }
                }
                reporter.report(id, source, p2p::Verdict::Ignore);
            }
        }
    });
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build() {
        Ok(pool) => pool,
        Err(err) => return fail(err.to_string()),
    };
    let backend =
        std::sync::Arc::new(Reexecution { rules: chain_rpc::evm::ChainRules { spec, chain_id } });
    println!(
        "prover {} (verdict key), peer {}, backend: {}",
        key.address(),
        net.peer_id(),
        backend.name()
    );
    let follow = prover::network::FollowConfig { sequencer, chain_id, from, to };
    let invalid = std::sync::atomic::AtomicU64::new(0);
    prover::network::follow(
        &net,
        backend,
        &key,
        &follow,
        &pool,
        &|n| witnesses.lock().remove(&n),
        |sent| {
            let v = &sent.verdict;
            let ack = if sent.acknowledged { "sent" } else { "NOT acknowledged" };
            let ack = if sent.gossiped { format!("{ack}, witness by gossip") } else { ack.into() };
            match &v.outcome {
                Ok(()) => println!("block {}: valid, verdict {ack}", v.block),
                Err(reason) => {
                    invalid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    println!("block {}: INVALID: {reason}; verdict {ack}", v.block)
                }
            }
        },
        &|| false,
    );
    if invalid.into_inner() > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
