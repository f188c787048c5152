use std::time::Duration;

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, B256, U256};
use alloy_provider::{Provider, ProviderBuilder, WsConnect};
use alloy_rpc_types_eth::{BlockNumberOrTag, Filter, TransactionRequest};
use alloy_sol_types::{SolCall, SolEvent, SolValue, sol};
use futures::StreamExt;

use crate::common::*;

sol! {
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function decimals() external view returns (uint8);
    event Transfer(address indexed from, address indexed to, uint256 value);
}

const ETH: u128 = 1_000_000_000_000_000_000;

async fn wait_for_block(p: &impl Provider, number: u64) {
    for _ in 0..100 {
        if p.get_block_number().await.unwrap() >= number {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("block {number} was not sealed");
}

async fn deploy_token(p: &impl Provider, supply: U256) -> Address {
    let mut code = token_creation_code().to_vec();
    code.extend(("Test Token".to_string(), "TT".to_string(), supply).abi_encode_params());
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "deploy failed: {receipt:?}");
    receipt.contract_address.expect("contract address")
}

#[tokio::test(flavor = "multi_thread")]
async fn wallet_transfers_deploys_calls_and_reads_logs() {
    let seq = Sequencer::start(&[]);
    let p = seq.wallet_provider(0);
    assert_eq!(p.get_chain_id().await.unwrap(), CHAIN_ID);
    let client_version: String = p.raw_request("web3_clientVersion".into(), ()).await.unwrap();
    assert!(client_version.starts_with("sequencer/"));

    // A plain transfer, filled (nonce, gas, fees) and signed by the client.
    let to = Address::repeat_byte(0x42);
    let before = p.get_balance(address(0)).await.unwrap();
    let tx = TransactionRequest::default().with_to(to).with_value(U256::from(ETH));
    let receipt = p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status());
    assert_eq!(receipt.from, address(0));
    assert_eq!(receipt.gas_used, 21_000);
    assert_eq!(p.get_balance(to).await.unwrap(), U256::from(ETH));
    let fee = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(p.get_balance(address(0)).await.unwrap(), before - U256::from(ETH) - fee);
    assert_eq!(p.get_transaction_count(address(0)).await.unwrap(), 1);
    let fetched = p.get_transaction_by_hash(receipt.transaction_hash).await.unwrap().unwrap();
    assert_eq!(fetched.inner.signer(), address(0));
    assert_eq!(fetched.block_number, receipt.block_number);

    // Deploy an OpenZeppelin ERC-20 and call it.
    let supply = U256::from(1_000_000u64) * U256::from(ETH);
    let token = deploy_token(&p, supply).await;
    assert!(!p.get_code_at(token).await.unwrap().is_empty());
    let call = |data: Vec<u8>| TransactionRequest::default().with_to(token).with_input(data);
    let out = p.call(call(balanceOfCall { account: address(0) }.abi_encode())).await.unwrap();
    assert_eq!(U256::abi_decode(&out).unwrap(), supply);
    let out = p.call(call(decimalsCall {}.abi_encode())).await.unwrap();
    assert_eq!(decimalsCall::abi_decode_returns(&out).unwrap(), 18);

    // A token transfer: estimated, sent, its log in the receipt and in eth_getLogs.
    let amount = U256::from(12_345u64);
    let data = transferCall { to, amount }.abi_encode();
    let estimate = p.estimate_gas(call(data.clone()).with_from(address(0))).await.unwrap();
    assert!(estimate > 21_000 && estimate < 100_000, "estimate {estimate}");
    let receipt = p.send_transaction(call(data).with_gas_limit(estimate)).await.unwrap();
    let receipt = receipt.get_receipt().await.unwrap();
    assert!(receipt.status());
    let logs = receipt.inner.logs();
    assert_eq!(logs.len(), 1);
    let event = Transfer::decode_log_data(logs[0].data()).unwrap();
    assert_eq!((event.from, event.to, event.value), (address(0), to, amount));
    let out = p.call(call(balanceOfCall { account: to }.abi_encode())).await.unwrap();
    assert_eq!(U256::abi_decode(&out).unwrap(), amount);

    // Logs are readable as soon as the receipt is, sealed block or not.
    let latest =
        Filter::new().address(token).event_signature(Transfer::SIGNATURE_HASH).from_block(0);
    let early = p.get_logs(&latest).await.unwrap();
    assert_eq!(early.last().and_then(|l| l.transaction_hash), Some(receipt.transaction_hash));

    let block = receipt.block_number.unwrap();
    wait_for_block(&p, block).await;
    let filter = Filter::new()
        .address(token)
        .event_signature(Transfer::SIGNATURE_HASH)
        .from_block(0)
        .to_block(BlockNumberOrTag::Latest);
    let found = p.get_logs(&filter).await.unwrap();
    // The mint at deployment and the transfer.
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].transaction_hash, Some(receipt.transaction_hash));
    let sealed = p.get_transaction_receipt(receipt.transaction_hash).await.unwrap().unwrap();
    assert_eq!(found[1].block_hash, sealed.block_hash);

    // The sealed block holds the transaction, and its receipts match.
    let full = p.get_block_by_number(block.into()).full().await.unwrap().unwrap();
    assert!(full.transactions.hashes().any(|h| h == receipt.transaction_hash));
    assert_eq!(Some(full.header.hash), sealed.block_hash);
    let receipts = p.get_block_receipts(block.into()).await.unwrap().unwrap();
    assert!(receipts.iter().any(|r| r.transaction_hash == receipt.transaction_hash));
    assert_eq!(full.header.gas_used, receipts.last().unwrap().inner.cumulative_gas_used());
    let fees = p.get_fee_history(4, BlockNumberOrTag::Latest, &[50.0]).await.unwrap();
    assert_eq!(fees.base_fee_per_gas.len(), fees.gas_used_ratio.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_methods_return_the_receipt_at_once() {
    let seq = Sequencer::start(&["--block-time", "5s"]);
    let base_fee: U256 = serde_json::from_value(
        seq.raw("eth_gasPrice", serde_json::json!([])).await["result"].clone(),
    )
    .unwrap();
    let fee = base_fee.to::<u128>() * 2;
    let to = Address::repeat_byte(7);
    for (nonce, method) in
        [(0u64, "realtime_sendRawTransaction"), (1, "eth_sendRawTransactionSync")]
    {
        let raw = eip1559(1, nonce, to, U256::from(5), 21_000, fee, gwei(1), CHAIN_ID);
        let response = seq.raw(method, serde_json::json!([raw])).await;
        let receipt = &response["result"];
        assert_eq!(receipt["status"], "0x1", "{response}");
        assert_eq!(receipt["transactionHash"], serde_json::json!(hash_of(&raw)));
        // The EVM block (5 s) is not sealed yet, yet the receipt is there for everyone.
        let again = seq.raw("eth_getTransactionReceipt", serde_json::json!([hash_of(&raw)])).await;
        assert_eq!(again["result"]["transactionHash"], receipt["transactionHash"]);
    }
    let balance = seq.raw("eth_getBalance", serde_json::json!([to, "latest"])).await;
    assert_eq!(balance["result"], "0xa");

    // A transaction that cannot run yet (nonce gap) expires with geth-style code -32000.
    let gap = eip1559(1, 5, to, U256::from(1), 21_000, fee, gwei(1), CHAIN_ID);
    let response = seq.raw("realtime_sendRawTransaction", serde_json::json!([gap, 200])).await;
    assert_eq!(response["error"]["code"], -32000, "{response}");
    assert_eq!(response["error"]["message"], "realtime transaction expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_subscriptions_deliver_heads_logs_and_mini_blocks() {
    let seq = Sequencer::start(&["--block-time", "200ms"]);
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(format!("ws://{}", seq.addr)))
        .await
        .unwrap();
    let mut heads = ws.subscribe_blocks().await.unwrap().into_stream();
    let head = tokio::time::timeout(Duration::from_secs(5), heads.next()).await.unwrap().unwrap();
    assert!(head.number >= 1);
    let raw_head: serde_json::Value =
        ws.subscribe::<_, serde_json::Value>(("newHeads",)).await.unwrap().recv().await.unwrap();
    assert!(raw_head["miniBlockCount"].is_string(), "{raw_head}");

    let p = seq.wallet_provider(2);
    let token = deploy_token(&p, U256::from(1_000_000u64)).await;
    let mut logs = ws
        .subscribe_logs(&Filter::new().address(token).event_signature(Transfer::SIGNATURE_HASH))
        .await
        .unwrap()
        .into_stream();
    let mut minis = ws.subscribe::<_, serde_json::Value>(("miniBlocks",)).await.unwrap();
    let mut changes = ws
        .subscribe::<_, serde_json::Value>((
            "stateChanges",
            serde_json::json!({"addresses": [token]}),
        ))
        .await
        .unwrap();

    let to = Address::repeat_byte(9);
    let data = transferCall { to, amount: U256::from(77) }.abi_encode();
    let tx = TransactionRequest::default().with_to(token).with_input(data);
    let pending = p.send_transaction(tx).await.unwrap();
    let hash: B256 = *pending.tx_hash();

    let log = tokio::time::timeout(Duration::from_secs(5), logs.next()).await.unwrap().unwrap();
    assert_eq!(log.transaction_hash, Some(hash));
    let event = Transfer::decode_log_data(log.data()).unwrap();
    assert_eq!(event.value, U256::from(77));

    let mini = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = minis.recv().await.unwrap();
            if m["transactions"].as_array().unwrap().iter().any(|h| h == &serde_json::json!(hash)) {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(mini["receipts"][0]["status"], "0x1");

    let change =
        tokio::time::timeout(Duration::from_secs(5), changes.recv()).await.unwrap().unwrap();
    let accounts = change["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "only the token was asked for: {change}");
    assert_eq!(accounts[0]["address"], serde_json::json!(token));
    assert_eq!(accounts[0]["storage"].as_object().unwrap().len(), 2, "{change}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_admissions_and_rejections() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let seq = Sequencer::start(&["--metrics-addr", &metrics_addr]);
    let p = seq.wallet_provider(3);
    let tx =
        TransactionRequest::default().with_to(Address::repeat_byte(1)).with_value(U256::from(1));
    p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
    let bad = eip1559(3, 0, Address::ZERO, U256::ZERO, 21_000, gwei(10), gwei(1), 1);
    let response = seq.raw("eth_sendRawTransaction", serde_json::json!([bad])).await;
    assert!(response["error"].is_object());
    let text =
        reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("sequencer_tx_admitted_total 1"), "{text}");
    assert!(text.contains("sequencer_tx_rejected_total{reason=\"chain_id\"} 1"), "{text}");
    assert!(text.contains("sequencer_mini_block_seal_seconds"), "{text}");
    // State memory: what pages the node arena got (dev mode: THP or plain on most hosts).
    assert!(text.contains("numa_region_bytes{kind=\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_raw_transactions_is_answered_in_order() {
    let seq = Sequencer::start(&[]);
    let to = Address::repeat_byte(0x33);
    let mut raws: Vec<_> = (0..8u64)
        .map(|nonce| eip1559(6, nonce, to, U256::from(1), 21_000, gwei(10), gwei(1), CHAIN_ID))
        .collect();
    // One refused entry in the middle must not disturb the others.
    raws.insert(3, eip1559(6, 0, to, U256::from(1), 21_000, gwei(10), gwei(1), 5));
    let batch: Vec<_> = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [raw]})
        })
        .collect();
    let response: Vec<serde_json::Value> = reqwest::Client::new()
        .post(&seq.url)
        .header("content-type", "application/json")
        .body(serde_json::Value::Array(batch).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response.len(), raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let item = response.iter().find(|r| r["id"] == i).unwrap();
        if i == 3 {
            assert_eq!(item["error"]["message"], "invalid chain id for signer: have 5 want 31337");
        } else {
            assert_eq!(item["result"], serde_json::json!(hash_of(raw)), "{item}");
        }
    }
    let last = hash_of(raws.last().unwrap());
    for _ in 0..100 {
        let receipt = seq.raw("eth_getTransactionReceipt", serde_json::json!([last])).await;
        if !receipt["result"].is_null() {
            let count =
                seq.raw("eth_getTransactionCount", serde_json::json!([address(6), "latest"])).await;
            assert_eq!(count["result"], "0x8");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("batch was not executed");
}

/// A user's view of the JIT: with `jit.hot_threshold = 0` a deployed token is compiled in the
/// background on its first call, later calls run compiled code, balances are right, and the
/// object lands in `<datadir>/jit` for the next start.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_contract_is_compiled_and_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sequencer.toml");
    std::fs::write(&config, "[jit]\nhot_threshold = 0\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let datadir = dir.path().join("data");
    let seq = Sequencer::start_in(
        Some(&datadir),
        &["--metrics-addr", &metrics_addr, "--config", config.to_str().unwrap()],
    );
    let p = seq.wallet_provider(0);
    let token = deploy_token(&p, U256::from(1_000_000u64)).await;
    let to = Address::repeat_byte(0x42);
    for _ in 0..5 {
        let call = transferCall { to, amount: U256::from(7) };
        let tx = TransactionRequest::default().with_to(token).with_input(call.abi_encode());
        let receipt = p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status());
    }
    let mut compiled = false;
    for _ in 0..100 {
        let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l.starts_with("jit_compiled_total ") && !l.ends_with(" 0")) {
            compiled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compiled, "the token was compiled");
    // More transfers now run compiled code; the balance counts all of them.
    for _ in 0..3 {
        let call = transferCall { to, amount: U256::from(7) };
        let tx = TransactionRequest::default().with_to(token).with_input(call.abi_encode());
        assert!(p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap().status());
    }
    let call = balanceOfCall { account: to };
    let out = p
        .call(TransactionRequest::default().with_to(token).with_input(call.abi_encode()))
        .await
        .unwrap();
    assert_eq!(U256::abi_decode(&out).unwrap(), U256::from(8 * 7));
    let objects = std::fs::read_dir(datadir.join("jit")).map(|d| d.count()).unwrap_or(0);
    assert!(objects > 0, "the AOT cache holds the compiled token");
}
