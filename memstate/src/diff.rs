//! The record of what a run of transactions changed.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256};
use revm::state::Bytecode;

use crate::SortedMap;

/// An account's header fields after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountData {
    /// Transaction count (or, for contracts, creation count).
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Keccak-256 of the account's code ([`crate::KECCAK_EMPTY`] when it has none).
    pub code_hash: B256,
}

impl AccountData {
    /// An account with no nonce, no balance and no code: what EIP-161 deletes once touched.
    pub const EMPTY: Self = Self { nonce: 0, balance: U256::ZERO, code_hash: crate::KECCAK_EMPTY };

    /// True for [`AccountData::EMPTY`].
    pub fn is_empty(&self) -> bool {
        *self == Self::EMPTY
    }
}

/// What happened to one account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountDiff {
    /// The account's fields afterwards; `None` when the account was deleted (self-destructed, or
    /// touched while empty, as EIP-161 requires).
    pub info: Option<AccountData>,
    /// All storage the account had before this diff is gone (deleted or re-created); `storage`
    /// then holds the complete new storage.
    pub storage_cleared: bool,
    /// Slots written, with their new value; zero means the slot is deleted.
    pub storage: BTreeMap<U256, U256>,
}

/// Changes to the state, ordered by key so that encoding and root updates are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Changed accounts.
    pub accounts: SortedMap<Address, AccountDiff>,
    /// Code first deployed by these changes, keyed by its hash.
    pub codes: BTreeMap<B256, Bytecode>,
}

impl StateDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.codes.is_empty()
    }

    /// Folds `later` into `self`, as if both had been applied in order.
    pub fn merge(&mut self, later: &StateDiff) {
        *self = Self::merged([&*self, later]);
    }

    /// The diffs folded in order into one. Every account's changes are gathered and sorted
    /// once (stably, so each account's changes stay in order), then folded: the cost is that
    /// of one sort, however many diffs there are.
    pub fn merged<'a>(diffs: impl IntoIterator<Item = &'a StateDiff>) -> StateDiff {
        let mut codes = BTreeMap::new();
        let mut changes: Vec<(&Address, &AccountDiff)> = Vec::new();
        for diff in diffs {
            changes.extend(diff.accounts.iter());
            for (hash, code) in &diff.codes {
                codes.entry(*hash).or_insert_with(|| code.clone());
            }
        }
        changes.sort_by_key(|(address, _)| *address);
        let mut accounts = Vec::new();
        let mut changes = changes.into_iter().peekable();
        while let Some((address, first)) = changes.next() {
            let mut folded = first.clone();
            while let Some((_, diff)) = changes.next_if(|(a, _)| *a == address) {
                if diff.storage_cleared {
                    folded.storage.clear();
                    folded.storage_cleared = true;
                }
                folded.info = diff.info;
                folded.storage.extend(diff.storage.iter().map(|(k, v)| (*k, *v)));
            }
            accounts.push((*address, folded));
        }
        let accounts =
            SortedMap::from_sorted(accounts).expect("sorted by address, one per address");
        StateDiff { accounts, codes }
    }

    /// Number of storage slots written.
    pub fn slot_count(&self) -> usize {
        self.accounts.values().map(|a| a.storage.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Folds `diffs` one account change at a time into B-trees: the plain reading of "applied
    /// in order" that the sort-based merge must agree with.
    fn fold_in_order(diffs: &[StateDiff]) -> StateDiff {
        let mut accounts: BTreeMap<Address, AccountDiff> = BTreeMap::new();
        let mut codes = BTreeMap::new();
        for diff in diffs {
            for (address, change) in &diff.accounts {
                let entry = accounts.entry(*address).or_default();
                if change.storage_cleared {
                    entry.storage.clear();
                    entry.storage_cleared = true;
                }
                entry.info = change.info;
                entry.storage.extend(change.storage.iter().map(|(k, v)| (*k, *v)));
            }
            for (hash, code) in &diff.codes {
                codes.entry(*hash).or_insert_with(|| code.clone());
            }
        }
        StateDiff { accounts: accounts.into_iter().collect(), codes }
    }

    fn arb_diff() -> impl Strategy<Value = StateDiff> {
        let change = (
            prop::option::of(0u64..4),
            any::<bool>(),
            prop::collection::btree_map(0u8..6, 0u8..3, 0..4),
        )
            .prop_map(|(nonce, storage_cleared, slots)| AccountDiff {
                info: nonce.and_then(data),
                storage_cleared,
                storage: slots.into_iter().map(|(k, v)| (U256::from(k), U256::from(v))).collect(),
            });
        let codes = prop::collection::vec(0u8..3, 0..2);
        (prop::collection::btree_map(0u8..8, change, 0..6), codes).prop_map(|(accounts, codes)| {
            StateDiff {
                accounts: accounts.into_iter().map(|(a, d)| (Address::repeat_byte(a), d)).collect(),
                codes: codes
                    .into_iter()
                    .map(|c| (B256::repeat_byte(c), Bytecode::new_raw(vec![0x60, c].into())))
                    .collect(),
            }
        })
    }

    proptest! {
        /// Merging many diffs at once, or one into another, gives what folding their changes
        /// in order gives.
        #[test]
        fn merging_equals_folding_in_order(diffs in prop::collection::vec(arb_diff(), 0..6)) {
            let expected = fold_in_order(&diffs);
            prop_assert_eq!(&StateDiff::merged(&diffs), &expected);
            let mut stepwise = StateDiff::default();
            for diff in &diffs {
                stepwise.merge(diff);
            }
            prop_assert_eq!(&stepwise, &expected);
        }
    }

    fn data(nonce: u64) -> Option<AccountData> {
        Some(AccountData { nonce, balance: U256::from(nonce), code_hash: crate::KECCAK_EMPTY })
    }

    #[test]
    fn merge_keeps_the_later_value_and_honours_clears() {
        let a = Address::repeat_byte(1);
        let mut first = StateDiff::default();
        first.accounts.insert(
            a,
            AccountDiff {
                info: data(1),
                storage_cleared: false,
                storage: [(U256::from(1), U256::from(10)), (U256::from(2), U256::from(20))].into(),
            },
        );
        let mut second = StateDiff::default();
        second.accounts.insert(
            a,
            AccountDiff {
                info: data(2),
                storage_cleared: true,
                storage: [(U256::from(3), U256::from(30))].into(),
            },
        );
        first.merge(&second);
        let merged = &first.accounts[&a];
        assert_eq!(merged.info, data(2));
        assert!(merged.storage_cleared);
        assert_eq!(merged.storage, [(U256::from(3), U256::from(30))].into());
        assert_eq!(first.slot_count(), 1);
    }
}
