//! Our pipeline as a user gets it, everything persisted (WAL fsync per mini-block, NOMT roots):
//! the sequencer as a library (in-process) and behind its JSON-RPC server (HTTP batches,
//! WebSocket batches, `realtime_sendRawTransaction`); closed-loop (each client sends its next
//! batch when the previous is answered) or open-loop (transactions sent at a fixed rate,
//! whatever the node does).
//!
//! Each transaction's latency runs from its submission to the moment its receipt can be read
//! (its mini-block is durable and indexed); for `realtime_sendRawTransaction`, to the moment
//! the client has the receipt in hand. Open-loop runs count from the time a transaction was
//! due, not the time it went out, so a node that falls behind is not flattered.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::{B256, Bytes, keccak256};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use sequencer::{Config, Node};
use serde_json::Value;

use crate::{stages::Stages, workload::Prepared};

/// Where the load goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The sequencer as a library: `Node::submit_batch`.
    Inprocess,
    /// JSON-RPC over HTTP: batches of `eth_sendRawTransaction`.
    Rpc,
    /// JSON-RPC over WebSocket: batches of `eth_sendRawTransaction`.
    Ws,
    /// `realtime_sendRawTransaction` over HTTP, one transaction per call, each answered with
    /// its receipt; at most `--connections` calls in flight (open loop: a call due while all
    /// are busy waits, and the wait counts in its latency).
    Realtime,
}

impl Target {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Inprocess => "inprocess",
            Target::Rpc => "rpc",
            Target::Ws => "ws",
            Target::Realtime => "realtime",
        }
    }
}

/// Settings of our pipeline for a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSettings {
    /// EVM block interval.
    pub block_time: Duration,
    /// Longest mini-block.
    pub mini_block_time: Duration,
    /// `blocks.mini_block_gather`: shortest gap from a mini-block's seal to the next one's
    /// start under a trickle.
    pub mini_block_gather: Duration,
    /// Transactions per submission batch (in-process) or per JSON-RPC batch.
    pub batch: usize,
    /// Concurrent JSON-RPC connections (closed loop: clients).
    pub connections: usize,
    /// Build every block's witness (`feed.witnesses`, on by default in the sequencer).
    pub witnesses: bool,
    /// Open loop: transactions per second, sent on a 1 ms schedule. `None`: closed loop.
    pub rate: Option<f64>,
}

/// CPU time the node spent in each stage over a run, from its own timers (the CPU clock of the
/// thread that ran each stage, summed over threads), and the same stages' wall time.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StageTimes {
    /// Admission: decoding, checks, sender recovery and hash (per transaction, on the
    /// submitting threads).
    pub admit: Duration,
    /// Execution of mini-blocks (the state diff is built as they execute).
    pub execute: Duration,
    /// Encoding each mini-block's diff for followers and applying it to memstate.
    pub diff: Duration,
    /// WAL appends (the fsync's device time is not CPU time).
    pub wal: Duration,
    /// NOMT root commits, witnesses included: the committer thread's CPU in its commits plus
    /// the CPU of NOMT's own threads, which do the commits' hashing and I/O.
    pub root: Duration,
    /// Compiling hot contracts (the JIT's threads).
    pub jit: Duration,
    /// Publishing: signing and gossiping envelopes, the DA archive (the feed's and libp2p's
    /// threads).
    pub feed: Duration,
    /// Wall time of admit, execute, diff, WAL and root (the committer thread's), as
    /// Prometheus shows them: on a host with more runnable threads than cores they also count
    /// the time a thread waited for a core.
    pub wall: [Duration; 5],
    /// Mini-blocks sealed.
    pub mini_blocks: u64,
    /// Median time from a mini-block's start of execution to its being durable, µs.
    pub seal_p50_us: u64,
    /// 99th percentile of the same, µs.
    pub seal_p99_us: u64,
    /// Bytes of encoded state diffs published.
    pub diff_bytes: u64,
}

