//! The `prover` binary following the `sequencer` binary over libp2p: it verifies each block
//! from its witness and the sequencer records the signed verdicts, served by
//! `sequencer_blockVerdict`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

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
    // The prover follows the chain as it goes on: the blocks sealed before it subscribed it
    // asks witnesses for; later ones' witnesses arrive by gossip with their blocks. It runs
    // until it has verified the blocks above and taken a witness from gossip.
    let mut cmd = Command::new(workspace_bin("prover"));
    cmd.args(["run", "--dev", "--threads", "2"]);
    for addr in &seq.p2p {
        cmd.args(["--bootstrap", addr]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let lines = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (mut lines, mut verified, mut gossiped) = (Vec::new(), Vec::new(), false);
        while !(gossiped && (1..=head).all(|n| verified.contains(&n))) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else { break };
            if line.contains(": valid, verdict sent") {
                let number = line.strip_prefix("block ").and_then(|l| l.split(':').next());
                verified.extend(number.and_then(|n| n.parse::<u64>().ok()));
            }
            gossiped |= line.contains("witness by gossip");
            lines.push(line);
        }
        lines
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(!text.contains("INVALID") && !text.contains("NOT acknowledged"), "{text}");
    assert!(text.contains("witness by gossip"), "{text}");
    assert!(text.matches(": valid, verdict sent").count() as u64 >= head, "{text}");

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
