//! `prover`: stateless verification of blocks from their witnesses, asynchronously and out of
//! order, with verdicts reported back to the sequencer.
//!
//! Not built yet (issue 7): this crate holds only this description until then.
