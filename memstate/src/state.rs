//! The state tables: accounts (each with its storage) in shards by address, code by hash.
//!
//! Shards are hashbrown tables whose memory comes from the numa crate's node arenas (huge
//! pages when the host has them, bound to the node); shard `i` lives on node
//! `nodes[i % nodes.len()]`, so a node's executors can be given the addresses whose shards are
//! local. Each shard has its own lock, so readers on many cores do not share one lock word.

use std::{
    cell::RefCell,
    hash::{BuildHasher, Hasher},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use alloy_primitives::{Address, B256, Bytes, U256};
use numa::NodeAlloc;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use revm::state::Bytecode;

use crate::diff::{AccountData, StateDiff};

/// Hashes table keys with foldhash under a seed drawn once per process, so that keys chosen by
/// users (storage slots) cannot be aimed at one bucket. Zero-sized: tables do not store it.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher;

impl BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        foldhash::fast::FixedState::with_seed(seed).build_hasher()
    }
}

/// One account's storage: non-zero slots, in a `HashTable` whose bucket API lets a batch of
/// reads prefetch ([`MemState::storage_many`]).
#[derive(Clone, Debug)]
struct Storage(hashbrown::HashTable<(U256, U256), NodeAlloc>);

fn hash_slot(slot: &U256) -> u64 {
    KeyHasher.hash_one(slot)
}

impl Storage {
    fn new_in(alloc: NodeAlloc) -> Self {
        Self(hashbrown::HashTable::new_in(alloc))
    }

    fn find(&self, hash: u64, slot: &U256) -> Option<U256> {
        self.0.find(hash, |(s, _)| s == slot).map(|(_, value)| *value)
    }