impl StageTimes {
    fn read(stages: &Stages, cpu_by_thread: &[(String, Duration)]) -> Self {
        let secs = |name: &str| Duration::from_secs_f64(stages.histogram(name).sum);
        let seal = stages.histogram("sequencer_mini_block_seal_seconds");
        let group = |name: &str| {
            cpu_by_thread.iter().filter(|(g, _)| g == name).map(|(_, cpu)| *cpu).sum::<Duration>()
        };
        let nomt_threads = group(crate::threads::NOMT_GROUP);
        Self {
            admit: secs("sequencer_admit_cpu_seconds"),
            jit: group(crate::threads::JIT_GROUP),
            feed: group(crate::threads::FEED_GROUP),
            execute: secs("sequencer_execution_cpu_seconds"),
            diff: secs("sequencer_diff_cpu_seconds"),
            wal: secs("sequencer_wal_append_cpu_seconds"),
            root: secs("sequencer_root_commit_cpu_seconds") + nomt_threads,
            wall: [
                "sequencer_admit_seconds",
                "sequencer_execution_seconds",
                "sequencer_diff_seconds",
                "sequencer_wal_append_seconds",
                "sequencer_root_commit_seconds",
            ]
            .map(secs),
            mini_blocks: seal.count,
            seal_p50_us: seal.p50,
            seal_p99_us: seal.p99,
            diff_bytes: stages.counter("feed_diff_bytes_total"),
        }
    }
}

/// Result of one run of our pipeline.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// From the first submission to the seal (state root committed) of the block holding the
    /// last transaction.
    pub elapsed: Duration,
    /// Process CPU time (user + system) over the same span.
    pub cpu: Duration,
    /// Gas used by the run's transactions.
    pub gas: u64,
    /// Submission to receipt, µs, one value per transaction observed.
    pub latency: Histogram<u64>,
    /// The node's stage timers (`None` when another metrics recorder owns this process).
    pub stages: Option<StageTimes>,
    /// Peak resident memory of this process during the run (the prepared workload included).
    pub peak_rss_bytes: u64,
    /// CPU time by what the threads do (`threads::group`), largest first.
    pub cpu_by_thread: Vec<(String, Duration)>,
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

fn io(e: impl std::fmt::Display) -> RunError {
    RunError::Io(e.to_string())
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

/// Resets the kernel's peak-RSS mark of this process (`VmHWM`), where the kernel allows it.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak resident memory since the last reset, bytes (0 if unknown).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn start_node(
    p: &Prepared,
    settings: &RunSettings,
) -> Result<(Arc<Node>, tempfile::TempDir), RunError> {
    let dir = tempfile::tempdir().map_err(io)?;
    let mut config = Config::default();
    config.storage.datadir = Some(dir.path().to_path_buf());
    config.storage.nomt_buckets = (p.alloc.len() as u32 / 8).max(16_384);
    // NOMT's caches as `tuning plan` sizes them for this many keys: at millions of accounts
    // its 256 MiB defaults leave most of the trie on disk.
    let keys: u64 =
        p.alloc.values().map(|a| 1 + a.storage.as_ref().map_or(0, |s| s.len() as u64)).sum();
    let (page, leaf) = tuning::nomt_caches_mib(
        keys,
        (keys * tuning::BYTES_PER_KEY) >> 20,
        crate::machine::meminfo("MemTotal:").unwrap_or(0) >> 10,
    );
    config.storage.nomt_page_cache_mib = page as usize;
    config.storage.nomt_leaf_cache_mib = leaf as usize;
    config.metrics.enabled = false;
    // The whole pipeline, gossip included, on a loopback port of its own.
    config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.chain.hardfork = <&str>::from(p.kind.spec()).to_ascii_lowercase();
    config.blocks.evm_block_interval = settings.block_time;
    config.blocks.mini_block_interval = settings.mini_block_time;
    config.blocks.mini_block_gather = settings.mini_block_gather;
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
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(io)?;
        let (addr, handle) = runtime
            .block_on(sequencer::rpc::serve(node.clone(), "127.0.0.1:0".parse().expect("addr")))
            .map_err(io)?;
        Ok(Self { node, runtime, url: format!("http://{addr}"), handle, _dir: dir })
    }

    pub(crate) fn stop(self) {
        let _ = self.handle.stop();
        self.node.shutdown();
    }
}

