//! SIGKILL after receipts were returned, restart on the same data directory: every
//! acknowledged transaction is there and the state and roots are as before.

use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use serde_json::json;

use crate::common::*;

async fn realtime(seq: &Sequencer, raw: &alloy_primitives::Bytes) -> serde_json::Value {
    let response = seq.raw("realtime_sendRawTransaction", json!([raw])).await;
    assert_eq!(response["result"]["status"], "0x1", "{response}");
    response["result"].clone()
}

/// A realtime transfer of `value` wei from dev account 8 to `0xNN…NN`; returns its hash.
async fn transfer(seq: &Sequencer, nonce: u64, to: u8, value: u64) -> B256 {
    let raw = eip1559(
        8,
        nonce,
        Address::repeat_byte(to),
        U256::from(value),
        21_000,
        gwei(10),
        gwei(1),
        CHAIN_ID,
    );
    realtime(seq, &raw).await;
    hash_of(&raw)
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_transactions_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seq = Sequencer::start_in(Some(dir.path()), &["--block-time", "300ms"]);
    let fee = gwei(10);
    let mut hashes: Vec<B256> = Vec::new();
    let recipients: Vec<Address> = (1..=4u8).map(Address::repeat_byte).collect();
    for (nonce, to) in recipients.iter().enumerate() {
        let raw =
            eip1559(5, nonce as u64, *to, U256::from(1000 + nonce), 21_000, fee, gwei(1), CHAIN_ID);
        realtime(&seq, &raw).await;
        hashes.push(hash_of(&raw));
    }
    // Wait until those are in a sealed block, and note that block.
    let last = seq.raw("eth_getTransactionReceipt", json!([hashes[3]])).await;
    let block_number = last["result"]["blockNumber"].as_str().unwrap().to_string();
    let sealed = loop {
        let block = seq.raw("eth_getBlockByNumber", json!([block_number, false])).await;
        if !block["result"].is_null() {
            break block["result"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Two more, acknowledged, then the process dies before their EVM block can seal.
    for nonce in 4..6u64 {
        let raw = eip1559(5, nonce, recipients[0], U256::from(1), 21_000, fee, gwei(1), CHAIN_ID);
        realtime(&seq, &raw).await;
        hashes.push(hash_of(&raw));
    }
    let balances_before: Vec<_> = {
        let mut v = Vec::new();
        for who in recipients.iter().chain([&address(5)]) {
            v.push(seq.raw("eth_getBalance", json!([who, "latest"])).await["result"].clone());
        }
        v
    };
    seq.kill();

    let seq = Sequencer::start_in(Some(dir.path()), &["--block-time", "300ms"]);
    for hash in &hashes {
        let receipt = seq.raw("eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(receipt["result"]["status"], "0x1", "lost {hash}: {receipt}");
    }
    let again =
        seq.raw("eth_getBlockByNumber", json!([block_number, false])).await["result"].clone();
    assert_eq!(again["stateRoot"], sealed["stateRoot"]);
    assert_eq!(again["hash"], sealed["hash"]);
    assert_eq!(again["transactions"], sealed["transactions"]);
    for (i, who) in recipients.iter().chain([&address(5)]).enumerate() {
        let balance = seq.raw("eth_getBalance", json!([who, "latest"])).await["result"].clone();
        assert_eq!(balance, balances_before[i], "balance of {who}");
    }
    let nonce = seq.raw("eth_getTransactionCount", json!([address(5), "latest"])).await;
    assert_eq!(nonce["result"], "0x6");
    // And it keeps going.
    let raw = eip1559(5, 6, recipients[1], U256::from(1), 21_000, fee, gwei(1), CHAIN_ID);
    realtime(&seq, &raw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_from_the_checkpoint_and_replays_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--block-time", "100ms", "--checkpoint-interval", "3"];
    let seq = Sequencer::start_in(Some(dir.path()), &args);
    let mut hashes = Vec::new();
    for nonce in 0..3u64 {
        hashes.push(transfer(&seq, nonce, 0x21, 5).await);
    }
    // Wait for a checkpoint taken after those transactions' block.
    let first_block =
        seq.raw("eth_getTransactionReceipt", json!([hashes[2]])).await["result"]["blockNumber"]
            .as_str()
            .map(|s| u64::from_str_radix(&s[2..], 16).unwrap())
            .unwrap();
    let checkpoint = dir.path().join("checkpoint.bin");
    let wanted = first_block.div_ceil(3) * 3 + 3;
    for _ in 0..200 {
        let head = seq.raw("eth_blockNumber", json!([])).await["result"]
            .as_str()
            .map(|s| u64::from_str_radix(&s[2..], 16).unwrap())
            .unwrap();
        if head >= wanted && checkpoint.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(checkpoint.exists(), "no checkpoint was written");
    let early = seq.raw("eth_getBlockByNumber", json!([format!("{first_block:#x}"), false])).await
        ["result"]
        .clone();
    let early_receipt =
        seq.raw("eth_getTransactionReceipt", json!([hashes[0]])).await["result"].clone();
    // More after the checkpoint, then a crash.
    for nonce in 3..5u64 {
        hashes.push(transfer(&seq, nonce, 0x22, 7).await);
    }
    let balance = seq.raw("eth_getBalance", json!([address(8), "latest"])).await["result"].clone();
    seq.kill();

    let log = dir.path().join("restart.log");
    let seq = Sequencer::start_logged(Some(dir.path()), &args, Some(&log));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("resuming from checkpoint"), "{text}");
    for hash in &hashes {
        let receipt = seq.raw("eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(receipt["result"]["status"], "0x1", "lost {hash}: {receipt}");
    }
    let again = seq.raw("eth_getBlockByNumber", json!([format!("{first_block:#x}"), false])).await
        ["result"]
        .clone();
    assert_eq!(again, early, "history before the checkpoint comes back as it was");
    let receipt = seq.raw("eth_getTransactionReceipt", json!([hashes[0]])).await["result"].clone();
    assert_eq!(receipt, early_receipt, "receipts from the block store are the same");
    let after = seq.raw("eth_getBalance", json!([address(8), "latest"])).await["result"].clone();
    assert_eq!(after, balance);
    let nonce = seq.raw("eth_getTransactionCount", json!([address(8), "latest"])).await;
    assert_eq!(nonce["result"], "0x5");
    // Segments behind the older kept checkpoint are deleted as checkpoints go by.
    let first_segment = dir.path().join("wal").join(format!("wal-{:020}.log", 0));
    for _ in 0..200 {
        if !first_segment.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!first_segment.exists(), "the WAL was never pruned");

    // A damaged checkpoint is not trusted: the start falls back to the one before it.
    seq.kill();
    let damage = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] = bytes[last].wrapping_add(1);
        std::fs::write(path, bytes).unwrap();
    };
    damage(&checkpoint);
    let seq = Sequencer::start_logged(Some(dir.path()), &args, Some(&log));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("ignoring the checkpoint"), "{text}");
    assert!(text.contains("resuming from checkpoint"), "{text}");
    let after = seq.raw("eth_getBalance", json!([address(8), "latest"])).await["result"].clone();
    assert_eq!(after, balance);
    for hash in &hashes {
        let receipt = seq.raw("eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(receipt["result"]["status"], "0x1", "lost {hash}: {receipt}");
    }

    // The damaged checkpoint was moved out of the way; wait for the next one.
    for _ in 0..200 {
        if checkpoint.exists() && dir.path().join("checkpoint.prev.bin").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With both checkpoints damaged and the WAL's start pruned, it refuses to start rather
    // than serve a wrong chain.
    seq.kill();
    damage(&checkpoint);
    damage(&dir.path().join("checkpoint.prev.bin"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sequencer"))
        .args(["--dev", "--rpc-addr", "127.0.0.1:0", "--no-metrics"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--datadir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; a start that serves would run until killed.
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let status = exited.expect("the sequencer started on a chain it cannot rebuild");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("pruned behind a checkpoint"), "{stderr}");
}
