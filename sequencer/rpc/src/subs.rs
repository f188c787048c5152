//! `eth_subscribe`: `newHeads` (sealed EVM blocks, with `miniBlockCount`), `logs` (as soon as
//! their mini-block is durable), `miniBlocks` (each sealed mini-block with its receipts) and
//! `stateChanges` (each mini-block's state diff, optionally for some addresses only).

use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::Filter;
use jsonrpsee::{
    PendingSubscriptionSink, SubscriptionMessage, SubscriptionSink,
    core::SubscriptionResult,
    types::{ErrorObjectOwned, Params},
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{
    convert::{new_head_json, rpc_logs, rpc_receipt},
    error::INVALID_PARAMS,
};
use crate::{View, chain::MiniBlock};

/// A sealed mini-block as `miniBlocks` sends it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MiniBlockJson {
    #[serde(with = "alloy_serde::quantity")]
    number: u64,
    #[serde(with = "alloy_serde::quantity")]
    block_number: u64,
    #[serde(with = "alloy_serde::quantity")]
    index: u32,
    hash: B256,
    /// Wall time sealed, ms since the epoch.
    #[serde(with = "alloy_serde::quantity")]
    timestamp: u64,
    #[serde(with = "alloy_serde::quantity")]
    gas_used: u64,
    transactions: Vec<B256>,
    receipts: Vec<alloy_rpc_types_eth::TransactionReceipt>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountChangeJson {
    address: Address,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none", with = "alloy_serde::quantity::opt")]
    nonce: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<U256>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_hash: Option<B256>,
    storage_cleared: bool,
    storage: std::collections::BTreeMap<B256, B256>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateChangesJson {
    #[serde(with = "alloy_serde::quantity")]
    mini_block: u64,
    #[serde(with = "alloy_serde::quantity")]
    block_number: u64,
    accounts: Vec<AccountChangeJson>,
}

#[derive(Deserialize, Default)]
struct StateChangesFilter {
    #[serde(default)]
    addresses: Option<Vec<Address>>,
}

async fn pump<T: Clone>(
    sink: SubscriptionSink,
    mut rx: broadcast::Receiver<T>,
    mut render: impl FnMut(T) -> Vec<serde_json::Value>,
) -> SubscriptionResult {
    loop {
        tokio::select! {
            _ = sink.closed() => return Ok(()),
            item = rx.recv() => match item {
                Ok(item) => {
                    for value in render(item) {
                        let raw = serde_json::value::to_raw_value(&value)?;
                        if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                // A slow subscriber misses items rather than slowing the chain down.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}

/// What was subscribed to, with its parameters.
enum Topic {
    NewHeads,
    Logs(Box<Filter>),
    MiniBlocks,
    StateChanges(StateChangesFilter),
}

fn parse_topic(params: &Params<'static>) -> Result<Topic, ErrorObjectOwned> {
    let mut seq = params.sequence();
    let kind: String = seq.next()?;
    Ok(match kind.as_str() {
        "newHeads" => Topic::NewHeads,
        "logs" => Topic::Logs(Box::new(seq.optional_next::<Filter>()?.unwrap_or_default())),
        "miniBlocks" => Topic::MiniBlocks,
        "stateChanges" => Topic::StateChanges(seq.optional_next()?.unwrap_or_default()),
        other => {
            return Err(ErrorObjectOwned::owned(
                INVALID_PARAMS,
                format!(
                    "unsupported subscription {other:?} (newHeads, logs, miniBlocks, stateChanges)"
                ),
                None::<()>,
            ));
        }
    })
}

/// Handles one `eth_subscribe`.
pub(super) async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    view: Arc<View>,
) -> SubscriptionResult {
    let topic = match parse_topic(&params) {
        Ok(topic) => topic,
        Err(err) => {
            pending.reject(err).await;
            return Ok(());
        }
    };
    let chain = view.chain.clone();
    match topic {
        Topic::NewHeads => {
            let rx = chain.block_events.subscribe();
            let sink = pending.accept().await?;
            pump(sink, rx, |block| vec![new_head_json(&block)]).await
        }
        Topic::Logs(filter) => {
            let rx = chain.mini_block_events.subscribe();
            let sink = pending.accept().await?;
            pump(sink, rx, move |mini: Arc<MiniBlock>| {
                mini.txs
                    .iter()
                    .flat_map(|tx| rpc_logs(&chain, tx))
                    .filter(|log| {
                        filter.matches_address(log.address()) && filter.matches_topics(log.topics())
                    })
                    .filter_map(|log| serde_json::to_value(log).ok())
                    .collect()
            })
            .await
        }
        Topic::MiniBlocks => {
            let rx = chain.mini_block_events.subscribe();
            let sink = pending.accept().await?;
            pump(sink, rx, move |mini: Arc<MiniBlock>| {
                let json = MiniBlockJson {
                    number: mini.number,
                    block_number: mini.block_number,
                    index: mini.index,
                    hash: mini.hash,
                    timestamp: mini.sealed_at_ms,
                    gas_used: mini.gas_used,
                    transactions: mini.txs.iter().map(|t| t.tx.hash).collect(),
                    receipts: mini.txs.iter().map(|t| rpc_receipt(&chain, t)).collect(),
                };
                serde_json::to_value(json).into_iter().collect()
            })
            .await
        }
        Topic::StateChanges(filter) => {
            let rx = chain.mini_block_events.subscribe();
            let sink = pending.accept().await?;
            pump(sink, rx, move |mini: Arc<MiniBlock>| state_changes(&mini, &filter)).await
        }
    }
}

fn state_changes(mini: &MiniBlock, filter: &StateChangesFilter) -> Vec<serde_json::Value> {
    let accounts: Vec<_> = mini
        .diff
        .accounts
        .iter()
        .filter(|(a, _)| filter.addresses.as_ref().is_none_or(|set| set.contains(a)))
        .map(|(address, change)| AccountChangeJson {
            address: *address,
            deleted: change.info.is_none(),
            nonce: change.info.map(|i| i.nonce),
            balance: change.info.map(|i| i.balance),
            code_hash: change.info.map(|i| i.code_hash),
            storage_cleared: change.storage_cleared,
            storage: change.storage.iter().map(|(k, v)| (B256::from(*k), B256::from(*v))).collect(),
        })
        .collect();
    if accounts.is_empty() {
        return Vec::new();
    }
    let json =
        StateChangesJson { mini_block: mini.number, block_number: mini.block_number, accounts };
    serde_json::to_value(json).into_iter().collect()
}
