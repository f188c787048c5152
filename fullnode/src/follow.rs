//! Following the sequencer: signed envelopes in, state out, every EVM block's root checked.

use std::{path::Path, sync::Arc};

use alloy_consensus::Header;
use alloy_eips::eip1559::{BaseFeeParams, calc_next_block_base_fee};
use alloy_primitives::{Address, B256, U256};
use chain_rpc::chain::{
    Chain, ExecutedTx, MiniBlock, OpenBlock, PooledTx, SealedBlock, block_size, check_header,
    mini_block_hash,
};
use feed::{Batch, DaPointer, DaSource, Envelope, EnvelopeError, MiniBlockEnvelope};
use memstate::{CodecError, DiffCodec, GenesisAlloc, MemState, StateDiff};
use nomt::{Nomt, Options, SessionParams, hasher::Blake3Hasher};

/// Why the follower stopped taking input.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// An envelope that is not the sequencer's, or not well formed. Nothing was applied.
    #[error("envelope refused: {0}")]
    Envelope(#[from] EnvelopeError),
    /// A diff that does not decode against this node's state. Nothing was applied.
    #[error("mini-block {number}: {source}")]
    Diff {
        /// The mini-block.
        number: u64,
        /// Why.
        source: CodecError,
    },
    /// A mini-block whose transactions do not decode or do not hash to its hash. Nothing was
    /// applied.
    #[error("mini-block {number}: {reason}")]
    Transactions {
        /// The mini-block.
        number: u64,
        /// What is wrong.
        reason: String,
    },
    /// An envelope out of sequence (a gap, a replay, another branch). Nothing was applied.
    #[error("out of order: expected {expected}, got {got}")]
    OutOfOrder {
        /// What was expected next.
        expected: String,
        /// What came.
        got: String,
    },
    /// The DA backend.
    #[error(transparent)]
    Da(#[from] feed::DaError),
    /// The state after a block does not have the block's root: this node's state is wrong from
    /// here on. It stops; serving resumes only after a re-sync.
    #[error("block {block}: state root {ours} differs from the sequencer's {theirs}")]
    RootMismatch {
        /// The block.
        block: u64,
        /// Root computed here.
        ours: B256,
        /// Root in the signed header.
        theirs: B256,
    },
    /// A signed header whose transactions root, receipts root, bloom or gas used is not that of
    /// the mini-blocks it closes: the feed contradicts itself. It stops, as for a root
    /// mismatch.
    #[error("block {block}: the header's {field} is not that of its mini-blocks")]
    HeaderMismatch {
        /// The block.
        block: u64,
        /// Which field.
        field: &'static str,
    },
    /// An earlier root mismatch: nothing more is applied.
    #[error("stopped after a state-root mismatch at block {0}; re-sync")]
    Diverged(u64),
    /// NOMT failed.
    #[error("NOMT: {0}")]
    Nomt(String),
    /// The libp2p task has stopped.
    #[error("the network task stopped")]
    NetworkStopped,
}

/// Where an envelope fits, as [`Follower::offer`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// It was the next one and is applied.
    Applied,
    /// Already applied (a duplicate or a replay): nothing to do.
    Stale,
    /// Later than the next one: something is missing; catch up first.
    Ahead,
}

/// What the follower needs to know.
#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// Chain id envelopes must be signed for.
    pub chain_id: u64,
    /// Address of the sequencer's feed key.
    pub sequencer: Address,
    /// The chain's genesis.
    pub genesis: GenesisAlloc,
    /// NOMT hash-table buckets (as the sequencer's `storage.nomt_buckets`).
    pub nomt_buckets: u32,
    /// NOMT page and leaf caches, MiB (as the sequencer's `storage.nomt_page_cache_mib` and
    /// `storage.nomt_leaf_cache_mib`).
    pub nomt_cache_mib: (usize, usize),
}

