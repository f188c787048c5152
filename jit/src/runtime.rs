//! The compiled code's view of a frame ([`JitCtx`]) and the runtime helpers it calls.
//!
//! Compiled code never depends on revm's struct layouts: it reads and writes only the
//! `#[repr(C)]` head of [`JitCtx`] and calls helpers through the table in it (so object code has
//! no relocations against this crate). Helpers never unwind: revm's instruction functions report
//! errors as values, and the arithmetic helpers cannot fail.

use revm::bytecode::opcode;
use revm::interpreter::instructions::i256::{i256_div, i256_mod};
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::interpreter_types::Jumps;
use revm::interpreter::{
    Host, InstructionContext, InstructionResult, InstructionTable, Interpreter,
};
use revm::primitives::U256;

/// Byte offsets of the fields the compiled code uses (checked by a test against the struct).
pub mod offsets {
    /// `JitCtx::gas`
    pub const GAS: u32 = 0;
    /// `JitCtx::stack`
    pub const STACK: u32 = 8;
    /// `JitCtx::stack_len`
    pub const STACK_LEN: u32 = 16;
    /// `JitCtx::mem_ptr`
    pub const MEM_PTR: u32 = 24;
    /// `JitCtx::mem_len`
    pub const MEM_LEN: u32 = 32;
    /// `JitCtx::resume_pc`
    pub const RESUME_PC: u32 = 40;
    /// `JitCtx::helpers`
    pub const HELPERS: u32 = 48;
    /// `JitCtx::slot_table`
    pub const SLOT_TABLE: u32 = 56;
    /// `JitCtx::slot_generation`
    pub const SLOT_GENERATION: u32 = 64;
    /// Size of a slot-cache entry.
    pub const SLOT_ENTRY_SIZE: u32 = 72;
    /// Offset of an entry's key.
    pub const SLOT_ENTRY_KEY: u32 = 0;
    /// Offset of an entry's value.
    pub const SLOT_ENTRY_VALUE: u32 = 32;
    /// Offset of an entry's generation.
    pub const SLOT_ENTRY_GENERATION: u32 = 64;
}

/// Index of the generic helper in the helper table: `fn(ctx, opcode: u8, pc: u64) -> u8`.
pub const HELPER_GENERIC: u32 = 0;
/// Index of the arithmetic helper: `fn(opcode: u8, top: *mut U256)`.
pub const HELPER_ARITH: u32 = 1;
/// Index of the memory-growth helper: `fn(ctx, offset: *const U256, len: u64) -> u8`.
pub const HELPER_MEM_GROW: u32 = 2;

/// A frame as compiled code sees it.
#[repr(C)]
pub struct JitCtx {
    /// Remaining gas.
    pub gas: u64,
    /// Base of the interpreter's stack buffer (capacity 1024 words).
    pub stack: *mut U256,
    /// Stack length in words.
    pub stack_len: u64,
    /// Base of this frame's memory.
    pub mem_ptr: *mut u8,
    /// Length of this frame's memory in bytes.
    pub mem_len: u64,
    /// The pc to resume at; 0 for a fresh frame.
    pub resume_pc: u64,
    /// The helper table.
    pub helpers: *const *const (),
    /// The slot cache's entries (see [`SlotCache`]); compiled code looks SLOADs up here.
    pub slot_table: *const SlotEntry,
    /// The generation of this run: entries stamped with another are empty.
    pub slot_generation: u64,
    // Rust-only fields below.
    pub(crate) interp: *mut Interpreter<EthInterpreter>,
    pub(crate) host: *mut (),
    pub(crate) table: *const (),
    pub(crate) slots: *mut SlotCache,
}

/// log2 of the number of entries of [`SlotCache`].
pub const SLOT_CACHE_BITS: u32 = 10;
const SLOT_CACHE_ENTRIES: usize = 1 << SLOT_CACHE_BITS;
/// The multiplier of the slot cache's hash (see [`SlotCache::index`]; the compiled code
/// computes the same).
pub const SLOT_HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// One entry of the slot cache, in the layout compiled code reads.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SlotEntry {
    key: U256,
    value: U256,
    generation: u64,
}

