//! The parallel executor gives the sequential path's results: same outcome per transaction,
//! same state diff, same state root, for random batches over a few accounts and contracts
//! (dense conflicts), with 1, 2 and 8 worker threads.

use std::sync::Arc;

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, Bytes, TxKind, U256, keccak256};
use alloy_sol_types::SolValue;
use memstate::{GenesisAccount, GenesisAlloc, MemState, NoBlockHashes};
use proptest::prelude::*;
use revm::primitives::hardfork::SpecId;
use sequencer::{
    dev::{DEV_ACCOUNTS, dev_key, sign},
    exec::{BatchOutcome, BlockEnvParams, ChainRules, execute_batch, execute_batch_with},
    parallel::{Executor, ExecutorConfig},
    tx::{PooledTx, decode_recovered},
};

const SENDERS: usize = 8;
const CHAIN_ID: u64 = 31337;
const TOKEN: Address = Address::new([0x70; 20]);

/// Contracts at 0xc0.., by index.
fn contract(i: usize) -> Address {
    Address::left_padding_from(&[0xc0, i as u8])
}

/// Runtime codes of the contracts (hand-assembled).
const CODES: [&str; 6] = [
    // counter: slot0 += 1
    "5f54600101 5f55 00",
    // stores BALANCE(COINBASE) in slot0
    "4131 5f55 00",
    // writes slot0 then reverts
    "6001 5f55 5f5ffd",
    // storage keyed by calldata: sstore(calldataload(0), caller)
    "33 5f35 55 00",
    // forwards its call value to the coinbase
    "5f5f5f5f 34 41 5a f1 00",
    // storage-heavy: writes slots 1..=4 with the call's value + 1
    "3460010160015534600101600255346001016003553460010160045500",
];

/// A contract that burns about 1.7 M gas in a loop (65 536 rounds) and writes nothing.
const BURNER: Address = Address::new([0xb0; 20]);
const BURNER_CODE: &str = "62010000 5b 600190 03 80 6004 57 00";

fn code(hex: &str) -> Bytes {
    alloy_primitives::hex::decode(hex.replace(' ', "")).unwrap().into()
}

fn sender(i: usize) -> Address {
    DEV_ACCOUNTS[i].0
}

fn token_slot(holder: &Address) -> U256 {
    let mut buf = [0u8; 64];
    buf[12..32].copy_from_slice(holder.as_slice());
    U256::from_be_bytes(keccak256(buf).0)
}

/// Genesis: senders with 100 ETH, the contracts, and an ERC-20 (the workspace's OpenZeppelin
/// token, deployed once) with 10^24 units per sender.
fn genesis() -> MemState {
    let eth = U256::from(100u64) * U256::from(10u64).pow(U256::from(18));
    let mut alloc: GenesisAlloc = (0..SENDERS)
        .map(|i| (sender(i), GenesisAccount { balance: eth, ..Default::default() }))
        .collect();
    for (i, hex) in CODES.iter().enumerate() {
        alloc.insert(contract(i), GenesisAccount { code: Some(code(hex)), ..Default::default() });
    }
    alloc.insert(BURNER, GenesisAccount { code: Some(code(BURNER_CODE)), ..Default::default() });
    // Deploy the token to learn its runtime code and storage layout.
    let mut init =
        alloy_primitives::hex::decode(include_str!("../../contracts/out/Token.bin").trim())
            .unwrap();
    init.extend(("T".to_string(), "T".to_string(), U256::ZERO).abi_encode_params());
    let state = MemState::from_genesis(&alloc);
    let deploy = tx(0, 0, TxKind::Create, U256::ZERO, init.into(), 3_000_000, 0);
    let out = sequentially(&state, Address::ZERO, vec![deploy]);
    let created = out.executed[0].contract_address.expect("token deployed");
    let code_hash = out.diff.accounts[&created].info.expect("token exists").code_hash;
    let runtime_code = out.diff.codes[&code_hash].original_bytes();
    let mut storage = out.diff.accounts[&created].storage.clone();
    for i in 0..SENDERS {
        storage.insert(token_slot(&sender(i)), U256::from(10u64).pow(U256::from(24)));
    }
    alloc.insert(
        TOKEN,
        GenesisAccount { code: Some(runtime_code), storage: Some(storage), ..Default::default() },
    );
    MemState::from_genesis(&alloc)
}