    fn insert(&mut self, hash: u64, slot: U256, value: U256) {
        match self.0.entry(hash, |(s, _)| *s == slot, |(s, _)| hash_slot(s)) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => entry.get_mut().1 = value,
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert((slot, value));
            }
        }
    }

    fn remove(&mut self, hash: u64, slot: &U256) {
        if let Ok(entry) = self.0.find_entry(hash, |(s, _)| s == slot) {
            entry.remove();
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Starts loading the entry of `table` that `hash` most likely names (the first bucket whose
/// control byte matches, nearly always the one), so that a read a few keys later finds it in
/// cache. Reads only the control bytes.
fn prefetch_entry<T>(table: &hashbrown::HashTable<T, NodeAlloc>, hash: u64) {
    if let Some(entry) = table
        .iter_hash_buckets(hash)
        .next()
        .and_then(|i| table.get_bucket(i))
        .map(|e| e as *const T)
    {
        prefetch(entry.cast());
        prefetch(entry.cast::<u8>().wrapping_add(size_of::<T>() - 1));
    }
}

/// A hint to load the cache line holding `p`; it never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing architecturally and cannot fault,
    // even for an invalid address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many reads ahead a batch read prefetches ([`StateView::accounts`],
/// [`MemState::storage_many`], [`MemState::apply`], the codec's key index): enough to cover a
/// miss to memory with the work of the reads in between, few enough that the lines are still
/// there.
pub(crate) const PREFETCH_DISTANCE: usize = 8;

/// Where the keys of a pass go (their hashes), worked out `PREFETCH_DISTANCE` keys ahead of
/// the pass and kept in a ring on the stack, so that a pass can prefetch without a copy of its
/// keys (batch reads and [`MemState::apply`]). `locate` computes a key's place and starts
/// loading its entry; it is passed to each call rather than kept, so the pass may borrow the
/// tables mutably between.
struct Lookahead<I, T> {
    keys: I,
    ring: [T; PREFETCH_DISTANCE],
    at: usize,
}

impl<'a, K: 'a, I: Iterator<Item = &'a K>, T: Copy + Default> Lookahead<I, T> {
    fn new(mut keys: I, mut locate: impl FnMut(&K) -> T) -> Self {
        let mut ring = [T::default(); PREFETCH_DISTANCE];
        for place in ring.iter_mut() {
            let Some(key) = keys.next() else { break };
            *place = locate(key);
        }
        Self { keys, ring, at: 0 }
    }

    /// The place of the pass's next key (in the order of the iterator given to `new`).
    fn next(&mut self, locate: impl FnOnce(&K) -> T) -> T {
        let i = self.at % PREFETCH_DISTANCE;
        self.at += 1;
        let place = self.ring[i];
        if let Some(key) = self.keys.next() {
            self.ring[i] = locate(key);
        }
        place
    }
}

/// One account with its storage.
///
/// Most accounts are plain (no code, no storage): their entry is the nonce, the balance and an
/// empty pointer (56 bytes), and a contract's code hash and storage live behind that pointer.
#[derive(Clone, Debug, Default)]
pub struct Account {
    /// Transaction count.
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Code hash and storage, for accounts with either.
    extra: Option<allocator_api2::boxed::Box<Extra, NodeAlloc>>,
}

#[derive(Clone, Debug)]
struct Extra {
    code_hash: B256,
    /// Non-zero storage slots.
    storage: Storage,
}

impl PartialEq for Account {
    fn eq(&self, other: &Self) -> bool {
        self.data() == other.data() && self.storage_len() == other.storage_len() && {
            self.storage().all(|(k, v)| other.slot(k) == *v)
        }
    }
}

impl Eq for Account {}

impl Account {
    fn data(&self) -> AccountData {
        AccountData { nonce: self.nonce, balance: self.balance, code_hash: self.code_hash() }
    }

    /// Hash of the account's code ([`crate::KECCAK_EMPTY`] when it has none).
    pub fn code_hash(&self) -> B256 {
        self.extra.as_ref().map_or(crate::KECCAK_EMPTY, |e| e.code_hash)
    }

    /// Its non-zero storage slots, in no particular order.
    pub fn storage(&self) -> impl Iterator<Item = (&U256, &U256)> {
        self.extra.iter().flat_map(|e| e.storage.0.iter().map(|(k, v)| (k, v)))
    }

    /// Number of non-zero slots.
    pub fn storage_len(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| e.storage.len())
    }

    /// A slot's value (zero when unset).
    pub fn slot(&self, slot: &U256) -> U256 {
        self.extra.as_ref().and_then(|e| e.storage.find(hash_slot(slot), slot)).unwrap_or_default()
    }

    fn extra(&mut self, alloc: NodeAlloc) -> &mut Extra {
        self.extra.get_or_insert_with(|| {
            let extra = Extra { code_hash: crate::KECCAK_EMPTY, storage: Storage::new_in(alloc) };
            allocator_api2::boxed::Box::new_in(extra, alloc)
        })
    }

    fn set_code_hash(&mut self, alloc: NodeAlloc, hash: B256) {
        if hash != self.code_hash() {
            self.extra(alloc).code_hash = hash;
            self.shrink();
        }
    }

    /// Sets a slot whose [`hash_slot`] is `hash` (zero deletes it).
    fn set_slot(&mut self, alloc: NodeAlloc, hash: u64, slot: U256, value: U256) {
        if !value.is_zero() {
            self.extra(alloc).storage.insert(hash, slot, value);
        } else if let Some(extra) = &mut self.extra {
            extra.storage.remove(hash, &slot);
            self.shrink();
        }
    }

    /// Starts loading the entry of the slot whose [`hash_slot`] is `hash`.
    fn prefetch_slot(&self, hash: u64) {
        if let Some(extra) = &self.extra {
            prefetch_entry(&extra.storage.0, hash);
        }
    }

    /// Drops the box when it holds nothing.
    fn shrink(&mut self) {
        if self
            .extra
            .as_ref()
            .is_some_and(|e| e.code_hash == crate::KECCAK_EMPTY && e.storage.is_empty())
        {
            self.extra = None;
        }
    }

    /// Removes every slot, returning their keys.
    fn take_slots(&mut self) -> Vec<U256> {
        let Some(extra) = &mut self.extra else { return Vec::new() };
        let slots = extra.storage.0.drain().map(|(k, _)| k).collect();
        self.shrink();
        slots
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

/// A shard's accounts. A `HashTable` rather than a `HashMap`, because its bucket API lets a
/// batch of reads prefetch the entries it will need ([`StateView::accounts`]).
type AccountTable = hashbrown::HashTable<(Address, Account), NodeAlloc>;

fn hash_address(address: &Address) -> u64 {
    KeyHasher.hash_one(address)
}

struct Shard {
    accounts: AccountTable,
    alloc: NodeAlloc,
}

impl Shard {
    fn get(&self, address: &Address) -> Option<&Account> {
        self.find(hash_address(address), address)
    }

    fn find(&self, hash: u64, address: &Address) -> Option<&Account> {
        self.accounts.find(hash, |(a, _)| a == address).map(|(_, account)| account)
    }

    fn prefetch(&self, hash: u64) {
        prefetch_entry(&self.accounts, hash);
    }

    /// The account at `address`, whose [`hash_address`] is `hash`, created empty if missing.
    fn get_or_insert(&mut self, hash: u64, address: &Address) -> &mut Account {
        let entry = self
            .accounts
            .entry(hash, |(a, _)| a == address, |(a, _)| hash_address(a))
            .or_insert_with(|| (*address, Account::default()));
        &mut entry.into_mut().1
    }

    /// The account in `bucket`, if that bucket holds `address`.
    fn at_bucket(&mut self, bucket: usize, address: &Address) -> Option<&mut Account> {
        self.accounts
            .get_bucket_mut(bucket)
            .filter(|(a, _)| a == address)
            .map(|(_, account)| account)
    }

    fn remove(&mut self, address: &Address) -> Option<Account> {
        let hash = hash_address(address);
        self.accounts.find_entry(hash, |(a, _)| a == address).ok().map(|entry| entry.remove().0.1)
    }
}

/// How the tables are spread over memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of account shards, a power of two.
    pub shards: usize,
    /// Nodes whose arenas hold the shards, round-robin. Never empty.
    pub nodes: Vec<usize>,
}

impl Default for Layout {
    fn default() -> Self {
        Self { shards: 64, nodes: vec![0] }
    }
}

/// Sizes of the state, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    /// Accounts.
    pub accounts: u64,
    /// Non-zero storage slots.
    pub slots: u64,
    /// Distinct contract codes.
    pub codes: u64,
    /// Bytes held in the node arenas of this state's nodes (every table in the process that
    /// uses those arenas counts).
    pub arena_bytes: u64,
    /// Per node: what its arena has mapped, by page kind.
    pub arenas: Vec<numa::ArenaStats>,
}

/// The whole state, in memory, shared between one writer and many readers.
pub struct MemState {
    shards: Box<[RwLock<Shard>]>,
    codes: RwLock<hashbrown::HashMap<B256, Bytecode, KeyHasher>>,
    layout: Layout,
    /// Bumped while every shard is write-locked by [`MemState::apply`].
    version: AtomicU64,
}

impl Default for MemState {
    fn default() -> Self {
        Self::with_layout(Layout::default())
    }
}

impl std::fmt::Debug for MemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemState")
            .field("version", &self.version())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// See [`MemState::view`].
pub struct StateView<'a> {
    state: &'a MemState,
    shards: Vec<RwLockReadGuard<'a, Shard>>,
    codes: RwLockReadGuard<'a, hashbrown::HashMap<B256, Bytecode, KeyHasher>>,
}

