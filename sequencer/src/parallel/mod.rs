//! The parallel executor: a batch of ordered transactions executed on several threads with
//! results identical to executing them one after the other in that order.
//!
//! How (optimistic execution, validation and commit in order, as in Block-STM):
//! - Transactions are grouped before execution: one sender's transactions, and those calling a
//!   contract that earlier batches showed to be a conflict hot spot, form one group that one
//!   worker runs in order. If one group holds most of the batch (a dependent chain), the batch
//!   runs sequentially instead: no parallel overhead where there is no parallelism.
//! - Workers run groups speculatively. Reads go through a [`VersionedDb`]: the newest write by
//!   an earlier transaction of the batch from the multi-version memory, else the state before
//!   the batch; every read is recorded with its value.
//! - The fee to the block's beneficiary is deferred (a handler that records it instead of
//!   crediting it), so fee payment does not make every transaction depend on the one before.
//!   A transaction that reads the beneficiary explicitly sees the earlier fees added, and pays
//!   its own fee the normal way.
//! - One worker at a time commits, in order: a transaction whose recorded reads still have
//!   the same values (its predecessors are all final by then) is kept; otherwise it is
//!   re-executed there, against final predecessors, which is always correct. So every
//!   transaction runs at most twice, and the committed results are those of sequential
//!   execution.
//! - The state diff is built once at the end from the newest committed versions and what each
//!   committed transaction touched, by the rules the sequential path's `memstate::Overlay`
//!   applies per transaction (an entry per touched account, EIP-161 deletion, storage wiped on
//!   creation and self-destruct, the beneficiary's summed fees): the same diff, without a
//!   per-transaction commit on the critical path. Each execution's state is dropped on the
//!   thread that made it.

mod mv;

use std::{
    cell::Cell,
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, Bytes, U256};
use memstate::{AccountData, AccountDiff, BlockHashes, MemState, StateDiff, StateError};
use mv::{Key, MvMemory, ReadValue, TxIdx, Written};
use parking_lot::Mutex;
use revm::{
    context::{BlockEnv, ContextSetters, TxEnv},
    context_interface::{
        Cfg, ContextTr, JournalTr, Transaction,
        result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction},
    },
    database_interface::Database,
    handler::{EvmTr, FrameResult, Handler, MainnetContext, post_execution},
    primitives::hardfork::SpecId,
    state::{AccountInfo, Bytecode, EvmState},
};

use crate::{
    exec::{
        BatchOutcome, BlockEnvParams, ChainRules, TxOutcome, execution_error_message, new_jit_evm,
    },
    tx::PooledTx,
};

/// `[executor]` settings the engine runs with.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Worker threads (1: always sequential).
    pub threads: usize,
    /// Run a batch sequentially when one dependency group holds more than this share of it.
    pub sequential_share: f64,
    /// Batches smaller than this run sequentially.
    pub min_parallel: usize,
    /// Batches whose transactions are predicted to use less gas than this on average run
    /// sequentially: for cheap transactions the engine's bookkeeping costs more than a second
    /// core gains (docs/benchmarks.md). The prediction is the gas each called contract used
    /// in earlier batches (a transfer or an unknown target counts as 21 000). 0: never.
    pub min_parallel_gas: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self { threads: 1, sequential_share: 0.5, min_parallel: 16, min_parallel_gas: 1_000_000 }
    }
}

/// Per-batch counters, for metrics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Batches run on several threads.
    pub parallel_batches: u64,
    /// Batches run sequentially (small, one thread, or a dependent chain).
    pub sequential_batches: u64,
    /// Transactions executed speculatively.
    pub executions: u64,
    /// Transactions re-executed at commit because a read had changed.
    pub reexecutions: u64,
}

