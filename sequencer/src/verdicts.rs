//! Provers' verdicts on the sequencer's blocks, as they arrive over libp2p: each is checked
//! (signature, chain, a block this sequencer sealed, with that hash) and recorded per block.
//! The sequencer never waits for them; a failure is logged loudly and counted in metrics
//! (`prover_failures_total`), and production goes on.

use std::{collections::BTreeMap, sync::Arc};

use alloy_primitives::{Address, B256};
use feed::BlockVerdict;
use parking_lot::Mutex;
use serde::Serialize;

use crate::chain::Chain;

/// Verdicts kept per block at most (one per prover; later ones from a prover replace its own).
const MAX_PER_BLOCK: usize = 16;
/// Blocks whose verdicts are kept (the newest).
const KEPT_BLOCKS: usize = 100_000;

/// One recorded verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// The prover's address (from its signature).
    pub prover: Address,
    /// Valid or not.
    pub valid: bool,
    /// Why not.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The root it verified from.
    pub parent_root: B256,
    /// The post-state root it checked.
    pub post_root: B256,
    /// How it verified.
    pub backend: String,
}

/// Why a verdict was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    /// Not a signed verdict for this chain.
    #[error(transparent)]
    Envelope(#[from] feed::EnvelopeError),
    /// From a prover not in `feed.provers`.
    #[error("verdict from {0}, which is not a configured prover")]
    Prover(Address),
    /// About a block this sequencer did not seal (or not yet), or with another hash.
    #[error("verdict on block {block} with hash {hash}, which is not this chain's")]
    UnknownBlock {
        /// The block.
        block: u64,
        /// The hash it names.
        hash: B256,
    },
}

/// The verdicts received, by block.
#[derive(Debug)]
pub struct Verdicts {
    chain: Arc<Chain>,
    chain_id: u64,
    provers: Vec<Address>,
    blocks: Mutex<BTreeMap<u64, Vec<Recorded>>>,
}

impl Verdicts {
    /// Records verdicts on `chain`'s blocks from `provers` (any prover when empty).
    pub fn new(chain: Arc<Chain>, chain_id: u64, provers: Vec<Address>) -> Self {
        Self { chain, chain_id, provers, blocks: Mutex::new(BTreeMap::new()) }
    }

    /// Checks and records a signed verdict.
    pub fn record(&self, signed: &[u8]) -> Result<Recorded, VerdictError> {
        let (prover, verdict) = BlockVerdict::open(signed, self.chain_id)?;
        if !self.provers.is_empty() && !self.provers.contains(&prover) {
            return Err(VerdictError::Prover(prover));
        }
        let ours = self.chain.block(verdict.block).map(|b| b.hash);
        if ours != Some(verdict.block_hash) {
            return Err(VerdictError::UnknownBlock {
                block: verdict.block,
                hash: verdict.block_hash,
            });
        }
        let recorded = Recorded {
            prover,
            valid: verdict.valid,
            reason: verdict.reason,
            parent_root: verdict.parent_root,
            post_root: verdict.post_root,
            backend: verdict.backend,
        };
        metrics::counter!("prover_verdicts_total", "valid" => recorded.valid.to_string())
            .increment(1);
        if recorded.valid {
            tracing::debug!(block = verdict.block, %prover, "block verified by a prover");
        } else {
            metrics::counter!("prover_failures_total").increment(1);
            tracing::error!(
                block = verdict.block,
                %prover,
                reason = %recorded.reason,
                "A PROVER FOUND THIS BLOCK INVALID"
            );
        }
        let mut blocks = self.blocks.lock();
        let list = blocks.entry(verdict.block).or_default();
        list.retain(|r| r.prover != prover);
        if list.len() < MAX_PER_BLOCK {
            list.push(recorded.clone());
        }
        while blocks.len() > KEPT_BLOCKS {
            blocks.pop_first();
        }
        let verified = blocks
            .iter()
            .rev()
            .find(|(_, list)| list.iter().any(|r| r.valid))
            .map_or(0, |(n, _)| *n);
        drop(blocks);
        metrics::gauge!("prover_verified_block").set(verified as f64);
        metrics::gauge!("prover_lag_blocks")
            .set(self.chain.head_number().saturating_sub(verified) as f64);
        Ok(recorded)
    }

    /// The verdicts on block `number`.
    pub fn of(&self, number: u64) -> Vec<Recorded> {
        self.blocks.lock().get(&number).cloned().unwrap_or_default()
    }
}
