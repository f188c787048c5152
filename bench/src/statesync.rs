//! `bench statesync`: what a full node receives per transaction, and how fast it applies it.
//!
//! The workload is executed block by block the way the sequencer does (sequential revm over
//! memstate); each block's diff is encoded with memstate's codec against the state before it
//! and, as the baseline, written the way a state bundle carries it (RLP of every changed
//! account with its changed slots, and new code). A second state plays the full node: it
//! decodes each message and applies it. Both states must end equal (MPT root).

use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_rlp::{Encodable, RlpDecodable, RlpEncodable};
use memstate::{DiffCodec, MemState, NoBlockHashes, StateDiff};
use sequencer::exec::execute_batch;

use crate::{
    parallel::pooled,
    workload::{self, Prepared},
};

/// Messages per second at which [`SyncResult::mbps_at_100k`] is stated.
pub const REFERENCE_TPS: f64 = 100_000.0;

/// One workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SyncResult {
    /// Workload name.
    pub workload: String,
    /// Transactions.
    pub txs: usize,
    /// Transactions per message (one mini-block each).
    pub block_txs: usize,
    /// Bytes per transaction of the baseline: RLP of the changed accounts and slots.
    pub raw_bytes_per_tx: f64,
    /// The same RLP compressed with zstd at our level, without a dictionary (for reference).
    pub raw_zstd_bytes_per_tx: f64,
    /// Our message bytes per transaction.
    pub ours_bytes_per_tx: f64,
    /// Our payload before compression, per transaction.
    pub payload_bytes_per_tx: f64,
    /// raw / ours.
    pub ratio: f64,
    /// Our stream at [`REFERENCE_TPS`], megabits per second.
    pub mbps_at_100k: f64,
    /// The baseline's at [`REFERENCE_TPS`].
    pub raw_mbps_at_100k: f64,
    /// Sequencer side: executing the blocks and applying their diffs, seconds.
    pub execute_s: f64,
    /// Sequencer side: encoding the diffs, seconds.
    pub encode_s: f64,
    /// Full-node side: decoding the messages and applying them, seconds
    /// ([`DiffCodec::decode_apply`], as the full node does).
    pub apply_s: f64,
    /// execute_s / apply_s: how many times faster a full node follows than the sequencer
    /// executes.
    pub apply_ratio: f64,
}

#[derive(RlpEncodable, RlpDecodable)]
struct RawSlot {
    key: U256,
    value: U256,
}

#[derive(RlpEncodable, RlpDecodable)]
struct RawAccount {
    address: Address,
    nonce: u64,
    balance: U256,
    code_hash: B256,
    storage: Vec<RawSlot>,
}

#[derive(RlpEncodable, RlpDecodable)]
struct RawBundle {
    accounts: Vec<RawAccount>,
    codes: Vec<Bytes>,
}

/// The baseline encoding of a diff: every changed account in full (a deleted one as zeros),
/// its changed slots as (key, value), and new code.
pub fn raw_rlp(diff: &StateDiff) -> Vec<u8> {
    let accounts = diff
        .accounts
        .iter()
        .map(|(address, change)| {
            let info = change.info.unwrap_or(memstate::AccountData::EMPTY);
            RawAccount {
                address: *address,
                nonce: info.nonce,
                balance: info.balance,
                code_hash: info.code_hash,
                storage: change
                    .storage
                    .iter()
                    .map(|(key, value)| RawSlot { key: *key, value: *value })
                    .collect(),
            }
        })
        .collect();
    let codes = diff.codes.values().map(|c| c.original_bytes()).collect();
    let bundle = RawBundle { accounts, codes };
    let mut out = Vec::with_capacity(bundle.length());
    bundle.encode(&mut out);
    out
}

/// The sequencer's side of a run: every block executed, its diff encoded against the state
/// before it and then applied, with the baseline's bytes for the same diffs.
struct SequencerSide {
    /// Each message, with its diff's account and slot counts (to check the decoded diff).
    messages: Vec<(Vec<u8>, usize, usize)>,
    state: MemState,
    raw: usize,
    raw_zstd: usize,
    ours: usize,
    payload: usize,
    execute: Duration,
    encode: Duration,
}

fn sequencer_side(p: &Prepared, name: &str, block_txs: usize) -> Result<SequencerSide, String> {
    let state = MemState::from_genesis(&p.alloc);
    let mut encoder = DiffCodec::from_state(&state);
    let mut raw_zstd = zstd::bulk::Compressor::new(9).map_err(|e| e.to_string())?;
    let mut side = SequencerSide {
        messages: Vec::new(),
        state: MemState::new(),
        raw: 0,
        raw_zstd: 0,
        ours: 0,
        payload: 0,
        execute: Duration::ZERO,
        encode: Duration::ZERO,
    };
    for (number, block) in pooled(p).chunks(block_txs).enumerate() {
        let env = workload::block_env(number);
        let t = Instant::now();
        let out =
            execute_batch(&state, NoBlockHashes, p.rules(), &env, block.to_vec(), u64::MAX, None);
        let exec_time = t.elapsed();
        if out.executed.len() != block.len() || out.executed.iter().any(|t| !t.success) {
            return Err(format!("{name}: block {number}: a transaction failed or was dropped"));
        }
        let t = Instant::now();
        let (message, size) = encoder.encode_sized(&out.diff, &state).map_err(|e| e.to_string())?;
        side.encode += t.elapsed();
        let t = Instant::now();
        state.apply(&out.diff);
        side.execute += exec_time + t.elapsed();

        let rlp = raw_rlp(&out.diff);
        side.raw += rlp.len();
        side.raw_zstd += raw_zstd.compress(&rlp).map_err(|e| e.to_string())?.len();
        side.ours += size.message;
        side.payload += size.payload;
        side.messages.push((message, out.diff.accounts.len(), out.diff.slot_count()));
    }
    side.state = state;
    Ok(side)
}