/// The parallel engine: its worker pool and what it learned about conflicting contracts.
pub struct Executor {
    config: ExecutorConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Per called contract: (transactions that had to be re-executed, transactions seen).
    hot: Mutex<hashbrown::HashMap<Address, (u32, u32)>>,
    /// Per called contract: gas its calls used, moving average.
    gas: Mutex<hashbrown::HashMap<Address, f64>>,
    stats: Mutex<ExecStats>,
    /// Compiled code for hot contracts, used by both paths.
    jit: Arc<jit::JitRuntime>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Executor {
    /// An engine running its workers on `pool` (built with `config.threads` threads when
    /// `None` and more than one thread is asked for).
    pub fn new(
        config: ExecutorConfig,
        pool: Option<Arc<rayon::ThreadPool>>,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = match pool {
            Some(pool) => Some(pool),
            None if config.threads > 1 => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.threads)
                    .thread_name(|i| format!("exec-{i}"))
                    .build()?,
            )),
            None => None,
        };
        Ok(Self {
            config,
            pool,
            hot: Mutex::default(),
            gas: Mutex::default(),
            stats: Mutex::default(),
            jit: jit::JitRuntime::disabled(),
        })
    }

    /// Runs compiled code from `jit` where it is ready.
    pub fn with_jit(mut self, jit: Arc<jit::JitRuntime>) -> Self {
        self.jit = jit;
        self
    }

    /// The JIT runtime it uses.
    pub fn jit(&self) -> &Arc<jit::JitRuntime> {
        &self.jit
    }

    /// The engine the sequencer runs: `[executor]` settings, its threads on one node of the
    /// placement plan (pinned when the plan pins).
    pub fn for_node(
        section: &crate::config::ExecutorSection,
        placement: &crate::host::Placement,
    ) -> Result<Self, rayon::ThreadPoolBuildError> {
        // The node with the most executor CPUs: a batch's workers share its memory.
        let node = placement
            .plan
            .as_ref()
            .and_then(|p| p.executors.iter().max_by_key(|e| e.cpus.len()))
            .filter(|e| !e.cpus.is_empty());
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match (section.threads, node) {
            (0, None) => available,
            (0, Some(e)) => e.cpus.len(),
            (n, _) => n,
        };
        let config = ExecutorConfig {
            threads,
            sequential_share: f64::from(section.sequential_share_percent) / 100.0,
            min_parallel: section.min_parallel,
            min_parallel_gas: section.min_parallel_gas,
        };
        if threads <= 1 {
            return Self::new(config, None);
        }
        let pool = match (&placement.plan, node) {
            (Some(plan), Some(e)) => {
                numa::ExecutorPools::node_pool(plan, e.node, placement.pin, Some(threads))?
            }
            _ => rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("exec-{i}"))
                .build()?,
        };
        Self::new(config, Some(Arc::new(pool)))
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Counters since the engine was made.
    pub fn stats(&self) -> ExecStats {
        *self.stats.lock()
    }

    /// Executes `txs` in order over `state` like [`crate::exec::execute_batch`] (same outcome,
    /// same diff) on the worker threads, stopping once `deadline` has passed (after at least
    /// one transaction), as the sequential path does.
    #[allow(clippy::too_many_arguments)]
    pub fn execute<H: BlockHashes + Sync>(
        &self,
        state: &MemState,
        hashes: H,
        rules: ChainRules,
        env: &BlockEnvParams,
        txs: Vec<Arc<PooledTx>>,
        gas_left: u64,
        deadline: Option<Instant>,
    ) -> BatchOutcome {
        let setup = Setup { jit: self.jit.clone(), ..Setup::new(rules, env.block_env(rules.spec)) };
        let done = if self.predicted_gas(&txs) < self.config.min_parallel_gas as f64 {
            None
        } else {
            self.run_parallel(state, &hashes, &setup, &txs, gas_left, deadline, false)
        };
        let Some(done) = done else {
            // Cheap transactions, a dependent chain, a small batch or one thread: the
            // sequential path itself.
            self.stats.lock().sequential_batches += 1;
            let out = crate::exec::execute_batch_with(
                state, hashes, rules, env, txs, gas_left, deadline, &self.jit,
            );
            self.learn_gas(&out);
            return out;
        };
        let mut out = BatchOutcome {
            gas_used: done.gas_used,
            diff: done.diff,
            reads: done.reads,
            ..Default::default()
        };
        // The deferred fees are credited without the beneficiary being read through revm;
        // a sequential re-execution (a prover's) reads it.
        out.reads.accounts.push(env.beneficiary);
        for (tx, result) in txs.iter().zip(done.results) {
            match result {
                TxResult::Deferred => out.deferred.push(tx.clone()),
                TxResult::Failed(err) => {
                    out.dropped.push((tx.clone(), execution_error_message(&err)))
                }
                TxResult::Executed(result) => out.executed.push(TxOutcome::new(tx.clone(), result)),
            }
        }
        out.deferred.extend(txs[done.committed..].iter().cloned());
        self.learn_gas(&out);
        out
    }

    /// Average gas per transaction of `txs` as earlier batches suggest.
    fn predicted_gas(&self, txs: &[Arc<PooledTx>]) -> f64 {
        if self.config.min_parallel_gas == 0 || self.pool.is_none() || txs.is_empty() {
            return f64::INFINITY;
        }
        let gas = self.gas.lock();
        let total: f64 = txs
            .iter()
            .map(|tx| tx.target().and_then(|to| gas.get(&to).copied()).unwrap_or(21_000.0))
            .sum();
        total / txs.len() as f64
    }

    /// Updates the per-contract gas averages from executed transactions.
    fn learn_gas(&self, out: &BatchOutcome) {
        if self.config.min_parallel_gas == 0 || self.pool.is_none() {
            return;
        }
        let mut gas = self.gas.lock();
        // Plain transfers (21 000 gas) are what an unknown target is predicted to cost anyway:
        // only calls that cost more are remembered, so the map holds contracts, not recipients.
        for t in out.executed.iter().filter(|t| t.gas_used > 21_000) {
            let Some(to) = t.tx.target() else { continue };
            let used = t.gas_used as f64;
            gas.entry(to).and_modify(|g| *g = 0.8 * *g + 0.2 * used).or_insert(used);
        }
        if gas.len() > 100_000 {
            gas.retain(|_, g| *g > 100_000.0);
        }
    }

    /// The engine on any transactions and block settings (the conformance runner uses it),
    /// always on the worker threads: `None` only if the engine has no worker pool. Results are
    /// per transaction, in order, up to the first not reached.
    pub fn execute_parallel<T: ExecTx, H: BlockHashes + Sync>(
        &self,
        state: &MemState,
        hashes: &H,
        setup: &Setup,
        txs: &[T],
    ) -> Option<Committed> {
        self.run_parallel(state, hashes, setup, txs, u64::MAX, None, true)
    }

    /// Dependency groups of a batch: a sender's transactions together, and the transactions
    /// calling a known hot contract together.
    fn groups<T: ExecTx>(&self, txs: &[T]) -> Vec<Vec<TxIdx>> {
        let hot = self.hot.lock();
        let mut by_key: hashbrown::HashMap<Address, usize> = hashbrown::HashMap::new();
        let mut parent: Vec<usize> = (0..txs.len()).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, tx) in txs.iter().enumerate() {
            let target = tx.target().filter(|to| {
                hot.get(to).is_some_and(|&(conflicts, seen)| seen >= 16 && conflicts * 2 > seen)
            });
            for key in std::iter::once(tx.sender()).chain(target) {
                match by_key.get(&key) {
                    Some(&j) => {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                        parent[a.max(b)] = a.min(b);
                    }
                    None => {
                        by_key.insert(key, i);
                    }
                }
            }
        }
        let mut groups: hashbrown::HashMap<usize, Vec<TxIdx>> = hashbrown::HashMap::new();
        for i in 0..txs.len() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(i);
        }
        let mut groups: Vec<Vec<TxIdx>> = groups.into_values().collect();
        groups.sort_unstable_by_key(|g| g[0]);
        groups
    }

    /// Runs the batch on the workers; `None` if it should run sequentially instead (unless
    /// `force`d: then only when there is no worker pool).
    #[allow(clippy::too_many_arguments)]
    fn run_parallel<T: ExecTx, H: BlockHashes + Sync>(
        &self,
        state: &MemState,
        hashes: &H,
        setup: &Setup,
        txs: &[T],
        gas_left: u64,
        deadline: Option<Instant>,
        force: bool,
    ) -> Option<Committed> {
        let pool = self.pool.as_ref()?;
        if !force && txs.len() < self.config.min_parallel.max(2) {
            return None;
        }
        let groups = self.groups(txs);
        let largest = groups.iter().map(Vec::len).max().unwrap_or(0);
        if !force && largest as f64 > self.config.sequential_share * txs.len() as f64 {
            return None;
        }
        let view = state.view();
        let batch = Batch {
            base: &view,
            hashes,
            setup,
            mv: MvMemory::new(),
            fees: (0..txs.len()).map(|_| Mutex::new(None)).collect(),
            codes: Mutex::new(Default::default()),
        };
        let shared = Shared {
            batch: &batch,
            txs,
            groups,
            next_group: AtomicUsize::new(0),
            done: (0..txs.len()).map(|_| Mutex::new(None)).collect(),
            executed: (0..txs.len()).map(|_| AtomicBool::new(false)).collect(),
            commit: Mutex::new(Commit {
                next: 0,
                gas_left,
                deadline,
                results: Vec::with_capacity(txs.len()),
                effects: Vec::with_capacity(txs.len()),
                gas_used: 0,
                reexecuted: Vec::new(),
                reads: memstate::ReadSet::default(),
            }),
            finished: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            commit_next: AtomicUsize::new(0),
            executions: AtomicUsize::new(0),
        };
        pool.broadcast(|_| shared.work());
        let commit = shared.commit.into_inner();
        self.learn(txs, &commit.reexecuted);
        {
            let mut stats = self.stats.lock();
            stats.parallel_batches += 1;
            stats.executions += shared.executions.load(Ordering::Relaxed) as u64;
            stats.reexecutions += commit.reexecuted.len() as u64;
        }
        let diff = batch.diff(commit.next, &commit.effects);
        Some(Committed {
            committed: commit.next,
            results: commit.results,
            gas_used: commit.gas_used,
            diff,
            reads: commit.reads,
        })
    }

    /// Updates the per-contract conflict rates from a batch's re-executions.
    fn learn<T: ExecTx>(&self, txs: &[T], reexecuted: &[TxIdx]) {
        let mut hot = self.hot.lock();
        for (i, tx) in txs.iter().enumerate() {
            let Some(to) = tx.target() else { continue };
            let entry = hot.entry(to).or_insert((0, 0));
            entry.1 += 1;
            if reexecuted.binary_search(&i).is_ok() {
                entry.0 += 1;
            }
            if entry.1 >= 4096 {
                *entry = (entry.0 / 2, entry.1 / 2);
            }
        }
        if hot.len() > 100_000 {
            hot.retain(|_, (c, s)| *c * 2 > *s);
        }
    }
}