impl std::fmt::Debug for StateView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

impl StateView<'_> {
    /// The account's fields, or `None` if it does not exist.
    pub fn account(&self, address: &Address) -> Option<AccountData> {
        held_account(self.state, &self.shards, address).map(Account::data)
    }

    /// The fields of every account of `addresses`, appended to `out` in order: as
    /// [`StateView::account`] for each, with the entries of later addresses prefetched while
    /// earlier ones are read, so that the misses of a large state overlap.
    pub fn accounts(&self, addresses: &[Address], out: &mut impl Extend<Option<AccountData>>) {
        held_accounts(self.state, &self.shards, addresses, out, |_| {});
    }

    /// A storage slot's value (zero when unset or the account does not exist).
    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        held_account(self.state, &self.shards, address).map(|a| a.slot(slot)).unwrap_or_default()
    }

    /// As [`MemState::storage_many`].
    pub fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        slots_of(held_account(self.state, &self.shards, address), slots, out);
    }

    /// Code by its hash.
    pub fn code_by_hash(&self, hash: &B256) -> Option<Bytecode> {
        if *hash == crate::KECCAK_EMPTY {
            return Some(Bytecode::default());
        }
        self.codes.get(hash).cloned()
    }
}

/// Where [`StateWriter::accounts`] found an account: valid while the shards stay locked and
/// nothing is inserted, and checked against the key when used.
#[derive(Clone, Copy, Debug)]
struct Found {
    address: Address,
    shard: usize,
    bucket: usize,
}

