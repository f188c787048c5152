//! `bench jit`: revm's interpreter against the same EVM with JIT-compiled contracts, on the
//! same transactions in the same run.
//!
//! A case is one transaction over a pre-state: each `data` entry of a state-test file (the
//! compute-heavy `evm-benchmarks`), a `.hex` runtime code called with given calldata (revm's
//! bench bytecode), or an ERC-20 transfer on the workspace's token. Both engines run the
//! transaction without committing, alternately, after warm-up (for the JIT: until its runtime
//! has compiled each contract and decided from a timed trial whether to keep the code, as the
//! sequencer's runtime does; compile time and code size are reported apart). Every run of
//! both engines must give the same result, gas and output, or the case fails.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use revm::context::{Context, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::TxKind;
use revm::primitives::hardfork::SpecId;
use revm::state::{AccountInfo, Bytecode};
use revm::{ExecuteEvm, MainBuilder, MainContext};
use std::path::Path;
use std::time::{Duration, Instant};

/// One transaction over a pre-state.
pub struct Case {
    /// Its name in reports: file stem, plus `#i` for the i-th data entry.
    pub name: String,
    /// The pre-state.
    pub db: CacheDB<EmptyDB>,
    /// The transaction.
    pub tx: TxEnv,
    /// The fork.
    pub spec: SpecId,
}

/// The caller of `.hex` and ERC-20 cases.
const CALLER: Address = Address::new([0xca; 20]);
/// Where `.hex` code is placed.
const TARGET: Address = Address::new([0xbe; 20]);

fn account(db: &mut CacheDB<EmptyDB>, addr: Address, balance: U256, nonce: u64, code: Bytes) {
    let bytecode = Bytecode::new_raw(code);
    db.insert_account_info(
        addr,
        AccountInfo {
            balance,
            nonce,
            code_hash: bytecode.hash_slow(),
            code: Some(bytecode),
            ..Default::default()
        },
    );
}

fn hex_bytes(v: &serde_json::Value) -> Result<Bytes, String> {
    let s = v.as_str().ok_or("expected a hex string")?;
    alloy_primitives::hex::decode(s.trim()).map(Bytes::from).map_err(|e| e.to_string())
}

fn num(v: &serde_json::Value) -> Result<U256, String> {
    let s = v.as_str().ok_or("expected a number string")?;
    s.parse::<U256>().map_err(|e| format!("{s}: {e}"))
}

/// Cases of a state-test file: one per `data` entry, under the fork of its first `post` key.
pub fn state_test_cases(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tests: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("case").to_string();
    let mut cases = Vec::new();
    for (_, test) in tests {
        let fork = test["post"]
            .as_object()
            .and_then(|p| p.keys().next().cloned())
            .ok_or("no post section")?;
        let spec =
            crate::statetest::spec_for(&fork).ok_or_else(|| format!("unknown fork {fork}"))?;
        let mut db = CacheDB::new(EmptyDB::default());
        for (addr, acc) in test["pre"].as_object().ok_or("no pre section")? {
            let addr: Address = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
            account(
                &mut db,
                addr,
                num(&acc["balance"])?,
                num(&acc["nonce"])?.saturating_to(),
                hex_bytes(&acc["code"])?,
            );
            for (k, v) in acc["storage"].as_object().into_iter().flatten() {
                db.insert_account_storage(addr, num(&serde_json::json!(k))?, num(v)?)
                    .map_err(|e| e.to_string())?;
            }
        }
        let t = &test["transaction"];
        let to: Address =
            t["to"].as_str().ok_or("no to")?.parse().map_err(|e| format!("to: {e}"))?;
        let sender: Address = t["sender"]
            .as_str()
            .ok_or("no transaction.sender")?
            .parse()
            .map_err(|e| format!("sender: {e}"))?;
        let gas_limit = num(&t["gasLimit"][0])?.saturating_to();
        let datas = t["data"].as_array().ok_or("no data")?;
        for (i, data) in datas.iter().enumerate() {
            let name = if datas.len() == 1 { stem.clone() } else { format!("{stem}#{i}") };
            cases.push(Case {
                name,
                db: db.clone(),
                tx: call(sender, to, hex_bytes(data)?, gas_limit),
                spec,
            });
        }
    }
    Ok(cases)
}

/// `FILE.hex[@CALLDATA]`: the runtime code in FILE called with CALLDATA (hex, default empty).
pub fn hex_case(arg: &str) -> Result<Case, String> {
    let (file, input) = arg.split_once('@').unwrap_or((arg, ""));
    let code = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    let code = alloy_primitives::hex::decode(code.trim()).map_err(|e| format!("{file}: {e}"))?;
    let input = alloy_primitives::hex::decode(input).map_err(|e| format!("calldata: {e}"))?;
    let mut db = CacheDB::new(EmptyDB::default());
    account(&mut db, CALLER, U256::from(10).pow(U256::from(24)), 0, Bytes::new());
    account(&mut db, TARGET, U256::ZERO, 1, code.into());
    let name = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or("hex").to_string();
    Ok(Case {
        name,
        db,
        tx: call(CALLER, TARGET, input.into(), 1_000_000_000),
        spec: SpecId::CANCUN,
    })
}

