//! The key index both ends of a diff stream keep: every account and every non-zero slot of the
//! state, in key order, so that a key the receiver already has is sent as its rank (a small
//! gap between sorted ranks) instead of its 20 or 32 bytes.
//!
//! The index is a function of the state alone: a node that restarts, or re-syncs after a root
//! mismatch, rebuilds it from its state ([`KeyIndex::from_state`]) and needs nothing else.

use alloy_primitives::{Address, U256};

use crate::{
    MemState,
    state::{KeyHasher, PREFETCH_DISTANCE, prefetch},
};

/// Account → its slots' set, hashed as the state's tables are (foldhash under a process seed).
type SlotSets = hashbrown::HashMap<Address, RankedSet<U256>, KeyHasher>;

/// Chunks are split when they reach this many keys; inserts then move at most this many, and a
/// search ends with a binary search over at most this many (a few cache lines).
const CHUNK_MAX: usize = 256;

/// A sorted set with rank and select, as sorted chunks plus prefix counts recomputed lazily
/// (once per diff: ranks are asked for in a batch, then the diff's inserts and removals land).
#[derive(Clone, Debug)]
pub(crate) struct RankedSet<K> {
    chunks: Vec<Vec<K>>,
    /// The last key of each chunk, contiguous: the search for a key's chunk reads this array
    /// (which stays in cache) instead of one heap allocation per step.
    lasts: Vec<K>,
    /// `starts[i]` = number of keys in `chunks[..i]`; valid when `!dirty`.
    starts: Vec<usize>,
    len: usize,
    dirty: bool,
}

impl<K> Default for RankedSet<K> {
    fn default() -> Self {
        Self { chunks: Vec::new(), lasts: Vec::new(), starts: Vec::new(), len: 0, dirty: false }
    }
}

