//! The signed feed in DA: a follower that reads nothing but the local archive — checking every
//! signature, decoding every diff against its own state — ends on the sequencer's state, with
//! its transactions, receipts and headers; and a restart publishes the same bytes again.

mod support;

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use feed::{Batch, DaPointer, DaSource, Envelope, LocalArchive, Signer};
use memstate::{DiffCodec, MemState};
use sequencer::{Node, dev::DEV_ACCOUNTS};
use support::*;

/// Reads the archive from genesis like a follower: every envelope opened against the dev
/// signer, every diff decoded against the follower's own state and applied.
fn follow(archive: &LocalArchive, node: &Node) -> MemState {
    let state = MemState::from_genesis(&sequencer::dev::dev_alloc());
    let mut codec = DiffCodec::from_state(&state);
    let head = archive.last().unwrap().expect("the archive holds blocks");
    assert_eq!(head, node.chain.head_number(), "DA holds every sealed block");
    let signer = Signer::dev().address();
    let (mut next_mini, mut parent_mini) = (1u64, B256::ZERO);
    for number in 0..=head {
        let bytes = archive.get(number, &DaPointer::default()).unwrap().expect("no gap");
        let batch = Batch::from_bytes(number, &bytes).unwrap();
        let (last, minis) = batch.envelopes.split_last().unwrap();
        for raw in minis {
            let Envelope::MiniBlock(mini) = Envelope::open(raw, signer, CHAIN_ID).unwrap() else {
                panic!("block {number}: a block envelope before the last")
            };
            assert_eq!(
                (mini.number, mini.block_number, mini.parent_hash),
                (next_mini, number, parent_mini)
            );
            let diff = codec.decode(&mini.diff, &state).unwrap();
            state.apply(&diff);
            for record in &mini.txs {
                let executed = node.chain.tx(&keccak256(&record.raw)).expect("a known transaction");
                assert_eq!(executed.mini_block, mini.number);
                assert_eq!(
                    (record.success, record.gas_used),
                    (executed.success, executed.gas_used)
                );
                assert_eq!(record.logs, executed.logs);
                assert_eq!(record.created(), executed.contract_address);
                assert_eq!(record.sender, executed.tx.sender);
            }
            next_mini += 1;
            parent_mini = mini.hash;
        }
        let Envelope::Block(block) = Envelope::open(last, signer, CHAIN_ID).unwrap() else {
            panic!("block {number}: the last envelope is not the block")
        };
        let sealed = node.chain.block(number).unwrap();
        assert_eq!(block.header, sealed.header);
        assert_eq!(block.hash(), sealed.hash);
        assert_eq!(block.mini_blocks as usize, minis.len());
        let first = if minis.is_empty() { 0 } else { next_mini - minis.len() as u64 };
        assert_eq!(block.first_mini_block, first);
    }
    state
}

#[test]
fn a_follower_rebuilds_the_state_from_the_archive_alone_and_a_restart_republishes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path()), true).unwrap();
    let contract = mixed_workload(&node);
    let fresh = |i: u8| Address::repeat_byte(0xa0 + i);
    node.shutdown();
    let archive = LocalArchive::open(&dir.path().join("archive")).unwrap();
    let followed = follow(&archive, &node);
    assert_eq!(followed.mpt_root(), node.state.mpt_root());
    assert_eq!(followed.storage(&contract, &U256::from(2)), U256::from(22));
    assert_eq!(followed.storage(&contract, &U256::from(1)), U256::ZERO);
    let head = node.chain.head_number();
    assert!(head >= 3, "the load spans blocks");

    // Remove the newest batches, as if the sequencer had died before storing them: the
    // restart replays the WAL and stores them again, byte for byte.
    let newest: Vec<(u64, Vec<u8>)> = (head - 1..=head)
        .map(|n| (n, archive.get(n, &DaPointer::default()).unwrap().unwrap()))
        .collect();
    for (n, _) in &newest {
        std::fs::remove_file(
            dir.path()
                .join("archive")
                .join(format!("{:08}", n / 10_000))
                .join(format!("{n:012}.batch")),
        )
        .unwrap();
    }
    let again = Node::start(config(dir.path()), true).unwrap();
    run(&again, vec![tx(2, 2, TxKind::Call(fresh(3)), 3, Bytes::new(), 21_000)]);
    again.shutdown();
    for (n, bytes) in &newest {
        assert_eq!(&archive.get(*n, &DaPointer::default()).unwrap().unwrap(), bytes, "batch {n}");
    }
    let followed = follow(&archive, &again);
    assert_eq!(followed.mpt_root(), again.state.mpt_root());

    // The full node's follower: the same archive, every root checked against its own NOMT.
    let head = again.chain.head_number();
    let mut node = follower(dir.path(), "nomt-a");
    assert_eq!(node.catch_up(&archive).unwrap(), head + 1);
    assert_eq!(node.next_block(), head + 1);
    assert_eq!(node.state().mpt_root(), again.state.mpt_root());
    for n in 0..=head {
        assert_eq!(node.headers()[n as usize], again.chain.block(n).unwrap().header);
    }
}

