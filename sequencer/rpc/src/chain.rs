//! The chain as readers see it: sealed EVM blocks, the open block's mini-blocks, a transaction
//! index, and broadcast events. The builder and the root committer write; RPC reads.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom,
    Transaction, TxEnvelope, TxType, proofs,
};
use alloy_eips::{Typed2718, eip2718::Encodable2718, eip7685::EMPTY_REQUESTS_HASH};
use alloy_primitives::{Address, B256, Bloom, Bytes, Log, U256};
use alloy_rlp::Encodable;
use memstate::{StateDiff, StateError};
use parking_lot::{Condvar, Mutex, RwLock};
use revm::{context::TxEnv, primitives::hardfork::SpecId};
use tokio::sync::broadcast;

use crate::evm::{BlockEnvParams, tx_env};

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
    /// Its gas limit.
    pub gas_limit: u64,
    /// Its fee recipient.
    pub beneficiary: Address,
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

/// A decoded, signature-checked transaction with its recovered sender.
#[derive(Debug)]
pub struct PooledTx {
    /// The transaction.
    pub envelope: TxEnvelope,
    /// Recovered signer.
    pub sender: Address,
    /// Transaction hash.
    pub hash: B256,
    /// The EIP-2718 bytes it arrived as (what the WAL stores).
    pub raw: Bytes,
}

/// The envelope of exactly one EIP-2718 transaction (no trailing bytes).
pub fn decode_envelope(raw: &[u8]) -> Result<TxEnvelope, String> {
    use alloy_eips::eip2718::Decodable2718;
    let mut buf = raw;
    let envelope = TxEnvelope::decode_2718(&mut buf).map_err(|e| e.to_string())?;
    if !buf.is_empty() {
        return Err(format!("{} trailing bytes after the transaction", buf.len()));
    }
    Ok(envelope)
}

/// Recovers a transaction's signer with libsecp256k1 (about 5x faster than the pure-Rust k256
/// path).
pub fn recover_sender(tx: &TxEnvelope) -> Result<Address, String> {
    use secp256k1::{
        Message, SECP256K1,
        ecdsa::{RecoverableSignature, RecoveryId},
    };
    let sig = tx.signature();
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let id = RecoveryId::try_from(i32::from(sig.v())).map_err(|e| e.to_string())?;
    let recoverable =
        RecoverableSignature::from_compact(&compact, id).map_err(|e| e.to_string())?;
    let message = Message::from_digest(tx.signature_hash().0);
    let public = SECP256K1.recover_ecdsa(message, &recoverable).map_err(|e| e.to_string())?;
    let hash = alloy_primitives::keccak256(&public.serialize_uncompressed()[1..]);
    Ok(Address::from_slice(&hash[12..]))
}

/// A mini-block's hash: keccak256 of the previous mini-block's hash, its global number, its EVM
/// block's number and its transactions' hashes.
pub fn mini_block_hash<'a>(
    parent: B256,
    number: u64,
    block_number: u64,
    tx_hashes: impl ExactSizeIterator<Item = &'a B256>,
) -> B256 {
    let mut input = Vec::with_capacity(48 + tx_hashes.len() * 32);
    input.extend_from_slice(parent.as_slice());
    input.extend_from_slice(&number.to_be_bytes());
    input.extend_from_slice(&block_number.to_be_bytes());
    for hash in tx_hashes {
        input.extend_from_slice(hash.as_slice());
    }
    alloy_primitives::keccak256(&input)
}

impl PooledTx {
    /// A transaction whose sender is already known (recovered when it was admitted). Errors if
    /// `raw` is not exactly one EIP-2718 transaction.
    pub fn from_recovered(raw: Bytes, sender: Address) -> Result<Self, String> {
        let envelope = decode_envelope(&raw)?;
        let hash = alloy_primitives::keccak256(&raw);
        Ok(Self { envelope, sender, hash, raw })
    }

