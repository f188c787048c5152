//! The chain's EVM: its rules, the block environment transactions run in, and revm built for
//! them. The sequencer's executor and every node's `eth_call` use the same construction, so a
//! call sees what a transaction would.

use alloy_consensus::{Transaction, TxEnvelope, Typed2718};
use alloy_primitives::{Address, B256, U256, keccak256};
use memstate::{BlockHashes, MemState, Overlay, StateError};
use revm::{
    Context, MainBuilder, MainContext,
    context::{BlockEnv, TxEnv},
    context_interface::{
        block::BlobExcessGasAndPrice,
        either::Either,
        result::{EVMError, ExecutionResult, InvalidTransaction},
        transaction::AccessList,
    },
    database_interface::Database,
    handler::{MainnetContext, MainnetEvm},
    primitives::hardfork::SpecId,
};

/// Chain rules for execution.
#[derive(Clone, Copy, Debug)]
pub struct ChainRules {
    /// Hard fork.
    pub spec: SpecId,
    /// Chain id.
    pub chain_id: u64,
}

/// The block a run of transactions executes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEnvParams {
    /// EVM block number.
    pub number: u64,
    /// Block timestamp, seconds.
    pub timestamp: u64,
    /// Fee recipient.
    pub beneficiary: Address,
    /// EIP-1559 base fee, wei.
    pub base_fee: u64,
    /// Block gas limit.
    pub gas_limit: u64,
}

impl BlockEnvParams {
    /// PREVRANDAO: a value fixed per block number. A single sequencer has no beacon chain, so
    /// this is not randomness and contracts must not treat it as such.
    pub fn prevrandao(&self) -> B256 {
        keccak256(self.number.to_be_bytes())
    }

    /// revm's block environment.
    pub fn block_env(&self, spec: SpecId) -> BlockEnv {
        BlockEnv {
            number: U256::from(self.number),
            beneficiary: self.beneficiary,
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            difficulty: U256::ZERO,
            prevrandao: Some(self.prevrandao()),
            blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new_with_spec(0, spec)),
            ..Default::default()
        }
    }
}

/// A revm instance for the chain's rules over `db`.
pub fn new_evm<DB: Database>(
    db: DB,
    spec: SpecId,
    chain_id: u64,
    block: BlockEnv,
) -> MainnetEvm<MainnetContext<DB>> {
    new_evm_with(db, spec, chain_id, block, |_| {})
}

/// As [`new_evm`], with further configuration (e.g. the relaxed checks of `eth_call`).
pub fn new_evm_with<DB: Database>(
    db: DB,
    spec: SpecId,
    chain_id: u64,
    block: BlockEnv,
    configure: impl FnOnce(&mut revm::context::CfgEnv),
) -> MainnetEvm<MainnetContext<DB>> {
    Context::mainnet()
        .with_db(db)
        .modify_cfg_chained(|cfg| {
            cfg.chain_id = chain_id;
            cfg.set_spec_and_mainnet_gas_params(spec);
            configure(cfg);
        })
        .with_block(block)
        .build_mainnet()
}

/// geth-style wording for revm's refusals.
pub fn execution_error_message(err: &EVMError<StateError, InvalidTransaction>) -> String {
    match err {
        EVMError::Transaction(InvalidTransaction::NonceTooLow { tx, state }) => {
            format!("nonce too low: next nonce {state}, tx nonce {tx}")
        }
        EVMError::Transaction(InvalidTransaction::NonceTooHigh { tx, state }) => {
            format!("nonce too high: next nonce {state}, tx nonce {tx}")
        }
        EVMError::Transaction(InvalidTransaction::LackOfFundForMaxFee { fee, balance }) => {
            format!("insufficient funds for gas * price + value: have {balance} want {fee}")
        }
        EVMError::Transaction(InvalidTransaction::GasPriceLessThanBasefee) => {
            "max fee per gas less than block base fee".into()
        }
        EVMError::Transaction(InvalidTransaction::CallGasCostMoreThanGasLimit {
            initial_gas,
            gas_limit,
        }) => format!("intrinsic gas too low: gas {gas_limit}, minimum needed {initial_gas}"),
        EVMError::Transaction(InvalidTransaction::RejectCallerWithCode) => {
            "sender not an eoa".into()
        }
        other => other.to_string(),
    }
}

/// Runs one transaction without keeping its changes (for `eth_call` and friends).
pub fn simulate<H: BlockHashes>(
    state: &MemState,
    hashes: H,
    rules: ChainRules,
    block: BlockEnv,
    tx: TxEnv,
    configure: impl FnOnce(&mut revm::context::CfgEnv),
) -> Result<revm::context_interface::result::ExecResultAndState<ExecutionResult>, String> {
    use revm::ExecuteEvm;
    let overlay = Overlay::new(state, hashes);
    let mut evm = new_evm_with(overlay, rules.spec, rules.chain_id, block, configure);
    evm.transact(tx).map_err(|e| execution_error_message(&e))
}

/// revm's transaction environment for a signed envelope.
pub fn tx_env(envelope: &TxEnvelope, sender: Address) -> TxEnv {
    let authorization_list = envelope
        .authorization_list()
        .map(|list| list.iter().cloned().map(Either::Left).collect())
        .unwrap_or_default();
    TxEnv {
        tx_type: envelope.ty(),
        caller: sender,
        gas_limit: envelope.gas_limit(),
        gas_price: envelope.max_fee_per_gas(),
        kind: envelope.kind(),
        value: envelope.value(),
        data: envelope.input().clone(),
        nonce: envelope.nonce(),
        chain_id: envelope.chain_id(),
        access_list: envelope.access_list().cloned().unwrap_or_else(AccessList::default),
        gas_priority_fee: envelope.max_priority_fee_per_gas(),
        authorization_list,
        ..Default::default()
    }
}

/// The hard forks this chain can run, by name (`shanghai`, `cancun`, `prague`, `osaka`; any
/// case).
pub fn parse_spec(name: &str) -> Option<SpecId> {
    let wanted = name.trim().to_ascii_lowercase();
    [SpecId::SHANGHAI, SpecId::CANCUN, SpecId::PRAGUE, SpecId::OSAKA]
        .into_iter()
        .find(|spec| <&'static str>::from(*spec).eq_ignore_ascii_case(&wanted))
}
