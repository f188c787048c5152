//! Each refusal with geth's wording, and nothing changed afterwards.

use alloy_consensus::{Signed, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, Signature, TxKind, U256};
use alloy_signer::SignerSync;

use crate::common::*;

async fn send_err(seq: &Sequencer, raw: &Bytes) -> (i64, String) {
    let response = seq.raw("eth_sendRawTransaction", serde_json::json!([raw])).await;
    let error = &response["error"];
    assert!(error.is_object(), "expected an error, got {response}");
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_string())
}

async fn account_state(
    seq: &Sequencer,
    who: Address,
) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let balance =
        seq.raw("eth_getBalance", serde_json::json!([who, "latest"])).await["result"].clone();
    let nonce =
        seq.raw("eth_getTransactionCount", serde_json::json!([who, "latest"])).await["result"]
            .clone();
    let pending =
        seq.raw("eth_getTransactionCount", serde_json::json!([who, "pending"])).await["result"]
            .clone();
    (balance, nonce, pending)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_transaction_is_refused_with_its_reason_and_changes_nothing() {
    let seq = Sequencer::start(&[]);
    let me = 4;
    let to = Address::repeat_byte(0x55);
    let fee = gwei(10);
    let tip = gwei(1);

    // One good transaction first, so that "nonce too low" has something to be low against.
    let good = eip1559(me, 0, to, U256::from(1), 21_000, fee, tip, CHAIN_ID);
    let response = seq.raw("realtime_sendRawTransaction", serde_json::json!([good])).await;
    assert_eq!(response["result"]["status"], "0x1", "{response}");
    let before = account_state(&seq, address(me)).await;
    let recipient_before = account_state(&seq, to).await;

    let big_input = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: 1,
        gas_limit: 5_000_000,
        max_fee_per_gas: fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: Default::default(),
        input: vec![1u8; 140_000].into(),
    };
    let oversized = sign(me, big_input);
    let high_s = {
        let tx = TxEip1559 {
            chain_id: CHAIN_ID,
            nonce: 1,
            gas_limit: 21_000,
            max_fee_per_gas: fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(to),
            value: U256::from(1),
            access_list: Default::default(),
            input: Bytes::new(),
        };
        use alloy_consensus::SignableTransaction;
        let sig = signer(me).sign_hash_sync(&tx.signature_hash()).unwrap();
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        let flipped = Signature::new(sig.r(), n - sig.s(), !sig.v());
        let envelope: TxEnvelope = Signed::new_unhashed(tx, flipped).into();
        Bytes::from(envelope.encoded_2718())
    };

    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "wrong chain id",
            eip1559(me, 1, to, U256::from(1), 21_000, fee, tip, 1),
            "invalid chain id for signer: have 1 want 31337",
        ),
        (
            "nonce too low",
            eip1559(me, 0, to, U256::from(2), 21_000, fee, tip, CHAIN_ID),
            "nonce too low: next nonce 1, tx nonce 0",
        ),
        (
            "nonce gap beyond the pool's window",
            eip1559(me, 100, to, U256::from(1), 21_000, fee, tip, CHAIN_ID),
            "nonce too high: next nonce 1, tx nonce 100, at most 64 ahead may wait",
        ),
        (
            "insufficient funds",
            eip1559(me, 1, to, U256::from(10).pow(U256::from(30)), 21_000, fee, tip, CHAIN_ID),
            "insufficient funds for gas * price + value: address 0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 have ",
        ),
        (
            "intrinsic gas too low",
            eip1559(me, 1, to, U256::from(1), 20_000, fee, tip, CHAIN_ID),
            "intrinsic gas too low: gas 20000, minimum needed 21000",
        ),
        (
            "gas above the per-transaction cap",
            eip1559(me, 1, to, U256::from(1), 20_000_000, fee, tip, CHAIN_ID),
            "transaction gas limit too high (cap: 16777216, tx: 20000000)",
        ),
        ("oversized", oversized.clone(), "oversized data: transaction size "),
        (
            "malformed RLP",
            Bytes::from_static(&[0x02, 0xf8, 0x01, 0x01]),
            "invalid transaction encoding: ",
        ),
        (
            "trailing garbage",
            {
                let mut v = eip1559(me, 1, to, U256::from(1), 21_000, fee, tip, CHAIN_ID).to_vec();
                v.push(0);
                v.into()
            },
            "invalid transaction encoding: 1 trailing bytes after the transaction",
        ),
        (
            "blob transaction",
            Bytes::from_static(&[0x03, 0xc0]),
            "transaction type not supported: blob transactions (EIP-4844, type 3)",
        ),
        (
            "unknown type",
            Bytes::from_static(&[0x09, 0xc0]),
            "transaction type not supported: unknown type 0x09",
        ),
        (
            "unprotected legacy",
            legacy(me, 1, to, None),
            "only replay-protected (EIP-155) transactions allowed over RPC",
        ),
        ("high-s signature", high_s, "invalid transaction v, r, s values"),
        (
            "fee cap below base fee",
            eip1559(me, 1, to, U256::from(1), 21_000, 1, 0, CHAIN_ID),
            "max fee per gas less than block base fee: address 0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65, maxFeePerGas: 1, baseFee: ",
        ),
        (
            "tip above fee cap",
            eip1559(me, 1, to, U256::from(1), 21_000, fee, fee + 1, CHAIN_ID),
            "max priority fee per gas higher than max fee per gas",
        ),
        ("empty input", Bytes::new(), "invalid transaction encoding: empty input"),
    ];
    for (what, raw, expected) in &cases {
        let (code, message) = send_err(&seq, raw).await;
        assert_eq!(code, -32000, "{what}: {message}");
        assert!(message.starts_with(expected), "{what}: got {message:?}, want {expected:?}");
        let lookup = seq.raw("eth_getTransactionByHash", serde_json::json!([hash_of(raw)])).await;
        assert!(lookup["result"].is_null(), "{what} is findable: {lookup}");
    }

    // A queued future transaction, then its duplicate and an underpriced replacement.
    let queued = eip1559(me, 3, to, U256::from(1), 21_000, fee, tip, CHAIN_ID);
    let response = seq.raw("eth_sendRawTransaction", serde_json::json!([queued])).await;
    assert_eq!(response["result"], serde_json::json!(hash_of(&queued)), "{response}");
    assert_eq!(send_err(&seq, &queued).await.1, "already known");
    let replacement = eip1559(me, 3, to, U256::from(2), 21_000, fee + 1, tip + 1, CHAIN_ID);
    assert_eq!(send_err(&seq, &replacement).await.1, "replacement transaction underpriced");

    // Garbage parameters are the caller's error, not the server's.
    let response = seq.raw("eth_sendRawTransaction", serde_json::json!(["not hex"])).await;
    assert_eq!(response["error"]["code"], -32602, "{response}");
    let response = seq.raw("eth_sendRawTransaction", serde_json::json!([])).await;
    assert_eq!(response["error"]["code"], -32602, "{response}");

    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = account_state(&seq, address(me)).await;
    assert_eq!(after.0, before.0, "balance changed");
    assert_eq!(after.1, before.1, "nonce changed");
    // Only the queued nonce-3 transaction waits, behind a gap: pending nonce is still 1.
    assert_eq!(after.2, before.2, "pending nonce changed");
    assert_eq!(account_state(&seq, to).await, recipient_before);
}
