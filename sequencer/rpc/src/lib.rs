//! The read side of the chain, which the sequencer and every full node serve alike: the chain
//! index (sealed blocks, mini-blocks, receipts, logs and their events, [`chain`]), the chain's
//! EVM configuration ([`evm`]), and the Ethereum JSON-RPC read methods and subscriptions over
//! them ([`read_module`]). What only the sequencer can answer (admitting transactions, its
//! pool) comes in through [`Pending`] and the methods each binary adds to the module.

mod call;
pub mod chain;
mod convert;
pub mod error;
pub mod evm;
mod subs;

use std::{net::SocketAddr, sync::Arc};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::{FeeHistory, Filter, FilterBlockOption, Log, TransactionRequest};
use jsonrpsee::{
    RpcModule,
    server::{BatchRequestConfig, IdProvider, ServerConfig},
    types::{ErrorObjectOwned, SubscriptionId},
};
use memstate::MemState;
use serde::Deserialize;

pub use self::convert::{rpc_block, rpc_receipt};
use self::{
    chain::{Chain, PooledTx, SealedBlock},
    convert::{rpc_logs, rpc_pending_transaction, rpc_transaction},
    error::RpcError,
    evm::ChainRules,
};

type RpcResult<T> = Result<T, ErrorObjectOwned>;

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

/// Limits of one JSON-RPC server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_request_size: u32,
    /// Largest response body, in bytes.
    pub max_response_size: u32,
    /// Most calls in one batch request.
    pub max_batch_len: u32,
    /// Most concurrent connections.
    pub max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_size: 10 * 1024 * 1024,
            max_response_size: 100 * 1024 * 1024,
            max_batch_len: 1_000,
            max_connections: 1_000,
        }
    }
}

/// The server configuration every node uses: `limits`, and subscription ids as geth writes
/// them.
pub fn server_config(limits: Limits) -> ServerConfig {
    ServerConfig::builder()
        .max_request_body_size(limits.max_request_size)
        .max_response_body_size(limits.max_response_size)
        .max_connections(limits.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(limits.max_batch_len))
        .set_id_provider(HexIds::new())
        .build()
}

/// CORS for browser dapps and wallets, which call a local node from other origins as they do
/// anvil.
pub fn cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_methods([hyper::Method::POST, hyper::Method::GET, hyper::Method::OPTIONS])
        .allow_origin(tower_http::cors::Any)
        .allow_headers([hyper::header::CONTENT_TYPE])
}

/// Starts a server with [`server_config`] and [`cors`] serving `module` on `addr`; returns the
/// bound address and the handle that stops it.
pub async fn serve_module(
    module: impl Into<jsonrpsee::Methods>,
    addr: SocketAddr,
    limits: Limits,
) -> std::io::Result<(SocketAddr, jsonrpsee::server::ServerHandle)> {
    let server = jsonrpsee::server::Server::builder()
        .set_config(server_config(limits))
        .set_http_middleware(tower::ServiceBuilder::new().layer(cors()))
        .build(addr)
        .await?;
    let bound = server.local_addr()?;
    Ok((bound, server.start(module)))
}

/// What the read methods need to know beyond the chain and the state.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Gas cap for `eth_call`, `eth_estimateGas` and `eth_createAccessList`.
    pub gas_cap: u64,
    /// Most blocks one `eth_getLogs` may scan.
    pub max_logs_range: u64,
    /// The priority fee `eth_gasPrice` and `eth_maxPriorityFeePerGas` suggest, wei.
    pub suggested_priority_fee: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { gas_cap: 50_000_000, max_logs_range: 10_000, suggested_priority_fee: 1_000_000_000 }
    }
}

/// Transactions accepted but not executed yet: the sequencer's pool, or what a full node has
/// forwarded to it.
pub trait Pending: Send + Sync {
    /// The nonce `sender`'s next transaction would take, counting those waiting in order after
    /// `state_nonce`.
    fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64;
    /// A waiting transaction by hash.
    fn get(&self, hash: &B256) -> Option<Arc<PooledTx>>;
}

/// What the read methods serve.
pub struct View {
    /// Blocks, receipts and events.
    pub chain: Arc<Chain>,
    /// The newest state (through the newest mini-block).
    pub state: Arc<MemState>,
    /// Hard fork and chain id.
    pub rules: ChainRules,
    /// Caps and suggestions.
    pub settings: Settings,
    /// Transactions not executed yet.
    pub pending: Arc<dyn Pending>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("chain", &self.chain).finish_non_exhaustive()
    }
}