/// Where [`StateWriter::apply`] writes an account, worked out a few accounts ahead: in shard
/// `shard & !FOUND`, at bucket `at` when `shard` has [`Place::FOUND`] set (where a read found
/// it), else by lookup with `at` its [`hash_address`]. Two words, so that it is returned in
/// registers: returned through memory, its wide reload waits for the narrow stores that wrote
/// it.
#[derive(Clone, Copy, Debug, Default)]
struct Place {
    shard: usize,
    at: u64,
}

impl Place {
    const FOUND: usize = 1 << (usize::BITS - 1);

    fn found(shard: usize, bucket: usize) -> Self {
        Self { shard: shard | Self::FOUND, at: bucket as u64 }
    }

    fn hashed(shard: usize, hash: u64) -> Self {
        Self { shard, at: hash }
    }

    fn shard(self) -> usize {
        self.shard & !Self::FOUND
    }

    /// The bucket a read found it in, if one did.
    fn bucket(self) -> Option<usize> {
        (self.shard & Self::FOUND != 0).then_some(self.at as usize)
    }
}

/// See [`MemState::write`]. Reads through it ([`StateWriter::accounts`]) remember where they
/// found each account, so that [`StateWriter::apply`] writes those accounts without hashing
/// and probing the table again.
pub struct StateWriter<'a> {
    state: &'a MemState,
    codes: RwLockWriteGuard<'a, hashbrown::HashMap<B256, Bytecode, KeyHasher>>,
    shards: Vec<RwLockWriteGuard<'a, Shard>>,
    /// Every account [`StateWriter::accounts`] found, in the order read.
    found: RefCell<Vec<Found>>,
}

impl std::fmt::Debug for StateWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter").finish_non_exhaustive()
    }
}