/// Waits until every transaction has a receipt and the block holding the last is sealed.
fn wait_done(node: &Node, hashes: &[B256], failed: &Failure) -> Result<(), RunError> {
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
                failed.check()?;
                if last_progress.elapsed() > Duration::from_secs(30) {
                    return Err(RunError::Stalled { done, total: hashes.len() });
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    // The committer may be blocks behind execution (large states): wait while it seals.
    let mut head = node.chain.head_number();
    while node.chain.wait_block_hash(newest_block).is_err() {
        failed.check()?;
        let now = node.chain.head_number();
        if now == head {
            return Err(RunError::Stalled { done, total: hashes.len() });
        }
        head = now;
    }
    Ok(())
}

/// Send and receipt times of every transaction, ns since the run's start (0: not yet).
struct Clock {
    t0: Instant,
    sent: Vec<AtomicU64>,
    receipt: Vec<AtomicU64>,
}

impl Clock {
    fn new(n: usize) -> Self {
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Self { t0: Instant::now(), sent: zeros(), receipt: zeros() }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Closed loop: the transactions of `range` are sent now.
    fn sent_now(&self, range: Range<usize>) {
        let now = self.now().max(1);
        for i in range {
            self.sent[i].store(now, Ordering::Relaxed);
        }
    }

    /// Open loop: each transaction counts from the time it was due.
    fn sent_due(&self, range: Range<usize>, rate: f64) {
        for i in range {
            self.sent[i].store(due_ns(i, rate).max(1), Ordering::Relaxed);
        }
    }

    fn latency(&self) -> Histogram<u64> {
        // 1 µs to 10 min at 3 significant digits; `saturating_record` does not grow it.
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        for (sent, receipt) in self.sent.iter().zip(&self.receipt) {
            let (s, r) = (sent.load(Ordering::Relaxed), receipt.load(Ordering::Relaxed));
            if s > 0 && r > 0 {
                h.saturating_record((r.saturating_sub(s) / 1000).max(1));
            }
        }
        h
    }
}

/// When transaction `i` is due at `rate` per second, ns since the start.
fn due_ns(i: usize, rate: f64) -> u64 {
    (i as f64 * 1e9 / rate) as u64
}

/// The open-loop schedule: every millisecond, the transactions due by then (at most `batch`
/// per submission). Calls `send` for each chunk once it is due.
fn schedule(
    clock: &Clock,
    n: usize,
    rate: f64,
    batch: usize,
    mut send: impl FnMut(Range<usize>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let batch = batch.max(1);
    let mut next = 0;
    while next < n {
        let now = clock.now();
        // Everything due by now, and nothing before its time.
        let due = ((now as f64 * rate / 1e9) as usize + 1).min(n);
        if due <= next {
            let wait = due_ns(next, rate).saturating_sub(now).min(1_000_000);
            std::thread::sleep(Duration::from_nanos(wait.max(50_000)));
            continue;
        }
        let end = due.min(next + batch);
        clock.sent_due(next..end, rate);
        send(next..end)?;
        next = end;
    }
    Ok(())
}

/// The first error of the run's client tasks.
#[derive(Default)]
struct Failure(Mutex<Option<String>>);

impl Failure {
    fn set(&self, err: RunError) {
        self.0.lock().expect("not poisoned").get_or_insert(err.to_string());
    }

    fn check(&self) -> Result<(), RunError> {
        match self.0.lock().expect("not poisoned").clone() {
            Some(err) => Err(RunError::Refused(err)),
            None => Ok(()),
        }
    }
}

/// Records the moment each of the run's transactions shows up in a durable mini-block.
fn spawn_watcher(
    node: &Node,
    index: Arc<HashMap<B256, u32>>,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    progress: ProgressBar,
) -> std::thread::JoinHandle<()> {
    let mut events = node.chain.mini_block_events.subscribe();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
        let Ok(runtime) = runtime else { return };
        runtime.block_on(async move {
            use tokio::sync::broadcast::error::RecvError;
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
                    Ok(Ok(mini)) => {
                        let now = clock.now();
                        let mut seen = 0;
                        for tx in &mini.txs {
                            if let Some(&i) = index.get(&tx.tx.hash) {
                                let _ = clock.receipt[i as usize].compare_exchange(
                                    0,
                                    now,
                                    Ordering::Relaxed,
                                    Ordering::Relaxed,
                                );
                                seen += 1;
                            }
                        }
                        progress.inc(seen);
                    }
                    // Missed mini-blocks: their transactions have no latency recorded.
                    Ok(Err(RecvError::Lagged(_))) => {}
                    Ok(Err(RecvError::Closed)) => break,
                    Err(_) => {}
                }
            }
        });
    })
}

