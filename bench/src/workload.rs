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

/// The Solidity token (OpenZeppelin ERC-20) creation code, compiled by `make contracts`.
pub fn token_creation_code() -> Bytes {
    let hex = include_str!("../../contracts/out/Token.bin").trim();
    alloy_primitives::hex::decode(hex).expect("committed bytecode is hex").into()
}

/// What the transactions do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Plain ETH transfers (21 000 gas).
    Eth,
    /// ERC-20 `transfer` on an OpenZeppelin token.
    Erc20,
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

/// The OpenZeppelin ERC-20 storage slot of `holder`'s balance (`_balances` is slot 0).
pub fn balance_slot(holder: &Address) -> U256 {
    let mut buf = [0u8; 64];
    buf[12..32].copy_from_slice(holder.as_slice());
    U256::from_be_bytes(keccak256(buf).0)
}

/// Runs the token's constructor once to get its runtime code and initial storage.
fn token_runtime() -> (Bytes, std::collections::BTreeMap<U256, U256>) {
    let deployer = Address::repeat_byte(0xde);
    let state = MemState::from_genesis(
        &[(
            deployer,
            GenesisAccount { balance: U256::from(10u64).pow(U256::from(20)), ..Default::default() },
        )]
        .into(),
    );
    let mut code = token_creation_code().to_vec();
    code.extend(("Bench Token".to_string(), "BT".to_string(), U256::ZERO).abi_encode_params());
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
    let result = evm.transact_commit(tx).expect("token constructor runs");
    let created = result.created_address().expect("token created");
    let diff = evm.ctx.journaled_state.database.into_diff();
    let account = &diff.accounts[&created];
    let runtime = diff.codes[&account.info.expect("token exists").code_hash].original_bytes();
    (runtime, account.storage.clone())
}

/// Genesis: every account with 1 000 ETH; for ERC-20 also the token, holding
/// [`TOKEN_BALANCE`] for each account.
pub fn genesis(kind: Kind, accounts: &Accounts) -> GenesisAlloc {
    let eth = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18));
    let mut alloc: GenesisAlloc = accounts
        .addresses
        .iter()
        .map(|a| (*a, GenesisAccount { balance: eth, ..Default::default() }))
        .collect();
    if kind == Kind::Erc20 {
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
    alloc
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
            let (target, input, gas, value) = match kind {
                Kind::Eth => (to, Bytes::new(), 21_000, U256::from(1)),
                Kind::Erc20 => (
                    TOKEN,
                    transferCall { to, amount: U256::from(1) }.abi_encode().into(),
                    60_000,
                    U256::ZERO,
                ),
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
    fn the_token_genesis_holds_every_balance() {
        let p = prepare(Kind::Erc20, 1, 20, 20);
        let state = MemState::from_genesis(&p.alloc);
        let call = |data: Vec<u8>| {
            let tx = TxEnv {
                caller: p.addresses[0],
                kind: TxKind::Call(TOKEN),
                data: data.into(),
                gas_limit: 100_000,
                chain_id: Some(CHAIN_ID),
                nonce: 0,
                ..Default::default()
            };
            let mut evm = sequencer::exec::new_evm(
                Overlay::new(&state, NoBlockHashes),
                SpecId::OSAKA,
                CHAIN_ID,
                Default::default(),
            );
            let out = evm.transact_commit(tx).unwrap().into_output().unwrap();
            U256::abi_decode(&out).unwrap()
        };
        assert_eq!(
            call(balanceOfCall { account: p.addresses[19] }.abi_encode()),
            U256::from(TOKEN_BALANCE)
        );
        assert_eq!(call(totalSupplyCall {}.abi_encode()), U256::from(TOKEN_BALANCE * 20));
    }
}