/// Runs `p` through the codec in messages of `block_txs` transactions.
pub fn measure(p: &Prepared, name: &str, block_txs: usize) -> Result<SyncResult, String> {
    // The sequencer's side first, then the follower's: each is its own process in a
    // deployment, so neither should run on caches the other just evicted.
    let side = sequencer_side(p, name, block_txs)?;
    let follower = MemState::from_genesis(&p.alloc);
    let mut decoder = DiffCodec::from_state(&follower);
    let mut apply = Duration::ZERO;
    for (number, (message, accounts, slots)) in side.messages.iter().enumerate() {
        let t = Instant::now();
        let (decoded, _) =
            decoder.decode_apply(message, &follower).map_err(|e| format!("{name}: {e}"))?;
        apply += t.elapsed();
        if (decoded.accounts.len(), decoded.slot_count()) != (*accounts, *slots) {
            return Err(format!("{name}: message {number} decodes to another diff"));
        }
    }
    if side.state.mpt_root() != follower.mpt_root() {
        return Err(format!("{name}: the follower's state differs from the sequencer's"));
    }
    let n = p.txs.len() as f64;
    let per_tx = |bytes: usize| bytes as f64 / n;
    let mbps = |bytes: usize| per_tx(bytes) * 8.0 * REFERENCE_TPS / 1e6;
    Ok(SyncResult {
        workload: name.to_string(),
        txs: p.txs.len(),
        block_txs,
        raw_bytes_per_tx: per_tx(side.raw),
        raw_zstd_bytes_per_tx: per_tx(side.raw_zstd),
        ours_bytes_per_tx: per_tx(side.ours),
        payload_bytes_per_tx: per_tx(side.payload),
        ratio: side.raw as f64 / side.ours as f64,
        mbps_at_100k: mbps(side.ours),
        raw_mbps_at_100k: mbps(side.raw),
        execute_s: side.execute.as_secs_f64(),
        encode_s: side.encode.as_secs_f64(),
        apply_s: apply.as_secs_f64(),
        apply_ratio: side.execute.as_secs_f64() / apply.as_secs_f64(),
    })
}

/// The uncompressed payloads of `p`'s messages, as samples to train the codec's dictionary.
pub fn samples(p: &Prepared, block_txs: usize) -> Result<Vec<Vec<u8>>, String> {
    sequencer_side(p, "training", block_txs)?
        .messages
        .iter()
        .map(|(message, _, _)| DiffCodec::payload(message).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{self, Kind};

    /// A short run of each workload completes, the follower ends on the sequencer's state
    /// (checked inside), and the ratio is raw over ours from the same run.
    #[test]
    fn each_workload_syncs_and_the_ratio_comes_from_the_same_run() {
        for kind in [Kind::Eth, Kind::Erc20, Kind::Amm] {
            let p = workload::prepare(kind, 3, 200, 600);
            let r = measure(&p, "smoke", 100).unwrap();
            assert_eq!(r.txs, 600);
            assert!(r.ours_bytes_per_tx > 0.0 && r.raw_bytes_per_tx > r.ours_bytes_per_tx);
            assert!((r.ratio - r.raw_bytes_per_tx / r.ours_bytes_per_tx).abs() < 1e-9);
        }
    }

    #[test]
    fn the_raw_baseline_carries_every_changed_slot() {
        let p = workload::prepare(Kind::Erc20, 3, 20, 10);
        let state = MemState::from_genesis(&p.alloc);
        let env = workload::block_env(0);
        let out = execute_batch(&state, NoBlockHashes, p.rules(), &env, pooled(&p), u64::MAX, None);
        let holders: std::collections::BTreeSet<usize> =
            (0..10).flat_map(|k| [k, workload::recipient(k, 20)]).collect();
        assert_eq!(out.diff.slot_count(), holders.len());
        // The baseline decodes back to every changed account and slot of the diff.
        let raw = raw_rlp(&out.diff);
        let bundle = <RawBundle as alloy_rlp::Decodable>::decode(&mut &raw[..]).unwrap();
        assert_eq!(bundle.accounts.len(), out.diff.accounts.len());
        for (account, (address, change)) in bundle.accounts.iter().zip(&out.diff.accounts) {
            assert_eq!(account.address, *address);
            let info = change.info.unwrap();
            assert_eq!((account.nonce, account.balance), (info.nonce, info.balance));
            let slots: Vec<_> = account.storage.iter().map(|s| (s.key, s.value)).collect();
            assert_eq!(slots, change.storage.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        }
    }
}
