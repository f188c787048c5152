//! Bytecode analysis: instructions, basic blocks, jump targets, stack bounds and gas segments.
//!
//! The code is decoded the way revm decodes it: a PUSH whose immediate runs past the end of the
//! code reads zeros for the missing bytes (revm pads legacy code with zeros), and a JUMPDEST
//! byte inside PUSH data is not a jump target.
//!
//! A block starts at pc 0, at every JUMPDEST, after every JUMP, JUMPI and terminator, after
//! every CALL-family or CREATE-family instruction (the frame resumes there after the child
//! frame), and after [`MAX_BLOCK_INSTS`] instructions of straight-line code. Within a block the stack bounds are checked once at entry (`needed`, `max_growth`).
//! Static gas is charged per segment: a segment ends after any instruction that observes the
//! remaining gas or can leave the frame (GAS and every instruction run by a runtime helper), so
//! what each of them sees equals what the interpreter would show.

use revm::bytecode::opcode::{self, OPCODE_INFO};
use revm::interpreter::instructions::GasTable;
use revm::primitives::U256;
use revm::primitives::hardfork::SpecId;

/// How the compiler handles one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// Emitted as LLVM IR (arithmetic, stack, control flow, memory fast paths).
    Native,
    /// Pure helper over stack slots (wide division and friends).
    Arith,
    /// revm's own instruction function, called through the generic runtime helper.
    Helper,
}

/// One decoded instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inst {
    /// Byte offset in the code.
    pub pc: usize,
    /// The opcode byte.
    pub op: u8,
    /// The pushed value for PUSH0..PUSH32 (zero-padded on truncation), zero otherwise.
    pub imm: U256,
    /// How this instruction is lowered for the analysed fork.
    pub lowering: Lowering,
}

/// A gas segment: a run of instructions whose static gas is charged at once, before the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the first instruction (into [`Analysis::insts`]).
    pub start: usize,
    /// One past the last instruction.
    pub end: usize,
    /// Sum of the static gas of its instructions.
    pub gas: u64,
}

/// A basic block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Index of the first instruction.
    pub start: usize,
    /// One past the last instruction.
    pub end: usize,
    /// Stack items the block needs at entry.
    pub needed: usize,
    /// Largest growth of the stack over its entry height inside the block.
    pub max_growth: usize,
    /// Net stack change over the whole block.
    pub delta: isize,
    /// Its gas segments, in order.
    pub segments: Vec<Segment>,
    /// Whether the block starts at a valid JUMPDEST.
    pub jumpdest: bool,
    /// Whether a suspended frame resumes at the block's start (it follows a CALL or CREATE).
    pub resume: bool,
}

/// The analysis of one contract for one fork.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Decoded instructions in code order.
    pub insts: Vec<Inst>,
    /// Basic blocks in code order, covering every instruction.
    pub blocks: Vec<Block>,
    /// The code length in bytes.
    pub code_len: usize,
}

/// Longest block: longer straight-line code is cut into blocks of this many instructions.
/// LLVM's optimisation of one basic block grows faster than linearly with its length (a
/// 24 KB straight-line contract took 36 s at 12 000 instructions in one block).
pub const MAX_BLOCK_INSTS: usize = 128;

/// Instructions that suspend the frame for a child frame.
pub fn suspends(op: u8) -> bool {
    matches!(
        op,
        opcode::CALL
            | opcode::CALLCODE
            | opcode::DELEGATECALL
            | opcode::STATICCALL
            | opcode::CREATE
            | opcode::CREATE2
    )
}

/// Instructions after which control never falls through.
pub fn terminates(op: u8) -> bool {
    matches!(
        op,
        opcode::STOP
            | opcode::RETURN
            | opcode::REVERT
            | opcode::INVALID
            | opcode::SELFDESTRUCT
            | opcode::JUMP
    ) || OPCODE_INFO[op as usize].is_none()
}

/// The fork from which revm enables a natively lowered opcode (older ones are Frontier).
fn native_since(op: u8) -> SpecId {
    match op {
        opcode::SHL | opcode::SHR | opcode::SAR => SpecId::PETERSBURG,
        opcode::PUSH0 => SpecId::SHANGHAI,
        _ => SpecId::FRONTIER,
    }
}

/// How `op` is lowered under `spec`.
pub fn lowering(op: u8, spec: SpecId) -> Lowering {
    use opcode::*;
    let native = matches!(
        op,
        STOP | ADD
            | MUL
            | SUB
            | LT
            | GT
            | SLT
            | SGT
            | EQ
            | ISZERO
            | AND
            | OR
            | XOR
            | NOT
            | BYTE
            | SHL
            | SHR
            | SAR
            | POP
            | MLOAD
            | MSTORE
            | MSTORE8
            | JUMP
            | JUMPI
            | PC
            | MSIZE
            | GAS
            | JUMPDEST
            | PUSH0..=PUSH32
            | DUP1..=DUP16
            | SWAP1..=SWAP16
    );
    if native && spec.is_enabled_in(native_since(op)) {
        return Lowering::Native;
    }
    if matches!(op, DIV | SDIV | MOD | SMOD | ADDMOD | MULMOD | SIGNEXTEND) {
        return Lowering::Arith;
    }
    Lowering::Helper
}

