//! The state-diff wire format: how a mini-block's or an EVM block's [`StateDiff`] travels from
//! the sequencer to full nodes, provers and the DA layer.
//!
//! Format version 1. A message is
//! `version (1) ‖ kind (1) ‖ varint payload length ‖ body`, where the body is the payload itself
//! (`kind` 0, when compression would not shrink it), or the payload compressed with zstd and the
//! dictionary shipped with this codec (`kind` 1). The payload is a header and eleven sections, each
//! prefixed by its length, so that values of one sort sit together where the compressor finds
//! their repetitions:
//!
//! | section      | per                    | content                                           |
//! |--------------|------------------------|---------------------------------------------------|
//! | header       | message                | accounts in the sender's index, known / new accounts, codes |
//! | codes        | new code               | varint length ‖ bytes                             |
//! | ranks        | known account          | first rank, then gap − 1 (varints)                |
//! | addresses    | new account            | 20 bytes, ascending                               |
//! | flags        | account                | deleted, nonce, balance, code, cleared, storage   |
//! | nonces       | changed nonce          | tagged value (below)                              |
//! | balances     | changed balance        | tagged value                                      |
//! | code refs    | changed code hash      | varint: 0 ‖ 32-byte hash, or 1 + index in codes   |
//! | slot counts  | account with storage   | known slots, new slots (varints)                  |
//! | slot ranks   | known slot             | first rank, then gap − 1, per account             |
//! | slot keys    | new slot               | length ‖ significant bytes                        |
//! | slot values  | slot                   | tagged value                                      |
//!
//! **Stateful references.** Both ends keep a [`KeyIndex`]: the state's accounts, and each
//! account's non-zero slots, in key order. A key the receiver already has is sent as its rank
//! in that order, and the ranks of one message are sorted and sent as gaps, so a mini-block
//! touching 1 000 of 100 000 accounts spends about one byte per account. The index is a
//! function of the state, so it needs no persistence and no handshake: the header carries the
//! sender's account count and a receiver whose index differs stops with
//! [`CodecError::OutOfSync`] instead of misreading keys.
//!
//! **Tagged values.** A value is a tag byte (two mode bits, six length bits) and its
//! significant bytes: the value itself, or its distance up or down from the receiver's current
//! value, whichever is shorter. A balance that pays a 21 000-gas fee costs 7 bytes instead of
//! 33, and the same 7 bytes in every transfer, which zstd then all but removes.
//!
//! **Untrusted input.** Decoding checks every length against the bytes present before it
//! allocates, caps the decompressed size at [`MAX_PAYLOAD_BYTES`], rejects non-canonical
//! numbers, unsorted or duplicate keys, unknown flags and trailing bytes, and returns an error
//! naming the section. It never panics: the property tests in `tests.rs` decode random,
//! truncated and mutated messages, and `memstate/fuzz` has a libFuzzer target
//! (`cargo +nightly fuzz run diff_decode corpus/diff_decode seeds/diff_decode`).

mod index;
mod wire;

use std::{borrow::Cow, collections::BTreeMap, sync::OnceLock};

use alloy_primitives::{Address, B256, U256, keccak256};
use revm::state::Bytecode;

use index::Edits;
pub use index::KeyIndex;
use wire::{Reader, put_number, put_value, put_varint};

use crate::{AccountData, AccountDiff, MemState, StateDiff, StateView, StateWriter};

/// The format version this codec writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Largest payload (before compression) a message may declare: far above any block's diff,
/// and the most a decoder will allocate for one message.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// Largest code a message may carry (EIP-170 allows 24 KiB; genesis code may be larger).
pub const MAX_CODE_BYTES: usize = 1 << 20;

/// The zstd dictionary shipped with format version 1, trained on the diffs of the bench
/// workloads (`bench statesync --train-dict`). Changing it changes the format: bump
/// [`FORMAT_VERSION`].
static DICTIONARY: &[u8] = include_bytes!("diff-v1.dict");

/// zstd level: the level past which these payloads stop shrinking (measured with
/// `bench statesync`), still far below a millisecond per mini-block.
const ZSTD_LEVEL: i32 = 9;

const KIND_STORED: u8 = 0;
const KIND_ZSTD_DICT: u8 = 1;

