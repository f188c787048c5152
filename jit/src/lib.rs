//! `jit`: EVM bytecode → LLVM IR → native code for hot contracts, with a code cache keyed by
//! code hash and hard fork and the revm interpreter as fallback for anything it does not compile.
//! Results equal the interpreter's bit for bit. It owns no state and no threads of the sequencer.
//!
//! Not built yet (issue 5): this crate holds only this description until then.