/// A transaction the engine can run.
pub trait ExecTx: Send + Sync {
    /// revm's view of it.
    fn tx_env(&self) -> TxEnv;
    /// Its sender (transactions of one sender run in order on one worker).
    fn sender(&self) -> Address;
    /// The contract or account it calls (`None` for a creation).
    fn target(&self) -> Option<Address>;
    /// Its gas limit (it is deferred when the block has less left).
    fn gas_limit(&self) -> u64;
}

impl ExecTx for Arc<PooledTx> {
    fn tx_env(&self) -> TxEnv {
        PooledTx::tx_env(self)
    }
    fn sender(&self) -> Address {
        self.sender
    }
    fn target(&self) -> Option<Address> {
        self.envelope.to()
    }
    fn gas_limit(&self) -> u64 {
        PooledTx::gas_limit(self)
    }
}

impl ExecTx for TxEnv {
    fn tx_env(&self) -> TxEnv {
        self.clone()
    }
    fn sender(&self) -> Address {
        self.caller
    }
    fn target(&self) -> Option<Address> {
        self.kind.to().copied()
    }
    fn gas_limit(&self) -> u64 {
        self.gas_limit
    }
}

/// The EVM every worker builds: rules and block.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Hard fork.
    pub spec: SpecId,
    /// Chain id.
    pub chain_id: u64,
    /// The block.
    pub block: BlockEnv,
    /// Blob limit per transaction, when it is not the fork's default.
    pub max_blobs_per_tx: Option<u64>,
    /// Compiled code for hot contracts ([`jit::JitRuntime::disabled`] for none).
    pub jit: Arc<jit::JitRuntime>,
}

