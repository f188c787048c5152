//! Transaction intake: EIP-2718 decoding, sender recovery with libsecp256k1, and the checks
//! that need no state. Stateful checks (nonce, balance) live in [`crate::pool`].

use std::sync::Arc;

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
pub use chain_rpc::{chain::PooledTx, evm::tx_env};
use revm::primitives::hardfork::SpecId;

/// Why a transaction was refused. Messages follow geth's wording so that clients which match on
/// them keep working; each names the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Bytes that are not a valid EIP-2718 transaction.
    #[error("invalid transaction encoding: {0}")]
    Decode(String),
    /// Blob (EIP-4844) or unknown transaction type.
    #[error("transaction type not supported: {0}")]
    TypeNotSupported(String),
    /// Encoded size above the configured limit.
    #[error("oversized data: transaction size {size}, limit {limit}")]
    Oversized {
        /// Size of the transaction.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A legacy transaction without EIP-155 replay protection.
    #[error("only replay-protected (EIP-155) transactions allowed over RPC")]
    Unprotected,
    /// Signed for another chain.
    #[error("invalid chain id for signer: have {have} want {want}")]
    ChainId {
        /// The transaction's chain id.
        have: u64,
        /// This chain's id.
        want: u64,
    },
    /// A signature whose `s` is in the upper half of the curve order, or `r`/`s` is zero.
    #[error("invalid transaction v, r, s values")]
    InvalidSignature,
    /// The signature does not recover to a public key.
    #[error("invalid sender: {0}")]
    InvalidSender(String),
    /// Gas limit below the intrinsic cost.
    #[error("intrinsic gas too low: gas {gas}, minimum needed {needed}")]
    IntrinsicGas {
        /// The transaction's gas limit.
        gas: u64,
        /// Intrinsic gas of the transaction.
        needed: u64,
    },
    /// Gas limit below the EIP-7623 calldata floor.
    #[error("insufficient gas for floor data gas cost: gas {gas}, minimum needed {needed}")]
    FloorDataGas {
        /// The transaction's gas limit.
        gas: u64,
        /// The floor.
        needed: u64,
    },
    /// Gas limit above the block's.
    #[error("exceeds block gas limit: gas {gas}, block gas limit {limit}")]
    GasLimit {
        /// The transaction's gas limit.
        gas: u64,
        /// The block gas limit.
        limit: u64,
    },
    /// Gas limit above the EIP-7825 per-transaction cap.
    #[error("transaction gas limit too high (cap: {cap}, tx: {gas})")]
    GasLimitTooHigh {
        /// The cap.
        cap: u64,
        /// The transaction's gas limit.
        gas: u64,
    },
    /// Init code larger than EIP-3860 allows.
    #[error("max initcode size exceeded: code size {size}, limit {limit}")]
    InitCodeTooLarge {
        /// Size of the init code.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Priority fee above the fee cap.
    #[error("max priority fee per gas higher than max fee per gas: tip {tip}, fee cap {fee_cap}")]
    TipAboveFeeCap {
        /// Max priority fee.
        tip: u128,
        /// Max fee.
        fee_cap: u128,
    },
    /// Fee cap below the current base fee.
    #[error(
        "max fee per gas less than block base fee: address {sender}, maxFeePerGas: {fee_cap}, baseFee: {base_fee}"
    )]
    FeeCapTooLow {
        /// Sender.
        sender: Address,
        /// Max fee.
        fee_cap: u128,
        /// Current base fee.
        base_fee: u64,
    },
    /// An EIP-7702 transaction without authorizations.
    #[error("EIP-7702 transaction with empty auth list")]
    EmptyAuthList,
    /// Nonce already used.
    #[error("nonce too low: next nonce {next}, tx nonce {nonce}")]
    NonceTooLow {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        nonce: u64,
    },
    /// Nonce too far ahead of the account's next nonce.
    #[error(
        "nonce too high: next nonce {next}, tx nonce {nonce}, at most {max_gap} ahead may wait"
    )]
    NonceTooHigh {
        /// The account's next nonce.
        next: u64,
        /// The transaction's nonce.
        nonce: u64,
        /// Configured gap.
        max_gap: u64,
    },
    /// Balance below `gas * maxFee + value`.
    #[error("insufficient funds for gas * price + value: address {sender} have {have} want {want}")]
    InsufficientFunds {
        /// Sender.
        sender: Address,
        /// Balance.
        have: U256,
        /// Cost at the fee cap.
        want: U256,
    },
    /// The sender has code that is not an EIP-7702 delegation (EIP-3607).
    #[error("sender not an eoa: address {sender}, codehash: {code_hash}")]
    SenderNotEoa {
        /// Sender.
        sender: Address,
        /// Its code hash.
        code_hash: B256,
    },
    /// The same transaction is already in the pool or on chain.
    #[error("already known")]
    AlreadyKnown,
    /// A transaction with this nonce is pending and this one does not pay enough more.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The pool is full.
    #[error("txpool is full")]
    PoolFull,
    /// The sequencer is stopping (or stopped after a fatal error) and takes nothing new.
    #[error("sequencer is shutting down")]
    ShuttingDown,
}