fn follower(dir: &std::path::Path, name: &str) -> fullnode::Follower {
    let config = fullnode::FollowerConfig {
        chain_id: CHAIN_ID,
        sequencer: Signer::dev().address(),
        genesis: sequencer::dev::dev_alloc(),
        nomt_buckets: 1024,
        nomt_cache_mib: (64, 64),
    };
    fullnode::Follower::new(config, &dir.join(name)).unwrap()
}

/// Forged, altered, replayed and wrong-root input is refused with its reason; only the wrong
/// root (signed by the sequencer's own key) changes state, and then the follower stops.
#[test]
fn a_follower_refuses_forgeries_replays_and_a_wrong_root() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path()), true).unwrap();
    run(&node, vec![tx(2, 0, TxKind::Call(Address::repeat_byte(0xb1)), 9, Bytes::new(), 21_000)]);
    next_block(&node);
    run(&node, vec![tx(2, 1, TxKind::Call(Address::repeat_byte(0xb2)), 9, Bytes::new(), 21_000)]);
    next_block(&node);
    node.shutdown();
    let archive = LocalArchive::open(&dir.path().join("archive")).unwrap();
    let head = node.chain.head_number();
    let batch = |n: u64| {
        Batch::from_bytes(n, &archive.get(n, &DaPointer::default()).unwrap().unwrap()).unwrap()
    };
    // A mini-block of block 2 offered while block 1's envelope is missing: "ahead", not an
    // error (gossip can lose a message; the batch fills it in).
    {
        let mut g = follower(dir.path(), "nomt-gap");
        g.offer_batch(0, &archive.get(0, &DaPointer::default()).unwrap().unwrap()).unwrap();
        let one = batch(1);
        for e in &one.envelopes[..one.envelopes.len() - 1] {
            assert_eq!(g.offer(e).unwrap(), fullnode::Offer::Applied);
        }
        let two = batch(2);
        assert_eq!(g.offer(&two.envelopes[0]).unwrap(), fullnode::Offer::Ahead);
        assert_eq!(g.offer(&one.envelopes[0]).unwrap(), fullnode::Offer::Stale);
        g.offer_batch(1, &archive.get(1, &DaPointer::default()).unwrap().unwrap()).unwrap();
        assert_eq!(g.offer(&two.envelopes[0]).unwrap(), fullnode::Offer::Applied);
    }
    let mut f = follower(dir.path(), "nomt-b");
    f.offer_batch(0, &archive.get(0, &DaPointer::default()).unwrap().unwrap()).unwrap();
    // Block 1 holds the transfer's mini-block.
    let one = batch(1);
    assert!(one.envelopes.len() >= 2);
    let mini = one.envelopes[0].clone();

    let mut altered = mini.to_vec();
    let at = altered.len() / 2;
    altered[at] ^= 1;
    assert!(matches!(f.apply_signed(&altered), Err(fullnode::FollowError::Envelope(_))));
    let Envelope::MiniBlock(opened) =
        Envelope::open(&mini, Signer::dev().address(), CHAIN_ID).unwrap()
    else {
        panic!("a mini-block")
    };
    let forged = Envelope::MiniBlock(opened.clone()).sign(&Signer::random());
    assert!(matches!(f.apply_signed(&forged), Err(fullnode::FollowError::Envelope(_))));
    // A diff that does not decode (signed by the right key): refused, nothing applied.
    let mut garbage = opened.clone();
    garbage.diff = Bytes::from_static(&[1, 0, 3, 1, 2]);
    let garbage = Envelope::MiniBlock(garbage).sign(&Signer::dev());
    assert!(matches!(f.apply_signed(&garbage), Err(fullnode::FollowError::Diff { .. })));
    // Transactions that are not the mini-block's (another valid one, or bytes that are no
    // transaction), signed by the right key: refused, nothing applied.
    for raw in [
        tx(2, 7, TxKind::Call(Address::repeat_byte(0xb1)), 9, Bytes::new(), 21_000),
        Bytes::from_static(&[0x02, 0xc0]),
    ] {
        let mut other = opened.clone();
        other.txs[0].raw = raw;
        let other = Envelope::MiniBlock(other).sign(&Signer::dev());
        assert!(matches!(f.apply_signed(&other), Err(fullnode::FollowError::Transactions { .. })));
    }
    assert_eq!(
        f.state().mpt_root(),
        MemState::from_genesis(&sequencer::dev::dev_alloc()).mpt_root()
    );
    assert!(f.chain().tx(&alloy_primitives::keccak256(&opened.txs[0].raw)).is_none());
    // A receipt altered under the sequencer's key: the block's signed receipts root exposes it
    // and the follower stops.
    {
        let mut h = follower(dir.path(), "nomt-receipt");
        h.offer_batch(0, &archive.get(0, &DaPointer::default()).unwrap().unwrap()).unwrap();
        let mut altered = opened.clone();
        altered.txs[0].gas_used += 1;
        h.apply_signed(&Envelope::MiniBlock(altered).sign(&Signer::dev())).unwrap();
        for e in &one.envelopes[1..] {
            if let Err(err) = h.apply_signed(e) {
                assert!(
                    matches!(
                        err,
                        fullnode::FollowError::HeaderMismatch { block: 1, field: "receipts root" }
                    ),
                    "{err}"
                );
            }
        }
        assert_eq!(h.next_block(), 1, "block 1 was not accepted");
    }

    f.apply_signed(&mini).unwrap();
    assert!(
        matches!(f.apply_signed(&mini), Err(fullnode::FollowError::OutOfOrder { .. })),
        "a replay"
    );
    for e in &one.envelopes[1..one.envelopes.len() - 1] {
        f.apply_signed(e).unwrap();
    }
    // The block envelope with another state root, signed by the sequencer's key.
    let Envelope::Block(mut block) =
        Envelope::open(one.envelopes.last().unwrap(), Signer::dev().address(), CHAIN_ID).unwrap()
    else {
        panic!("a block")
    };
    block.header.state_root = B256::repeat_byte(0x66);
    let wrong = Envelope::Block(block).sign(&Signer::dev());
    assert!(matches!(
        f.apply_signed(&wrong),
        Err(fullnode::FollowError::RootMismatch { block: 1, .. })
    ));
    assert!(matches!(
        f.apply_signed(one.envelopes.last().unwrap()),
        Err(fullnode::FollowError::Diverged(1))
    ));
    // Readers saw block 1's transaction from its mini-block on, with its receipt.
    let sent = f.chain().tx(&alloy_primitives::keccak256(&opened.txs[0].raw)).unwrap();
    assert_eq!(sent.gas_used, 21_000);
    assert!(sent.success);
    assert!(head >= 1);
}