/// Where `burntpix` cases find revm's bytecode: relative to the repository root, as the
/// default cases are, or else in this crate's source tree.
fn burntpix_dir() -> std::path::PathBuf {
    let relative = Path::new("bench/fixtures/revm-bench");
    if relative.is_dir() {
        relative.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/revm-bench")
    }
}

/// `burntpix[@ITERATIONS]`: `run(0, ITERATIONS)` (default 20 000) on burntpix, the four
/// contracts of revm's `burntpix` benchmark at their addresses, with the main contract's
/// three storage slots holding the other three addresses, as revm's bench sets them up.
pub fn burntpix_case(arg: &str) -> Result<Case, String> {
    let iterations = match arg.split_once('@') {
        Some((_, n)) => n.parse::<u64>().map_err(|e| format!("burntpix iterations {n}: {e}"))?,
        None => 20_000,
    };
    let addr = |s: &str| s.parse::<Address>().expect("address literal");
    let main = addr("0x49206861766520746f6f206d7563682074696d65");
    let one = addr("0x0a743ba7304efcc9e384ece9be7631e2470e401e");
    let two = addr("0xc917e98213a05d271adc5d93d2fee6c1f1006f75");
    let three = addr("0xf529c70db0800449ebd81fbc6e4221523a989f05");
    let mut db = CacheDB::new(EmptyDB::default());
    account(&mut db, CALLER, U256::from(10).pow(U256::from(24)), 0, Bytes::new());
    let dir = burntpix_dir();
    for (at, file) in [(one, "one"), (main, "two"), (two, "three"), (three, "four")] {
        let path = dir.join(format!("burntpix_bytecode_{file}.hex"));
        let read = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
        let code = alloy_primitives::hex::decode(read?.trim())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        account(&mut db, at, U256::ZERO, 1, code.into());
    }
    for (slot, holds) in [(0u64, three), (1, one), (2, two)] {
        let word = U256::from_be_slice(holds.as_slice());
        db.insert_account_storage(main, U256::from(slot), word).map_err(|e| e.to_string())?;
    }
    alloy_sol_types::sol! { function run(uint32 seed, uint256 iterations) returns (string); }
    let input = runCall { seed: 0, iterations: U256::from(iterations) }.abi_encode();
    Ok(Case {
        name: if iterations == 20_000 {
            "burntpix".into()
        } else {
            format!("burntpix@{iterations}")
        },
        db,
        tx: call(CALLER, main, input.into(), 10_000_000_000),
        spec: SpecId::CANCUN,
    })
}

/// An ERC-20 `transfer` on the workspace's OpenZeppelin token, from a holder with a balance.
pub fn erc20_case() -> Case {
    let (code, storage) = crate::workload::token_runtime();
    let mut db = CacheDB::new(EmptyDB::default());
    account(&mut db, CALLER, U256::from(10).pow(U256::from(24)), 0, Bytes::new());
    account(&mut db, crate::workload::TOKEN, U256::ZERO, 1, code);
    for (k, v) in storage {
        db.insert_account_storage(crate::workload::TOKEN, k, v).expect("cache db");
    }
    let slot = crate::workload::balance_slot(&CALLER);
    db.insert_account_storage(crate::workload::TOKEN, slot, U256::from(1_000_000u64))
        .expect("cache db");
    alloy_sol_types::sol! { function transfer(address to, uint256 amount) returns (bool); }
    let input = transferCall { to: Address::new([0x42; 20]), amount: U256::from(1) }.abi_encode();
    Case {
        name: "erc20-transfer".into(),
        db,
        tx: call(CALLER, crate::workload::TOKEN, input.into(), 200_000),
        spec: SpecId::OSAKA,
    }
}

fn call(caller: Address, to: Address, data: Bytes, gas_limit: u64) -> TxEnv {
    TxEnv {
        caller,
        kind: TxKind::Call(to),
        data,
        gas_limit,
        gas_price: 0,
        chain_id: Some(1),
        ..Default::default()
    }
}

/// One case's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JitResult {
    /// The case.
    pub workload: String,
    /// Median time per transaction with compiled code, in microseconds.
    pub ours: f64,
    /// Median time per transaction in revm's interpreter, in microseconds.
    pub baseline: f64,
    /// Always "us".
    pub unit: &'static str,
    /// Interpreter time / JIT time: > 1 means the JIT is faster.
    pub ratio: f64,
    /// Gas used by the transaction.
    pub gas_used: u64,
    /// Contracts compiled for the case.
    pub contracts: u64,
    /// Their total compile time, in milliseconds.
    pub compile_ms: f64,
    /// Their total object code size, in bytes.
    pub code_bytes: usize,
    /// Timed runs per engine.
    pub runs: usize,
    /// Contracts the JIT declined, with the reason (they ran in the interpreter both times).
    pub declined: Vec<String>,
}

