//! The record of what a run of transactions changed.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256};
use revm::state::Bytecode;

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
    pub accounts: BTreeMap<Address, AccountDiff>,
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
        for (address, diff) in &later.accounts {
            let entry = self.accounts.entry(*address).or_default();
            if diff.storage_cleared {
                entry.storage.clear();
                entry.storage_cleared = true;
            }
            entry.info = diff.info;
            entry.storage.extend(diff.storage.iter().map(|(k, v)| (*k, *v)));
        }
        for (hash, code) in &later.codes {
            self.codes.entry(*hash).or_insert_with(|| code.clone());
        }
    }

    /// The diffs folded in order into one.
    pub fn merged<'a>(diffs: impl IntoIterator<Item = &'a StateDiff>) -> StateDiff {
        let mut out = StateDiff::default();
        for diff in diffs {
            out.merge(diff);
        }
        out
    }

    /// Number of storage slots written.
    pub fn slot_count(&self) -> usize {
        self.accounts.values().map(|a| a.storage.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