impl StateWriter<'_> {
    /// The account's fields, or `None` if it does not exist.
    pub fn account(&self, address: &Address) -> Option<AccountData> {
        held_account(self.state, &self.shards, address).map(Account::data)
    }

    /// As [`StateView::accounts`]; it also remembers where each account was found, for
    /// [`StateWriter::apply`].
    pub fn accounts(&self, addresses: &[Address], out: &mut impl Extend<Option<AccountData>>) {
        let mut found = self.found.borrow_mut();
        found.reserve(addresses.len());
        held_accounts(self.state, &self.shards, addresses, out, |f| found.push(f));
    }

    /// A storage slot's value (zero when unset or the account does not exist).
    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        held_account(self.state, &self.shards, address).map(|a| a.slot(slot)).unwrap_or_default()
    }

    /// As [`MemState::storage_many`].
    pub fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        slots_of(held_account(self.state, &self.shards, address), slots, out);
    }

    /// Applies `diff` ([`MemState::apply`]) and releases the locks. Accounts read through
    /// [`StateWriter::accounts`] in ascending order (as the codec reads them) are written where
    /// they were found; the others are looked up.
    pub fn apply(self, diff: &StateDiff) -> Vec<(Address, U256)> {
        let Self { state, mut codes, mut shards, found } = self;
        let mut found = found.into_inner();
        if !found.is_sorted_by(|a, b| a.address < b.address) {
            found.clear();
        }
        let mut wiped = Vec::new();
        for (hash, code) in &diff.codes {
            codes.entry(*hash).or_insert_with(|| code.clone());
        }
        // Each entry is prefetched a few accounts (or slots) ahead, as batch reads do: a
        // follower applies diffs of accounts that are not in cache. Accounts come in ascending
        // order, so their places in `found` are met in order too.
        let next_found = std::cell::Cell::new(0);
        let locate = |shards: &[RwLockWriteGuard<'_, Shard>], address: &Address| {
            let mut i = next_found.get();
            while found.get(i).is_some_and(|f| f.address < *address) {
                i += 1;
            }
            next_found.set(i);
            match found.get(i).filter(|f| f.address == *address) {
                Some(f) => {
                    if let Some(entry) = shards[f.shard].accounts.get_bucket(f.bucket) {
                        prefetch((entry as *const (Address, Account)).cast());
                    }
                    Place::found(f.shard, f.bucket)
                }
                None => {
                    let (shard, hash) = (state.shard_of(address), hash_address(address));
                    shards[shard].prefetch(hash);
                    Place::hashed(shard, hash)
                }
            }
        };
        let mut ahead = Lookahead::new(diff.accounts.keys(), |a| locate(&shards, a));
        for (address, change) in &diff.accounts {
            let place = ahead.next(|a| locate(&shards, a));
            let shard = &mut *shards[place.shard()];
            match &change.info {
                None => {
                    if let Some(mut old) = shard.remove(address) {
                        wiped.extend(old.take_slots().into_iter().map(|slot| (*address, slot)));
                    }
                }
                Some(info) => {
                    let alloc = shard.alloc;
                    let account = match place.bucket() {
                        Some(bucket) => shard.at_bucket(bucket, address),
                        None => None,
                    };
                    let account = match account {
                        Some(account) => account,
                        None => {
                            let hash = match place.bucket() {
                                Some(_) => hash_address(address),
                                None => place.at,
                            };
                            shard.get_or_insert(hash, address)
                        }
                    };
                    account.nonce = info.nonce;
                    account.balance = info.balance;
                    account.set_code_hash(alloc, info.code_hash);
                    if change.storage_cleared {
                        wiped.extend(
                            account
                                .take_slots()
                                .into_iter()
                                .filter(|slot| !change.storage.contains_key(slot))
                                .map(|slot| (*address, slot)),
                        );
                    }
                    if change.storage.is_empty() {
                        continue;
                    }
                    let locate = |account: &Account, slot: &U256| {
                        let hash = hash_slot(slot);
                        account.prefetch_slot(hash);
                        hash
                    };
                    let mut ahead = Lookahead::new(change.storage.keys(), |s| locate(account, s));
                    for (slot, value) in &change.storage {
                        let hash = ahead.next(|s| locate(account, s));
                        account.set_slot(alloc, hash, *slot, *value);
                    }
                }
            }
        }
        state.version.fetch_add(1, Ordering::AcqRel);
        wiped
    }
}

/// The account at `address` in `shards`, every shard of `state` held locked (for reading or
/// writing): what [`StateView`] and [`StateWriter`] read through.
fn held_account<'s, S: std::ops::Deref<Target = Shard>>(
    state: &MemState,
    shards: &'s [S],
    address: &Address,
) -> Option<&'s Account> {
    shards[state.shard_of(address)].get(address)
}

/// The batch read of [`StateView::accounts`] over held `shards`, telling `found` where each
/// account present was found.
fn held_accounts<S: std::ops::Deref<Target = Shard>>(
    state: &MemState,
    shards: &[S],
    addresses: &[Address],
    out: &mut impl Extend<Option<AccountData>>,
    mut found: impl FnMut(Found),
) {
    let locate = |address: &Address| {
        let at = (state.shard_of(address), hash_address(address));
        shards[at.0].prefetch(at.1);
        at
    };
    let mut ahead = Lookahead::new(addresses.iter(), locate);
    out.extend(addresses.iter().map(|address| {
        let (shard, hash) = ahead.next(locate);
        let table = &shards[shard].accounts;
        let bucket = table.find_bucket_index(hash, |(a, _)| a == address)?;
        found(Found { address: *address, shard, bucket });
        table.get_bucket(bucket).map(|(_, account)| account.data())
    }));
}

