//! Ethereum GeneralStateTests through the sequencer's execution path (memstate's `Overlay` +
//! revm as the sequencer builds it), checking each post-state MPT root and logs hash.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::Encodable;
use memstate::{GenesisAccount, MemState, Overlay};
use revm::{
    ExecuteCommitEvm,
    context::{BlockEnv, TxEnv},
    context_interface::{block::BlobExcessGasAndPrice, transaction::AccessList},
    primitives::{TxKind, hardfork::SpecId},
};
use serde::Deserialize;

/// A state-test file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateTestError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Env {
    current_coinbase: Address,
    current_difficulty: U256,
    current_gas_limit: U256,
    current_number: U256,
    current_timestamp: U256,
    current_base_fee: Option<U256>,
    current_random: Option<B256>,
    current_excess_blob_gas: Option<U256>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transaction {
    data: Vec<Bytes>,
    gas_limit: Vec<U256>,
    gas_price: Option<U256>,
    max_fee_per_gas: Option<U256>,
    max_priority_fee_per_gas: Option<U256>,
    nonce: U256,
    sender: Address,
    #[serde(default, deserialize_with = "deserialize_to")]
    to: Option<Address>,
    value: Vec<U256>,
    #[serde(default)]
    access_lists: Option<Vec<Option<AccessList>>>,
    #[serde(default)]
    blob_versioned_hashes: Option<Vec<B256>>,
    max_fee_per_blob_gas: Option<U256>,
}

fn deserialize_to<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct Indexes {
    data: usize,
    gas: usize,
    value: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostEntry {
    hash: B256,
    logs: B256,
    indexes: Indexes,
    expect_exception: Option<String>,
}

#[derive(Deserialize)]
struct StateTest {
    env: Env,
    pre: BTreeMap<Address, GenesisAccount>,
    transaction: Transaction,
    post: BTreeMap<String, Vec<PostEntry>>,
}

/// The hard fork a state test's fork name means, if revm has it. revm has no "Constantinople"
/// (the fork with EIP-1283 never went live; "ConstantinopleFix", Petersburg, did).
pub fn spec_for(fork: &str) -> Option<SpecId> {
    Some(match fork {
        "Frontier" => SpecId::FRONTIER,
        "Homestead" => SpecId::HOMESTEAD,
        "EIP150" => SpecId::TANGERINE,
        "EIP158" => SpecId::SPURIOUS_DRAGON,
        "Byzantium" => SpecId::BYZANTIUM,
        "ConstantinopleFix" => SpecId::PETERSBURG,
        "Istanbul" => SpecId::ISTANBUL,
        "Berlin" => SpecId::BERLIN,
        "London" => SpecId::LONDON,
        "Paris" | "Merge" => SpecId::MERGE,
        "Shanghai" => SpecId::SHANGHAI,
        "Cancun" => SpecId::CANCUN,
        "Prague" => SpecId::PRAGUE,
        "Osaka" => SpecId::OSAKA,
        _ => return None,
    })
}

/// One failed case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// File.
    pub file: String,
    /// Test name.
    pub test: String,
    /// Fork.
    pub fork: String,
    /// Index of the case within the fork's list.
    pub index: usize,
    /// What differed.
    pub reason: String,
}

/// Outcome of a run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Cases whose root and logs matched.
    pub passed: usize,
    /// Cases that did not.
    pub failed: Vec<Failure>,
    /// Cases for forks revm does not know.
    pub skipped: usize,
    /// Files that are not state tests this runner can express (e.g. `ValueOverflow*`, whose
    /// values are deliberately not numbers), with the reason.
    pub unreadable: Vec<(String, String)>,
    /// Tests skipped by name ([`SKIPPED_TESTS`]).
    pub skipped_tests: Vec<String>,
    /// What the JIT did (with [`Engine::Jit`]).
    pub jit: Option<jit::JitStats>,
}

impl Summary {
    fn merge(mut self, other: Summary) -> Summary {
        self.passed += other.passed;
        self.failed.extend(other.failed);
        self.skipped += other.skipped;
        self.unreadable.extend(other.unreadable);
        self.skipped_tests.extend(other.skipped_tests);
        self
    }
}

/// Every `.json` file under the given paths, sorted.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), out);
                }
            }
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path.to_path_buf());
        }
    }
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files);
    }
    files.sort();
    files
}

/// Runs every case of every file, in parallel across files.
pub fn run_files(files: &[PathBuf], engine: Engine) -> Result<Summary, StateTestError> {
    use rayon::prelude::*;
    if engine != Engine::Parallel {
        let mut summary = files
            .par_iter()
            .map(|path| run_file(path, engine))
            .try_reduce(Summary::default, |a, b| Ok(a.merge(b)))?;
        if engine == Engine::Jit {
            summary.jit = Some(jit_runtime().stats());
        }
        return Ok(summary);
    }
    // Plain threads, not rayon's: a rayon worker waiting on the engine's own pool would run
    // other files' jobs on its stack meanwhile, nesting them without bound.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut summary = Summary::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = files.get(i) else { return Ok(summary) };
                        summary = summary.merge(run_file(path, engine)?);
                    }
                })
            })
            .collect();
        workers.into_iter().try_fold(Summary::default(), |all, worker| {
            Ok(all.merge(worker.join().expect("a runner thread panicked")?))
        })
    })
}