/// A node that applies the sequencer's diffs to its own state and commits them to its own NOMT,
/// checking the root at every EVM block.
pub struct Follower {
    config: FollowerConfig,
    state: Arc<MemState>,
    chain: Arc<Chain>,
    codec: DiffCodec,
    nomt: Nomt<Blake3Hasher>,
    /// The next EVM block expected.
    next_block: u64,
    next_mini: u64,
    last_mini_hash: B256,
    parent_hash: B256,
    /// The diffs, wiped slots and transactions of the block being received.
    block_diffs: Vec<Arc<StateDiff>>,
    block_wiped: Vec<(Address, U256)>,
    block_txs: Vec<Arc<ExecutedTx>>,
    block_gas: u64,
    block_logs: u64,
    /// Logs blooms, with the hashes of repeating contracts and event signatures remembered.
    blooms: chain_rpc::chain::BloomHasher,
    /// The header of every applied block.
    headers: Vec<Header>,
    /// Genesis root, until block 0's header confirms it.
    genesis_root: B256,
    diverged: Option<u64>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("next_block", &self.next_block).finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower at genesis, with its NOMT database in `nomt_dir` (emptied first: it is derived
    /// data).
    pub fn new(config: FollowerConfig, nomt_dir: &Path) -> Result<Self, FollowError> {
        if nomt_dir.exists() {
            std::fs::remove_dir_all(nomt_dir).map_err(|e| FollowError::Nomt(e.to_string()))?;
        }
        let mut options = Options::new();
        options.path(nomt_dir);
        options.hashtable_buckets(config.nomt_buckets);
        options.page_cache_size(config.nomt_cache_mib.0);
        options.leaf_cache_size(config.nomt_cache_mib.1);
        let nomt =
            Nomt::<Blake3Hasher>::open(options).map_err(|e| FollowError::Nomt(e.to_string()))?;
        let state = Arc::new(MemState::new());
        let diff = memstate::genesis_diff(&config.genesis);
        let wiped = state.apply(&diff);
        let genesis_root = commit(&nomt, &diff, &wiped)?;
        let codec = DiffCodec::from_state(&state);
        Ok(Self {
            config,
            state,
            chain: Arc::new(Chain::new()),
            codec,
            nomt,
            next_block: 0,
            next_mini: 1,
            last_mini_hash: B256::ZERO,
            parent_hash: B256::ZERO,
            block_diffs: Vec::new(),
            block_wiped: Vec::new(),
            block_txs: Vec::new(),
            block_gas: 0,
            block_logs: 0,
            blooms: Default::default(),
            headers: Vec::new(),
            genesis_root,
            diverged: None,
        })
    }

    /// The state (through the newest applied mini-block).
    pub fn state(&self) -> &Arc<MemState> {
        &self.state
    }

    /// The applied blocks, mini-blocks and receipts, as the RPC serves them.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// The next EVM block expected.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// Headers of the applied blocks, by number.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Opens (signature, chain) and applies one signed envelope.
    pub fn apply_signed(&mut self, bytes: &[u8]) -> Result<(), FollowError> {
        let envelope = Envelope::open(bytes, self.config.sequencer, self.config.chain_id)?;
        self.apply(envelope)
    }

    /// Opens a signed envelope from the network and applies it if it is the next one; says
    /// where it fits otherwise. Errors are those of [`Follower::apply`].
    pub fn offer(&mut self, bytes: &[u8]) -> Result<Offer, FollowError> {
        let envelope = Envelope::open(bytes, self.config.sequencer, self.config.chain_id)?;
        let order = match &envelope {
            // The next mini-block of a later block: this block's envelope is missing.
            Envelope::MiniBlock(m)
                if m.number == self.next_mini && m.block_number > self.next_block =>
            {
                std::cmp::Ordering::Greater
            }
            Envelope::MiniBlock(m) => m.number.cmp(&self.next_mini),
            Envelope::Block(b) => match b.header.number.cmp(&self.next_block) {
                // A block whose mini-blocks have not all arrived: one is missing.
                std::cmp::Ordering::Equal if b.mini_blocks as usize != self.block_diffs.len() => {
                    std::cmp::Ordering::Greater
                }
                order => order,
            },
        };
        match order {
            std::cmp::Ordering::Less => Ok(Offer::Stale),
            std::cmp::Ordering::Greater => Ok(Offer::Ahead),
            std::cmp::Ordering::Equal => self.apply(envelope).map(|()| Offer::Applied),
        }
    }

    /// Applies block `number`'s batch from where this node is: envelopes it already applied
    /// (from gossip) are skipped.
    pub fn offer_batch(&mut self, number: u64, bytes: &[u8]) -> Result<(), FollowError> {
        let batch = Batch::from_bytes(number, bytes)?;
        for envelope in &batch.envelopes {
            if self.offer(envelope)? == Offer::Ahead {
                return Err(FollowError::OutOfOrder {
                    expected: format!(
                        "block {} from mini-block {}",
                        self.next_block, self.next_mini
                    ),
                    got: format!("a batch of block {number} that does not continue it"),
                });
            }
        }
        Ok(())
    }

    /// Applies one opened envelope: a mini-block's diff, or a block's root check.
    pub fn apply(&mut self, envelope: Envelope) -> Result<(), FollowError> {
        if let Some(block) = self.diverged {
            return Err(FollowError::Diverged(block));
        }
        match envelope {
            Envelope::MiniBlock(mini) => self.apply_mini_block(&mini),
            Envelope::Block(block) => self.apply_block(&block.header, block.mini_blocks),
        }
    }

    fn apply_mini_block(&mut self, mini: &MiniBlockEnvelope) -> Result<(), FollowError> {
        let position = (mini.number, mini.block_number, mini.parent_hash);
        let expected = (self.next_mini, self.next_block, self.last_mini_hash);
        if position != expected {
            return Err(FollowError::OutOfOrder {
                expected: format!(
                    "mini-block {} of block {} after {}",
                    expected.0, expected.1, expected.2
                ),
                got: format!(
                    "mini-block {} of block {} after {}",
                    position.0, position.1, position.2
                ),
            });
        }
        let txs = mini
            .txs
            .iter()
            .map(|record| PooledTx::from_recovered(record.raw.clone(), record.sender).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| FollowError::Transactions { number: mini.number, reason })?;
        let hash = mini_block_hash(
            mini.parent_hash,
            mini.number,
            mini.block_number,
            txs.iter().map(|t| &t.hash),
        );
        if hash != mini.hash {
            return Err(FollowError::Transactions {
                number: mini.number,
                reason: format!("its transactions hash to {hash}, not to its hash {}", mini.hash),
            });
        }
        let (diff, wiped) = self
            .codec
            .decode_apply(&mini.diff, &self.state)
            .map_err(|source| FollowError::Diff { number: mini.number, source })?;
        let diff = Arc::new(diff);
        self.block_wiped.extend(wiped);
        self.block_diffs.push(diff.clone());
        self.next_mini += 1;
        self.last_mini_hash = mini.hash;
        self.index_mini_block(mini, txs, diff);
        Ok(())
    }

    /// Adds an applied mini-block's transactions and receipts to the chain readers see.
    fn index_mini_block(
        &mut self,
        mini: &MiniBlockEnvelope,
        txs: Vec<Arc<PooledTx>>,
        diff: Arc<StateDiff>,
    ) {
        if self.block_diffs.len() == 1 {
            // The first mini-block of its EVM block opens that block for readers.
            let parent = self.headers.last();
            self.chain.set_open_block(OpenBlock {
                number: mini.block_number,
                timestamp: mini.timestamp,
                base_fee: mini.base_fee,
                gas_limit: parent.map_or(0, |h| h.gas_limit),
                beneficiary: parent.map_or(Address::ZERO, |h| h.beneficiary),
                ..Default::default()
            });
        }
        let mut executed = Vec::with_capacity(txs.len());
        let mut gas_used = 0;
        for (tx, record) in txs.into_iter().zip(&mini.txs) {
            gas_used += record.gas_used;
            self.block_gas += record.gas_used;
            let first_log_index = self.block_logs;
            self.block_logs += record.logs.len() as u64;
            executed.push(Arc::new(ExecutedTx {
                block_number: mini.block_number,
                index: (self.block_txs.len() + executed.len()) as u64,
                mini_block: mini.number,
                mini_block_hash: mini.hash,
                success: record.success,
                gas_used: record.gas_used,
                cumulative_gas_used: self.block_gas,
                logs: record.logs.clone(),
                first_log_index,
                contract_address: record.created(),
                effective_gas_price: record.effective_gas_price,
                bloom: self.blooms.bloom(&record.logs),
                tx,
            }));
        }
        self.block_txs.extend(executed.iter().cloned());
        self.chain.push_mini_block(Arc::new(MiniBlock {
            number: mini.number,
            block_number: mini.block_number,
            index: mini.index,
            hash: mini.hash,
            sealed_at_ms: mini.sealed_at_ms,
            txs: executed,
            gas_used,
            diff,
        }));
    }

    fn apply_block(&mut self, header: &Header, mini_blocks: u32) -> Result<(), FollowError> {
        if header.number != self.next_block || header.parent_hash != self.parent_hash {
            return Err(FollowError::OutOfOrder {
                expected: format!("block {} on {}", self.next_block, self.parent_hash),
                got: format!("block {} on {}", header.number, header.parent_hash),
            });
        }
        if mini_blocks as usize != self.block_diffs.len() {
            return Err(FollowError::OutOfOrder {
                expected: format!(
                    "block {} after {} mini-blocks",
                    header.number,
                    self.block_diffs.len()
                ),
                got: format!("a block of {mini_blocks} mini-blocks"),
            });
        }
        if let Err(field) = check_header(header, &self.block_txs) {
            self.diverged = Some(header.number);
            tracing::error!(
                block = header.number,
                field,
                "SIGNED HEADER CONTRADICTS ITS MINI-BLOCKS: this node stops applying; re-sync"
            );
            return Err(FollowError::HeaderMismatch { block: header.number, field });
        }
        let ours = if header.number == 0 {
            self.genesis_root
        } else {
            let merged = StateDiff::merged(self.block_diffs.iter().map(|d| &**d));
            commit(&self.nomt, &merged, &self.block_wiped)?
        };
        self.block_diffs.clear();
        self.block_wiped.clear();
        if ours != header.state_root {
            self.diverged = Some(header.number);
            tracing::error!(block = header.number, %ours, theirs = %header.state_root, "STATE ROOT MISMATCH: this node stops applying; re-sync");
            return Err(FollowError::RootMismatch {
                block: header.number,
                ours,
                theirs: header.state_root,
            });
        }
        self.parent_hash = header.hash_slow();
        self.headers.push(header.clone());
        self.next_block += 1;
        let txs = std::mem::take(&mut self.block_txs);
        self.block_gas = 0;
        self.block_logs = 0;
        self.chain.push_block(Arc::new(SealedBlock {
            size: block_size(header, &txs),
            header: header.clone(),
            hash: self.parent_hash,
            txs,
            mini_block_count: mini_blocks,
        }));
        // Until the next block's first mini-block says otherwise.
        self.chain.set_open_block(OpenBlock {
            number: header.number + 1,
            timestamp: header.timestamp,
            base_fee: calc_next_block_base_fee(
                header.gas_used,
                header.gas_limit,
                header.base_fee_per_gas.unwrap_or_default(),
                BaseFeeParams::ethereum(),
            ),
            gas_limit: header.gas_limit,
            beneficiary: header.beneficiary,
            ..Default::default()
        });
        metrics::gauge!("fullnode_block_number").set(header.number as f64);
        tracing::info!(block = header.number, root = %ours, mini_blocks, "block applied, state root checked");
        Ok(())
    }

    /// Applies every batch `source` has from the next block on; returns how many blocks.
    pub fn catch_up(&mut self, source: &dyn DaSource) -> Result<u64, FollowError> {
        let mut applied = 0;
        while let Some(bytes) = source.get(self.next_block, &DaPointer::default())? {
            self.offer_batch(self.next_block, &bytes)?;
            applied += 1;
        }
        Ok(applied)
    }
}

fn commit(
    nomt: &Nomt<Blake3Hasher>,
    diff: &StateDiff,
    wiped: &[(Address, U256)],
) -> Result<B256, FollowError> {
    let session = nomt.begin_session(SessionParams::default());
    let finished = session
        .finish(memstate::nomt_ops(diff, wiped))
        .map_err(|e| FollowError::Nomt(e.to_string()))?;
    let root = B256::from(finished.root().into_inner());
    finished.commit(nomt).map_err(|e| FollowError::Nomt(e.to_string()))?;
    Ok(root)
}
