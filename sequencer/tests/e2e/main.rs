//! End-to-end tests against the real `sequencer` binary, driven by alloy's provider (the
//! client library reth and foundry use) and by raw JSON-RPC where exact errors matter.

//! (Lints for a test crate: its items are only used inside it.)

mod client;
mod common;
mod crash;
mod fullnode;
mod host;
mod prover;
mod rejections;
mod spec;
