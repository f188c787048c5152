//! `jit`: EVM bytecode → LLVM IR → native code for hot contracts, with a code cache keyed by
//! code hash and hard fork and the revm interpreter as fallback for anything it does not compile.
//! Results equal the interpreter's bit for bit. It owns no state and no threads of the sequencer.

pub mod analysis;
pub mod cache;
pub mod codegen;
pub mod engine;
pub mod evm;
pub mod runtime;

pub use cache::{Compiled, Fallback, JitConfig, JitRuntime, JitStats, Lookup};
pub use engine::OptLevel;
pub use evm::JitEvm;