/// Whether the instruction ends a gas segment (see the module doc).
fn ends_segment(inst: &Inst) -> bool {
    inst.lowering == Lowering::Helper || inst.op == opcode::GAS
}

/// Stack inputs and outputs of an opcode (unknown opcodes take and give nothing: they halt).
pub fn stack_io(op: u8) -> (usize, usize) {
    match OPCODE_INFO[op as usize] {
        Some(info) => (info.inputs() as usize, info.outputs() as usize),
        None => (0, 0),
    }
}

/// Decodes `code` into instructions for `spec`.
pub fn decode(code: &[u8], spec: SpecId) -> Vec<Inst> {
    let mut insts = Vec::with_capacity(code.len());
    let mut pc = 0;
    while pc < code.len() {
        let op = code[pc];
        let mut imm = U256::ZERO;
        let mut next = pc + 1;
        if (opcode::PUSH1..=opcode::PUSH32).contains(&op) {
            let n = (op - opcode::PUSH0) as usize;
            let mut word = [0u8; 32];
            let avail = code.len().saturating_sub(pc + 1).min(n);
            // Big-endian n-byte value; missing trailing bytes read as zero.
            word[32 - n..32 - n + avail].copy_from_slice(&code[pc + 1..pc + 1 + avail]);
            imm = U256::from_be_bytes(word);
            next = pc + 1 + n;
        }
        let mut lowering = lowering(op, spec);
        // SIGNEXTEND of a pushed byte index folds to two constant shifts; of a computed one
        // LLVM emits i256 variable-shift networks (measured 3.4 MB of code for 12 000 of them,
        // 3x slower than the helper), so that case stays a helper call.
        let after_push =
            insts.last().is_some_and(|p: &Inst| (opcode::PUSH0..=opcode::PUSH32).contains(&p.op));
        if op == opcode::SIGNEXTEND && after_push {
            lowering = Lowering::Native;
        }
        insts.push(Inst { pc, op, imm, lowering });
        pc = next;
    }
    insts
}

/// Analyses `code` for `spec` with the fork's static gas table.
pub fn analyse(code: &[u8], spec: SpecId, gas_table: &GasTable) -> Analysis {
    let insts = decode(code, spec);
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut resume = false;
    while start < insts.len() {
        let mut end = start;
        loop {
            let inst = &insts[end];
            end += 1;
            if end >= insts.len() {
                break;
            }
            let op = inst.op;
            if terminates(op) || op == opcode::JUMPI || suspends(op) {
                break;
            }
            if insts[end].op == opcode::JUMPDEST || end - start >= MAX_BLOCK_INSTS {
                break;
            }
        }
        let jumpdest = insts[start].op == opcode::JUMPDEST;
        blocks.push(block(&insts, start, end, jumpdest, resume, gas_table));
        resume = suspends(insts[end - 1].op);
        start = end;
    }
    Analysis { insts, blocks, code_len: code.len() }
}

fn block(
    insts: &[Inst],
    start: usize,
    end: usize,
    jumpdest: bool,
    resume: bool,
    gas_table: &GasTable,
) -> Block {
    let mut height: isize = 0;
    let mut needed: isize = 0;
    let mut max_growth: isize = 0;
    let mut segments = Vec::new();
    let mut seg_start = start;
    let mut seg_gas = 0u64;
    for (i, inst) in insts.iter().enumerate().take(end).skip(start) {
        let (inputs, outputs) = stack_io(inst.op);
        needed = needed.max(inputs as isize - height);
        height += outputs as isize - inputs as isize;
        max_growth = max_growth.max(height);
        seg_gas += u64::from(gas_table[inst.op as usize]);
        if ends_segment(inst) || i + 1 == end {
            segments.push(Segment { start: seg_start, end: i + 1, gas: seg_gas });
            seg_start = i + 1;
            seg_gas = 0;
        }
    }
    Block {
        start,
        end,
        needed: needed as usize,
        max_growth: max_growth as usize,
        delta: height,
        segments,
        jumpdest,
        resume,
    }
}

/// Most jump targets a contract may have to be compiled.
pub const MAX_JUMP_TARGETS: usize = 8192;

/// Largest [`Analysis::cost`] the runtime compiles. snailtracer (17.7 KB of code, about 7 s
/// to compile on one core here) costs 120 000; 20 KB of back-to-back MLOADs cost 278 000 and
/// would hold a compile thread for 14 s.
pub const MAX_COST: u64 = 150_000;

