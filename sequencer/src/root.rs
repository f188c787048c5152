//! The state-root committer: one NOMT session per EVM block, run on its own thread so that
//! execution of the next mini-blocks goes on while the trie is updated and written. It then
//! completes the block's header (parent hash, state root) and publishes the sealed block.
//!
//! The key paths and values committed are memstate's ([`memstate::nomt_ops`]), so that a
//! follower computes the same root from the same diffs.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256, U256};
use memstate::StateDiff;
use nomt::{Nomt, Options, SessionParams, hasher::Blake3Hasher};
use revm::primitives::hardfork::SpecId;

use crate::publish::{ArchivedGate, FeedEvent, FeedSender};
use crate::{
    chain::{Chain, ExecutedTx, SealedBlock},
    exec::BlockEnvParams,
    store::{BlockStore, Checkpoint},
};

/// NOMT could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("NOMT: {0}")]
pub struct RootError(String);

/// Everything needed to seal an EVM block except its parent hash and state root.
#[derive(Debug)]
pub struct BlockToSeal {
    /// The block's context.
    pub env: BlockEnvParams,
    /// Its transactions.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// Gas used.
    pub gas_used: u64,
    /// Mini-blocks it holds.
    pub mini_block_count: u32,
    /// The state changes of the block, one diff per mini-block in order (folded into one on
    /// the committer thread, off the execution path).
    pub diffs: Vec<Arc<StateDiff>>,
    /// Slots that existed before and were wiped by an account deletion or re-creation.
    pub wiped: Vec<(Address, U256)>,
    /// What the block's executions read (with repeats): with the writes, the keys of its
    /// witness.
    pub reads: memstate::ReadSet,
    /// The pre-block values of the keys the block touched, as the builder captured them
    /// (empty when witnesses are off); the witness reads the others from NOMT.
    pub pre: memstate::witness::PreImages,
    /// The state at the end of this block, to be written as the checkpoint once the block is
    /// in the block store.
    pub checkpoint: Option<Checkpoint>,
}

pub use chain_rpc::chain::{block_size, build_header, consensus_receipt};
pub use memstate::{account_key, nomt_ops, slot_key};

/// Handle to the committer thread.
#[derive(Debug)]
pub struct Committer {
    tx: Option<mpsc::Sender<BlockToSeal>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Opens NOMT at `dir` (which must be empty: it is rebuilt at every start), commits
    /// `initial` (the whole state of a checkpoint) if given and returns its root, and starts
    /// the thread that seals blocks into `chain` (whose head is the parent of the next block),
    /// appends them to `store`, and writes the checkpoints it is handed to `checkpoint_path`.
    pub fn start(
        nomt_options: NomtOptions<'_>,
        spec: SpecId,
        chain: Arc<Chain>,
        store: BlockStore,
        checkpoints: Checkpoints,
        initial: Option<&StateDiff>,
        feed: Option<(FeedSender, ArchivedGate)>,
    ) -> Result<(Self, Option<B256>), RootError> {
        let mut options = Options::new();
        options.path(nomt_options.dir);
        options.hashtable_buckets(nomt_options.buckets);
        options.commit_concurrency(nomt_options.concurrency);
        options.io_workers(nomt_options.io_workers);
        options.page_cache_size(nomt_options.page_cache_mib);
        options.leaf_cache_size(nomt_options.leaf_cache_mib);
        // NOMT's io and commit threads inherit the affinity of the thread that opens it.
        let previous = nomt_options.cpus.as_ref().map(|_| numa::current_affinity());
        crate::host::pin_current("nomt", nomt_options.cpus.as_deref());
        let opened = Nomt::<Blake3Hasher>::open(options);
        crate::host::pin_current("node-start", previous.as_deref());
        let nomt = opened.map_err(|e| RootError(e.to_string()))?;
        let root = match initial {
            Some(state) => Some(
                commit_chunked(&nomt, nomt_ops(state, &[]), COMMIT_CHUNK_KEYS)
                    .map_err(RootError)?,
            ),
            None => None,
        };
        let (tx, rx) = mpsc::channel::<BlockToSeal>();
        let cpus = nomt_options.cpus.clone();
        let witnesses = nomt_options.witnesses.clone();
        let sink = Sink { chain, store, checkpoints, feed, deferred: None };
        let thread = std::thread::Builder::new()
            .name("root-commit".into())
            .spawn(move || {
                crate::host::pin_current("root-commit", cpus.as_deref());
                run(nomt, rx, spec, sink, witnesses)
            })
            .map_err(|e| RootError(e.to_string()))?;
        Ok((Self { tx: Some(tx), thread: Some(thread) }, root))
    }

