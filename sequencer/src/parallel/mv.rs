//! Multi-version memory: every key's writes by transaction index within one batch, and the
//! reads each execution made, so that a transaction can be validated against its
//! predecessors' final writes.

use std::hash::BuildHasher;

use alloy_primitives::{Address, U256};
use memstate::{AccountData, KeyHasher};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Index of a transaction in its batch.
pub(crate) type TxIdx = usize;

/// A piece of state an execution can read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// An account's nonce, balance and code hash (and whether it exists).
    Account(Address),
    /// One storage slot.
    Slot(Address, U256),
    /// Written when an account's storage is wiped (created, re-created or deleted): slot
    /// versions older than this read as zero.
    Wipe(Address),
}

/// A written value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The account afterwards (`None`: deleted). A wipe of its storage is a separate
    /// [`Key::Wipe`] write.
    Account { info: Option<AccountData> },
    /// A slot's new value.
    Slot(U256),
    /// The storage was wiped.
    Wipe,
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

/// A key's versions, sorted by transaction index (usually one).
type Versions = Vec<(TxIdx, Written)>;

/// Bits of the written-keys filter (a key's bit set means "maybe written").
const FILTER_BITS: usize = 1 << 16;

/// The versions of every key written in the batch.
pub(crate) struct MvMemory {
    shards: Box<[Mutex<hashbrown::HashMap<Key, Versions, KeyHasher>>]>,
    /// Which keys may have versions: most reads are of keys no transaction of the batch
    /// wrote, and this answers them without taking a shard's lock (whose cache line would
    /// bounce between the cores reading a hot contract).
    written: Box<[AtomicU64]>,
}

impl MvMemory {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(hashbrown::HashMap::with_hasher(KeyHasher)))
                .collect(),
            written: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bit(key: &Key) -> (usize, u64) {
        let h = KeyHasher.hash_one(key) as usize >> 7;
        let bit = h % FILTER_BITS;
        (bit / 64, 1 << (bit % 64))
    }

    fn shard(&self, key: &Key) -> &Mutex<hashbrown::HashMap<Key, Versions, KeyHasher>> {
        // Accounts and their slots hash apart: a hot contract's slots spread over shards.
        &self.shards[(KeyHasher.hash_one(key) as usize) % SHARDS]
    }

    /// The newest write to `key` by a transaction before `idx`.
    pub(crate) fn latest_before(&self, key: &Key, idx: TxIdx) -> Option<(TxIdx, Written)> {
        let (word, mask) = Self::bit(key);
        if self.written[word].load(Ordering::Acquire) & mask == 0 {
            return None;
        }
        let shard = self.shard(key).lock();
        let versions = shard.get(key)?;
        let below = versions.partition_point(|(i, _)| *i < idx);
        below.checked_sub(1).map(|p| versions[p])
    }

    /// All of a key's versions, by transaction.
    pub(crate) fn versions(&self, key: &Key) -> Versions {
        self.shard(key).lock().get(key).cloned().unwrap_or_default()
    }

    /// Every key's newest version before `idx`.
    pub(crate) fn latest_versions(&self, idx: TxIdx) -> Vec<(Key, TxIdx, Written)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for (key, versions) in shard.iter() {
                let below = versions.partition_point(|(i, _)| *i < idx);
                if let Some(&(i, w)) = below.checked_sub(1).map(|p| &versions[p]) {
                    out.push((*key, i, w));
                }
            }
        }
        out
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
            let (word, mask) = Self::bit(key);
            // Set before the version is visible under the lock, so a reader that sees the bit
            // clear cannot miss a version that the lock would have shown it.
            if self.written[word].load(Ordering::Relaxed) & mask == 0 {
                self.written[word].fetch_or(mask, Ordering::AcqRel);
            }
            let mut shard = self.shard(key).lock();
            let versions = shard.entry(*key).or_default();
            match versions.binary_search_by_key(&idx, |(i, _)| *i) {
                Ok(p) => versions[p].1 = *value,
                Err(p) => versions.insert(p, (idx, *value)),
            }
        }
    }

    /// Removes `idx`'s write to `key`.
    pub(crate) fn remove(&self, idx: TxIdx, key: &Key) {
        let mut shard = self.shard(key).lock();
        if let Some(versions) = shard.get_mut(key)
            && let Ok(p) = versions.binary_search_by_key(&idx, |(i, _)| *i)
        {
            versions.remove(p);
        }
    }
}