    /// Nonce.
    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    /// Gas limit.
    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }

    /// Priority fee paid per gas at `base_fee` (zero if the fee cap is below it).
    pub fn effective_tip(&self, base_fee: u64) -> u128 {
        self.envelope.effective_tip_per_gas(base_fee).unwrap_or(0)
    }

    /// Gas price actually paid per gas at `base_fee`.
    pub fn effective_gas_price(&self, base_fee: u64) -> u128 {
        self.envelope.effective_gas_price(Some(base_fee))
    }

    /// The most this transaction can cost: `gas * maxFee + value`.
    pub fn max_cost(&self) -> U256 {
        U256::from(self.envelope.gas_limit()) * U256::from(self.envelope.max_fee_per_gas())
            + self.envelope.value()
    }

    /// revm's view of the transaction.
    pub fn tx_env(&self) -> TxEnv {
        tx_env(&self.envelope, self.sender)
    }
}

/// The consensus receipt of an executed transaction.
pub fn consensus_receipt(tx: &ExecutedTx) -> ReceiptEnvelope<Log> {
    let receipt = Receipt {
        status: Eip658Value::Eip658(tx.success),
        cumulative_gas_used: tx.cumulative_gas_used,
        logs: tx.logs.clone(),
    };
    let ty = TxType::try_from(tx.tx.envelope.ty()).unwrap_or(TxType::Legacy);
    ReceiptEnvelope::from_typed(ty, ReceiptWithBloom { receipt, logs_bloom: tx.bloom })
}

/// Checks that `header` commits to `txs` (in order, with their receipts): its transactions
/// root, receipts root, logs bloom and gas used. Errors name the first field that differs.
pub fn check_header(header: &Header, txs: &[Arc<ExecutedTx>]) -> Result<(), &'static str> {
    if transactions_root(txs) != header.transactions_root {
        return Err("transactions root");
    }
    let receipts: Vec<_> = txs.iter().map(|t| consensus_receipt(t)).collect();
    if proofs::calculate_receipt_root(&receipts) != header.receipts_root {
        return Err("receipts root");
    }
    let mut bloom = Bloom::default();
    for tx in txs {
        bloom.accrue_bloom(&tx.bloom);
    }
    if bloom != header.logs_bloom {
        return Err("logs bloom");
    }
    if txs.last().map_or(0, |t| t.cumulative_gas_used) != header.gas_used {
        return Err("gas used");
    }
    Ok(())
}

/// Builds a block header for `env` with the given contents and roots.
pub fn build_header(
    spec: SpecId,
    env: &BlockEnvParams,
    parent_hash: B256,
    state_root: B256,
    txs: &[Arc<ExecutedTx>],
    gas_used: u64,
) -> Header {
    let receipts: Vec<_> = txs.iter().map(|t| consensus_receipt(t)).collect();
    let mut bloom = Bloom::default();
    for tx in txs {
        bloom.accrue_bloom(&tx.bloom);
    }
    Header {
        parent_hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: env.beneficiary,
        state_root,
        transactions_root: transactions_root(txs),
        receipts_root: proofs::calculate_receipt_root(&receipts),
        logs_bloom: bloom,
        difficulty: U256::ZERO,
        number: env.number,
        gas_limit: env.gas_limit,
        gas_used,
        timestamp: env.timestamp,
        extra_data: Bytes::new(),
        mix_hash: env.prevrandao(),
        nonce: Default::default(),
        base_fee_per_gas: Some(env.base_fee),
        withdrawals_root: spec
            .is_enabled_in(SpecId::SHANGHAI)
            .then_some(alloy_trie::EMPTY_ROOT_HASH),
        blob_gas_used: spec.is_enabled_in(SpecId::CANCUN).then_some(0),
        excess_blob_gas: spec.is_enabled_in(SpecId::CANCUN).then_some(0),
        parent_beacon_block_root: spec.is_enabled_in(SpecId::CANCUN).then_some(B256::ZERO),
        requests_hash: spec.is_enabled_in(SpecId::PRAGUE).then_some(EMPTY_REQUESTS_HASH),
        block_access_list_hash: None,
        slot_number: None,
    }
}

