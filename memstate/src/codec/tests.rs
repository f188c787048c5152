use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use proptest::prelude::*;
use revm::state::Bytecode;

use super::*;
use crate::{AccountData, AccountDiff, MemState, StateDiff};

/// Test addresses spread over the key space, so that ranks are not just their index.
fn address(i: u8) -> Address {
    Address::from_slice(&keccak256([i])[..20])
}

fn slot(i: u8) -> U256 {
    // Small slots (a contract's own variables) and hashed ones (mappings), as in real storage.
    if i < 8 { U256::from(i) } else { U256::from_be_bytes(keccak256([i, 0xaa]).0) }
}

fn codes() -> Vec<Bytecode> {
    vec![
        Bytecode::new_raw(Bytes::from_static(&[0x60, 0x01, 0x60, 0x02, 0x01, 0x00])),
        Bytecode::new_raw(Bytes::from_static(&[0x5b, 0x60, 0x00, 0x56])),
        Bytecode::new_eip7702(Address::repeat_byte(0x77)),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Update {
        nonce: u64,
        balance: U256,
        code: Option<(usize, bool)>,
        cleared: bool,
        storage: Vec<(u8, U256)>,
    },
    Delete,
}

fn value() -> impl Strategy<Value = U256> {
    prop_oneof![
        3 => (0u64..5).prop_map(U256::from),
        3 => any::<u64>().prop_map(U256::from),
        1 => any::<[u8; 32]>().prop_map(U256::from_be_bytes),
        1 => Just(U256::MAX),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            0u64..4,
            value(),
            prop::option::weighted(0.2, (0usize..3, any::<bool>())),
            prop::bool::weighted(0.1),
            prop::collection::vec((0u8..16, value()), 0..5),
        )
            .prop_map(|(nonce, balance, code, cleared, storage)| Op::Update {
                nonce,
                balance,
                code,
                cleared,
                storage
            }),
        1 => Just(Op::Delete),
    ]
}

fn diff_of(ops: &[(u8, Op)]) -> StateDiff {
    let codes = codes();
    let mut diff = StateDiff::default();
    for (who, op) in ops {
        let change = match op {
            Op::Delete => {
                AccountDiff { info: None, storage_cleared: false, storage: BTreeMap::new() }
            }
            Op::Update { nonce, balance, code, cleared, storage } => {
                let code_hash = match code {
                    Some((i, ship)) => {
                        let code = &codes[*i];
                        if *ship {
                            diff.codes.insert(code.hash_slow(), code.clone());
                        }
                        code.hash_slow()
                    }
                    None => crate::KECCAK_EMPTY,
                };
                AccountDiff {
                    info: Some(AccountData { nonce: *nonce, balance: *balance, code_hash }),
                    storage_cleared: *cleared,
                    storage: storage.iter().map(|(s, v)| (slot(*s), *v)).collect(),
                }
            }
        };
        diff.accounts.insert(address(*who), change);
    }
    diff
}

fn diffs() -> impl Strategy<Value = Vec<StateDiff>> {
    prop::collection::vec(prop::collection::vec((0u8..24, op()), 0..12), 1..8)
        .prop_map(|all| all.iter().map(|ops| diff_of(ops)).collect())
}

/// The index's content, to compare with one rebuilt from the state.
fn content(index: &mut KeyIndex) -> (Vec<Address>, BTreeMap<Address, Vec<U256>>) {
    let accounts = (0..index.account_count()).map(|i| index.accounts.select(i).unwrap()).collect();
    let slots = index
        .slots
        .iter_mut()
        .map(|(a, set)| (*a, (0..set.len()).map(|i| set.select(i).unwrap()).collect()))
        .collect();
    (accounts, slots)
}

