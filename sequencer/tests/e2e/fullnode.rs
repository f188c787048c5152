//! The `fullnode` binary following the `sequencer` binary over libp2p on loopback, checked
//! through both processes' JSON-RPC as a client would: the same blocks (state roots included),
//! balances, code, storage and receipts; transactions sent to a full node reach the sequencer;
//! a full node killed and restarted catches up.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use alloy_network::TransactionBuilder;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_provider::{Provider, ProviderBuilder, WsConnect};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::{SolCall, SolValue, sol};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

sol! {
    function transfer(address to, uint256 amount) external returns (bool);
}

/// A full node process, killed when dropped.
struct FullNode {
    child: Child,
    url: String,
    addr: String,
}

impl FullNode {
    fn start(seq: &Sequencer, datadir: &Path) -> Self {
        let mut cmd = Command::new(workspace_bin("fullnode"));
        cmd.args(["--dev", "--rpc-addr", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--sequencer-rpc", &seq.url])
            .arg("--datadir")
            .arg(datadir);
        for addr in &seq.p2p {
            cmd.args(["--bootstrap", addr]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn fullnode");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("JSON-RPC on http://") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("fullnode did not start");
        Self { child, url: format!("http://{addr}"), addr }
    }

    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for FullNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn result(url: &str, method: &str, params: Value) -> Value {
    let response = rpc(url, method, params).await;
    assert!(response.get("error").is_none(), "{method} at {url}: {response}");
    response["result"].clone()
}

async fn block_number(url: &str) -> u64 {
    let n = result(url, "eth_blockNumber", json!([])).await;
    u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Waits until the node at `url` has applied block `number`.
async fn wait_for(url: &str, number: u64) {
    for _ in 0..600 {
        if block_number(url).await >= number {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not reach block {number}");
}

/// Waits until every sent transaction is in a sealed block at the sequencer; returns its head.
async fn settled(seq: &Sequencer, hashes: &[B256]) -> u64 {
    for hash in hashes {
        for attempt in 0.. {
            let receipt = result(&seq.url, "eth_getTransactionReceipt", json!([hash])).await;
            if receipt.is_object() {
                break;
            }
            assert!(attempt < 400, "{hash} was not executed");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // The block holding the last one is sealed once the head moves past it.
    let head = block_number(&seq.url).await + 1;
    wait_for(&seq.url, head).await;
    head
}

/// Every block up to `head`, every receipt and the state of `accounts` (balance, nonce, code,
/// the first storage slots) read from `node` equal what the sequencer answers.
async fn same_as_sequencer(
    seq: &Sequencer,
    node: &FullNode,
    head: u64,
    txs: &[B256],
    accounts: &[Address],
) {
    wait_for(&node.url, head).await;
    for n in 0..=head {
        let ours =
            result(&node.url, "eth_getBlockByNumber", json!([format!("{n:#x}"), true])).await;
        let theirs =
            result(&seq.url, "eth_getBlockByNumber", json!([format!("{n:#x}"), true])).await;
        assert_eq!(ours, theirs, "block {n}");
        assert!(ours["stateRoot"].is_string());
    }
    for hash in txs {
        let ours = result(&node.url, "eth_getTransactionReceipt", json!([hash])).await;
        let theirs = result(&seq.url, "eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(ours, theirs, "receipt of {hash}");
        let ours = result(&node.url, "eth_getTransactionByHash", json!([hash])).await;
        let theirs = result(&seq.url, "eth_getTransactionByHash", json!([hash])).await;
        assert_eq!(ours, theirs, "transaction {hash}");
    }
    for account in accounts {
        for (method, extra) in [
            ("eth_getBalance", None),
            ("eth_getTransactionCount", None),
            ("eth_getCode", None),
            ("eth_getStorageAt", Some(0)),
            ("eth_getStorageAt", Some(1)),
            ("eth_getStorageAt", Some(2)),
        ] {
            let params = match extra {
                Some(slot) => json!([account, format!("{slot:#x}"), "latest"]),
                None => json!([account, "latest"]),
            };
            let ours = result(&node.url, method, params.clone()).await;
            let theirs = result(&seq.url, method, params).await;
            assert_eq!(ours, theirs, "{method} of {account}");
        }
    }
}

/// A signed call of `to` with `input` from a dev account.
fn signed_call(account: usize, nonce: u64, to: Address, input: Bytes) -> Bytes {
    sign(
        account,
        alloy_consensus::TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: 100_000,
            max_fee_per_gas: gwei(20),
            max_priority_fee_per_gas: gwei(1),
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_full_nodes_follow_the_sequencer_process_and_a_restarted_one_catches_up() {
    let seq = Sequencer::start(&["--block-time", "200ms"]);
    let dirs = tempfile::tempdir().unwrap();
    let a = FullNode::start(&seq, &dirs.path().join("a"));
    let b = FullNode::start(&seq, &dirs.path().join("b"));
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(format!("ws://{}", a.addr)))
        .await
        .unwrap();
    let mut heads = ws.subscribe_blocks().await.unwrap().into_stream();
    // Both have caught up with the chain so far (a wallet's fee estimate needs a block).
    let now = block_number(&seq.url).await.max(1);
    wait_for(&a.url, now).await;
    wait_for(&b.url, now).await;

    // A token, deployed through full node `a` (forwarded to the sequencer).
    let deployer = ProviderBuilder::new()
        .wallet(alloy_network::EthereumWallet::from(signer(2)))
        .connect_http(a.url.parse().unwrap());
    let mut code = token_creation_code().to_vec();
    code.extend(
        ("Test Token".to_string(), "TT".to_string(), U256::from(1_000_000u64)).abi_encode_params(),
    );
    let receipt = deployer
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let token = receipt.contract_address.expect("deployed");
    let mut txs = vec![receipt.transaction_hash];

    // Mixed load: transfers to the sequencer, to `a` and to `b`; token transfers; a realtime
    // submission through `b`.
    let recipients: Vec<Address> = (0..4).map(|i| Address::repeat_byte(0x40 + i)).collect();
    let mut nonces = [0u64; 10];
    nonces[2] = 1;
    let urls = [seq.url.clone(), a.url.clone(), b.url.clone()];
    for round in 0..6u64 {
        for account in [3usize, 4, 5] {
            let to = recipients[(round as usize + account) % recipients.len()];
            let raw = eip1559(
                account,
                nonces[account],
                to,
                U256::from(1_000 + round),
                21_000,
                gwei(20),
                gwei(1),
                CHAIN_ID,
            );
            nonces[account] += 1;
            let url = &urls[(round as usize + account) % urls.len()];
            let hash = result(url, "eth_sendRawTransaction", json!([raw])).await;
            txs.push(serde_json::from_value(hash).unwrap());
        }
        let input = transferCall { to: recipients[round as usize % 4], amount: U256::from(7) }
            .abi_encode()
            .into();
        let raw = signed_call(2, nonces[2], token, input);
        nonces[2] += 1;
        txs.push(
            serde_json::from_value(result(&urls[1], "eth_sendRawTransaction", json!([raw])).await)
                .unwrap(),
        );
    }
    // The full node counts what it forwarded as pending.
    let pending = result(&a.url, "eth_getTransactionCount", json!([address(2), "pending"])).await;
    assert_eq!(pending, json!(format!("{:#x}", nonces[2])));
    let raw = eip1559(6, 0, recipients[0], U256::from(5), 21_000, gwei(20), gwei(1), CHAIN_ID);
    let receipt = result(&b.url, "realtime_sendRawTransaction", json!([raw])).await;
    assert_eq!(receipt["status"], "0x1");
    txs.push(serde_json::from_value(receipt["transactionHash"].clone()).unwrap());
    // Garbage sent to a full node gets the sequencer's error.
    let refused = rpc(&a.url, "eth_sendRawTransaction", json!(["0x02c0"])).await;
    assert_eq!(refused["error"]["code"], -32000, "{refused}");

    let head = settled(&seq, &txs).await;
    let mut accounts: Vec<Address> = (0..8).map(address).collect();
    accounts.extend(&recipients);
    accounts.push(token);
    same_as_sequencer(&seq, &a, head, &txs, &accounts).await;
    same_as_sequencer(&seq, &b, head, &txs, &accounts).await;
    // The full node's newHeads are the sequencer's blocks.
    let pushed =
        tokio::time::timeout(Duration::from_secs(10), heads.next()).await.unwrap().unwrap();
    let at_seq =
        result(&seq.url, "eth_getBlockByNumber", json!([format!("{:#x}", pushed.number), false]))
            .await;
    assert_eq!(at_seq["hash"], json!(pushed.hash));

    // `b` goes down; the chain goes on; `b` comes back and catches up.
    b.kill();
    for i in 0..5u64 {
        let raw = eip1559(7, i, recipients[1], U256::from(9), 21_000, gwei(20), gwei(1), CHAIN_ID);
        txs.push(
            serde_json::from_value(result(&seq.url, "eth_sendRawTransaction", json!([raw])).await)
                .unwrap(),
        );
    }
    let head = settled(&seq, &txs).await;
    accounts.push(address(7));
    let b = FullNode::start(&seq, &dirs.path().join("b"));
    same_as_sequencer(&seq, &b, head, &txs, &accounts).await;
    same_as_sequencer(&seq, &a, head, &txs, &accounts).await;
}