fn rules() -> ChainRules {
    ChainRules { spec: SpecId::PRAGUE, chain_id: CHAIN_ID }
}

fn env(beneficiary: Address) -> BlockEnvParams {
    BlockEnvParams {
        number: 1,
        timestamp: 1_700_000_000,
        beneficiary,
        base_fee: 1_000_000_000,
        gas_limit: 30_000_000,
    }
}

fn tx(
    from: usize,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
    tip_gwei: u128,
) -> Arc<PooledTx> {
    let raw = sign(
        &dev_key(from),
        TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: tip_gwei * 1_000_000_000,
            to,
            value,
            access_list: Default::default(),
            input,
        },
    );
    Arc::new(decode_recovered(raw, sender(from)).unwrap())
}

/// What a generated transaction does.
#[derive(Clone, Debug)]
enum Action {
    Transfer { to: usize, value: u64 },
    ToBeneficiary { value: u64 },
    ToSelf,
    ToFresh { value: u64 },
    Erc20 { to: usize, amount: u64 },
    Call { contract: usize, arg: u8, value: u64 },
    CreateCounter,
    CreateSelfDestructing,
    Broke,
}

#[derive(Clone, Debug)]
struct Gen {
    from: usize,
    action: Action,
    nonce_skew: i8,
    tip: u128,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0..SENDERS, 0..1000u64).prop_map(|(to, value)| Action::Transfer { to, value }),
        1 => (0..1000u64).prop_map(|value| Action::ToBeneficiary { value }),
        1 => Just(Action::ToSelf),
        1 => (0..5u64).prop_map(|value| Action::ToFresh { value }),
        4 => (0..SENDERS, 0..1000u64).prop_map(|(to, amount)| Action::Erc20 { to, amount }),
        5 => (0..CODES.len(), 0..4u8, 0..3u64)
            .prop_map(|(contract, arg, value)| Action::Call { contract, arg, value }),
        1 => Just(Action::CreateCounter),
        1 => Just(Action::CreateSelfDestructing),
        1 => Just(Action::Broke),
    ]
}

fn generated() -> impl Strategy<Value = Gen> {
    (
        0..SENDERS,
        action(),
        prop_oneof![12 => Just(0i8), 1 => Just(1i8), 1 => Just(-1i8)],
        prop_oneof![Just(0u128), Just(1u128), Just(2u128)],
    )
        .prop_map(|(from, action, nonce_skew, tip)| Gen { from, action, nonce_skew, tip })
}

fn build(gens: &[Gen]) -> Vec<Arc<PooledTx>> {
    let mut nonces = [0u64; SENDERS];
    gens.iter()
        .map(|g| {
            let nonce = nonces[g.from].saturating_add_signed(i64::from(g.nonce_skew));
            if g.nonce_skew == 0 {
                nonces[g.from] += 1;
            }
            let (to, value, input, gas) = match &g.action {
                Action::Transfer { to, value } => {
                    (TxKind::Call(sender(*to)), U256::from(*value), Bytes::new(), 21_000)
                }
                Action::ToBeneficiary { value } => {
                    (TxKind::Call(sender(7)), U256::from(*value), Bytes::new(), 21_000)
                }
                Action::ToSelf => {
                    (TxKind::Call(sender(g.from)), U256::from(1), Bytes::new(), 21_000)
                }
                Action::ToFresh { value } => (
                    TxKind::Call(Address::repeat_byte(0xf0 + *value as u8)),
                    U256::from(*value),
                    Bytes::new(),
                    30_000,
                ),
                Action::Erc20 { to, amount } => {
                    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
                    input.extend((sender(*to), U256::from(*amount)).abi_encode_params());
                    (TxKind::Call(TOKEN), U256::ZERO, input.into(), 100_000)
                }
                Action::Call { contract: c, arg, value } => (
                    TxKind::Call(contract(*c)),
                    U256::from(*value),
                    U256::from(*arg).to_be_bytes::<32>().to_vec().into(),
                    200_000,
                ),
                // init: return the counter's runtime (8 bytes)
                Action::CreateCounter => (
                    TxKind::Create,
                    U256::ZERO,
                    code("675f546001015f5500 5f52 6008 6018 f3"),
                    100_000,
                ),
                // init: sstore(0, 1) then selfdestruct to the caller
                Action::CreateSelfDestructing => {
                    (TxKind::Create, U256::from(5), code("6001 5f55 33ff"), 100_000)
                }
                Action::Broke => (
                    TxKind::Call(sender(0)),
                    U256::from(10u64).pow(U256::from(21)),
                    Bytes::new(),
                    21_000,
                ),
            };
            tx(g.from, nonce, to, value, input, gas, g.tip)
        })
        .collect()
}