    /// Queues a block for sealing.
    pub fn submit(&self, block: BlockToSeal) {
        if let Some(tx) = &self.tx {
            // The thread only exits when this sender is dropped, or after a fatal NOMT error it
            // has already logged; either way there is nothing more to do with the block.
            let _ = tx.send(block);
        }
    }

    /// The committer thread is still running (it stops only when told to or after a fatal
    /// NOMT error, which it logs).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Seals everything queued, then stops the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where NOMT lives and how it runs.
#[derive(Clone, Debug)]
pub struct NomtOptions<'a> {
    /// Database directory.
    pub dir: &'a Path,
    /// Hash-table buckets.
    pub buckets: u32,
    /// Commit threads.
    pub concurrency: usize,
    /// io_uring worker threads.
    pub io_workers: usize,
    /// Page cache, MiB.
    pub page_cache_mib: usize,
    /// Leaf cache, MiB.
    pub leaf_cache_mib: usize,
    /// CPUs the committer thread is pinned to, if any.
    pub cpus: Option<Vec<usize>>,
    /// Build and store a witness of every block (`feed.witnesses`).
    pub witnesses: Option<Witnesses>,
}

/// Where block witnesses come from and go.
#[derive(Clone, Debug)]
pub struct Witnesses {
    /// The sequencer's state, for the code of the accounts a block touched (code is kept by
    /// hash and never removed, so the newest state has every block's).
    pub state: Arc<memstate::MemState>,
    /// Where they are written, `<number>.witness` beside the archive's batches.
    pub store: feed::LocalArchive,
}

/// Where checkpoints are written, and what the WAL may drop because of them.
#[derive(Debug)]
pub struct Checkpoints {
    /// The newest checkpoint; the one before it is kept beside it as `.prev`.
    pub path: PathBuf,
    /// Block of the checkpoint now at `path`, if any.
    pub newest: Option<u64>,
    /// Set to the block of the older kept checkpoint: WAL segments behind it are not needed.
    pub prunable: Arc<AtomicU64>,
}

impl Checkpoints {
    /// Where the older kept checkpoint lives.
    pub fn prev_path(&self) -> PathBuf {
        self.path.with_extension("prev.bin")
    }

    fn write(&mut self, checkpoint: &Checkpoint) -> Result<(), crate::store::StoreError> {
        if self.path.exists() {
            std::fs::rename(&self.path, self.prev_path()).map_err(|source| {
                crate::store::StoreError::Io { path: self.path.clone(), source }
            })?;
        }
        checkpoint.write(&self.path)?;
        if let Some(older) = self.newest.replace(checkpoint.block) {
            self.prunable.store(older, Ordering::Release);
        }
        Ok(())
    }
}

/// Where sealed blocks go.
struct Sink {
    chain: Arc<Chain>,
    store: BlockStore,
    checkpoints: Checkpoints,
    feed: Option<(FeedSender, ArchivedGate)>,
    /// A checkpoint waiting for DA to hold its block.
    deferred: Option<Checkpoint>,
}

/// How long sealing a block waits for DA to hold it before its checkpoint is deferred to a
/// later block's seal (the local archive takes well under this; a slow DA service must not
/// hold up sealing).
const CHECKPOINT_DA_WAIT: Duration = Duration::from_millis(50);

