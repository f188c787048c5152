//! Our chain types → the JSON shapes Ethereum clients expect (alloy's RPC types).

use std::sync::Arc;

use alloy_consensus::{Transaction as _, transaction::Recovered};
use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::{
    Block, BlockTransactions, Header as RpcHeader, Log as RpcLog, Transaction, TransactionReceipt,
};

use crate::chain::{Chain, ExecutedTx, PooledTx, SealedBlock, consensus_receipt};

/// Where a transaction sits, as readers see it.
struct Position {
    block_hash: B256,
    block_number: u64,
    timestamp: u64,
}

fn position(chain: &Chain, tx: &ExecutedTx) -> Position {
    match chain.block(tx.block_number) {
        Some(block) => Position {
            block_hash: block.hash,
            block_number: tx.block_number,
            timestamp: block.header.timestamp,
        },
        None => Position {
            block_hash: tx.mini_block_hash,
            block_number: tx.block_number,
            timestamp: chain.open_block().timestamp,
        },
    }
}

/// An executed transaction as `eth_getTransactionByHash` returns it.
pub(super) fn rpc_transaction(chain: &Chain, tx: &ExecutedTx) -> Transaction {
    let at = position(chain, tx);
    Transaction {
        inner: Recovered::new_unchecked(tx.tx.envelope.clone(), tx.tx.sender),
        block_hash: Some(at.block_hash),
        block_number: Some(at.block_number),
        transaction_index: Some(tx.index),
        effective_gas_price: Some(tx.effective_gas_price),
        block_timestamp: Some(at.timestamp),
    }
}

/// A transaction still in the pool.
pub(super) fn rpc_pending_transaction(tx: &PooledTx) -> Transaction {
    Transaction {
        inner: Recovered::new_unchecked(tx.envelope.clone(), tx.sender),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        effective_gas_price: None,
        block_timestamp: None,
    }
}

/// The logs of a transaction with their positions.
pub(super) fn rpc_logs(chain: &Chain, tx: &ExecutedTx) -> Vec<RpcLog> {
    let at = position(chain, tx);
    rpc_logs_at(tx, at.block_hash, at.timestamp)
}

fn rpc_logs_at(tx: &ExecutedTx, block_hash: B256, timestamp: u64) -> Vec<RpcLog> {
    tx.logs
        .iter()
        .enumerate()
        .map(|(i, log)| rpc_log(tx, i, log.clone(), block_hash, timestamp))
        .collect()
}

fn rpc_log(
    tx: &ExecutedTx,
    i: usize,
    log: alloy_primitives::Log,
    block_hash: B256,
    timestamp: u64,
) -> RpcLog {
    RpcLog {
        inner: log,
        block_hash: Some(block_hash),
        block_number: Some(tx.block_number),
        block_timestamp: Some(timestamp),
        transaction_hash: Some(tx.tx.hash),
        transaction_index: Some(tx.index),
        log_index: Some(tx.first_log_index + i as u64),
        removed: false,
    }
}

/// The receipt of an executed transaction.
pub fn rpc_receipt(chain: &Chain, tx: &ExecutedTx) -> TransactionReceipt {
    let at = position(chain, tx);
    let mut i = 0;
    let inner = consensus_receipt(tx).map_logs(|log| {
        i += 1;
        rpc_log(tx, i - 1, log, at.block_hash, at.timestamp)
    });
    TransactionReceipt {
        inner,
        transaction_hash: tx.tx.hash,
        transaction_index: Some(tx.index),
        block_hash: Some(at.block_hash),
        block_number: Some(at.block_number),
        gas_used: tx.gas_used,
        effective_gas_price: tx.effective_gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: tx.tx.sender,
        to: tx.tx.envelope.to(),
        contract_address: tx.contract_address,
    }
}

/// A sealed block, with full transactions or their hashes.
pub fn rpc_block(chain: &Chain, block: &SealedBlock, full: bool) -> Block {
    let transactions = if full {
        BlockTransactions::Full(block.txs.iter().map(|t| rpc_transaction(chain, t)).collect())
    } else {
        BlockTransactions::Hashes(block.txs.iter().map(|t| t.tx.hash).collect())
    };
    Block {
        header: rpc_header(block),
        uncles: Vec::new(),
        transactions,
        withdrawals: block.header.withdrawals_root.map(|_| Default::default()),
    }
}

/// A sealed block's header.
pub(super) fn rpc_header(block: &SealedBlock) -> RpcHeader {
    RpcHeader {
        hash: block.hash,
        inner: block.header.clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(block.size)),
    }
}

/// The header as `newHeads` sends it, with the mini-block count added.
pub(super) fn new_head_json(block: &Arc<SealedBlock>) -> serde_json::Value {
    let mut value = serde_json::to_value(rpc_header(block)).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "miniBlockCount".into(),
            serde_json::Value::String(format!("{:#x}", block.mini_block_count)),
        );
    }
    value
}
