//! `sequencer`: the process operators run. It takes users' transactions (JSON-RPC over HTTP and
//! WebSocket), checks and orders them (pool), executes them with revm over `memstate` in
//! mini-blocks and EVM blocks (builder), makes them durable (WAL) before any receipt is
//! released, commits state roots with NOMT off the execution path, and serves reads,
//! subscriptions and metrics. Execution runs sequentially or on the parallel engine
//! ([`parallel`]), whose results equal the sequential ones.
//!
//! It does not own state storage (`memstate`), code generation (`jit`) or host placement
//! (`numa`); it calls them. Nothing calls it but its binary, `bench` and tests.

pub mod config;
pub mod dev;
pub mod exec;
mod frame;
pub mod host;
pub mod node;
pub mod parallel;
pub mod pool;
pub mod publish;
pub mod root;
pub mod rpc;
pub mod stage;
pub mod store;
pub mod tx;
pub mod verdicts;
pub mod wal;

pub use chain_rpc::chain;
pub use config::Config;
pub use node::{Node, NodeError, SubmitError};
