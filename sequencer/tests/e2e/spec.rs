//! Responses validated against the Ethereum JSON-RPC specification (execution-apis
//! `openrpc.json`, CC0, copied beside the tests): each method's result schema.

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, U256};
use alloy_provider::Provider;
use alloy_rpc_types_eth::TransactionRequest;
use serde_json::{Value, json};

use crate::common::*;

struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Self {
        let text = include_str!("../fixtures/execution-apis/openrpc.json");
        Self { doc: serde_json::from_str(text).expect("openrpc.json parses") }
    }

    /// Validates `result` against the result schema of `method`.
    fn check(&self, method: &str, result: &Value) {
        let errors = self.errors(method, result);
        assert!(errors.is_empty(), "{method} result does not match the spec: {errors:?}\n{result}");
    }

    fn errors(&self, method: &str, result: &Value) -> Vec<String> {
        let spec = self.doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == method)
            .unwrap_or_else(|| panic!("{method} is not in the spec"));
        // The result schema refers to `#/components/...`: give it the components to resolve.
        let mut schema = spec["result"]["schema"].clone();
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::validator_for(&schema).expect("spec schema compiles");
        validator.iter_errors(result).map(|e| e.to_string()).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_match_the_execution_apis_schemas() {
    let spec = Spec::load();
    let seq = Sequencer::start(&["--block-time", "200ms"]);
    let p = seq.wallet_provider(7);
    let tx =
        TransactionRequest::default().with_to(Address::repeat_byte(0x77)).with_value(U256::from(1));
    let receipt = p.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
    let mut code = token_creation_code().to_vec();
    use alloy_sol_types::SolValue;
    code.extend(("S".to_string(), "S".to_string(), U256::from(1000)).abi_encode_params());
    let deploy = TransactionRequest::default().with_deploy_code(code);
    let deployed = p.send_transaction(deploy).await.unwrap().get_receipt().await.unwrap();
    let token = deployed.contract_address.unwrap();
    // Let both blocks seal.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let hash = receipt.transaction_hash;
    let block = json!(format!("{:#x}", deployed.block_number.unwrap()));
    let me = address(7);
    let call = json!({"from": me, "to": token, "data": "0x18160ddd"});
    let cases: Vec<(&str, Value)> = vec![
        ("eth_chainId", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_syncing", json!([])),
        ("eth_accounts", json!([])),
        ("net_version", json!([])),
        ("eth_gasPrice", json!([])),
        ("eth_maxPriorityFeePerGas", json!([])),
        ("eth_feeHistory", json!(["0x4", "latest", [25, 75]])),
        ("eth_getBalance", json!([me, "latest"])),
        ("eth_getTransactionCount", json!([me, "pending"])),
        ("eth_getCode", json!([token, "latest"])),
        ("eth_getStorageAt", json!([token, "0x2", "latest"])),
        ("eth_call", json!([call, "latest"])),
        ("eth_estimateGas", json!([call])),
        ("eth_createAccessList", json!([call, "latest"])),
        ("eth_getTransactionByHash", json!([hash])),
        ("eth_getTransactionByHash", json!([format!("0x{}", "00".repeat(32))])),
        ("eth_getTransactionReceipt", json!([hash])),
        ("eth_getTransactionReceipt", json!([deployed.transaction_hash])),
        ("eth_getBlockByNumber", json!([block, true])),
        ("eth_getBlockByNumber", json!(["latest", false])),
        ("eth_getBlockByNumber", json!(["0xffffff", false])),
        ("eth_getBlockReceipts", json!([block])),
        ("eth_getBlockTransactionCountByNumber", json!([block])),
        ("eth_getLogs", json!([{"address": token, "fromBlock": "0x0", "toBlock": "latest"}])),
    ];
    for (method, params) in cases {
        let response = seq.raw(method, params.clone()).await;
        assert!(response.get("error").is_none(), "{method} {params}: {response}");
        spec.check(method, &response["result"]);
    }
    // The check has teeth: a receipt with a decimal number where the spec wants hex fails.
    let mut bad = seq.raw("eth_getTransactionReceipt", json!([hash])).await["result"].clone();
    bad["gasUsed"] = json!(21000);
    assert!(!spec.errors("eth_getTransactionReceipt", &bad).is_empty());

    let by_number = seq.raw("eth_getBlockByNumber", json!([block, false])).await;
    let block_hash = by_number["result"]["hash"].clone();
    let by_hash = seq.raw("eth_getBlockByHash", json!([block_hash, false])).await;
    spec.check("eth_getBlockByHash", &by_hash["result"]);
    assert_eq!(by_hash["result"], by_number["result"]);
    let raw =
        eip1559(7, 2, Address::repeat_byte(1), U256::from(1), 21_000, gwei(10), gwei(1), CHAIN_ID);
    let sent = seq.raw("eth_sendRawTransaction", json!([raw])).await;
    spec.check("eth_sendRawTransaction", &sent["result"]);
}
