//! `fullnode`: a follower of the sequencer. It applies the sequencer's signed state diffs
//! without re-executing anything, commits them to its own NOMT and checks the state root of
//! every EVM block against the signed header; a mismatch stops it. It links no executor and no
//! JIT: its inputs are the `feed` crate's envelopes and memstate's diff codec.
//!
//! Built so far: the follower ([`Follower`]) and catching up from a DA source (the local
//! archive) — the `fullnode` binary follows an archive directory. Not built yet (issue 6):
//! following over libp2p, read-only JSON-RPC, forwarding transactions.

mod follow;

pub use follow::{FollowError, Follower, FollowerConfig};
