//! `prover`: stateless verification of blocks from their witnesses, asynchronously and out of
//! order. A block is verified from its parent's state root, its signed header and
//! transactions, and its witness ([`memstate::witness`]), with nothing else: each block carries
//! what it needs, so blocks are verified concurrently and in any order.
//!
//! The built-in [`ProofBackend`] is [`Reexecution`]: revm runs the block over the witness, and
//! the post-state root is recomputed from the witness's NOMT proof and the block's writes. It
//! checks the sequencer's work; it does not produce a succinct (zero-knowledge) proof.
//!
//! [`archive`] reads blocks and witnesses from the sequencer's DA archive (`prover verify
//! --archive DIR`); [`network`] pulls them from the sequencer over libp2p and sends each
//! verdict back signed with the prover's key (`prover run`).

pub mod archive;
pub mod network;
mod verify;

pub use verify::{
    BlockInput, Prevrandao, ProofBackend, Reason, Reexecution, Verdict, verify_block,
    verify_block_with,
};