fn batch_body(txs: &[Bytes]) -> String {
    let calls: Vec<Value> = txs
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]})
        })
        .collect();
    Value::Array(calls).to_string()
}

/// Checks the answer to a batch: every call must have a result.
fn check_batch(text: &str) -> Result<(), RunError> {
    let items: Vec<Value> = serde_json::from_str(text).map_err(io)?;
    match items.iter().find(|item| item.get("error").is_some()) {
        Some(error) => Err(RunError::Refused(error["error"].to_string())),
        None => Ok(()),
    }
}

async fn post_batch(client: &reqwest::Client, url: &str, body: String) -> Result<(), RunError> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(io)?;
    check_batch(&response.text().await.map_err(io)?)
}

/// One `realtime_sendRawTransaction`; the receipt must say success.
async fn realtime(client: &reqwest::Client, url: &str, raw: &Bytes) -> Result<(), RunError> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "realtime_sendRawTransaction", "params": [raw]});
    let response: Value = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(io)?
        .json()
        .await
        .map_err(io)?;
    if let Some(error) = response.get("error") {
        return Err(RunError::Refused(error.to_string()));
    }
    if response["result"]["status"] != "0x1" {
        return Err(RunError::Refused(format!("receipt without success: {}", response["result"])));
    }
    Ok(())
}

/// One WebSocket connection sending the batches it is given and reading every answer (in
/// order: the server answers a connection's requests in turn). A batch may come with a
/// channel told when its answer has been read.
async fn ws_connection(
    url: String,
    mut bodies: tokio::sync::mpsc::UnboundedReceiver<(
        String,
        Option<tokio::sync::oneshot::Sender<()>>,
    )>,
    one_at_a_time: bool,
) -> Result<(), RunError> {
    use tokio_tungstenite::tungstenite::Message;
    let (socket, _) = tokio_tungstenite::connect_async(url).await.map_err(io)?;
    let (mut sink, mut stream) = socket.split();
    let mut waiting = std::collections::VecDeque::new();
    let mut closed = false;
    loop {
        if closed && waiting.is_empty() {
            return Ok(());
        }
        let may_send = !closed && (!one_at_a_time || waiting.is_empty());
        tokio::select! {
            body = bodies.recv(), if may_send => match body {
                Some((body, answered)) => {
                    sink.send(Message::text(body)).await.map_err(io)?;
                    waiting.push_back(answered);
                }
                None => closed = true,
            },
            message = stream.next(), if !waiting.is_empty() => {
                match message.ok_or_else(|| io("WebSocket closed by the server"))?.map_err(io)? {
                    Message::Text(text) => {
                        check_batch(&text)?;
                        if let Some(Some(answered)) = waiting.pop_front() {
                            let _ = answered.send(());
                        }
                    }
                    Message::Close(_) => return Err(io("WebSocket closed by the server")),
                    _ => {}
                }
            }
        }
    }
}