/// Everything that must match, as comparable values.
fn summary(out: &BatchOutcome) -> impl PartialEq + std::fmt::Debug {
    (
        out.executed
            .iter()
            .map(|t| (t.tx.hash, t.success, t.gas_used, t.logs.clone(), t.contract_address))
            .collect::<Vec<_>>(),
        out.dropped.iter().map(|(t, m)| (t.hash, m.clone())).collect::<Vec<_>>(),
        out.deferred.iter().map(|t| t.hash).collect::<Vec<_>>(),
        out.gas_used,
        out.diff.clone(),
    )
}

/// Runs `txs` on `executor` over `state`, block beneficiary `beneficiary`, no gas or time limit.
fn on_engine(
    executor: &Executor,
    state: &MemState,
    beneficiary: Address,
    txs: Vec<Arc<PooledTx>>,
) -> BatchOutcome {
    executor.execute(state, NoBlockHashes, rules(), &env(beneficiary), txs, u64::MAX, None)
}

/// The same on the sequential path.
fn sequentially(state: &MemState, beneficiary: Address, txs: Vec<Arc<PooledTx>>) -> BatchOutcome {
    execute_batch(state, NoBlockHashes, rules(), &env(beneficiary), txs, u64::MAX, None)
}

/// A JIT runtime that compiles every contract on its first call, shared by the tests.
fn eager_jit() -> Arc<jit::JitRuntime> {
    static RT: std::sync::OnceLock<Arc<jit::JitRuntime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| jit::JitRuntime::start(jit::JitConfig::eager(), None)).clone()
}

fn engine(threads: usize) -> Executor {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let config =
        ExecutorConfig { threads, sequential_share: 1.0, min_parallel: 2, min_parallel_gas: 0 };
    Executor::new(config, Some(Arc::new(pool))).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn parallel_execution_equals_sequential(
        gens in proptest::collection::vec(generated(), 1..48),
        beneficiary_sends in any::<bool>(),
        gas_left in prop_oneof![Just(u64::MAX), 200_000u64..2_000_000],
    ) {
        let state = genesis();
        // The beneficiary is either a fresh address or a sender (explicit reads and writes of
        // the beneficiary's account).
        let beneficiary = if beneficiary_sends { sender(7) } else { Address::repeat_byte(0xbe) };
        let txs = build(&gens);
        let expected = execute_batch(&state, NoBlockHashes, rules(), &env(beneficiary), txs.clone(), gas_left, None);
        // The engine with the interpreter, then with every contract compiled by the JIT
        // (the sequential path with the JIT too): all must equal the interpreter's sequential run.
        for (threads, jit) in [(1, false), (2, false), (8, false), (1, true), (2, true)] {
            let executor = if jit { engine(threads).with_jit(eager_jit()) } else { engine(threads) };
            let got = executor.execute(&state, NoBlockHashes, rules(), &env(beneficiary), txs.clone(), gas_left, None);
            prop_assert_eq!(summary(&got), summary(&expected), "threads {} jit {}", threads, jit);
            if jit {
                let seq = execute_batch_with(&state, NoBlockHashes, rules(), &env(beneficiary), txs.clone(), gas_left, None, &eager_jit());
                prop_assert_eq!(summary(&seq), summary(&expected), "sequential with the JIT");
            }
            let (a, b) = (genesis(), genesis());
            a.apply(&expected.diff);
            b.apply(&got.diff);
            prop_assert_eq!(a.mpt_root(), b.mpt_root());
        }
    }
}

