//! Stateless verification of the sequencer's blocks from its DA archive and witnesses: blocks
//! of a mixed workload verify, in any order with the same verdicts, and each kind of tampering
//! is caught with its own reason.

mod support;

use alloy_primitives::{Address, Bytes, U256};
use memstate::witness::Witness;
use prover::{BlockInput, Reason, Verdict, archive::Archive, verify_block};
use sequencer::Node;
use support::*;

fn rules(node: &Node) -> chain_rpc::evm::ChainRules {
    node.rules
}

/// A sequencer that ran a mixed workload over several blocks ([`mixed_workload`]), then
/// stopped.
fn chain() -> (tempfile::TempDir, std::sync::Arc<Node>, Archive, u64) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path()), true).unwrap();
    mixed_workload(&node);
    next_block(&node);
    node.shutdown();
    let head = node.chain.head_number();
    let archive =
        Archive::open(&dir.path().join("archive"), feed::Signer::dev().address(), CHAIN_ID)
            .unwrap();
    (dir, node, archive, head)
}

fn verdicts(node: &Node, archive: &Archive, order: &[u64]) -> Vec<Verdict> {
    let mut out: Vec<Verdict> =
        order.iter().map(|n| verify_block(rules(node), &archive.input(*n).unwrap())).collect();
    out.sort_by_key(|v| v.block);
    out
}

#[test]
fn blocks_verify_from_their_witnesses_in_any_order() {
    let (_dir, node, archive, head) = chain();
    let forward: Vec<u64> = (1..=head).collect();
    let ours = verdicts(&node, &archive, &forward);
    for v in &ours {
        assert!(v.is_valid(), "block {}: {:?}", v.block, v.outcome);
        let sealed = node.chain.block(v.block).unwrap();
        assert_eq!((v.block_hash, v.post_root), (sealed.hash, sealed.header.state_root));
    }
    let with_txs = (1..=head).filter(|n| !node.chain.block(*n).unwrap().txs.is_empty()).count();
    assert!(with_txs >= 3, "the workload spans blocks");
    let reverse: Vec<u64> = forward.iter().rev().copied().collect();
    assert_eq!(verdicts(&node, &archive, &reverse), ours);
    let mut shuffled = forward.clone();
    shuffled.sort_by_key(|n| (n * 7919) % 13);
    assert_eq!(verdicts(&node, &archive, &shuffled), ours);
    // Concurrently, as the prover's workers do.
    let parallel: Vec<Verdict> = std::thread::scope(|s| {
        let handles: Vec<_> = forward
            .iter()
            .map(|n| {
                let (archive, node) = (&archive, &node);
                s.spawn(move || verify_block(rules(node), &archive.input(*n).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(parallel, ours);
}

/// The block with the most transactions, and its input.
fn busiest(node: &Node, archive: &Archive, head: u64) -> BlockInput {
    let n = (1..=head).max_by_key(|n| node.chain.block(*n).unwrap().txs.len()).unwrap();
    archive.input(n).unwrap()
}

fn reason(node: &Node, input: &BlockInput) -> Reason {
    verify_block(rules(node), input).outcome.expect_err("tampering must be caught")
}

fn rewitness(input: &BlockInput, change: impl FnOnce(&mut Witness)) -> BlockInput {
    let mut witness = Witness::decode(&input.witness).unwrap();
    change(&mut witness);
    BlockInput { witness: Bytes::from(witness.encode()), ..input.clone() }
}

#[test]
fn tampering_is_caught_each_time_with_its_own_reason() {
    let (_dir, node, archive, head) = chain();
    let input = busiest(&node, &archive, head);
    assert!(input.txs.len() >= 3);
    assert!(verify_block(rules(&node), &input).is_valid());

    // A changed balance in the witness.
    let changed = rewitness(&input, |w| {
        let entry = w.accounts.iter_mut().find_map(|(_, d)| d.as_mut()).unwrap();
        entry.balance += U256::from(1);
    });
    let Reason::Witness(why) = reason(&node, &changed) else { panic!() };
    assert!(why.contains("does not match the parent state root"), "{why}");

    // A dropped witness entry (the first sender's account): a read outside the witness.
    let sender = input.txs[0].sender;
    let dropped = rewitness(&input, |w| w.accounts.retain(|(a, _)| *a != sender));
    let Reason::Witness(why) = reason(&node, &dropped) else { panic!() };
    assert!(why.contains("read outside the witness"), "{why}");

    // A wrong post-state root in the header.
    let mut wrong_root = input.clone();
    wrong_root.header.state_root.0[0] ^= 1;
    assert!(matches!(reason(&node, &wrong_root), Reason::StateRoot { .. }));

    // Two transactions swapped, of senders with one transaction each in the block (so each
    // still executes).
    let once = |i: usize| input.txs.iter().filter(|t| t.sender == input.txs[i].sender).count() == 1;
    let (i, j) = (0..input.txs.len())
        .flat_map(|i| (i + 1..input.txs.len()).map(move |j| (i, j)))
        .find(|&(i, j)| once(i) && once(j))
        .unwrap();
    let mut reordered = input.clone();
    reordered.txs.swap(i, j);
    assert_eq!(reason(&node, &reordered), Reason::Header("transactions root"));

    // A forged receipt.
    let mut forged = input.clone();
    forged.txs[1].gas_used -= 1;
    assert_eq!(reason(&node, &forged), Reason::Receipt { index: 1, field: "gas used" });

    // A sender that did not sign the transaction.
    let mut impostor = input.clone();
    impostor.txs[0].sender = Address::repeat_byte(0x77);
    assert!(matches!(reason(&node, &impostor), Reason::Transaction { index: 0, .. }));

    // Another parent root (a witness from elsewhere).
    let mut elsewhere = input.clone();
    elsewhere.parent_root.0[31] ^= 1;
    let Reason::Witness(why) = reason(&node, &elsewhere) else { panic!() };
    assert!(why.contains("proof does not verify"), "{why}");

    // Garbage for a witness.
    let garbage = BlockInput { witness: Bytes::from_static(&[1, 2, 3]), ..input.clone() };
    assert!(matches!(reason(&node, &garbage), Reason::Witness(_)));
}
