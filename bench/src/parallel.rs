//! `bench parallel`: the parallel executor against sequential revm over the same blocks, in
//! lockstep: each block is executed by both from the same state, their diffs must be equal,
//! and the one diff is applied before the next block.

use std::{sync::Arc, time::Instant};

use memstate::{MemState, NoBlockHashes};
use sequencer::{
    exec::{BatchOutcome, execute_batch},
    parallel::{Executor, ExecutorConfig},
    tx::{PooledTx, decode_recovered},
};

use crate::{median, target::cpu_time, workload::Prepared};

/// One workload at one thread count.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ParallelResult {
    /// Workload name.
    pub workload: String,
    /// Worker threads of the engine.
    pub threads: usize,
    /// Transactions per run.
    pub txs: usize,
    /// Transactions per block.
    pub block_txs: usize,
    /// Sequential revm, median seconds of execution per run.
    pub sequential_s: f64,
    /// The engine, median seconds per run.
    pub parallel_s: f64,
    /// Sequential time / parallel time (> 1: the engine is faster).
    pub ratio: f64,
    /// CPU seconds of the sequential runs (median).
    pub sequential_cpu_s: f64,
    /// CPU seconds of the engine's runs, all threads (median).
    pub parallel_cpu_s: f64,
    /// Re-executions per transaction in the engine (median run).
    pub reexecutions_per_tx: f64,
    /// Blocks the engine ran in parallel / sequentially (chain detection), in the last run.
    pub parallel_blocks: u64,
    /// Blocks run on the sequential path.
    pub sequential_blocks: u64,
}

/// The transactions as the pool would hand them over (senders known: account `k % n`).
pub fn pooled(p: &Prepared) -> Vec<Arc<PooledTx>> {
    let n = p.addresses.len();
    p.txs
        .iter()
        .enumerate()
        .map(|(k, raw)| Arc::new(decode_recovered(raw.clone(), p.addresses[k % n]).unwrap()))
        .collect()
}

/// Measures `p` (named `name`) at `threads` worker threads, with the engine's
/// `min_parallel_gas` gate as given (0 runs every block on the workers).
pub fn measure(
    p: &Prepared,
    name: &str,
    threads: usize,
    block_txs: usize,
    runs: usize,
    min_parallel_gas: u64,
) -> Result<ParallelResult, String> {
    let txs = pooled(p);
    let rules = p.rules();
    let mut seq = Vec::new();
    let mut par = Vec::new();
    let mut seq_cpu = Vec::new();
    let mut par_cpu = Vec::new();
    let mut reexec = Vec::new();
    let mut blocks = (0, 0);
    for _ in 0..runs {
        let state = MemState::from_genesis(&p.alloc);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("bench-exec-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        let config = ExecutorConfig { threads, min_parallel_gas, ..Default::default() };
        let engine = Executor::new(config, (threads > 1).then(|| Arc::new(pool)))
            .map_err(|e| e.to_string())?;
        let (mut s, mut q, mut sc, mut pc) = (0.0, 0.0, 0.0, 0.0);
        for (number, block) in txs.chunks(block_txs).enumerate() {
            let env = crate::workload::block_env(number);
            // The second run of a block finds its state warm in the caches: alternate which
            // engine goes first so neither gets that advantage throughout.
            let timed = |run: &dyn Fn() -> BatchOutcome| {
                let (c0, t0) = (cpu_time(), Instant::now());
                let out = run();
                (out, t0.elapsed().as_secs_f64(), (cpu_time() - c0).as_secs_f64())
            };
            let txs = || block.to_vec();
            let sequential = || {
                timed(&|| execute_batch(&state, NoBlockHashes, rules, &env, txs(), u64::MAX, None))
            };
            let parallel = || {
                timed(&|| engine.execute(&state, NoBlockHashes, rules, &env, txs(), u64::MAX, None))
            };
            let ((expected, ts, cs), (got, tp, cp)) = if number % 2 == 0 {
                let first = sequential();
                (first, parallel())
            } else {
                let first = parallel();
                (sequential(), first)
            };
            s += ts;
            sc += cs;
            q += tp;
            pc += cp;
            if got.diff != expected.diff || got.executed.len() != expected.executed.len() {
                return Err(format!("{name}: block {number} differs from sequential execution"));
            }
            if expected.executed.len() != block.len() {
                return Err(format!(
                    "{name}: block {number}: {} of {} transactions executed ({:?})",
                    expected.executed.len(),
                    block.len(),
                    expected.dropped.first().map(|d| &d.1)
                ));
            }
            if let Some(failed) = expected.executed.iter().find(|t| !t.success) {
                return Err(format!(
                    "{name}: block {number}: a transaction failed (gas used {}): the workload \
                     would measure nothing",
                    failed.gas_used
                ));
            }
            state.apply(&expected.diff);
        }
        let stats = engine.stats();
        seq.push(s);
        par.push(q);
        seq_cpu.push(sc);
        par_cpu.push(pc);
        reexec.push(stats.reexecutions as f64 / txs.len() as f64);
        blocks = (stats.parallel_batches, stats.sequential_batches);
    }
    let (sequential_s, parallel_s) = (median(&mut seq), median(&mut par));
    Ok(ParallelResult {
        workload: name.into(),
        threads,
        txs: txs.len(),
        block_txs,
        sequential_s,
        parallel_s,
        ratio: sequential_s / parallel_s,
        sequential_cpu_s: median(&mut seq_cpu),
        parallel_cpu_s: median(&mut par_cpu),
        reexecutions_per_tx: median(&mut reexec),
        parallel_blocks: blocks.0,
        sequential_blocks: blocks.1,
    })
}