fn slots_of(account: Option<&Account>, slots: &[U256], out: &mut Vec<U256>) {
    match account.and_then(|a| a.extra.as_deref()) {
        Some(extra) => {
            let locate = |slot: &U256| {
                let hash = hash_slot(slot);
                prefetch_entry(&extra.storage.0, hash);
                hash
            };
            let mut ahead = Lookahead::new(slots.iter(), locate);
            out.extend(
                slots
                    .iter()
                    .map(|slot| extra.storage.find(ahead.next(locate), slot).unwrap_or_default()),
            );
        }
        None => out.extend(slots.iter().map(|_| U256::ZERO)),
    }
}

/// How many optimistic attempts [`MemState::consistent`] makes before it holds the read locks.
const OPTIMISTIC_ATTEMPTS: usize = 3;

impl MemState {
    /// An empty state with the default layout (64 shards on node 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state laid out as asked. A layout with no nodes uses node 0; the shard count is
    /// rounded up to a power of two.
    pub fn with_layout(mut layout: Layout) -> Self {
        if layout.nodes.is_empty() {
            layout.nodes.push(0);
        }
        layout.shards = layout.shards.max(1).next_power_of_two();
        let shards = (0..layout.shards)
            .map(|i| {
                let alloc = NodeAlloc::node(layout.nodes[i % layout.nodes.len()]);
                RwLock::new(Shard { accounts: AccountTable::new_in(alloc), alloc })
            })
            .collect();
        Self {
            shards,
            codes: RwLock::new(hashbrown::HashMap::with_hasher(KeyHasher)),
            layout,
            version: AtomicU64::new(0),
        }
    }

    /// The layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The shard an address lives in. Addresses are hashes (or small numbers), so their last
    /// bytes spread evenly.
    pub fn shard_of(&self, address: &Address) -> usize {
        let tail = u16::from_be_bytes([address[18], address[19]]) as usize;
        tail & (self.shards.len() - 1)
    }

    /// The node whose memory holds `address`'s account.
    pub fn node_of(&self, address: &Address) -> usize {
        self.layout.nodes[self.shard_of(address) % self.layout.nodes.len()]
    }

