//! `bench`: workloads, the load driver, baselines measured in the same run, and reports — and
//! the conformance runner that checks the execution path against Ethereum's state tests.
//!
//! It owns measuring and checking; it changes nothing in the crates it measures.

pub mod statetest;
