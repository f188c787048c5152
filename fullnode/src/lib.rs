//! `fullnode`: a follower of the sequencer. It applies the sequencer's signed state diffs
//! without re-executing anything, commits them to its own NOMT and checks the state root of
//! every EVM block against the signed header; a mismatch stops it. It links no executor and no
//! JIT: its inputs are the `feed` crate's envelopes and memstate's diff codec.
//!
//! It has the follower ([`Follower`]: diffs applied, roots checked, and each block's
//! transactions, receipts and logs indexed against the signed header's roots), catching up from
//! a DA source (the local archive) and following over libp2p ([`follow_network`]: gossip,
//! batches by request, invalid peers struck), and the JSON-RPC server ([`rpc`]): the
//! sequencer's read methods and subscriptions over what it applied, with transactions
//! forwarded to the sequencer.

mod follow;
mod network;
pub mod rpc;

pub use follow::{FollowError, Follower, FollowerConfig, Offer};
pub use network::{catch_up_network, follow_network};
