//! `bench blocktest`: Ethereum BlockchainTests (valid blocks) through the prover's stateless
//! path, where they fit this chain's rules.
//!
//! For each block, from the test's pre-state: the transactions are executed the way the
//! sequencer executes them (revm over memstate, PREVRANDAO from the header's mix hash, as on
//! Ethereum); the receipts must give the test header's receipts root, logs bloom and gas used
//! (and its transactions root); the block is committed to NOMT in witness mode; then
//! `prover::verify_block_with` must find the block valid from the parent root, the header
//! (with our NOMT root in place of Ethereum's MPT root) and the witness alone.
//!
//! What does not fit this chain: blocks with withdrawals, blob transactions or uncles (none of
//! which this chain has), and forks it does not run. This chain makes no EIP-4788 system call,
//! so the beacon-root contract's storage is not compared; post-state roots are not compared
//! either (ours is NOMT's).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use alloy_consensus::{Block, Header, Transaction as _, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes};
use alloy_rlp::Decodable;
use chain_rpc::{
    chain::{ExecutedTx, PooledTx, check_header, recover_sender},
    evm::{BlockEnvParams, ChainRules, new_evm, tx_env},
};
use memstate::{GenesisAccount, MemState, Overlay, StateError, genesis_diff, nomt_ops};
use nomt::{Nomt, Options, SessionParams, hasher::Blake3Hasher};
use prover::{BlockInput, Prevrandao, verify_block_with};
use revm::{ExecuteCommitEvm, ExecuteEvm, context_interface::result::ExecutionResult};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockTest {
    network: String,
    pre: BTreeMap<Address, GenesisAccount>,
    genesis_block_header: GenesisHeader,
    blocks: Vec<TestBlock>,
}

#[derive(Deserialize)]
struct GenesisHeader {
    hash: B256,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestBlock {
    rlp: Bytes,
    #[serde(default)]
    expect_exception: Option<String>,
}

/// What a run found.
#[derive(Debug, Default, serde::Serialize)]
pub struct BlockSummary {
    /// Tests read.
    pub tests: usize,
    /// Blocks verified statelessly (and whose receipts matched Ethereum's).
    pub verified: usize,
    /// Tests skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Blocks that failed: file, test, block number, reason.
    pub failed: Vec<(String, String, u64, String)>,
}

/// Runs every test in `files`.
pub fn run_files(files: &[PathBuf]) -> BlockSummary {
    let mut summary = BlockSummary::default();
    for file in files {
        run_file(file, &mut summary);
    }
    summary
}

fn run_file(path: &Path, summary: &mut BlockSummary) {
    let file = path.display().to_string();
    let tests: BTreeMap<String, BlockTest> = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(tests) => tests,
        Err(err) => {
            summary.failed.push((file, String::new(), 0, format!("unreadable: {err}")));
            return;
        }
    };
    for (name, test) in tests {
        summary.tests += 1;
        match run_test(&test) {
            Ok(blocks) => summary.verified += blocks,
            Err(Outcome::Skip(reason)) => *summary.skipped.entry(reason).or_default() += 1,
            Err(Outcome::Fail(block, reason)) => {
                summary.failed.push((file.clone(), name, block, reason))
            }
        }
    }
}

enum Outcome {
    Skip(String),
    Fail(u64, String),
}

fn run_test(test: &BlockTest) -> Result<usize, Outcome> {
    let skip = |reason: &str| Outcome::Skip(reason.to_string());
    let Some(spec) = crate::statetest::spec_for(&test.network) else {
        return Err(skip(&format!("fork {} not run by this chain", test.network)));
    };
    if !spec.is_enabled_in(revm::primitives::hardfork::SpecId::SHANGHAI) {
        return Err(skip("fork before Shanghai"));
    }
    let mut blocks = Vec::with_capacity(test.blocks.len());
    for b in &test.blocks {
        if b.expect_exception.is_some() {
            return Err(skip("an invalid block"));
        }
        let block = Block::<TxEnvelope>::decode(&mut b.rlp.as_ref())
            .map_err(|e| Outcome::Fail(0, format!("block RLP: {e}")))?;
        if block.body.withdrawals.as_ref().is_some_and(|w| !w.is_empty()) {
            return Err(skip("withdrawals"));
        }
        if !block.body.ommers.is_empty() {
            return Err(skip("uncles"));
        }
        if block.body.transactions.iter().any(|t| t.is_eip4844()) {
            return Err(skip("blob transactions"));
        }
        blocks.push(block);
    }
    // The chain forks of some tests re-use numbers: one chain only.
    if blocks.windows(2).any(|w| w[1].header.parent_hash != w[0].header.hash_slow()) {
        return Err(skip("several branches"));
    }
    let rules = ChainRules { spec, chain_id: 1 };
    let dir = tempfile::tempdir().map_err(|e| Outcome::Fail(0, e.to_string()))?;
    let mut options = Options::new();
    options.path(dir.path());
    options.hashtable_buckets(1 << 12);
    let nomt_err = |e: &dyn std::fmt::Display| Outcome::Fail(0, format!("NOMT: {e}"));
    let nomt = Nomt::<Blake3Hasher>::open(options).map_err(|e| nomt_err(&e))?;
    let state = MemState::from_genesis(&test.pre);
    let genesis = nomt.begin_session(SessionParams::default());
    let finished =
        genesis.finish(nomt_ops(&genesis_diff(&test.pre), &[])).map_err(|e| nomt_err(&e))?;
    let mut parent_root = B256::from(finished.root().into_inner());
    finished.commit(&nomt).map_err(|e| nomt_err(&e))?;
    let mut hashes: HashMap<u64, B256> = HashMap::from([(0, test.genesis_block_header.hash)]);
    for block in &blocks {
        let input = produce(&nomt, &state, rules, block, &hashes, parent_root)?;
        let number = block.header.number;
        let verdict = verify_block_with(rules, &input, Prevrandao::Header);
        if let Err(reason) = verdict.outcome {
            return Err(Outcome::Fail(number, format!("prover: {reason}")));
        }
        parent_root = input.header.state_root;
        hashes.insert(number, block.header.hash_slow());
    }
    Ok(blocks.len())
}