/// The node a run drives, with or without its JSON-RPC server.
enum Served {
    /// The node, and the data directory it lives in for the run.
    Library {
        node: Arc<Node>,
        _dir: tempfile::TempDir,
    },
    Rpc(ServedNode),
}

impl Served {
    fn node(&self) -> &Arc<Node> {
        match self {
            Served::Library { node, .. } => node,
            Served::Rpc(served) => &served.node,
        }
    }

    fn stop(self) {
        match self {
            Served::Library { node, .. } => node.shutdown(),
            Served::Rpc(served) => served.stop(),
        }
    }
}

/// Runs `p`'s transactions through `target` and measures the run. `progress` advances by
/// one for every transaction that has its receipt.
pub fn run(
    p: &Prepared,
    settings: &RunSettings,
    target: Target,
    progress: &ProgressBar,
) -> Result<RunResult, RunError> {
    let served = match target {
        Target::Inprocess => {
            let (node, dir) = start_node(p, settings)?;
            Served::Library { node, _dir: dir }
        }
        _ => Served::Rpc(ServedNode::start(p, settings)?),
    };
    let node = served.node().clone();
    let n = p.txs.len();
    let hashes: Vec<B256> = p.txs.iter().map(keccak256).collect();
    let index: Arc<HashMap<B256, u32>> =
        Arc::new(hashes.iter().enumerate().map(|(i, h)| (*h, i as u32)).collect());
    let clock = Arc::new(Clock::new(n));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = spawn_watcher(&node, index, clock.clone(), stop.clone(), progress.clone());
    let failed = Arc::new(Failure::default());
    let stages = Stages::global();
    if let Some(stages) = stages {
        stages.reset();
    }
    reset_peak_rss();
    let threads_before = crate::threads::snapshot();
    let cpu = cpu_time();
    let started = Instant::now();

    let submitted = match &served {
        Served::Library { node, .. } => submit_library(node, p, settings, &clock),
        Served::Rpc(served) => submit_rpc(served, p, settings, target, &clock, &failed),
    };
    let finished = submitted.and_then(|()| wait_done(&node, &hashes, &failed));
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu;
    let cpu_by_thread = crate::threads::by_group(&threads_before, &crate::threads::snapshot());
    let peak_rss_bytes = peak_rss();
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let stages = stages.map(|s| StageTimes::read(s, &cpu_by_thread));
    let gas = hashes.iter().filter_map(|h| node.chain.tx(h)).map(|tx| tx.gas_used).sum();
    served.stop();
    finished?;
    failed.check()?;
    Ok(RunResult {
        elapsed,
        cpu,
        gas,
        latency: clock.latency(),
        stages,
        peak_rss_bytes,
        cpu_by_thread,
    })
}

fn submit_library(
    node: &Node,
    p: &Prepared,
    settings: &RunSettings,
    clock: &Clock,
) -> Result<(), RunError> {
    let submit = |range: Range<usize>| {
        for result in node.submit_batch(p.txs[range].to_vec()) {
            result.map_err(|e| RunError::Refused(e.to_string()))?;
        }
        Ok(())
    };
    match settings.rate {
        Some(rate) => schedule(clock, p.txs.len(), rate, settings.batch, submit),
        None => {
            for start in (0..p.txs.len()).step_by(settings.batch.max(1)) {
                let range = start..(start + settings.batch.max(1)).min(p.txs.len());
                clock.sent_now(range.clone());
                submit(range)?;
            }
            Ok(())
        }
    }
}

