//! `fullnode`: a follower that applies the sequencer's state diffs received over libp2p without
//! re-executing, checks each state root and serves read-only JSON-RPC. It links no executor and
//! no JIT.
//!
//! Not built yet (issue 6): this crate holds only this description until then.
