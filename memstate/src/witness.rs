//! Block witnesses: the pre-state of every account, slot and code an EVM block read or wrote,
//! the block hashes it asked for, and a NOMT multiproof of those values against the parent
//! state root. With a witness and the block, and nothing else, a prover re-executes the block
//! ([`VerifiedWitness::state`]), checks that it read nothing the witness lacks
//! ([`VerifiedWitness::covers`]) and recomputes the post-state root from the proof and the
//! block's writes ([`VerifiedWitness::post_root`], NOMT's own update logic).
//!
//! The sequencer builds a witness while it commits the block: [`pre_state`] takes the values
//! the block builder captured before each mini-block ([`PreImages`]) and reads the rest from
//! NOMT at the parent root, in the session whose witness supplies the proof.

use std::collections::HashMap;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};
use nomt::{
    KeyReadWrite,
    hasher::{Blake3Hasher, ValueHasher},
    proof::{MultiProof, VerifiedMultiProof},
    trie::LeafData,
};
use revm::state::Bytecode;

use crate::{
    AccountData, AccountDiff, MemState, ReadSet, StateDiff,
    commitment::{account_key, account_value, nomt_ops, slot_key, slot_value},
    state::KeyHasher,
};

/// Format version (the first byte of an encoded witness).
pub const WITNESS_VERSION: u8 = 1;
/// Largest witness accepted, decompressed.
pub const MAX_WITNESS_BYTES: usize = 256 << 20;

/// Why a witness was refused. Each says what is wrong, so a verdict can name it.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Bytes that are not a witness.
    #[error("malformed witness: {0}")]
    Malformed(String),
    /// The multiproof does not hash to the parent root.
    #[error("the witness proof does not verify against parent root {root}: {reason}")]
    Proof {
        /// The parent root.
        root: B256,
        /// NOMT's reason.
        reason: String,
    },
    /// An entry whose value is not the one the parent root commits to.
    #[error("witness entry {0} does not match the parent state root")]
    Entry(String),
    /// A code hash whose code the witness lacks.
    #[error("the witness has no code for {0}")]
    MissingCode(B256),
    /// The block read a key the witness does not hold.
    #[error("read outside the witness: {0}")]
    ReadOutside(String),
    /// The writes cannot be applied to the proof (a write outside the witness).
    #[error("post-state root: {0}")]
    Update(String),
    /// NOMT failed while building a witness.
    #[error("NOMT: {0}")]
    Nomt(String),
    /// What the witness needs is not at hand (a code, a block hash); nothing was committed.
    #[error("the witness cannot be built: {0}")]
    Unavailable(String),
}

/// The pre-state of a block's keys and its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    /// Accounts (`None`: no account), sorted by address.
    pub accounts: Vec<(Address, Option<AccountData>)>,
    /// Storage slots, sorted.
    pub slots: Vec<(Address, U256, U256)>,
    /// Code of the accounts that have some.
    pub codes: Vec<Bytes>,
    /// Block hashes read by BLOCKHASH.
    pub block_hashes: Vec<(u64, B256)>,
    /// NOMT multiproof of the accounts and slots against the parent root.
    pub proof: MultiProof,
}

/// The pre-state values of a block's keys, read from NOMT at the parent root, and the NOMT
/// operations that commit the block.
#[derive(Debug)]
pub struct PreState {
    /// Accounts, sorted.
    pub accounts: Vec<(Address, Option<AccountData>)>,
    /// Slots, sorted.
    pub slots: Vec<(Address, U256, U256)>,
    /// The block's operations, sorted by key path: its writes, and a read of every other key.
    pub ops: Vec<([u8; 32], KeyReadWrite)>,
}

fn decode_account(value: &[u8]) -> Result<AccountData, String> {
    if value.len() != 72 {
        return Err(format!("account value of {} bytes", value.len()));
    }
    Ok(AccountData {
        nonce: u64::from_be_bytes(value[..8].try_into().expect("8 bytes")),
        balance: U256::from_be_slice(&value[8..40]),
        code_hash: B256::from_slice(&value[40..72]),
    })
}

/// The pre-block values of the keys a block touches, captured by the block builder from its
/// state just before each mini-block's diff is applied ([`PreImages::capture`]): a key the
/// block has not touched before still holds its pre-block value there. With them the
/// committer builds the witness without reading those keys back from NOMT.
///
/// A slot of an account whose storage an earlier mini-block of the block cleared (deletion
/// or re-creation) is not captured after that: the state no longer holds its pre-block value.
/// Such keys, and any other key not captured, are read from NOMT.
#[derive(Clone, Debug, Default)]
pub struct PreImages {
    accounts: HashMap<Address, Option<AccountData>, KeyHasher>,
    slots: HashMap<(Address, U256), U256, KeyHasher>,
    cleared: std::collections::HashSet<Address, KeyHasher>,
}

