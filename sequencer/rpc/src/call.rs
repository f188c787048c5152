//! `eth_call`, `eth_estimateGas` and `eth_createAccessList`: one transaction simulated over the
//! newest state, nothing kept.

use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_rpc_types_eth::{AccessListResult, TransactionRequest};
use jsonrpsee::types::ErrorObjectOwned;
use memstate::StateError;
use revm::{
    context::TxEnv,
    context_interface::{
        either::Either,
        result::{ExecResultAndState, ExecutionResult},
    },
    primitives::hardfork::SpecId,
    state::EvmState,
};

use super::error::{RpcError, revert_error};
use crate::{View, evm::simulate};

/// EIP-7825: a transaction may not carry more gas than this from Osaka on.
const OSAKA_TX_GAS_CAP: u64 = 1 << 24;

/// The open block's gas limit; a node that has not applied a block yet knows none, and calls
/// are then capped by the gas cap alone.
fn block_gas_limit(view: &View) -> u64 {
    match view.chain.open_block().gas_limit {
        0 => view.settings.gas_cap,
        limit => limit,
    }
}

/// The highest gas a simulated transaction may use.
fn gas_ceiling(view: &View) -> u64 {
    let mut cap = view.settings.gas_cap.min(block_gas_limit(view));
    if view.rules.spec.is_enabled_in(SpecId::OSAKA) {
        cap = cap.min(OSAKA_TX_GAS_CAP);
    }
    cap
}

fn tx_env(view: &View, req: &TransactionRequest, gas: u64) -> (TxEnv, bool) {
    let caller = req.from.unwrap_or_default();
    let (tx_type, gas_price, priority) = match (req.gas_price, req.max_fee_per_gas) {
        (Some(price), _) => (if req.access_list.is_some() { 1 } else { 0 }, price, None),
        (None, Some(max_fee)) => (2, max_fee, Some(req.max_priority_fee_per_gas.unwrap_or(0))),
        (None, None) => (0, 0, None),
    };
    let authorization_list: Vec<_> =
        req.authorization_list.iter().flatten().cloned().map(Either::Left).collect();
    let tx_type = if !authorization_list.is_empty() { 4 } else { tx_type };
    let nonce_given = req.nonce.is_some();
    let nonce = req
        .nonce
        .unwrap_or_else(|| view.state.account(&caller).map(|a| a.nonce).unwrap_or_default());
    let env = TxEnv {
        tx_type,
        caller,
        gas_limit: gas,
        gas_price,
        kind: req.to.unwrap_or(TxKind::Create),
        value: req.value.unwrap_or_default(),
        data: req.input.input().cloned().unwrap_or_default(),
        nonce,
        chain_id: Some(view.rules.chain_id),
        access_list: req.access_list.clone().unwrap_or_default(),
        gas_priority_fee: priority,
        authorization_list,
        ..Default::default()
    };
    (env, nonce_given)
}

fn run(
    view: &View,
    req: &TransactionRequest,
    gas: u64,
) -> Result<ExecResultAndState<ExecutionResult>, ErrorObjectOwned> {
    let (env, nonce_given) = tx_env(view, req, gas);
    let open = view.chain.open_block();
    let block = crate::evm::BlockEnvParams {
        number: open.number,
        timestamp: open.timestamp,
        beneficiary: open.beneficiary,
        base_fee: open.base_fee,
        gas_limit: block_gas_limit(view),
    }
    .block_env(view.rules.spec);
    let chain = view.chain.clone();
    let hashes =
        move |n: u64| chain.block(n).map(|b| b.hash).ok_or(StateError::BlockHashUnavailable(n));
    let cap = view.settings.gas_cap;
    view.state
        .consistent(|| {
            simulate(&view.state, hashes.clone(), view.rules, block.clone(), env.clone(), |cfg| {
                // As geth: calls pay no base fee and need no exact nonce unless one is given.
                cfg.disable_base_fee = true;
                cfg.disable_nonce_check = !nonce_given;
                cfg.tx_gas_limit_cap = Some(cap.max(gas));
            })
        })
        .map_err(|reason| RpcError::Execution(reason).into())
}

/// `eth_call`: the return data, or the revert as geth reports it (code 3, data = output).
pub(super) fn call(view: &View, req: &TransactionRequest) -> Result<Bytes, ErrorObjectOwned> {
    let gas = req.gas.unwrap_or(view.settings.gas_cap).min(view.settings.gas_cap);
    match run(view, req, gas)?.result {
        ExecutionResult::Success { output, .. } => Ok(output.into_data()),
        ExecutionResult::Revert { output, .. } => Err(revert_error(&output)),
        ExecutionResult::Halt { reason, .. } => Err(RpcError::Halt(format!("{reason:?}")).into()),
    }
}

