//! The sequencer as a library: start-up (data directory, WAL replay, genesis), transaction
//! intake, and the block builder thread that seals mini-blocks and EVM blocks.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use alloy_eips::eip1559::{BaseFeeParams, calc_next_block_base_fee};
use alloy_primitives::{Address, B256, Bytes, U256};
use memstate::{DiffCodec, MemState, StateDiff};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::{
    chain::{Chain, ExecutedTx, MiniBlock, OpenBlock},
    config::Config,
    exec::{BatchOutcome, BlockEnvParams, ChainRules},
    host::Placement,
    pool::Pool,
    publish::{FeedEvent, FeedSender},
    root::{BlockToSeal, Checkpoints, Committer, NomtOptions, RootError},
    stage::Stage,
    store::{BlockStore, Checkpoint, StoreError},
    tx::{PooledTx, StaticRules, TxError, decode_and_check, decode_batch, decode_recovered},
    wal::{Record, Wal, WalError},
};

/// The sequencer could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory is unusable.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Genesis could not be read.
    #[error("genesis {path}: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The WAL could not be read.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// NOMT could not be opened.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The host does not satisfy the config.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// The block store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The feed publisher (signer key, DA backend).
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// A WAL transaction did not replay as it executed.
    #[error("WAL replay of block {block}: {reason}")]
    Replay {
        /// EVM block number.
        block: u64,
        /// What went wrong.
        reason: String,
    },
}

/// Why a realtime submission returned no receipt.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Refused at intake.
    #[error(transparent)]
    Rejected(#[from] TxError),
    /// Admitted, then refused at execution.
    #[error("{0}")]
    Dropped(String),
    /// Not sealed in time (it may still be).
    #[error("realtime transaction expired")]
    Expired,
    /// The sequencer is stopping or has stopped after a fatal error.
    #[error("sequencer is shutting down")]
    ShuttingDown,
}

type Waiter = oneshot::Sender<Result<Arc<ExecutedTx>, String>>;

