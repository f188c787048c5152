//! `feed`: what the sequencer publishes and what full nodes and provers consume — signed
//! envelopes of mini-blocks (transactions, receipts, state diff) and EVM blocks (header, state
//! root), one byte form for gossip, request-response and data availability; and the DA
//! backends that store each block's envelopes as a batch (a local archive directory, the
//! EigenDA proxy).
//!
//! It links neither the executor nor the JIT: a follower depends on this crate and on
//! memstate (whose codec the diffs are written in), never on `sequencer`. It does no
//! networking beyond the EigenDA proxy's HTTP client; the libp2p protocol is built on it.

mod da;
pub mod dev;
mod envelope;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verdict;

pub use da::{
    Batch, DaError, DaPointer, DaSink, DaSource, EigenDaProxy, LocalArchive, MAX_BATCH_BYTES,
    PointerLog,
};
pub use envelope::{
    BlockEnvelope, ENVELOPE_VERSION, Envelope, EnvelopeError, MAX_ENVELOPE_BYTES,
    MiniBlockEnvelope, Signer, TxRecord,
};
pub use verdict::{BlockVerdict, MAX_VERDICT_BYTES, VERDICT_VERSION};