/// The storage slots one run of a compiled frame has read or written, with their current
/// values: a direct-mapped cache in front of revm's journal.
///
/// An entry is valid only while nothing but this frame has run since it was filled: a slot the
/// frame loaded or stored is warm in the journal and holds the value the frame saw or wrote,
/// until a child frame runs (which may write it, or revert the warming). Every CALL or CREATE
/// suspends the compiled frame, and each run starts a new generation, which empties the cache,
/// so an entry never outlives that window. A hit then costs exactly what revm charges a warm
/// SLOAD, its static gas, which the compiled block has already charged, and changes nothing in
/// the journal. One cache serves an EVM's every frame, one run at a time.
pub(crate) struct SlotCache {
    generation: u64,
    entries: Box<[SlotEntry]>,
}

impl Default for SlotCache {
    /// An empty cache; its table is allocated by the first run of compiled code, so an EVM
    /// that only interprets does not pay for it.
    fn default() -> Self {
        Self { generation: 0, entries: Box::default() }
    }
}

impl SlotCache {
    /// Empties the cache for a new run of compiled code.
    pub(crate) fn next_run(&mut self) {
        if self.entries.is_empty() {
            let empty = SlotEntry { generation: 0, key: U256::ZERO, value: U256::ZERO };
            self.entries = vec![empty; SLOT_CACHE_ENTRIES].into_boxed_slice();
        }
        // Generation 0 marks never-filled entries; a u64 counter does not wrap.
        self.generation += 1;
    }

    /// The entries, for compiled code, and the generation of the current run.
    pub(crate) fn table(&self) -> (*const SlotEntry, u64) {
        (self.entries.as_ptr(), self.generation)
    }

    /// The entry a key maps to. Solidity's keys are small integers or keccak hashes; folding
    /// the limbs and taking the top bits of a multiplicative hash spreads both. The compiled
    /// code's SLOAD computes the same index.
    fn index(key: &U256) -> usize {
        let l = key.as_limbs();
        let folded = l[0] ^ l[1].rotate_left(16) ^ l[2].rotate_left(32) ^ l[3].rotate_left(48);
        (folded.wrapping_mul(SLOT_HASH_MUL) >> (64 - SLOT_CACHE_BITS)) as usize
    }

    fn insert(&mut self, key: U256, value: U256) {
        let generation = self.generation;
        self.entries[Self::index(&key)] = SlotEntry { generation, key, value };
    }
}

/// The signature of compiled code.
pub type CompiledFn = unsafe extern "C" fn(*mut JitCtx) -> u8;

/// Every `InstructionResult`, to map compiled code's status bytes back.
const ALL_RESULTS: [InstructionResult; 34] = {
    use InstructionResult::*;
    [
        Stop,
        Return,
        SelfDestruct,
        Suspend,
        Revert,
        CallTooDeep,
        OutOfFunds,
        CreateInitCodeStartingEF00,
        InvalidEOFInitCode,
        InvalidExtDelegateCallTarget,
        OutOfGas,
        MemoryOOG,
        MemoryLimitOOG,
        PrecompileOOG,
        InvalidOperandOOG,
        ReentrancySentryOOG,
        OpcodeNotFound,
        CallNotAllowedInsideStatic,
        StateChangeDuringStaticCall,
        InvalidFEOpcode,
        InvalidJump,
        NotActivated,
        StackUnderflow,
        StackOverflow,
        OutOfOffset,
        CreateCollision,
        OverflowPayment,
        PrecompileError,
        NonceOverflow,
        CreateContractSizeLimit,
        CreateContractStartingWithEF,
        CreateInitCodeSizeLimit,
        FatalExternalError,
        InvalidImmediateEncoding,
    ]
};