impl PreImages {
    /// Records, from `state` (the state before `diff` is applied), the value of every key
    /// `reads` lists or `diff` writes that this block has not touched yet.
    pub fn capture(&mut self, state: &MemState, reads: &ReadSet, diff: &StateDiff) {
        for address in reads.accounts.iter().chain(diff.accounts.keys()) {
            self.accounts.entry(*address).or_insert_with(|| state.account(address));
        }
        let written = diff.accounts.iter().flat_map(|(a, c)| c.storage.keys().map(|s| (*a, *s)));
        for (address, slot) in reads.slots.iter().copied().chain(written) {
            if !self.cleared.contains(&address) {
                self.slots.entry((address, slot)).or_insert_with(|| state.storage(&address, &slot));
            }
        }
        for (address, change) in &diff.accounts {
            if change.storage_cleared || change.info.is_none() {
                self.cleared.insert(*address);
            }
        }
    }

    /// Keys captured.
    pub fn len(&self) -> usize {
        self.accounts.len() + self.slots.len()
    }

    /// Nothing captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the pre-state of every key the block touched (those `reads` recorded and those
/// `diff` and `wiped` write): from `known` where it has the key, otherwise through `read`
/// (NOMT's session at the parent root), after passing every key path to `warm_up` (NOMT
/// fetches its pages meanwhile). Each key path is hashed once.
pub fn pre_state(
    read: impl Fn(&[u8; 32]) -> Result<Option<Vec<u8>>, String>,
    warm_up: impl Fn(&[u8; 32]),
    known: &PreImages,
    diff: &StateDiff,
    wiped: &[(Address, U256)],
    reads: &ReadSet,
) -> Result<PreState, WitnessError> {
    let mut accounts: Vec<Address> =
        reads.accounts.iter().chain(diff.accounts.keys()).copied().collect();
    accounts.sort_unstable();
    accounts.dedup();
    let mut slots: Vec<(Address, U256)> = reads
        .slots
        .iter()
        .copied()
        .chain(wiped.iter().copied())
        .chain(diff.accounts.iter().flat_map(|(a, c)| c.storage.keys().map(|s| (*a, *s))))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    let accounts: Vec<_> = accounts.into_iter().map(|a| (account_key(&a), a)).collect();
    let slots: Vec<_> = slots.into_iter().map(|(a, s)| (slot_key(&a, &s), a, s)).collect();
    for key in accounts.iter().map(|a| &a.0).chain(slots.iter().map(|s| &s.0)) {
        warm_up(key);
    }
    let wiped: std::collections::HashSet<&(Address, U256)> = wiped.iter().collect();
    // In debug builds every captured value is checked against NOMT (in release nothing of
    // this runs, not even the encoding of the captured value).
    let check = |key: &[u8; 32], captured: &dyn Fn() -> Option<Vec<u8>>| {
        if cfg!(debug_assertions) {
            let stored = read(key).map_err(WitnessError::Nomt)?;
            assert_eq!(stored, captured(), "captured pre-state differs from NOMT");
        }
        Ok::<(), WitnessError>(())
    };
    let mut ops = Vec::with_capacity(accounts.len() + slots.len());
    let mut pre_accounts = Vec::with_capacity(accounts.len());
    for (key, address) in accounts {
        let data = match known.accounts.get(&address) {
            Some(data) => {
                check(&key, &|| data.map(|d| account_value(&d)))?;
                *data
            }
            None => match read(&key).map_err(WitnessError::Nomt)? {
                Some(v) => Some(decode_account(&v).map_err(WitnessError::Nomt)?),
                None => None,
            },
        };
        let op = match diff.accounts.get(&address) {
            Some(change) => KeyReadWrite::Write(change.info.map(|info| account_value(&info))),
            None => KeyReadWrite::Read(data.map(|d| account_value(&d))),
        };
        ops.push((key, op));
        pre_accounts.push((address, data));
    }
    let mut pre_slots = Vec::with_capacity(slots.len());
    for (key, address, slot) in slots {
        let word = match known.slots.get(&(address, slot)) {
            Some(word) => {
                check(&key, &|| slot_value(word))?;
                *word
            }
            None => read(&key)
                .map_err(WitnessError::Nomt)?
                .as_deref()
                .map_or(U256::ZERO, U256::from_be_slice),
        };
        let written = diff.accounts.get(&address).and_then(|c| c.storage.get(&slot));
        let op = match written {
            Some(value) => KeyReadWrite::Write(slot_value(value)),
            None if wiped.contains(&(address, slot)) => KeyReadWrite::Write(None),
            None => KeyReadWrite::Read(slot_value(&word)),
        };
        ops.push((key, op));
        pre_slots.push((address, slot, word));
    }
    ops.sort_unstable_by_key(|op| op.0);
    Ok(PreState { accounts: pre_accounts, slots: pre_slots, ops })
}

/// Commits a block's writes to `nomt` in a session with witness mode on, and returns the new
/// root and the block's witness: its pre-state (the keys `reads` lists and those it writes;
/// from `known` where it has them, otherwise read from NOMT), with `code` for the accounts'
/// code and `block_hash` for the hashes it asked for.
pub fn commit_with_witness(
    nomt: &nomt::Nomt<Blake3Hasher>,
    diff: &StateDiff,
    wiped: &[(Address, U256)],
    reads: &ReadSet,
    known: &PreImages,
    code: impl Fn(&B256) -> Option<Bytes>,
    block_hash: impl Fn(u64) -> Option<B256>,
) -> Result<(B256, Witness), WitnessError> {
    // What NOMT does not hold is gathered first: when it is missing, nothing is committed and
    // the caller can commit without a witness.
    let mut hashes = Vec::with_capacity(reads.block_hashes.len());
    for number in &reads.block_hashes {
        let hash = block_hash(*number)
            .ok_or_else(|| WitnessError::Unavailable(format!("hash of block {number} unknown")))?;
        hashes.push((*number, hash));
    }
    hashes.sort_unstable();
    hashes.dedup();
    let nomt_error = |e: &dyn std::fmt::Display| WitnessError::Nomt(e.to_string());
    let session = nomt.begin_session(
        nomt::SessionParams::default().witness_mode(nomt::WitnessMode::read_write()),
    );
    let mut pre = pre_state(
        |key| session.read(*key).map_err(|e| e.to_string()),
        |key| session.warm_up(*key),
        known,
        diff,
        wiped,
        reads,
    )?;
    let mut codes = Vec::new();
    for (_, data) in &pre.accounts {
        if let Some(data) = data
            && data.code_hash != crate::KECCAK_EMPTY
        {
            codes.push(code(&data.code_hash).ok_or_else(|| {
                WitnessError::Unavailable(format!("no code for {}", data.code_hash))
            })?);
        }
    }
    let ops = std::mem::take(&mut pre.ops);
    let mut finished = session.finish(ops).map_err(|e| nomt_error(&e))?;
    let root = B256::from(finished.root().into_inner());
    let nomt_witness =
        finished.take_witness().ok_or_else(|| WitnessError::Nomt("no witness recorded".into()))?;
    finished.commit(nomt).map_err(|e| nomt_error(&e))?;
    Ok((root, Witness::new(pre, nomt_witness, codes, hashes)))
}

impl Witness {
    /// A witness from the pre-state, NOMT's witness of the session that committed the block,
    /// the code of the accounts that have some and the block hashes the block asked for.
    pub fn new(
        pre: PreState,
        nomt_witness: nomt::Witness,
        mut codes: Vec<Bytes>,
        block_hashes: Vec<(u64, B256)>,
    ) -> Self {
        let mut paths: Vec<_> = nomt_witness.path_proofs.into_iter().map(|p| p.inner).collect();
        paths.sort_by(|a, b| a.terminal.path().cmp(b.terminal.path()));
        paths.dedup_by(|a, b| a.terminal.path() == b.terminal.path());
        codes.sort();
        codes.dedup();
        Self {
            accounts: pre.accounts,
            slots: pre.slots,
            codes,
            block_hashes,
            proof: MultiProof::from_path_proofs(paths),
        }
    }

