//! What the library-level tests share: the dev chain's keys, signed transactions, a contract
//! with storage, and a sequencer configuration with short blocks.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use alloy_consensus::TxEip1559;
use alloy_primitives::{B256, Bytes, TxKind, U256};
use secp256k1::SecretKey;
use sequencer::{Config, Node, dev::DEV_ACCOUNTS};

pub const CHAIN_ID: u64 = 31337;

/// Init code of a contract whose runtime stores `calldata[32..64]` at slot `calldata[0..32]`
/// (`PUSH1 32 CALLDATALOAD PUSH1 0 CALLDATALOAD SSTORE STOP`); the constructor stores 42 at
/// slot 0.
pub const STORE_INIT: [&str; 4] = [
    "602a600055",       // SSTORE(0, 42)
    "60086011600039",   // CODECOPY(0, 17, 8): the runtime below
    "60086000f3",       // RETURN(0, 8)
    "6020356000355500", // runtime: SSTORE(CALLDATALOAD(0), CALLDATALOAD(32))
];

pub fn init_code() -> Bytes {
    hex::decode(STORE_INIT.concat()).unwrap().into()
}

pub fn key(account: usize) -> SecretKey {
    SecretKey::from_byte_array(DEV_ACCOUNTS[account].1.0).unwrap()
}

pub fn tx(account: usize, nonce: u64, to: TxKind, value: u64, input: Bytes, gas: u64) -> Bytes {
    sequencer::dev::sign(
        &key(account),
        TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: 20_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to,
            value: U256::from(value),
            access_list: Default::default(),
            input,
        },
    )
}

pub fn store_call(slot: u64, value: u64) -> Bytes {
    [B256::from(U256::from(slot)).0, B256::from(U256::from(value)).0].concat().into()
}

/// Submits `raws` and waits until each is executed.
pub fn run(node: &Arc<Node>, raws: Vec<Bytes>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for raw in raws {
        let hash = node.submit_raw(raw).unwrap();
        let executed = runtime.block_on(node.wait_for_receipt(hash, Duration::from_secs(20)));
        assert!(executed.is_some_and(|t| t.success), "{hash} failed or was not executed");
    }
}

/// Waits until the block open now is sealed, so that the next transactions land in another
/// block (and their diffs refer to keys the earlier blocks created).
pub fn next_block(node: &Node) {
    let open = node.chain.head_number() + 1;
    for _ in 0..200 {
        if node.chain.head_number() >= open {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("block {open} was not sealed");
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.storage.datadir = Some(dir.to_path_buf());
    config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.blocks.evm_block_interval = Duration::from_millis(100);
    config
}

/// A mixed workload over three blocks on `node`: a deployment with constructor storage (the
/// contract it returns), new accounts, slots written, overwritten and deleted, and transfers
/// between known accounts in between. Each of the first two runs ends its block.
pub fn mixed_workload(node: &Arc<Node>) -> alloy_primitives::Address {
    use alloy_primitives::Address;
    let contract = DEV_ACCOUNTS[1].0.create(0);
    let fresh = |i: u8| Address::repeat_byte(0xa0 + i);
    run(
        node,
        vec![
            tx(1, 0, TxKind::Create, 0, init_code(), 200_000),
            tx(2, 0, TxKind::Call(fresh(1)), 1_000, Bytes::new(), 21_000),
            tx(3, 0, TxKind::Call(DEV_ACCOUNTS[4].0), 7, Bytes::new(), 21_000),
        ],
    );
    next_block(node);
    run(
        node,
        vec![
            tx(1, 1, TxKind::Call(contract), 0, store_call(1, 11), 100_000),
            tx(1, 2, TxKind::Call(contract), 0, store_call(2, 22), 100_000),
            tx(2, 1, TxKind::Call(fresh(2)), 5, Bytes::new(), 21_000),
            tx(3, 1, TxKind::Call(fresh(3)), 5, Bytes::new(), 21_000),
        ],
    );
    next_block(node);
    run(
        node,
        vec![
            tx(1, 3, TxKind::Call(contract), 0, store_call(1, 0), 100_000),
            tx(1, 4, TxKind::Call(contract), 0, store_call(0, 43), 100_000),
            tx(4, 0, TxKind::Call(DEV_ACCOUNTS[3].0), 9, Bytes::new(), 21_000),
            tx(5, 0, TxKind::Call(fresh(4)), 9, Bytes::new(), 21_000),
        ],
    );
    contract
}