const F_DELETED: u8 = 1;
const F_NONCE: u8 = 1 << 1;
const F_BALANCE: u8 = 1 << 2;
const F_CODE: u8 = 1 << 3;
const F_CLEARED: u8 = 1 << 4;
const F_STORAGE: u8 = 1 << 5;
const F_ALL: u8 = (1 << 6) - 1;

const SECTIONS: [&str; 12] = [
    "header",
    "codes",
    "ranks",
    "addresses",
    "flags",
    "nonces",
    "balances",
    "code refs",
    "slot counts",
    "slot ranks",
    "slot keys",
    "slot values",
];

/// Why a message could not be decoded (or, for [`CodecError::OutOfSync`], encoded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The message is empty or shorter than its fixed header.
    #[error("diff message truncated in its {section} section")]
    Truncated {
        /// Where the bytes ran out.
        section: &'static str,
    },
    /// A version this build does not read.
    #[error("diff format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    /// Bytes that do not follow the format.
    #[error("malformed diff message: {what} in its {section} section")]
    Malformed {
        /// The section.
        section: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The declared payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("diff payload of {0} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge(u64),
    /// The compressed body does not decompress to the declared payload.
    #[error("diff body does not decompress: {0}")]
    Compression(String),
    /// The message was written against a different state than the receiver's.
    #[error(
        "diff codec out of sync: {what} (the receiver's state differs from the sender's; \
         rebuild the index from the state or re-sync)"
    )]
    OutOfSync {
        /// What disagreed.
        what: String,
    },
}

/// The state a diff is encoded against and applied to: the receiver's current values, from
/// which values are sent as distances.
pub trait PriorState {
    /// The account's fields, `None` if it does not exist.
    fn account(&self, address: &Address) -> Option<AccountData>;
    /// A slot's value (zero when unset).
    fn storage(&self, address: &Address, slot: &U256) -> U256;
    /// The values of several of one account's slots, appended to `out` in order.
    fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        out.extend(slots.iter().map(|slot| self.storage(address, slot)));
    }
    /// The fields of several accounts, appended to `out` in order.
    fn accounts_many(&self, addresses: &[Address], out: &mut impl Extend<Option<AccountData>>) {
        out.extend(addresses.iter().map(|address| self.account(address)));
    }
}

impl PriorState for MemState {
    fn account(&self, address: &Address) -> Option<AccountData> {
        MemState::account(self, address)
    }
    fn storage(&self, address: &Address, slot: &U256) -> U256 {
        MemState::storage(self, address, slot)
    }
    fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        MemState::storage_many(self, address, slots, out);
    }
}

impl PriorState for StateView<'_> {
    fn account(&self, address: &Address) -> Option<AccountData> {
        StateView::account(self, address)
    }
    fn storage(&self, address: &Address, slot: &U256) -> U256 {
        StateView::storage(self, address, slot)
    }
    fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        StateView::storage_many(self, address, slots, out);
    }
    fn accounts_many(&self, addresses: &[Address], out: &mut impl Extend<Option<AccountData>>) {
        StateView::accounts(self, addresses, out);
    }
}

impl PriorState for StateWriter<'_> {
    fn account(&self, address: &Address) -> Option<AccountData> {
        StateWriter::account(self, address)
    }
    fn storage(&self, address: &Address, slot: &U256) -> U256 {
        StateWriter::storage(self, address, slot)
    }
    fn storage_many(&self, address: &Address, slots: &[U256], out: &mut Vec<U256>) {
        StateWriter::storage_many(self, address, slots, out);
    }
    fn accounts_many(&self, addresses: &[Address], out: &mut impl Extend<Option<AccountData>>) {
        StateWriter::accounts(self, addresses, out);
    }
}

/// Sizes of one encoded message, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodedSize {
    /// The payload before compression.
    pub payload: usize,
    /// The message as sent.
    pub message: usize,
}

/// One end of a diff stream: encodes (sender) or decodes (receiver) diffs in order, each
/// against the state the previous ones produced. Both ends start from the same state's
/// [`KeyIndex`].
pub struct DiffCodec {
    index: KeyIndex,
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl std::fmt::Debug for DiffCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffCodec").field("accounts", &self.index.account_count()).finish()
    }
}