fn ctx(db: CacheDB<EmptyDB>, spec: SpecId) -> revm::handler::MainnetContext<CacheDB<EmptyDB>> {
    let mut c = Context::mainnet().with_db(db);
    c.cfg.set_spec_and_mainnet_gas_params(spec);
    c.cfg.disable_base_fee = true;
    c.cfg.disable_nonce_check = true;
    c
}

fn fingerprint(r: &ExecutionResult) -> (bool, u64, Option<Bytes>, usize) {
    (r.is_success(), r.tx_gas_used(), r.output().cloned(), r.logs().len())
}

/// Runs `case` with both engines, `runs` timed runs each, alternating. The JIT side runs
/// the runtime's own policy: each contract is interpreted (and timed) for its first
/// `hot_threshold` run segments, compiled (in the frame, so that warm-up is deterministic),
/// then kept only if its timed trial was faster. Warm-up repeats the transaction until that is
/// decided.
pub fn run_case(case: Case, runs: usize, opt: jit::OptLevel) -> Result<JitResult, String> {
    let threshold = jit::cache::TRIAL_SEGMENTS as u32;
    let cfg = jit::JitConfig {
        opt_level: opt,
        hot_threshold: threshold,
        blocking: true,
        ..Default::default()
    };
    let rt = jit::JitRuntime::start(cfg, None);
    let mut interp = ctx(case.db.clone(), case.spec).build_mainnet();
    let mut compiled = jit::JitEvm::new(ctx(case.db, case.spec).build_mainnet(), rt.clone());
    let expect = interp.transact(case.tx.clone()).map_err(|e| format!("{}: {e}", case.name))?;
    let expect = fingerprint(&expect.result);
    for _ in 0..=(2 * threshold) {
        let got = compiled.transact(case.tx.clone()).map_err(|e| format!("{}: {e}", case.name))?;
        if fingerprint(&got.result) != expect {
            return Err(format!(
                "{}: the JIT's result differs from the interpreter's: {:?} vs {:?}",
                case.name,
                fingerprint(&got.result),
                expect
            ));
        }
    }
    let stats = rt.stats();
    let mut t_interp = Vec::with_capacity(runs);
    let mut t_jit = Vec::with_capacity(runs);
    for i in 0..runs {
        // Alternate which engine goes first, so drift in the machine hits both alike.
        let order = if i % 2 == 0 { [false, true] } else { [true, false] };
        for use_jit in order {
            let started = Instant::now();
            let r = if use_jit {
                compiled.transact(case.tx.clone())
            } else {
                interp.transact(case.tx.clone())
            }
            .map_err(|e| format!("{}: {e}", case.name))?;
            let elapsed = started.elapsed();
            if fingerprint(&r.result) != expect {
                return Err(format!("{}: results changed between runs", case.name));
            }
            if use_jit { t_jit.push(elapsed) } else { t_interp.push(elapsed) }
        }
    }
    let after = rt.stats();
    let declined: Vec<String> =
        stats.declined.iter().map(|(reason, n)| format!("{n} {}", reason.as_str())).collect();
    if declined.is_empty() && after.frames_interpreted != stats.frames_interpreted {
        return Err(format!("{}: call frames ran in the interpreter in timed JIT runs", case.name));
    }
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let ours = micros(crate::median(&mut t_jit));
    let baseline = micros(crate::median(&mut t_interp));
    Ok(JitResult {
        workload: case.name,
        ours,
        baseline,
        unit: "us",
        ratio: baseline / ours,
        gas_used: expect.1,
        contracts: stats.compiled,
        compile_ms: stats.compile_micros as f64 / 1e3,
        code_bytes: stats.code_bytes,
        runs,
        declined,
    })
}

/// The cases named by `args`: state-test JSON files, `.hex[@calldata]` files, `burntpix[@N]`
/// or `erc20`.
pub fn cases(args: &[String]) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    for a in args {
        if a == "erc20" {
            out.push(erc20_case());
        } else if a == "burntpix" || a.starts_with("burntpix@") {
            out.push(burntpix_case(a)?);
        } else if a.split('@').next().is_some_and(|f| f.ends_with(".hex")) {
            out.push(hex_case(a)?);
        } else {
            out.extend(state_test_cases(Path::new(a))?);
        }
    }
    Ok(out)
}

/// Geometric mean of ratios.
pub fn geomean(ratios: &[f64]) -> f64 {
    if ratios.is_empty() {
        return 0.0;
    }
    (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The burntpix setup is revm's: `run` succeeds and returns the SVG it draws.
    #[test]
    fn burntpix_draws_an_svg() {
        let case = burntpix_case("burntpix@5").unwrap();
        assert_eq!(case.name, "burntpix@5");
        let mut evm = ctx(case.db, case.spec).build_mainnet();
        let out = evm.transact(case.tx).unwrap().result;
        assert!(out.is_success(), "{out:?}");
        let svg = String::from_utf8_lossy(out.output().unwrap());
        assert!(svg.contains("<svg"), "{svg}");
        assert!(burntpix_case("burntpix@x").is_err());
    }
}
