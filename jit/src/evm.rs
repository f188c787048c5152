//! [`JitEvm`]: revm's mainnet EVM with call frames run by compiled code when it is ready.
//!
//! It wraps `MainnetEvm` and replaces only `EvmTr::frame_run`: for a call frame whose contract
//! is compiled, the compiled function runs on the frame's own interpreter (stack, memory, gas),
//! and the result goes through revm's `process_next_action` exactly as the interpreter's would.
//! Create frames, and every frame of a contract that is not compiled, run in the interpreter.
//! The engine is chosen when a frame starts and kept for its whole life (`pinned`), so a
//! compile that finishes while the frame waits for a child never switches engines mid-frame.

use crate::cache::{Compiled, JitRuntime};
use crate::runtime::{JitCtx, SlotCache, helper_table, refresh_memory, result_from_status};
use revm::context::{ContextSetters, ContextTr, JournalTr};
use revm::context_interface::FrameStack;
use revm::context_interface::result::{
    EVMError, ExecResultAndState, ExecutionResult, HaltReason, InvalidTransaction,
};
use revm::handler::evm::{ContextDbError, FrameInitResult, FrameTr};
use revm::handler::instructions::EthInstructions;
use revm::handler::{
    EthFrame, EthPrecompiles, EvmTr, FrameInitOrResult, Handler, MainnetEvm, MainnetHandler,
};
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::interpreter_types::{Jumps, LoopControl, RuntimeFlag};
use revm::interpreter::{FrameInput, Host, InstructionTable, Interpreter, InterpreterAction};
use revm::primitives::B256;
use revm::primitives::hardfork::SpecId;
use revm::state::EvmState;
use revm::{Database, DatabaseCommit};
use revm::{ExecuteCommitEvm, ExecuteEvm};
use std::sync::Arc;
use std::time::Instant;

/// revm's mainnet EVM with the JIT.
pub struct JitEvm<CTX: ContextTr + Host> {
    /// The wrapped EVM: context, instructions, precompiles and frame stack.
    pub inner: MainnetEvm<CTX>,
    rt: Arc<JitRuntime>,
    pinned: Vec<Option<Arc<Compiled>>>,
    /// Per frame depth: the contract whose run segments are being timed, if any.
    sampled: Vec<Option<(B256, SpecId)>>,
    /// Storage slots seen by the current run of compiled code.
    slots: SlotCache,
}

impl<CTX: ContextTr + Host> JitEvm<CTX> {
    /// Wraps `inner`, using compiled code from `rt`.
    pub fn new(inner: MainnetEvm<CTX>, rt: Arc<JitRuntime>) -> Self {
        JitEvm { inner, rt, pinned: Vec::new(), sampled: Vec::new(), slots: SlotCache::default() }
    }

    /// The runtime it uses.
    pub fn runtime(&self) -> &Arc<JitRuntime> {
        &self.rt
    }
}

/// Runs compiled code on `interp` until it returns, halts or suspends for a child frame.
fn run_compiled<H: Host>(
    c: &Compiled,
    interp: &mut Interpreter<EthInterpreter>,
    host: &mut H,
    table: &InstructionTable<EthInterpreter, H>,
    slots: &mut SlotCache,
) -> InterpreterAction {
    slots.next_run();
    let (slot_table, slot_generation) = slots.table();
    let helpers = helper_table::<H>();
    assert!(interp.stack.data().capacity() >= 1024, "interpreter stack below 1024 words");
    let mut jc = JitCtx {
        gas: interp.gas.remaining(),
        stack: interp.stack.data_mut().as_mut_ptr(),
        stack_len: interp.stack.len() as u64,
        mem_ptr: std::ptr::null_mut(),
        mem_len: 0,
        resume_pc: interp.bytecode.pc() as u64,
        helpers: helpers.as_ptr(),
        slot_table,
        slot_generation,
        interp: std::ptr::from_mut(interp),
        host: std::ptr::from_mut(host).cast(),
        table: std::ptr::from_ref(table).cast(),
        slots: std::ptr::from_mut(slots),
    };
    // SAFETY: jc points at this frame's live interpreter, host and table for the whole call;
    // the compiled code keeps the stack within its 1024-word buffer.
    let status = unsafe {
        refresh_memory(&mut jc);
        (c.func())(&mut jc)
    };
    // SAFETY: every slot below the reported length has been written.
    unsafe { interp.stack.data_mut().set_len(jc.stack_len as usize) };
    interp.gas.tracker_mut().set_remaining(jc.gas);
    let result = result_from_status(status);
    // As `Interpreter::run_plain` does: an error without an action becomes a halt.
    if interp.bytecode.action().is_none() {
        interp.halt(result);
    }
    interp.take_next_action()
}