/// Which execution path the cases run through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// revm over memstate's overlay, one transaction after the other (the sequencer's
    /// sequential path).
    Sequential,
    /// The parallel executor, forced onto its worker path (multi-version reads, deferred
    /// beneficiary fee, validation and commit), with one worker.
    Parallel,
    /// The sequential path with every contract compiled by the JIT on its first call.
    Jit,
}

/// The JIT runtime of [`Engine::Jit`]: every contract compiled on first call, in the frame.
pub fn jit_runtime() -> &'static std::sync::Arc<jit::JitRuntime> {
    static RT: std::sync::OnceLock<std::sync::Arc<jit::JitRuntime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| jit::JitRuntime::start(jit::JitConfig::eager(), None))
}

thread_local! {
    /// One engine per runner thread, forced to take its parallel path even for one
    /// transaction.
    static ENGINE: sequencer::parallel::Executor = {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("one thread");
        let config = sequencer::parallel::ExecutorConfig {
            threads: 1,
            sequential_share: 1.0,
            min_parallel: 1,
            min_parallel_gas: 0,
        };
        sequencer::parallel::Executor::new(config, Some(std::sync::Arc::new(pool)))
            .expect("no pool to build")
    };
}

/// Runs every case of one file.
pub fn run_file(path: &Path, engine: Engine) -> Result<Summary, StateTestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| StateTestError::Io { path: path.into(), source })?;
    let mut summary = Summary::default();
    let tests: BTreeMap<String, StateTest> = match serde_json::from_str(&text) {
        Ok(tests) => tests,
        Err(err) => {
            summary.unreadable.push((path.display().to_string(), err.to_string()));
            return Ok(summary);
        }
    };
    for (name, test) in &tests {
        if SKIPPED_TESTS.iter().any(|(skip, _)| skip == name) {
            summary.skipped_tests.push(name.clone());
            continue;
        }
        for (fork, entries) in &test.post {
            let Some(spec) = spec_for(fork) else {
                summary.skipped += entries.len();
                continue;
            };
            for (index, entry) in entries.iter().enumerate() {
                // A panic in one case (a bug in the path under test) fails that case only.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(test, spec, entry, engine)
                }));
                let run = run.unwrap_or_else(|panic| {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panicked: {msg}"))
                });
                match run {
                    Ok(()) => summary.passed += 1,
                    Err(reason) => summary.failed.push(Failure {
                        file: path.display().to_string(),
                        test: name.clone(),
                        fork: fork.clone(),
                        index,
                        reason,
                    }),
                }
            }
        }
    }
    Ok(summary)
}

/// Blobs one transaction may carry: the block maximum in Cancun (6) and Prague (9); EIP-7594
/// caps a transaction at 6 from Osaka on.
fn max_blobs_per_tx(spec: SpecId) -> u64 {
    if spec.is_enabled_in(SpecId::OSAKA) {
        6
    } else if spec.is_enabled_in(SpecId::PRAGUE) {
        9
    } else {
        6
    }
}

/// Tests that need EIP-7610 (creating over an account that has storage but no code and no
/// nonce must fail). revm decides collisions from nonce and code alone, and such accounts cannot
/// arise on a chain after EIP-161; revm's own runner skips the same tests.
pub const SKIPPED_TESTS: &[(&str, &str)] = &[
    ("InitCollisionParis", "EIP-7610 storage collision"),
    ("dynamicAccountOverwriteEmpty_Paris", "EIP-7610 storage collision"),
    ("create2collisionStorageParis", "EIP-7610 storage collision"),
    ("RevertInCreateInInitCreate2Paris", "EIP-7610 storage collision"),
    ("RevertInCreateInInit_Paris", "EIP-7610 storage collision"),
];

fn u64_of(v: U256) -> u64 {
    v.saturating_to()
}

