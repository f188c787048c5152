//! LLVM IR for one contract: `extern "C" fn(*mut JitCtx) -> u8`.
//!
//! The EVM stack lives in the interpreter's own buffer. Inside a block every stack slot is
//! addressed as `stack[len_at_entry + k]` with `k` known at compile time, so LLVM forwards
//! stores to loads and keeps values in registers within the block; stack length and gas are
//! local variables that `mem2reg` turns into SSA values across blocks. Both are written to the
//! context before every helper call and read back after it.

use crate::analysis::{Analysis, Lowering, stack_io};
use crate::runtime::{
    HELPER_ARITH, HELPER_GENERIC, HELPER_MEM_GROW, SLOT_CACHE_BITS, SLOT_HASH_MUL, offsets,
};
use inkwell::basic_block::BasicBlock;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::{FunctionType, IntType, PointerType};
use inkwell::values::{BasicValue, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use revm::bytecode::opcode;
use revm::interpreter::InstructionResult;
use revm::primitives::U256;
use std::num::NonZeroU32;

/// Why a contract was not compiled.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// LLVM's IR builder refused an instruction (a bug in this module).
    #[error("LLVM builder: {0}")]
    Builder(#[from] BuilderError),
    /// The module failed LLVM's verifier (a bug in this module).
    #[error("LLVM verifier: {0}")]
    Verify(String),
}

struct Gen<'a, 'ctx> {
    cx: &'ctx Context,
    b: Builder<'ctx>,
    module: &'a Module<'ctx>,
    func: FunctionValue<'ctx>,
    a: &'a Analysis,
    i256: IntType<'ctx>,
    i64: IntType<'ctx>,
    i8: IntType<'ctx>,
    ptr: PointerType<'ctx>,
    ctx: PointerValue<'ctx>,
    stack: PointerValue<'ctx>,
    /// Remaining gas at the current point of the current block.
    gas: IntValue<'ctx>,
    target_var: PointerValue<'ctx>,
    generic_ty: FunctionType<'ctx>,
    arith_ty: FunctionType<'ctx>,
    grow_ty: FunctionType<'ctx>,
    blocks: Vec<BasicBlock<'ctx>>,
    dispatch: BasicBlock<'ctx>,
    exits: Vec<(u8, BasicBlock<'ctx>)>,
    /// Stack length at the current block's entry (or after the last helper call).
    len_base: IntValue<'ctx>,
    /// Compile-time offset of the stack top from `len_base`.
    off: i64,
}

/// Builds the function `name` for `analysis` into `module`.
pub fn build<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    name: &str,
    analysis: &Analysis,
) -> Result<FunctionValue<'ctx>, CodegenError> {
    let i256 = cx
        .custom_width_int_type(NonZeroU32::new(256).expect("non-zero"))
        .map_err(|e| CodegenError::Verify(e.to_string()))?;
    let i64 = cx.i64_type();
    let i8 = cx.i8_type();
    let ptr = cx.ptr_type(AddressSpace::default());
    let fn_ty = i8.fn_type(&[ptr.into()], false);
    let func = module.add_function(name, fn_ty, None);
    let nounwind = cx.create_enum_attribute(
        inkwell::attributes::Attribute::get_named_enum_kind_id("nounwind"),
        0,
    );
    func.add_attribute(inkwell::attributes::AttributeLoc::Function, nounwind);
    let b = cx.create_builder();
    let entry = cx.append_basic_block(func, "entry");
    b.position_at_end(entry);
    let ctx = func.get_nth_param(0).expect("one parameter").into_pointer_value();
    let target_var = b.build_alloca(i256, "target")?;
    let blocks =
        (0..analysis.blocks.len()).map(|i| cx.append_basic_block(func, &format!("b{i}"))).collect();
    let dispatch = cx.append_basic_block(func, "dispatch");
    let generic_ty = i8.fn_type(&[ptr.into(), i8.into(), i64.into()], false);
    let arith_ty = cx.void_type().fn_type(&[i8.into(), ptr.into()], false);
    let grow_ty = i8.fn_type(&[ptr.into(), ptr.into(), i64.into()], false);
    let mut g = Gen {
        cx,
        b,
        module,
        func,
        a: analysis,
        i256,
        i64,
        i8,
        ptr,
        ctx,
        stack: ptr.const_null(),
        gas: i64.const_zero(),
        target_var,
        generic_ty,
        arith_ty,
        grow_ty,
        blocks,
        dispatch,
        exits: Vec::new(),
        len_base: i64.const_zero(),
        off: 0,
    };
    g.entry()?;
    for i in 0..analysis.blocks.len() {
        g.block(i)?;
    }
    g.dispatch()?;
    if let Err(e) = module.verify() {
        return Err(CodegenError::Verify(format!("{name}: {e}")));
    }
    Ok(func)
}

