//! Deterministic workloads: accounts from a seed, a genesis that funds them (and, for ERC-20,
//! a token contract holding their balances), and transactions signed in parallel up front.

use std::sync::Arc;

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, Bytes, TxKind, U256, keccak256};
use alloy_sol_types::{SolCall, SolValue, sol};
use memstate::{GenesisAccount, GenesisAlloc, MemState, NoBlockHashes, Overlay};
use rayon::prelude::*;
use revm::{ExecuteCommitEvm, context::TxEnv, primitives::hardfork::SpecId};
use secp256k1::{PublicKey, SECP256K1, SecretKey};

sol! {
    function transfer(address to, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
    function totalSupply() external view returns (uint256);
    function swap(uint256 amountIn, bool zeroForOne, uint256 minOut) external returns (uint256 amountOut);
    function balance0(address trader) external view returns (uint256);
    function reserve0() external view returns (uint256);
}

/// Chain id the benchmarks sign for.
pub const CHAIN_ID: u64 = 31337;
/// Where the benchmark token lives.
pub const TOKEN: Address = Address::new([0x70; 20]);
/// Token units each account starts with.
pub const TOKEN_BALANCE: u64 = 1_000_000_000;
/// Fee cap of every benchmark transaction (well above any base fee they meet).
pub const MAX_FEE: u128 = 100_000_000_000;
/// Priority fee of every benchmark transaction.
pub const TIP: u128 = 1_000_000_000;

/// Address `i` of a family of contracts: `prefix` repeated, then `i` in the last 8 bytes.
fn numbered(prefix: u8, i: usize) -> Address {
    let mut bytes = [prefix; 20];
    bytes[12..].copy_from_slice(&(i as u64).to_be_bytes());
    Address::new(bytes)
}

/// Where AMM pool `i` lives.
pub fn pool_address(i: usize) -> Address {
    numbered(0x50, i)
}

/// Copies of the snailtracer contract in the `compute` workload.
pub const COMPUTE_COPIES: usize = 256;
/// Gas limit of one snailtracer call: more than Osaka's per-transaction cap (EIP-7825), so the
/// `compute` workload runs under Prague rules.
pub const COMPUTE_GAS: u64 = 1_000_000_000;

/// Where snailtracer copy `i` lives.
pub fn compute_address(i: usize) -> Address {
    numbered(0x5a, i)
}

/// revm's snailtracer runtime code (bench/fixtures/snailtracer.hex, MIT, from revm's benches).
pub fn snailtracer_code() -> Bytes {
    creation_code(include_str!("../fixtures/snailtracer.hex")).into()
}

/// Each pool's reserves of each side at genesis.
pub const POOL_RESERVE: u128 = 1_000_000_000_000_000_000_000_000;
/// Each trader's balance of each side in its pool at genesis.
pub const TRADER_BALANCE: u128 = 1_000_000_000_000_000_000_000;
/// Pools of the `amm` workload (`amm-hot` has one).
pub const AMM_POOLS: usize = 100;

fn creation_code(hex: &str) -> Vec<u8> {
    alloy_primitives::hex::decode(hex.trim()).expect("committed bytecode is hex")
}

/// The Solidity token (OpenZeppelin ERC-20) creation code, compiled by `make contracts`.
pub fn token_creation_code() -> Bytes {
    creation_code(include_str!("../../contracts/out/Token.bin")).into()
}

/// What the transactions do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Plain ETH transfers (21 000 gas).
    Eth,
    /// ERC-20 `transfer` on an OpenZeppelin token.
    Erc20,
    /// Swaps on 100 constant-product pools, each trader always in the same pool.
    Amm,
    /// Swaps on one constant-product pool that every trader uses.
    AmmHot,
    /// Compute-heavy calls: `Benchmark()` of revm's snailtracer (a ray tracer), each trader on
    /// its own copy of the contract (up to [`COMPUTE_COPIES`] copies).
    Compute,
    /// A mix, interleaved: 40% ETH transfers, 40% ERC-20 transfers, 20% swaps over the 100
    /// pools of `amm`.
    Mix,
}

impl Kind {
    /// The hard fork the workload runs under.
    pub fn spec(self) -> revm::primitives::hardfork::SpecId {
        use revm::primitives::hardfork::SpecId;
        if self == Kind::Compute { SpecId::PRAGUE } else { SpecId::OSAKA }
    }