    /// The byte form: version, then the zstd-compressed RLP body (the proof inside in NOMT's
    /// borsh encoding).
    pub fn encode(&self) -> Vec<u8> {
        let body = Body {
            accounts: self
                .accounts
                .iter()
                .map(|(address, data)| AccountEntry {
                    address: *address,
                    exists: data.is_some(),
                    nonce: data.map_or(0, |d| d.nonce),
                    balance: data.map_or(U256::ZERO, |d| d.balance),
                    code_hash: data.map_or(B256::ZERO, |d| d.code_hash),
                })
                .collect(),
            slots: self
                .slots
                .iter()
                .map(|(address, slot, value)| SlotEntry {
                    address: *address,
                    slot: *slot,
                    value: *value,
                })
                .collect(),
            codes: self.codes.clone(),
            block_hashes: self
                .block_hashes
                .iter()
                .map(|(number, hash)| HashEntry { number: *number, hash: *hash })
                .collect(),
            proof: borsh::to_vec(&self.proof).expect("in-memory serialization").into(),
        };
        let mut raw = Vec::with_capacity(body.length());
        body.encode(&mut raw);
        let mut out = vec![WITNESS_VERSION];
        // Level 1: on an ERC-20 block (4 MB of RLP, mostly hashes) it compresses as well as
        // level 3 (2.85 MB) in less than half the time (14 against 33 ms).
        out.extend(zstd::bulk::compress(&raw, 1).expect("in-memory compression"));
        out
    }