/// `eth_estimateGas`: the least gas limit (within 1.5%, as geth) at which the call succeeds.
pub(super) fn estimate_gas(view: &View, req: &TransactionRequest) -> Result<u64, ErrorObjectOwned> {
    let ceiling = gas_ceiling(view);
    let mut hi = req.gas.unwrap_or(ceiling).min(ceiling);
    // With fees given, the sender must afford them: cap by balance like geth.
    let price = req.gas_price.or(req.max_fee_per_gas).unwrap_or(0);
    if price > 0 {
        let balance = view
            .state
            .account(&req.from.unwrap_or_default())
            .map(|a| a.balance)
            .unwrap_or_default();
        let available = balance.saturating_sub(req.value.unwrap_or_default());
        let allowance = available / U256::from(price);
        if allowance < U256::from(hi) {
            hi = allowance.to();
        }
    }
    let first = run(view, req, hi)?;
    let used = match &first.result {
        ExecutionResult::Success { gas, .. } => gas.total_gas_spent().max(gas.floor_gas()),
        ExecutionResult::Revert { output, .. } => return Err(revert_error(output)),
        ExecutionResult::Halt { reason, .. } => {
            return Err(RpcError::Halt(format!("{reason:?}")).into());
        }
    };
    let succeeds = |gas: u64| run(view, req, gas).map(|r| r.result.is_success()).unwrap_or(false);
    let mut lo = used.saturating_sub(1);
    // Most calls succeed with what they used plus the 1/64 kept back by calls: try it first.
    let optimistic = used.saturating_add(2300).saturating_mul(64) / 63;
    if optimistic < hi && succeeds(optimistic) {
        hi = optimistic;
    }
    while lo + 1 < hi {
        if ((hi - lo) as f64) / (hi as f64) < 0.015 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if succeeds(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

fn access_list_of(state: &EvmState, exclude: &[Address], precompiles: &[Address]) -> AccessList {
    let mut items: Vec<AccessListItem> = state
        .iter()
        .filter(|(address, account)| {
            !exclude.contains(address)
                && !precompiles.contains(address)
                && (!account.storage.is_empty() || !account.is_empty() || account.is_touched())
        })
        .map(|(address, account)| {
            let mut keys: Vec<_> =
                account.storage.keys().map(|k| k.to_be_bytes::<32>().into()).collect();
            keys.sort();
            AccessListItem { address: *address, storage_keys: keys }
        })
        .collect();
    items.sort_by_key(|item| item.address);
    AccessList(items)
}

/// `eth_createAccessList`: the accounts and slots the call touches, and the gas it uses with
/// that list.
pub(super) fn create_access_list(
    view: &View,
    req: &TransactionRequest,
) -> Result<AccessListResult, ErrorObjectOwned> {
    let gas = req.gas.unwrap_or(gas_ceiling(view)).min(gas_ceiling(view));
    let precompiles: Vec<Address> = revm::precompile::Precompiles::new(
        revm::precompile::PrecompileSpecId::from_spec_id(view.rules.spec),
    )
    .addresses()
    .copied()
    .collect();
    let from = req.from.unwrap_or_default();
    let mut exclude = vec![from];
    let to = match req.to {
        Some(TxKind::Call(to)) => to,
        _ => from.create(view.state.account(&from).map(|a| a.nonce).unwrap_or_default()),
    };
    exclude.push(to);

    // Adding a list changes what is warm, not what is touched; two rounds settle it.
    let mut req = req.clone();
    let mut list = req.access_list.clone().unwrap_or_default();
    let mut outcome = None;
    for _ in 0..2 {
        req.access_list = Some(list.clone());
        let result = run(view, &req, gas)?;
        list = access_list_of(&result.state, &exclude, &precompiles);
        outcome = Some(result.result);
    }
    let result = outcome.expect("ran at least once");
    let error = match &result {
        ExecutionResult::Success { .. } => None,
        ExecutionResult::Revert { .. } => Some("execution reverted".to_string()),
        ExecutionResult::Halt { reason, .. } => Some(format!("{reason:?}")),
    };
    Ok(AccessListResult {
        access_list: list,
        gas_used: U256::from(result.gas().tx_gas_used()),
        error,
    })
}
