//! Envelopes: what the sequencer says about a mini-block or an EVM block, signed with its feed
//! key, in a byte form that is the same on gossip, in request-response and in DA.
//!
//! A signed envelope is `version (1) ‖ kind (1) ‖ RLP body ‖ signature (65)`. The signature
//! is secp256k1 over `keccak256("sequencer-feed/v1" ‖ chain id (8, big-endian) ‖ kind ‖ body)`,
//! recoverable, so a receiver configured with the sequencer's address checks who signed without
//! a key exchange — the convention of OP Stack's unsafe-block signer.

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bytes, Log, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};
use secp256k1::{
    Message, PublicKey, SECP256K1, SecretKey,
    ecdsa::{RecoverableSignature, RecoveryId},
};

/// The envelope format this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// Largest signed envelope accepted: a mini-block's diff may reach memstate's payload limit
/// (64 MiB) and its transactions as much again.
pub const MAX_ENVELOPE_BYTES: usize = 128 << 20;

const DOMAIN: &[u8] = b"sequencer-feed/v1";
const KIND_MINI_BLOCK: u8 = 1;
const KIND_BLOCK: u8 = 2;
pub(crate) const SIGNATURE_BYTES: usize = 65;

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than a version, a kind and a signature.
    #[error("envelope of {0} bytes is too short")]
    TooShort(usize),
    /// More bytes than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {0} bytes is over the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    /// A version this build does not read.
    #[error("envelope version {0} is not supported (this build reads {ENVELOPE_VERSION})")]
    Version(u8),
    /// Neither a mini-block nor a block.
    #[error("unknown envelope kind {0}")]
    Kind(u8),
    /// The signature does not recover to a key.
    #[error("envelope signature is invalid")]
    Signature,
    /// Signed, but not by the sequencer this node follows.
    #[error("envelope signed by {signer}, not by the sequencer {expected}")]
    Signer {
        /// Who signed.
        signer: Address,
        /// Who should have.
        expected: Address,
    },
    /// Signed for another chain.
    #[error("envelope is for chain {got}, this node follows chain {expected}")]
    Chain {
        /// The envelope's chain id.
        got: u64,
        /// This node's.
        expected: u64,
    },
    /// The body is not valid RLP of its kind.
    #[error("envelope body does not decode: {0}")]
    Body(String),
}

/// One executed transaction, with what readers need to serve it and its receipt.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct TxRecord {
    /// The transaction as submitted (EIP-2718 encoding).
    pub raw: Bytes,
    /// Its sender (recovered by the sequencer; a reader may check it).
    pub sender: Address,
    /// EIP-658 status.
    pub success: bool,
    /// Gas it used.
    pub gas_used: u64,
    /// Price per gas it paid.
    pub effective_gas_price: u128,
    /// The contract it created, or the zero address when it created none.
    pub contract_address: Address,
    /// Its logs.
    pub logs: Vec<Log>,
}

impl TxRecord {
    /// The contract it created.
    pub fn created(&self) -> Option<Address> {
        (!self.contract_address.is_zero()).then_some(self.contract_address)
    }
}

/// A sealed mini-block: its transactions with their receipts, and its state diff.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct MiniBlockEnvelope {
    /// Chain id.
    pub chain_id: u64,
    /// Global mini-block number (1-based).
    pub number: u64,
    /// The EVM block it belongs to.
    pub block_number: u64,
    /// Its position in that block (0-based).
    pub index: u32,
    /// Its hash.
    pub hash: B256,
    /// The previous mini-block's hash.
    pub parent_hash: B256,
    /// When it was sealed, milliseconds since the epoch.
    pub sealed_at_ms: u64,
    /// EVM block timestamp.
    pub timestamp: u64,
    /// Base fee of its EVM block.
    pub base_fee: u64,
    /// Its transactions in order.
    pub txs: Vec<TxRecord>,
    /// Its state diff, as a memstate codec message against the state after the previous
    /// mini-block.
    pub diff: Bytes,
}

/// A sealed EVM block: its header (state root included) and which mini-blocks it holds.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BlockEnvelope {
    /// Chain id.
    pub chain_id: u64,
    /// The header.
    pub header: Header,
    /// Number of its first mini-block (the global number); 0 when it has none.
    pub first_mini_block: u64,
    /// How many mini-blocks it holds (its transactions are theirs, in order).
    pub mini_blocks: u32,
}