/// Block parameters as clients send them: a tag, a number, or `{blockHash}`.
fn block_id(params: Option<BlockId>) -> BlockId {
    params.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest))
}

/// The sealed block a tag or number names (`pending` and `latest` name the newest sealed one).
fn find_block(view: &View, id: BlockId) -> Option<Arc<SealedBlock>> {
    match id {
        BlockId::Hash(hash) => view.chain.block_by_hash(&hash.block_hash),
        BlockId::Number(tag) => match tag {
            BlockNumberOrTag::Number(n) => view.chain.block(n),
            BlockNumberOrTag::Earliest => view.chain.block(0),
            _ => view.chain.head(),
        },
    }
}

/// Checks that state reads at `id` can be served: the newest state serves `latest`, `pending`,
/// `safe`, `finalized` and the head's number; older blocks are not kept.
fn check_state_at(view: &View, id: BlockId) -> RpcResult<()> {
    let number = match id {
        BlockId::Number(BlockNumberOrTag::Number(n)) => n,
        BlockId::Number(BlockNumberOrTag::Earliest) => 0,
        BlockId::Number(_) => return Ok(()),
        BlockId::Hash(hash) => {
            view.chain.block_by_hash(&hash.block_hash).ok_or(RpcError::BlockNotFound)?.header.number
        }
    };
    let head = view.chain.head_number();
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

fn fee_history(
    view: &View,
    count: u64,
    newest: BlockNumberOrTag,
    percentiles: Option<Vec<f64>>,
) -> RpcResult<FeeHistory> {
    let count = count.clamp(1, 1024);
    let head = view.chain.head_number();
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
    let blocks = view.chain.blocks_in(oldest, newest);
    let mut base_fees: Vec<u128> =
        blocks.iter().map(|b| u128::from(b.header.base_fee_per_gas.unwrap_or(0))).collect();
    let next_base = if newest == head {
        view.chain.open_block().base_fee
    } else {
        view.chain.block(newest + 1).and_then(|b| b.header.base_fee_per_gas).unwrap_or(0)
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

fn get_logs(view: &View, filter: &Filter) -> RpcResult<Vec<Log>> {
    let matches =
        |log: &Log| filter.matches_address(log.address()) && filter.matches_topics(log.topics());
    let (blocks, unsealed) = match &filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            (vec![view.chain.block_by_hash(hash).ok_or(RpcError::BlockNotFound)?], Vec::new())
        }
        FilterBlockOption::Range { from_block, to_block } => {
            let head = view.chain.head_number();
            // `latest` and `pending` reach the newest mini-block, as state reads do.
            let newest = view.chain.open_block().number;
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
            if to - from >= view.settings.max_logs_range {
                return Err(RpcError::LogRange(view.settings.max_logs_range).into());
            }
            // Unsealed first: a block sealed in between then shows up in both and is dropped
            // from the unsealed side, rather than in neither.
            let unsealed = view.chain.unsealed_txs(from, to);
            let sealed = view.chain.blocks_in(from, to);
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
            logs.extend(rpc_logs(&view.chain, tx).into_iter().filter(matches));
        }
    }
    for tx in &unsealed {
        logs.extend(rpc_logs(&view.chain, tx).into_iter().filter(matches));
    }
    Ok(logs)
}

/// The read methods and subscriptions over `view`, with `client_version` for
/// `web3_clientVersion`. Each node adds its own ways of submitting transactions.
pub fn read_module(
    view: Arc<View>,
    client_version: &'static str,
) -> Result<RpcModule<Arc<View>>, jsonrpsee::core::RegisterMethodError> {
    let mut m = RpcModule::new(view);

    m.register_method("web3_clientVersion", move |_, _, _| client_version)?;
    m.register_method("net_version", |_, view, _| view.rules.chain_id.to_string())?;
    m.register_method("net_listening", |_, _, _| true)?;
    m.register_method("eth_chainId", |_, view, _| ok(U64::from(view.rules.chain_id)))?;
    m.register_method("eth_syncing", |_, _, _| false)?;
    m.register_method("eth_accounts", |_, _, _| Vec::<Address>::new())?;
    m.register_method("eth_blockNumber", |_, view, _| ok(U64::from(view.chain.head_number())))?;
    m.register_method("eth_gasPrice", |_, view, _| {
        ok(U256::from(view.chain.open_block().base_fee)
            + U256::from(view.settings.suggested_priority_fee))
    })?;
    m.register_method("eth_maxPriorityFeePerGas", |_, view, _| {
        ok(U256::from(view.settings.suggested_priority_fee))
    })?;
    m.register_method("eth_feeHistory", |params, view, _| -> RpcResult<FeeHistory> {
        let mut seq = params.sequence();
        let count: U64 = seq.next()?;
        let newest: BlockNumberOrTag = seq.next()?;
        let percentiles: Option<Vec<f64>> = seq.optional_next()?;
        fee_history(view, count.to(), newest, percentiles)
    })?;

    m.register_method("eth_getBalance", |params, view, _| -> RpcResult<U256> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        check_state_at(view, block_id(seq.optional_next()?))?;
        Ok(view.state.account(&address).map(|a| a.balance).unwrap_or_default())
    })?;
    m.register_method("eth_getTransactionCount", |params, view, _| -> RpcResult<U64> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let id = block_id(seq.optional_next()?);
        let nonce = view.state.account(&address).map(|a| a.nonce).unwrap_or_default();
        if id == BlockId::Number(BlockNumberOrTag::Pending) {
            return Ok(U64::from(view.pending.pending_nonce(&address, nonce)));
        }
        check_state_at(view, id)?;
        Ok(U64::from(nonce))
    })?;
    m.register_method("eth_getCode", |params, view, _| -> RpcResult<Bytes> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        check_state_at(view, block_id(seq.optional_next()?))?;
        Ok(view.state.code_at(&address))
    })?;
    m.register_method("eth_getStorageAt", |params, view, _| -> RpcResult<B256> {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let slot: StorageSlot = seq.next()?;
        check_state_at(view, block_id(seq.optional_next()?))?;
        Ok(B256::from(view.state.storage(&address, &slot.key())))
    })?;

    m.register_blocking_method("eth_call", |params, view, _| -> RpcResult<Bytes> {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&view, block_id(seq.optional_next()?))?;
        reject_overrides(&mut seq)?;
        call::call(&view, &req)
    })?;
    m.register_blocking_method("eth_estimateGas", |params, view, _| -> RpcResult<U64> {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&view, block_id(seq.optional_next()?))?;
        reject_overrides(&mut seq)?;
        call::estimate_gas(&view, &req).map(U64::from)
    })?;
    m.register_blocking_method("eth_createAccessList", |params, view, _| {
        let mut seq = params.sequence();
        let req: TransactionRequest = seq.next()?;
        check_state_at(&view, block_id(seq.optional_next()?))?;
        call::create_access_list(&view, &req)
    })?;

    m.register_method("eth_getTransactionByHash", |params, view, _| -> RpcResult<_> {
        let hash: B256 = params.one()?;
        if let Some(tx) = view.chain.tx(&hash) {
            return Ok(Some(rpc_transaction(&view.chain, &tx)));
        }
        Ok(view.pending.get(&hash).map(|tx| rpc_pending_transaction(&tx)))
    })?;
    m.register_method("eth_getTransactionReceipt", |params, view, _| -> RpcResult<_> {
        let hash: B256 = params.one()?;
        Ok(view.chain.tx(&hash).map(|tx| rpc_receipt(&view.chain, &tx)))
    })?;
    m.register_method("eth_getBlockByNumber", |params, view, _| -> RpcResult<_> {
        let mut seq = params.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        Ok(find_block(view, BlockId::Number(tag))
            .map(|b| rpc_block(&view.chain, &b, full.unwrap_or(false))))
    })?;
    m.register_method("eth_getBlockByHash", |params, view, _| -> RpcResult<_> {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        Ok(view
            .chain
            .block_by_hash(&hash)
            .map(|b| rpc_block(&view.chain, &b, full.unwrap_or(false))))
    })?;
    m.register_method("eth_getBlockTransactionCountByNumber", |params, view, _| -> RpcResult<_> {
        let tag: BlockNumberOrTag = params.one()?;
        Ok(find_block(view, BlockId::Number(tag)).map(|b| U64::from(b.txs.len())))
    })?;
    m.register_method("eth_getBlockReceipts", |params, view, _| -> RpcResult<_> {
        let id: BlockId = params.one()?;
        Ok(find_block(view, id)
            .map(|b| b.txs.iter().map(|t| rpc_receipt(&view.chain, t)).collect::<Vec<_>>()))
    })?;
    m.register_blocking_method("eth_getLogs", |params, view, _| -> RpcResult<Vec<Log>> {
        let filter: Filter = params.one()?;
        get_logs(&view, &filter)
    })?;

    m.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |params, pending, view, _| subs::subscribe(params, pending, Arc::clone(&view)),
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
