//! The chain as readers see it: sealed EVM blocks, the open block's mini-blocks, a transaction
//! index, and broadcast events. The builder and the root committer write; RPC reads.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bloom, Log};
use memstate::{StateDiff, StateError};
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::broadcast;

use crate::tx::PooledTx;

/// An executed transaction with its receipt data and position.
#[derive(Debug)]
pub struct ExecutedTx {
    /// The transaction.
    pub tx: Arc<PooledTx>,
    /// EVM block number.
    pub block_number: u64,
    /// Position in the EVM block.
    pub index: u64,
    /// Global number of the mini-block that holds it.
    pub mini_block: u64,
    /// Hash of that mini-block.
    pub mini_block_hash: B256,
    /// EIP-658 status.
    pub success: bool,
    /// Gas it used.
    pub gas_used: u64,
    /// Gas used in the EVM block up to and including it.
    pub cumulative_gas_used: u64,
    /// Its logs.
    pub logs: Vec<Log>,
    /// Index (within the EVM block) of its first log.
    pub first_log_index: u64,
    /// Contract it created.
    pub contract_address: Option<Address>,
    /// Gas price paid.
    pub effective_gas_price: u128,
    /// Bloom of its logs.
    pub bloom: Bloom,
}

/// A mini-block: an ordered batch executed and made durable together.
#[derive(Debug)]
pub struct MiniBlock {
    /// Global sequence number (1-based).
    pub number: u64,
    /// EVM block it belongs to.
    pub block_number: u64,
    /// Position within that block (0-based).
    pub index: u32,
    /// Hash: keccak of the parent mini-block hash, the numbers and the transaction hashes.
    pub hash: B256,
    /// Wall time it was sealed, milliseconds since the epoch.
    pub sealed_at_ms: u64,
    /// Its transactions.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// Gas used by its transactions.
    pub gas_used: u64,
    /// The state it changed.
    pub diff: Arc<StateDiff>,
}

/// A sealed EVM block.
#[derive(Debug)]
pub struct SealedBlock {
    /// Its header (state root included).
    pub header: Header,
    /// keccak256(rlp(header)).
    pub hash: B256,
    /// Its transactions in order.
    pub txs: Vec<Arc<ExecutedTx>>,
    /// How many mini-blocks it holds.
    pub mini_block_count: u32,
    /// RLP size of the block.
    pub size: u64,
}

/// The EVM block being built.
#[derive(Debug, Default, Clone)]
pub struct OpenBlock {
    /// Its number.
    pub number: u64,
    /// Its timestamp.
    pub timestamp: u64,
    /// Its base fee.
    pub base_fee: u64,
    /// Gas used so far.
    pub gas_used: u64,
    /// Mini-blocks sealed so far.
    pub mini_blocks: u32,
}

/// The chain's shared read view.
pub struct Chain {
    blocks: RwLock<Vec<Arc<SealedBlock>>>,
    by_hash: RwLock<HashMap<B256, u64>>,
    sealed_signal: (Mutex<()>, Condvar),
    open: RwLock<OpenBlock>,
    txs: RwLock<HashMap<B256, Arc<ExecutedTx>>>,
    /// Executed transactions of blocks not sealed yet (the open block, and one whose root is
    /// still being committed), by block number.
    unsealed: RwLock<std::collections::BTreeMap<u64, Vec<Arc<ExecutedTx>>>>,
    mini_blocks: RwLock<u64>,
    /// Each sealed mini-block, after it is durable.
    pub mini_block_events: broadcast::Sender<Arc<MiniBlock>>,
    /// Each sealed EVM block.
    pub block_events: broadcast::Sender<Arc<SealedBlock>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("head", &self.head_number()).finish_non_exhaustive()
    }
}