impl DiffCodec {
    /// A codec at the state `index` was built from.
    pub fn new(index: KeyIndex) -> Self {
        // Only a failed allocation of a zstd context can fail here.
        const NO_MEMORY: &str = "zstd context allocation";
        Self {
            index,
            compressor: zstd::bulk::Compressor::with_prepared_dictionary(encoder_dictionary())
                .expect(NO_MEMORY),
            decompressor: zstd::bulk::Decompressor::with_prepared_dictionary(decoder_dictionary())
                .expect(NO_MEMORY),
        }
    }

    /// A codec at `state` as it is now.
    pub fn from_state(state: &MemState) -> Self {
        Self::new(KeyIndex::from_state(state))
    }

    /// The key index (the state the next message is encoded or decoded against).
    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    /// Replaces the index, after a re-sync.
    pub fn reset(&mut self, index: KeyIndex) {
        self.index = index;
    }

    /// Encodes `diff` against `prior`, the state before it, and moves the index past it. The
    /// caller then applies `diff` to its state, so the next message is encoded against that.
    pub fn encode(
        &mut self,
        diff: &StateDiff,
        prior: &impl PriorState,
    ) -> Result<Vec<u8>, CodecError> {
        Ok(self.encode_sized(diff, prior)?.0)
    }

    /// [`DiffCodec::encode`], also returning the payload size before compression.
    pub fn encode_sized(
        &mut self,
        diff: &StateDiff,
        prior: &impl PriorState,
    ) -> Result<(Vec<u8>, EncodedSize), CodecError> {
        let (payload, edits) = encode_payload(&mut self.index, diff, prior)?;
        let mut out = Vec::with_capacity(payload.len() / 2 + 16);
        out.push(FORMAT_VERSION);
        let compressed = self
            .compressor
            .compress(&payload)
            .map_err(|e| CodecError::Compression(format!("compression failed: {e}")))?;
        if compressed.len() < payload.len() {
            out.push(KIND_ZSTD_DICT);
            put_varint(&mut out, payload.len() as u64);
            out.extend_from_slice(&compressed);
        } else {
            out.push(KIND_STORED);
            put_varint(&mut out, payload.len() as u64);
            out.extend_from_slice(&payload);
        }
        edits.apply(&mut self.index);
        let size = EncodedSize { payload: payload.len(), message: out.len() };
        Ok((out, size))
    }

    /// The payload of a message, decompressed: for tools (training the dictionary, reading
    /// section sizes), not needed to decode.
    pub fn payload(message: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut decompressor =
            zstd::bulk::Decompressor::with_prepared_dictionary(decoder_dictionary())
                .map_err(|e| CodecError::Compression(e.to_string()))?;
        Ok(unframe(message, &mut decompressor)?.into_owned())
    }

    /// Decodes a message against `prior`, the receiver's state, and moves the index past it.
    /// On error nothing changes: the index stays where it was.
    pub fn decode(
        &mut self,
        message: &[u8],
        prior: &impl PriorState,
    ) -> Result<StateDiff, CodecError> {
        let payload = unframe(message, &mut self.decompressor)?;
        let (diff, edits) = decode_payload(&mut self.index, &payload, prior)?;
        edits.apply(&mut self.index);
        Ok(diff)
    }

    /// Decodes a message against `state` and applies it, under one hold of its write locks:
    /// a full node's step. The accounts whose prior values decoding read are then written
    /// where they were found, without a second lookup ([`StateWriter`]). Returns the diff and
    /// the wiped slots ([`MemState::apply`]); when the message does not decode, nothing
    /// changes.
    pub fn decode_apply(
        &mut self,
        message: &[u8],
        state: &MemState,
    ) -> Result<(StateDiff, Vec<(Address, U256)>), CodecError> {
        let writer = state.write();
        let diff = self.decode(message, &writer)?;
        let wiped = writer.apply(&diff);
        Ok((diff, wiped))
    }
}

/// The dictionary digested once per process: loading it raw makes zstd digest its 16 KiB for
/// every message, which cost more than compressing a 20 KB payload.
fn encoder_dictionary() -> &'static zstd::dict::EncoderDictionary<'static> {
    static DICT: OnceLock<zstd::dict::EncoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| zstd::dict::EncoderDictionary::copy(DICTIONARY, ZSTD_LEVEL))
}

fn decoder_dictionary() -> &'static zstd::dict::DecoderDictionary<'static> {
    static DICT: OnceLock<zstd::dict::DecoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| zstd::dict::DecoderDictionary::copy(DICTIONARY))
}

