//! Latency as one user sees it: a single client sends transfers one at a time, each awaited
//! before the next, to the sequencer's JSON-RPC server; submission to receipt.

use std::time::{Duration, Instant};

use alloy_primitives::{B256, keccak256};
use hdrhistogram::Histogram;

use crate::{
    target::{RunError, RunSettings, ServedNode},
    workload::Prepared,
};

/// How the client waits for its receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `realtime_sendRawTransaction`: the receipt is the response.
    Realtime,
    /// `eth_sendRawTransaction`, then `eth_getTransactionReceipt` every `poll` until it is there.
    SendAndPoll,
}

/// Percentiles of one method, microseconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Percentiles {
    /// Method measured.
    pub method: Method,
    /// Transactions measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, RunError> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response: serde_json::Value = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| RunError::Io(e.to_string()))?
        .json()
        .await
        .map_err(|e| RunError::Io(e.to_string()))?;
    if let Some(error) = response.get("error") {
        return Err(RunError::Refused(error.to_string()));
    }
    Ok(response["result"].clone())
}

/// Sends `p`'s transactions one by one with `method`; `poll` is the receipt polling interval.
pub fn measure(
    p: &Prepared,
    settings: &RunSettings,
    method: Method,
    poll: Duration,
) -> Result<Percentiles, RunError> {
    let served = ServedNode::start(p, settings)?;
    let url = served.url.clone();
    // 1 µs to 60 s at 3 significant digits; `saturating_record` does not grow a histogram.
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let result = served.runtime.block_on(async {
        let client = reqwest::Client::new();
        for raw in p.txs.iter() {
            let started = Instant::now();
            match method {
                Method::Realtime => {
                    let receipt = post(
                        &client,
                        &url,
                        "realtime_sendRawTransaction",
                        serde_json::json!([raw]),
                    )
                    .await?;
                    if receipt["status"] != "0x1" {
                        return Err(RunError::Refused(receipt.to_string()));
                    }
                }
                Method::SendAndPoll => {
                    let hash: B256 = keccak256(raw);
                    post(&client, &url, "eth_sendRawTransaction", serde_json::json!([raw])).await?;
                    loop {
                        let receipt = post(
                            &client,
                            &url,
                            "eth_getTransactionReceipt",
                            serde_json::json!([hash]),
                        )
                        .await?;
                        if !receipt.is_null() {
                            break;
                        }
                        tokio::time::sleep(poll).await;
                    }
                }
            }
            histogram.saturating_record(started.elapsed().as_micros() as u64);
        }
        Ok(())
    });
    served.stop();
    result?;
    Ok(Percentiles {
        method,
        count: histogram.len(),
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    })
}