    fn shard(&self, address: &Address) -> RwLockReadGuard<'_, Shard> {
        self.shards[self.shard_of(address)].read_recursive()
    }

    /// Number of diffs applied so far; changes whenever the state does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The account's fields, or `None` if it does not exist.
    pub fn account(&self, address: &Address) -> Option<AccountData> {
        self.shard(address).get(address).map(Account::data)
    }

    /// A storage slot's value (zero when unset or the account does not exist).
    pub fn storage(&self, address: &Address, slot: &U256) -> U256 {
        self.shard(address).get(address).map(|a| a.slot(slot)).unwrap_or_default()
    }

    /// The values of several of one account's slots, appended to `out` in the order of
    /// `slots`: the account is looked up once.
    pub fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        slots_of(self.shard(address).get(address), slots, out);
    }

    /// Code by its hash.
    pub fn code_by_hash(&self, hash: &B256) -> Option<Bytecode> {
        if *hash == crate::KECCAK_EMPTY {
            return Some(Bytecode::default());
        }
        self.codes.read_recursive().get(hash).cloned()
    }

    /// The code deployed at `address` (empty for accounts without code).
    pub fn code_at(&self, address: &Address) -> Bytes {
        self.consistent(|| {
            let hash = self.account(address)?.code_hash;
            self.code_by_hash(&hash).map(|c| c.original_bytes())
        })
        .unwrap_or_default()
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.shards.iter().map(|s| s.read_recursive().accounts.len()).sum()
    }

    /// Counts and bytes, for reports and metrics.
    pub fn memory_report(&self) -> MemoryReport {
        let mut report = MemoryReport::default();
        for shard in self.shards.iter() {
            let shard = shard.read_recursive();
            report.accounts += shard.accounts.len() as u64;
            report.slots += shard.accounts.iter().map(|(_, a)| a.storage_len() as u64).sum::<u64>();
        }
        report.codes = self.codes.read_recursive().len() as u64;
        let mut nodes = self.layout.nodes.clone();
        nodes.sort_unstable();
        nodes.dedup();
        report.arenas = nodes.iter().map(|&n| numa::NodeArena::of(n).stats()).collect();
        report.arena_bytes = report.arenas.iter().map(|a| a.allocated).sum();
        report
    }

    /// A read-only view holding every table's read lock: reads through it take no lock and
    /// touch no shared counter, so many threads can read the same hot account without their
    /// cores trading a lock's cache line. Writers ([`MemState::apply`]) wait until it is
    /// dropped; hold it for one batch of execution, not longer.
    pub fn view(&self) -> StateView<'_> {
        StateView {
            state: self,
            shards: self.shards.iter().map(|s| s.read_recursive()).collect(),
            codes: self.codes.read_recursive(),
        }
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
        let _held: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        read()
    }

    /// Applies a diff. Readers see all of it or none of it: every shard is write-locked (in
    /// order) for the duration. Returns the slots that existed before and were wiped because
    /// their account was deleted or re-created (a diff does not list them, but a key-value
    /// commitment over the state must delete them).
    pub fn apply(&self, diff: &StateDiff) -> Vec<(Address, U256)> {
        self.write().apply(diff)
    }

    /// Every table write-locked, to read a diff's prior values and then apply it in one hold
    /// (a full node decoding a message: [`crate::DiffCodec::decode_apply`]). Readers wait
    /// until it is dropped or applied. Do not hold a [`StateView`] on the same thread.
    pub fn write(&self) -> StateWriter<'_> {
        StateWriter {
            state: self,
            codes: self.codes.write(),
            shards: self.shards.iter().map(|s| s.write()).collect(),
            found: RefCell::new(Vec::new()),
        }
    }

    /// Calls `f` for every account, in no particular order, under every shard's read lock (so
    /// it sees one version of the state).
    pub fn for_each_account(&self, mut f: impl FnMut(&Address, &Account)) {
        let held: Vec<_> = self.shards.iter().map(|s| s.read_recursive()).collect();
        for shard in &held {
            for (address, account) in shard.accounts.iter() {
                f(address, account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::AccountDiff;

    /// A writer writes the accounts it read where it found them, and still writes the right
    /// ones when the inserts of the same diff grow the table and move them.
    #[test]
    fn a_writer_applies_what_a_plain_apply_does_when_inserts_move_what_it_read() {
        let data = |balance: u64| AccountData {
            nonce: 1,
            balance: U256::from(balance),
            code_hash: crate::KECCAK_EMPTY,
        };
        let set = |addresses: &mut dyn Iterator<Item = Address>, balance: &dyn Fn(u8) -> u64| {
            let mut diff = StateDiff::default();
            for a in addresses {
                let change = AccountDiff { info: Some(data(balance(a[19]))), ..Default::default() };
                diff.accounts.insert(a, change);
            }
            diff
        };
        // One shard, so every insert lands in the table the reads found their accounts in.
        let layout = Layout { shards: 1, nodes: vec![0] };
        let (fused, plain) = (MemState::with_layout(layout.clone()), MemState::with_layout(layout));
        let known: Vec<Address> = (1..=6).map(|i| Address::with_last_byte(i * 40)).collect();
        let genesis = set(&mut known.iter().copied(), &|_| 1);
        fused.apply(&genesis);
        plain.apply(&genesis);

        // Every address of the last byte: the six known ones change, and 250 new ones come
        // before, between and after them, growing the table several times.
        let diff = set(&mut (0..=255u8).map(Address::with_last_byte), &|b| 1000 + u64::from(b));
        let writer = fused.write();
        let mut read = Vec::new();
        writer.accounts(&known, &mut read);
        assert_eq!(read, vec![Some(data(1)); 6]);
        assert_eq!(writer.found.borrow().len(), 6);
        assert_eq!(writer.apply(&diff), plain.apply(&diff));

        assert_eq!(fused.account_count(), 256);
        for b in 0..=255u8 {
            let a = Address::with_last_byte(b);
            assert_eq!(fused.account(&a), Some(data(1000 + u64::from(b))), "account {a}");
        }
        assert_eq!(fused.mpt_root(), plain.mpt_root());
    }

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

    proptest::proptest! {
        /// Batch reads (which prefetch ahead) answer exactly what one read at a time does: for
        /// present and absent accounts and slots, repeated keys, and batches shorter and longer
        /// than the prefetch distance.
        #[test]
        fn batch_reads_equal_single_reads(
            present in proptest::collection::btree_map(0u16..512, 0u8..4, 0..200),
            queries in proptest::collection::vec(0u16..600, 0..40),
            slot_queries in proptest::collection::vec(0u8..6, 0..20),
        ) {
            let address = |i: u16| Address::left_padding_from(&i.to_be_bytes());
            let mut diff = StateDiff::default();
            for (&i, &slots) in &present {
                let storage = (0..slots).map(|s| (U256::from(s), U256::from(u64::from(i) + 1))).collect();
                let info = AccountData { nonce: i.into(), balance: U256::from(i), code_hash: crate::KECCAK_EMPTY };
                diff.accounts.insert(
                    address(i),
                    AccountDiff { info: Some(info), storage_cleared: false, storage },
                );
            }
            let state = MemState::from_diff(&diff);
            let addresses: Vec<Address> = queries.iter().map(|&i| address(i)).collect();
            let view = state.view();
            let mut batch = vec![None];
            view.accounts(&addresses, &mut batch);
            let single: Vec<_> = addresses.iter().map(|a| view.account(a)).collect();
            proptest::prop_assert_eq!(&batch[1..], &single[..], "appended after what was there");
            let slots: Vec<U256> = slot_queries.iter().map(|&s| U256::from(s)).collect();
            for a in &addresses {
                let mut many = Vec::new();
                view.storage_many(a, &slots, &mut many);
                let one: Vec<U256> = slots.iter().map(|s| view.storage(a, s)).collect();
                proptest::prop_assert_eq!(&many, &one);
                let mut locked = Vec::new();
                state.storage_many(a, &slots, &mut locked);
                proptest::prop_assert_eq!(locked, one);
            }
        }
    }

    #[test]
    fn shards_spread_over_nodes_and_memory_is_reported() {
        let state = MemState::with_layout(Layout { shards: 6, nodes: vec![0, 1] });
        assert_eq!(state.layout().shards, 8, "rounded up to a power of two");
        let mut diff = StateDiff::default();
        for i in 0..1000u64 {
            let address = Address::left_padding_from(&i.to_be_bytes());
            let storage = (0..(i % 3)).map(|s| (U256::from(s), U256::from(i + 1))).collect();
            diff.accounts.insert(
                address,
                AccountDiff {
                    info: Some(AccountData {
                        nonce: i,
                        balance: U256::from(i),
                        code_hash: crate::KECCAK_EMPTY,
                    }),
                    storage_cleared: false,
                    storage,
                },
            );
        }
        state.apply(&diff);
        let a = Address::left_padding_from(&5u64.to_be_bytes());
        assert_eq!(state.shard_of(&a), 5);
        assert_eq!(state.node_of(&a), 1);
        assert_eq!(state.account(&a).unwrap().nonce, 5);
        assert_eq!(state.storage(&a, &U256::from(1)), U256::from(6));
        let report = state.memory_report();
        assert_eq!(report.accounts, 1000);
        assert_eq!(report.slots, (0..1000u64).map(|i| i % 3).sum::<u64>());
        assert_eq!(report.arenas.len(), 2);
        assert!(report.arena_bytes > 1000 * 100, "{report:?}");
        let mut seen = 0;
        state.for_each_account(|_, account| seen += account.storage_len());
        assert_eq!(seen as u64, report.slots);
    }
}