/// Rules a transaction must meet regardless of state.
#[derive(Clone, Copy, Debug)]
pub struct StaticRules {
    /// This chain's id.
    pub chain_id: u64,
    /// Hard fork.
    pub spec: SpecId,
    /// Largest encoded transaction, bytes.
    pub max_tx_size: usize,
    /// Block gas limit.
    pub block_gas_limit: u64,
}

const SECP256K1N_HALF: U256 = U256::from_be_bytes([
    0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x5D, 0x57, 0x6E, 0x73, 0x57, 0xA4, 0x50, 0x1D, 0xDF, 0xE9, 0x2F, 0x46, 0x68, 0x1B, 0x20, 0xA0,
]);

/// EIP-7825's cap on one transaction's gas from Osaka on.
const TX_GAS_LIMIT_CAP: u64 = 1 << 24;

/// Decodes raw EIP-2718 bytes, recovers the sender and applies every stateless check.
pub fn decode_and_check(raw: Bytes, rules: &StaticRules) -> Result<PooledTx, TxError> {
    if raw.len() > rules.max_tx_size {
        return Err(TxError::Oversized { size: raw.len(), limit: rules.max_tx_size });
    }
    match raw.first() {
        None => return Err(TxError::Decode("empty input".into())),
        Some(0x03) => {
            return Err(TxError::TypeNotSupported(
                "blob transactions (EIP-4844, type 3) are not accepted by this sequencer".into(),
            ));
        }
        Some(&ty) if (0x05..0x7f).contains(&ty) => {
            return Err(TxError::TypeNotSupported(format!("unknown type {ty:#04x}")));
        }
        _ => {}
    }
    let stage = crate::stage::Stage::start();
    let envelope = decode_envelope(&raw)?;
    check_static(&envelope, rules)?;
    let sender = recover_sender(&envelope)?;
    let hash = keccak256(&raw);
    stage.record("sequencer_admit_seconds", "sequencer_admit_cpu_seconds");
    Ok(PooledTx { envelope, sender, hash, raw })
}

/// The envelope of exactly one EIP-2718 transaction.
fn decode_envelope(raw: &[u8]) -> Result<TxEnvelope, TxError> {
    chain_rpc::chain::decode_envelope(raw).map_err(TxError::Decode)
}

/// Decodes a transaction whose sender is already known (from our own WAL, where it was
/// recovered and checked when the transaction was admitted).
pub fn decode_recovered(raw: Bytes, sender: Address) -> Result<PooledTx, TxError> {
    PooledTx::from_recovered(raw, sender).map_err(TxError::Decode)
}

/// Decodes many transactions at once, recovering senders on all cores.
pub fn decode_batch(raws: Vec<Bytes>, rules: &StaticRules) -> Vec<Result<Arc<PooledTx>, TxError>> {
    use rayon::prelude::*;
    raws.into_par_iter().map(|raw| decode_and_check(raw, rules).map(Arc::new)).collect()
}

