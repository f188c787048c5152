//! `fullnode`: a follower of the sequencer. It applies the sequencer's signed state diffs
//! without re-executing anything, commits them to its own NOMT and checks the state root of
//! every EVM block against the signed header; a mismatch stops it. It links no executor and no
//! JIT: its inputs are the `feed` crate's envelopes and memstate's diff codec.
//!
//! Built so far: the follower ([`Follower`]), catching up from a DA source (the local archive)
//! and following over libp2p ([`follow_network`]: gossip, batches by request, invalid peers
//! struck). Not built yet (issue 6): read-only JSON-RPC, forwarding transactions.

mod follow;
mod network;

pub use follow::{FollowError, Follower, FollowerConfig, Offer};
pub use network::{catch_up_network, follow_network};