/// How long BLOCKHASH waits for a block whose root is still being committed.
const BLOCK_HASH_WAIT: Duration = Duration::from_secs(30);

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// An empty chain (no genesis yet).
    pub fn new() -> Self {
        Self {
            blocks: RwLock::new(Vec::new()),
            by_hash: RwLock::new(HashMap::new()),
            sealed_signal: (Mutex::new(()), Condvar::new()),
            open: RwLock::new(OpenBlock::default()),
            txs: RwLock::new(HashMap::new()),
            unsealed: RwLock::new(Default::default()),
            mini_blocks: RwLock::new(0),
            mini_block_events: broadcast::channel(4096).0,
            block_events: broadcast::channel(1024).0,
        }
    }

    /// Number of the newest sealed EVM block.
    pub fn head_number(&self) -> u64 {
        self.blocks.read().len().saturating_sub(1) as u64
    }

    /// The newest sealed block.
    pub fn head(&self) -> Option<Arc<SealedBlock>> {
        self.blocks.read().last().cloned()
    }

    /// A sealed block by number.
    pub fn block(&self, number: u64) -> Option<Arc<SealedBlock>> {
        self.blocks.read().get(usize::try_from(number).ok()?).cloned()
    }

    /// A sealed block by hash.
    pub fn block_by_hash(&self, hash: &B256) -> Option<Arc<SealedBlock>> {
        let number = *self.by_hash.read().get(hash)?;
        self.block(number)
    }

    /// Sealed blocks `from..=to` (clamped to the head).
    pub fn blocks_in(&self, from: u64, to: u64) -> Vec<Arc<SealedBlock>> {
        let blocks = self.blocks.read();
        let end = (to as usize).min(blocks.len().saturating_sub(1));
        if blocks.is_empty() || from as usize > end {
            return Vec::new();
        }
        blocks[from as usize..=end].to_vec()
    }

    /// Appends a sealed block (the committer calls this, in order).
    pub fn push_block(&self, block: Arc<SealedBlock>) {
        {
            let mut blocks = self.blocks.write();
            debug_assert_eq!(blocks.len() as u64, block.header.number);
            blocks.push(block.clone());
        }
        self.by_hash.write().insert(block.hash, block.header.number);
        self.unsealed.write().remove(&block.header.number);
        {
            let _guard = self.sealed_signal.0.lock();
            self.sealed_signal.1.notify_all();
        }
        let _ = self.block_events.send(block);
    }

    /// Puts back a block read from the block store at start-up: its transactions are indexed
    /// as if their mini-blocks had just been sealed.
    pub fn restore_block(&self, block: Arc<SealedBlock>) {
        {
            let mut txs = self.txs.write();
            for tx in &block.txs {
                txs.insert(tx.tx.hash, tx.clone());
            }
        }
        if let Some(last) = block.txs.last() {
            let mut count = self.mini_blocks.write();
            *count = (*count).max(last.mini_block);
        }
        self.push_block(block);
    }

    /// Waits until block `number` is sealed and returns its hash.
    pub fn wait_block_hash(&self, number: u64) -> Result<B256, StateError> {
        let deadline = Instant::now() + BLOCK_HASH_WAIT;
        let mut guard = self.sealed_signal.0.lock();
        loop {
            if let Some(block) = self.block(number) {
                return Ok(block.hash);
            }
            if self.sealed_signal.1.wait_until(&mut guard, deadline).timed_out() {
                return Err(StateError::BlockHashUnavailable(number));
            }
        }
    }

    /// The open block.
    pub fn open_block(&self) -> OpenBlock {
        self.open.read().clone()
    }

    /// Replaces the open block's summary.
    pub fn set_open_block(&self, open: OpenBlock) {
        *self.open.write() = open;
    }

    /// Number of mini-blocks sealed so far.
    pub fn mini_block_count(&self) -> u64 {
        *self.mini_blocks.read()
    }

    /// Records a durable mini-block: indexes its transactions and tells subscribers.
    pub fn push_mini_block(&self, mini: Arc<MiniBlock>) {
        {
            let mut txs = self.txs.write();
            for tx in &mini.txs {
                txs.insert(tx.tx.hash, tx.clone());
            }
        }
        self.unsealed
            .write()
            .entry(mini.block_number)
            .or_default()
            .extend(mini.txs.iter().cloned());
        *self.mini_blocks.write() = mini.number;
        {
            let mut open = self.open.write();
            open.gas_used += mini.gas_used;
            open.mini_blocks += 1;
        }
        let _ = self.mini_block_events.send(mini);
    }

    /// Executed transactions of unsealed blocks numbered `from..=to`, in order.
    pub fn unsealed_txs(&self, from: u64, to: u64) -> Vec<Arc<ExecutedTx>> {
        if from > to {
            return Vec::new();
        }
        self.unsealed.read().range(from..=to).flat_map(|(_, txs)| txs.iter().cloned()).collect()
    }

    /// An executed transaction by hash.
    pub fn tx(&self, hash: &B256) -> Option<Arc<ExecutedTx>> {
        self.txs.read().get(hash).cloned()
    }

    /// The hash readers should see for the block holding `tx`: the EVM block's once sealed,
    /// until then the mini-block's.
    pub fn block_hash_of(&self, tx: &ExecutedTx) -> B256 {
        self.block(tx.block_number).map_or(tx.mini_block_hash, |b| b.hash)
    }
}