impl BlockEnvelope {
    /// The block hash, keccak256 of the RLP header.
    pub fn hash(&self) -> B256 {
        self.header.hash_slow()
    }
}

/// Either kind of envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// A mini-block.
    MiniBlock(MiniBlockEnvelope),
    /// An EVM block (boxed: a header is several times larger than a mini-block's fields).
    Block(Box<BlockEnvelope>),
}

impl Envelope {
    /// The chain it is for.
    pub fn chain_id(&self) -> u64 {
        match self {
            Envelope::MiniBlock(m) => m.chain_id,
            Envelope::Block(b) => b.chain_id,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Envelope::MiniBlock(_) => KIND_MINI_BLOCK,
            Envelope::Block(_) => KIND_BLOCK,
        }
    }

    /// Signs with `key` into the byte form.
    pub fn sign(&self, key: &Signer) -> Bytes {
        let mut out = vec![ENVELOPE_VERSION, self.kind()];
        match self {
            Envelope::MiniBlock(m) => m.encode(&mut out),
            Envelope::Block(b) => b.encode(&mut out),
        }
        let digest = signing_digest(self.chain_id(), self.kind(), &out[2..]);
        out.extend_from_slice(&sign_digest(key, &digest));
        out.into()
    }

    /// Checks a signed envelope — size, version, signer, chain — and decodes it.
    pub fn open(bytes: &[u8], sequencer: Address, chain_id: u64) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        if bytes.len() < 2 + SIGNATURE_BYTES {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        if bytes[0] != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(bytes[0]));
        }
        let kind = bytes[1];
        if kind != KIND_MINI_BLOCK && kind != KIND_BLOCK {
            return Err(EnvelopeError::Kind(kind));
        }
        let (body, signature) = bytes[2..].split_at(bytes.len() - 2 - SIGNATURE_BYTES);
        // The chain id is signed, not trusted from the body: a signature made for another
        // chain does not verify here.
        let digest = signing_digest(chain_id, kind, body);
        let signer = recover(&digest, signature)?;
        if signer != sequencer {
            return Err(EnvelopeError::Signer { signer, expected: sequencer });
        }
        let body_err = |e: alloy_rlp::Error| EnvelopeError::Body(e.to_string());
        let mut rest = body;
        let envelope = match kind {
            KIND_MINI_BLOCK => {
                Envelope::MiniBlock(MiniBlockEnvelope::decode(&mut rest).map_err(body_err)?)
            }
            _ => Envelope::Block(Box::new(BlockEnvelope::decode(&mut rest).map_err(body_err)?)),
        };
        if !rest.is_empty() {
            return Err(EnvelopeError::Body(format!("{} trailing bytes", rest.len())));
        }
        if envelope.chain_id() != chain_id {
            return Err(EnvelopeError::Chain { got: envelope.chain_id(), expected: chain_id });
        }
        Ok(envelope)
    }
}

fn signing_digest(chain_id: u64, kind: u8, body: &[u8]) -> B256 {
    let mut input = Vec::with_capacity(DOMAIN.len() + 9 + body.len());
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(&chain_id.to_be_bytes());
    input.push(kind);
    input.extend_from_slice(body);
    keccak256(input)
}

/// A 65-byte recoverable signature of `digest` (r ‖ s ‖ recovery id).
pub(crate) fn sign_digest(key: &Signer, digest: &B256) -> [u8; SIGNATURE_BYTES] {
    let signature = SECP256K1.sign_ecdsa_recoverable(Message::from_digest(digest.0), &key.secret);
    let (id, compact) = signature.serialize_compact();
    let mut out = [0u8; SIGNATURE_BYTES];
    out[..64].copy_from_slice(&compact);
    out[64] = i32::from(id) as u8;
    out
}

pub(crate) fn recover(digest: &B256, signature: &[u8]) -> Result<Address, EnvelopeError> {
    let id =
        RecoveryId::try_from(i32::from(signature[64])).map_err(|_| EnvelopeError::Signature)?;
    let signature = RecoverableSignature::from_compact(&signature[..64], id)
        .map_err(|_| EnvelopeError::Signature)?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(digest.0), &signature)
        .map_err(|_| EnvelopeError::Signature)?;
    Ok(address_of(&key))
}

fn address_of(key: &PublicKey) -> Address {
    Address::from_slice(&keccak256(&key.serialize_uncompressed()[1..])[12..])
}

