//! Stateless verification of one EVM block: its parent root, its signed header and
//! transactions, and its witness, nothing else.

use std::sync::Arc;

use alloy_consensus::{Header, Transaction as _};
use alloy_primitives::{B256, Bytes};
use chain_rpc::{
    chain::{ExecutedTx, PooledTx, check_header, decode_envelope, recover_sender},
    evm::{BlockEnvParams, ChainRules, execution_error_message, new_evm, tx_env},
};
use feed::TxRecord;
use memstate::{
    Overlay, StateError,
    witness::{Checked, Witness, WitnessError},
};
use revm::{ExecuteCommitEvm, ExecuteEvm};

/// One block to verify.
#[derive(Clone, Debug)]
pub struct BlockInput {
    /// The state root the block starts from (its parent's header's).
    pub parent_root: B256,
    /// Its header, as the sequencer signed it.
    pub header: Header,
    /// Its transactions in order, with the receipts the sequencer published.
    pub txs: Vec<TxRecord>,
    /// Its witness ([`memstate::witness::Witness::encode`]).
    pub witness: Bytes,
}

/// Why a block is invalid. Each kind of fault has its own reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The witness does not decode, does not match the parent root, or lacks what the block
    /// read.
    #[error("witness: {0}")]
    Witness(String),
    /// A transaction that does not decode, or whose signature does not give the sender the
    /// sequencer published.
    #[error("transaction {index}: {reason}")]
    Transaction {
        /// Its position in the block.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A transaction the block could not include (refused by the EVM, or over the gas left).
    #[error("transaction {index} cannot be included: {reason}")]
    NotIncludable {
        /// Its position.
        index: usize,
        /// The EVM's reason.
        reason: String,
    },
    /// A published receipt that is not what executing the transaction gives.
    #[error("receipt of transaction {index}: {field} differs from execution")]
    Receipt {
        /// Its position.
        index: usize,
        /// Which field.
        field: &'static str,
    },
    /// A header field that does not commit to the executed transactions.
    #[error("header {0} differs from execution")]
    Header(&'static str),
    /// The post-state root is not the header's.
    #[error("post-state root {ours} differs from the header's {theirs}")]
    StateRoot {
        /// Computed from the witness and the block's writes.
        ours: B256,
        /// In the header.
        theirs: B256,
    },
}

impl From<WitnessError> for Reason {
    fn from(err: WitnessError) -> Self {
        Reason::Witness(err.to_string())
    }
}

/// The outcome of verifying one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The block's number.
    pub block: u64,
    /// Its hash.
    pub block_hash: B256,
    /// The root it starts from.
    pub parent_root: B256,
    /// The root its header claims.
    pub post_root: B256,
    /// Valid, or why not.
    pub outcome: Result<(), Reason>,
}

impl Verdict {
    /// True when the block is valid.
    pub fn is_valid(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// A way to verify blocks. The built-in one ([`Reexecution`]) re-executes each block from its
/// witness; a zero-knowledge backend would prove the same statement instead.
pub trait ProofBackend: Send + Sync {
    /// A short name for logs and reports.
    fn name(&self) -> &'static str;
    /// Verifies one block.
    fn verify(&self, input: &BlockInput) -> Verdict;
}

/// Stateless re-execution: the block's transactions run with revm over the witness alone, and
/// the post-state root is recomputed from the witness's proof and the block's writes. It
/// checks, it does not produce a succinct proof.
#[derive(Clone, Copy, Debug)]
pub struct Reexecution {
    /// Hard fork and chain id.
    pub rules: ChainRules,
}

impl ProofBackend for Reexecution {
    fn name(&self) -> &'static str {
        "stateless re-execution"
    }

    fn verify(&self, input: &BlockInput) -> Verdict {
        verify_block(self.rules, input)
    }
}

/// Where a block's PREVRANDAO comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prevrandao {
    /// This chain's rule: keccak256 of the block number, which the header's mix hash must be.
    Chain,
    /// The header's mix hash, as on Ethereum (for Ethereum's block test vectors).
    Header,
}

/// Verifies `input` by stateless re-execution under `rules` (this chain's).
pub fn verify_block(rules: ChainRules, input: &BlockInput) -> Verdict {
    verify_block_with(rules, input, Prevrandao::Chain)
}