fn submit_rpc(
    served: &ServedNode,
    p: &Prepared,
    settings: &RunSettings,
    target: Target,
    clock: &Arc<Clock>,
    failed: &Arc<Failure>,
) -> Result<(), RunError> {
    let n = p.txs.len();
    let batch = settings.batch.max(1);
    let client = reqwest::Client::new();
    let http_url = served.url.clone();
    let ws_url = served.url.replacen("http://", "ws://", 1);
    let _guard = served.runtime.enter();
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), RunError>>> = Vec::new();
    match (target, settings.rate) {
        (Target::Rpc, None) => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..settings.connections.max(1) {
                let (client, url, next, clock, txs) =
                    (client.clone(), http_url.clone(), next.clone(), clock.clone(), p.txs.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= n {
                            return Ok(());
                        }
                        let range = start..(start + batch).min(n);
                        let body = batch_body(&txs[range.clone()]);
                        clock.sent_now(range);
                        post_batch(&client, &url, body).await?;
                    }
                }));
            }
        }
        (Target::Rpc, Some(rate)) => {
            schedule(clock, n, rate, batch, |range| {
                let (client, url, failed_) = (client.clone(), http_url.clone(), failed.clone());
                let body = batch_body(&p.txs[range]);
                tasks.push(tokio::spawn(async move {
                    post_batch(&client, &url, body).await.inspect_err(|e| failed_.set(io(e)))
                }));
                failed.check()
            })?;
        }
        (Target::Ws, None) => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..settings.connections.max(1) {
                let (url, next, clock, txs) =
                    (ws_url.clone(), next.clone(), clock.clone(), p.txs.clone());
                tasks.push(tokio::spawn(async move {
                    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                    let connection = tokio::spawn(ws_connection(url, receiver, true));
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= n {
                            break;
                        }
                        let range = start..(start + batch).min(n);
                        let body = batch_body(&txs[range.clone()]);
                        clock.sent_now(range);
                        let (answered, wait) = tokio::sync::oneshot::channel();
                        if sender.send((body, Some(answered))).is_err() || wait.await.is_err() {
                            break;
                        }
                    }
                    drop(sender);
                    connection.await.map_err(io)?
                }));
            }
        }
        (Target::Ws, Some(rate)) => {
            let mut senders = Vec::new();
            for _ in 0..settings.connections.max(1) {
                let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                senders.push(sender);
                tasks.push(tokio::spawn(ws_connection(ws_url.clone(), receiver, false)));
            }
            let mut turn = 0;
            schedule(clock, n, rate, batch, |range| {
                let body = batch_body(&p.txs[range]);
                turn = (turn + 1) % senders.len();
                senders[turn].send((body, None)).map_err(|_| io("WebSocket connection ended"))
            })?;
        }
        (Target::Realtime, None) => {
            let next = Arc::new(AtomicUsize::new(0));
            for _ in 0..settings.connections.max(1) {
                let (client, url, next, clock, txs) =
                    (client.clone(), http_url.clone(), next.clone(), clock.clone(), p.txs.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        clock.sent_now(i..i + 1);
                        realtime(&client, &url, &txs[i]).await?;
                        clock.receipt[i].store(clock.now(), Ordering::Relaxed);
                    }
                }));
            }
        }
        (Target::Realtime, Some(rate)) => {
            // A client with `connections` connections, as a load generator has (wrk2): a call
            // that finds them all busy waits its turn, and that wait counts in its latency.
            let permits = Arc::new(tokio::sync::Semaphore::new(settings.connections.max(1)));
            schedule(clock, n, rate, batch, |range| {
                for i in range {
                    let (client, url, clock, txs, failed_, permits) = (
                        client.clone(),
                        http_url.clone(),
                        clock.clone(),
                        p.txs.clone(),
                        failed.clone(),
                        permits.clone(),
                    );
                    tasks.push(tokio::spawn(async move {
                        let _permit = permits.acquire_owned().await.map_err(io)?;
                        let sent = realtime(&client, &url, &txs[i]).await;
                        clock.receipt[i].store(clock.now(), Ordering::Relaxed);
                        sent.inspect_err(|e| failed_.set(io(e)))
                    }));
                }
                failed.check()
            })?;
        }
        (Target::Inprocess, _) => unreachable!("the library target has no server"),
    }
    served.runtime.block_on(async {
        for task in tasks {
            task.await.map_err(io)??;
        }
        Ok(())
    })
}
