//! `jit`: EVM bytecode → LLVM IR → native code for hot contracts, and the runtime that decides
//! which contracts run compiled. Results equal revm's interpreter bit for bit; anything it does
//! not compile (or that is no faster compiled) runs in the interpreter.
//!
//! - [`analysis`]: instructions, blocks, jump targets, stack bounds, gas segments, compile cost.
//! - [`codegen`]: the LLVM IR of one contract (inkwell, LLVM 19).
//! - [`engine`]: optimisation, object emission, and loading into one ORC LLJIT per process.
//! - [`runtime`]: the frame context compiled code sees and the helpers it calls.
//! - [`cache`]: hot counters, background compile threads, the code cache with its byte budget,
//!   the AOT object cache, and the timed trial against the interpreter.
//! - [`evm`]: [`JitEvm`], revm's mainnet EVM running call frames with compiled code.
//!
//! It owns its compile threads and code; no state of the sequencer.

pub mod analysis;
pub mod cache;
pub mod codegen;
pub mod engine;
pub mod evm;
pub mod runtime;

pub use cache::{Compiled, Fallback, JitConfig, JitRuntime, JitStats, Lookup};
pub use engine::OptLevel;
pub use evm::JitEvm;
