//! The sequencer's JSON-RPC server: HTTP and WebSocket on one port (jsonrpsee). The read
//! methods and subscriptions are the `chain-rpc` crate's, over this node's chain, state and
//! pool; this module adds submission (`eth_sendRawTransaction`, the realtime methods) and the
//! batch middleware that recovers senders on all cores.

mod batch;
pub mod error;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use alloy_primitives::{Address, B256, Bytes, U64};
use chain_rpc::{Limits, Pending, Settings, View, chain::PooledTx, rpc_receipt};
use jsonrpsee::{RpcModule, types::ErrorObjectOwned};

use self::error::{submit_error, tx_error};
use crate::{node::Node, pool::Pool};

/// The version string `web3_clientVersion` returns.
pub const CLIENT_VERSION: &str = concat!("sequencer/v", env!("CARGO_PKG_VERSION"), "/rust");

impl Pending for Pool {
    fn pending_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        Pool::pending_nonce(self, sender, state_nonce)
    }

    fn get(&self, hash: &B256) -> Option<Arc<PooledTx>> {
        Pool::get(self, hash)
    }
}

fn limits(node: &Node) -> Limits {
    let rpc = &node.config.rpc;
    Limits {
        max_request_size: rpc.max_request_size,
        max_response_size: rpc.max_response_size,
        max_batch_len: rpc.max_batch_len,
        max_connections: rpc.max_connections,
    }
}

/// Starts the server on `addr`; returns the bound address and the handle that stops it.
pub async fn serve(
    node: Arc<Node>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, jsonrpsee::server::ServerHandle)> {
    let rpc_middleware = jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new()
        .layer(batch::PrecoverLayer(node.static_rules));
    let server = jsonrpsee::server::Server::builder()
        .set_config(chain_rpc::server_config(limits(&node)))
        .set_http_middleware(tower::ServiceBuilder::new().layer(chain_rpc::cors()))
        .set_rpc_middleware(rpc_middleware)
        .build(addr)
        .await?;
    let bound = server.local_addr()?;
    let module = module(node).map_err(std::io::Error::other)?;
    Ok((bound, server.start(module)))
}

/// The read view of `node`, as the shared read methods serve it.
pub fn view(node: &Node) -> View {
    View {
        chain: node.chain.clone(),
        state: node.state.clone(),
        rules: node.rules,
        settings: Settings {
            gas_cap: node.config.rpc.gas_cap,
            max_logs_range: node.config.rpc.max_logs_range,
            suggested_priority_fee: node.config.pool.suggested_priority_fee,
        },
        pending: node.pool.clone(),
    }
}

/// Every method: the shared read methods over `node`, and submission.
pub fn module(
    node: Arc<Node>,
) -> Result<RpcModule<Arc<Node>>, jsonrpsee::core::RegisterMethodError> {
    let read = chain_rpc::read_module(Arc::new(view(&node)), CLIENT_VERSION)?;
    let mut m = RpcModule::new(node);
    m.merge(read)?;

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
    m.register_method("sequencer_blockVerdict", |params, node, _| -> RpcResult<_> {
        let number: U64 = params.one()?;
        let number = number.to::<u64>();
        Ok(node.chain.block(number).map(|block| {
            serde_json::json!({
                "block": U64::from(number),
                "hash": block.hash,
                "stateRoot": block.header.state_root,
                "verdicts": node.verdicts.of(number),
            })
        }))
    })?;
    Ok(m)
}

type RpcResult<T> = Result<T, ErrorObjectOwned>;

fn realtime_timeout(node: &Node, given_ms: Option<u64>) -> Duration {
    given_ms.map_or(node.config.rpc.realtime_timeout, Duration::from_millis)
}