/// A running sequencer.
pub struct Node {
    /// The configuration it runs with.
    pub config: Config,
    /// Hard fork and chain id.
    pub rules: ChainRules,
    /// Stateless admission rules.
    pub static_rules: StaticRules,
    /// Current state (includes every sealed mini-block).
    pub state: Arc<MemState>,
    /// Where threads run and state lives on this host.
    pub placement: Placement,
    /// The parallel execution engine.
    pub executor: crate::parallel::Executor,
    /// Blocks, receipts and events.
    pub chain: Arc<Chain>,
    /// Pending transactions.
    pub pool: Arc<Pool>,
    /// Provers' verdicts on the sealed blocks.
    pub verdicts: Arc<crate::verdicts::Verdicts>,
    /// The signed feed and its DA (`None` when `feed.da = "off"`).
    pub publisher: Option<crate::publish::Publisher>,
    network: Mutex<Option<crate::publish::Network>>,
    waiters: Mutex<HashMap<B256, Vec<Waiter>>>,
    wake: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    builder: Mutex<Option<JoinHandle<()>>>,
    datadir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("datadir", &self.datadir).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Node {
    /// Starts a sequencer: opens the data directory, replays the WAL, and starts the builder.
    /// In `dev` mode without a data directory it runs in a fresh temporary one.
    pub fn start(config: Config, dev: bool) -> Result<Arc<Self>, NodeError> {
        Self::start_with_alloc(config, dev, None)
    }

    /// As [`Node::start`], with the genesis accounts given directly (embedding and benchmarks)
    /// instead of read from `chain.genesis`.
    pub fn start_with_alloc(
        config: Config,
        dev: bool,
        alloc: Option<memstate::GenesisAlloc>,
    ) -> Result<Arc<Self>, NodeError> {
        config.validate()?;
        let datadir = crate::host::intended_datadir(&config, dev);
        let placement = Placement::prepare(&config, datadir.as_deref())?;
        Self::start_placed(config, dev, alloc, placement)
    }

    /// As [`Node::start_with_alloc`], on a placement already prepared (the binary prepares it
    /// first so that its RPC threads are pinned from the start).
    pub fn start_placed(
        config: Config,
        dev: bool,
        alloc: Option<memstate::GenesisAlloc>,
        placement: Placement,
    ) -> Result<Arc<Self>, NodeError> {
        config.validate()?;
        let spec = config.chain.spec()?;
        let (datadir, tempdir) = match crate::host::intended_datadir(&config, dev) {
            Some(dir) => (dir, None),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("sequencer-dev-")
                    .tempdir()
                    .map_err(|source| NodeError::DataDir { path: std::env::temp_dir(), source })?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let io_err = |source| NodeError::DataDir { path: datadir.clone(), source };
        std::fs::create_dir_all(&datadir).map_err(io_err)?;

        let alloc = match (alloc, &config.chain.genesis) {
            (Some(alloc), _) => alloc,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| NodeError::Genesis {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                memstate::parse_alloc(&text)
                    .map_err(|e| NodeError::Genesis { path: path.clone(), reason: e.to_string() })?
            }
            (None, None) if dev => crate::dev::dev_alloc(),
            (None, None) => {
                return Err(NodeError::Genesis {
                    path: PathBuf::from("<none>"),
                    reason: "chain.genesis is required outside --dev".into(),
                });
            }
        };

        let (mut wal, records) = Wal::open(&datadir.join("wal"), config.storage.fsync)?;
        let (store, stored) = BlockStore::open(&datadir.join("blocks.log"))?;
        let prunable = Arc::new(AtomicU64::new(0));
        let mut checkpoints = Checkpoints {
            path: datadir.join("checkpoint.bin"),
            newest: None,
            prunable: prunable.clone(),
        };
        // The newest usable checkpoint: readable, and with the history up to its block.
        let mut checkpoint = None;
        for path in [checkpoints.path.clone(), checkpoints.prev_path()] {
            match Checkpoint::read(&path) {
                Ok(Some(c)) if (stored.len() as u64) > c.block => {
                    checkpoint = Some(c);
                    break;
                }
                Ok(Some(c)) => {
                    tracing::warn!(block = c.block, path = %path.display(), "ignoring a checkpoint ahead of the block store");
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "ignoring the checkpoint");
                    // Out of the way, so the next checkpoint does not push it over the
                    // older one as "previous".
                    if path == checkpoints.path {
                        std::fs::remove_file(&path).map_err(io_err)?;
                    }
                }
            }
        }
        checkpoints.newest = checkpoint.as_ref().map(|c| c.block);
        // NOMT is derived data: rebuilt at every start, from the checkpoint or from genesis.
        let nomt_dir = datadir.join("nomt");
        if nomt_dir.exists() {
            std::fs::remove_dir_all(&nomt_dir).map_err(io_err)?;
        }
        let chain = Arc::new(Chain::new());
        let state = match &checkpoint {
            Some(c) => {
                let mut stored = stored.into_iter();
                for (_, block) in stored.by_ref().take(c.block as usize + 1) {
                    chain.restore_block(Arc::new(block));
                }
                // Later blocks will be sealed again by the replay.
                if let Some((offset, _)) = stored.next() {
                    store.truncate(offset)?;
                }
                MemState::from_diff_in(placement.layout.clone(), &c.state)
            }
            None => {
                store.truncate(0)?;
                MemState::with_layout(placement.layout.clone())
            }
        };
        let state = Arc::new(state);
        let witness_store = if config.feed.witnesses {
            let dir = config.feed.archive_dir.clone().unwrap_or_else(|| datadir.join("archive"));
            Some(feed::LocalArchive::witnesses(&dir).map_err(crate::publish::PublishError::from)?)
        } else {
            None
        };
        let verdicts = Arc::new(crate::verdicts::Verdicts::new(
            chain.clone(),
            config.chain.chain_id,
            config.feed.provers.clone(),
        ));
        let nomt = NomtOptions {
            dir: &nomt_dir,
            buckets: config.storage.nomt_buckets,
            concurrency: config.storage.nomt_commit_concurrency,
            io_workers: config.storage.nomt_io_workers,
            page_cache_mib: config.storage.nomt_page_cache_mib,
            leaf_cache_mib: config.storage.nomt_leaf_cache_mib,
            cpus: placement.nomt_cpus(),
            witnesses: witness_store
                .clone()
                .map(|store| crate::root::Witnesses { state: state.clone(), store }),
        };
        let initial = checkpoint.as_ref().map(|c| &c.state);
        let da = crate::publish::Da::open(&config.feed, &datadir)?;
        let network = crate::publish::Network::start(
            &config.p2p,
            da.as_ref(),
            &datadir,
            dev,
            config.chain.chain_id,
            crate::publish::Services { witnesses: witness_store, verdicts: verdicts.clone() },
        )?;
        let publisher = crate::publish::Publisher::start(
            &config.feed,
            da,
            &datadir,
            dev,
            config.chain.chain_id,
            network.as_ref().map(|n| n.p2p.clone()),
        )?;
        let feed = publisher.as_ref().and_then(|p| Some((p.sender()?, p.archived())));
        let (committer, root) =
            Committer::start(nomt, spec, chain.clone(), store, checkpoints, initial, feed)?;
        if let (Some(c), Some(root)) = (&checkpoint, root) {
            let expected = chain.block(c.block).map(|b| b.header.state_root).unwrap_or_default();
            if root != expected {
                return Err(NodeError::Replay {
                    block: c.block,
                    reason: format!("checkpoint state root {root} != block state root {expected}"),
                });
            }
        }

        let rules = ChainRules { spec, chain_id: config.chain.chain_id };
        let static_rules = StaticRules {
            chain_id: config.chain.chain_id,
            spec,
            max_tx_size: config.pool.max_tx_size,
            block_gas_limit: config.chain.block_gas_limit,
        };
        let node = Arc::new(Node {
            rules,
            static_rules,
            state,
            executor: crate::parallel::Executor::for_node(&config.executor, &placement)
                .map_err(|e| NodeError::DataDir {
                    path: datadir.clone(),
                    source: std::io::Error::other(format!("executor threads: {e}")),
                })?
                .with_jit(start_jit(&config.jit, &datadir, &placement)),
            placement,
            chain,
            pool: Arc::new(Pool::new(config.pool.clone())),
            verdicts,
            publisher,
            network: Mutex::new(network),
            waiters: Mutex::new(HashMap::new()),
            wake: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            builder: Mutex::new(None),
            datadir,
            _tempdir: tempdir,
            config,
        });

        let started = Instant::now();
        let (mut builder, to_replay) = match checkpoint {
            Some(c) => {
                let after = c.block;
                let pending = records
                    .iter()
                    .filter(|r| match r {
                        Record::MiniBlock { env, .. } | Record::Seal { env } => env.number > after,
                        Record::Genesis { .. } => false,
                    })
                    .cloned()
                    .collect::<Vec<_>>();
                tracing::info!(block = after, "resuming from checkpoint");
                (Builder::resume(node.clone(), wal, committer, prunable, &c), pending)
            }
            None => {
                let genesis_ts = match records.first() {
                    Some(Record::Genesis { timestamp }) => *timestamp,
                    Some(_) => {
                        return Err(NodeError::Replay {
                            block: 0,
                            reason: "the WAL does not start at genesis (it was pruned behind a \
                                     checkpoint) and no checkpoint is usable"
                                .into(),
                        });
                    }
                    None => {
                        let timestamp = now_ms() / 1000;
                        wal.append(&[Record::Genesis { timestamp }])?;
                        timestamp
                    }
                };
                (
                    Builder::new(node.clone(), wal, committer, prunable, genesis_ts, &alloc),
                    records.get(1..).unwrap_or_default().to_vec(),
                )
            }
        };
        let replayed = builder.replay(&to_replay)?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                head = builder.env.number,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed WAL"
            );
        }
        // Serve nothing until every replayed block (and genesis) has its root and hash. The
        // first commit of a genesis of millions of accounts takes minutes, so this waits as
        // long as the committer runs, saying so every half minute.
        let sealed = builder.env.number - 1;
        while let Err(e) = node.chain.wait_block_hash(sealed) {
            if !builder.committer.as_ref().is_some_and(Committer::is_running) {
                return Err(NodeError::Replay {
                    block: sealed,
                    reason: format!("root commit did not finish: {e}"),
                });
            }
            tracing::info!(
                block = sealed,
                elapsed_s = started.elapsed().as_secs(),
                "waiting for the state root of the replayed blocks"
            );
        }
        let handle = std::thread::Builder::new()
            .name("block-builder".into())
            .spawn(move || {
                let cpu = builder.node.placement.builder_cpu();
                crate::host::pin_current("block-builder", cpu.as_ref().map(std::slice::from_ref));
                builder.run()
            })
            .map_err(|source| NodeError::DataDir { path: node.datadir.clone(), source })?;
        *node.builder.lock() = Some(handle);
        Ok(node)
    }

    /// The data directory in use.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// Base fee of the block being built.
    pub fn base_fee(&self) -> u64 {
        self.chain.open_block().base_fee
    }

    fn wake_builder(&self) {
        let mut pending = self.wake.0.lock();
        *pending = true;
        self.wake.1.notify_one();
    }

    fn admit(&self, tx: Arc<PooledTx>) -> Result<B256, TxError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(TxError::ShuttingDown);
        }
        if self.chain.tx(&tx.hash).is_some() {
            return Err(TxError::AlreadyKnown);
        }
        let result = self.pool.insert(tx, &self.state, self.base_fee());
        match &result {
            Ok(_) => {
                metrics::counter!("sequencer_tx_admitted_total").increment(1);
                self.wake_builder();
            }
            Err(err) => reject_metric(err),
        }
        result
    }

    /// Decodes, checks and admits one raw transaction; returns its hash.
    pub fn submit_raw(&self, raw: Bytes) -> Result<B256, TxError> {
        let tx = decode_and_check(raw, &self.static_rules).inspect_err(reject_metric)?;
        self.admit(Arc::new(tx))
    }

    /// Admits a transaction decoded elsewhere (e.g. with the rest of a JSON-RPC batch).
    pub fn submit_decoded(&self, decoded: Result<Arc<PooledTx>, TxError>) -> Result<B256, TxError> {
        decoded.inspect_err(reject_metric).and_then(|tx| self.admit(tx))
    }

    /// Admits many raw transactions, recovering their senders on all cores.
    pub fn submit_batch(&self, raws: Vec<Bytes>) -> Vec<Result<B256, TxError>> {
        decode_batch(raws, &self.static_rules)
            .into_iter()
            .map(|decoded| self.submit_decoded(decoded))
            .collect()
    }

    /// Admits a raw transaction and waits for its receipt (sealed and durable), up to `timeout`.
    pub async fn submit_raw_and_wait(
        &self,
        raw: Bytes,
        timeout: Duration,
    ) -> Result<Arc<ExecutedTx>, SubmitError> {
        let tx = Arc::new(decode_and_check(raw, &self.static_rules).inspect_err(reject_metric)?);
        let hash = tx.hash;
        let (sender, receiver) = oneshot::channel();
        // Registered before admission, so a seal that follows at once cannot be missed.
        self.waiters.lock().entry(hash).or_default().push(sender);
        if let Err(err) = self.admit(tx) {
            self.waiters.lock().remove(&hash);
            return Err(err.into());
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Ok(executed))) => Ok(executed),
            Ok(Ok(Err(reason))) => Err(SubmitError::Dropped(reason)),
            Ok(Err(_)) => Err(SubmitError::ShuttingDown),
            Err(_) => {
                self.waiters.lock().remove(&hash);
                // It may have sealed between the timeout and the removal.
                self.chain.tx(&hash).ok_or(SubmitError::Expired)
            }
        }
    }

    /// Waits for the receipt of an already admitted transaction, up to `timeout`.
    pub async fn wait_for_receipt(&self, hash: B256, timeout: Duration) -> Option<Arc<ExecutedTx>> {
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().entry(hash).or_default().push(sender);
        if let Some(tx) = self.chain.tx(&hash) {
            self.waiters.lock().remove(&hash);
            return Some(tx);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(Ok(executed))) => Some(executed),
            _ => self.chain.tx(&hash),
        }
    }

    /// Stops the builder after sealing the open block; waits for the last root commit.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake_builder();
        if let Some(handle) = self.builder.lock().take() {
            let _ = handle.join();
        }
        // Nothing executes any more: let no compile run on into the process's exit.
        self.executor.jit().stop();
        // The builder and the committer have stopped: publish what they handed over.
        if let Some(publisher) = &self.publisher {
            publisher.finish();
        }
        if let Some(network) = self.network.lock().as_mut() {
            network.stop();
        }
    }

    /// The libp2p peer id and listen addresses, when the network runs.
    pub fn p2p(&self) -> Option<p2p::P2p> {
        self.network.lock().as_ref().map(|n| n.p2p.clone())
    }

    /// True once the builder has stopped (after [`Node::shutdown`] or a fatal error).
    pub fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn notify(&self, included: &[Arc<ExecutedTx>], dropped: &[(Arc<PooledTx>, String)]) {
        let mut waiters = self.waiters.lock();
        if waiters.is_empty() {
            return;
        }
        for tx in included {
            for w in waiters.remove(&tx.tx.hash).into_iter().flatten() {
                let _ = w.send(Ok(tx.clone()));
            }
        }
        for (tx, reason) in dropped {
            for w in waiters.remove(&tx.hash).into_iter().flatten() {
                let _ = w.send(Err(reason.clone()));
            }
        }
    }
}