/// The sequencer's feed key.
#[derive(Clone)]
pub struct Signer {
    secret: SecretKey,
    address: Address,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte secret key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, EnvelopeError> {
        let secret = SecretKey::from_byte_array(*bytes).map_err(|_| EnvelopeError::Signature)?;
        let address = address_of(&secret.public_key(SECP256K1));
        Ok(Self { secret, address })
    }

    /// A new random key.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 32] = rand_bytes();
            if let Ok(signer) = Self::from_bytes(&bytes) {
                return signer;
            }
        }
    }

    /// The key everyone knows: what `sequencer --dev` signs with and `fullnode --dev` expects.
    /// Never use it outside dev mode.
    pub fn dev() -> Self {
        Self::from_bytes(&keccak256(b"sequencer-feed dev signer (public, insecure)").0)
            .expect("a valid key")
    }

    /// The secret key's bytes, to store it.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// The address receivers are configured with.
    pub fn address(&self) -> Address {
        self.address
    }
}

/// 32 random bytes from the OS.
fn rand_bytes() -> [u8; 32] {
    use std::io::Read;
    let mut out = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("reading /dev/urandom");
    out
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{LogData, U256};

    use super::*;

    fn mini_block() -> Envelope {
        Envelope::MiniBlock(MiniBlockEnvelope {
            chain_id: 7,
            number: 12,
            block_number: 3,
            index: 2,
            hash: B256::repeat_byte(1),
            parent_hash: B256::repeat_byte(2),
            sealed_at_ms: 1_700_000_000_123,
            timestamp: 1_700_000_000,
            base_fee: 1_000_000_000,
            txs: vec![TxRecord {
                raw: Bytes::from_static(&[0x02, 0xc0]),
                sender: Address::repeat_byte(3),
                success: true,
                gas_used: 21_000,
                effective_gas_price: 2_000_000_000,
                contract_address: Address::ZERO,
                logs: vec![Log {
                    address: Address::repeat_byte(4),
                    data: LogData::new_unchecked(
                        vec![B256::repeat_byte(5)],
                        Bytes::from_static(b"x"),
                    ),
                }],
            }],
            diff: Bytes::from_static(&[1, 0, 0]),
        })
    }

    fn block() -> Envelope {
        let header = Header {
            number: 3,
            state_root: B256::repeat_byte(9),
            base_fee_per_gas: Some(7),
            difficulty: U256::ZERO,
            ..Default::default()
        };
        Envelope::Block(Box::new(BlockEnvelope {
            chain_id: 7,
            header,
            first_mini_block: 10,
            mini_blocks: 3,
        }))
    }

    #[test]
    fn a_signed_envelope_opens_to_itself_for_its_sequencer_and_chain() {
        let key = Signer::random();
        for envelope in [mini_block(), block()] {
            let bytes = envelope.sign(&key);
            assert_eq!(Envelope::open(&bytes, key.address(), 7).unwrap(), envelope);
        }
    }

    #[test]
    fn forged_foreign_truncated_and_altered_envelopes_are_refused() {
        let (key, other) = (Signer::random(), Signer::random());
        let bytes = mini_block().sign(&key);
        assert!(matches!(
            Envelope::open(&mini_block().sign(&other), key.address(), 7),
            Err(EnvelopeError::Signer { .. })
        ));
        // Signed for chain 7, presented to a node of chain 8: the digest differs.
        assert!(matches!(
            Envelope::open(&bytes, key.address(), 8),
            Err(EnvelopeError::Signer { .. })
        ));
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert!(Envelope::open(&bytes[..cut], key.address(), 7).is_err(), "cut at {cut}");
        }
        for at in [2, 20, bytes.len() / 2, bytes.len() - 70] {
            let mut altered = bytes.to_vec();
            altered[at] ^= 0x40;
            assert!(Envelope::open(&altered, key.address(), 7).is_err(), "flip at {at}");
        }
        let mut version = bytes.to_vec();
        version[0] = 9;
        assert_eq!(Envelope::open(&version, key.address(), 7), Err(EnvelopeError::Version(9)));
    }

    #[test]
    fn the_dev_key_is_fixed() {
        assert_eq!(Signer::dev().address(), Signer::dev().address());
        let stored = Signer::from_bytes(&Signer::dev().secret_bytes()).unwrap();
        assert_eq!(stored.address(), Signer::dev().address());
    }
}