    /// Parses [`Witness::encode`]'s output. Untrusted bytes give an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, WitnessError> {
        let malformed = |e: &dyn std::fmt::Display| WitnessError::Malformed(e.to_string());
        let (&version, compressed) = bytes.split_first().ok_or_else(|| malformed(&"empty"))?;
        if version != WITNESS_VERSION {
            return Err(malformed(&format!("version {version}, expected {WITNESS_VERSION}")));
        }
        let raw =
            zstd::bulk::decompress(compressed, MAX_WITNESS_BYTES).map_err(|e| malformed(&e))?;
        let mut buf = raw.as_slice();
        let body = Body::decode(&mut buf).map_err(|e| malformed(&e))?;
        if !buf.is_empty() {
            return Err(malformed(&"trailing bytes"));
        }
        let proof: MultiProof = borsh::from_slice(&body.proof).map_err(|e| malformed(&e))?;
        let accounts: Vec<_> = body
            .accounts
            .into_iter()
            .map(|e| {
                let data = e.exists.then_some(AccountData {
                    nonce: e.nonce,
                    balance: e.balance,
                    code_hash: e.code_hash,
                });
                (e.address, data)
            })
            .collect();
        let slots: Vec<_> = body.slots.into_iter().map(|e| (e.address, e.slot, e.value)).collect();
        if !accounts.windows(2).all(|w| w[0].0 < w[1].0)
            || !slots.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
        {
            return Err(malformed(&"entries out of order or repeated"));
        }
        Ok(Self {
            accounts,
            slots,
            codes: body.codes,
            block_hashes: body.block_hashes.into_iter().map(|e| (e.number, e.hash)).collect(),
            proof,
        })
    }

    /// Checks the proof against `parent_root` and every entry against the proof, and that
    /// every account with code has its code here.
    pub fn verify(&self, parent_root: B256) -> Result<VerifiedWitness, WitnessError> {
        if self.proof.paths.is_empty() {
            // A block that touched nothing (no transactions): nothing to prove, and its root
            // is its parent's.
            if !self.accounts.is_empty() || !self.slots.is_empty() {
                return Err(WitnessError::Proof {
                    root: parent_root,
                    reason: "entries without a proof".into(),
                });
            }
            return Ok(VerifiedWitness {
                proof: None,
                parent_root,
                witness: self.clone(),
                codes: HashMap::new(),
            });
        }
        let proof =
            guarded(|| nomt::proof::verify_multi_proof::<Blake3Hasher>(&self.proof, parent_root.0))
                .map_err(|reason| WitnessError::Proof { root: parent_root, reason })?
                .map_err(|e| WitnessError::Proof { root: parent_root, reason: format!("{e:?}") })?;
        let confirm = |key: [u8; 32], value: Option<Vec<u8>>, what: &dyn Fn() -> String| {
            let outcome = guarded(|| match &value {
                Some(v) => proof.confirm_value(&LeafData {
                    key_path: key,
                    value_hash: Blake3Hasher::hash_value(v),
                }),
                None => proof.confirm_nonexistence(&key),
            });
            match outcome {
                Ok(Ok(true)) => Ok(()),
                _ => Err(WitnessError::Entry(what())),
            }
        };
        for (address, data) in &self.accounts {
            let value = data.map(|d| account_value(&d));
            confirm(account_key(address), value, &|| format!("account {address}"))?;
        }
        for (address, slot, value) in &self.slots {
            let bytes = slot_value(value);
            confirm(slot_key(address, slot), bytes, &|| format!("slot {slot:#x} of {address}"))?;
        }
        let codes: HashMap<B256, Bytes> =
            self.codes.iter().map(|c| (keccak256(c), c.clone())).collect();
        for (_, data) in &self.accounts {
            if let Some(data) = data
                && data.code_hash != crate::KECCAK_EMPTY
                && !codes.contains_key(&data.code_hash)
            {
                return Err(WitnessError::MissingCode(data.code_hash));
            }
        }
        Ok(VerifiedWitness { proof: Some(proof), parent_root, witness: self.clone(), codes })
    }
}