    /// What transaction `k` of this workload does: itself, except in the mix.
    pub fn of_tx(self, k: usize) -> Kind {
        if self != Kind::Mix {
            return self;
        }
        // Spread evenly and reproducibly, not in runs.
        match ((k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % 10 {
            0..=3 => Kind::Eth,
            4..=7 => Kind::Erc20,
            _ => Kind::Amm,
        }
    }

    fn pools(self) -> usize {
        match self {
            Kind::Amm | Kind::Mix => AMM_POOLS,
            Kind::AmmHot => 1,
            Kind::Eth | Kind::Erc20 | Kind::Compute => 0,
        }
    }
}

/// Accounts with their keys, derived from a seed.
#[derive(Debug)]
pub struct Accounts {
    /// Secret keys.
    pub keys: Vec<SecretKey>,
    /// Their addresses.
    pub addresses: Vec<Address>,
}

/// `n` accounts; the same seed always gives the same accounts.
pub fn accounts(seed: u64, n: usize) -> Accounts {
    let keys: Vec<SecretKey> = (0..n as u64)
        .into_par_iter()
        .map(|i| {
            let mut material = keccak256([seed.to_le_bytes(), i.to_le_bytes()].concat());
            loop {
                if let Ok(key) = SecretKey::from_byte_array(material.0) {
                    return key;
                }
                material = keccak256(material);
            }
        })
        .collect();
    let addresses = keys
        .par_iter()
        .map(|key| {
            let public = PublicKey::from_secret_key(SECP256K1, key);
            Address::from_slice(&keccak256(&public.serialize_uncompressed()[1..])[12..])
        })
        .collect();
    Accounts { keys, addresses }
}

/// The storage slot of `key` in a Solidity `mapping(address => …)` declared at `slot`.
pub fn mapping_slot(key: &Address, slot: u64) -> U256 {
    let mut buf = [0u8; 64];
    buf[12..32].copy_from_slice(key.as_slice());
    buf[56..].copy_from_slice(&slot.to_be_bytes());
    U256::from_be_bytes(keccak256(buf).0)
}

/// The OpenZeppelin ERC-20 storage slot of `holder`'s balance (`_balances` is slot 0).
pub fn balance_slot(holder: &Address) -> U256 {
    mapping_slot(holder, 0)
}

/// Runs a constructor once to get the runtime code and initial storage it leaves.
fn deploy_runtime(code: Vec<u8>) -> (Bytes, std::collections::BTreeMap<U256, U256>) {
    let deployer = Address::repeat_byte(0xde);
    let state = MemState::from_genesis(
        &[(
            deployer,
            GenesisAccount { balance: U256::from(10u64).pow(U256::from(20)), ..Default::default() },
        )]
        .into(),
    );
    let tx = TxEnv {
        caller: deployer,
        kind: TxKind::Create,
        data: code.into(),
        gas_limit: 5_000_000,
        chain_id: Some(CHAIN_ID),
        ..Default::default()
    };
    let block = revm::context::BlockEnv::default();
    let mut evm = sequencer::exec::new_evm(
        Overlay::new(&state, NoBlockHashes),
        SpecId::OSAKA,
        CHAIN_ID,
        block,
    );
    let result = evm.transact_commit(tx).expect("constructor runs");
    let created = result.created_address().expect("contract created");
    let diff = evm.ctx.journaled_state.database.into_diff();
    let account = &diff.accounts[&created];
    let runtime = diff.codes[&account.info.expect("contract exists").code_hash].original_bytes();
    (runtime, account.storage.clone())
}

/// The token's runtime code and the storage its constructor leaves.
pub fn token_runtime() -> (Bytes, std::collections::BTreeMap<U256, U256>) {
    let mut code = token_creation_code().to_vec();
    code.extend(("Bench Token".to_string(), "BT".to_string(), U256::ZERO).abi_encode_params());
    deploy_runtime(code)
}

fn pair_runtime() -> (Bytes, std::collections::BTreeMap<U256, U256>) {
    let mut code = creation_code(include_str!("../../contracts/out/Pair.bin"));
    code.extend((U256::from(POOL_RESERVE), U256::from(POOL_RESERVE)).abi_encode_params());
    deploy_runtime(code)
}

/// The pool trader `i` of `n` uses.
pub fn pool_of(kind: Kind, i: usize) -> usize {
    i % kind.pools().max(1)
}

/// Genesis: every account with 1 000 ETH; for ERC-20 also the token, holding
/// [`TOKEN_BALANCE`] for each account; for the AMM workloads the pools, each with
/// [`POOL_RESERVE`] of both sides and [`TRADER_BALANCE`] of both sides for each of its traders.
pub fn genesis(kind: Kind, accounts: &Accounts) -> GenesisAlloc {
    let eth = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18));
    let mut alloc: GenesisAlloc = accounts
        .addresses
        .iter()
        .map(|a| (*a, GenesisAccount { balance: eth, ..Default::default() }))
        .collect();
    if matches!(kind, Kind::Erc20 | Kind::Mix) {
        let (runtime, mut storage) = token_runtime();
        for holder in &accounts.addresses {
            storage.insert(balance_slot(holder), U256::from(TOKEN_BALANCE));
        }
        // `_totalSupply` is slot 2.
        storage.insert(
            U256::from(2),
            U256::from(TOKEN_BALANCE) * U256::from(accounts.addresses.len()),
        );
        alloc.insert(
            TOKEN,
            GenesisAccount { code: Some(runtime), storage: Some(storage), ..Default::default() },
        );
    }
    if kind == Kind::Compute {
        let code = snailtracer_code();
        for i in 0..accounts.addresses.len().min(COMPUTE_COPIES) {
            alloc.insert(
                compute_address(i),
                GenesisAccount { code: Some(code.clone()), ..Default::default() },
            );
        }
    }
    if kind.pools() > 0 {
        let (runtime, storage) = pair_runtime();
        let mut pools = vec![storage; kind.pools()];
        for (i, trader) in accounts.addresses.iter().enumerate() {
            let pool = &mut pools[pool_of(kind, i)];
            pool.insert(mapping_slot(trader, 2), U256::from(TRADER_BALANCE));
            pool.insert(mapping_slot(trader, 3), U256::from(TRADER_BALANCE));
        }
        for (i, storage) in pools.into_iter().enumerate() {
            alloc.insert(
                pool_address(i),
                GenesisAccount {
                    code: Some(runtime.clone()),
                    storage: Some(storage),
                    ..Default::default()
                },
            );
        }
    }
    alloc
}

