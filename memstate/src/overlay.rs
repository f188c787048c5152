//! revm's view of the state for a run of transactions: reads fall through to [`MemState`],
//! writes stay in a [`StateDiff`] until the caller applies it.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256};
use revm::{
    database_interface::{Database, DatabaseCommit},
    primitives::AddressMap,
    state::{Account as RevmAccount, AccountInfo, Bytecode},
};

use crate::{
    diff::{AccountData, AccountDiff, StateDiff},
    state::{MemState, StateError},
};

/// Where BLOCKHASH looks. revm asks only for the 256 blocks before the current one.
pub trait BlockHashes {
    /// The hash of block `number`.
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
}

/// No known block hashes: every lookup fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBlockHashes;

impl BlockHashes for NoBlockHashes {
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Err(StateError::BlockHashUnavailable(number))
    }
}

impl<F: Fn(u64) -> Result<B256, StateError>> BlockHashes for F {
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self(number)
    }
}

/// A writable layer over a shared [`MemState`]; the layer is the [`StateDiff`] it accumulates.
/// It records which keys revm read through it ([`ReadSet`]): a block's witness is built from
/// them.
#[derive(Debug)]
pub struct Overlay<'a, H> {
    base: &'a MemState,
    hashes: H,
    /// Changed accounts, in a B-tree while transactions commit in no order of address; the
    /// [`StateDiff`] is sorted once, at the end.
    accounts: BTreeMap<Address, AccountDiff>,
    codes: BTreeMap<B256, Bytecode>,
    reads: ReadSet,
}

/// The keys a run of transactions read through revm's `Database`: accounts, storage slots and
/// block hashes, in the order read (with repeats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// Accounts.
    pub accounts: Vec<Address>,
    /// Storage slots.
    pub slots: Vec<(Address, U256)>,
    /// Block numbers whose hash was asked for.
    pub block_hashes: Vec<u64>,
}

impl ReadSet {
    /// Adds `other`'s keys.
    pub fn extend(&mut self, other: &ReadSet) {
        self.accounts.extend_from_slice(&other.accounts);
        self.slots.extend_from_slice(&other.slots);
        self.block_hashes.extend_from_slice(&other.block_hashes);
    }

    /// Sorts and drops repeats.
    pub fn normalize(&mut self) {
        self.accounts.sort_unstable();
        self.accounts.dedup();
        self.slots.sort_unstable();
        self.slots.dedup();
        self.block_hashes.sort_unstable();
        self.block_hashes.dedup();
    }
}

/// revm's account info for an account's fields (code left for revm to load by hash, except
/// the empty code).
pub fn account_info(data: AccountData) -> AccountInfo {
    // `AccountInfo::default()` carries empty code; revm must load the real code by hash.
    let code = (data.code_hash == crate::KECCAK_EMPTY).then(Bytecode::default);
    AccountInfo {
        nonce: data.nonce,
        balance: data.balance,
        code_hash: data.code_hash,
        code,
        ..Default::default()
    }
}

impl<'a, H: BlockHashes> Overlay<'a, H> {
    /// An empty layer over `base`.
    pub fn new(base: &'a MemState, hashes: H) -> Self {
        Self {
            base,
            hashes,
            accounts: BTreeMap::new(),
            codes: BTreeMap::new(),
            reads: ReadSet::default(),
        }
    }

    /// The keys revm has read through this layer so far.
    pub fn reads(&self) -> &ReadSet {
        &self.reads
    }

    /// Ends the layer, returning its changes and the keys read.
    pub fn into_parts(self) -> (StateDiff, ReadSet) {
        let diff = StateDiff {
            // A B-tree iterates in key order: collecting appends without sorting.
            accounts: self.accounts.into_iter().collect(),
            codes: self.codes,
        };
        (diff, self.reads)
    }

    /// Ends the layer, returning its changes.
    pub fn into_diff(self) -> StateDiff {
        self.into_parts().0
    }

    /// The account as this layer sees it.
    pub fn account(&self, address: &Address) -> Option<AccountData> {
        match self.accounts.get(address) {
            Some(change) => change.info,
            None => self.base.account(address),
        }
    }

    /// Code by hash as this layer sees it.
    pub fn code(&self, hash: &B256) -> Option<Bytecode> {
        match self.codes.get(hash) {
            Some(code) => Some(code.clone()),
            None => self.base.code_by_hash(hash),
        }
    }

    /// The hash of block `number`, from the layer's block-hash source.
    pub fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.hashes.block_hash(number)
    }

    /// A slot as this layer sees it.
    pub fn storage_value(&self, address: &Address, slot: &U256) -> U256 {
        if let Some(change) = self.accounts.get(address) {
            if let Some(value) = change.storage.get(slot) {
                return *value;
            }
            if change.storage_cleared || change.info.is_none() {
                return U256::ZERO;
            }
        }
        self.base.storage(address, slot)
    }

    fn commit_account(&mut self, address: Address, account: RevmAccount) {
        if !account.is_touched() {
            return;
        }
        let change = self.accounts.entry(address).or_default();
        // revm leaves the EIP-161 rule to the database: touched empty accounts are removed.
        if account.is_selfdestructed() || account.is_empty() {
            change.info = None;
            change.storage_cleared = true;
            change.storage.clear();
            return;
        }
        if account.is_created() {
            change.storage_cleared = true;
            change.storage.clear();
        }
        change.info = Some(AccountData {
            nonce: account.info.nonce,
            balance: account.info.balance,
            code_hash: account.info.code_hash,
        });
        for (slot, value) in account.storage {
            if value.is_changed() || account.status.contains(revm::state::AccountStatus::Created) {
                change.storage.insert(slot, value.present_value);
            }
        }
        if let Some(code) = account.info.code
            && account.info.code_hash != crate::KECCAK_EMPTY
            && !self.codes.contains_key(&account.info.code_hash)
            && self.base.code_by_hash(&account.info.code_hash).is_none()
        {
            self.codes.insert(account.info.code_hash, code);
        }
    }
}

impl<H: BlockHashes> Database for Overlay<'_, H> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        self.reads.accounts.push(address);
        Ok(self.account(&address).map(account_info))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        Ok(self.code(&code_hash).unwrap_or_default())
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        self.reads.slots.push((address, index));
        Ok(self.storage_value(&address, &index))
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.reads.block_hashes.push(number);
        Overlay::block_hash(self, number)
    }
}

impl<H: BlockHashes> DatabaseCommit for Overlay<'_, H> {
    fn commit(&mut self, changes: AddressMap<RevmAccount>) {
        for (address, account) in changes {
            self.commit_account(address, account);
        }
    }
}