fn reject_metric(err: &TxError) {
    let reason: &'static str = match err {
        TxError::Decode(_) => "decode",
        TxError::TypeNotSupported(_) => "type",
        TxError::Oversized { .. } => "oversized",
        TxError::Unprotected => "unprotected",
        TxError::ChainId { .. } => "chain_id",
        TxError::InvalidSignature | TxError::InvalidSender(_) => "signature",
        TxError::IntrinsicGas { .. } | TxError::FloorDataGas { .. } => "intrinsic_gas",
        TxError::GasLimit { .. } | TxError::GasLimitTooHigh { .. } => "gas_limit",
        TxError::InitCodeTooLarge { .. } => "initcode",
        TxError::TipAboveFeeCap { .. } | TxError::FeeCapTooLow { .. } => "fee",
        TxError::EmptyAuthList => "auth_list",
        TxError::NonceTooLow { .. } => "nonce_too_low",
        TxError::NonceTooHigh { .. } => "nonce_too_high",
        TxError::InsufficientFunds { .. } => "insufficient_funds",
        TxError::SenderNotEoa { .. } => "sender_not_eoa",
        TxError::AlreadyKnown => "already_known",
        TxError::ReplacementUnderpriced => "underpriced",
        TxError::PoolFull => "pool_full",
        TxError::ShuttingDown => "shutting_down",
    };
    metrics::counter!("sequencer_tx_rejected_total", "reason" => reason).increment(1);
}