/// The `InstructionResult` a status byte stands for (`FatalExternalError` for none).
pub fn result_from_status(status: u8) -> InstructionResult {
    ALL_RESULTS
        .iter()
        .copied()
        .find(|r| *r as u8 == status)
        .unwrap_or(InstructionResult::FatalExternalError)
}

/// Refreshes the memory fields from the interpreter (memory moves when it grows).
///
/// # Safety
/// `ctx.interp` must point to the live interpreter of this frame.
pub(crate) unsafe fn refresh_memory(ctx: &mut JitCtx) {
    let interp = unsafe { &mut *ctx.interp };
    let mut mem = interp.memory.context_memory_mut();
    ctx.mem_len = mem.len() as u64;
    ctx.mem_ptr = mem.as_mut_ptr();
}

/// Runs one instruction with revm's own implementation, on the frame's real interpreter.
///
/// The compiled code has already charged the instruction's static gas, as `Interpreter::step`
/// does before calling it, and written its stack length and gas to `ctx`.
///
/// # Safety
/// `ctx` must be a live context built by the glue for host type `H`.
pub(crate) unsafe extern "C" fn generic<H: Host>(ctx: *mut JitCtx, op: u8, pc: u64) -> u8 {
    let ctx = unsafe { &mut *ctx };
    // SAFETY: the glue points `slots` at the EVM's cache for the whole run.
    let slots = unsafe { &mut *ctx.slots };
    // SLOAD and SSTORE fill the slot cache.
    let top = ctx.stack.wrapping_add(ctx.stack_len as usize).wrapping_sub(1);
    // SAFETY: their blocks checked that the stack holds their operands. (The compiled SLOAD
    // has already looked the slot up: it comes here on a miss.)
    let stored = matches!(op, opcode::SLOAD | opcode::SSTORE).then(|| unsafe { top.read() });
    let stored_value = (op == opcode::SSTORE).then(|| unsafe { top.wrapping_sub(1).read() });
    let interp = unsafe { &mut *ctx.interp };
    // SAFETY: compiled code keeps the length within the buffer's capacity (1024) and every
    // slot below it initialised.
    unsafe { interp.stack.data_mut().set_len(ctx.stack_len as usize) };
    interp.gas.tracker_mut().set_remaining(ctx.gas);
    interp.bytecode.absolute_jump(pc as usize + 1);
    let host = unsafe { &mut *(ctx.host as *mut H) };
    let table = unsafe { &*(ctx.table as *const InstructionTable<EthInterpreter, H>) };
    let result = table[op as usize].execute(InstructionContext { interpreter: &mut *interp, host });
    ctx.stack_len = interp.stack.len() as u64;
    ctx.gas = interp.gas.remaining();
    unsafe { refresh_memory(ctx) };
    match result {
        Ok(()) => {
            if let Some(key) = stored {
                // SLOAD left the value on top of the stack; SSTORE wrote its second operand.
                let value = stored_value.unwrap_or_else(|| unsafe { top.read() });
                slots.insert(key, value);
            }
            0
        }
        Err(e) => e as u8,
    }
}

/// Grows the frame's memory to cover `len` bytes at the offset `offset` points to, and
/// charges the expansion, as revm's memory instructions do before their access (an offset
/// beyond `usize` is `InvalidOperandOOG`; then revm's own `resize_memory`, so the same gas,
/// limit and errors). The compiled code then performs the access itself. It has written its
/// gas to `ctx`.
///
/// # Safety
/// `ctx` must be a live context built by the glue for host type `H`; `offset` a valid word.
pub(crate) unsafe extern "C" fn mem_grow<H: Host>(
    ctx: *mut JitCtx,
    offset: *const U256,
    len: u64,
) -> u8 {
    let ctx = unsafe { &mut *ctx };
    let offset = unsafe { offset.read() };
    let l = offset.as_limbs();
    if (l[0] > usize::MAX as u64) | (l[1] != 0) | (l[2] != 0) | (l[3] != 0) {
        return InstructionResult::InvalidOperandOOG as u8;
    }
    let interp = unsafe { &mut *ctx.interp };
    let host = unsafe { &*(ctx.host as *const H) };
    interp.gas.tracker_mut().set_remaining(ctx.gas);
    let grown = interp.resize_memory(host.gas_params(), l[0] as usize, len as usize);
    ctx.gas = interp.gas.remaining();
    unsafe { refresh_memory(ctx) };
    match grown {
        Ok(()) => 0,
        Err(e) => e as u8,
    }
}

