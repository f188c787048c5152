//! `bench prover`: how fast one core verifies blocks statelessly (the `prover` crate, from
//! the parent root, the signed header and transactions, and the witness alone) against how
//! fast the sequencer produced the same blocks on one core, and the witness bytes per
//! transaction.
//!
//! Production, per block, is the sequencer's sequential path: execution over memstate, the
//! diff applied, and the NOMT commit in witness mode that yields the state root and the
//! witness (encoding included). Verification is `prover::verify_block`: witness decoded and
//! checked against the parent root, the block re-executed over it, receipts and header
//! checked, the post-state root recomputed from the proof.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use chain_rpc::chain::{ExecutedTx, build_header};
use memstate::{
    MemState, NoBlockHashes, genesis_diff, nomt_ops,
    witness::{PreImages, commit_with_witness},
};
use nomt::{Nomt, Options, SessionParams, hasher::Blake3Hasher};
use prover::{BlockInput, verify_block};
use sequencer::exec::execute_batch;

use crate::{
    parallel::pooled,
    workload::{self, Prepared},
};

/// One workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProverResult {
    /// Workload name.
    pub workload: String,
    /// Transactions.
    pub txs: usize,
    /// Blocks.
    pub blocks: usize,
    /// Witness bytes per transaction (encoded: zstd-compressed).
    pub witness_bytes_per_tx: f64,
    /// Producing the blocks on one core, seconds.
    pub produce_s: f64,
    /// Of `produce_s`, the NOMT commits with their witnesses.
    pub commit_s: f64,
    /// Verifying them on one core, seconds.
    pub verify_s: f64,
    /// produce_s / verify_s: above 1, one core verifies faster than the sequencer produced.
    pub ratio: f64,
}

/// Produces `p`'s blocks of `block_txs` transactions, then verifies each on this thread.
pub fn measure(p: &Prepared, name: &str, block_txs: usize) -> Result<ProverResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut options = Options::new();
    options.path(dir.path());
    options.hashtable_buckets((p.addresses.len() as u32 * 4).max(1 << 14));
    let nomt = Nomt::<Blake3Hasher>::open(options).map_err(|e| e.to_string())?;
    let state = MemState::from_genesis(&p.alloc);
    let genesis = nomt.begin_session(SessionParams::default());
    let finished =
        genesis.finish(nomt_ops(&genesis_diff(&p.alloc), &[])).map_err(|e| e.to_string())?;
    let mut parent_root = B256::from(finished.root().into_inner());
    finished.commit(&nomt).map_err(|e| e.to_string())?;

    let rules = p.rules();
    let (mut produce, mut commit, mut witness_bytes) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut parent_hash = B256::ZERO;
    let mut inputs = Vec::new();
    for (number, block) in pooled(p).chunks(block_txs).enumerate() {
        let env = workload::block_env(number);
        let t = Instant::now();
        let out = execute_batch(&state, NoBlockHashes, rules, &env, block.to_vec(), u64::MAX, None);
        let mut known = PreImages::default();
        known.capture(&state, &out.reads, &out.diff);
        let wiped = state.apply(&out.diff);
        let mut reads = out.reads;
        reads.normalize();
        let c = Instant::now();
        let (root, witness) = commit_with_witness(
            &nomt,
            &out.diff,
            &wiped,
            &reads,
            &known,
            |h| state.code_by_hash(h).map(|c| c.original_bytes()),
            |_| None,
        )
        .map_err(|e| format!("{name}: block {number}: {e}"))?;
        let bytes = witness.encode();
        commit += c.elapsed();
        produce += t.elapsed();
        if out.executed.len() != block.len() || out.executed.iter().any(|t| !t.success) {
            return Err(format!("{name}: block {number}: a transaction failed or was dropped"));
        }
        witness_bytes += bytes.len();

        // The block as the feed publishes it (not timed: the prover's input).
        let (mut gas, mut logs) = (0, 0);
        let mut executed = Vec::with_capacity(out.executed.len());
        let mut records = Vec::with_capacity(out.executed.len());
        for (index, o) in out.executed.into_iter().enumerate() {
            gas += o.gas_used;
            records.push(feed::TxRecord {
                raw: o.tx.raw.clone(),
                sender: o.tx.sender,
                success: o.success,
                gas_used: o.gas_used,
                effective_gas_price: o.tx.effective_gas_price(env.base_fee),
                contract_address: o.contract_address.unwrap_or_default(),
                logs: o.logs.clone(),
            });
            executed.push(Arc::new(ExecutedTx {
                block_number: env.number,
                index: index as u64,
                mini_block: 0,
                mini_block_hash: B256::ZERO,
                success: o.success,
                gas_used: o.gas_used,
                cumulative_gas_used: gas,
                bloom: alloy_primitives::logs_bloom(o.logs.iter()),
                first_log_index: logs,
                effective_gas_price: o.tx.effective_gas_price(env.base_fee),
                contract_address: o.contract_address,
                logs: {
                    logs += o.logs.len() as u64;
                    o.logs
                },
                tx: o.tx,
            }));
        }
        let header = build_header(rules.spec, &env, parent_hash, root, &executed, gas);
        parent_hash = header.hash_slow();
        inputs.push(BlockInput { parent_root, header, txs: records, witness: bytes.into() });
        parent_root = root;
    }
    drop(nomt);

    let t = Instant::now();
    for input in &inputs {
        let verdict = verify_block(rules, input);
        if let Err(reason) = verdict.outcome {
            return Err(format!("{name}: block {}: {reason}", verdict.block));
        }
    }
    let verify = t.elapsed();
    Ok(ProverResult {
        workload: name.to_string(),
        txs: p.txs.len(),
        blocks: inputs.len(),
        witness_bytes_per_tx: witness_bytes as f64 / p.txs.len() as f64,
        produce_s: produce.as_secs_f64(),
        commit_s: commit.as_secs_f64(),
        verify_s: verify.as_secs_f64(),
        ratio: produce.as_secs_f64() / verify.as_secs_f64(),
    })
}