/// Executes `block` as the sequencer would, checks its receipts against Ethereum's header, and
/// commits it with its witness: the prover's input.
fn produce(
    nomt: &Nomt<Blake3Hasher>,
    state: &MemState,
    rules: ChainRules,
    block: &Block<TxEnvelope>,
    hashes: &HashMap<u64, B256>,
    parent_root: B256,
) -> Result<BlockInput, Outcome> {
    let header: &Header = &block.header;
    let number = header.number;
    let fail = |reason: String| Outcome::Fail(number, reason);
    let env = BlockEnvParams {
        number,
        timestamp: header.timestamp,
        beneficiary: header.beneficiary,
        base_fee: header.base_fee_per_gas.unwrap_or_default(),
        gas_limit: header.gas_limit,
    };
    let mut block_env = env.block_env(rules.spec);
    block_env.prevrandao = Some(header.mix_hash);
    let lookup = |n: u64| hashes.get(&n).copied().ok_or(StateError::BlockHashUnavailable(n));
    let mut overlay = Overlay::new(state, lookup);
    let mut executed = Vec::new();
    let mut records = Vec::new();
    {
        let mut evm = new_evm(&mut overlay, rules.spec, rules.chain_id, block_env);
        let (mut gas, mut logs) = (0u64, 0u64);
        for (index, envelope) in block.body.transactions.iter().enumerate() {
            let sender = recover_sender(envelope).map_err(|e| fail(format!("tx {index}: {e}")))?;
            let out = evm
                .transact(tx_env(envelope, sender))
                .map_err(|e| fail(format!("tx {index} refused: {e}")))?;
            evm.commit(out.state);
            let result = out.result;
            let gas_used = result.gas().tx_gas_used();
            let success = result.is_success();
            let contract_address = result.created_address();
            let tx_logs = match result {
                ExecutionResult::Success { logs, .. } => logs,
                _ => Vec::new(),
            };
            gas += gas_used;
            let effective_gas_price = envelope.effective_gas_price(Some(env.base_fee));
            let mut raw = Vec::new();
            alloy_eips::eip2718::Encodable2718::encode_2718(envelope, &mut raw);
            let raw = Bytes::from(raw);
            records.push(feed::TxRecord {
                raw: raw.clone(),
                sender,
                success,
                gas_used,
                effective_gas_price,
                contract_address: contract_address.unwrap_or_default(),
                logs: tx_logs.clone(),
            });
            executed.push(Arc::new(ExecutedTx {
                block_number: number,
                index: index as u64,
                mini_block: 0,
                mini_block_hash: B256::ZERO,
                success,
                gas_used,
                cumulative_gas_used: gas,
                bloom: alloy_primitives::logs_bloom(tx_logs.iter()),
                first_log_index: logs,
                contract_address,
                effective_gas_price,
                logs: {
                    logs += tx_logs.len() as u64;
                    tx_logs
                },
                tx: Arc::new(PooledTx {
                    envelope: envelope.clone(),
                    sender,
                    hash: alloy_primitives::keccak256(&raw),
                    raw,
                }),
            }));
        }
    }
    check_header(header, &executed)
        .map_err(|field| fail(format!("our {field} differs from Ethereum's")))?;
    let (diff, mut reads) = overlay.into_parts();
    reads.normalize();
    // The pre-state as the sequencer's builder captures it; the prover's check of the witness
    // against the parent root then checks the capture too.
    let mut known = memstate::witness::PreImages::default();
    known.capture(state, &reads, &diff);
    let wiped = state.apply(&diff);
    let (root, witness) = memstate::witness::commit_with_witness(
        nomt,
        &diff,
        &wiped,
        &reads,
        &known,
        |h| state.code_by_hash(h).map(|c| c.original_bytes()),
        |n| hashes.get(&n).copied(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut ours = header.clone();
    ours.state_root = root;
    Ok(BlockInput { parent_root, header: ours, txs: records, witness: witness.encode().into() })
}