/// Checks a message's frame and returns its payload.
fn unframe<'a>(
    message: &'a [u8],
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<Cow<'a, [u8]>, CodecError> {
    let mut head = Reader::new(message, "frame");
    let version = head.byte()?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    let kind = head.byte()?;
    let len = head.varint()?;
    if len > MAX_PAYLOAD_BYTES as u64 {
        return Err(CodecError::TooLarge(len));
    }
    let len = len as usize;
    let body = head.bytes(head.remaining())?;
    let payload: Cow<'a, [u8]> = match kind {
        KIND_STORED => body.into(),
        KIND_ZSTD_DICT => decompressor
            .decompress(body, len)
            .map_err(|e| CodecError::Compression(e.to_string()))?
            .into(),
        _ => return Err(CodecError::Malformed { section: "frame", what: "unknown body kind" }),
    };
    if payload.len() != len {
        return Err(CodecError::Malformed {
            section: "frame",
            what: "payload length differs from the declared one",
        });
    }
    Ok(payload)
}

fn out_of_sync(what: String) -> CodecError {
    CodecError::OutOfSync { what }
}

fn encode_payload(
    index: &mut KeyIndex,
    diff: &StateDiff,
    prior: &impl PriorState,
) -> Result<(Vec<u8>, Edits), CodecError> {
    let mut edits = Edits::default();
    let mut s: [Vec<u8>; 12] = Default::default();
    let [
        header,
        codes,
        ranks,
        addresses,
        flags,
        nonces,
        balances,
        code_refs,
        slot_counts,
        slot_ranks,
        slot_keys,
        slot_values,
    ] = &mut s;

    let mut known = Vec::new();
    let mut new = Vec::new();
    for (address, change) in &diff.accounts {
        match index.accounts.rank(address) {
            Some(rank) => known.push((rank, address, change)),
            None => new.push((address, change)),
        }
    }
    put_varint(header, index.account_count() as u64);
    put_varint(header, known.len() as u64);
    put_varint(header, new.len() as u64);
    put_varint(header, diff.codes.len() as u64);

    let mut code_position = BTreeMap::new();
    for (i, (hash, code)) in diff.codes.iter().enumerate() {
        let bytes = code.original_bytes();
        put_varint(codes, bytes.len() as u64);
        codes.extend_from_slice(&bytes);
        code_position.insert(*hash, i);
    }
    put_gaps(ranks, known.iter().map(|k| k.0));
    for (address, _) in &new {
        addresses.extend_from_slice(address.as_slice());
    }

    let accounts = known
        .iter()
        .map(|(_, a, c)| (*a, *c, true))
        .chain(new.iter().map(|(a, c)| (*a, *c, false)));
    for (address, change, is_known) in accounts {
        let before = if is_known {
            prior.account(address).ok_or_else(|| {
                out_of_sync(format!("account {address} is indexed but not in the prior state"))
            })?
        } else {
            AccountData::EMPTY
        };
        let mut f = 0;
        match &change.info {
            None => f |= F_DELETED,
            Some(after) => {
                if after.nonce != before.nonce {
                    f |= F_NONCE;
                    put_value(nonces, &U256::from(before.nonce), &U256::from(after.nonce));
                }
                if after.balance != before.balance {
                    f |= F_BALANCE;
                    put_value(balances, &before.balance, &after.balance);
                }
                if after.code_hash != before.code_hash {
                    f |= F_CODE;
                    match code_position.get(&after.code_hash) {
                        Some(i) => put_varint(code_refs, *i as u64 + 1),
                        None => {
                            put_varint(code_refs, 0);
                            code_refs.extend_from_slice(after.code_hash.as_slice());
                        }
                    }
                }
            }
        }
        if change.storage_cleared {
            f |= F_CLEARED;
        }
        let live = change.info.is_some();
        edits.account(*address, is_known, !live, change.storage_cleared);
        if !change.storage.is_empty() {
            f |= F_STORAGE;
            // After a clear, or for a new account, nothing is known: every slot is new.
            let set = (is_known && !change.storage_cleared)
                .then(|| index.slots.get_mut(address))
                .flatten();
            let mut known_slots = Vec::new();
            let mut new_slots = Vec::new();
            match set {
                Some(set) => {
                    for (slot, value) in &change.storage {
                        match set.rank(slot) {
                            Some(rank) => known_slots.push((rank, slot, value)),
                            None => new_slots.push((slot, value)),
                        }
                    }
                }
                None => new_slots.extend(change.storage.iter()),
            }
            put_varint(slot_counts, known_slots.len() as u64);
            put_varint(slot_counts, new_slots.len() as u64);
            put_gaps(slot_ranks, known_slots.iter().map(|k| k.0));
            for (_, slot, value) in &known_slots {
                put_value(slot_values, &prior.storage(address, slot), value);
                if live {
                    edits.slot(*address, **slot, true, value.is_zero());
                }
            }
            for (slot, value) in &new_slots {
                put_number(slot_keys, slot);
                put_value(slot_values, &U256::ZERO, value);
                if live {
                    edits.slot(*address, **slot, false, value.is_zero());
                }
            }
        }
        flags.push(f);
    }

    let mut payload = Vec::with_capacity(s.iter().map(|x| x.len() + 3).sum());
    for section in &s {
        put_varint(&mut payload, section.len() as u64);
        payload.extend_from_slice(section);
    }
    Ok((payload, edits))
}