/// Wide arithmetic over the top stack slots, in place: `top` points at the top item; binary
/// operations read `top[0]` (a) and `top[-1]` (b) and write `top[-1]`, ternary ones read
/// `top[-2]` as well and write it.
///
/// # Safety
/// `top` and the slots below it that the operation reads must be valid stack words.
pub(crate) unsafe extern "C" fn arith(op: u8, top: *mut U256) {
    unsafe {
        let a = top.read();
        let b = top.sub(1).read();
        let out = match op {
            opcode::DIV => (top.sub(1), div(a, b)),
            opcode::SDIV => (top.sub(1), sdiv(a, b)),
            opcode::MOD => (top.sub(1), rem(a, b)),
            opcode::SMOD => (top.sub(1), smod(a, b)),
            opcode::ADDMOD => (top.sub(2), a.add_mod(b, top.sub(2).read())),
            opcode::MULMOD => (top.sub(2), a.mul_mod(b, top.sub(2).read())),
            opcode::SIGNEXTEND => (top.sub(1), signextend(a, b)),
            // The compiler lowers only the opcodes above to this helper.
            _ => return,
        };
        out.0.write(out.1);
    }
}

/// `v` as a u128 when it fits.
fn small(v: U256) -> Option<u128> {
    let l = v.as_limbs();
    (l[2] == 0 && l[3] == 0).then(|| u128::from(l[0]) | (u128::from(l[1]) << 64))
}

/// Two's-complement sign and magnitude of `v`.
fn sign_abs(v: U256) -> (bool, U256) {
    if v.bit(255) { (true, v.wrapping_neg()) } else { (false, v) }
}

/// DIV: u128 division when both fit (the common case in compiled Solidity), ruint otherwise.
fn div(a: U256, b: U256) -> U256 {
    match (small(a), small(b)) {
        (_, Some(0)) => U256::ZERO,
        (Some(x), Some(y)) => U256::from(x / y),
        _ => a.checked_div(b).unwrap_or_default(),
    }
}

/// MOD, with the same fast path.
fn rem(a: U256, b: U256) -> U256 {
    match (small(a), small(b)) {
        (_, Some(0)) => U256::ZERO,
        (Some(x), Some(y)) => U256::from(x % y),
        _ => a.checked_rem(b).unwrap_or_default(),
    }
}

/// SDIV: on magnitudes that fit in u128, else revm's `i256_div` (which also covers
/// MIN / -1).
fn sdiv(a: U256, b: U256) -> U256 {
    let ((na, ma), (nb, mb)) = (sign_abs(a), sign_abs(b));
    match (small(ma), small(mb)) {
        (_, Some(0)) => U256::ZERO,
        (Some(x), Some(y)) => {
            let q = U256::from(x / y);
            if na != nb { q.wrapping_neg() } else { q }
        }
        _ => i256_div(a, b),
    }
}

/// SMOD: the result takes the dividend's sign.
fn smod(a: U256, b: U256) -> U256 {
    let ((na, ma), (_, mb)) = (sign_abs(a), sign_abs(b));
    match (small(ma), small(mb)) {
        (_, Some(0)) => U256::ZERO,
        (Some(x), Some(y)) => {
            let r = U256::from(x % y);
            if na { r.wrapping_neg() } else { r }
        }
        _ => i256_mod(a, b),
    }
}

