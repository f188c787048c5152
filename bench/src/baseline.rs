//! The standard pipeline a reth-style node runs for the same transactions, in memory, nothing
//! persisted: sender recovery (libsecp256k1, sequential or on all cores), sequential revm over
//! revm's in-memory `CacheDB`, and an Ethereum MPT state root per block, kept in memory between
//! blocks so that only the paths of changed accounts and slots are hashed again ([`crate::mpt`],
//! alloy-trie's node encoding), as a node with an incremental state root does.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, keccak256};
use alloy_trie::TrieAccount;
use rayon::prelude::*;
use revm::{
    ExecuteEvm,
    database::{CacheDB, EmptyDB},
    state::{AccountInfo, Bytecode},
};

use crate::{
    mpt::Trie,
    workload::{CHAIN_ID, Prepared},
};

/// Time spent per stage.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StageTimes {
    /// Whole run.
    pub total: Duration,
    /// Decoding and sender recovery.
    pub recover: Duration,
    /// Execution.
    pub execute: Duration,
    /// State roots.
    pub root: Duration,
}

struct TrieState {
    /// The account trie: keccak(address) → RLP of the account.
    accounts: Trie,
    /// Each account's fields as its leaf holds them.
    leaves: HashMap<Address, TrieAccount>,
    /// Storage tries: keccak(slot) → RLP of the value.
    storage: HashMap<Address, Trie>,
}

fn setup(p: &Prepared) -> (CacheDB<EmptyDB>, TrieState) {
    let mut db = CacheDB::new(EmptyDB::default());
    let mut trie =
        TrieState { accounts: Trie::new(), leaves: HashMap::new(), storage: HashMap::new() };
    for (address, account) in p.alloc.iter() {
        let code = account.code.clone().unwrap_or_default();
        let (code_hash, bytecode) = if code.is_empty() {
            (memstate::KECCAK_EMPTY, Bytecode::default())
        } else {
            (keccak256(&code), Bytecode::new_raw(code))
        };
        let info = AccountInfo {
            balance: account.balance,
            nonce: account.nonce.map(|n| n.to()).unwrap_or_default(),
            code_hash,
            code: Some(bytecode),
            ..Default::default()
        };
        db.insert_account_info(*address, info);
        let mut slots = Trie::new();
        for (slot, value) in account.storage.iter().flatten() {
            db.insert_account_storage(*address, *slot, *value).expect("in-memory insert");
            if !value.is_zero() {
                slots.insert(&keccak256(B256::from(*slot)), alloy_rlp::encode(value));
            }
        }
        let leaf = TrieAccount {
            nonce: account.nonce.map(|n| n.to()).unwrap_or_default(),
            balance: account.balance,
            storage_root: slots.root(),
            code_hash,
        };
        trie.accounts.insert(&keccak256(address), alloy_rlp::encode(leaf));
        trie.leaves.insert(*address, leaf);
        trie.storage.insert(*address, slots);
    }
    (db, trie)
}

/// Runs the standard pipeline over `p`'s transactions in blocks of `block_txs`.
pub fn run(p: &Prepared, block_txs: usize, parallel_recovery: bool) -> StageTimes {
    run_to_state(p, block_txs, parallel_recovery).0
}

/// [`run`], also returning the final state and its MPT root.
fn run_to_state(
    p: &Prepared,
    block_txs: usize,
    parallel_recovery: bool,
) -> (StageTimes, CacheDB<EmptyDB>, B256) {
    let (mut db, mut trie) = setup(p);
    let mut state_root = trie.accounts.root();
    let mut times = StageTimes::default();
    let started = Instant::now();
    for (number, block) in p.txs.chunks(block_txs).enumerate() {
        let t = Instant::now();
        let decode = |raw: &alloy_primitives::Bytes| {
            let tx = TxEnvelope::decode_2718(&mut raw.as_ref()).expect("valid benchmark tx");
            let sender = sequencer::tx::recover_sender(&tx).expect("valid signature");
            (tx, sender)
        };
        let recovered: Vec<(TxEnvelope, Address)> = if parallel_recovery {
            block.par_iter().map(decode).collect()
        } else {
            block.iter().map(decode).collect()
        };
        times.recover += t.elapsed();

        let t = Instant::now();
        let env = sequencer::exec::BlockEnvParams {
            number: number as u64 + 1,
            timestamp: 1_700_000_000 + number as u64,
            beneficiary: Address::ZERO,
            base_fee: 1_000_000_000,
            gas_limit: u64::MAX / 2,
        };
        let mut touched: HashMap<Address, bool> = HashMap::new();
        {
            let mut evm = sequencer::exec::new_evm(
                &mut db,
                p.kind.spec(),
                CHAIN_ID,
                env.block_env(p.kind.spec()),
            );
            for (tx, sender) in &recovered {
                let out = evm
                    .transact(sequencer::tx::tx_env(tx, *sender))
                    .expect("benchmark tx is valid");
                for (address, account) in &out.state {
                    if !account.is_touched() {
                        continue;
                    }
                    let mut storage_changed = false;
                    let slots = trie.storage.entry(*address).or_default();
                    for (slot, value) in account.changed_storage_slots() {
                        storage_changed = true;
                        let key = keccak256(B256::from(*slot));
                        if value.present_value.is_zero() {
                            slots.remove(&key);
                        } else {
                            slots.insert(&key, alloy_rlp::encode(value.present_value));
                        }
                    }
                    let entry = touched.entry(*address).or_default();
                    *entry |= storage_changed;
                    let leaf = trie.leaves.entry(*address).or_insert(TrieAccount {
                        storage_root: alloy_trie::EMPTY_ROOT_HASH,
                        ..Default::default()
                    });
                    leaf.nonce = account.info.nonce;
                    leaf.balance = account.info.balance;
                    leaf.code_hash = account.info.code_hash;
                }
                revm::ExecuteCommitEvm::commit(&mut evm, out.state);
            }
        }
        times.execute += t.elapsed();

        let t = Instant::now();
        for (address, storage_changed) in &touched {
            let leaf = trie.leaves.get_mut(address).expect("touched accounts have a leaf");
            if *storage_changed {
                leaf.storage_root = trie.storage.get_mut(address).expect("touched").root();
            }
            trie.accounts.insert(&keccak256(address), alloy_rlp::encode(*leaf));
        }
        state_root = trie.accounts.root();
        times.root += t.elapsed();
    }
    times.total = started.elapsed();
    (times, db, state_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Kind, prepare};

    /// The root kept incrementally over many blocks is the root of the final state computed
    /// from scratch (alloy-trie over every account and slot), for each kind of workload.
    #[test]
    fn the_incremental_root_is_the_final_states_root() {
        for kind in [Kind::Eth, Kind::Erc20, Kind::Amm, Kind::Mix] {
            let p = prepare(kind, 3, 60, 300);
            let (_, db, root) = run_to_state(&p, 25, false);
            let accounts = db.cache.accounts.iter().map(|(address, account)| {
                let storage = account
                    .storage
                    .iter()
                    .filter(|(_, v)| !v.is_zero())
                    .map(|(slot, value)| (keccak256(B256::from(*slot)), *value));
                let leaf = TrieAccount {
                    nonce: account.info.nonce,
                    balance: account.info.balance,
                    storage_root: alloy_trie::root::storage_root_unsorted(storage),
                    code_hash: account.info.code_hash,
                };
                (keccak256(address), leaf)
            });
            assert_eq!(root, alloy_trie::root::state_root_unsorted(accounts), "{kind:?}");
        }
    }
}