/// The builder's private state: the open EVM block and its accumulated diff.
struct Builder {
    node: Arc<Node>,
    wal: Wal,
    /// Block behind which WAL segments may be deleted (set by the root committer).
    prunable: Arc<AtomicU64>,
    committer: Option<Committer>,
    env: BlockEnvParams,
    block_started: Instant,
    /// When the newest mini-block was sealed.
    last_sealed: Instant,
    block_txs: Vec<Arc<ExecutedTx>>,
    block_diffs: Vec<Arc<StateDiff>>,
    block_wiped: Vec<(Address, U256)>,
    /// What the open block's executions read (for its witness).
    block_reads: memstate::ReadSet,
    /// The pre-block values of the keys the open block touched (for its witness).
    block_pre: memstate::witness::PreImages,
    /// Logs blooms, with the hashes of repeating contracts and event signatures remembered.
    blooms: chain_rpc::chain::BloomHasher,
    block_gas: u64,
    block_logs: u64,
    mini_index: u32,
    mini_number: u64,
    last_mini_hash: B256,
    /// Encodes each mini-block's diff for the feed, against the state before it.
    codec: Option<DiffCodec>,
    feed: Option<FeedSender>,
}

impl Builder {
    fn new(
        node: Arc<Node>,
        wal: Wal,
        committer: Committer,
        prunable: Arc<AtomicU64>,
        genesis_ts: u64,
        alloc: &memstate::GenesisAlloc,
    ) -> Self {
        let chain = &node.config.chain;
        let genesis_env = BlockEnvParams {
            number: 0,
            timestamp: genesis_ts,
            beneficiary: chain.beneficiary,
            base_fee: chain.initial_base_fee,
            gas_limit: chain.block_gas_limit,
        };
        let diff = memstate::genesis_diff(alloc);
        let wiped = node.state.apply(&diff);
        committer.submit(BlockToSeal {
            env: genesis_env,
            txs: Vec::new(),
            gas_used: 0,
            mini_block_count: 0,
            diffs: vec![Arc::new(diff)],
            wiped,
            reads: memstate::ReadSet::default(),
            pre: Default::default(),
            checkpoint: None,
        });
        let env = BlockEnvParams { number: 1, ..genesis_env };
        Self::at(node, wal, committer, prunable, env, 0, B256::ZERO)
    }

