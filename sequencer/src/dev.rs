//! Dev-mode accounts: the first ten keys of the mnemonic
//! `test test test test test test test test test test test junk` (BIP-44 path
//! `m/44'/60'/0'/0/i`), the same accounts anvil and hardhat fund, so that wallets and scripts
//! written for those tools work unchanged.

use alloy_consensus::{SignableTransaction, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Bytes, Signature, U256};
use secp256k1::{Message, SECP256K1, SecretKey};

pub use feed::dev::{DEV_ACCOUNTS, DEV_MNEMONIC, dev_alloc, dev_balance};

/// Signs `tx` with `key` (libsecp256k1) and returns its EIP-2718 encoding: what a wallet
/// sends. For dev tooling, benchmarks and tests; the sequencer itself never signs.
pub fn sign<T>(key: &SecretKey, tx: T) -> Bytes
where
    T: SignableTransaction<Signature>,
    TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let hash = tx.signature_hash();
    let (id, bytes) =
        SECP256K1.sign_ecdsa_recoverable(Message::from_digest(hash.0), key).serialize_compact();
    let sig = Signature::new(
        U256::from_be_slice(&bytes[..32]),
        U256::from_be_slice(&bytes[32..]),
        i32::from(id) == 1,
    );
    let envelope: TxEnvelope = tx.into_signed(sig).into();
    envelope.encoded_2718().into()
}

/// The secret key of dev account `i`.
pub fn dev_key(i: usize) -> SecretKey {
    SecretKey::from_byte_array(DEV_ACCOUNTS[i].1.0).expect("dev keys are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_controls_its_address() {
        for (i, (address, _)) in DEV_ACCOUNTS.into_iter().enumerate() {
            let secret = dev_key(i);
            let public = secp256k1::PublicKey::from_secret_key_global(&secret);
            let hash = alloy_primitives::keccak256(&public.serialize_uncompressed()[1..]);
            assert_eq!(alloy_primitives::Address::from_slice(&hash[12..]), address);
        }
    }
}