/// Runs `f`, turning a panic (NOMT's proof code indexes what it is given) into an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "malformed proof (NOMT's verifier panicked)".to_string())
}

/// How far a [`ReadSet`] has been checked against a witness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checked {
    accounts: usize,
    slots: usize,
    hashes: usize,
}

/// A witness whose every entry the parent root commits to.
#[derive(Debug)]
pub struct VerifiedWitness {
    /// `None` for a witness of nothing.
    proof: Option<VerifiedMultiProof>,
    parent_root: B256,
    witness: Witness,
    codes: HashMap<B256, Bytes>,
}

impl VerifiedWitness {
    /// A state holding exactly the witnessed pre-state (missing keys read as empty: check
    /// [`VerifiedWitness::covers`] after executing over it).
    pub fn state(&self) -> MemState {
        let accounts = (self.witness.accounts.iter()).filter_map(|(address, data)| {
            let info = Some((*data)?);
            Some((*address, AccountDiff { info, ..Default::default() }))
        });
        let mut diff = StateDiff { accounts: accounts.collect(), ..Default::default() };
        for (address, slot, value) in &self.witness.slots {
            if let Some(change) = diff.accounts.get_mut(address)
                && !value.is_zero()
            {
                change.storage.insert(*slot, *value);
            }
        }
        for (hash, code) in &self.codes {
            diff.codes.insert(*hash, Bytecode::new_raw(code.clone()));
        }
        let state = MemState::new();
        state.apply(&diff);
        state
    }

    /// The block hash of `number`, if the witness holds it.
    pub fn block_hash(&self, number: u64) -> Option<B256> {
        self.witness.block_hashes.iter().find(|(n, _)| *n == number).map(|(_, h)| *h)
    }

    /// Checks that every key in `reads` is in the witness.
    pub fn covers(&self, reads: &ReadSet) -> Result<(), WitnessError> {
        self.covers_from(reads, &mut Checked::default())
    }

    /// As [`VerifiedWitness::covers`] for the keys added to `reads` since `checked` (which it
    /// moves on): reads are checked as a block executes, at no more cost than once each.
    pub fn covers_from(&self, reads: &ReadSet, checked: &mut Checked) -> Result<(), WitnessError> {
        for address in &reads.accounts[checked.accounts.min(reads.accounts.len())..] {
            if self.witness.accounts.binary_search_by(|(a, _)| a.cmp(address)).is_err() {
                return Err(WitnessError::ReadOutside(format!("account {address}")));
            }
        }
        for (address, slot) in &reads.slots[checked.slots.min(reads.slots.len())..] {
            if self
                .witness
                .slots
                .binary_search_by(|(a, s, _)| (a, s).cmp(&(address, slot)))
                .is_err()
            {
                return Err(WitnessError::ReadOutside(format!("slot {slot:#x} of {address}")));
            }
        }
        for number in &reads.block_hashes[checked.hashes.min(reads.block_hashes.len())..] {
            if self.block_hash(*number).is_none() {
                return Err(WitnessError::ReadOutside(format!("hash of block {number}")));
            }
        }
        *checked = Checked {
            accounts: reads.accounts.len(),
            slots: reads.slots.len(),
            hashes: reads.block_hashes.len(),
        };
        Ok(())
    }

    /// The post-state root: the parent root updated by the block's writes (`diff`, and the
    /// slots `wiped` by deletions), by NOMT's update logic over the proof.
    pub fn post_root(
        &self,
        diff: &StateDiff,
        wiped: &[(Address, U256)],
    ) -> Result<B256, WitnessError> {
        let ops: Vec<_> = nomt_ops(diff, wiped)
            .into_iter()
            .map(|(key, op)| {
                let value = match op {
                    KeyReadWrite::Write(v) | KeyReadWrite::ReadThenWrite(_, v) => v,
                    KeyReadWrite::Read(_) => unreachable!("nomt_ops writes"),
                };
                (key, value.map(|v| Blake3Hasher::hash_value(&v)))
            })
            .collect();
        let Some(proof) = &self.proof else {
            if ops.is_empty() {
                return Ok(self.parent_root);
            }
            return Err(WitnessError::Update("writes outside an empty witness".into()));
        };
        let root = guarded(|| nomt::proof::verify_multi_proof_update::<Blake3Hasher>(proof, ops))
            .map_err(WitnessError::Update)?
            .map_err(|e| WitnessError::Update(format!("{e:?}")))?;
        Ok(B256::from(root))
    }
}