impl Setup {
    /// The sequencer's setup for `rules` and `block`.
    pub fn new(rules: ChainRules, block: BlockEnv) -> Self {
        Self {
            spec: rules.spec,
            chain_id: rules.chain_id,
            block,
            max_blobs_per_tx: None,
            jit: jit::JitRuntime::disabled(),
        }
    }
}

/// What became of one transaction.
#[derive(Debug)]
pub enum TxResult {
    /// It ran (succeeded, reverted or halted).
    Executed(ExecutionResult),
    /// revm refused it (nonce, funds, …); nothing changed.
    Failed(EVMError<StateError, InvalidTransaction>),
    /// It did not fit the gas left.
    Deferred,
}

/// The committed prefix of a batch.
#[derive(Debug)]
pub struct Committed {
    /// How many transactions were reached (the rest wait: deadline).
    pub committed: usize,
    /// Their results, in order.
    pub results: Vec<TxResult>,
    /// Gas used by the executed ones.
    pub gas_used: u64,
    /// The state changes, as the sequential path records them.
    pub diff: memstate::StateDiff,
    /// What the committed executions read (the block's witness is built from it).
    pub reads: memstate::ReadSet,
}

/// One execution of one transaction.
struct Done {
    result: Result<ExecutionResult, EVMError<StateError, InvalidTransaction>>,
    reads: Vec<(Key, ReadValue)>,
    block_hashes: Vec<u64>,
    writes: Vec<Key>,
    fee: Option<U256>,
    touched: Touched,
}

