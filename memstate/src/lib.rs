//! `memstate`: the whole EVM state in memory — accounts, storage, code and recent block hashes —
//! served to revm through [`Overlay`] (`Database` + `DatabaseCommit`), with every change recorded
//! as a [`StateDiff`] that the sequencer applies, persists and publishes.
//!
//! It owns the state tables, the diff type, genesis loading (geth-style `alloc` JSON) and the
//! Ethereum MPT root used for conformance checks. It does no networking, starts no threads and
//! knows nothing of blocks beyond a block-hash lookup ([`BlockHashes`]).
//!
//! Memory: the account tables are sharded by address and live in the numa crate's node arenas
//! (huge pages when the host has them, bound to a node); see [`Layout`].
//!
//! Concurrency: one writer (the block builder) applies whole diffs under short write locks on
//! every shard; readers (RPC, executors) take one shard's read lock per access, never across
//! an execution. Readers
//! that need one consistent view across many accesses (an `eth_call`) read the [`MemState::version`]
//! before and after and retry if a diff landed in between (see [`MemState::consistent`]).

mod codec;
mod commitment;
mod diff;
mod genesis;
mod mpt;
mod overlay;
pub mod sorted;
mod state;
pub mod witness;

pub use codec::{
    CodecError, DiffCodec, EncodedSize, FORMAT_VERSION, KeyIndex, MAX_CODE_BYTES,
    MAX_PAYLOAD_BYTES, PriorState,
};
pub use commitment::{account_key, account_value, nomt_ops, slot_key, slot_value};
pub use diff::{AccountData, AccountDiff, StateDiff};
pub use genesis::{GenesisAccount, GenesisAlloc, GenesisError, genesis_diff, parse_alloc};
pub use overlay::{BlockHashes, NoBlockHashes, Overlay, ReadSet, account_info};
pub use sorted::SortedMap;
pub use state::{
    Account, KeyHasher, Layout, MemState, MemoryReport, StateError, StateView, StateWriter,
};

/// Keccak-256 of empty code, the code hash of every account without code.
pub use revm::primitives::KECCAK_EMPTY;
