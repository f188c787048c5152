//! Our pipeline as a user gets it: the sequencer as a library (in-process) and behind its
//! JSON-RPC server (HTTP batches), everything persisted (WAL fsync per mini-block, NOMT roots).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::{B256, keccak256};
use sequencer::{Config, Node};

use crate::workload::Prepared;

/// Settings of our pipeline for a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSettings {
    /// EVM block interval.
    pub block_time: Duration,
    /// Longest mini-block.
    pub mini_block_time: Duration,
    /// Transactions per submission batch (in-process) or per JSON-RPC batch.
    pub batch: usize,
    /// Concurrent JSON-RPC connections.
    pub connections: usize,
    /// Build every block's witness (`feed.witnesses`, on by default in the sequencer).
    pub witnesses: bool,
}

/// Result of one run of our pipeline.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct RunResult {
    /// From the first submission to the seal (state root committed) of the block holding the
    /// last transaction.
    pub elapsed: Duration,
    /// Process CPU time (user + system) over the same span.
    pub cpu: Duration,
}

/// A benchmark failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The node did not start.
    #[error("sequencer: {0}")]
    Start(#[from] sequencer::NodeError),
    /// A transaction was refused.
    #[error("transaction refused: {0}")]
    Refused(String),
    /// Transactions stopped being executed.
    #[error("stalled: {done} of {total} transactions executed")]
    Stalled {
        /// Executed.
        done: usize,
        /// Submitted.
        total: usize,
    },
    /// I/O.
    #[error("{0}")]
    Io(String),
}

/// Process CPU time so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn start_node(
    p: &Prepared,
    settings: &RunSettings,
) -> Result<(Arc<Node>, tempfile::TempDir), RunError> {
    let dir = tempfile::tempdir().map_err(|e| RunError::Io(e.to_string()))?;
    let mut config = Config::default();
    config.storage.datadir = Some(dir.path().to_path_buf());
    config.storage.nomt_buckets = (p.alloc.len() as u32 / 8).max(16_384);
    config.metrics.enabled = false;
    // The whole pipeline, gossip included, on a loopback port of its own.
    config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.chain.hardfork = <&str>::from(p.kind.spec()).to_ascii_lowercase();
    config.blocks.evm_block_interval = settings.block_time;
    config.blocks.mini_block_interval = settings.mini_block_time;
    config.feed.witnesses = settings.witnesses;
    config.pool.capacity = p.txs.len() + 1;
    config.pool.max_nonce_gap = (p.txs.len() / p.addresses.len().max(1)) as u64 + 1;
    let node = Node::start_with_alloc(config, false, Some((*p.alloc).clone()))?;
    Ok((node, dir))
}

/// A benchmark node with its JSON-RPC server on a free loopback port.
pub(crate) struct ServedNode {
    pub(crate) node: Arc<Node>,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) url: String,
    handle: jsonrpsee::server::ServerHandle,
    _dir: tempfile::TempDir,
}

impl ServedNode {
    pub(crate) fn start(p: &Prepared, settings: &RunSettings) -> Result<Self, RunError> {
        let (node, dir) = start_node(p, settings)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| RunError::Io(e.to_string()))?;
        let (addr, handle) = runtime
            .block_on(sequencer::rpc::serve(node.clone(), "127.0.0.1:0".parse().expect("addr")))
            .map_err(|e| RunError::Io(e.to_string()))?;
        Ok(Self { node, runtime, url: format!("http://{addr}"), handle, _dir: dir })
    }

    pub(crate) fn stop(self) {
        let _ = self.handle.stop();
        self.node.shutdown();
    }
}

/// Waits until every transaction has a receipt and the block holding the last is sealed.
fn wait_done(node: &Node, hashes: &[B256]) -> Result<(), RunError> {
    let mut done = 0;
    let mut last_progress = Instant::now();
    let mut newest_block = 0;
    while done < hashes.len() {
        match node.chain.tx(&hashes[done]) {
            Some(tx) => {
                newest_block = newest_block.max(tx.block_number);
                done += 1;
                last_progress = Instant::now();
            }
            None => {
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err(RunError::Stalled { done, total: hashes.len() });
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    node.chain
        .wait_block_hash(newest_block)
        .map_err(|_| RunError::Stalled { done, total: hashes.len() })?;
    Ok(())
}

fn hashes(p: &Prepared) -> Vec<B256> {
    p.txs.iter().map(keccak256).collect()
}

/// Submits through the library API (`Node::submit_batch`: parallel recovery) and waits.
pub fn inprocess(p: &Prepared, settings: &RunSettings) -> Result<RunResult, RunError> {
    let (node, _dir) = start_node(p, settings)?;
    let hashes = hashes(p);
    let cpu = cpu_time();
    let started = Instant::now();
    for chunk in p.txs.chunks(settings.batch) {
        for result in node.submit_batch(chunk.to_vec()) {
            result.map_err(|e| RunError::Refused(e.to_string()))?;
        }
    }
    wait_done(&node, &hashes)?;
    let result = RunResult { elapsed: started.elapsed(), cpu: cpu_time() - cpu };
    node.shutdown();
    Ok(result)
}

/// Submits over JSON-RPC (HTTP batches of `eth_sendRawTransaction` on several connections)
/// to the sequencer's own server, and waits.
pub fn rpc(p: &Prepared, settings: &RunSettings) -> Result<RunResult, RunError> {
    let served = ServedNode::start(p, settings)?;
    let hashes = hashes(p);
    let url = served.url.clone();
    let bodies: Vec<String> = p
        .txs
        .chunks(settings.batch)
        .map(|chunk| {
            let calls: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]})
                })
                .collect();
            serde_json::Value::Array(calls).to_string()
        })
        .collect();
    let cpu = cpu_time();
    let started = Instant::now();
    let submitted: Result<(), RunError> = served.runtime.block_on(async {
        let client = reqwest::Client::new();
        let bodies = Arc::new(bodies);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..settings.connections {
            let (client, bodies, next, url) =
                (client.clone(), bodies.clone(), next.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return Ok(()) };
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(|e| RunError::Io(e.to_string()))?;
                    let items: Vec<serde_json::Value> =
                        response.json().await.map_err(|e| RunError::Io(e.to_string()))?;
                    if let Some(error) = items.iter().find(|item| item.get("error").is_some()) {
                        return Err(RunError::Refused(error["error"].to_string()));
                    }
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| RunError::Io(e.to_string()))??;
        }
        Ok(())
    });
    submitted?;
    wait_done(&served.node, &hashes)?;
    let result = RunResult { elapsed: started.elapsed(), cpu: cpu_time() - cpu };
    served.stop();
    Ok(result)
}