impl Sink {
    fn seal(&mut self, block: SealedBlock, checkpoint: Option<Checkpoint>) {
        if let Err(err) = self.store.append(&block) {
            tracing::warn!(%err, "block store append failed; a restart will replay more of the WAL");
        }
        let block = Arc::new(block);
        self.chain.push_block(block.clone());
        if let Some((sender, _)) = &self.feed {
            sender.send(FeedEvent::Block(block));
        }
        // A checkpoint lets the WAL before it go: only once DA holds its block, so that no
        // block is neither in DA nor replayed (and published) by a restart. Until then it
        // waits, and a newer one replaces it.
        if let Some(checkpoint) = checkpoint
            && self.deferred.replace(checkpoint).is_some()
        {
            tracing::warn!("a checkpoint was dropped: DA had not caught up with its block");
        }
        let Some(pending) = self.deferred.take() else { return };
        match &self.feed {
            Some((_, gate)) if !gate.wait_for(pending.block, CHECKPOINT_DA_WAIT) => {
                tracing::debug!(block = pending.block, "checkpoint deferred: DA is behind");
                self.deferred = Some(pending);
            }
            _ => self.write_checkpoint(&pending),
        }
    }

    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) {
        let started = Instant::now();
        // The checkpoint may only name a block the store durably holds.
        match self.store.sync().and_then(|()| self.checkpoints.write(checkpoint)) {
            Ok(()) => {
                metrics::histogram!("sequencer_checkpoint_seconds").record(started.elapsed());
                tracing::info!(block = checkpoint.block, "checkpoint written");
            }
            Err(err) => tracing::warn!(%err, "checkpoint not written"),
        }
    }
}

/// Keys per NOMT session when a diff is committed without a witness: NOMT holds a session's
/// whole update in memory, and a genesis of millions of accounts in one session needs more
/// memory than the state itself.
const COMMIT_CHUNK_KEYS: usize = 1 << 20;

/// Commits `ops` (sorted by key) in sessions of at most `chunk` keys; the root after the last
/// is the root of them all.
fn commit_chunked(
    nomt: &Nomt<Blake3Hasher>,
    ops: Vec<([u8; 32], nomt::KeyReadWrite)>,
    chunk: usize,
) -> Result<B256, String> {
    let mut root = nomt.root();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let part: Vec<_> = ops.by_ref().take(chunk).collect();
        let session = nomt.begin_session(SessionParams::default());
        let finished = session.finish(part).map_err(|e| e.to_string())?;
        root = finished.root();
        finished.commit(nomt).map_err(|e| e.to_string())?;
    }
    Ok(B256::from(root.into_inner()))
}

/// Commits `block`'s writes (`diff`, `block.wiped`) and returns the new root; with
/// `witnesses`, in witness mode, storing the block's witness.
fn commit_block(
    nomt: &Nomt<Blake3Hasher>,
    block: &BlockToSeal,
    diff: &StateDiff,
    chain: &Chain,
    witnesses: Option<&Witnesses>,
) -> Result<B256, String> {
    let number = block.env.number;
    let plain = || commit_chunked(nomt, nomt_ops(diff, &block.wiped), COMMIT_CHUNK_KEYS);
    let Some(w) = witnesses.filter(|_| number > 0) else { return plain() };
    let mut reads = block.reads.clone();
    reads.normalize();
    let committed = memstate::witness::commit_with_witness(
        nomt,
        diff,
        &block.wiped,
        &reads,
        &block.pre,
        |hash| w.state.code_by_hash(hash).map(|c| c.original_bytes()),
        |n| chain.block(n).map(|b| b.hash),
    );
    let (root, witness) = match committed {
        Ok(done) => done,
        // Nothing was committed: the block goes on without a witness, loudly.
        Err(err @ memstate::witness::WitnessError::Unavailable(_)) => {
            tracing::error!(block = number, %err, "block sealed WITHOUT a witness: provers cannot verify it");
            metrics::counter!("sequencer_witness_errors_total").increment(1);
            return plain();
        }
        Err(err) => return Err(err.to_string()),
    };
    let bytes = witness.encode();
    metrics::histogram!("sequencer_witness_bytes").record(bytes.len() as f64);
    if let Err(err) = feed::DaSink::put(&w.store, number, &bytes) {
        tracing::warn!(block = number, %err, "witness not stored");
    }
    Ok(root)
}

