//! A map stored as one vector sorted by key.
//!
//! A state diff is built once (by the executor, or by the codec from a message whose keys
//! arrive in order), then read in key order: applied, encoded, committed. A B-tree pays for
//! ordered inserts it is never asked for: every entry is moved into a node, nodes are allocated
//! one by one, and dropping the map walks them again. Here an entry is written once into one
//! allocation. Inserting in ascending order appends; inserting out of order moves the entries
//! after it, so builders that meet keys in no order collect them first (`collect()` sorts once).

use std::{borrow::Borrow, fmt, slice, vec};

/// A map whose entries are kept in a vector sorted by key, without repeats.
#[derive(Clone, PartialEq, Eq)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over `(&key, &value)` in key order.
pub type Iter<'a, K, V> = std::iter::Map<slice::Iter<'a, (K, V)>, fn(&(K, V)) -> (&K, &V)>;

impl<K, V> SortedMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(&key, &value)` in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// `entries` as a map; they must be in strictly ascending key order (checked), as the
    /// codec decodes them. `None` otherwise.
    pub fn from_sorted(entries: Vec<(K, V)>) -> Option<Self> {
        entries.is_sorted_by(|a, b| a.0 < b.0).then_some(Self { entries })
    }

    fn search<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.search(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutably.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.search(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Sets `key` to `value`, returning the value it replaced. Appending (a key above every
    /// other) costs O(1); anywhere else, the entries after it move.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.entries.last().is_none_or(|(last, _)| *last < key) {
            self.entries.push((key, value));
            return None;
        }
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Sorts `entries` by key (stable), keeping the last entry of each key, as inserting them
    /// one by one would.
    fn normalize(entries: &mut Vec<(K, V)>) {
        if entries.is_sorted_by(|a, b| a.0 < b.0) {
            return;
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        // Of equal keys, the later one wins: keep the last of each run.
        let mut out = 0;
        for i in 0..entries.len() {
            if i + 1 < entries.len() && entries[i].0 == entries[i + 1].0 {
                continue;
            }
            entries.swap(out, i);
            out += 1;
        }
        entries.truncate(out);
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        Self::normalize(&mut entries);
        Self { entries }
    }
}

impl<K: Ord, V> std::ops::Index<&K> for SortedMap<K, V> {
    type Output = V;

    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Inserting, in any order, and changing values in place leave the map equal to a
        /// `BTreeMap` given the same operations, in content and in order.
        #[test]
        fn behaves_as_a_btree_map(ops in prop::collection::vec((0u8..40, any::<u32>(), any::<bool>()), 0..80)) {
            let (mut ours, mut theirs) = (SortedMap::new(), BTreeMap::new());
            for (k, v, insert) in ops {
                if insert {
                    prop_assert_eq!(ours.insert(k, v), theirs.insert(k, v));
                } else if let Some(value) = ours.get_mut(&k) {
                    *value ^= v;
                    *theirs.get_mut(&k).expect("present in both") ^= v;
                } else {
                    prop_assert!(theirs.get_mut(&k).is_none());
                }
                prop_assert!(ours.iter().eq(theirs.iter()));
                prop_assert_eq!(ours.len(), theirs.len());
            }
            for k in 0..40u8 {
                prop_assert_eq!(ours.get(&k), theirs.get(&k));
            }
        }

        /// Collecting keeps the last value of a repeated key, as a `BTreeMap` does.
        #[test]
        fn collecting_keeps_the_last_of_repeats(entries in prop::collection::vec((0u8..20, any::<u32>()), 0..60)) {
            let ours: SortedMap<_, _> = entries.iter().copied().collect();
            let theirs: BTreeMap<_, _> = entries.iter().copied().collect();
            prop_assert!(ours.iter().eq(theirs.iter()));
        }
    }

    #[test]
    fn from_sorted_refuses_unordered_or_repeated_keys() {
        assert!(SortedMap::from_sorted(vec![(1, 'a'), (2, 'b')]).is_some());
        assert!(SortedMap::from_sorted(vec![(2, 'a'), (1, 'b')]).is_none());
        assert!(SortedMap::from_sorted(vec![(1, 'a'), (1, 'b')]).is_none());
    }
}
