//! The state commitment: how the state is laid out in NOMT's binary Merkle trie, whose root
//! is the L2 state root. The sequencer commits every EVM block's diff with these operations,
//! and a follower that applies the same diffs computes the same root.
//!
//! Key paths: an account at keccak256(address), a slot at keccak256(address ‖ slot). Values:
//! an account as nonce (8 bytes BE) ‖ balance (32 BE) ‖ code hash (32); a slot as 32 bytes BE;
//! a deleted account or a zero slot is removed.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256, keccak256};
use nomt::KeyReadWrite;

use crate::StateDiff;

/// NOMT key path of an account.
pub fn account_key(address: &Address) -> [u8; 32] {
    keccak256(address).0
}

/// NOMT key path of a storage slot.
pub fn slot_key(address: &Address, slot: &U256) -> [u8; 32] {
    let mut buf = [0u8; 52];
    buf[..20].copy_from_slice(address.as_slice());
    buf[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    keccak256(buf).0
}

/// NOMT value of an account: nonce (8 bytes BE) ‖ balance (32 BE) ‖ code hash (32).
pub fn account_value(info: &crate::AccountData) -> Vec<u8> {
    let mut v = Vec::with_capacity(72);
    v.extend_from_slice(&info.nonce.to_be_bytes());
    v.extend_from_slice(&info.balance.to_be_bytes::<32>());
    v.extend_from_slice(info.code_hash.as_slice());
    v
}

/// NOMT value of a storage slot: 32 bytes BE, or none (removed) for zero.
pub fn slot_value(value: &U256) -> Option<Vec<u8>> {
    (!value.is_zero()).then(|| value.to_be_bytes::<32>().to_vec())
}

/// The NOMT operations for a block's diff, sorted by key path as NOMT requires.
pub fn nomt_ops(diff: &StateDiff, wiped: &[(Address, U256)]) -> Vec<([u8; 32], KeyReadWrite)> {
    let mut ops: BTreeMap<[u8; 32], Option<Vec<u8>>> = BTreeMap::new();
    for (address, slot) in wiped {
        ops.insert(slot_key(address, slot), None);
    }
    for (address, change) in &diff.accounts {
        let value = change.info.map(|info| account_value(&info));
        ops.insert(account_key(address), value);
        for (slot, value) in &change.storage {
            ops.insert(slot_key(address, slot), slot_value(value));
        }
    }
    ops.into_iter().map(|(k, v)| (k, KeyReadWrite::Write(v))).collect()
}