/// What an execution did beyond its versioned writes, as far as the state diff cares (the
/// sequential path's overlay records an entry for every touched account).
#[derive(Default)]
struct Touched {
    /// Every account it touched.
    all: Vec<Address>,
    /// Touched accounts that ended self-destructed or empty (deleted, storage wiped).
    emptied: Vec<Address>,
    /// Code of touched accounts that carry it (new contracts), by hash.
    codes: Vec<(B256, Bytecode)>,
}

/// The state one batch reads: its base and the versions written in it.
struct Batch<'b, H> {
    base: &'b memstate::StateView<'b>,
    hashes: &'b H,
    setup: &'b Setup,
    mv: MvMemory,
    /// Deferred beneficiary fee of each executed transaction (`None`: not executed yet).
    fees: Vec<Mutex<Option<U256>>>,
    /// Code deployed in the batch.
    codes: Mutex<hashbrown::HashMap<B256, Bytecode>>,
}

impl<H: BlockHashes> Batch<'_, H> {
    fn read_account(&self, address: Address, idx: TxIdx) -> Option<AccountData> {
        let written = self.mv.latest_before(&Key::Account(address), idx);
        let (from, mut info) = match written {
            Some((j, Written::Account { info })) => (j + 1, info),
            _ => (0, self.base.account(&address)),
        };
        if address == self.setup.block.beneficiary {
            // Fees deferred by the transactions since that version, as far as known now
            // (validation at commit sees them all).
            let fees: U256 = (from..idx).filter_map(|j| *self.fees[j].lock()).sum();
            if !fees.is_zero() {
                info.get_or_insert(AccountData::EMPTY).balance += fees;
            }
        }
        info
    }

    fn read_slot(&self, address: Address, slot: U256, idx: TxIdx) -> U256 {
        let cleared = self.mv.latest_before(&Key::Wipe(address), idx).map(|(j, _)| j);
        match self.mv.latest_before(&Key::Slot(address, slot), idx) {
            Some((j, Written::Slot(value))) if cleared.is_none_or(|c| j >= c) => value,
            _ if cleared.is_some() => U256::ZERO,
            _ => self.base.storage(&address, &slot),
        }
    }

    /// The state diff of the first `committed` transactions, as the sequential path's overlay
    /// would have recorded it: every touched account with its final fields, storage marked
    /// wiped if it was wiped at any point, the slots written since the last wipe, the
    /// beneficiary with its fees, and the code of new contracts.
    fn diff(&self, committed: TxIdx, effects: &[(TxIdx, Touched, Option<U256>)]) -> StateDiff {
        // Accounts arrive in no order of address: gathered in a B-tree, sorted into the diff
        // once at the end.
        let mut accounts: BTreeMap<Address, AccountDiff> = BTreeMap::new();
        let mut codes = BTreeMap::new();
        for (_, touched, _) in effects {
            for address in &touched.all {
                accounts.entry(*address).or_default();
            }
            for address in &touched.emptied {
                accounts.entry(*address).or_default().storage_cleared = true;
            }
            for (hash, code) in &touched.codes {
                if !codes.contains_key(hash) && self.base.code_by_hash(hash).is_none() {
                    codes.insert(*hash, code.clone());
                }
            }
        }
        for (key, index, value) in self.mv.latest_versions(committed) {
            match (&key, value) {
                (Key::Account(a), _) => {
                    accounts.entry(*a).or_default();
                }
                (Key::Wipe(a), _) => accounts.entry(*a).or_default().storage_cleared = true,
                (Key::Slot(a, slot), Written::Slot(v)) => {
                    let wiped = self.mv.latest_before(&Key::Wipe(*a), committed).map(|(j, _)| j);
                    if wiped.is_none_or(|w| index >= w) {
                        accounts.entry(*a).or_default().storage.insert(*slot, v);
                    }
                }
                _ => {}
            }
        }
        // The beneficiary: touched by every deferred fee. A zero fee that touches it while it
        // is empty deletes it (EIP-161), which the diff records as a wipe.
        let beneficiary = self.setup.block.beneficiary;
        if effects.iter().any(|(_, _, fee)| fee.is_some()) {
            let mut running = self.base.account(&beneficiary);
            let mut cleared = false;
            let written = self.mv.versions(&Key::Account(beneficiary));
            for (idx, touched, fee) in effects {
                if let Ok(p) = written.binary_search_by_key(idx, |(i, _)| *i)
                    && let Written::Account { info } = written[p].1
                {
                    running = info;
                }
                if touched.emptied.contains(&beneficiary) {
                    running = None;
                }
                if let Some(fee) = fee {
                    if running.is_none_or(|a| a.is_empty()) && fee.is_zero() {
                        running = None;
                        cleared = true;
                    } else {
                        running.get_or_insert(AccountData::EMPTY).balance += *fee;
                    }
                }
            }
            let entry = accounts.entry(beneficiary).or_default();
            entry.storage_cleared |= cleared;
        }
        for (address, change) in &mut accounts {
            change.info = self.read_account(*address, committed);
            if change.info.is_none() {
                // A deleted account's entry lists no slots (the overlay clears them).
                change.storage.clear();
            }
        }
        StateDiff { accounts: accounts.into_iter().collect(), codes }
    }

    fn reread(&self, key: &Key, idx: TxIdx) -> ReadValue {
        match *key {
            Key::Account(a) => ReadValue::Account(self.read_account(a, idx)),
            Key::Slot(a, s) => ReadValue::Slot(self.read_slot(a, s, idx)),
            Key::Wipe(_) => unreachable!("wipes are written, never read on their own"),
        }
    }

    fn code(&self, hash: B256) -> Bytecode {
        if let Some(code) = self.codes.lock().get(&hash) {
            return code.clone();
        }
        self.base.code_by_hash(&hash).unwrap_or_default()
    }
}