/// As [`verify_block`], with PREVRANDAO from `prevrandao`.
pub fn verify_block_with(rules: ChainRules, input: &BlockInput, prevrandao: Prevrandao) -> Verdict {
    Verdict {
        block: input.header.number,
        block_hash: input.header.hash_slow(),
        parent_root: input.parent_root,
        post_root: input.header.state_root,
        outcome: run(rules, input, prevrandao),
    }
}

fn run(rules: ChainRules, input: &BlockInput, prevrandao: Prevrandao) -> Result<(), Reason> {
    let header = &input.header;
    let witness = Witness::decode(&input.witness)?;
    let verified = witness.verify(input.parent_root)?;
    let state = verified.state();
    let env = BlockEnvParams {
        number: header.number,
        timestamp: header.timestamp,
        beneficiary: header.beneficiary,
        base_fee: header.base_fee_per_gas.unwrap_or_default(),
        gas_limit: header.gas_limit,
    };
    let mut block_env = env.block_env(rules.spec);
    match prevrandao {
        Prevrandao::Chain if header.mix_hash != env.prevrandao() => {
            return Err(Reason::Header("prevrandao"));
        }
        Prevrandao::Chain => {}
        Prevrandao::Header => block_env.prevrandao = Some(header.mix_hash),
    }
    let hashes = |n: u64| verified.block_hash(n).ok_or(StateError::BlockHashUnavailable(n));
    let mut overlay = Overlay::new(&state, hashes);
    let mut executed: Vec<Arc<ExecutedTx>> = Vec::with_capacity(input.txs.len());
    {
        let mut evm = new_evm(&mut overlay, rules.spec, rules.chain_id, block_env);
        let mut checked = Checked::default();
        let (mut gas, mut logs) = (0u64, 0u64);
        for (index, record) in input.txs.iter().enumerate() {
            let bad = |reason: String| Reason::Transaction { index, reason };
            let envelope = decode_envelope(&record.raw).map_err(bad)?;
            let sender = recover_sender(&envelope).map_err(bad)?;
            if sender != record.sender {
                return Err(bad(format!("signed by {sender}, published as {}", record.sender)));
            }
            if envelope.gas_limit() > env.gas_limit.saturating_sub(gas) {
                return Err(Reason::NotIncludable {
                    index,
                    reason: "gas limit over the block's gas left".into(),
                });
            }
            let result = evm.transact(tx_env(&envelope, sender));
            // A read the witness lacks makes everything after it meaningless: say so first.
            verified.covers_from(evm.ctx.journaled_state.database.reads(), &mut checked)?;
            let result = result.map_err(|e| Reason::NotIncludable {
                index,
                reason: execution_error_message(&e),
            })?;
            evm.commit(result.state);
            let result = result.result;
            let gas_used = result.gas().tx_gas_used();
            let success = result.is_success();
            let contract_address = result.created_address();
            let tx_logs = match result {
                revm::context_interface::result::ExecutionResult::Success { logs, .. } => logs,
                _ => Vec::new(),
            };
            let receipt = |field: &'static str| Reason::Receipt { index, field };
            if success != record.success {
                return Err(receipt("status"));
            }
            if gas_used != record.gas_used {
                return Err(receipt("gas used"));
            }
            if tx_logs != record.logs {
                return Err(receipt("logs"));
            }
            if contract_address != record.created() {
                return Err(receipt("contract address"));
            }
            if record.effective_gas_price != envelope.effective_gas_price(Some(env.base_fee)) {
                return Err(receipt("effective gas price"));
            }
            gas += gas_used;
            let first_log_index = logs;
            logs += tx_logs.len() as u64;
            let hash = alloy_primitives::keccak256(&record.raw);
            executed.push(Arc::new(ExecutedTx {
                block_number: header.number,
                index: index as u64,
                mini_block: 0,
                mini_block_hash: B256::ZERO,
                success,
                gas_used,
                cumulative_gas_used: gas,
                bloom: alloy_primitives::logs_bloom(tx_logs.iter()),
                logs: tx_logs,
                first_log_index,
                contract_address,
                effective_gas_price: record.effective_gas_price,
                tx: Arc::new(PooledTx { envelope, sender, hash, raw: record.raw.clone() }),
            }));
        }
    }
    check_header(header, &executed).map_err(Reason::Header)?;
    let (diff, _) = overlay.into_parts();
    let wiped = state.apply(&diff);
    let ours = verified.post_root(&diff, &wiped)?;
    if ours != header.state_root {
        return Err(Reason::StateRoot { ours, theirs: header.state_root });
    }
    Ok(())
}