fn check_static(tx: &TxEnvelope, rules: &StaticRules) -> Result<(), TxError> {
    match tx.chain_id() {
        None => return Err(TxError::Unprotected),
        Some(id) if id != rules.chain_id => {
            return Err(TxError::ChainId { have: id, want: rules.chain_id });
        }
        Some(_) => {}
    }
    let sig = tx.signature();
    if sig.r().is_zero() || sig.s().is_zero() || sig.s() > SECP256K1N_HALF {
        return Err(TxError::InvalidSignature);
    }
    if let (Some(tip), fee_cap) = (tx.max_priority_fee_per_gas(), tx.max_fee_per_gas())
        && tip > fee_cap
    {
        return Err(TxError::TipAboveFeeCap { tip, fee_cap });
    }
    if let TxEnvelope::Eip7702(signed) = tx
        && signed.tx().authorization_list.is_empty()
    {
        return Err(TxError::EmptyAuthList);
    }
    let gas = tx.gas_limit();
    if rules.spec.is_enabled_in(SpecId::OSAKA) && gas > TX_GAS_LIMIT_CAP {
        return Err(TxError::GasLimitTooHigh { cap: TX_GAS_LIMIT_CAP, gas });
    }
    if gas > rules.block_gas_limit {
        return Err(TxError::GasLimit { gas, limit: rules.block_gas_limit });
    }
    if tx.kind().is_create() && rules.spec.is_enabled_in(SpecId::SHANGHAI) {
        let limit = revm::primitives::eip3860::MAX_INITCODE_SIZE;
        if tx.input().len() > limit {
            return Err(TxError::InitCodeTooLarge { size: tx.input().len(), limit });
        }
    }
    let env = tx_env(tx, Address::ZERO);
    let initial =
        revm::context_interface::cfg::gas::calculate_initial_tx_gas_for_tx(&env, rules.spec, None);
    let needed = initial.initial_total_gas();
    if gas < needed {
        return Err(TxError::IntrinsicGas { gas, needed });
    }
    if gas < initial.floor_gas {
        return Err(TxError::FloorDataGas { gas, needed: initial.floor_gas });
    }
    Ok(())
}

/// Recovers the signer with libsecp256k1 (about 5x faster than the pure-Rust k256 path).
pub fn recover_sender(tx: &TxEnvelope) -> Result<Address, TxError> {
    chain_rpc::chain::recover_sender(tx).map_err(TxError::InvalidSender)
}

#[cfg(test)]
pub(crate) mod tests {
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_consensus::{SignableTransaction, TxEip2930, TxEip7702, TxLegacy};
    use alloy_eips::eip7702::Authorization;
    use alloy_primitives::{Signature, TxKind};

    use super::*;

    /// Signs `tx` with dev key `key` and encodes it.
    pub(crate) fn signed<T: SignableTransaction<Signature>>(key: usize, tx: T) -> Bytes
    where
        TxEnvelope: From<alloy_consensus::Signed<T>>,
    {
        crate::dev::sign(&crate::dev::dev_key(key), tx)
    }

    pub(crate) fn rules() -> StaticRules {
        StaticRules {
            chain_id: 31337,
            spec: SpecId::OSAKA,
            max_tx_size: 128 * 1024,
            block_gas_limit: 30_000_000,
        }
    }

    fn all_types() -> Vec<Bytes> {
        let to = Address::repeat_byte(1);
        vec![
            signed(
                0,
                TxLegacy {
                    chain_id: Some(31337),
                    nonce: 1,
                    gas_price: 7,
                    gas_limit: 21_000,
                    to: TxKind::Call(to),
                    value: U256::from(3),
                    input: Bytes::new(),
                },
            ),
            signed(
                1,
                TxEip2930 {
                    chain_id: 31337,
                    nonce: 2,
                    gas_price: 7,
                    gas_limit: 30_000,
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input: Bytes::from_static(&[1, 0, 2]),
                },
            ),
            signed(
                2,
                TxEip7702 {
                    chain_id: 31337,
                    nonce: 0,
                    gas_limit: 100_000,
                    max_fee_per_gas: 10,
                    max_priority_fee_per_gas: 1,
                    to,
                    value: U256::ZERO,
                    access_list: Default::default(),
                    authorization_list: vec![
                        Authorization { chain_id: U256::from(31337), address: to, nonce: 1 }
                            .into_signed(Signature::test_signature()),
                    ],
                    input: Bytes::new(),
                },
            ),
        ]
    }

