//! The full node's JSON-RPC: the same read methods and subscriptions as the sequencer (the
//! `chain-rpc` crate) over the state and chain this node applied, `latest` being its newest
//! mini-block; transactions are forwarded to the sequencer's RPC.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_consensus::transaction::SignerRecoverable;
use alloy_primitives::{Address, B256, Bytes, U64};
use chain_rpc::{
    Limits, Pending, Settings, View, chain::PooledTx, error::SERVER_ERROR, evm::ChainRules,
};
use jsonrpsee::{RpcModule, server::ServerHandle, types::ErrorObjectOwned};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::Follower;

/// The version string `web3_clientVersion` returns.
pub const CLIENT_VERSION: &str = concat!("fullnode/v", env!("CARGO_PKG_VERSION"), "/rust");

/// How long a forwarded transaction counts as pending here if it never shows up in a
/// mini-block (the sequencer may have dropped it).
const FORWARDED_TTL: Duration = Duration::from_secs(120);
/// Most forwarded transactions remembered; the oldest go first.
const FORWARDED_MAX: usize = 10_000;
/// How long a realtime submission waits at the sequencer when the caller gives no timeout (the
/// sequencer's default `rpc.realtime_timeout`).
const REALTIME_DEFAULT: Duration = Duration::from_secs(10);

/// Transactions this node forwarded that it has not seen executed yet: what makes
/// `eth_getTransactionCount(…, "pending")` and `eth_getTransactionByHash` right for a wallet
/// that sends through this node.
#[derive(Debug, Default)]
pub struct Forwarded {
    txs: Mutex<HashMap<B256, (Arc<PooledTx>, Instant)>>,
}

impl Forwarded {
    fn insert(&self, tx: PooledTx) {
        let mut txs = self.txs.lock();
        let now = Instant::now();
        txs.retain(|_, (_, at)| now.duration_since(*at) < FORWARDED_TTL);
        if txs.len() >= FORWARDED_MAX
            && let Some(oldest) = txs.iter().min_by_key(|(_, (_, at))| *at).map(|(h, _)| *h)
        {
            txs.remove(&oldest);
        }
        txs.insert(tx.hash, (Arc::new(tx), now));
    }
}

impl Pending for Forwarded {
    fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let txs = self.txs.lock();
        let now = Instant::now();
        let mut nonces: Vec<u64> = txs
            .values()
            .filter(|(tx, at)| tx.sender == *sender && now.duration_since(*at) < FORWARDED_TTL)
            .map(|(tx, _)| tx.nonce())
            .collect();
        nonces.sort_unstable();
        let mut next = state_nonce;
        for nonce in nonces {
            if nonce == next {
                next += 1;
            }
        }
        next
    }

    fn get(&self, hash: &B256) -> Option<Arc<PooledTx>> {
        let txs = self.txs.lock();
        txs.get(hash).filter(|(_, at)| at.elapsed() < FORWARDED_TTL).map(|(tx, _)| tx.clone())
    }
}

/// A JSON-RPC client of the sequencer, for what only it can do.
#[derive(Debug, Clone)]
pub struct Forwarder {
    url: String,
    client: reqwest::Client,
}

impl Forwarder {
    /// A client of the sequencer's RPC at `url` (e.g. `http://127.0.0.1:8545`).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), client: reqwest::Client::new() }
    }

    /// Calls `method` at the sequencer and returns its result, or its error as it gave it.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ErrorObjectOwned> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ErrorObjectOwned::owned(
                SERVER_ERROR,
                format!("sequencer at {} did not answer: {e}", self.url),
                None::<()>,
            )
        };
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let bytes = response.bytes().await.map_err(|e| unreachable(&e))?;
        let mut reply: Value = serde_json::from_slice(&bytes).map_err(|e| unreachable(&e))?;
        if let Some(error) = reply.get_mut("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(SERVER_ERROR as i64);
            let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_string();
            let data = error.get_mut("data").map(Value::take);
            return Err(ErrorObjectOwned::owned(code as i32, message, data));
        }
        Ok(reply.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }
}

/// What the server needs: the follower's chain and state, and the way to the sequencer.
struct Context {
    forwarder: Forwarder,
    forwarded: Arc<Forwarded>,
}

/// Records a transaction the sequencer accepted, so that this node counts it as pending.
fn remember(forwarded: &Forwarded, raw: Bytes) {
    let Ok(envelope) = chain_rpc::chain::decode_envelope(&raw) else { return };
    let Ok(sender) = envelope.recover_signer() else { return };
    if let Ok(tx) = PooledTx::from_recovered(raw, sender) {
        forwarded.insert(tx);
    }
}

/// Every method: the read methods over `follower`'s chain and state, and submission forwarded
/// to the sequencer.
pub fn module(
    follower: &Follower,
    rules: ChainRules,
    settings: Settings,
    forwarder: Forwarder,
) -> Result<RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    let forwarded = Arc::new(Forwarded::default());
    let view = View {
        chain: follower.chain().clone(),
        state: follower.state().clone(),
        rules,
        settings,
        pending: forwarded.clone(),
    };
    let read = chain_rpc::read_module(Arc::new(view), CLIENT_VERSION)?;
    let mut m = RpcModule::new(Context { forwarder, forwarded });

    m.register_async_method("eth_sendRawTransaction", |params, ctx, _| async move {
        let raw: Bytes = params.one()?;
        let result = ctx
            .forwarder
            .call("eth_sendRawTransaction", json!([raw]), Duration::from_secs(10))
            .await?;
        remember(&ctx.forwarded, raw);
        Ok::<_, ErrorObjectOwned>(result)
    })?;
    for name in ["realtime_sendRawTransaction", "eth_sendRawTransactionSync"] {
        m.register_async_method(name, move |params, ctx, _| async move {
            let mut seq = params.sequence();
            let raw: Bytes = seq.next()?;
            let timeout_ms: Option<U64> = seq.optional_next()?;
            let wait = timeout_ms.map_or(REALTIME_DEFAULT, |t| Duration::from_millis(t.to()));
            let params = match timeout_ms {
                Some(t) => json!([raw, t]),
                None => json!([raw]),
            };
            // The sequencer answers within `wait`; allow for the hop.
            let result = ctx.forwarder.call(name, params, wait + Duration::from_secs(5)).await?;
            remember(&ctx.forwarded, raw);
            Ok::<_, ErrorObjectOwned>(result)
        })?;
    }
    let mut all = RpcModule::new(());
    all.merge(read)?;
    all.merge(m)?;
    Ok(all)
}

/// Starts the full node's server on `addr`; returns the bound address and the handle that
/// stops it.
pub async fn serve(
    module: RpcModule<()>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    chain_rpc::serve_module(module, addr, Limits::default()).await
}