    /// A builder about to build the block of `env`, after `mini_number` mini-blocks.
    fn at(
        node: Arc<Node>,
        wal: Wal,
        committer: Committer,
        prunable: Arc<AtomicU64>,
        env: BlockEnvParams,
        mini_number: u64,
        last_mini_hash: B256,
    ) -> Self {
        let feed = node.publisher.as_ref().and_then(|p| p.sender());
        let codec = feed.as_ref().map(|_| DiffCodec::from_state(&node.state));
        let builder = Self {
            codec,
            feed,
            node,
            wal,
            prunable,
            committer: Some(committer),
            env,
            block_started: Instant::now(),
            last_sealed: Instant::now(),
            block_txs: Vec::new(),
            block_diffs: Vec::new(),
            block_wiped: Vec::new(),
            block_reads: memstate::ReadSet::default(),
            block_pre: Default::default(),
            blooms: Default::default(),
            block_gas: 0,
            block_logs: 0,
            mini_index: 0,
            mini_number,
            last_mini_hash,
        };
        builder.publish_open_block();
        builder
    }

    /// Tells readers which block is being built.
    fn publish_open_block(&self) {
        self.node.chain.set_open_block(OpenBlock {
            number: self.env.number,
            timestamp: self.env.timestamp,
            base_fee: self.env.base_fee,
            gas_limit: self.env.gas_limit,
            beneficiary: self.env.beneficiary,
            ..Default::default()
        });
    }

    /// A builder that goes on after checkpoint `c` (its state is already in `node.state`).
    fn resume(
        node: Arc<Node>,
        wal: Wal,
        committer: Committer,
        prunable: Arc<AtomicU64>,
        c: &Checkpoint,
    ) -> Self {
        Self::at(node, wal, committer, prunable, c.next_env, c.mini_number, c.last_mini_hash)
    }

    /// Re-executes WAL records; returns how many were replayed.
    fn replay(&mut self, records: &[Record]) -> Result<usize, NodeError> {
        for record in records {
            match record {
                Record::Genesis { .. } => {
                    return Err(NodeError::Replay {
                        block: self.env.number,
                        reason: "second genesis record".into(),
                    });
                }
                Record::MiniBlock { env, index, sealed_at_ms, txs } => {
                    self.env = *env;
                    self.mini_index = *index;
                    let decoded: Vec<_> = txs
                        .iter()
                        .map(|(sender, raw)| decode_recovered(raw.clone(), *sender).map(Arc::new))
                        .collect::<Result<_, _>>()
                        .map_err(|e| NodeError::Replay {
                            block: env.number,
                            reason: e.to_string(),
                        })?;
                    let outcome = self.execute(decoded, None);
                    if let Some((tx, reason)) = outcome.dropped.first() {
                        return Err(NodeError::Replay {
                            block: env.number,
                            reason: format!("transaction {} now fails: {reason}", tx.hash),
                        });
                    }
                    self.finish_mini_block(outcome, *sealed_at_ms, false);
                }
                Record::Seal { env } => {
                    self.env = *env;
                    self.seal_block(false);
                }
            }
        }
        if !self.block_txs.is_empty() {
            // Mini-blocks of a block that was open at the crash: close it now.
            self.seal_block(true);
        }
        // The block after a restart is stamped now, not when the last one before it sealed.
        self.env.timestamp = self.env.timestamp.max(now_ms() / 1000);
        self.publish_open_block();
        self.open_next_block_timer();
        Ok(records.len())
    }