    /// The transactions root taken from the submitted bytes is Ethereum's (alloy encoding each
    /// transaction again), for every type.
    #[test]
    fn the_transactions_root_from_raw_bytes_is_ethereums() {
        let txs: Vec<_> = all_types()
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                let tx = Arc::new(decode_and_check(raw, &rules()).unwrap());
                Arc::new(crate::chain::ExecutedTx {
                    tx,
                    block_number: 1,
                    index: index as u64,
                    mini_block: 1,
                    mini_block_hash: B256::ZERO,
                    success: true,
                    gas_used: 21_000,
                    cumulative_gas_used: 21_000 * (index as u64 + 1),
                    logs: Vec::new(),
                    first_log_index: 0,
                    contract_address: None,
                    effective_gas_price: 7,
                    bloom: Default::default(),
                })
            })
            .collect();
        assert!(txs.len() >= 3);
        let envelopes: Vec<_> = txs.iter().map(|t| t.tx.envelope.clone()).collect();
        assert_eq!(
            chain_rpc::chain::transactions_root(&txs),
            alloy_consensus::proofs::calculate_transaction_root(&envelopes)
        );
        assert_ne!(
            chain_rpc::chain::transactions_root(&txs[1..]),
            chain_rpc::chain::transactions_root(&txs)
        );
    }

    #[test]
    fn libsecp256k1_recovers_the_same_sender_as_k256_for_every_type() {
        for (i, raw) in all_types().into_iter().enumerate() {
            let tx = decode_and_check(raw.clone(), &rules()).unwrap();
            assert_eq!(Some(tx.sender), tx.envelope.recover_signer().ok());
            assert_eq!(tx.sender, crate::dev::DEV_ACCOUNTS[i].0);
            assert_eq!(tx.hash, keccak256(&raw));
        }
    }

    #[test]
    fn batch_decoding_matches_one_by_one() {
        let raws = all_types();
        let batch = decode_batch(raws.clone(), &rules());
        for (raw, decoded) in raws.into_iter().zip(batch) {
            assert_eq!(decode_and_check(raw, &rules()).unwrap().hash, decoded.unwrap().hash);
        }
    }

    #[test]
    fn stateless_checks_refuse_with_values() {
        let to = Address::repeat_byte(1);
        let tx = |gas_limit: u64, input: Bytes, to: TxKind| {
            signed(
                0,
                TxEip2930 {
                    chain_id: 31337,
                    nonce: 0,
                    gas_price: 7,
                    gas_limit,
                    to,
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input,
                },
            )
        };
        let err =
            decode_and_check(tx(21_000, Bytes::from_static(&[1]), TxKind::Call(to)), &rules());
        assert_eq!(err.unwrap_err(), TxError::IntrinsicGas { gas: 21_000, needed: 21_016 });
        let err = decode_and_check(tx(31_000_000, Bytes::new(), TxKind::Call(to)), &rules());
        assert_eq!(err.unwrap_err(), TxError::GasLimitTooHigh { cap: 1 << 24, gas: 31_000_000 });
        let big = Bytes::from(vec![0u8; 50_000]);
        let err = decode_and_check(tx(16_000_000, big, TxKind::Create), &rules());
        assert!(matches!(err.unwrap_err(), TxError::InitCodeTooLarge { size: 50_000, .. }));
        let mut corrupt = tx(21_000, Bytes::new(), TxKind::Call(to)).to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        // Either the signature no longer recovers, or it recovers to someone else.
        match decode_and_check(corrupt.into(), &rules()) {
            Err(TxError::InvalidSender(_) | TxError::InvalidSignature) => {}
            Ok(tx) => assert_ne!(tx.sender, crate::dev::DEV_ACCOUNTS[0].0),
            Err(other) => panic!("unexpected {other}"),
        }
    }
}