fn listen_addr(net: &p2p::P2p) -> p2p::Address {
    for _ in 0..200 {
        if let Some(addr) = net.listening().unwrap().into_iter().next() {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not listening")
}

/// A libp2p node on a free loopback port that dials `peer`.
fn loopback_p2p(
    rt: &tokio::runtime::Runtime,
    peer: p2p::Address,
) -> (p2p::P2p, std::sync::mpsc::Receiver<p2p::Event>) {
    let config = p2p::P2pConfig {
        chain_id: CHAIN_ID,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: vec![peer],
    };
    p2p::P2p::start(rt.handle(), p2p::random_key(), config, None).unwrap()
}

/// A full node's follower (its NOMT in `dir/name`) and its libp2p node, connected to `peer`;
/// [`run_until`] makes it follow.
fn follow_over_p2p(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    name: &'static str,
    peer: p2p::Address,
) -> (p2p::P2p, std::sync::mpsc::Receiver<p2p::Event>, fullnode::Follower) {
    let (net, events) = loopback_p2p(rt, peer);
    (net, events, follower(dir, name))
}

fn run_until(
    f: &mut fullnode::Follower,
    net: &p2p::P2p,
    events: &std::sync::mpsc::Receiver<p2p::Event>,
    block: u64,
) {
    let started = std::time::Instant::now();
    fullnode::follow_network(f, net, events, |f| {
        f.next_block() > block || started.elapsed() > Duration::from_secs(60)
    })
    .unwrap();
    assert!(f.next_block() > block, "block {block} not reached; at {}", f.next_block());
}

/// Two full nodes follow over libp2p under a mixed load, one joining late (catching up by
/// request-response); both report the sequencer's header, root and balances at every block,
/// while a third peer injecting forged and garbage envelopes is rejected and banned.
#[test]
fn two_full_nodes_follow_over_p2p_and_a_forging_peer_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path()), true).unwrap();
    let addr = listen_addr(&node.p2p().expect("p2p on"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (net_a, events_a, mut a) = follow_over_p2p(&rt, dir.path(), "nomt-p2p-a", addr.clone());
    let deployer = DEV_ACCOUNTS[1].0;
    let contract = deployer.create(0);
    run(
        &node,
        vec![
            tx(1, 0, TxKind::Create, 0, init_code(), 200_000),
            tx(2, 0, TxKind::Call(Address::repeat_byte(0xc1)), 1_000, Bytes::new(), 21_000),
        ],
    );
    next_block(&node);
    run(
        &node,
        vec![
            tx(1, 1, TxKind::Call(contract), 0, store_call(5, 55), 100_000),
            tx(3, 0, TxKind::Call(DEV_ACCOUNTS[4].0), 7, Bytes::new(), 21_000),
        ],
    );
    next_block(&node);
    let target = node.chain.head_number();
    run_until(&mut a, &net_a, &events_a, target);

    // The forger: connected to follower A, gossiping envelopes A must reject.
    let (forger, _forger_events) = loopback_p2p(&rt, listen_addr(&net_a));
    let archive = LocalArchive::open(&dir.path().join("archive")).unwrap();
    let real =
        Batch::from_bytes(1, &archive.get(1, &DaPointer::default()).unwrap().unwrap()).unwrap();
    let Envelope::MiniBlock(mini) =
        Envelope::open(&real.envelopes[0], Signer::dev().address(), CHAIN_ID).unwrap()
    else {
        panic!("a mini-block")
    };
    let mut banned = false;
    let started = std::time::Instant::now();
    let mut i = 0u64;
    while !banned && started.elapsed() < Duration::from_secs(30) {
        // A future mini-block signed by a stranger, then plain garbage.
        let mut forged = mini.clone();
        forged.number = 1_000 + i;
        forger.publish(
            p2p::Topic::MiniBlocks,
            Envelope::MiniBlock(forged).sign(&Signer::random()).to_vec(),
        );
        forger.publish(p2p::Topic::Blocks, format!("garbage {i}").into_bytes());
        i += 1;
        let until = std::time::Instant::now() + Duration::from_millis(300);
        fullnode::follow_network(&mut a, &net_a, &events_a, |_| std::time::Instant::now() > until)
            .unwrap();
        banned = !net_a.peers().unwrap().contains(&forger.peer_id()) && i > 1;
    }
    assert!(banned, "the forging peer is still connected");

    // More load; A keeps following, and B joins late and catches up.
    run(
        &node,
        vec![
            tx(1, 2, TxKind::Call(contract), 0, store_call(5, 0), 100_000),
            tx(2, 1, TxKind::Call(DEV_ACCOUNTS[5].0), 3, Bytes::new(), 21_000),
        ],
    );
    next_block(&node);
    let target = node.chain.head_number();
    run_until(&mut a, &net_a, &events_a, target);
    let (net_b, events_b, mut b) = follow_over_p2p(&rt, dir.path(), "nomt-p2p-b", addr);
    run_until(&mut b, &net_b, &events_b, target);
    for f in [&a, &b] {
        for n in 0..=target {
            assert_eq!(f.headers()[n as usize], node.chain.block(n).unwrap().header, "block {n}");
        }
        for who in [DEV_ACCOUNTS[2].0, DEV_ACCOUNTS[5].0, Address::repeat_byte(0xc1)] {
            assert_eq!(
                f.state().account(&who).map(|x| x.balance),
                node.state.account(&who).map(|x| x.balance)
            );
        }
        assert_eq!(f.state().storage(&contract, &U256::from(5)), U256::ZERO);
    }
    node.shutdown();
}

/// With `feed.da = "eigenda"` every block's batch goes to the proxy, its certificate into the
/// pointer log, and a follower that joins late is served those batches back through the proxy.
#[test]
fn with_eigenda_batches_go_to_the_proxy_and_followers_catch_up_from_it() {
    let proxy = feed::testing::fake_proxy();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.feed.da = sequencer::config::DaBackend::Eigenda;
    config.feed.eigenda_url = Some(proxy.url.clone());
    let node = Node::start(config, true).unwrap();
    run(&node, vec![tx(2, 0, TxKind::Call(Address::repeat_byte(0xd1)), 5, Bytes::new(), 21_000)]);
    next_block(&node);
    let target = node.chain.head_number();
    let addr = listen_addr(&node.p2p().expect("p2p on"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (net, events, mut f) = follow_over_p2p(&rt, dir.path(), "nomt-eigenda", addr);
    run_until(&mut f, &net, &events, target);
    assert_eq!(f.headers()[target as usize], node.chain.block(target).unwrap().header);
    node.shutdown();
    let head = node.chain.head_number();
    let log = feed::PointerLog::open(&dir.path().join("da-pointers")).unwrap();
    assert_eq!(log.last(), Some(head));
    assert!(*proxy.puts.lock().unwrap() as u64 > head, "one blob per block");
    // Batches go to EigenDA only; the local archive directory holds the witnesses.
    let archive = LocalArchive::open(&dir.path().join("archive")).unwrap();
    assert_eq!(archive.last().unwrap(), None, "no batch in a local archive");
    let witnesses = LocalArchive::witnesses(&dir.path().join("archive")).unwrap();
    assert_eq!(witnesses.last().unwrap(), Some(head), "a witness per block");
}