/// revm's database for one execution: reads from the batch, recorded.
struct VersionedDb<'c, 'b, H> {
    batch: &'c Batch<'b, H>,
    idx: TxIdx,
    reads: Vec<(Key, ReadValue)>,
    block_hashes: Vec<u64>,
    /// This worker's own copies of the code it runs: a shared `Bytecode` is reference
    /// counted, and every transaction's clone would bounce that counter between cores.
    codes: hashbrown::HashMap<B256, Bytecode>,
}

impl<H: BlockHashes> Database for VersionedDb<'_, '_, H> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let info = self.batch.read_account(address, self.idx);
        self.reads.push((Key::Account(address), ReadValue::Account(info)));
        Ok(info.map(memstate::account_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        let batch = self.batch;
        let code = self.codes.entry(code_hash).or_insert_with(|| {
            let shared = batch.code(code_hash);
            Bytecode::new_raw(Bytes::copy_from_slice(shared.original_byte_slice()))
        });
        Ok(code.clone())
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        let value = self.batch.read_slot(address, index, self.idx);
        self.reads.push((Key::Slot(address, index), ReadValue::Slot(value)));
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.block_hashes.push(number);
        self.batch.hashes.block_hash(number)
    }
}

type WorkerEvm<'c, 'b, H> = jit::JitEvm<MainnetContext<VersionedDb<'c, 'b, H>>>;

/// The mainnet handler, except that the beneficiary's fee is recorded instead of credited
/// when the transaction has not loaded the beneficiary itself.
struct LazyFee<EVM> {
    deferred: Cell<Option<U256>>,
    _evm: std::marker::PhantomData<EVM>,
}

impl<'c, 'b, H: BlockHashes> Handler for LazyFee<WorkerEvm<'c, 'b, H>> {
    type Evm = WorkerEvm<'c, 'b, H>;
    type Error = EVMError<StateError, InvalidTransaction>;
    type HaltReason = HaltReason;

    fn reward_beneficiary(
        &self,
        evm: &mut Self::Evm,
        exec_result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        let ctx = evm.ctx();
        let beneficiary = ctx.block.beneficiary;
        if ctx.cfg.is_fee_charge_disabled() || ctx.journal_ref().state.contains_key(&beneficiary) {
            // Read explicitly in this transaction (BALANCE, a transfer, …): pay as usual.
            return post_execution::reward_beneficiary(ctx, exec_result.gas()).map_err(From::from);
        }
        let basefee = u128::from(ctx.block.basefee);
        let price = ctx.tx.effective_gas_price(basefee);
        let coinbase_price = if ctx.cfg.spec.is_enabled_in(SpecId::LONDON) {
            price.saturating_sub(basefee)
        } else {
            price
        };
        let gas = exec_result.gas();
        let used = gas.used().saturating_sub(gas.reservoir());
        self.deferred.set(Some(U256::from(coinbase_price * u128::from(used))));
        Ok(())
    }
}

struct Commit {
    next: TxIdx,
    gas_left: u64,
    deadline: Option<Instant>,
    results: Vec<TxResult>,
    /// Per committed transaction that ran: what it touched, and its deferred fee.
    effects: Vec<(TxIdx, Touched, Option<U256>)>,
    gas_used: u64,
    reexecuted: Vec<TxIdx>,
    reads: memstate::ReadSet,
}