/// Sorted ranks as the first rank and then each gap minus one.
fn put_gaps(out: &mut Vec<u8>, ranks: impl Iterator<Item = usize>) {
    let mut last: Option<usize> = None;
    for rank in ranks {
        put_varint(
            out,
            match last {
                None => rank as u64,
                Some(l) => (rank - l - 1) as u64,
            },
        );
        last = Some(rank);
    }
}

/// Reads `n` ranks written by [`put_gaps`], each below `limit`.
fn read_gaps(r: &mut Reader<'_>, n: usize, limit: usize) -> Result<Vec<usize>, CodecError> {
    let mut out = Vec::with_capacity(n.min(r.remaining()));
    let mut next = 0u64;
    for _ in 0..n {
        let rank = next
            .checked_add(r.varint()?)
            .filter(|rank| *rank < limit as u64)
            .ok_or(CodecError::Malformed { section: "ranks", what: "rank past the index" })?;
        out.push(rank as usize);
        next = rank + 1;
    }
    Ok(out)
}

/// The receiver's values of the indexed slots of the accounts at `addresses`, in order;
/// `keyed` describes each account.
fn read_prior_slots(
    prior: &impl PriorState,
    addresses: &[Address],
    keyed: &[Keyed],
    slots: &[U256],
) -> Vec<U256> {
    let mut values = Vec::with_capacity(slots.len());
    for (k, address) in keyed.iter().zip(addresses) {
        let known = &slots[k.known_slots()];
        if !known.is_empty() {
            prior.storage_many(address, known, &mut values);
        }
    }
    values
}

/// Writes the prior values [`PriorState::accounts_many`] reads into the entries of a decoded
/// diff, in order, and notes the first account the receiver does not have.
struct PriorSink<'a> {
    entries: std::slice::IterMut<'a, (Address, AccountDiff)>,
    missing: Option<Address>,
}

impl Extend<Option<AccountData>> for PriorSink<'_> {
    fn extend<I: IntoIterator<Item = Option<AccountData>>>(&mut self, iter: I) {
        for (prior, (address, change)) in iter.into_iter().zip(&mut self.entries) {
            match prior {
                Some(data) => change.info = Some(data),
                None => {
                    self.missing.get_or_insert(*address);
                }
            }
        }
    }
}

/// One account of a message with its keys resolved: the first pass of decoding. Its address
/// is at the same place in the list of the message's addresses. Small (16 bytes), since a
/// message's working lists compete for the cache with the state they read.
struct Keyed {
    /// In the index before the message.
    known: bool,
    flags: u8,
    /// Its slots in the message's slot list, `start..end`: the first `known_slots` were
    /// indexed, the rest are new.
    start: u32,
    end: u32,
    known_slots: u32,
}

impl Keyed {
    fn slots(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    fn known_slots(&self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.known_slots) as usize
    }
}