fn run_case(
    test: &StateTest,
    spec: SpecId,
    entry: &PostEntry,
    engine: Engine,
) -> Result<(), String> {
    let state = MemState::from_genesis(&test.pre);
    let env = &test.env;
    let tx = &test.transaction;

    let mut block = BlockEnv {
        number: env.current_number,
        beneficiary: env.current_coinbase,
        timestamp: env.current_timestamp,
        gas_limit: u64_of(env.current_gas_limit),
        basefee: env.current_base_fee.map(u64_of).unwrap_or_default(),
        difficulty: env.current_difficulty,
        prevrandao: env.current_random,
        ..Default::default()
    };
    if spec.is_enabled_in(SpecId::CANCUN) {
        block.blob_excess_gas_and_price = Some(BlobExcessGasAndPrice::new_with_spec(
            env.current_excess_blob_gas.map(u64_of).unwrap_or_default(),
            spec,
        ));
    }
    if !spec.is_enabled_in(SpecId::MERGE) {
        block.prevrandao = None;
    }

    let access_list =
        tx.access_lists.as_ref().and_then(|lists| lists.get(entry.indexes.data).cloned().flatten());
    let tx_type = if tx.blob_versioned_hashes.is_some() {
        3
    } else if tx.max_fee_per_gas.is_some() {
        2
    } else if access_list.is_some() {
        1
    } else {
        0
    };
    let data = tx.data.get(entry.indexes.data).ok_or("data index out of range")?;
    let gas = tx.gas_limit.get(entry.indexes.gas).ok_or("gas index out of range")?;
    let value = tx.value.get(entry.indexes.value).ok_or("value index out of range")?;
    let tx_env = TxEnv {
        tx_type,
        caller: tx.sender,
        gas_limit: u64_of(*gas),
        gas_price: tx.gas_price.or(tx.max_fee_per_gas).unwrap_or_default().saturating_to(),
        kind: tx.to.map_or(TxKind::Create, TxKind::Call),
        value: *value,
        data: data.clone(),
        nonce: u64_of(tx.nonce),
        chain_id: Some(1),
        access_list: access_list.unwrap_or_default(),
        gas_priority_fee: tx.max_priority_fee_per_gas.map(|v| v.saturating_to()),
        blob_hashes: tx.blob_versioned_hashes.clone().unwrap_or_default(),
        max_fee_per_blob_gas: tx.max_fee_per_blob_gas.unwrap_or_default().saturating_to(),
        ..Default::default()
    };

    // The test vectors' BLOCKHASH rule: keccak of the block number in decimal.
    let hashes = |n: u64| Ok(keccak256(n.to_string().as_bytes()));
    let (logs, outcome, diff) = if tx_env.tx_type == 3 && tx_env.kind.is_create() {
        // A blob transaction's `to` is an address, not optional: such a transaction cannot
        // even be encoded, so it is refused before execution.
        let refused = Err("blob transaction cannot create a contract".to_string());
        (Vec::new(), refused, Default::default())
    } else if engine == Engine::Parallel {
        use sequencer::{
            exec::ChainRules,
            parallel::{Setup, TxResult},
        };
        let setup = Setup {
            max_blobs_per_tx: Some(max_blobs_per_tx(spec)),
            ..Setup::new(ChainRules { spec, chain_id: 1 }, block)
        };
        let done = ENGINE
            .with(|e| e.execute_parallel(&state, &hashes, &setup, std::slice::from_ref(&tx_env)))
            .ok_or("the engine has no worker pool")?;
        let (logs, outcome) = match done.results.into_iter().next() {
            Some(TxResult::Executed(result)) => (result.into_logs(), Ok(())),
            Some(TxResult::Failed(err)) => (Vec::new(), Err(err.to_string())),
            Some(TxResult::Deferred) | None => return Err("the engine did not run it".into()),
        };
        (logs, outcome, done.diff)
    } else if engine == Engine::Jit {
        let mut inner = sequencer::exec::new_evm(Overlay::new(&state, hashes), spec, 1, block);
        inner.ctx.cfg.max_blobs_per_tx = Some(max_blobs_per_tx(spec));
        let mut evm = jit::JitEvm::new(inner, jit_runtime().clone());
        let (logs, outcome) = match evm.transact_commit(tx_env) {
            Ok(result) => (result.into_logs(), Ok(())),
            Err(err) => (Vec::new(), Err(err.to_string())),
        };
        (logs, outcome, evm.inner.ctx.journaled_state.database.into_diff())
    } else {
        let mut evm = sequencer::exec::new_evm(Overlay::new(&state, hashes), spec, 1, block);
        evm.ctx.cfg.max_blobs_per_tx = Some(max_blobs_per_tx(spec));
        let (logs, outcome) = match evm.transact_commit(tx_env) {
            Ok(result) => (result.into_logs(), Ok(())),
            Err(err) => (Vec::new(), Err(err.to_string())),
        };
        (logs, outcome, evm.ctx.journaled_state.database.into_diff())
    };
    let _wiped = state.apply(&diff);

    match (&entry.expect_exception, &outcome) {
        (Some(expected), Ok(())) => {
            return Err(format!("expected exception {expected}, transaction succeeded"));
        }
        (None, Err(err)) => return Err(format!("unexpected error: {err}")),
        _ => {}
    }
    let mut rlp = Vec::new();
    logs.encode(&mut rlp);
    let logs_hash = keccak256(&rlp);
    if logs_hash != entry.logs {
        return Err(format!("logs hash {logs_hash} != expected {}", entry.logs));
    }
    let root = state.mpt_root();
    if root != entry.hash {
        return Err(format!("state root {root} != expected {}", entry.hash));
    }
    Ok(())
}
