//! Parallel sender recovery for JSON-RPC batches. jsonrpsee runs a batch's calls one after
//! another; this middleware first decodes every `eth_sendRawTransaction` of a batch on all
//! cores (libsecp256k1 recovery is ~33 µs a transaction) and hands each call its result
//! through the request's extensions.

use std::sync::Arc;

use alloy_primitives::Bytes;
use jsonrpsee::{
    core::middleware::{Batch, BatchEntry, Notification, RpcServiceT},
    types::Request,
};

use crate::tx::{PooledTx, StaticRules, TxError, decode_batch};

/// A transaction decoded and recovered ahead of its call.
#[derive(Clone, Debug)]
pub(super) struct Predecoded(pub(super) Result<Arc<PooledTx>, TxError>);

/// The middleware layer.
#[derive(Clone, Debug)]
pub(super) struct PrecoverLayer(pub(super) StaticRules);

impl<S> tower::Layer<S> for PrecoverLayer {
    type Service = Precover<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Precover { inner, rules: self.0 }
    }
}

/// The middleware service.
#[derive(Clone, Debug)]
pub(super) struct Precover<S> {
    inner: S,
    rules: StaticRules,
}

const SEND_RAW: &str = "eth_sendRawTransaction";

fn raw_param(request: &Request<'_>) -> Option<Bytes> {
    let params = request.params.as_ref()?;
    let [raw]: [Bytes; 1] = serde_json::from_str(params.get()).ok()?;
    Some(raw)
}

impl<S> RpcServiceT for Precover<S>
where
    S: RpcServiceT + Send + Sync + Clone + 'static,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        self.inner.call(request)
    }

    fn batch<'a>(
        &self,
        mut batch: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let inner = self.inner.clone();
        let rules = self.rules;
        async move {
            let mut positions = Vec::new();
            let mut raws = Vec::new();
            for (i, entry) in batch.iter().enumerate() {
                if let Ok(BatchEntry::Call(request)) = entry
                    && request.method_name() == SEND_RAW
                    && let Some(raw) = raw_param(request)
                {
                    positions.push(i);
                    raws.push(raw);
                }
            }
            if raws.len() > 1 {
                let decoded = tokio::task::spawn_blocking(move || decode_batch(raws, &rules)).await;
                if let Ok(decoded) = decoded {
                    let mut decoded = decoded.into_iter();
                    for (i, entry) in batch.iter_mut().enumerate() {
                        if positions.first() != Some(&i) {
                            continue;
                        }
                        positions.remove(0);
                        if let (Ok(BatchEntry::Call(request)), Some(result)) =
                            (entry, decoded.next())
                        {
                            request.extensions_mut().insert(Predecoded(result));
                        }
                    }
                }
            }
            inner.batch(batch).await
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}