/// Computes logs blooms, remembering the keccak hashes of the inputs that repeat across
/// transactions: the emitting contracts and the event signatures (topic 0). An ERC-20 transfer
/// then hashes two of its log's four inputs instead of all four. The other topics (senders,
/// recipients, amounts) rarely repeat and are hashed each time. The memory is bounded.
#[derive(Debug, Default)]
pub struct BloomHasher {
    addresses: std::collections::HashMap<Address, B256>,
    signatures: std::collections::HashMap<B256, B256>,
}

impl BloomHasher {
    /// Inputs remembered before the memory is emptied.
    const CAPACITY: usize = 4096;

    /// The bloom of `logs`, equal to [`alloy_primitives::logs_bloom`]'s.
    pub fn bloom<'a>(&mut self, logs: impl IntoIterator<Item = &'a Log>) -> Bloom {
        let mut bloom = Bloom::default();
        for log in logs {
            let hash = remembered(&mut self.addresses, log.address);
            bloom.accrue(alloy_primitives::BloomInput::Hash(hash));
            for (i, topic) in log.topics().iter().enumerate() {
                let hash = if i == 0 {
                    remembered(&mut self.signatures, *topic)
                } else {
                    alloy_primitives::keccak256(topic)
                };
                bloom.accrue(alloy_primitives::BloomInput::Hash(hash));
            }
        }
        bloom
    }
}

/// keccak256 of `input`, from `seen` when it is there (`seen` is emptied when full).
fn remembered<K: AsRef<[u8]> + Eq + std::hash::Hash + Copy>(
    seen: &mut std::collections::HashMap<K, B256>,
    input: K,
) -> B256 {
    if let Some(hash) = seen.get(&input) {
        return *hash;
    }
    if seen.len() >= BloomHasher::CAPACITY {
        seen.clear();
    }
    let hash = alloy_primitives::keccak256(input.as_ref());
    seen.insert(input, hash);
    hash
}

/// The transactions root: the ordered trie of the transactions' EIP-2718 encodings, which are
/// the bytes each was submitted as (its hash is theirs), so nothing is encoded again.
pub fn transactions_root(txs: &[Arc<ExecutedTx>]) -> B256 {
    alloy_trie::root::ordered_trie_root_with_encoder(txs, |tx, out| {
        out.extend_from_slice(&tx.tx.raw);
    })
}

/// RLP size of the whole block (header, transactions, no ommers, no withdrawals).
pub fn block_size(header: &Header, txs: &[Arc<ExecutedTx>]) -> u64 {
    let body: usize = txs.iter().map(|t| t.tx.envelope.network_len()).sum();
    let list = |payload: usize| alloy_rlp::length_of_length(payload) + payload;
    let withdrawals = if header.withdrawals_root.is_some() { list(0) } else { 0 };
    list(header.length() + list(body) + list(0) + withdrawals) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembering bloom equals alloy's on logs whose contracts and signatures repeat and
    /// on more distinct ones than it remembers (across the emptying of its memory).
    #[test]
    fn remembered_hashes_give_alloys_bloom() {
        let mut hasher = BloomHasher::default();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..3 * BloomHasher::CAPACITY as u64 {
            let logs: Vec<Log> = (0..(i % 3))
                .map(|j| {
                    // Half the contracts and signatures repeat; a topic may equal an address
                    // padded to 32 bytes.
                    let address = if next() % 2 == 0 {
                        Address::with_last_byte(j as u8)
                    } else {
                        Address::from_word(B256::from(alloy_primitives::U256::from(next())))
                    };
                    let signature = if next() % 2 == 0 {
                        B256::with_last_byte(7)
                    } else {
                        B256::from(alloy_primitives::U256::from(next()))
                    };
                    let topics = [signature, address.into_word(), B256::repeat_byte(j as u8)];
                    Log::new_unchecked(
                        address,
                        topics[..(next() % 4) as usize].to_vec(),
                        Bytes::new(),
                    )
                })
                .collect();
            assert_eq!(hasher.bloom(&logs), alloy_primitives::logs_bloom(&logs), "round {i}");
        }
    }
}
