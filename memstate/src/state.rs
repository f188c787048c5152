//! The state tables.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::{Address, B256, Bytes, U256};
use parking_lot::RwLock;
use revm::state::Bytecode;

use crate::diff::{AccountData, StateDiff};

/// One account with its storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Transaction count.
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Hash of the account's code.
    pub code_hash: B256,
    /// Non-zero storage slots.
    pub storage: HashMap<U256, U256>,
}

impl Account {
    fn data(&self) -> AccountData {
        AccountData { nonce: self.nonce, balance: self.balance, code_hash: self.code_hash }
    }
}

/// Errors reading the state through revm.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// BLOCKHASH asked for a block whose hash is not known (yet).
    #[error("hash of block {0} is not available")]
    BlockHashUnavailable(u64),
}

impl revm::database_interface::DBErrorMarker for StateError {}

#[derive(Default)]
struct Tables {
    accounts: HashMap<Address, Account>,
    codes: HashMap<B256, Bytecode>,
}

/// The whole state, in memory, shared between one writer and many readers.
#[derive(Default)]
pub struct MemState {
    tables: RwLock<Tables>,
    /// Bumped under the write lock by every [`MemState::apply`].
    version: AtomicU64,
}

impl std::fmt::Debug for MemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemState").field("version", &self.version()).finish_non_exhaustive()
    }
}

/// How many optimistic attempts [`MemState::consistent`] makes before it holds the read lock.
const OPTIMISTIC_ATTEMPTS: usize = 3;

impl MemState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of diffs applied so far; changes whenever the state does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The account's fields, or `None` if it does not exist.
    pub fn account(&self, address: &Address) -> Option<AccountData> {
        self.tables.read_recursive().accounts.get(address).map(Account::data)
    }

    /// A storage slot's value (zero when unset or the account does not exist).
    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        self.tables
            .read_recursive()
            .accounts
            .get(address)
            .and_then(|a| a.storage.get(slot).copied())
            .unwrap_or_default()
    }

    /// Code by its hash.
    pub fn code_by_hash(&self, hash: &B256) -> Option<Bytecode> {
        if *hash == crate::KECCAK_EMPTY {
            return Some(Bytecode::default());
        }
        self.tables.read_recursive().codes.get(hash).cloned()
    }

    /// The code deployed at `address` (empty for accounts without code).
    pub fn code_at(&self, address: &Address) -> Bytes {
        let tables = self.tables.read_recursive();
        tables
            .accounts
            .get(address)
            .and_then(|a| tables.codes.get(&a.code_hash))
            .map(Bytecode::original_bytes)
            .unwrap_or_default()
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.tables.read_recursive().accounts.len()
    }

    /// Runs `read` so that everything it reads comes from one version of the state: it retries
    /// when a diff was applied meanwhile, and after a few tries runs with writers held off.
    pub fn consistent<T>(&self, mut read: impl FnMut() -> T) -> T {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let before = self.version();
            let value = read();
            if self.version() == before {
                return value;
            }
        }
        let _held = self.tables.read_recursive();
        read()
    }

    /// Applies a diff. Readers see all of it or none of it. Returns the slots that existed
    /// before and were wiped because their account was deleted or re-created (a diff does not
    /// list them, but a key-value commitment over the state must delete them).
    pub fn apply(&self, diff: &StateDiff) -> Vec<(Address, U256)> {
        let mut wiped = Vec::new();
        let mut tables = self.tables.write();
        for (hash, code) in &diff.codes {
            tables.codes.entry(*hash).or_insert_with(|| code.clone());
        }
        for (address, change) in &diff.accounts {
            match &change.info {
                None => {
                    if let Some(old) = tables.accounts.remove(address) {
                        wiped.extend(old.storage.into_keys().map(|slot| (*address, slot)));
                    }
                }
                Some(info) => {
                    let account = tables.accounts.entry(*address).or_default();
                    account.nonce = info.nonce;
                    account.balance = info.balance;
                    account.code_hash = info.code_hash;
                    if change.storage_cleared {
                        wiped.extend(
                            account
                                .storage
                                .drain()
                                .map(|(slot, _)| (*address, slot))
                                .filter(|key| !change.storage.contains_key(&key.1)),
                        );
                    }
                    for (slot, value) in &change.storage {
                        if value.is_zero() {
                            account.storage.remove(slot);
                        } else {
                            account.storage.insert(*slot, *value);
                        }
                    }
                }
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        wiped
    }

    /// Calls `f` for every account, in no particular order, under the read lock.
    pub fn for_each_account(&self, mut f: impl FnMut(&Address, &Account)) {
        let tables = self.tables.read_recursive();
        for (address, account) in &tables.accounts {
            f(address, account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::AccountDiff;

    #[test]
    fn apply_creates_updates_and_deletes() {
        let state = MemState::new();
        let a = Address::repeat_byte(7);
        let mut diff = StateDiff::default();
        diff.accounts.insert(
            a,
            AccountDiff {
                info: Some(AccountData {
                    nonce: 1,
                    balance: U256::from(5),
                    code_hash: crate::KECCAK_EMPTY,
                }),
                storage_cleared: false,
                storage: [(U256::from(1), U256::from(9)), (U256::from(2), U256::ZERO)].into(),
            },
        );
        let v0 = state.version();
        state.apply(&diff);
        assert_eq!(state.version(), v0 + 1);
        assert_eq!(state.account(&a).unwrap().nonce, 1);
        assert_eq!(state.storage(&a, &U256::from(1)), U256::from(9));
        assert_eq!(state.storage(&a, &U256::from(2)), U256::ZERO);

        let mut delete = StateDiff::default();
        delete.accounts.insert(a, AccountDiff::default());
        assert_eq!(state.apply(&delete), vec![(a, U256::from(1))]);
        assert_eq!(state.account(&a), None);
        assert_eq!(state.storage(&a, &U256::from(1)), U256::ZERO);
    }
}
