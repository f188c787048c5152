//! The `prover` binary following the `sequencer` binary over libp2p: it verifies each block
//! from its witness and the sequencer records the signed verdicts, served by
//! `sequencer_blockVerdict`.

use std::{process::Command, time::Duration};

use alloy_primitives::U256;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_prover_verifies_the_blocks_and_the_sequencer_records_its_verdicts() {
    let seq = Sequencer::start(&["--block-time", "200ms"]);
    // Transfers spread over a few blocks.
    for i in 0..6u64 {
        let raw = eip1559(3, i, address(4), U256::from(1 + i), 21_000, gwei(20), gwei(1), CHAIN_ID);
        let response = seq.raw("realtime_sendRawTransaction", json!([raw])).await;
        assert_eq!(response["result"]["status"], "0x1", "{response}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let head = loop {
        let n = seq.raw("eth_blockNumber", json!([])).await;
        let n = u64::from_str_radix(n["result"].as_str().unwrap().trim_start_matches("0x"), 16)
            .unwrap();
        if n >= 5 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The prover starts while the chain goes on: the old blocks' witnesses it asks for, the
    // new ones arrive by gossip with their blocks.
    let to = head + 6;
    let mut cmd = Command::new(workspace_bin("prover"));
    cmd.args(["run", "--dev", "--to", &to.to_string(), "--threads", "2"]);
    for addr in &seq.p2p {
        cmd.args(["--bootstrap", addr]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches(": valid, verdict sent").count() as u64, to, "{stdout}");
    assert!(stdout.contains("witness by gossip"), "{stdout}");
    let head = to;

    let mut with_txs = 0;
    for n in 1..=head {
        let answer = seq.raw("sequencer_blockVerdict", json!([format!("{n:#x}")])).await;
        let verdicts = answer["result"]["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 1, "block {n}: {answer}");
        assert_eq!(verdicts[0]["valid"], true);
        assert_eq!(verdicts[0]["postRoot"], answer["result"]["stateRoot"]);
        let block = seq.raw("eth_getBlockByNumber", json!([format!("{n:#x}"), false])).await;
        with_txs += usize::from(!block["result"]["transactions"].as_array().unwrap().is_empty());
    }
    assert!(with_txs >= 2, "the verified blocks hold the transfers");
    // Not sealed yet: no block, no verdicts.
    let later = seq.raw("sequencer_blockVerdict", json!(["0xffffff"])).await;
    assert!(later["result"].is_null(), "{later}");
}
