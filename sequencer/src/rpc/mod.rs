//! The JSON-RPC server: HTTP and WebSocket on one port (jsonrpsee), the `eth_` methods wallets
//! and libraries use, the realtime methods, and subscriptions.

mod batch;
mod call;
mod convert;
pub mod error;
mod subs;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::{FeeHistory, Filter, FilterBlockOption, Log, TransactionRequest};
use jsonrpsee::{
    RpcModule,
    server::{BatchRequestConfig, IdProvider, ServerConfig, ServerHandle},
    types::{ErrorObjectOwned, SubscriptionId},
};
use serde::Deserialize;

use self::{
    convert::{rpc_block, rpc_logs, rpc_pending_transaction, rpc_receipt, rpc_transaction},
    error::{RpcError, submit_error, tx_error},
};
use crate::{chain::SealedBlock, node::Node};

type RpcResult<T> = Result<T, ErrorObjectOwned>;

/// The version string `web3_clientVersion` returns.
pub const CLIENT_VERSION: &str = concat!("sequencer/v", env!("CARGO_PKG_VERSION"), "/rust");

/// Subscription ids as geth writes them: `0x` and 32 hex digits. Each is a counter hashed with
/// two process-random keys, so ids are unique and not guessable from one another.
#[derive(Debug)]
struct HexIds {
    keys: [std::collections::hash_map::RandomState; 2],
    next: std::sync::atomic::AtomicU64,
}

impl HexIds {
    fn new() -> Self {
        Self { keys: [Default::default(), Default::default()], next: Default::default() }
    }
}

impl IdProvider for HexIds {
    fn next_id(&self) -> SubscriptionId<'static> {
        use std::hash::BuildHasher;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let [a, b] = &self.keys;
        SubscriptionId::Str(format!("0x{:016x}{:016x}", a.hash_one(n), b.hash_one(n)).into())
    }
}

/// Starts the server on `addr`; returns the bound address and the handle that stops it.
pub async fn serve(
    node: Arc<Node>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let rpc = &node.config.rpc;
    let config = ServerConfig::builder()
        .max_request_body_size(rpc.max_request_size)
        .max_response_body_size(rpc.max_response_size)
        .max_connections(rpc.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(rpc.max_batch_len))
        .set_id_provider(HexIds::new())
        .build();
    // Browser dapps and wallets call a local node from other origins, as they do anvil.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_methods([hyper::Method::POST, hyper::Method::GET, hyper::Method::OPTIONS])
        .allow_origin(tower_http::cors::Any)
        .allow_headers([hyper::header::CONTENT_TYPE]);
    let rpc_middleware = jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new()
        .layer(batch::PrecoverLayer(node.static_rules));
    let server = jsonrpsee::server::Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(cors))
        .set_rpc_middleware(rpc_middleware)
        .build(addr)
        .await?;
    let bound = server.local_addr()?;
    let module = module(node).map_err(std::io::Error::other)?;
    Ok((bound, server.start(module)))
}

/// Block parameters as clients send them: a tag, a number, or `{blockHash}`.
fn block_id(params: Option<BlockId>) -> BlockId {
    params.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest))
}

/// The sealed block a tag or number names (`pending` and `latest` name the newest sealed one).
fn find_block(node: &Node, id: BlockId) -> Option<Arc<SealedBlock>> {
    match id {
        BlockId::Hash(hash) => node.chain.block_by_hash(&hash.block_hash),
        BlockId::Number(tag) => match tag {
            BlockNumberOrTag::Number(n) => node.chain.block(n),
            BlockNumberOrTag::Earliest => node.chain.block(0),
            _ => node.chain.head(),
        },
    }
}

