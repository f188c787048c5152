//! Multi-version memory: every key's writes by transaction index within one batch, and the
//! reads each execution made, so that a transaction can be validated against its
//! predecessors' final writes.

use std::{collections::BTreeMap, hash::BuildHasher};

use alloy_primitives::{Address, U256};
use memstate::{AccountData, KeyHasher};
use parking_lot::Mutex;

/// Index of a transaction in its batch.
pub(crate) type TxIdx = usize;

/// A piece of state an execution can read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// An account's nonce, balance and code hash (and whether it exists).
    Account(Address),
    /// One storage slot.
    Slot(Address, U256),
}

/// A written value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The account afterwards (`None`: deleted); `cleared`: its storage before this write is
    /// gone (created, re-created or deleted), so older slot versions read as zero.
    Account { info: Option<AccountData>, cleared: bool },
    /// A slot's new value.
    Slot(U256),
}

/// A value as read, for validation by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadValue {
    /// `basic()` returned this.
    Account(Option<AccountData>),
    /// `storage()` returned this.
    Slot(U256),
}

const SHARDS: usize = 128;

type Versions = BTreeMap<TxIdx, Written>;

/// The versions of every key written in the batch.
pub(crate) struct MvMemory {
    shards: Box<[Mutex<hashbrown::HashMap<Key, Versions, KeyHasher>>]>,
}

impl MvMemory {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(hashbrown::HashMap::with_hasher(KeyHasher)))
                .collect(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<hashbrown::HashMap<Key, Versions, KeyHasher>> {
        // Accounts and their slots hash apart: a hot contract's slots spread over shards.
        &self.shards[(KeyHasher.hash_one(key) as usize) % SHARDS]
    }

    /// The newest write to `key` by a transaction before `idx`.
    pub(crate) fn latest_before(&self, key: &Key, idx: TxIdx) -> Option<(TxIdx, Written)> {
        let shard = self.shard(key).lock();
        shard.get(key)?.range(..idx).next_back().map(|(i, w)| (*i, *w))
    }

    /// The newest transaction before `idx` that wiped `address`'s storage (created, re-created
    /// or deleted it).
    pub(crate) fn latest_clear_before(&self, address: Address, idx: TxIdx) -> Option<TxIdx> {
        let key = Key::Account(address);
        let shard = self.shard(&key).lock();
        shard
            .get(&key)?
            .range(..idx)
            .rev()
            .find(|(_, w)| matches!(w, Written::Account { cleared: true, .. }))
            .map(|(i, _)| *i)
    }

    /// Records `idx`'s writes, removing its writes from an earlier execution that this one no
    /// longer makes. `previous` is the key list of that earlier execution.
    pub(crate) fn record(&self, idx: TxIdx, writes: &[(Key, Written)], previous: &[Key]) {
        for key in previous {
            if !writes.iter().any(|(k, _)| k == key) {
                self.remove(idx, key);
            }
        }
        for (key, value) in writes {
            self.shard(key).lock().entry(*key).or_default().insert(idx, *value);
        }
    }

    /// Removes `idx`'s write to `key`.
    pub(crate) fn remove(&self, idx: TxIdx, key: &Key) {
        let mut shard = self.shard(key).lock();
        if let Some(versions) = shard.get_mut(key) {
            versions.remove(&idx);
        }
    }
}
