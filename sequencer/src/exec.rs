//! Execution of ordered transactions with revm over a [`memstate::Overlay`].

use std::{sync::Arc, time::Instant};

use alloy_primitives::{Address, Log};
use memstate::{BlockHashes, MemState, Overlay, StateDiff};
use revm::{
    ExecuteCommitEvm, context::BlockEnv, context_interface::result::ExecutionResult,
    database_interface::Database, handler::MainnetContext, primitives::hardfork::SpecId,
};

pub use chain_rpc::evm::{
    BlockEnvParams, ChainRules, execution_error_message, new_evm, new_evm_with, simulate,
};

use crate::tx::PooledTx;

/// A revm instance for the chain's rules over `db` whose call frames run JIT-compiled code
/// from `jit` when it is ready (the interpreter otherwise).
pub fn new_jit_evm<DB: Database>(
    db: DB,
    spec: SpecId,
    chain_id: u64,
    block: BlockEnv,
    jit: &Arc<jit::JitRuntime>,
) -> jit::JitEvm<MainnetContext<DB>> {
    jit::JitEvm::new(new_evm(db, spec, chain_id, block), jit.clone())
}

/// One executed transaction.
#[derive(Debug)]
pub struct TxOutcome {
    /// The transaction.
    pub tx: Arc<PooledTx>,
    /// EIP-658 status: true unless it reverted or halted.
    pub success: bool,
    /// Gas charged.
    pub gas_used: u64,
    /// Logs emitted (empty when it failed).
    pub logs: Vec<Log>,
    /// Address of the contract it created.
    pub contract_address: Option<Address>,
}

impl TxOutcome {
    /// The outcome of `tx` from revm's result.
    pub fn new(tx: Arc<PooledTx>, result: ExecutionResult) -> Self {
        let gas_used = result.gas().tx_gas_used();
        let contract_address = result.created_address();
        let success = result.is_success();
        let logs = match result {
            ExecutionResult::Success { logs, .. } => logs,
            _ => Vec::new(),
        };
        Self { tx, success, gas_used, logs, contract_address }
    }
}

/// The result of executing a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Executed transactions in order.
    pub executed: Vec<TxOutcome>,
    /// Transactions refused at execution (stale nonce, balance spent meanwhile, …).
    pub dropped: Vec<(Arc<PooledTx>, String)>,
    /// Transactions not attempted because the deadline passed; they stay in the pool.
    pub deferred: Vec<Arc<PooledTx>>,
    /// State changes of the executed transactions.
    pub diff: StateDiff,
    /// Gas used by the executed transactions.
    pub gas_used: u64,
    /// The keys the executions read (with repeats), for the block's witness.
    pub reads: memstate::ReadSet,
}

/// Executes `txs` in order over `state`, stopping once `deadline` has passed (at least one
/// transaction always runs). Nothing is applied to `state`: the caller applies the diff.
pub fn execute_batch<H: BlockHashes>(
    state: &MemState,
    hashes: H,
    rules: ChainRules,
    env: &BlockEnvParams,
    txs: Vec<Arc<PooledTx>>,
    gas_left: u64,
    deadline: Option<Instant>,
) -> BatchOutcome {
    let jit = jit::JitRuntime::disabled();
    execute_batch_with(state, hashes, rules, env, txs, gas_left, deadline, &jit)
}

/// As [`execute_batch`], running compiled code from `jit` where it is ready.
#[allow(clippy::too_many_arguments)]
pub fn execute_batch_with<H: BlockHashes>(
    state: &MemState,
    hashes: H,
    rules: ChainRules,
    env: &BlockEnvParams,
    txs: Vec<Arc<PooledTx>>,
    mut gas_left: u64,
    deadline: Option<Instant>,
    jit: &Arc<jit::JitRuntime>,
) -> BatchOutcome {
    let mut overlay = Overlay::new(state, hashes);
    let mut out = BatchOutcome::default();
    let ran =
        execute_sequential(&mut overlay, rules, env, &txs, &mut gas_left, deadline, &mut out, jit);
    out.deferred.extend(txs[ran..].iter().cloned());
    (out.diff, out.reads) = overlay.into_parts();
    out
}

/// The sequential path over an overlay: runs `txs` in order, committing each, until the
/// deadline passes (after at least one). Returns how many it went through.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute_sequential<H: BlockHashes>(
    overlay: &mut Overlay<'_, H>,
    rules: ChainRules,
    env: &BlockEnvParams,
    txs: &[Arc<PooledTx>],
    gas_left: &mut u64,
    deadline: Option<Instant>,
    out: &mut BatchOutcome,
    jit: &Arc<jit::JitRuntime>,
) -> usize {
    let mut evm = new_jit_evm(overlay, rules.spec, rules.chain_id, env.block_env(rules.spec), jit);
    for (i, tx) in txs.iter().enumerate() {
        if tx.gas_limit() > *gas_left {
            out.deferred.push(tx.clone());
        } else {
            match evm.transact_commit(tx.tx_env()) {
                Ok(result) => {
                    let outcome = TxOutcome::new(tx.clone(), result);
                    *gas_left = gas_left.saturating_sub(outcome.gas_used);
                    out.gas_used += outcome.gas_used;
                    out.executed.push(outcome);
                }
                Err(err) => out.dropped.push((tx.clone(), execution_error_message(&err))),
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return i + 1;
        }
    }
    txs.len()
}