/// The same message with its payload stored rather than compressed, so that mutations reach
/// the payload parser instead of stopping at the decompressor.
fn stored(message: &[u8]) -> Vec<u8> {
    let mut r = wire::Reader::new(message, "test");
    let (_, kind, len) = (r.byte().unwrap(), r.byte().unwrap(), r.varint().unwrap());
    let body = r.bytes(r.remaining()).unwrap();
    let payload = if kind == KIND_STORED {
        body.to_vec()
    } else {
        zstd::bulk::Decompressor::with_dictionary(DICTIONARY)
            .unwrap()
            .decompress(body, len as usize)
            .unwrap()
    };
    let mut out = vec![FORMAT_VERSION, KIND_STORED];
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

/// A sender and a receiver that both start at the first diff's state, and the messages of
/// the others.
fn stream(all: &[StateDiff]) -> (MemState, MemState, DiffCodec, DiffCodec) {
    let (sender, receiver) = (MemState::new(), MemState::new());
    sender.apply(&all[0]);
    receiver.apply(&all[0]);
    let enc = DiffCodec::from_state(&sender);
    let dec = DiffCodec::from_state(&receiver);
    (sender, receiver, enc, dec)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Encode → decode is the identity over a stream of diffs, and both indexes stay equal to
    /// the one rebuilt from the state.
    #[test]
    fn encode_then_decode_is_the_identity(all in diffs()) {
        let (sender, receiver, mut enc, mut dec) = stream(&all);
        for diff in &all[1..] {
            let message = enc.encode(diff, &sender).unwrap();
            sender.apply(diff);
            let got = dec.decode(&message, &receiver).unwrap();
            prop_assert_eq!(&got, diff);
            receiver.apply(&got);
        }
        let rebuilt = content(&mut KeyIndex::from_state(&receiver));
        prop_assert_eq!(content(&mut dec.index.clone()), rebuilt.clone());
        prop_assert_eq!(content(&mut enc.index.clone()), rebuilt);
    }

    /// A full node's fused step gives what decoding and then applying give: the same diff,
    /// the same wiped slots and the same state, message after message.
    #[test]
    fn decode_apply_is_decode_then_apply(all in diffs()) {
        let (sender, receiver, mut enc, mut dec) = stream(&all);
        let fused = MemState::new();
        fused.apply(&all[0]);
        let mut fused_dec = DiffCodec::from_state(&fused);
        for diff in &all[1..] {
            let message = enc.encode(diff, &sender).unwrap();
            sender.apply(diff);
            let got = dec.decode(&message, &receiver.view()).unwrap();
            let wiped = receiver.apply(&got);
            let (fused_got, fused_wiped) = fused_dec.decode_apply(&message, &fused).unwrap();
            prop_assert_eq!(&fused_got, &got);
            prop_assert_eq!(fused_wiped, wiped);
            prop_assert_eq!(fused.mpt_root(), receiver.mpt_root());
        }
        prop_assert_eq!(fused.mpt_root(), sender.mpt_root());
    }

    /// Truncated, flipped, extended and spliced messages never panic; a message that fails
    /// leaves the index where it was, and through `decode_apply` the state too.
    #[test]
    fn mutated_messages_fail_cleanly(
        all in diffs(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
        compressed in any::<bool>(),
    ) {
        let (sender, receiver, mut enc, dec) = stream(&all);
        let diff = &all[all.len() - 1];
        let message = enc.encode(diff, &sender).unwrap();
        let mut bytes = if compressed { message } else { stored(&message) };
        for (at, byte, how) in edits {
            let i = at.index(bytes.len().max(1));
            match how {
                0 => bytes.truncate(i),
                1 if !bytes.is_empty() => bytes[i] ^= byte | 1,
                2 => bytes.insert(i.min(bytes.len()), byte),
                _ => bytes.extend_from_slice(&[byte; 3]),
            }
        }
        let mut probe = DiffCodec::new(dec.index.clone());
        let before = content(&mut probe.index.clone());
        if probe.decode(&bytes, &receiver).is_err() {
            prop_assert_eq!(content(&mut probe.index), before.clone());
        }
        let mut probe = DiffCodec::new(dec.index.clone());
        let (root, version) = (receiver.mpt_root(), receiver.version());
        if probe.decode_apply(&bytes, &receiver).is_err() {
            prop_assert_eq!(content(&mut probe.index), before);
            prop_assert_eq!((receiver.mpt_root(), receiver.version()), (root, version));
        }
    }

    /// Random bytes are an error, never a panic or a large allocation.
    #[test]
    fn random_bytes_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut codec = DiffCodec::new(KeyIndex::new());
        let _ = codec.decode(&bytes, &MemState::new());
    }
}

#[test]
fn a_receiver_on_another_state_is_told_it_is_out_of_sync() {
    let all = [
        diff_of(&[(1, Op::Delete)]),
        diff_of(&[(
            2,
            Op::Update {
                nonce: 1,
                balance: U256::from(1),
                code: None,
                cleared: false,
                storage: vec![],
            },
        )]),
    ];
    let (sender, _, mut enc, _) = stream(&all);
    let message = enc.encode(&all[1], &sender).unwrap();
    let other = MemState::new();
    other.apply(&diff_of(&[(
        3,
        Op::Update { nonce: 1, balance: U256::ZERO, code: None, cleared: false, storage: vec![] },
    )]));
    let err = DiffCodec::from_state(&other).decode(&message, &other).unwrap_err();
    assert!(matches!(err, CodecError::OutOfSync { .. }), "{err}");
}

#[test]
fn a_newer_format_and_an_oversized_payload_are_refused_before_any_work() {
    let mut codec = DiffCodec::new(KeyIndex::new());
    let state = MemState::new();
    assert_eq!(codec.decode(&[2, 0, 0], &state), Err(CodecError::Version(2)));
    let mut huge = vec![FORMAT_VERSION, KIND_ZSTD_DICT];
    put_varint(&mut huge, MAX_PAYLOAD_BYTES as u64 + 1);
    assert_eq!(
        codec.decode(&huge, &state),
        Err(CodecError::TooLarge(MAX_PAYLOAD_BYTES as u64 + 1))
    );
    assert!(matches!(codec.decode(&[], &state), Err(CodecError::Truncated { .. })));
    // A compressed body that claims a small payload but inflates past it.
    let mut bomb = vec![FORMAT_VERSION, KIND_ZSTD_DICT];
    put_varint(&mut bomb, 16);
    bomb.extend(zstd::bulk::compress(&[0u8; 1 << 20], 3).unwrap());
    assert!(matches!(codec.decode(&bomb, &state), Err(CodecError::Compression(_))));
}

/// An ERC-20 transfer at steady state (sender, token balances and fee recipient all known)
/// costs a few bytes: the ranks are gaps, the fee and nonce repeat, the amounts are short.
#[test]
fn erc20_transfers_between_known_accounts_are_small() {
    let token = Address::repeat_byte(0x70);
    let beneficiary = Address::repeat_byte(0xbe);
    let holders: Vec<Address> =
        (0u32..2000).map(|i| Address::from_slice(&keccak256(i.to_be_bytes())[..20])).collect();
    let balance_slot =
        |h: &Address| U256::from_be_bytes(keccak256([h.into_word().0, B256::ZERO.0].concat()).0);
    let eth = U256::from(10).pow(U256::from(21));
    let tokens = U256::from(10).pow(U256::from(24));
    let mut genesis = StateDiff::default();
    let code = Bytecode::new_raw(Bytes::from_static(&[0x60, 0x00, 0x54, 0x00]));
    genesis.codes.insert(code.hash_slow(), code.clone());
    genesis.accounts.insert(
        token,
        AccountDiff {
            info: Some(AccountData { nonce: 1, balance: U256::ZERO, code_hash: code.hash_slow() }),
            storage_cleared: false,
            storage: holders.iter().map(|h| (balance_slot(h), tokens)).collect(),
        },
    );
    for (i, h) in holders.iter().enumerate() {
        genesis.accounts.insert(
            *h,
            AccountDiff {
                info: Some(AccountData {
                    nonce: i as u64 % 7,
                    balance: eth,
                    code_hash: crate::KECCAK_EMPTY,
                }),
                ..Default::default()
            },
        );
    }
    genesis.accounts.insert(
        beneficiary,
        AccountDiff {
            info: Some(AccountData { nonce: 0, balance: eth, code_hash: crate::KECCAK_EMPTY }),
            ..Default::default()
        },
    );
    let state = MemState::new();
    state.apply(&genesis);
    let mut codec = DiffCodec::from_state(&state);
    let fee = U256::from(51_000u64 * 1_000_000_000);
    let transfers = 200;
    let mut diff = StateDiff::default();
    let mut token_change = AccountDiff { info: state.account(&token), ..Default::default() };
    for k in 0..transfers {
        let (from, to) = (&holders[k * 7 % 2000], &holders[(k * 13 + 1000) % 2000]);
        let before = state.account(from).unwrap();
        diff.accounts.insert(
            *from,
            AccountDiff {
                info: Some(AccountData {
                    nonce: before.nonce + 1,
                    balance: before.balance - fee,
                    ..before
                }),
                ..Default::default()
            },
        );
        let amount = U256::from(1000 + k);
        token_change.storage.insert(balance_slot(from), tokens - amount);
        token_change.storage.insert(balance_slot(to), tokens + amount);
    }
    diff.accounts.insert(token, token_change);
    diff.accounts.insert(
        beneficiary,
        AccountDiff {
            info: Some(AccountData {
                balance: eth + fee * U256::from(transfers),
                ..state.account(&beneficiary).unwrap()
            }),
            ..Default::default()
        },
    );
    let (message, size) = codec.encode_sized(&diff, &state).unwrap();
    let per_tx = message.len() as f64 / transfers as f64;
    assert!(per_tx < 10.0, "{per_tx} bytes per transfer ({size:?})");
    let mut receiver = DiffCodec::from_state(&state);
    assert_eq!(receiver.decode(&message, &state).unwrap(), diff);
}