impl<'ctx> Gen<'_, 'ctx> {
    fn field(&self, offset: u32) -> Result<PointerValue<'ctx>, CodegenError> {
        // SAFETY: the offsets are those of `JitCtx`'s repr(C) head (checked by a test).
        Ok(unsafe {
            self.b.build_in_bounds_gep(
                self.i8,
                self.ctx,
                &[self.i64.const_int(u64::from(offset), false)],
                "f",
            )?
        })
    }

    fn load_field(&self, offset: u32, ty: IntType<'ctx>) -> Result<IntValue<'ctx>, CodegenError> {
        let p = self.field(offset)?;
        Ok(self.b.build_load(ty, p, "")?.into_int_value())
    }

    fn load_field_ptr(&self, offset: u32) -> Result<PointerValue<'ctx>, CodegenError> {
        let p = self.field(offset)?;
        Ok(self.b.build_load(self.ptr, p, "")?.into_pointer_value())
    }

    fn store_field(&self, offset: u32, v: IntValue<'ctx>) -> Result<(), CodegenError> {
        let p = self.field(offset)?;
        self.b.build_store(p, v)?;
        Ok(())
    }

    /// Loads helper `i` from the context's table. Pointers are loaded where they are used,
    /// not once at entry: a value live across thousands of blocks makes LLVM's register
    /// allocation of a large contract take seconds.
    fn helper_fn(&self, i: u32) -> Result<PointerValue<'ctx>, CodegenError> {
        let helpers = self.load_field_ptr(offsets::HELPERS)?;
        // SAFETY: the helper table has an entry for every HELPER_* index.
        let p = unsafe {
            self.b.build_in_bounds_gep(
                self.ptr,
                helpers,
                &[self.i64.const_int(u64::from(i), false)],
                "h",
            )?
        };
        Ok(self.b.build_load(self.ptr, p, "")?.into_pointer_value())
    }

    fn entry(&mut self) -> Result<(), CodegenError> {
        let resume = self.load_field(offsets::RESUME_PC, self.i64)?;
        let cases = self.cases_at(self.i64, |blk| blk.resume);
        let bad = self.exit(InstructionResult::FatalExternalError)?;
        let first = self.blocks.first().copied().unwrap_or(bad);
        let mut all = vec![(self.i64.const_zero(), first)];
        all.extend(cases);
        // A CALL or CREATE as the last instruction resumes at the end of the code, where the
        // interpreter runs the padding STOP.
        if self.a.insts.last().is_some_and(|i| crate::analysis::suspends(i.op)) {
            let stop = self.exit(InstructionResult::Stop)?;
            all.push((self.i64.const_int(self.a.code_len as u64, false), stop));
        }
        self.b.position_at_end(self.func.get_first_basic_block().expect("entry"));
        self.b.build_switch(resume, bad, &all)?;
        Ok(())
    }

    /// A shared block that returns `result`. Only `Stop` needs the gas and stack length in the
    /// context (halts burn all gas); its predecessors store them first.
    fn exit(&mut self, result: InstructionResult) -> Result<BasicBlock<'ctx>, CodegenError> {
        let code = result as u8;
        if let Some((_, bb)) = self.exits.iter().find(|(c, _)| *c == code) {
            return Ok(*bb);
        }
        let here = self.b.get_insert_block();
        let bb = self.cx.append_basic_block(self.func, &format!("exit{code}"));
        self.b.position_at_end(bb);
        self.b.build_return(Some(&self.i8.const_int(u64::from(code), false)))?;
        if let Some(h) = here {
            self.b.position_at_end(h);
        }
        self.exits.push((code, bb));
        Ok(bb)
    }

    fn const256(&self, v: U256) -> IntValue<'ctx> {
        self.i256.const_int_arbitrary_precision(v.as_limbs())
    }

    fn slot(&self, n: i64) -> Result<PointerValue<'ctx>, CodegenError> {
        let idx = self.b.build_int_add(
            self.len_base,
            self.i64.const_int((self.off - 1 - n) as u64, true),
            "",
        )?;
        // SAFETY: the block-entry check keeps every addressed slot within the 1024-word buffer.
        Ok(unsafe { self.b.build_in_bounds_gep(self.i256, self.stack, &[idx], "s")? })
    }

    fn peek(&self, n: i64) -> Result<IntValue<'ctx>, CodegenError> {
        let p = self.slot(n)?;
        let v = self.b.build_load(self.i256, p, "")?;
        v.as_instruction_value().expect("load").set_alignment(8).ok();
        Ok(v.into_int_value())
    }

    fn poke(&self, n: i64, v: IntValue<'ctx>) -> Result<(), CodegenError> {
        let p = self.slot(n)?;
        let st = self.b.build_store(p, v)?;
        st.set_alignment(8).ok();
        Ok(())
    }

    fn pop(&mut self) -> Result<IntValue<'ctx>, CodegenError> {
        let v = self.peek(0)?;
        self.off -= 1;
        Ok(v)
    }

    fn push(&mut self, v: IntValue<'ctx>) -> Result<(), CodegenError> {
        self.off += 1;
        self.poke(0, v)
    }

    fn cur_len(&self) -> Result<IntValue<'ctx>, CodegenError> {
        Ok(self.b.build_int_add(self.len_base, self.i64.const_int(self.off as u64, true), "len")?)
    }

    /// Writes gas and stack length to the context at a block exit. The accesses are volatile
    /// so that LLVM keeps these two values in the context between blocks: turned into SSA
    /// values across thousands of blocks, they make register allocation of a large contract
    /// superlinear (seconds for snailtracer).
    fn save_state(&self) -> Result<(), CodegenError> {
        let len = self.cur_len()?;
        for (off, v) in [(offsets::GAS, self.gas), (offsets::STACK_LEN, len)] {
            let p = self.field(off)?;
            self.b.build_store(p, v)?.set_volatile(true).ok();
        }
        Ok(())
    }

    /// Reads gas and stack length from the context at a block entry.
    fn load_state(&mut self) -> Result<(), CodegenError> {
        let mut vals = [self.i64.const_zero(); 2];
        for (i, off) in [offsets::GAS, offsets::STACK_LEN].into_iter().enumerate() {
            let p = self.field(off)?;
            let v = self.b.build_load(self.i64, p, "")?;
            v.as_instruction_value().expect("load").set_volatile(true).ok();
            vals[i] = v.into_int_value();
        }
        self.gas = vals[0];
        self.len_base = vals[1];
        self.off = 0;
        Ok(())
    }

    fn bool256(&self, v: IntValue<'ctx>) -> Result<IntValue<'ctx>, CodegenError> {
        Ok(self.b.build_int_z_extend(v, self.i256, "")?)
    }

    fn new_bb(&self, name: &str) -> BasicBlock<'ctx> {
        self.cx.append_basic_block(self.func, name)
    }

    fn block(&mut self, i: usize) -> Result<(), CodegenError> {
        let blk = self.a.blocks[i].clone();
        self.b.position_at_end(self.blocks[i]);
        self.stack = self.load_field_ptr(offsets::STACK)?;
        self.load_state()?;
        if blk.needed > 0 {
            let under = self.exit(InstructionResult::StackUnderflow)?;
            let ok = self.new_bb("stack_ok");
            let c = self.b.build_int_compare(
                IntPredicate::ULT,
                self.len_base,
                self.i64.const_int(blk.needed as u64, false),
                "",
            )?;
            self.b.build_conditional_branch(c, under, ok)?;
            self.b.position_at_end(ok);
        }
        if blk.max_growth > 1024 {
            // The block overflows whatever the entry height.
            let over = self.exit(InstructionResult::StackOverflow)?;
            self.b.build_unconditional_branch(over)?;
            return Ok(());
        }
        if blk.max_growth > 0 {
            let over = self.exit(InstructionResult::StackOverflow)?;
            let ok = self.new_bb("stack_ok");
            let c = self.b.build_int_compare(
                IntPredicate::UGT,
                self.len_base,
                self.i64.const_int((1024 - blk.max_growth) as u64, false),
                "",
            )?;
            self.b.build_conditional_branch(c, over, ok)?;
            self.b.position_at_end(ok);
        }
        for seg in &blk.segments {
            self.charge(seg.gas)?;
            for k in seg.start..seg.end {
                self.inst(i, k)?;
            }
        }
        let last = &self.a.insts[blk.end - 1];
        let ends = crate::analysis::terminates(last.op) || last.op == opcode::JUMPI;
        if ends && last.lowering == Lowering::Helper {
            // revm's terminating instructions always return an error status; reaching this
            // point would be a bug, reported as a fatal error rather than run on.
            let bad = self.exit(InstructionResult::FatalExternalError)?;
            self.b.build_unconditional_branch(bad)?;
        }
        if !ends {
            self.save_state()?;
            let next = match self.blocks.get(i + 1) {
                Some(bb) => *bb,
                // Falling off the end of the code executes the padding STOP.
                None => self.exit(InstructionResult::Stop)?,
            };
            self.b.build_unconditional_branch(next)?;
        }
        Ok(())
    }

    fn charge(&mut self, gas: u64) -> Result<(), CodegenError> {
        if gas == 0 {
            return Ok(());
        }
        let oog = self.exit(InstructionResult::OutOfGas)?;
        let ok = self.new_bb("gas_ok");
        let cost = self.i64.const_int(gas, false);
        let c = self.b.build_int_compare(IntPredicate::ULT, self.gas, cost, "")?;
        self.b.build_conditional_branch(c, oog, ok)?;
        self.b.position_at_end(ok);
        self.gas = self.b.build_int_sub(self.gas, cost, "gas")?;
        Ok(())
    }

    /// Calls revm's implementation of instruction `k` through the generic helper. When
    /// `keep_len` is set, the stack length after the call is the compile-time one (used by
    /// slow paths that merge with a native fast path); otherwise it is read back.
    fn helper(&mut self, k: usize, keep_len: bool) -> Result<(), CodegenError> {
        let inst = &self.a.insts[k];
        self.store_field(offsets::STACK_LEN, self.cur_len()?)?;
        self.store_field(offsets::GAS, self.gas)?;
        let (op, pc) = (inst.op, inst.pc);
        let args = [
            self.ctx.into(),
            self.i8.const_int(u64::from(op), false).into(),
            self.i64.const_int(pc as u64, false).into(),
        ];
        self.call_checked(HELPER_GENERIC, self.generic_ty, &args)?;
        self.gas = self.load_field(offsets::GAS, self.i64)?;
        let (inputs, outputs) = stack_io(op);
        if keep_len {
            self.off += outputs as i64 - inputs as i64;
        } else {
            self.len_base = self.load_field(offsets::STACK_LEN, self.i64)?;
            self.off = 0;
        }
        Ok(())
    }

    /// Calls helper `index` with `args`; a non-zero status (an error, or a CALL's suspension)
    /// returns it from the compiled function at once, as revm's run loop stops on it.
    fn call_checked(
        &mut self,
        index: u32,
        ty: FunctionType<'ctx>,
        args: &[inkwell::values::BasicMetadataValueEnum<'ctx>],
    ) -> Result<(), CodegenError> {
        let f = self.helper_fn(index)?;
        let st = self
            .b
            .build_indirect_call(ty, f, args, "st")?
            .try_as_basic_value()
            .basic()
            .expect("returns u8")
            .into_int_value();
        let fail = self.new_bb("helper_exit");
        let ok = self.new_bb("helper_ok");
        let c = self.b.build_int_compare(IntPredicate::NE, st, self.i8.const_zero(), "")?;
        self.b.build_conditional_branch(c, fail, ok)?;
        self.b.position_at_end(fail);
        self.b.build_return(Some(&st))?;
        self.b.position_at_end(ok);
        Ok(())
    }

    fn arith(&mut self, op: u8) -> Result<(), CodegenError> {
        if matches!(op, opcode::DIV | opcode::SDIV | opcode::MOD | opcode::SMOD) {
            return self.division(op);
        }
        self.arith_call(op)
    }

    fn arith_call(&mut self, op: u8) -> Result<(), CodegenError> {
        let top = self.slot(0)?;
        let arith_fn = self.helper_fn(HELPER_ARITH)?;
        self.b.build_indirect_call(
            self.arith_ty,
            arith_fn,
            &[self.i8.const_int(u64::from(op), false).into(), top.into()],
            "",
        )?;
        let (inputs, outputs) = stack_io(op);
        self.off += outputs as i64 - inputs as i64;
        Ok(())
    }

    /// DIV, SDIV, MOD and SMOD: natively when the dividend's magnitude fits in 128 bits and
    /// the divisor's in 64 (most of compiled Solidity's divisions: fixed-point scaling,
    /// ratios), with a 64-bit division when both fit in 64 bits; through the arithmetic helper
    /// otherwise (wide operands, a zero divisor, the minimum signed value).
    fn division(&mut self, op: u8) -> Result<(), CodegenError> {
        let signed = matches!(op, opcode::SDIV | opcode::SMOD);
        let a = self.peek(0)?;
        let d = self.peek(1)?;
        let b = &self.b;
        let zero = self.i256.const_zero();
        // Sign and magnitude (unsigned operands: positive, themselves).
        let sign_mag = |v: IntValue<'ctx>| -> Result<_, CodegenError> {
            if !signed {
                return Ok((self.cx.bool_type().const_zero(), v));
            }
            let neg = b.build_int_compare(IntPredicate::SLT, v, zero, "")?;
            let mag = b.build_select(neg, b.build_int_sub(zero, v, "")?, v, "")?;
            Ok((neg, mag.into_int_value()))
        };
        let ((na, ma), (nd, md)) = (sign_mag(a)?, sign_mag(d)?);
        let c128 = self.i256.const_int(128, false);
        let c64 = self.i256.const_int(64, false);
        let a_fits = b.build_int_compare(
            IntPredicate::EQ,
            b.build_right_shift(ma, c128, false, "")?,
            zero,
            "",
        )?;
        let d_fits = b.build_int_compare(
            IntPredicate::EQ,
            b.build_right_shift(md, c64, false, "")?,
            zero,
            "",
        )?;
        let d_nonzero = b.build_int_compare(IntPredicate::NE, md, zero, "")?;
        let ok = b.build_and(b.build_and(a_fits, d_fits, "")?, d_nonzero, "")?;
        let fast = self.new_bb("div_fast");
        let slow = self.new_bb("div_slow");
        let join = self.new_bb("div_join");
        self.b.build_conditional_branch(ok, fast, slow)?;

        self.b.position_at_end(fast);
        let b = &self.b;
        let i128 = self.cx.i128_type();
        let d64 = b.build_int_truncate(md, self.i64, "")?;
        let a_small = b.build_int_compare(
            IntPredicate::EQ,
            b.build_right_shift(ma, c64, false, "")?,
            zero,
            "",
        )?;
        let narrow = self.new_bb("div64");
        let wide = self.new_bb("div128");
        let done = self.new_bb("div_done");
        b.build_conditional_branch(a_small, narrow, wide)?;
        let rem = matches!(op, opcode::MOD | opcode::SMOD);
        self.b.position_at_end(narrow);
        let a64 = self.b.build_int_truncate(ma, self.i64, "")?;
        let r64 = if rem {
            self.b.build_int_unsigned_rem(a64, d64, "")?
        } else {
            self.b.build_int_unsigned_div(a64, d64, "")?
        };
        let r_narrow = self.b.build_int_z_extend(r64, self.i256, "")?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(wide);
        let a128 = self.b.build_int_truncate(ma, i128, "")?;
        let d128 = self.b.build_int_z_extend(d64, i128, "")?;
        let r128 = if rem {
            self.b.build_int_unsigned_rem(a128, d128, "")?
        } else {
            self.b.build_int_unsigned_div(a128, d128, "")?
        };
        let r_wide = self.b.build_int_z_extend(r128, self.i256, "")?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        let phi = self.b.build_phi(self.i256, "q")?;
        phi.add_incoming(&[(&r_narrow, narrow), (&r_wide, wide)]);
        let mag = phi.as_basic_value().into_int_value();
        let result = if signed {
            // A quotient is negative when the signs differ; a remainder takes the dividend's.
            let neg = if rem { na } else { self.b.build_xor(na, nd, "")? };
            let negated = self.b.build_int_sub(zero, mag, "")?;
            self.b.build_select(neg, negated, mag, "")?.into_int_value()
        } else {
            mag
        };
        self.poke(1, result)?;
        self.b.build_unconditional_branch(join)?;

        self.b.position_at_end(slow);
        let before = self.off;
        self.arith_call(op)?;
        self.off = before;
        self.b.build_unconditional_branch(join)?;

        self.b.position_at_end(join);
        self.off -= 1;
        Ok(())
    }

    /// SLOAD: a hit in the run's slot cache (the frame has loaded or stored this slot since
    /// it last ran a child, so the slot is warm and its value the cached one) takes the value
    /// natively, the static gas already charged; a miss runs revm's SLOAD through the generic
    /// helper, which fills the entry.
    fn sload(&mut self, k: usize) -> Result<(), CodegenError> {
        let key = self.peek(0)?;
        let b = &self.b;
        let limb = |n: u64| -> Result<IntValue<'ctx>, CodegenError> {
            let shifted =
                b.build_right_shift(key, self.i256.const_int(n * 64, false), false, "")?;
            Ok(b.build_int_truncate(shifted, self.i64, "")?)
        };
        let fshl = Intrinsic::find("llvm.fshl")
            .and_then(|i| i.get_declaration(self.module, &[self.i64.into()]))
            .expect("llvm.fshl.i64 exists");
        let rotl = |v: IntValue<'ctx>, n: u64| -> Result<IntValue<'ctx>, CodegenError> {
            let amount = self.i64.const_int(n, false);
            Ok(b.build_call(fshl, &[v.into(), v.into(), amount.into()], "")?
                .try_as_basic_value()
                .basic()
                .expect("returns i64")
                .into_int_value())
        };
        let mut folded = limb(0)?;
        for (n, r) in [(1, 16), (2, 32), (3, 48)] {
            folded = b.build_xor(folded, rotl(limb(n)?, r)?, "")?;
        }
        let hashed = b.build_int_mul(folded, self.i64.const_int(SLOT_HASH_MUL, false), "")?;
        let index = b.build_right_shift(
            hashed,
            self.i64.const_int(u64::from(64 - SLOT_CACHE_BITS), false),
            false,
            "",
        )?;
        let table = self.load_field_ptr(offsets::SLOT_TABLE)?;
        let generation = self.load_field(offsets::SLOT_GENERATION, self.i64)?;
        let b = &self.b;
        let at = b.build_int_mul(
            index,
            self.i64.const_int(u64::from(offsets::SLOT_ENTRY_SIZE), false),
            "",
        )?;
        // SAFETY: the index is below the table's length (its top SLOT_CACHE_BITS bits).
        let entry = unsafe { b.build_in_bounds_gep(self.i8, table, &[at], "slot")? };
        let field = |off: u32| unsafe {
            b.build_in_bounds_gep(self.i8, entry, &[self.i64.const_int(u64::from(off), false)], "")
        };
        let e_gen = b.build_load(self.i64, field(offsets::SLOT_ENTRY_GENERATION)?, "")?;
        let e_key = b.build_load(self.i256, field(offsets::SLOT_ENTRY_KEY)?, "")?;
        e_key.as_instruction_value().expect("load").set_alignment(8).ok();
        let same_gen =
            b.build_int_compare(IntPredicate::EQ, e_gen.into_int_value(), generation, "")?;
        let same_key = b.build_int_compare(IntPredicate::EQ, e_key.into_int_value(), key, "")?;
        let hit = b.build_and(same_gen, same_key, "")?;
        let hit_bb = self.new_bb("sload_hit");
        let miss_bb = self.new_bb("sload_miss");
        let join = self.new_bb("sload_join");
        self.b.build_conditional_branch(hit, hit_bb, miss_bb)?;
        let entry_gas = self.gas;

        self.b.position_at_end(hit_bb);
        let value = self.b.build_load(self.i256, field(offsets::SLOT_ENTRY_VALUE)?, "")?;
        value.as_instruction_value().expect("load").set_alignment(8).ok();
        self.poke(0, value.into_int_value())?;
        self.b.build_unconditional_branch(join)?;

        self.b.position_at_end(miss_bb);
        self.helper(k, true)?;
        let miss_end = self.b.get_insert_block().expect("in a block");
        let miss_gas = self.gas;
        self.b.build_unconditional_branch(join)?;

        self.b.position_at_end(join);
        let phi = self.b.build_phi(self.i64, "gas")?;
        phi.add_incoming(&[(&entry_gas, hit_bb), (&miss_gas, miss_end)]);
        self.gas = phi.as_basic_value().into_int_value();
        Ok(())
    }

    fn bswap(&self, v: IntValue<'ctx>) -> Result<IntValue<'ctx>, CodegenError> {
        let f = Intrinsic::find("llvm.bswap")
            .and_then(|i| i.get_declaration(self.module, &[self.i256.into()]))
            .expect("llvm.bswap.i256 exists");
        Ok(self
            .b
            .build_call(f, &[v.into()], "")?
            .try_as_basic_value()
            .basic()
            .expect("returns i256")
            .into_int_value())
    }

    /// A memory access of `width` bytes at `offset` (the top stack item), done natively by
    /// `access` (given the address): at once when the frame's memory already covers it, else
    /// after the memory-growth helper has grown memory and charged for it as revm does (an
    /// error there halts the frame, as revm's instruction would).
    fn mem_access(
        &mut self,
        offset: IntValue<'ctx>,
        width: u64,
        access: impl Fn(&Self, PointerValue<'ctx>) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let mem_len = self.load_field(offsets::MEM_LEN, self.i64)?;
        let len256 = self.b.build_int_z_extend(mem_len, self.i256, "")?;
        let w = self.i256.const_int(width, false);
        // offset + width <= mem_len, computed without overflow: mem_len >= width && offset <= mem_len - width
        let big = self.b.build_int_compare(IntPredicate::UGE, len256, w, "")?;
        let room = self.b.build_int_sub(len256, w, "")?;
        let fits = self.b.build_int_compare(IntPredicate::ULE, offset, room, "")?;
        let c = self.b.build_and(big, fits, "")?;
        let fast = self.b.get_insert_block().expect("in a block");
        let grow = self.new_bb("mem_grow");
        let at = self.new_bb("mem_access");
        self.b.build_conditional_branch(c, at, grow)?;
        let entry_gas = self.gas;

        self.b.position_at_end(grow);
        let item = self.slot(0)?;
        self.store_field(offsets::GAS, self.gas)?;
        let args = [self.ctx.into(), item.into(), self.i64.const_int(width, false).into()];
        // An error halts the frame, as after any helper: its gas and stack no longer matter.
        self.call_checked(HELPER_MEM_GROW, self.grow_ty, &args)?;
        let grown = self.b.get_insert_block().expect("in a block");
        let grown_gas = self.load_field(offsets::GAS, self.i64)?;
        self.b.build_unconditional_branch(at)?;

        self.b.position_at_end(at);
        let phi = self.b.build_phi(self.i64, "gas")?;
        phi.add_incoming(&[(&entry_gas, fast), (&grown_gas, grown)]);
        self.gas = phi.as_basic_value().into_int_value();
        let base = self.load_field_ptr(offsets::MEM_PTR)?;
        let off64 = self.b.build_int_truncate(offset, self.i64, "")?;
        // SAFETY: memory covers offset + width here (checked, or grown to it).
        let p = unsafe { self.b.build_in_bounds_gep(self.i8, base, &[off64], "m")? };
        access(self, p)
    }

    fn inst(&mut self, bi: usize, k: usize) -> Result<(), CodegenError> {
        let inst = self.a.insts[k].clone();
        let op = inst.op;
        match inst.lowering {
            Lowering::Helper if op == opcode::SLOAD => return self.sload(k),
            // CALL and CREATE return Suspend from the helper; the frame resumes at the next block.
            Lowering::Helper => return self.helper(k, false),
            Lowering::Arith => return self.arith(op),
            Lowering::Native => {}
        }
        match op {
            opcode::STOP => {
                self.save_state()?;
                let stop = self.exit(InstructionResult::Stop)?;
                self.b.build_unconditional_branch(stop)?;
            }
            opcode::ADD | opcode::MUL | opcode::SUB | opcode::AND | opcode::OR | opcode::XOR => {
                let a = self.pop()?;
                let x = self.peek(0)?;
                let b = &self.b;
                let r = match op {
                    opcode::ADD => b.build_int_add(a, x, "")?,
                    opcode::MUL => b.build_int_mul(a, x, "")?,
                    opcode::SUB => b.build_int_sub(a, x, "")?,
                    opcode::AND => b.build_and(a, x, "")?,
                    opcode::OR => b.build_or(a, x, "")?,
                    _ => b.build_xor(a, x, "")?,
                };
                self.poke(0, r)?;
            }
            opcode::LT | opcode::GT | opcode::SLT | opcode::SGT | opcode::EQ => {
                let a = self.pop()?;
                let x = self.peek(0)?;
                let b = &self.b;
                let pred = match op {
                    opcode::LT => IntPredicate::ULT,
                    opcode::GT => IntPredicate::UGT,
                    opcode::SLT => IntPredicate::SLT,
                    opcode::SGT => IntPredicate::SGT,
                    _ => IntPredicate::EQ,
                };
                let c = b.build_int_compare(pred, a, x, "")?;
                let r = self.bool256(c)?;
                self.poke(0, r)?;
            }
            opcode::ISZERO => {
                let a = self.peek(0)?;
                let b = &self.b;
                let c = b.build_int_compare(IntPredicate::EQ, a, self.i256.const_zero(), "")?;
                let r = self.bool256(c)?;
                self.poke(0, r)?;
            }
            opcode::NOT => {
                let a = self.peek(0)?;
                let r = self.b.build_not(a, "")?;
                self.poke(0, r)?;
            }
            opcode::BYTE => {
                let i = self.pop()?;
                let x = self.peek(0)?;
                let b = &self.b;
                let n32 = self.i256.const_int(32, false);
                let inb = b.build_int_compare(IntPredicate::ULT, i, n32, "")?;
                let ic = b.build_select(inb, i, self.i256.const_zero(), "")?.into_int_value();
                let rev = b.build_int_sub(self.i256.const_int(31, false), ic, "")?;
                let sh = b.build_int_mul(rev, self.i256.const_int(8, false), "")?;
                let v = b.build_right_shift(x, sh, false, "")?;
                let v = b.build_and(v, self.i256.const_int(0xff, false), "")?;
                let r = b.build_select(inb, v, self.i256.const_zero(), "")?.into_int_value();
                self.poke(0, r)?;
            }
            opcode::SIGNEXTEND => {
                // ext < 31: keep bits 0..=8*ext+7 and fill above with bit 8*ext+7; else x.
                let ext = self.pop()?;
                let x = self.peek(0)?;
                let b = &self.b;
                let n31 = self.i256.const_int(31, false);
                let inr = b.build_int_compare(IntPredicate::ULT, ext, n31, "")?;
                let e = b.build_select(inr, ext, self.i256.const_zero(), "")?.into_int_value();
                let bit = b.build_int_add(
                    b.build_int_mul(e, self.i256.const_int(8, false), "")?,
                    self.i256.const_int(7, false),
                    "",
                )?;
                // Shift the sign bit to the top, then arithmetic-shift back down.
                let up = b.build_int_sub(self.i256.const_int(255, false), bit, "")?;
                let shifted = b.build_left_shift(x, up, "")?;
                let extended = b.build_right_shift(shifted, up, true, "")?;
                let r = b.build_select(inr, extended, x, "")?.into_int_value();
                self.poke(0, r)?;
            }
            opcode::SHL | opcode::SHR | opcode::SAR => {
                let sh = self.pop()?;
                let x = self.peek(0)?;
                let b = &self.b;
                let n256 = self.i256.const_int(256, false);
                let inr = b.build_int_compare(IntPredicate::ULT, sh, n256, "")?;
                let shc = b.build_select(inr, sh, self.i256.const_zero(), "")?.into_int_value();
                let (v, far) = match op {
                    opcode::SHL => (b.build_left_shift(x, shc, "")?, self.i256.const_zero()),
                    opcode::SHR => {
                        (b.build_right_shift(x, shc, false, "")?, self.i256.const_zero())
                    }
                    _ => {
                        let neg =
                            b.build_int_compare(IntPredicate::SLT, x, self.i256.const_zero(), "")?;
                        let far = b
                            .build_select(
                                neg,
                                self.i256.const_all_ones(),
                                self.i256.const_zero(),
                                "",
                            )?
                            .into_int_value();
                        (b.build_right_shift(x, shc, true, "")?, far)
                    }
                };
                let r = b.build_select(inr, v, far, "")?.into_int_value();
                self.poke(0, r)?;
            }
            opcode::POP => self.off -= 1,
            opcode::MLOAD => {
                let offset = self.peek(0)?;
                self.mem_access(offset, 32, |g, p| {
                    let v = g.b.build_load(g.i256, p, "")?;
                    v.as_instruction_value().expect("load").set_alignment(1).ok();
                    let v = g.bswap(v.into_int_value())?;
                    g.poke(0, v)
                })?;
            }
            opcode::MSTORE | opcode::MSTORE8 => {
                let offset = self.peek(0)?;
                let value = self.peek(1)?;
                let width = if op == opcode::MSTORE { 32 } else { 1 };
                self.mem_access(offset, width, |g, p| {
                    if width == 32 {
                        let v = g.bswap(value)?;
                        g.b.build_store(p, v)?.set_alignment(1).ok();
                    } else {
                        let v = g.b.build_int_truncate(value, g.i8, "")?;
                        g.b.build_store(p, v)?;
                    }
                    Ok(())
                })?;
                self.off -= 2;
            }
            opcode::JUMP => {
                let target = self.pop()?;
                self.save_state()?;
                self.jump_to(bi, k, target)?;
            }
            opcode::JUMPI => {
                let target = self.pop()?;
                let cond = self.pop()?;
                self.save_state()?;
                let taken = self.new_bb("taken");
                let next = match self.blocks.get(bi + 1) {
                    Some(bb) => *bb,
                    None => self.exit(InstructionResult::Stop)?,
                };
                let c =
                    self.b.build_int_compare(IntPredicate::NE, cond, self.i256.const_zero(), "")?;
                self.b.build_conditional_branch(c, taken, next)?;
                self.b.position_at_end(taken);
                self.jump_to(bi, k, target)?;
            }
            opcode::PC => self.push(self.i256.const_int(inst.pc as u64, false))?,
            opcode::MSIZE => {
                let l = self.load_field(offsets::MEM_LEN, self.i64)?;
                let v = self.b.build_int_z_extend(l, self.i256, "")?;
                self.push(v)?;
            }
            opcode::GAS => {
                let v = self.b.build_int_z_extend(self.gas, self.i256, "")?;
                self.push(v)?;
            }
            opcode::JUMPDEST => {}
            opcode::PUSH0..=opcode::PUSH32 => self.push(self.const256(inst.imm))?,
            opcode::DUP1..=opcode::DUP16 => {
                let v = self.peek(i64::from(op - opcode::DUP1))?;
                self.push(v)?;
            }
            opcode::SWAP1..=opcode::SWAP16 => {
                let n = i64::from(op - opcode::SWAP1) + 1;
                let top = self.peek(0)?;
                let other = self.peek(n)?;
                self.poke(0, other)?;
                self.poke(n, top)?;
            }
            _ => unreachable!("opcode {op:#x} is not lowered natively"),
        }
        Ok(())
    }

    /// Jumps to `target`: statically when the previous instruction in the block pushed it.
    fn jump_to(&mut self, bi: usize, k: usize, target: IntValue<'ctx>) -> Result<(), CodegenError> {
        let blk = &self.a.blocks[bi];
        if k > blk.start {
            let prev = &self.a.insts[k - 1];
            if (opcode::PUSH1..=opcode::PUSH32).contains(&prev.op) {
                let bb = match usize::try_from(prev.imm).ok().and_then(|pc| self.static_target(pc))
                {
                    Some(bb) => bb,
                    None => self.exit(InstructionResult::InvalidJump)?,
                };
                self.b.build_unconditional_branch(bb)?;
                return Ok(());
            }
        }
        self.b.build_store(self.target_var, target)?.set_alignment(8).ok();
        self.b.build_unconditional_branch(self.dispatch)?;
        Ok(())
    }

    /// Switch cases (start pc as `ty`, block) for the blocks `which` selects.
    fn cases_at(
        &self,
        ty: IntType<'ctx>,
        which: impl Fn(&crate::analysis::Block) -> bool,
    ) -> Vec<(IntValue<'ctx>, BasicBlock<'ctx>)> {
        self.a
            .blocks
            .iter()
            .zip(&self.blocks)
            .filter(|(blk, _)| which(blk))
            .map(|(blk, bb)| (ty.const_int(self.a.insts[blk.start].pc as u64, false), *bb))
            .collect()
    }

    fn static_target(&self, pc: usize) -> Option<BasicBlock<'ctx>> {
        let i = self.a.block_at(pc)?;
        self.a.blocks[i].jumpdest.then(|| self.blocks[i])
    }

    fn dispatch(&mut self) -> Result<(), CodegenError> {
        let invalid = self.exit(InstructionResult::InvalidJump)?;
        self.b.position_at_end(self.dispatch);
        let t = self.b.build_load(self.i256, self.target_var, "t")?;
        t.as_instruction_value().expect("load").set_alignment(8).ok();
        let cases = self.cases_at(self.i256, |blk| blk.jumpdest);
        self.b.build_switch(t.into_int_value(), invalid, &cases)?;
        Ok(())
    }
}