/// Checks that state reads at `id` can be served: the newest state serves `latest`, `pending`,
/// `safe`, `finalized` and the head's number; older blocks are not kept.
fn check_state_at(node: &Node, id: BlockId) -> RpcResult<()> {
    let number = match id {
        BlockId::Number(BlockNumberOrTag::Number(n)) => n,
        BlockId::Number(BlockNumberOrTag::Earliest) => 0,
        BlockId::Number(_) => return Ok(()),
        BlockId::Hash(hash) => {
            node.chain.block_by_hash(&hash.block_hash).ok_or(RpcError::BlockNotFound)?.header.number
        }
    };
    let head = node.chain.head_number();
    if number > head {
        return Err(RpcError::BlockNotFound.into());
    }
    if number < head {
        return Err(RpcError::HistoricalState(number).into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StorageSlot {
    Word(B256),
    Quantity(U256),
}

impl StorageSlot {
    fn key(&self) -> U256 {
        match self {
            StorageSlot::Word(w) => U256::from_be_bytes(w.0),
            StorageSlot::Quantity(q) => *q,
        }
    }
}

fn realtime_timeout(node: &Node, given_ms: Option<u64>) -> Duration {
    given_ms.map_or(node.config.rpc.realtime_timeout, Duration::from_millis)
}

fn fee_history(
    node: &Node,
    count: u64,
    newest: BlockNumberOrTag,
    percentiles: Option<Vec<f64>>,
) -> RpcResult<FeeHistory> {
    let count = count.clamp(1, 1024);
    let head = node.chain.head_number();
    let newest = match newest {
        BlockNumberOrTag::Number(n) => n.min(head),
        BlockNumberOrTag::Earliest => 0,
        _ => head,
    };
    let oldest = newest.saturating_sub(count - 1);
    if let Some(p) = &percentiles
        && (p.windows(2).any(|w| w[0] > w[1]) || p.iter().any(|v| !(0.0..=100.0).contains(v)))
    {
        return Err(RpcError::InvalidParams(
            "reward percentiles must be ascending and within [0, 100]".into(),
        )
        .into());
    }
    let blocks = node.chain.blocks_in(oldest, newest);
    let mut base_fees: Vec<u128> =
        blocks.iter().map(|b| u128::from(b.header.base_fee_per_gas.unwrap_or(0))).collect();
    let next_base = if newest == head {
        node.base_fee()
    } else {
        node.chain.block(newest + 1).and_then(|b| b.header.base_fee_per_gas).unwrap_or(0)
    };
    base_fees.push(u128::from(next_base));
    let ratios = blocks
        .iter()
        .map(|b| {
            if b.header.gas_limit == 0 {
                0.0
            } else {
                b.header.gas_used as f64 / b.header.gas_limit as f64
            }
        })
        .collect();
    let reward = percentiles.map(|percentiles| {
        blocks
            .iter()
            .map(|block| {
                let base = block.header.base_fee_per_gas.unwrap_or(0);
                let mut tips: Vec<(u128, u64)> =
                    block.txs.iter().map(|t| (t.tx.effective_tip(base), t.gas_used)).collect();
                tips.sort_unstable();
                percentiles
                    .iter()
                    .map(|p| {
                        if tips.is_empty() {
                            return 0;
                        }
                        let threshold = (block.header.gas_used as f64 * p / 100.0) as u64;
                        let mut sum = 0u64;
                        for (tip, gas) in &tips {
                            sum += gas;
                            if sum >= threshold {
                                return *tip;
                            }
                        }
                        tips.last().map(|t| t.0).unwrap_or(0)
                    })
                    .collect()
            })
            .collect()
    });
    Ok(FeeHistory {
        base_fee_per_gas: base_fees,
        gas_used_ratio: ratios,
        base_fee_per_blob_gas: vec![0; blocks.len() + 1],
        blob_gas_used_ratio: vec![0.0; blocks.len()],
        oldest_block: oldest,
        reward,
    })
}

fn get_logs(node: &Node, filter: &Filter) -> RpcResult<Vec<Log>> {
    let matches =
        |log: &Log| filter.matches_address(log.address()) && filter.matches_topics(log.topics());
    let (blocks, unsealed) = match &filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            (vec![node.chain.block_by_hash(hash).ok_or(RpcError::BlockNotFound)?], Vec::new())
        }
        FilterBlockOption::Range { from_block, to_block } => {
            let head = node.chain.head_number();
            // `latest` and `pending` reach the newest mini-block, as state reads do.
            let newest = node.chain.open_block().number;
            let resolve = |tag: Option<BlockNumberOrTag>, default: u64| match tag {
                Some(BlockNumberOrTag::Number(n)) => n,
                Some(BlockNumberOrTag::Earliest) => 0,
                Some(BlockNumberOrTag::Safe | BlockNumberOrTag::Finalized) => head,
                Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending) | None => default,
            };
            let (from, to) = (resolve(*from_block, head), resolve(*to_block, newest));
            if from > to {
                return Err(RpcError::InvalidParams("invalid block range params".into()).into());
            }
            if to - from >= node.config.rpc.max_logs_range {
                return Err(RpcError::LogRange(node.config.rpc.max_logs_range).into());
            }
            // Unsealed first: a block sealed in between then shows up in both and is dropped
            // from the unsealed side, rather than in neither.
            let unsealed = node.chain.unsealed_txs(from, to);
            let sealed = node.chain.blocks_in(from, to);
            let sealed_to = sealed.last().map(|b| b.header.number);
            let unsealed = unsealed
                .into_iter()
                .filter(|t| sealed_to.is_none_or(|n| t.block_number > n))
                .collect();
            (sealed, unsealed)
        }
    };
    let mut logs = Vec::new();
    for block in blocks {
        if !filter.matches_bloom(block.header.logs_bloom) {
            continue;
        }
        for tx in &block.txs {
            logs.extend(rpc_logs(&node.chain, tx).into_iter().filter(matches));
        }
    }
    for tx in &unsealed {
        logs.extend(rpc_logs(&node.chain, tx).into_iter().filter(matches));
    }
    Ok(logs)
}