    fn open_next_block_timer(&mut self) {
        self.block_started = Instant::now();
    }

    fn execute(&self, txs: Vec<Arc<PooledTx>>, deadline: Option<Instant>) -> BatchOutcome {
        let chain = self.node.chain.clone();
        let current = self.env.number;
        let hashes = move |n: u64| {
            if n >= current {
                return Err(memstate::StateError::BlockHashUnavailable(n));
            }
            chain.wait_block_hash(n)
        };
        let gas_left = self.env.gas_limit.saturating_sub(self.block_gas);
        let before = self.node.executor.stats();
        let out = self.node.executor.execute(
            &self.node.state,
            hashes,
            self.node.rules,
            &self.env,
            txs,
            gas_left,
            deadline,
        );
        let after = self.node.executor.stats();
        metrics::counter!("sequencer_exec_parallel_batches_total")
            .increment(after.parallel_batches - before.parallel_batches);
        metrics::counter!("sequencer_exec_sequential_batches_total")
            .increment(after.sequential_batches - before.sequential_batches);
        metrics::counter!("sequencer_exec_reexecutions_total")
            .increment(after.reexecutions - before.reexecutions);
        out
    }

    /// Applies an executed batch: WAL first (when `durable`), then state, index, pool, waiters.
    fn finish_mini_block(
        &mut self,
        outcome: BatchOutcome,
        sealed_at_ms: u64,
        durable: bool,
    ) -> bool {
        let BatchOutcome { executed, dropped, deferred: _, diff, gas_used, reads } = outcome;
        if executed.is_empty() {
            self.node.pool.remove(&[], &dropped.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>());
            self.node.notify(&[], &dropped);
            return true;
        }
        if durable {
            let record = Record::MiniBlock {
                env: self.env,
                index: self.mini_index,
                sealed_at_ms,
                txs: executed.iter().map(|o| (o.tx.sender, o.tx.raw.clone())).collect(),
            };
            let stage = Stage::start();
            if let Err(err) = self.wal.append(&[record]) {
                tracing::error!(%err, "WAL append failed: stopping the sequencer");
                return false;
            }
            stage.record("sequencer_wal_append_seconds", "sequencer_wal_append_cpu_seconds");
        }
        // Encoded against the state before the diff, which is what followers hold.
        let stage = Stage::start();
        let encoded = self.codec.as_mut().map(|codec| codec.encode(&diff, &*self.node.state));
        if self.node.config.feed.witnesses {
            self.block_pre.capture(&self.node.state, &reads, &diff);
        }
        let wiped = self.node.state.apply(&diff);
        stage.record("sequencer_diff_seconds", "sequencer_diff_cpu_seconds");
        self.block_wiped.extend(wiped);
        self.block_reads.extend(&reads);
        let message = encoded.map(|encoded| match encoded {
            Ok(message) => Bytes::from(message),
            Err(err) => {
                // The index mirrors the state, so this is a bug. Followers get a message they
                // cannot decode and re-sync; the index starts again from the state.
                tracing::error!(%err, "state diff not encodable; the feed's index is rebuilt");
                metrics::counter!("feed_encode_errors_total").increment(1);
                if let Some(codec) = &mut self.codec {
                    codec.reset(memstate::KeyIndex::from_state(&self.node.state));
                }
                Bytes::new()
            }
        });

        let parent_hash = self.last_mini_hash;
        self.mini_number += 1;
        let mini_hash = crate::chain::mini_block_hash(
            self.last_mini_hash,
            self.mini_number,
            self.env.number,
            executed.iter().map(|o| &o.tx.hash),
        );
        self.last_mini_hash = mini_hash;

        let mut txs = Vec::with_capacity(executed.len());
        let mut included = Vec::with_capacity(executed.len());
        for o in executed {
            self.block_gas += o.gas_used;
            let bloom = self.blooms.bloom(&o.logs);
            let first_log_index = self.block_logs;
            self.block_logs += o.logs.len() as u64;
            let effective_gas_price = o.tx.effective_gas_price(self.env.base_fee);
            included.push(o.tx.clone());
            txs.push(Arc::new(ExecutedTx {
                block_number: self.env.number,
                index: self.block_txs.len() as u64 + txs.len() as u64,
                mini_block: self.mini_number,
                mini_block_hash: mini_hash,
                success: o.success,
                gas_used: o.gas_used,
                cumulative_gas_used: self.block_gas,
                logs: o.logs,
                first_log_index,
                contract_address: o.contract_address,
                effective_gas_price,
                bloom,
                tx: o.tx,
            }));
        }
        let diff = Arc::new(diff);
        self.block_diffs.push(diff.clone());
        self.block_txs.extend(txs.iter().cloned());
        let mini = Arc::new(MiniBlock {
            number: self.mini_number,
            block_number: self.env.number,
            index: self.mini_index,
            hash: mini_hash,
            sealed_at_ms,
            txs: txs.clone(),
            gas_used,
            diff,
        });
        if let (Some(feed), Some(diff)) = (&self.feed, message) {
            feed.send(FeedEvent::MiniBlock {
                mini: mini.clone(),
                parent_hash,
                timestamp: self.env.timestamp,
                base_fee: self.env.base_fee,
                diff,
            });
        }
        self.node.chain.push_mini_block(mini);
        self.mini_index += 1;
        let dropped_txs: Vec<_> = dropped.iter().map(|(t, _)| t.clone()).collect();
        self.node.pool.remove(&included, &dropped_txs);
        self.node.notify(&txs, &dropped);
        metrics::counter!("sequencer_tx_executed_total").increment(txs.len() as u64);
        metrics::counter!("sequencer_mini_blocks_total").increment(1);
        true
    }