impl<K: Ord + Copy> RankedSet<K> {
    /// The set of `keys`, which must be sorted and free of duplicates.
    pub(crate) fn from_sorted(keys: Vec<K>) -> Self {
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let len = keys.len();
        let chunks: Vec<Vec<K>> = keys.chunks(CHUNK_MAX / 2).map(<[K]>::to_vec).collect();
        let lasts = chunks.iter().map(|c| c[c.len() - 1]).collect();
        Self { chunks, lasts, starts: Vec::new(), len, dirty: true }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` if it is present, or where it would go.
    fn chunk_of(&self, key: &K) -> usize {
        let i = self.lasts.partition_point(|last| last < key);
        i.min(self.chunks.len().saturating_sub(1))
    }

    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(vec![key]);
            self.lasts.push(key);
        } else {
            let c = self.chunk_of(&key);
            let chunk = &mut self.chunks[c];
            match chunk.binary_search(&key) {
                Ok(_) => return false,
                Err(at) => chunk.insert(at, key),
            }
            self.lasts[c] = chunk[chunk.len() - 1];
            if chunk.len() >= CHUNK_MAX {
                let tail = chunk.split_off(CHUNK_MAX / 2);
                self.lasts[c] = chunk[chunk.len() - 1];
                self.lasts.insert(c + 1, tail[tail.len() - 1]);
                self.chunks.insert(c + 1, tail);
            }
        }
        self.len += 1;
        self.dirty = true;
        true
    }

    pub(crate) fn remove(&mut self, key: &K) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        let c = self.chunk_of(key);
        let chunk = &mut self.chunks[c];
        let Ok(at) = chunk.binary_search(key) else { return false };
        chunk.remove(at);
        if chunk.is_empty() {
            self.chunks.remove(c);
            self.lasts.remove(c);
        } else {
            self.lasts[c] = chunk[chunk.len() - 1];
        }
        self.len -= 1;
        self.dirty = true;
        true
    }

    fn refresh(&mut self) {
        if self.dirty {
            self.starts.clear();
            let mut total = 0;
            for chunk in &self.chunks {
                self.starts.push(total);
                total += chunk.len();
            }
            self.dirty = false;
        }
    }

    /// The position of `key` in the set, if present.
    pub(crate) fn rank(&mut self, key: &K) -> Option<usize> {
        if self.chunks.is_empty() {
            return None;
        }
        self.refresh();
        let c = self.chunk_of(key);
        self.chunks[c].binary_search(key).ok().map(|at| self.starts[c] + at)
    }

    /// The keys at `ranks`, which must be ascending and below the length, appended to `out`.
    /// First each key's place is found from the chunk starts alone (which stay in cache): a
    /// rank in the same chunk as the previous one costs no search, and a search gallops
    /// forward from the previous rank's chunk. Then the keys are copied, each prefetched a few
    /// keys ahead, since every chunk is an allocation of its own.
    pub(crate) fn select_ascending(&mut self, ranks: &[usize], out: &mut Vec<K>) {
        self.refresh();
        let starts = &self.starts;
        let mut places = Vec::with_capacity(ranks.len());
        let mut c = 0;
        for &rank in ranks {
            debug_assert!(rank < self.len);
            if c + 1 < starts.len() && starts[c + 1] <= rank {
                // `starts[low] <= rank` holds throughout.
                let (mut low, mut step) = (c + 1, 1);
                while low + step < starts.len() && starts[low + step] <= rank {
                    low += step;
                    step *= 2;
                }
                let high = (low + step).min(starts.len());
                c = low + starts[low + 1..high].partition_point(|&s| s <= rank);
            }
            places.push((c, rank - starts[c]));
        }
        out.reserve(places.len());
        for (i, &(c, at)) in places.iter().enumerate() {
            if let Some(&(c, at)) = places.get(i + PREFETCH_DISTANCE) {
                prefetch(std::ptr::from_ref(&self.chunks[c][at]).cast());
            }
            out.push(self.chunks[c][at]);
        }
    }

    /// The key at position `rank`.
    #[cfg(test)]
    pub(crate) fn select(&mut self, rank: usize) -> Option<K> {
        if rank >= self.len {
            return None;
        }
        self.refresh();
        let c = self.starts.partition_point(|&s| s <= rank) - 1;
        Some(self.chunks[c][rank - self.starts[c]])
    }
}

/// Accounts and their non-zero slots, in key order: what a diff's keys are ranked against.
#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    pub(crate) accounts: RankedSet<Address>,
    pub(crate) slots: SlotSets,
}

impl KeyIndex {
    /// The index of an empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `state` as it is now.
    pub fn from_state(state: &MemState) -> Self {
        let mut accounts = Vec::with_capacity(state.account_count());
        let mut slots = SlotSets::default();
        state.for_each_account(|address, account| {
            accounts.push(*address);
            if account.storage_len() > 0 {
                let mut keys: Vec<U256> = account.storage().map(|(k, _)| *k).collect();
                keys.sort_unstable();
                slots.insert(*address, RankedSet::from_sorted(keys));
            }
        });
        accounts.sort_unstable();
        Self { accounts: RankedSet::from_sorted(accounts), slots }
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }
}

/// The index changes a message makes, with [`MemState::apply`]'s rules (a deleted account
/// loses its slots, a cleared storage is emptied, a zero slot is removed). They are found while
/// the message is encoded or decoded, where it is already known which keys are indexed, so no
/// key is searched for twice, and applied once the message is complete.
#[derive(Debug, Default)]
pub(crate) struct Edits(Vec<Edit>);

#[derive(Debug)]
enum Edit {
    InsertAccount(Address),
    RemoveAccount(Address),
    ClearSlots(Address),
    InsertSlot(Address, U256),
    RemoveSlot(Address, U256),
}

impl Edits {
    /// Records the account-level change of `address` (indexed or not before the message).
    #[inline]
    pub(crate) fn account(
        &mut self,
        address: Address,
        indexed: bool,
        deleted: bool,
        cleared: bool,
    ) {
        match (indexed, deleted) {
            (true, true) => self.0.push(Edit::RemoveAccount(address)),
            (false, false) => self.0.push(Edit::InsertAccount(address)),
            (true, false) if cleared => self.0.push(Edit::ClearSlots(address)),
            _ => {}
        }
    }

    /// Records a slot write of a live account (`indexed`: the slot was in the index).
    #[inline]
    pub(crate) fn slot(&mut self, address: Address, slot: U256, indexed: bool, zero: bool) {
        match (indexed, zero) {
            (true, true) => self.0.push(Edit::RemoveSlot(address, slot)),
            (false, false) => self.0.push(Edit::InsertSlot(address, slot)),
            _ => {}
        }
    }

    pub(crate) fn apply(self, index: &mut KeyIndex) {
        for edit in self.0 {
            match edit {
                Edit::InsertAccount(a) => {
                    index.accounts.insert(a);
                }
                Edit::RemoveAccount(a) => {
                    index.accounts.remove(&a);
                    index.slots.remove(&a);
                }
                Edit::ClearSlots(a) => {
                    index.slots.remove(&a);
                }
                Edit::InsertSlot(a, slot) => {
                    index.slots.entry(a).or_default().insert(slot);
                }
                Edit::RemoveSlot(a, slot) => {
                    if let Some(set) = index.slots.get_mut(&a) {
                        set.remove(&slot);
                        if set.is_empty() {
                            index.slots.remove(&a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Rank and select agree with a BTreeSet through any sequence of inserts and removals,
        /// including ones that split and empty chunks.
        #[test]
        fn ranked_set_matches_a_btreeset(ops in prop::collection::vec((any::<bool>(), 0u16..3000), 0..6000)) {
            let mut ours = RankedSet::from_sorted((0u16..3000).step_by(7).collect());
            let mut model: BTreeSet<u16> = (0u16..3000).step_by(7).collect();
            for (insert, key) in ops {
                if insert {
                    prop_assert_eq!(ours.insert(key), model.insert(key));
                } else {
                    prop_assert_eq!(ours.remove(&key), model.remove(&key));
                }
            }
            prop_assert_eq!(ours.len(), model.len());
            for (rank, key) in model.iter().enumerate() {
                prop_assert_eq!(ours.rank(key), Some(rank));
                prop_assert_eq!(ours.select(rank), Some(*key));
            }
            let ranks: Vec<usize> = (0..model.len()).step_by(3).collect();
            let mut selected = Vec::new();
            ours.select_ascending(&ranks, &mut selected);
            let every_third: Vec<u16> = model.iter().step_by(3).copied().collect();
            prop_assert_eq!(selected, every_third);
            prop_assert_eq!(ours.select(model.len()), None);
            for key in (0u16..3000).filter(|k| !model.contains(k)).take(50) {
                prop_assert_eq!(ours.rank(&key), None);
            }
        }
    }
}