/// SIGNEXTEND as revm computes it: extend the sign of byte `ext` of `x`.
fn signextend(ext: U256, x: U256) -> U256 {
    if ext < U256::from(31) {
        let ext = ext.as_limbs()[0];
        let bit_index = (8 * ext + 7) as usize;
        let bit = x.bit(bit_index);
        let mask = (U256::from(1) << bit_index) - U256::from(1);
        if bit { x | !mask } else { x & mask }
    } else {
        x
    }
}

/// The helper table for host type `H`, in the order of the `HELPER_*` indices.
pub(crate) fn helper_table<H: Host>() -> [*const (); 3] {
    [
        generic::<H> as unsafe extern "C" fn(*mut JitCtx, u8, u64) -> u8 as *const (),
        arith as unsafe extern "C" fn(u8, *mut U256) as *const (),
        mem_grow::<H> as unsafe extern "C" fn(*mut JitCtx, *const U256, u64) -> u8 as *const (),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn offsets_match_the_struct() {
        assert_eq!(offset_of!(JitCtx, gas) as u32, offsets::GAS);
        assert_eq!(offset_of!(JitCtx, stack) as u32, offsets::STACK);
        assert_eq!(offset_of!(JitCtx, stack_len) as u32, offsets::STACK_LEN);
        assert_eq!(offset_of!(JitCtx, mem_ptr) as u32, offsets::MEM_PTR);
        assert_eq!(offset_of!(JitCtx, mem_len) as u32, offsets::MEM_LEN);
        assert_eq!(offset_of!(JitCtx, resume_pc) as u32, offsets::RESUME_PC);
        assert_eq!(offset_of!(JitCtx, helpers) as u32, offsets::HELPERS);
        assert_eq!(offset_of!(JitCtx, slot_table) as u32, offsets::SLOT_TABLE);
        assert_eq!(offset_of!(JitCtx, slot_generation) as u32, offsets::SLOT_GENERATION);
        assert_eq!(size_of::<SlotEntry>() as u32, offsets::SLOT_ENTRY_SIZE);
        assert_eq!(offset_of!(SlotEntry, key) as u32, offsets::SLOT_ENTRY_KEY);
        assert_eq!(offset_of!(SlotEntry, value) as u32, offsets::SLOT_ENTRY_VALUE);
        assert_eq!(offset_of!(SlotEntry, generation) as u32, offsets::SLOT_ENTRY_GENERATION);
    }

    #[test]
    fn every_status_maps_back() {
        for r in ALL_RESULTS {
            assert_eq!(result_from_status(r as u8), r);
        }
        assert_eq!(result_from_status(0xff), InstructionResult::FatalExternalError);
    }

    #[test]
    fn division_fast_paths_match_ruint_and_revm() {
        let samples = [
            U256::ZERO,
            U256::from(1),
            U256::from(7),
            U256::from(u64::MAX),
            U256::from(u128::MAX),
            U256::from(u128::MAX) + U256::from(1),
            U256::MAX,
            U256::MAX - U256::from(6),
            U256::from(1) << 255,
            (U256::from(1) << 255) + U256::from(3),
            U256::from(123_456_789u64).wrapping_neg(),
            U256::from(u128::MAX).wrapping_neg(),
        ];
        for &a in &samples {
            for &b in &samples {
                assert_eq!(div(a, b), a.checked_div(b).unwrap_or_default(), "{a} / {b}");
                assert_eq!(rem(a, b), a.checked_rem(b).unwrap_or_default(), "{a} % {b}");
                assert_eq!(sdiv(a, b), i256_div(a, b), "{a} sdiv {b}");
                assert_eq!(smod(a, b), i256_mod(a, b), "{a} smod {b}");
            }
        }
    }

    #[test]
    fn signextend_matches_the_yellow_paper() {
        assert_eq!(signextend(U256::ZERO, U256::from(0xff)), U256::MAX);
        assert_eq!(signextend(U256::ZERO, U256::from(0x7f)), U256::from(0x7f));
        assert_eq!(signextend(U256::from(1), U256::from(0x8000)), U256::MAX - U256::from(0x7fff));
        assert_eq!(signextend(U256::from(40), U256::from(5)), U256::from(5));
    }
}