impl Analysis {
    /// An estimate of compile time in units of one natively lowered instruction (about
    /// 50 µs here): a call to a runtime helper counts 8, a memory access with its fast and
    /// slow paths 64 (measured: they dominate the compile time of contracts heavy in them).
    pub fn cost(&self) -> u64 {
        self.insts
            .iter()
            .map(|i| match (i.lowering, i.op) {
                (Lowering::Native, opcode::MLOAD | opcode::MSTORE | opcode::MSTORE8) => 64,
                (Lowering::Native, _) => 1,
                _ => 8,
            })
            .sum()
    }

    /// Jump targets (valid JUMPDESTs).
    pub fn jump_targets(&self) -> usize {
        self.blocks.iter().filter(|b| b.jumpdest).count()
    }

    /// The block that starts at `pc`, if any.
    pub fn block_at(&self, pc: usize) -> Option<usize> {
        self.blocks.binary_search_by_key(&pc, |b| self.insts[b.start].pc).ok()
    }

    /// Whether `pc` is a valid jump target (a JUMPDEST outside PUSH data).
    pub fn is_jumpdest(&self, pc: usize) -> bool {
        self.block_at(pc).is_some_and(|b| self.blocks[b].jumpdest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::interpreter::instructions::gas_table_spec;

    fn analyse_hex(hex: &str) -> Analysis {
        let code = hex::decode(hex).unwrap();
        analyse(&code, SpecId::CANCUN, &gas_table_spec(SpecId::CANCUN))
    }

    #[test]
    fn truncated_push_reads_zero_low_bytes() {
        // PUSH3 0x01 0x02 and the code ends: the value is 0x010200.
        let a = analyse_hex("620102");
        assert_eq!(a.insts.len(), 1);
        assert_eq!(a.insts[0].imm, U256::from(0x010200));
    }

    #[test]
    fn jumpdest_inside_push_data_is_not_a_target() {
        // PUSH1 0x5b, JUMPDEST, STOP
        let a = analyse_hex("605b5b00");
        assert_eq!(a.insts.len(), 3);
        assert!(!a.is_jumpdest(1));
        assert!(a.is_jumpdest(2));
        assert_eq!(a.blocks.len(), 2);
    }

    #[test]
    fn blocks_split_at_jumps_terminators_and_calls() {
        // 0: PUSH1 4, 2: JUMP, 3: STOP, 4: JUMPDEST, 5..: 7× PUSH1 0, CALL, POP, STOP
        let a = analyse_hex("600456005b6000600060006000600060006000f15000");
        let starts: Vec<usize> = a.blocks.iter().map(|b| a.insts[b.start].pc).collect();
        assert_eq!(starts, vec![0, 3, 4, 20]);
        assert!(a.blocks[2].jumpdest);
        assert!(a.blocks[3].resume, "the block after CALL is a resume point");
        assert_eq!(a.blocks[2].needed, 0);
        assert_eq!(a.blocks[2].max_growth, 7);
        assert_eq!(a.blocks[2].delta, 1);
    }

    #[test]
    fn stack_bounds_per_block() {
        // ADD, ADD, PUSH1 1, DUP3: heights -1, -2, -1, 0, and DUP3 at height -1 needs 4.
        let a = analyse_hex("01016001820000");
        let b = &a.blocks[0];
        assert_eq!(b.needed, 4);
        assert_eq!(b.max_growth, 0);
        assert_eq!(b.delta, 0);
    }

    #[test]
    fn gas_segments_end_at_gas_and_helpers() {
        // PUSH1 0 (3), SLOAD (helper, 100 warm base), PUSH1 1 (3), ADD (3), GAS (2), POP (2), STOP (0)
        let a = analyse_hex("6000546001015a5000");
        let segs: Vec<(usize, usize, u64)> =
            a.blocks[0].segments.iter().map(|s| (s.start, s.end, s.gas)).collect();
        assert_eq!(segs, vec![(0, 2, 103), (2, 5, 8), (5, 7, 2)]);
    }

    #[test]
    fn fork_gating_keeps_new_opcodes_with_revm() {
        assert_eq!(lowering(opcode::SHL, SpecId::BYZANTIUM), Lowering::Helper);
        assert_eq!(lowering(opcode::SHL, SpecId::PETERSBURG), Lowering::Native);
        assert_eq!(lowering(opcode::PUSH0, SpecId::MERGE), Lowering::Helper);
        assert_eq!(lowering(opcode::PUSH0, SpecId::SHANGHAI), Lowering::Native);
        assert_eq!(lowering(opcode::DIV, SpecId::CANCUN), Lowering::Arith);
        assert_eq!(lowering(opcode::SSTORE, SpecId::CANCUN), Lowering::Helper);
    }
}
