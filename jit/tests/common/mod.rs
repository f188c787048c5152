#![allow(dead_code)] // each test binary uses part of it
//! Runs the same transaction through revm's interpreter and through `JitEvm` and compares.

use jit::{JitConfig, JitEvm, JitRuntime};
use revm::context::{Context, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address, Bytes, TxKind, U256, address};
use revm::state::{AccountInfo, Bytecode, EvmState};
use revm::{ExecuteEvm, MainBuilder, MainContext, MainnetEvm};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

pub(crate) const CALLER: Address = address!("0x1000000000000000000000000000000000000001");
pub(crate) const TARGET: Address = address!("0x2000000000000000000000000000000000000002");

/// One runtime with every contract compiled on first call, shared by a test binary.
pub(crate) fn eager() -> Arc<JitRuntime> {
    static RT: OnceLock<Arc<JitRuntime>> = OnceLock::new();
    RT.get_or_init(|| JitRuntime::start(JitConfig::eager(), None)).clone()
}

/// A database with the caller funded and `contracts` deployed (address, code).
pub(crate) fn db(contracts: &[(Address, Vec<u8>)]) -> CacheDB<EmptyDB> {
    let mut db = CacheDB::new(EmptyDB::default());
    db.insert_account_info(
        CALLER,
        AccountInfo { balance: U256::from(10u128.pow(24)), ..Default::default() },
    );
    for (addr, code) in contracts {
        let bytecode = Bytecode::new_raw(Bytes::copy_from_slice(code));
        db.insert_account_info(
            *addr,
            AccountInfo {
                balance: U256::from(1_000_000),
                code_hash: bytecode.hash_slow(),
                code: Some(bytecode),
                ..Default::default()
            },
        );
    }
    db
}

pub(crate) fn tx(to: Address, input: Vec<u8>, gas_limit: u64, value: u64) -> TxEnv {
    TxEnv::builder()
        .caller(CALLER)
        .kind(TxKind::Call(to))
        .data(Bytes::from(input))
        .gas_limit(gas_limit)
        .gas_price(0)
        .value(U256::from(value))
        .build()
        .expect("valid tx")
}

pub(crate) type Outcome = Result<(ExecutionResult, EvmState), String>;

fn ctx(db: CacheDB<EmptyDB>, spec: SpecId) -> revm::handler::MainnetContext<CacheDB<EmptyDB>> {
    let mut c = Context::mainnet().with_db(db);
    c.cfg.set_spec_and_mainnet_gas_params(spec);
    c.cfg.disable_nonce_check = true;
    c
}

pub(crate) fn interpret(db: CacheDB<EmptyDB>, spec: SpecId, tx: TxEnv) -> Outcome {
    let mut evm: MainnetEvm<_> = ctx(db, spec).build_mainnet();
    evm.transact(tx).map(|r| (r.result, r.state)).map_err(|e| e.to_string())
}

pub(crate) fn compiled(
    db: CacheDB<EmptyDB>,
    spec: SpecId,
    tx: TxEnv,
    rt: Arc<JitRuntime>,
) -> Outcome {
    let mut evm = JitEvm::new(ctx(db, spec).build_mainnet(), rt);
    evm.transact(tx).map(|r| (r.result, r.state)).map_err(|e| e.to_string())
}

/// What a transaction changed: touched accounts with their info, flags and changed slots.
/// Accounts and slots only loaded are left out: where the interpreter halts part-way through a
/// block (a stack error after an SSTORE), it may have loaded a slot that the compiled code,
/// which checks the block's stack bounds first, never reads; neither changes anything.
pub(crate) fn changes(state: &EvmState) -> BTreeMap<Address, String> {
    state
        .iter()
        .filter(|(_, acc)| acc.is_touched())
        .map(|(addr, acc)| {
            let slots: BTreeMap<_, _> = acc
                .storage
                .iter()
                .filter(|(_, s)| s.is_changed())
                .map(|(k, s)| (*k, s.present_value))
                .collect();
            let flags = (acc.is_selfdestructed(), acc.is_created(), acc.is_empty());
            let info = (acc.info.balance, acc.info.nonce, acc.info.code_hash);
            (*addr, format!("{info:?} {flags:?} {slots:?}"))
        })
        .collect()
}

/// Compares two outcomes: result kind, gas, refund, output and logs exactly; for halts the
/// reason may differ only between kinds of exceptional halt (both burn all gas and revert).
pub(crate) fn same(a: &Outcome, b: &Outcome) -> Result<(), String> {
    match (a, b) {
        (Ok((ra, sa)), Ok((rb, sb))) => {
            match (ra, rb) {
                (ExecutionResult::Halt { gas: ga, .. }, ExecutionResult::Halt { gas: gb, .. }) => {
                    if ga != gb {
                        return Err(format!("halt gas differs: {ra:?} vs {rb:?}"));
                    }
                }
                _ => {
                    if ra != rb {
                        return Err(format!("results differ:\n interp {ra:?}\n jit    {rb:?}"));
                    }
                }
            }
            let (ca, cb) = (changes(sa), changes(sb));
            if ca != cb {
                return Err(format!("state changes differ:\n interp {ca:?}\n jit    {cb:?}"));
            }
            Ok(())
        }
        (Err(ea), Err(eb)) if ea == eb => Ok(()),
        _ => Err(format!("outcomes differ: {a:?} vs {b:?}")),
    }
}