#[test]
fn independent_transfers_run_in_parallel_without_reexecution() {
    let state = genesis();
    let txs: Vec<_> = (0..SENDERS)
        .map(|i| {
            tx(
                i,
                0,
                TxKind::Call(Address::repeat_byte(0x10 + i as u8)),
                U256::from(1),
                Bytes::new(),
                21_000,
                1,
            )
        })
        .collect();
    let executor = engine(2);
    let got = on_engine(&executor, &state, Address::repeat_byte(0xbe), txs.clone());
    let expected = sequentially(&state, Address::repeat_byte(0xbe), txs);
    assert_eq!(summary(&got), summary(&expected));
    let stats = executor.stats();
    assert_eq!(stats.parallel_batches, 1);
    assert_eq!(stats.reexecutions, 0, "fees to the beneficiary are deferred, not conflicts");
}

#[test]
fn a_dependent_chain_runs_sequentially_and_a_hot_contract_is_learned() {
    let state = genesis();
    // One sender: one group holding the whole batch.
    let chain: Vec<_> = (0..32)
        .map(|n| tx(0, n, TxKind::Call(sender(1)), U256::from(1), Bytes::new(), 21_000, 1))
        .collect();
    let executor =
        Executor::new(ExecutorConfig { threads: 2, ..Default::default() }, None).unwrap();
    let got = on_engine(&executor, &state, Address::ZERO, chain.clone());
    assert_eq!(got.executed.len(), 32);
    assert_eq!(executor.stats().sequential_batches, 1);
    assert_eq!(executor.stats().parallel_batches, 0);

    // Every sender bumps the same counter: all conflict. The first batch runs in parallel and
    // re-executes; the engine then groups calls to that contract, so later batches do not.
    let counter = |round: u64| -> Vec<_> {
        // Senders interleaved: each sender's group reads the counter across others' writes.
        (0..4)
            .flat_map(|k| (0..SENDERS).map(move |i| (i, round * 4 + k)))
            .map(|(i, n)| tx(i, n, TxKind::Call(contract(0)), U256::ZERO, Bytes::new(), 50_000, 1))
            .collect()
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let config =
        ExecutorConfig { threads: 2, min_parallel: 2, min_parallel_gas: 0, ..Default::default() };
    let executor = Executor::new(config, Some(Arc::new(pool))).unwrap();
    let first = on_engine(&executor, &state, Address::ZERO, counter(0));
    assert_eq!(first.executed.len(), 32);
    assert!(executor.stats().reexecutions > 0, "{:?}", executor.stats());
    let after_first = executor.stats();
    let state = {
        let s = genesis();
        s.apply(&first.diff);
        s
    };
    let second = on_engine(&executor, &state, Address::ZERO, counter(1));
    assert_eq!(second.executed.len(), 32);
    assert_eq!(
        executor.stats().sequential_batches,
        after_first.sequential_batches + 1,
        "{after_first:?}"
    );
    assert_eq!(state.storage(&contract(0), &U256::ZERO), U256::from(32));
}

#[test]
fn past_the_deadline_it_commits_what_ran_and_defers_the_rest() {
    let state = genesis();
    let txs: Vec<_> = (0..40)
        .map(|k| {
            let to = TxKind::Call(Address::repeat_byte(0x20 + k as u8));
            tx(k % SENDERS, (k / SENDERS) as u64, to, U256::from(1), Bytes::new(), 21_000, 1)
        })
        .collect();
    let beneficiary = Address::repeat_byte(0xbe);
    let executor = engine(2);
    // A deadline already passed: at least one transaction runs, as on the sequential path.
    let got = executor.execute(
        &state,
        NoBlockHashes,
        rules(),
        &env(beneficiary),
        txs.clone(),
        u64::MAX,
        Some(std::time::Instant::now()),
    );
    let k = got.executed.len();
    assert!(k >= 1);
    assert_eq!(got.executed.len() + got.deferred.len(), txs.len());
    assert_eq!(got.deferred.first().map(|t| t.hash), txs.get(k).map(|t| t.hash));
    // The committed prefix is exactly what sequential execution of that prefix gives.
    let prefix = sequentially(&state, beneficiary, txs[..k].to_vec());
    assert_eq!(got.diff, prefix.diff);
    assert_eq!(got.gas_used, prefix.gas_used);
}

#[test]
fn the_gas_gate_keeps_cheap_batches_sequential_and_learns_heavy_contracts() {
    let state = genesis();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let config = ExecutorConfig { threads: 2, min_parallel: 2, ..Default::default() };
    assert_eq!(config.min_parallel_gas, 1_000_000);
    let executor = Executor::new(config, Some(Arc::new(pool))).unwrap();
    let beneficiary = Address::repeat_byte(0xbe);
    // Transfers: predicted at 21 000 gas each, far under the gate.
    let transfers: Vec<_> = (0..SENDERS)
        .map(|i| {
            tx(
                i,
                0,
                TxKind::Call(sender((i + 1) % SENDERS)),
                U256::from(1),
                Bytes::new(),
                21_000,
                1,
            )
        })
        .collect();
    let out = on_engine(&executor, &state, beneficiary, transfers);
    assert_eq!(out.executed.len(), SENDERS);
    assert_eq!((executor.stats().parallel_batches, executor.stats().sequential_batches), (0, 1));
    let state = {
        let s = genesis();
        s.apply(&out.diff);
        s
    };
    // Calls to the burner: unknown at first (sequential, and learned), then parallel.
    let burn = |nonce: u64| -> Vec<_> {
        (0..SENDERS)
            .map(|i| tx(i, nonce, TxKind::Call(BURNER), U256::ZERO, Bytes::new(), 3_000_000, 1))
            .collect()
    };
    let first = on_engine(&executor, &state, beneficiary, burn(1));
    assert!(first.executed.iter().all(|t| t.success && t.gas_used > 1_000_000));
    assert_eq!(executor.stats().sequential_batches, 2);
    let state = {
        let s = genesis();
        s.apply(&out.diff);
        s.apply(&first.diff);
        s
    };
    let second = on_engine(&executor, &state, beneficiary, burn(2));
    assert_eq!(second.executed.len(), SENDERS);
    assert_eq!(executor.stats().parallel_batches, 1);
    let expected = sequentially(&state, beneficiary, burn(2));
    assert_eq!(summary(&second), summary(&expected));
}

#[test]
fn with_the_jit_contracts_run_as_compiled_code_and_results_do_not_change() {
    let state = genesis();
    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
    input.extend((sender(1), U256::from(3)).abi_encode_params());
    let txs: Vec<_> = (0..SENDERS)
        .map(|i| {
            let (to, input) = if i % 2 == 0 {
                (TOKEN, Bytes::from(input.clone()))
            } else {
                (contract(i % CODES.len()), U256::from(i).to_be_bytes::<32>().to_vec().into())
            };
            tx(i, 0, TxKind::Call(to), U256::ZERO, input, 200_000, 1)
        })
        .collect();
    let jit = jit::JitRuntime::start(jit::JitConfig::eager(), None);
    let expected = sequentially(&state, Address::repeat_byte(0xbe), txs.clone());
    let executor = engine(2).with_jit(jit.clone());
    let got = on_engine(&executor, &state, Address::repeat_byte(0xbe), txs);
    assert_eq!(summary(&got), summary(&expected));
    let stats = jit.stats();
    assert!(stats.compiled >= 2, "the token and the contracts were compiled: {stats:?}");
    assert!(stats.frames_compiled >= SENDERS as u64, "{stats:?}");
}