fn decode_payload(
    index: &mut KeyIndex,
    payload: &[u8],
    prior: &impl PriorState,
) -> Result<(StateDiff, Edits), CodecError> {
    let mut edits = Edits::default();
    let mut whole = Reader::new(payload, "payload");
    let mut s: Vec<Reader<'_>> = Vec::with_capacity(SECTIONS.len());
    for name in SECTIONS {
        let len = whole.count(whole.remaining(), "section longer than the payload")?;
        s.push(Reader::new(whole.bytes(len)?, name));
    }
    whole.finish()?;
    let [
        header,
        codes,
        ranks,
        addresses,
        flags,
        nonces,
        balances,
        code_refs,
        slot_counts,
        slot_ranks,
        slot_keys,
        slot_values,
    ] = &mut s[..]
    else {
        unreachable!("twelve sections")
    };

    let theirs = header.varint()?;
    if theirs != index.account_count() as u64 {
        return Err(out_of_sync(format!(
            "the sender indexed {theirs} accounts, this node {}",
            index.account_count()
        )));
    }
    let n_known = header.count(index.account_count(), "more known accounts than indexed")?;
    let n_new = header.count(addresses.remaining() / 20, "more new accounts than addresses")?;
    let n_codes = header.count(codes.remaining(), "more codes than bytes")?;
    header.finish()?;
    if flags.remaining() != n_known + n_new {
        return Err(CodecError::Malformed {
            section: "flags",
            what: "one flag byte per account expected",
        });
    }

    let mut diff = StateDiff::default();
    let mut code_hashes = Vec::with_capacity(n_codes);
    for _ in 0..n_codes {
        let len = codes.count(MAX_CODE_BYTES, "code over the size limit")?;
        let bytes = codes.bytes(len)?;
        let code = Bytecode::new_raw_checked(bytes.to_vec().into()).map_err(|_| {
            CodecError::Malformed { section: "codes", what: "invalid EIP-7702 delegation" }
        })?;
        let hash = keccak256(bytes);
        if diff.codes.insert(hash, code).is_some() {
            return Err(CodecError::Malformed { section: "codes", what: "duplicate code" });
        }
        code_hashes.push(hash);
    }
    codes.finish()?;

    // Decoding runs in three passes, so that the state's lookups run in tight loops of their
    // own rather than between value decodings: every key of the message first, from the
    // index and the key sections; then the receiver's prior values of those keys; then the
    // values, which are distances from them.
    let mut keyed: Vec<Keyed> = Vec::with_capacity(n_known + n_new);
    let mut slot_keys_out: Vec<U256> = Vec::new();
    // Known accounts first (by rank), then new ones: account `i` was indexed if `i < n_known`.
    let mut accounts: Vec<Address> = Vec::with_capacity(n_known + n_new);
    index
        .accounts
        .select_ascending(&read_gaps(ranks, n_known, index.account_count())?, &mut accounts);
    ranks.finish()?;
    let mut last_new: Option<Address> = None;
    for _ in 0..n_new {
        let address = Address::from_slice(addresses.bytes(20)?);
        if last_new.is_some_and(|l| l >= address) {
            return Err(CodecError::Malformed {
                section: "addresses",
                what: "addresses not ascending",
            });
        }
        if index.accounts.rank(&address).is_some() {
            return Err(CodecError::Malformed {
                section: "addresses",
                what: "a new account that is already indexed",
            });
        }
        last_new = Some(address);
        accounts.push(address);
    }
    addresses.finish()?;

    for (i, &address) in accounts.iter().enumerate() {
        let is_known = i < n_known;
        let f = flags.byte()?;
        if f & !F_ALL != 0 {
            return Err(CodecError::Malformed { section: "flags", what: "unknown flag bits" });
        }
        if f & F_DELETED != 0 && f & (F_NONCE | F_BALANCE | F_CODE) != 0 {
            return Err(CodecError::Malformed {
                section: "flags",
                what: "a deleted account with changed fields",
            });
        }
        let first_slot = slot_keys_out.len();
        let mut known_slots = 0;
        if f & F_STORAGE != 0 {
            let mut set =
                (is_known && f & F_CLEARED == 0).then(|| index.slots.get_mut(&address)).flatten();
            let indexed = set.as_ref().map_or(0, |s| s.len());
            let n_known = slot_counts.count(indexed, "more known slots than indexed")?;
            let n_new = slot_counts.count(slot_keys.remaining(), "more new slots than bytes")?;
            if n_known + n_new == 0 {
                return Err(CodecError::Malformed {
                    section: "slot counts",
                    what: "storage flag without slots",
                });
            }
            if let Some(set) = set.as_deref_mut() {
                set.select_ascending(&read_gaps(slot_ranks, n_known, indexed)?, &mut slot_keys_out);
                known_slots = n_known;
            }
            let mut last: Option<U256> = None;
            for _ in 0..n_new {
                let slot = slot_keys.number()?;
                if last.is_some_and(|l| l >= slot) {
                    return Err(CodecError::Malformed {
                        section: "slot keys",
                        what: "slots not ascending",
                    });
                }
                last = Some(slot);
                if set.as_deref_mut().is_some_and(|set| set.rank(&slot).is_some()) {
                    return Err(CodecError::Malformed {
                        section: "slot keys",
                        what: "a new slot that is already indexed",
                    });
                }
                slot_keys_out.push(slot);
            }
        }
        // A payload is at most MAX_PAYLOAD_BYTES, so its slot counts fit in 32 bits.
        keyed.push(Keyed {
            known: is_known,
            flags: f,
            start: first_slot as u32,
            end: slot_keys_out.len() as u32,
            known_slots: known_slots as u32,
        });
    }

    // The entries are built first, new accounts with empty prior values, and the receiver's
    // values of the known ones are then read into them; the changed fields are decoded into
    // them in place last. Entries built on the stack and then moved would be copied with wide
    // loads that wait for the narrow stores that wrote them, and a list of prior values
    // apart would compete for the cache with the state being read.
    let mut accounts_out: Vec<(Address, AccountDiff)> = keyed
        .iter()
        .zip(&accounts)
        .map(|(k, address)| {
            let info = Some(AccountData::EMPTY);
            let storage_cleared = k.flags & F_CLEARED != 0;
            (*address, AccountDiff { info, storage_cleared, storage: BTreeMap::new() })
        })
        .collect();
    let mut sink = PriorSink { entries: accounts_out[..n_known].iter_mut(), missing: None };
    prior.accounts_many(&accounts[..n_known], &mut sink);
    if let Some(address) = sink.missing {
        return Err(out_of_sync(format!(
            "account {address} is indexed but not in this node's state"
        )));
    }
    let prior_slots = read_prior_slots(prior, &accounts, &keyed, &slot_keys_out);
    let mut prior_slots = prior_slots.into_iter();
    for (k, (address, change)) in keyed.iter().zip(accounts_out.iter_mut()) {
        let f = k.flags;
        if f & F_DELETED != 0 {
            change.info = None;
        }
        let live = change.info.is_some();
        if let Some(after) = change.info.as_mut() {
            if f & F_NONCE != 0 {
                let nonce = nonces.value(&U256::from(after.nonce))?;
                after.nonce = nonce.try_into().map_err(|_| CodecError::Malformed {
                    section: "nonces",
                    what: "nonce over 64 bits",
                })?;
            }
            if f & F_BALANCE != 0 {
                balances.value_in_place(&mut after.balance)?;
            }
            if f & F_CODE != 0 {
                after.code_hash = match code_refs.varint()? {
                    0 => B256::from_slice(code_refs.bytes(32)?),
                    i => *usize::try_from(i - 1).ok().and_then(|i| code_hashes.get(i)).ok_or(
                        CodecError::Malformed {
                            section: "code refs",
                            what: "code index past the codes",
                        },
                    )?,
                };
            }
        }
        edits.account(*address, k.known, !live, change.storage_cleared);
        if k.end > k.start {
            // Slots arrive as two ascending runs (known, then new): collected and built in
            // bulk, which is several times cheaper than inserting one by one.
            let mut slots = Vec::with_capacity(k.slots().len());
            for (i, slot) in slot_keys_out[k.slots()].iter().enumerate() {
                let indexed = i < k.known_slots as usize;
                let before = if indexed {
                    prior_slots.next().expect("one prior value per known slot")
                } else {
                    U256::ZERO
                };
                let value = slot_values.value(&before)?;
                if live {
                    edits.slot(*address, *slot, indexed, value.is_zero());
                }
                slots.push((*slot, value));
            }
            change.storage = BTreeMap::from_iter(slots);
        }
    }
    // Two ascending runs again (known accounts, then new ones): one sort merges them.
    diff.accounts = accounts_out.into_iter().collect();
    for r in s.iter() {
        r.finish()?;
    }
    Ok((diff, edits))
}

#[cfg(test)]
mod tests;