impl<CTX> EvmTr for JitEvm<CTX>
where
    CTX: ContextTr + Host,
{
    type Context = CTX;
    type Instructions = EthInstructions<EthInterpreter, CTX>;
    type Precompiles = EthPrecompiles;
    type Frame = EthFrame<EthInterpreter>;

    fn all(
        &self,
    ) -> (&Self::Context, &Self::Instructions, &Self::Precompiles, &FrameStack<Self::Frame>) {
        self.inner.all()
    }

    fn all_mut(
        &mut self,
    ) -> (
        &mut Self::Context,
        &mut Self::Instructions,
        &mut Self::Precompiles,
        &mut FrameStack<Self::Frame>,
    ) {
        self.inner.all_mut()
    }

    fn frame_init(
        &mut self,
        frame_input: <Self::Frame as FrameTr>::FrameInit,
    ) -> Result<FrameInitResult<'_, Self::Frame>, ContextDbError<Self::Context>> {
        self.inner.frame_init(frame_input)
    }

    fn frame_run(&mut self) -> Result<FrameInitOrResult<Self::Frame>, ContextDbError<CTX>> {
        let Some(depth) = self.inner.frame_stack.index() else {
            return self.inner.frame_run();
        };
        if self.pinned.len() <= depth {
            self.pinned.resize(depth + 1, None);
            self.sampled.resize(depth + 1, None);
        }
        let (compiled, sampled) = {
            let frame = self.inner.frame_stack.get();
            let interp = &frame.interpreter;
            if interp.bytecode.pc() == 0 {
                // A fresh frame (a resumed one is past its CALL): choose its engine now.
                let is_call = matches!(frame.input, FrameInput::Call(_));
                let (chosen, sampled) = match interp.bytecode.hash() {
                    Some(hash) if is_call && interp.bytecode.is_legacy() => {
                        let spec = interp.runtime_flag.spec_id();
                        let l = self.rt.lookup(hash, spec, interp.bytecode.original_byte_slice());
                        (l.code, l.sample.then_some((hash, spec)))
                    }
                    _ => (None, None),
                };
                self.pinned[depth] = chosen.clone();
                self.sampled[depth] = sampled;
                (chosen, sampled)
            } else {
                (self.pinned[depth].clone(), self.sampled[depth])
            }
        };
        let started = sampled.map(|_| Instant::now());
        let out = match &compiled {
            None => self.inner.frame_run(),
            Some(c) => {
                let frame = self.inner.frame_stack.get();
                let ctx = &mut self.inner.ctx;
                let table = self.inner.instruction.instruction_table();
                let action = run_compiled(c, &mut frame.interpreter, ctx, table, &mut self.slots);
                frame.process_next_action(ctx, action).inspect(|i| {
                    if i.is_result() {
                        frame.set_finished(true);
                    }
                })
            }
        };
        if let (Some(t), Some((hash, spec))) = (started, sampled) {
            self.rt.record(hash, spec, compiled.as_ref(), t.elapsed().as_nanos() as u64);
        }
        out
    }

    fn frame_return_result(
        &mut self,
        result: <Self::Frame as FrameTr>::FrameResult,
    ) -> Result<Option<<Self::Frame as FrameTr>::FrameResult>, ContextDbError<Self::Context>> {
        // The finished frame is popped below: release its code.
        if let Some(depth) = self.inner.frame_stack.index()
            && self.inner.frame_stack.get().is_finished()
            && let Some(p) = self.pinned.get_mut(depth)
        {
            *p = None;
            self.sampled[depth] = None;
        }
        self.inner.frame_return_result(result)
    }
}

impl<CTX> ExecuteEvm for JitEvm<CTX>
where
    CTX: ContextTr<Journal: JournalTr<State = EvmState>> + ContextSetters + Host,
{
    type ExecutionResult = ExecutionResult<HaltReason>;
    type State = EvmState;
    type Error = EVMError<<CTX::Db as Database>::Error, InvalidTransaction>;
    type Tx = <CTX as ContextTr>::Tx;
    type Block = <CTX as ContextTr>::Block;

    fn set_block(&mut self, block: Self::Block) {
        self.inner.ctx.set_block(block);
    }

    fn transact_one(&mut self, tx: Self::Tx) -> Result<Self::ExecutionResult, Self::Error> {
        self.inner.ctx.set_tx(tx);
        self.pinned.clear();
        MainnetHandler::default().run(self)
    }

    fn finalize(&mut self) -> Self::State {
        self.inner.ctx.journal_mut().finalize()
    }

    fn replay(
        &mut self,
    ) -> Result<ExecResultAndState<Self::ExecutionResult, Self::State>, Self::Error> {
        self.pinned.clear();
        MainnetHandler::default()
            .run(self)
            .inspect_err(|_| {
                let _ = self.finalize();
            })
            .map(|result| {
                let state = self.finalize();
                ExecResultAndState::new(result, state)
            })
    }
}

impl<CTX> ExecuteCommitEvm for JitEvm<CTX>
where
    CTX:
        ContextTr<Journal: JournalTr<State = EvmState>, Db: DatabaseCommit> + ContextSetters + Host,
{
    fn commit(&mut self, state: Self::State) {
        self.inner.ctx.db_mut().commit(state);
    }
}