    /// Closes the open EVM block: logs it (when `durable`), hands it to the root committer and
    /// opens the next one.
    fn seal_block(&mut self, durable: bool) -> bool {
        if durable && let Err(err) = self.wal.append(&[Record::Seal { env: self.env }]) {
            tracing::error!(%err, "WAL append failed: stopping the sequencer");
            return false;
        }
        let mut block = BlockToSeal {
            env: self.env,
            txs: std::mem::take(&mut self.block_txs),
            gas_used: self.block_gas,
            mini_block_count: self.mini_index,
            diffs: std::mem::take(&mut self.block_diffs),
            wiped: std::mem::take(&mut self.block_wiped),
            reads: std::mem::take(&mut self.block_reads),
            pre: std::mem::take(&mut self.block_pre),
            checkpoint: None,
        };
        let base_fee = calc_next_block_base_fee(
            self.block_gas,
            self.env.gas_limit,
            self.env.base_fee,
            BaseFeeParams::ethereum(),
        );
        let chain = &self.node.config.chain;
        self.env = BlockEnvParams {
            number: self.env.number + 1,
            timestamp: (now_ms() / 1000).max(self.env.timestamp),
            beneficiary: chain.beneficiary,
            base_fee,
            gas_limit: chain.block_gas_limit,
        };
        let interval = self.node.config.storage.checkpoint_interval;
        if durable && interval > 0 && block.env.number.is_multiple_of(interval) {
            // The state now is exactly the state at the end of the block being sealed.
            block.checkpoint = Some(Checkpoint::capture(
                block.env.number,
                self.env,
                self.mini_number,
                self.last_mini_hash,
                &self.node.state,
            ));
        }
        let rotate = block.checkpoint.is_some();
        if let Some(committer) = &self.committer {
            committer.submit(block);
        }
        if rotate {
            // A checkpoint after this block is coming: later records go to a new segment, so
            // that once an older checkpoint is superseded its segments can go.
            if let Err(err) = self.wal.rotate(self.env.number) {
                tracing::error!(%err, "WAL rotation failed: stopping the sequencer");
                return false;
            }
            match self.wal.prune(self.prunable.load(Ordering::Acquire)) {
                Ok(0) => {}
                Ok(n) => tracing::info!(segments = n, "pruned WAL segments behind a checkpoint"),
                Err(err) => tracing::warn!(%err, "WAL pruning failed"),
            }
        }
        self.block_gas = 0;
        self.block_logs = 0;
        self.mini_index = 0;
        self.publish_open_block();
        metrics::gauge!("sequencer_block_number").set(self.env.number as f64 - 1.0);
        // Cheap: one length per shard and one counter per node arena.
        metrics::gauge!("memstate_accounts").set(self.node.state.account_count() as f64);
        let memory = self.node.state.layout().nodes.clone();
        for node in memory {
            let stats = numa::NodeArena::of(node).stats();
            metrics::gauge!("memstate_arena_bytes", "node" => node.to_string())
                .set(stats.allocated as f64);
        }
        true
    }