/// Largest ETH transfer, in wei (0.01 ETH): amounts vary as real ones do, which matters to
/// anything that encodes balances.
pub const ETH_TRANSFER_MAX: u64 = 10_000_000_000_000_000;
/// Largest token transfer, in token units (a thousandth of a starting balance).
pub const TOKEN_TRANSFER_MAX: u64 = TOKEN_BALANCE / 1000;

/// The amount of transaction `k`: spread over `1..=max`, the same for the same `k`.
pub fn amount(k: usize, max: u64) -> U256 {
    U256::from((k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) % max + 1)
}

/// The account that account `from` (of `n`) sends to.
pub fn recipient(from: usize, n: usize) -> usize {
    (from * 7919 + 1) % n
}

/// The transactions of a run: `count` transfers, sender `k % n` with nonce `k / n`, each to
/// [`recipient`]; signed on all cores.
pub fn transactions(kind: Kind, accounts: &Accounts, count: usize) -> Vec<Bytes> {
    let n = accounts.addresses.len();
    (0..count)
        .into_par_iter()
        .map(|k| {
            let from = k % n;
            let to = accounts.addresses[recipient(from, n)];
            let (target, input, gas, value) = match kind.of_tx(k) {
                Kind::Eth => (to, Bytes::new(), 21_000, amount(k, ETH_TRANSFER_MAX)),
                Kind::Erc20 => (
                    TOKEN,
                    transferCall { to, amount: amount(k, TOKEN_TRANSFER_MAX) }.abi_encode().into(),
                    60_000,
                    U256::ZERO,
                ),
                // `Benchmark()`
                Kind::Compute => (
                    compute_address(from % COMPUTE_COPIES),
                    Bytes::from_static(&[0x30, 0x62, 0x7b, 0x7c]),
                    COMPUTE_GAS,
                    U256::ZERO,
                ),
                Kind::Amm | Kind::AmmHot | Kind::Mix => {
                    // Alternate directions so balances never run out.
                    let call = swapCall {
                        amountIn: U256::from(1_000_000u64),
                        zeroForOne: (k / n).is_multiple_of(2),
                        minOut: U256::ZERO,
                    };
                    (
                        pool_address(pool_of(kind, from)),
                        call.abi_encode().into(),
                        100_000,
                        U256::ZERO,
                    )
                }
            };
            let tx = TxEip1559 {
                chain_id: CHAIN_ID,
                nonce: (k / n) as u64,
                gas_limit: gas,
                max_fee_per_gas: MAX_FEE,
                max_priority_fee_per_gas: TIP,
                to: TxKind::Call(target),
                value,
                access_list: Default::default(),
                input,
            };
            sequencer::dev::sign(&accounts.keys[from], tx)
        })
        .collect()
}