fn run(
    nomt: Nomt<Blake3Hasher>,
    rx: mpsc::Receiver<BlockToSeal>,
    spec: SpecId,
    mut sink: Sink,
    witnesses: Option<Witnesses>,
) {
    let mut parent_hash = sink.chain.head().map(|b| b.hash).unwrap_or_default();
    for block in rx {
        let stage = crate::stage::Stage::start();
        let diff = StateDiff::merged(block.diffs.iter().map(|d| d.as_ref()));
        let keys = diff.accounts.len() + block.wiped.len();
        let root = match commit_block(&nomt, &block, &diff, &sink.chain, witnesses.as_ref()) {
            Ok(root) => root,
            Err(err) => {
                tracing::error!(block = block.env.number, %err, "NOMT commit failed; sealing stops");
                return;
            }
        };
        metrics::counter!("sequencer_root_keys_total").increment(keys as u64);
        let header = build_header(spec, &block.env, parent_hash, root, &block.txs, block.gas_used);
        let hash = header.hash_slow();
        parent_hash = hash;
        let size = block_size(&header, &block.txs);
        tracing::debug!(number = header.number, %hash, txs = block.txs.len(), keys, "sealed block");
        let sealed = SealedBlock {
            header,
            hash,
            txs: block.txs,
            mini_block_count: block.mini_block_count,
            size,
        };
        sink.seal(sealed, block.checkpoint);
        stage.record("sequencer_root_commit_seconds", "sequencer_root_commit_cpu_seconds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memstate::{AccountData, AccountDiff};
    use nomt::KeyReadWrite;

    #[test]
    fn ops_are_sorted_and_deletions_are_none() {
        let mut diff = StateDiff::default();
        for i in 0..20u8 {
            diff.accounts.insert(
                Address::repeat_byte(i),
                AccountDiff {
                    info: (i % 3 != 0).then_some(AccountData {
                        nonce: 1,
                        balance: U256::from(i),
                        code_hash: memstate::KECCAK_EMPTY,
                    }),
                    storage_cleared: false,
                    storage: [(U256::from(1), U256::from(i % 2))].into(),
                },
            );
        }
        let ops = nomt_ops(&diff, &[(Address::repeat_byte(99), U256::from(5))]);
        assert!(ops.windows(2).all(|w| w[0].0 < w[1].0));
        let deleted = ops.iter().filter(|(_, op)| matches!(op, KeyReadWrite::Write(None))).count();
        // 7 deleted accounts, 10 zeroed slots, 1 wiped slot.
        assert_eq!(deleted, 7 + 10 + 1);
    }

    #[test]
    fn a_diff_committed_in_chunks_has_the_root_of_one_session() {
        let open = || {
            let dir = tempfile::tempdir().unwrap();
            let mut options = Options::new();
            options.path(dir.path().join("nomt"));
            options.hashtable_buckets(256);
            (Nomt::<Blake3Hasher>::open(options).unwrap(), dir)
        };
        let mut diff = StateDiff::default();
        for i in 0..100u8 {
            let mut account = AccountDiff {
                info: Some(AccountData {
                    nonce: u64::from(i),
                    balance: U256::from(i) + U256::from(1),
                    code_hash: memstate::KECCAK_EMPTY,
                }),
                ..Default::default()
            };
            account.storage.insert(U256::from(i), U256::from(7));
            diff.accounts.insert(Address::repeat_byte(i), account);
        }
        let (one, _a) = open();
        let whole = commit_chunked(&one, nomt_ops(&diff, &[]), usize::MAX).unwrap();
        for chunk in [1, 7, 64, 199, 200] {
            let (nomt, _dir) = open();
            assert_eq!(commit_chunked(&nomt, nomt_ops(&diff, &[]), chunk).unwrap(), whole);
            assert_eq!(B256::from(nomt.root().into_inner()), whole);
        }
        assert_ne!(whole, B256::from(nomt::trie::TERMINATOR));
        // Nothing to commit leaves the root as it is.
        assert_eq!(commit_chunked(&one, Vec::new(), 3).unwrap(), whole);
    }

    #[test]
    fn the_same_changes_give_the_same_root_and_a_change_moves_it() {
        let commit = |balance: u64| {
            let dir = tempfile::tempdir().unwrap();
            let mut options = Options::new();
            options.path(dir.path().join("nomt"));
            options.hashtable_buckets(64);
            let nomt = Nomt::<Blake3Hasher>::open(options).unwrap();
            let mut diff = StateDiff::default();
            diff.accounts.insert(
                Address::repeat_byte(1),
                AccountDiff {
                    info: Some(AccountData {
                        nonce: 0,
                        balance: U256::from(balance),
                        code_hash: memstate::KECCAK_EMPTY,
                    }),
                    ..Default::default()
                },
            );
            let finished =
                nomt.begin_session(SessionParams::default()).finish(nomt_ops(&diff, &[])).unwrap();
            let root = finished.root();
            finished.commit(&nomt).unwrap();
            assert_eq!(nomt.root(), root);
            root
        };
        assert_eq!(commit(5), commit(5));
        assert_ne!(commit(5), commit(6));
    }
}