    fn run(mut self) {
        let blocks = self.node.config.blocks.clone();
        let node = self.node.clone();
        let mut block_deadline = self.block_started + blocks.evm_block_interval;
        loop {
            if Instant::now() >= block_deadline {
                if !self.seal_block(true) {
                    break;
                }
                block_deadline += blocks.evm_block_interval;
                // After a long stall, do not emit a burst of empty blocks to catch up.
                if block_deadline < Instant::now() {
                    block_deadline = Instant::now() + blocks.evm_block_interval;
                }
                continue;
            }
            if node.stopping.load(Ordering::Acquire) {
                if !self.block_txs.is_empty() {
                    self.seal_block(true);
                }
                break;
            }
            let gas_left = self.env.gas_limit.saturating_sub(self.block_gas);
            let selected = node.pool.select(self.env.base_fee, gas_left, blocks.max_mini_block_txs);
            metrics::gauge!("sequencer_pool_size").set(node.pool.len() as f64);
            if selected.is_empty() {
                let mut pending = node.wake.0.lock();
                if !*pending {
                    node.wake.1.wait_until(&mut pending, block_deadline);
                }
                *pending = false;
                continue;
            }
            // Under a trickle, let a few arrive before starting: each mini-block pays an
            // fsync, a diff and an envelope, whatever it holds.
            let gather_until = self.last_sealed + blocks.mini_block_gather;
            if selected.len() < blocks.max_mini_block_txs
                && Instant::now() < gather_until
                && gather_until < block_deadline
            {
                // Shorter than the mini-block interval, so a stop is not held up.
                std::thread::sleep(gather_until.saturating_duration_since(Instant::now()));
                continue;
            }
            // Seal as soon as the batch is done; under load a batch stops at the interval.
            let stage = Stage::start();
            let started = stage.started();
            let outcome = self.execute(selected, Some(started + blocks.mini_block_interval));
            stage.record("sequencer_execution_seconds", "sequencer_execution_cpu_seconds");
            if !self.finish_mini_block(outcome, now_ms(), true) {
                break;
            }
            self.last_sealed = Instant::now();
            metrics::histogram!("sequencer_mini_block_seal_seconds").record(started.elapsed());
        }
        node.stopping.store(true, Ordering::Release);
        // Fail every waiter: nothing more will be sealed.
        node.waiters.lock().clear();
        if let Some(committer) = self.committer.take() {
            committer.finish();
        }
    }
}

/// Starts the JIT runtime of `[jit]`: its AOT cache in `<datadir>/jit` unless `jit.aot_dir`
/// says otherwise, its compile threads on the plan's JIT cores when the plan pins.
fn start_jit(
    section: &jit::JitConfig,
    datadir: &std::path::Path,
    placement: &Placement,
) -> Arc<jit::JitRuntime> {
    if !section.enabled {
        return jit::JitRuntime::disabled();
    }
    let mut cfg = section.clone();
    cfg.aot_dir.get_or_insert_with(|| datadir.join("jit"));
    let cpus = placement
        .plan
        .as_ref()
        .filter(|_| placement.pin)
        .map(|p| p.jit.clone())
        .filter(|c| !c.is_empty());
    jit::JitRuntime::start(cfg, cpus)
}

#[cfg(test)]
mod tests {
    use alloy_consensus::TxEip1559;
    use alloy_primitives::TxKind;

    use super::*;

    fn transfer(nonce: u64) -> Bytes {
        crate::dev::sign(
            &crate::dev::dev_key(0),
            TxEip1559 {
                chain_id: 31337,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 10_000_000_000,
                max_priority_fee_per_gas: 1,
                to: TxKind::Call(Address::repeat_byte(5)),
                value: U256::from(1),
                access_list: Default::default(),
                input: Bytes::new(),
            },
        )
    }

    /// A default config with its data in `dir` and p2p on any free port.
    fn test_config(dir: &std::path::Path) -> Config {
        let mut config = Config::default();
        config.storage.datadir = Some(dir.to_path_buf());
        config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config
    }

    #[test]
    fn under_a_trickle_a_mini_block_gathers_what_arrives_within_the_gather_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.blocks.mini_block_interval = Duration::from_millis(500);
        config.blocks.mini_block_gather = Duration::from_millis(200);
        let node = Node::start(config, true).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = node.submit_raw(transfer(0)).unwrap();
        let first = runtime.block_on(node.wait_for_receipt(first, Duration::from_secs(10)));
        // Right after that seal, five arrive one by one, well within the gather time.
        let hashes: Vec<B256> = (1..6)
            .map(|nonce| {
                std::thread::sleep(Duration::from_millis(2));
                node.submit_raw(transfer(nonce)).unwrap()
            })
            .collect();
        let minis: std::collections::BTreeSet<u64> = hashes
            .iter()
            .map(|h| {
                let tx = runtime.block_on(node.wait_for_receipt(*h, Duration::from_secs(10)));
                tx.expect("executed").mini_block
            })
            .collect();
        assert_eq!(minis.len(), 1, "one mini-block, not five: {minis:?}");
        assert!(minis.first() > Some(&first.expect("executed").mini_block));
        node.shutdown();
    }

    #[test]
    fn a_stopped_sequencer_takes_nothing_new_and_keeps_what_it_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let node = Node::start(config.clone(), true).unwrap();
        let hash = node.submit_raw(transfer(0)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let executed = runtime.block_on(node.wait_for_receipt(hash, Duration::from_secs(10)));
        assert!(executed.is_some_and(|t| t.success));
        node.shutdown();
        assert!(node.is_stopped());
        assert_eq!(node.submit_raw(transfer(1)), Err(TxError::ShuttingDown));

        // Shutdown sealed the open block: a restart finds it sealed, with the transfer in it.
        let again = Node::start(config, true).unwrap();
        let tx = again.chain.tx(&hash).expect("kept");
        assert!(again.chain.block(tx.block_number).is_some());
        assert_eq!(again.state.account(&crate::dev::DEV_ACCOUNTS[0].0).unwrap().nonce, 1);
        again.shutdown();
    }
}