struct Shared<'c, 'b, H, T> {
    batch: &'c Batch<'b, H>,
    txs: &'c [T],
    groups: Vec<Vec<TxIdx>>,
    next_group: AtomicUsize,
    done: Vec<Mutex<Option<Done>>>,
    executed: Vec<AtomicBool>,
    commit: Mutex<Commit>,
    finished: AtomicBool,
    /// The deadline passed: stop executing, commit nothing more.
    stop: AtomicBool,
    /// The committer's position, readable without its lock.
    commit_next: AtomicUsize,
    executions: AtomicUsize,
}

impl<H: BlockHashes, T: ExecTx> Shared<'_, '_, H, T> {
    /// One worker: commit what can be committed, else execute the next group, until the
    /// whole batch is committed.
    fn work(&self) {
        let setup = self.batch.setup;
        let db = VersionedDb {
            batch: self.batch,
            idx: 0,
            reads: Vec::new(),
            block_hashes: Vec::new(),
            codes: hashbrown::HashMap::new(),
        };
        let mut evm = new_jit_evm(db, setup.spec, setup.chain_id, setup.block.clone(), &setup.jit);
        if let Some(max) = setup.max_blobs_per_tx {
            evm.inner.ctx.cfg.max_blobs_per_tx = Some(max);
        }
        let mut idle = 0u32;
        // Groups are claimed a few at a time: fewer trips to the shared counter, and each
        // worker's transactions sit apart from the others' in the per-transaction slots.
        let threads = rayon::current_num_threads().max(1);
        let claim = (self.groups.len() / (threads * 8)).clamp(1, 64);
        while !self.finished.load(Ordering::Acquire) {
            // Only contend for the commit when the next transaction is ready.
            let next = self.commit_next.load(Ordering::Acquire);
            if next < self.txs.len()
                && self.executed[next].load(Ordering::Acquire)
                && let Some(mut commit) = self.commit.try_lock()
            {
                let before = commit.next;
                self.advance(&mut commit, &mut evm);
                self.commit_next.store(commit.next, Ordering::Release);
                if commit.next == self.txs.len() {
                    self.finished.store(true, Ordering::Release);
                    return;
                }
                if commit.next != before {
                    idle = 0;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                // The deadline passed: commit what is executed, start nothing new.
                if let Some(mut commit) = self.commit.try_lock() {
                    self.advance(&mut commit, &mut evm);
                    self.commit_next.store(commit.next, Ordering::Release);
                    self.finished.store(true, Ordering::Release);
                    return;
                }
                std::thread::yield_now();
                continue;
            }
            let g = self.next_group.fetch_add(claim, Ordering::AcqRel);
            if g < self.groups.len() {
                'claimed: for group in &self.groups[g..(g + claim).min(self.groups.len())] {
                    for &idx in group {
                        if self.stop.load(Ordering::Relaxed) {
                            break 'claimed;
                        }
                        let done = self.run(&mut evm, idx, &[]);
                        *self.done[idx].lock() = Some(done);
                        self.executed[idx].store(true, Ordering::Release);
                    }
                }
                idle = 0;
                continue;
            }
            // Nothing to execute; another worker holds the commit or runs the group the
            // committer waits for.
            idle += 1;
            if idle < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Executes `idx` once and records its writes in the multi-version memory.
    fn run(&self, evm: &mut WorkerEvm<'_, '_, H>, idx: TxIdx, previous: &[Key]) -> Done {
        self.executions.fetch_add(1, Ordering::Relaxed);
        {
            let db = &mut evm.inner.ctx.journaled_state.database;
            db.idx = idx;
            db.reads.clear();
            db.block_hashes.clear();
        }
        evm.inner.ctx.set_tx(self.txs[idx].tx_env());
        let mut handler = LazyFee { deferred: Cell::new(None), _evm: std::marker::PhantomData };
        let result = handler.run(evm);
        let state = evm.inner.ctx.journal_mut().finalize();
        let reads = std::mem::take(&mut evm.inner.ctx.journaled_state.database.reads);
        let block_hashes = std::mem::take(&mut evm.inner.ctx.journaled_state.database.block_hashes);
        let (writes, fee, touched) = match &result {
            Ok(_) => {
                let (writes, touched) = effects_of(&state, &reads);
                (writes, handler.deferred.get(), touched)
            }
            Err(_) => (Vec::new(), None, Touched::default()),
        };
        // The state is dropped here, on the thread that allocated it.
        drop(state);
        if !touched.codes.is_empty() {
            let mut codes = self.batch.codes.lock();
            for (hash, code) in &touched.codes {
                codes.entry(*hash).or_insert_with(|| code.clone());
            }
        }
        self.batch.mv.record(idx, &writes, previous);
        *self.batch.fees[idx].lock() = Some(fee.unwrap_or_default());
        let writes = writes.into_iter().map(|(k, _)| k).collect();
        Done { result, reads, block_hashes, writes, fee, touched }
    }

    /// Commits every transaction it can, in order.
    fn advance(&self, commit: &mut Commit, evm: &mut WorkerEvm<'_, '_, H>) {
        while commit.next < self.txs.len() {
            let idx = commit.next;
            if !self.executed[idx].load(Ordering::Acquire) {
                return;
            }
            let mut done =
                self.done[idx].lock().take().expect("an executed transaction has a result");
            commit.next += 1;
            if self.txs[idx].gas_limit() > commit.gas_left {
                // As the sequential path: not attempted, so its writes must not be seen.
                for key in &done.writes {
                    self.batch.mv.remove(idx, key);
                }
                *self.batch.fees[idx].lock() = Some(U256::ZERO);
                commit.results.push(TxResult::Deferred);
            } else {
                let valid =
                    done.reads.iter().all(|(key, value)| self.batch.reread(key, idx) == *value);
                if !valid {
                    done = self.run(evm, idx, &done.writes);
                    commit.reexecuted.push(idx);
                }
                match done.result {
                    Ok(result) => {
                        for (key, _) in &done.reads {
                            match *key {
                                Key::Account(a) => commit.reads.accounts.push(a),
                                Key::Slot(a, s) => commit.reads.slots.push((a, s)),
                                Key::Wipe(_) => {}
                            }
                        }
                        commit.reads.block_hashes.extend_from_slice(&done.block_hashes);
                        let gas_used = result.gas().tx_gas_used();
                        commit.gas_left = commit.gas_left.saturating_sub(gas_used);
                        commit.gas_used += gas_used;
                        commit.effects.push((idx, done.touched, done.fee));
                        commit.results.push(TxResult::Executed(result));
                    }
                    Err(err) => commit.results.push(TxResult::Failed(err)),
                }
            }
            if !self.stop.load(Ordering::Relaxed)
                && commit.deadline.is_some_and(|d| Instant::now() >= d)
            {
                // Past the deadline no new work starts, but what the workers have already
                // executed is still committed (it costs only its validation); the rest waits
                // for the next mini-block, as on the sequential path.
                self.stop.store(true, Ordering::Release);
            }
        }
    }
}

/// The writes of an execution, by the same rules as `memstate::Overlay`'s commit (EIP-161 deletion of
/// touched empty accounts, storage wiped on creation and self-destruct), and what else it
/// touched. An account that was touched but ends as it was read (a called contract, a
/// zero-value recipient) gets no version: readers of the older one see the same value, and a
/// hot contract's account does not collect one version per caller.
fn effects_of(state: &EvmState, reads: &[(Key, ReadValue)]) -> (Vec<(Key, Written)>, Touched) {
    let read_as = |address: &Address| {
        reads.iter().find_map(|(k, v)| match (k, v) {
            (Key::Account(a), ReadValue::Account(info)) if a == address => Some(*info),
            _ => None,
        })
    };
    let mut out = Vec::new();
    let mut touched = Touched::default();
    for (address, account) in state {
        if !account.is_touched() {
            continue;
        }
        touched.all.push(*address);
        if account.is_selfdestructed() || account.is_empty() {
            touched.emptied.push(*address);
            if read_as(address) == Some(None) && !account.is_created() {
                // Did not exist and still does not (a precompile or empty account touched by
                // a call): no version, and no storage to wipe.
                continue;
            }
            out.push((Key::Account(*address), Written::Account { info: None }));
            out.push((Key::Wipe(*address), Written::Wipe));
            continue;
        }
        if let Some(code) = &account.info.code
            && account.info.code_hash != memstate::KECCAK_EMPTY
        {
            touched.codes.push((account.info.code_hash, code.clone()));
        }
        let cleared = account.is_created();
        let info = AccountData {
            nonce: account.info.nonce,
            balance: account.info.balance,
            code_hash: account.info.code_hash,
        };
        if cleared {
            out.push((Key::Wipe(*address), Written::Wipe));
        }
        if cleared || read_as(address) != Some(Some(info)) {
            out.push((Key::Account(*address), Written::Account { info: Some(info) }));
        }
        for (slot, value) in &account.storage {
            if value.is_changed() || cleared {
                out.push((Key::Slot(*address, *slot), Written::Slot(value.present_value)));
            }
        }
    }
    (out, touched)
}