/// Every method, bound to `node`.
pub fn module(
    node: Arc<Node>,
) -> Result<RpcModule<Arc<Node>>, jsonrpsee::core::RegisterMethodError> {
    let mut m = RpcModule::new(node);

    m.register_method("web3_clientVersion", |_, _, _| CLIENT_VERSION)?;
    m.register_method("net_version", |_, node, _| node.rules.chain_id.to_string())?;
    m.register_method("net_listening", |_, _, _| true)?;
    m.register_method("eth_chainId", |_, node, _| ok(U64::from(node.rules.chain_id)))?;
    m.register_method("eth_syncing", |_, _, _| false)?;
    m.register_method("eth_accounts", |_, _, _| Vec::<Address>::new())?;
    m.register_method("eth_blockNumber", |_, node, _| ok(U64::from(node.chain.head_number())))?;
    m.register_method("eth_gasPrice", |_, node, _| {
        ok(U256::from(node.base_fee()) + U256::from(node.config.pool.suggested_priority_fee))
    })?;
    m.register_method("eth_maxPriorityFeePerGas", |_, node, _| {
        ok(U256::from(node.config.pool.suggested_priority_fee))
    })?;
    m.register_method("eth_feeHistory", |params, node, _| -> RpcResult<FeeHistory> {
        let mut seq = params.sequence();
        let count: U64 = seq.next()?;
        let newest: BlockNumberOrTag = seq.next()?;
        let percentiles: Option<Vec<f64>> = seq.optional_next()?;
        fee_history(node, count.to(), newest, percentiles)
    })?;

    m.register_method("eth_getBalance", |params, node, _| -> RpcResult<U256> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        check_state_at(node, block_id(seq.optional_next()?))?;
        Ok(node.state.account(&address).map(|a| a.balance).unwrap_or_default())
    })?;
    m.register_method("eth_getTransactionCount", |params, node, _| -> RpcResult<U64> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let id = block_id(seq.optional_next()?);
        let nonce = node.state.account(&address).map(|a| a.nonce).unwrap_or_default();
        if id == BlockId::Number(BlockNumberOrTag::Pending) {
            return Ok(U64::from(node.pool.pending_nonce(&address, nonce)));
        }
        check_state_at(node, id)?;
        Ok(U64::from(nonce))
    })?;
    m.register_method("eth_getCode", |params, node, _| -> RpcResult<Bytes> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        check_state_at(node, block_id(seq.optional_next()?))?;
        Ok(node.state.code_at(&address))
    })?;
    m.register_method("eth_getStorageAt", |params, node, _| -> RpcResult<B256> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let slot: StorageSlot = seq.next()?;
        check_state_at(node, block_id(seq.optional_next()?))?;
        Ok(B256::from(node.state.storage(&address, &slot.key())))
    })?;

    m.register_blocking_method("eth_call", |params, node, _| -> RpcResult<Bytes> {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&node, block_id(seq.optional_next()?))?;
        reject_overrides(&mut seq)?;
        call::call(&node, &req)
    })?;
    m.register_blocking_method("eth_estimateGas", |params, node, _| -> RpcResult<U64> {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&node, block_id(seq.optional_next()?))?;
        reject_overrides(&mut seq)?;
        call::estimate_gas(&node, &req).map(U64::from)
    })?;
    m.register_blocking_method("eth_createAccessList", |params, node, _| {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&node, block_id(seq.optional_next()?))?;
        call::create_access_list(&node, &req)
    })?;

    m.register_method("eth_sendRawTransaction", |params, node, ext| -> RpcResult<B256> {
        let raw: Bytes = params.one()?;
        match ext.get::<batch::Predecoded>() {
            // Decoded with the rest of its batch, on all cores.
            Some(batch::Predecoded(decoded)) => {
                node.submit_decoded(decoded.clone()).map_err(tx_error)
            }
            None => node.submit_raw(raw).map_err(tx_error),
        }
    })?;
    for name in ["realtime_sendRawTransaction", "eth_sendRawTransactionSync"] {
        m.register_async_method(name, |params, node, _| async move {
            let mut seq = params.sequence();
            let raw: Bytes = seq.next()?;
            let timeout_ms: Option<U64> = seq.optional_next()?;
            let timeout = realtime_timeout(&node, timeout_ms.map(|t| t.to()));
            let executed = node.submit_raw_and_wait(raw, timeout).await.map_err(submit_error)?;
            Ok::<_, ErrorObjectOwned>(rpc_receipt(&node.chain, &executed))
        })?;
    }

    m.register_method("eth_getTransactionByHash", |params, node, _| -> RpcResult<_> {
        let hash: B256 = params.one()?;
        if let Some(tx) = node.chain.tx(&hash) {
            return Ok(Some(rpc_transaction(&node.chain, &tx)));
        }
        Ok(node.pool.get(&hash).map(|tx| rpc_pending_transaction(&tx)))
    })?;
    m.register_method("eth_getTransactionReceipt", |params, node, _| -> RpcResult<_> {
        let hash: B256 = params.one()?;
        Ok(node.chain.tx(&hash).map(|tx| rpc_receipt(&node.chain, &tx)))
    })?;
    m.register_method("eth_getBlockByNumber", |params, node, _| -> RpcResult<_> {
        let mut seq = params.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        Ok(find_block(node, BlockId::Number(tag))
            .map(|b| rpc_block(&node.chain, &b, full.unwrap_or(false))))
    })?;
    m.register_method("eth_getBlockByHash", |params, node, _| -> RpcResult<_> {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        Ok(node
            .chain
            .block_by_hash(&hash)
            .map(|b| rpc_block(&node.chain, &b, full.unwrap_or(false))))
    })?;
    m.register_method("eth_getBlockTransactionCountByNumber", |params, node, _| -> RpcResult<_> {
        let tag: BlockNumberOrTag = params.one()?;
        Ok(find_block(node, BlockId::Number(tag)).map(|b| U64::from(b.txs.len())))
    })?;
    m.register_method("eth_getBlockReceipts", |params, node, _| -> RpcResult<_> {
        let id: BlockId = params.one()?;
        Ok(find_block(node, id)
            .map(|b| b.txs.iter().map(|t| rpc_receipt(&node.chain, t)).collect::<Vec<_>>()))
    })?;
    m.register_blocking_method("eth_getLogs", |params, node, _| -> RpcResult<Vec<Log>> {
        let filter: Filter = params.one()?;
        get_logs(&node, &filter)
    })?;

    m.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |params, pending, node, _| subs::subscribe(params, pending, Arc::clone(&node)),
    )?;
    Ok(m)
}

fn ok<T>(value: T) -> RpcResult<T> {
    Ok(value)
}

fn reject_overrides(seq: &mut jsonrpsee::types::params::ParamsSequence<'_>) -> RpcResult<()> {
    let overrides: Option<serde_json::Value> = seq.optional_next()?;
    if overrides.is_some_and(|v| !v.is_null()) {
        return Err(RpcError::InvalidParams("state overrides are not supported".into()).into());
    }
    Ok(())
}
