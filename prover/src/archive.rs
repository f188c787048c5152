//! Blocks to verify, read from the sequencer's DA archive: block `n`'s batch (its signed
//! envelopes), block `n - 1`'s (for the parent root) and block `n`'s witness, all in the same
//! directory.

use std::path::Path;

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bytes};
use feed::{Batch, DaPointer, DaSource, Envelope, LocalArchive, TxRecord};

use crate::BlockInput;

/// Why a block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The DA archive.
    #[error(transparent)]
    Da(#[from] feed::DaError),
    /// The archive lacks something.
    #[error("block {block}: {what} is not in the archive")]
    Missing {
        /// The block.
        block: u64,
        /// What.
        what: &'static str,
    },
    /// An envelope that is not the sequencer's or not well formed.
    #[error("block {block}: {reason}")]
    Envelope {
        /// The block.
        block: u64,
        /// Why.
        reason: String,
    },
}

/// Block `number`'s header and transactions from its DA batch, every envelope opened against
/// the sequencer's address.
pub fn parse_batch(
    number: u64,
    bytes: &[u8],
    sequencer: Address,
    chain_id: u64,
) -> Result<(Header, Vec<TxRecord>), ArchiveError> {
    let batch = Batch::from_bytes(number, bytes)?;
    let mut txs = Vec::new();
    let mut header = None;
    for signed in &batch.envelopes {
        let envelope = Envelope::open(signed, sequencer, chain_id)
            .map_err(|e| ArchiveError::Envelope { block: number, reason: e.to_string() })?;
        match envelope {
            Envelope::MiniBlock(mini) => txs.extend(mini.txs),
            Envelope::Block(block) => header = Some(block.header),
        }
    }
    let header = header.ok_or(ArchiveError::Missing { block: number, what: "its header" })?;
    if header.number != number {
        return Err(ArchiveError::Envelope {
            block: number,
            reason: format!("the batch holds block {}", header.number),
        });
    }
    Ok((header, txs))
}

/// The archive's blocks and witnesses, opened with the sequencer's feed address.
#[derive(Debug, Clone)]
pub struct Archive {
    batches: LocalArchive,
    witnesses: LocalArchive,
    sequencer: Address,
    chain_id: u64,
}

impl Archive {
    /// The archive in `dir`, whose envelopes must be signed by `sequencer` for `chain_id`.
    pub fn open(dir: &Path, sequencer: Address, chain_id: u64) -> Result<Self, ArchiveError> {
        Ok(Self {
            batches: LocalArchive::open(dir)?,
            witnesses: LocalArchive::witnesses(dir)?,
            sequencer,
            chain_id,
        })
    }

    /// The newest block the archive holds.
    pub fn last(&self) -> Result<Option<u64>, ArchiveError> {
        Ok(self.batches.last()?)
    }

    /// Block `number`'s header and transactions, opened and checked against the signer.
    fn block(&self, number: u64) -> Result<(Header, Vec<TxRecord>), ArchiveError> {
        let bytes = self
            .batches
            .get(number, &DaPointer::default())?
            .ok_or(ArchiveError::Missing { block: number, what: "its batch" })?;
        parse_batch(number, &bytes, self.sequencer, self.chain_id)
    }

    /// Everything needed to verify block `number` (at least 1).
    pub fn input(&self, number: u64) -> Result<BlockInput, ArchiveError> {
        let (parent, _) = self.block(number.checked_sub(1).ok_or(ArchiveError::Missing {
            block: 0,
            what: "a parent (genesis is not verified from a witness)",
        })?)?;
        let (header, txs) = self.block(number)?;
        if header.parent_hash != parent.hash_slow() {
            return Err(ArchiveError::Envelope {
                block: number,
                reason: "its parent hash is not block n - 1's hash".into(),
            });
        }
        let witness = self
            .witnesses
            .get(number, &DaPointer::default())?
            .ok_or(ArchiveError::Missing { block: number, what: "its witness" })?;
        Ok(BlockInput {
            parent_root: parent.state_root,
            header,
            txs,
            witness: Bytes::from(witness),
        })
    }

    /// The parent root of block `number` as the archive has it.
    pub fn parent_root(&self, number: u64) -> Result<B256, ArchiveError> {
        Ok(self.block(number.saturating_sub(1))?.0.state_root)
    }
}