#[derive(RlpEncodable, RlpDecodable)]
struct AccountEntry {
    address: Address,
    exists: bool,
    nonce: u64,
    balance: U256,
    code_hash: B256,
}

#[derive(RlpEncodable, RlpDecodable)]
struct SlotEntry {
    address: Address,
    slot: U256,
    value: U256,
}

#[derive(RlpEncodable, RlpDecodable)]
struct HashEntry {
    number: u64,
    hash: B256,
}

#[derive(RlpEncodable, RlpDecodable)]
struct Body {
    accounts: Vec<AccountEntry>,
    slots: Vec<SlotEntry>,
    codes: Vec<Bytes>,
    block_hashes: Vec<HashEntry>,
    proof: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GenesisAccount, GenesisAlloc, genesis_diff};

    fn addr(b: u8) -> Address {
        Address::repeat_byte(b)
    }

    fn open(dir: &std::path::Path) -> nomt::Nomt<Blake3Hasher> {
        let mut options = nomt::Options::new();
        options.path(dir);
        options.hashtable_buckets(1024);
        nomt::Nomt::open(options).unwrap()
    }

    /// A parent state in NOMT and memory, one block's writes and reads, and its witness.
    fn block() -> (tempfile::TempDir, B256, B256, StateDiff, ReadSet, Witness) {
        let dir = tempfile::tempdir().unwrap();
        let nomt = open(dir.path());
        let mut alloc = GenesisAlloc::new();
        let account =
            |balance: u64| GenesisAccount { balance: U256::from(balance), ..Default::default() };
        alloc.insert(addr(0xa), account(100));
        let mut b = account(5);
        b.storage = Some([(U256::from(1), U256::from(7)), (U256::from(2), U256::from(9))].into());
        alloc.insert(addr(0xb), b);
        let mut c = account(0);
        c.code = Some(Bytes::from_static(&[0x60, 0x00, 0x54, 0x00]));
        alloc.insert(addr(0xc), c);
        let state = MemState::from_genesis(&alloc);
        let genesis = nomt.begin_session(nomt::SessionParams::default());
        let finished = genesis.finish(nomt_ops(&genesis_diff(&alloc), &[])).unwrap();
        let parent = B256::from(finished.root().into_inner());
        finished.commit(&nomt).unwrap();

        let mut diff = StateDiff::default();
        let mut a = state.account(&addr(0xa)).unwrap();
        a.balance -= U256::from(10);
        a.nonce += 1;
        diff.accounts.insert(addr(0xa), AccountDiff { info: Some(a), ..Default::default() });
        let mut b = AccountDiff { info: state.account(&addr(0xb)), ..Default::default() };
        b.storage.insert(U256::from(1), U256::from(8));
        b.storage.insert(U256::from(3), U256::from(4));
        diff.accounts.insert(addr(0xb), b);
        let d = AccountData { balance: U256::from(10), ..AccountData::EMPTY };
        diff.accounts.insert(addr(0xd), AccountDiff { info: Some(d), ..Default::default() });
        let reads = ReadSet {
            accounts: vec![addr(0xa), addr(0xc), addr(0xe), addr(0xa)],
            slots: vec![
                (addr(0xb), U256::from(1)),
                (addr(0xb), U256::from(2)),
                (addr(0xc), U256::ZERO),
            ],
            block_hashes: vec![5],
        };
        let (root, witness) = commit_with_witness(
            &nomt,
            &diff,
            &[],
            &reads,
            &PreImages::default(),
            |h| state.code_by_hash(h).map(|c| c.original_bytes()),
            |n| Some(B256::with_last_byte(n as u8)),
        )
        .unwrap();
        assert_eq!(B256::from(nomt.root().into_inner()), root);
        (dir, parent, root, diff, reads, witness)
    }

    /// A block of two mini-blocks: a key written by the first and read by the second, and an
    /// account deleted by the first whose slot the second reads after re-creating it. The
    /// values the builder captures must give the same witness and root as reading every key
    /// from NOMT (and, in debug builds, `pre_state` checks each captured value against NOMT).
    #[test]
    fn captured_pre_images_give_the_witness_nomt_gives() {
        let mut alloc = GenesisAlloc::new();
        let account =
            |balance: u64| GenesisAccount { balance: U256::from(balance), ..Default::default() };
        alloc.insert(addr(0xa), account(100));
        let mut b = account(5);
        b.storage = Some([(U256::from(1), U256::from(7)), (U256::from(2), U256::from(9))].into());
        alloc.insert(addr(0xb), b);
        let mut c = account(1);
        c.code = Some(Bytes::from_static(&[0x00]));
        c.storage = Some([(U256::from(5), U256::from(3))].into());
        alloc.insert(addr(0xc), c);
        let state = MemState::from_genesis(&alloc);
        let (dirs, nomts): (Vec<_>, Vec<_>) = (0..2)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let nomt = open(dir.path());
                let genesis = nomt.begin_session(nomt::SessionParams::default());
                genesis
                    .finish(nomt_ops(&genesis_diff(&alloc), &[]))
                    .unwrap()
                    .commit(&nomt)
                    .unwrap();
                (dir, nomt)
            })
            .unzip();
        let parent = B256::from(nomts[0].root().into_inner());
        let mut known = PreImages::default();
        let mut all_reads = ReadSet::default();
        let mut wiped = Vec::new();
        let mut diffs = Vec::new();

        // Mini-block 1: A pays, B's slot 1 changes, C is deleted.
        let mut d1 = StateDiff::default();
        let mut a = state.account(&addr(0xa)).unwrap();
        a.balance -= U256::from(10);
        d1.accounts.insert(addr(0xa), AccountDiff { info: Some(a), ..Default::default() });
        let mut b = AccountDiff { info: state.account(&addr(0xb)), ..Default::default() };
        b.storage.insert(U256::from(1), U256::from(8));
        d1.accounts.insert(addr(0xb), b);
        d1.accounts.insert(
            addr(0xc),
            AccountDiff { info: None, storage_cleared: true, ..Default::default() },
        );
        let r1 = ReadSet {
            accounts: vec![addr(0xa), addr(0xb), addr(0xc)],
            slots: vec![(addr(0xb), U256::from(1))],
            block_hashes: vec![],
        };
        known.capture(&state, &r1, &d1);
        wiped.extend(state.apply(&d1));
        all_reads.extend(&r1);
        diffs.push(d1);

        // Mini-block 2: B's slots 1 and 2 change again, C is re-created and reads slot 5 (3
        // before the block, 0 now), D is new.
        let mut d2 = StateDiff::default();
        let mut b = AccountDiff { info: state.account(&addr(0xb)), ..Default::default() };
        b.storage.insert(U256::from(1), U256::from(10));
        b.storage.insert(U256::from(2), U256::ZERO);
        d2.accounts.insert(addr(0xb), b);
        let c = AccountData { balance: U256::from(2), ..AccountData::EMPTY };
        let mut c = AccountDiff { info: Some(c), storage_cleared: true, ..Default::default() };
        c.storage.insert(U256::from(6), U256::from(1));
        d2.accounts.insert(addr(0xc), c);
        let d = AccountData { balance: U256::from(4), ..AccountData::EMPTY };
        d2.accounts.insert(addr(0xd), AccountDiff { info: Some(d), ..Default::default() });
        let r2 = ReadSet {
            accounts: vec![addr(0xa), addr(0xc), addr(0xd)],
            slots: vec![
                (addr(0xb), U256::from(1)),
                (addr(0xb), U256::from(2)),
                (addr(0xc), U256::from(5)),
            ],
            block_hashes: vec![],
        };
        known.capture(&state, &r2, &d2);
        wiped.extend(state.apply(&d2));
        all_reads.extend(&r2);
        diffs.push(d2);
        assert_eq!(known.len(), 4 + 2, "C's slot 5 is read after C was cleared: not captured");

        let diff = StateDiff::merged(&diffs);
        all_reads.normalize();
        let code = |h: &B256| state.code_by_hash(h).map(|c| c.original_bytes());
        let from_capture =
            commit_with_witness(&nomts[0], &diff, &wiped, &all_reads, &known, code, |_| None)
                .unwrap();
        let from_nomt = commit_with_witness(
            &nomts[1],
            &diff,
            &wiped,
            &all_reads,
            &PreImages::default(),
            code,
            |_| None,
        )
        .unwrap();
        assert_eq!(from_capture, from_nomt);
        let (root, witness) = from_capture;
        let verified = witness.verify(parent).unwrap();
        assert_eq!(verified.post_root(&diff, &wiped).unwrap(), root);
        let pre = verified.state();
        assert_eq!(pre.storage(&addr(0xb), &U256::from(1)), U256::from(7));
        assert_eq!(pre.storage(&addr(0xc), &U256::from(5)), U256::from(3));
        assert_eq!(pre.account(&addr(0xa)).unwrap().balance, U256::from(100));
        drop(dirs);
    }

    #[test]
    fn a_witness_proves_the_pre_state_and_gives_the_post_root() {
        let (_dir, parent, root, diff, reads, witness) = block();
        let decoded = Witness::decode(&witness.encode()).unwrap();
        assert_eq!(decoded, witness);
        let verified = decoded.verify(parent).unwrap();
        verified.covers(&reads).unwrap();
        assert_eq!(verified.post_root(&diff, &[]).unwrap(), root);
        assert_ne!(root, parent);
        let state = verified.state();
        assert_eq!(state.account(&addr(0xa)).unwrap().balance, U256::from(100));
        assert_eq!(state.storage(&addr(0xb), &U256::from(1)), U256::from(7));
        assert!(state.account(&addr(0xe)).is_none());
        assert!(state.code_by_hash(&state.account(&addr(0xc)).unwrap().code_hash).is_some());
        assert_eq!(verified.block_hash(5), Some(B256::with_last_byte(5)));
        // A key it does not hold.
        let more = ReadSet { slots: vec![(addr(0xb), U256::from(9))], ..Default::default() };
        assert!(matches!(verified.covers(&more), Err(WitnessError::ReadOutside(_))));
    }

    #[test]
    fn tampered_witnesses_are_refused_each_with_its_reason() {
        let (_dir, parent, root, diff, reads, witness) = block();
        // Another balance.
        let mut w = witness.clone();
        w.accounts[0].1.as_mut().unwrap().balance += U256::from(1);
        assert!(matches!(w.verify(parent), Err(WitnessError::Entry(_))));
        // Another slot value.
        let mut w = witness.clone();
        w.slots[0].2 = U256::from(1);
        assert!(matches!(w.verify(parent), Err(WitnessError::Entry(_))));
        // A dropped entry: what is left verifies, but the block's reads are not covered.
        let mut w = witness.clone();
        w.accounts.retain(|(a, _)| *a != addr(0xc));
        assert!(matches!(
            w.verify(parent).unwrap().covers(&reads),
            Err(WitnessError::ReadOutside(_))
        ));
        // Code dropped.
        let mut w = witness.clone();
        w.codes.clear();
        assert!(matches!(w.verify(parent), Err(WitnessError::MissingCode(_))));
        // Another parent root.
        assert!(matches!(witness.verify(B256::repeat_byte(1)), Err(WitnessError::Proof { .. })));
        // Other writes give another root.
        let verified = witness.verify(parent).unwrap();
        let mut other = diff.clone();
        other.accounts.get_mut(&addr(0xb)).unwrap().storage.insert(U256::from(1), U256::from(6));
        assert_ne!(verified.post_root(&other, &[]).unwrap(), root);
    }

    #[test]
    fn a_witness_that_cannot_be_built_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let nomt = open(dir.path());
        let mut alloc = GenesisAlloc::new();
        let contract = GenesisAccount {
            code: Some(Bytes::from_static(&[0x00])),
            balance: U256::from(1),
            ..Default::default()
        };
        alloc.insert(addr(0xc), contract);
        let finished = nomt
            .begin_session(nomt::SessionParams::default())
            .finish(nomt_ops(&genesis_diff(&alloc), &[]))
            .unwrap();
        finished.commit(&nomt).unwrap();
        let before = nomt.root();
        let mut diff = StateDiff::default();
        let d = AccountData { balance: U256::from(3), ..AccountData::EMPTY };
        diff.accounts.insert(addr(0xd), AccountDiff { info: Some(d), ..Default::default() });
        let refused = |reads: ReadSet| {
            let known = PreImages::default();
            let err = commit_with_witness(&nomt, &diff, &[], &reads, &known, |_| None, |_| None)
                .unwrap_err();
            assert!(matches!(err, WitnessError::Unavailable(_)), "{err}");
            assert_eq!(nomt.root(), before);
        };
        // A block hash nobody knows.
        refused(ReadSet { block_hashes: vec![7], ..Default::default() });
        // A code nobody has.
        refused(ReadSet { accounts: vec![addr(0xc)], ..Default::default() });
    }

    #[test]
    fn damaged_bytes_are_an_error_never_a_panic() {
        let (_dir, parent, _, _, _, witness) = block();
        let bytes = witness.encode();
        for cut in 0..bytes.len() {
            assert!(Witness::decode(&bytes[..cut]).is_err());
        }
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut damaged = bytes.clone();
            let at = (rng as usize) % damaged.len();
            damaged[at] ^= 1 << (rng >> 61);
            if let Ok(w) = Witness::decode(&damaged) {
                let _ = w.verify(parent);
            }
        }
        // Raw (uncompressed) damage inside the proof reaches NOMT's verifier.
        let mut w = witness.clone();
        if let Some(path) = w.proof.paths.first_mut() {
            path.depth = 300;
        }
        assert!(w.verify(parent).is_err());
    }
}