/// Shared, immutable inputs of one benchmark.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Workload.
    pub kind: Kind,
    /// Genesis.
    pub alloc: Arc<GenesisAlloc>,
    /// Signed transactions.
    pub txs: Arc<Vec<Bytes>>,
    /// The accounts.
    pub addresses: Arc<Vec<Address>>,
}

impl Prepared {
    /// The workload's hard fork and chain id.
    pub fn rules(&self) -> sequencer::exec::ChainRules {
        sequencer::exec::ChainRules { spec: self.kind.spec(), chain_id: CHAIN_ID }
    }
}

/// The context of block `index` (0-based) of a run that drives the sequencer's executor
/// directly: one-second timestamps, a fixed beneficiary, a 1 gwei base fee, no gas limit.
pub fn block_env(index: usize) -> sequencer::exec::BlockEnvParams {
    sequencer::exec::BlockEnvParams {
        number: index as u64 + 1,
        timestamp: 1_700_000_000 + index as u64,
        beneficiary: Address::repeat_byte(0xbe),
        base_fee: 1_000_000_000,
        gas_limit: u64::MAX,
    }
}

/// Generates everything a run needs.
pub fn prepare(kind: Kind, seed: u64, n_accounts: usize, n_txs: usize) -> Prepared {
    let accounts = accounts(seed, n_accounts);
    let alloc = genesis(kind, &accounts);
    let txs = transactions(kind, &accounts, n_txs);
    Prepared {
        kind,
        alloc: Arc::new(alloc),
        txs: Arc::new(txs),
        addresses: Arc::new(accounts.addresses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls a view of `to` as `caller` and decodes the uint256 it returns.
    fn read_uint(state: &MemState, caller: Address, to: Address, data: Vec<u8>) -> U256 {
        let tx = TxEnv {
            caller,
            kind: TxKind::Call(to),
            data: data.into(),
            gas_limit: 100_000,
            chain_id: Some(CHAIN_ID),
            ..Default::default()
        };
        let mut evm = sequencer::exec::new_evm(
            Overlay::new(state, NoBlockHashes),
            SpecId::OSAKA,
            CHAIN_ID,
            Default::default(),
        );
        U256::abi_decode(&evm.transact_commit(tx).unwrap().into_output().unwrap()).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_transactions() {
        let a = prepare(Kind::Erc20, 7, 50, 120);
        let b = prepare(Kind::Erc20, 7, 50, 120);
        assert_eq!(a.txs, b.txs);
        assert_eq!(a.addresses, b.addresses);
        let c = prepare(Kind::Erc20, 8, 50, 120);
        assert_ne!(a.txs, c.txs);
    }

    #[test]
    fn the_pools_hold_their_reserves_and_traders() {
        for kind in [Kind::Amm, Kind::AmmHot] {
            let p = prepare(kind, 2, 10, 10);
            let state = MemState::from_genesis(&p.alloc);
            let pool = pool_address(pool_of(kind, 7));
            let read = |data: Vec<u8>| read_uint(&state, p.addresses[7], pool, data);
            assert_eq!(read(reserve0Call {}.abi_encode()), U256::from(POOL_RESERVE));
            assert_eq!(
                read(balance0Call { trader: p.addresses[7] }.abi_encode()),
                U256::from(TRADER_BALANCE)
            );
        }
    }

    #[test]
    fn the_mix_interleaves_its_kinds_in_their_shares() {
        let kinds: Vec<Kind> = (0..10_000).map(|k| Kind::Mix.of_tx(k)).collect();
        let share = |kind| kinds.iter().filter(|k| **k == kind).count() as f64 / 10_000.0;
        assert!((share(Kind::Eth) - 0.4).abs() < 0.02, "{}", share(Kind::Eth));
        assert!((share(Kind::Erc20) - 0.4).abs() < 0.02, "{}", share(Kind::Erc20));
        assert!((share(Kind::Amm) - 0.2).abs() < 0.02, "{}", share(Kind::Amm));
        // Not in long runs of one kind.
        assert!(kinds.windows(8).all(|w| w.iter().any(|k| *k != w[0])));
        assert_eq!(Kind::Erc20.of_tx(3), Kind::Erc20);
    }

    #[test]
    fn the_token_genesis_holds_every_balance() {
        let p = prepare(Kind::Erc20, 1, 20, 20);
        let state = MemState::from_genesis(&p.alloc);
        let call = |data: Vec<u8>| read_uint(&state, p.addresses[0], TOKEN, data);
        assert_eq!(
            call(balanceOfCall { account: p.addresses[19] }.abi_encode()),
            U256::from(TOKEN_BALANCE)
        );
        assert_eq!(call(totalSupplyCall {}.abi_encode()), U256::from(TOKEN_BALANCE * 20));
    }
}
