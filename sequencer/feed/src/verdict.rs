//! Provers' verdicts: a prover's statement that it verified (or refuted) one EVM block, signed
//! with the prover's own key, as the prover sends it back to the sequencer.
//!
//! Byte form: `version ‖ RLP body ‖ 65-byte recoverable secp256k1 signature` over
//! `keccak("sequencer-verdict/v1" ‖ chain id ‖ body)`. The recipient learns the prover's
//! address from the signature.

use alloy_primitives::{Address, B256, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

use crate::{
    EnvelopeError, Signer,
    envelope::{SIGNATURE_BYTES, recover, sign_digest},
};

/// Format version.
pub const VERDICT_VERSION: u8 = 1;
/// Largest signed verdict.
pub const MAX_VERDICT_BYTES: usize = 8 << 10;
const DOMAIN: &[u8] = b"sequencer-verdict/v1";

/// What a prover found about one block.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BlockVerdict {
    /// Chain id.
    pub chain_id: u64,
    /// The block's number.
    pub block: u64,
    /// Its hash.
    pub block_hash: B256,
    /// The state root it was verified from.
    pub parent_root: B256,
    /// The post-state root its header claims.
    pub post_root: B256,
    /// Valid or not.
    pub valid: bool,
    /// Why not (empty when valid).
    pub reason: String,
    /// How the prover verified (e.g. "stateless re-execution").
    pub backend: String,
}

fn digest(chain_id: u64, body: &[u8]) -> B256 {
    let mut input = Vec::with_capacity(DOMAIN.len() + 8 + body.len());
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(&chain_id.to_be_bytes());
    input.extend_from_slice(body);
    keccak256(input)
}

impl BlockVerdict {
    /// Signs the verdict with the prover's key.
    pub fn sign(&self, key: &Signer) -> Vec<u8> {
        let mut out = vec![VERDICT_VERSION];
        self.encode(&mut out);
        let signature = sign_digest(key, &digest(self.chain_id, &out[1..]));
        out.extend_from_slice(&signature);
        out
    }

    /// Checks a signed verdict's form and signature for `chain_id`; returns the prover's
    /// address and the verdict.
    pub fn open(bytes: &[u8], chain_id: u64) -> Result<(Address, Self), EnvelopeError> {
        if bytes.len() > MAX_VERDICT_BYTES {
            return Err(EnvelopeError::TooLarge(bytes.len()));
        }
        if bytes.len() < 1 + SIGNATURE_BYTES {
            return Err(EnvelopeError::TooShort(bytes.len()));
        }
        if bytes[0] != VERDICT_VERSION {
            return Err(EnvelopeError::Version(bytes[0]));
        }
        let (body, signature) = bytes[1..].split_at(bytes.len() - 1 - SIGNATURE_BYTES);
        let prover = recover(&digest(chain_id, body), signature)?;
        let mut buf = body;
        let verdict = Self::decode(&mut buf).map_err(|e| EnvelopeError::Body(e.to_string()))?;
        if !buf.is_empty() {
            return Err(EnvelopeError::Body("trailing bytes".into()));
        }
        if verdict.chain_id != chain_id {
            return Err(EnvelopeError::Chain { got: verdict.chain_id, expected: chain_id });
        }
        Ok((prover, verdict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict() -> BlockVerdict {
        BlockVerdict {
            chain_id: 31337,
            block: 7,
            block_hash: B256::repeat_byte(1),
            parent_root: B256::repeat_byte(2),
            post_root: B256::repeat_byte(3),
            valid: false,
            reason: "post-state root differs".into(),
            backend: "stateless re-execution".into(),
        }
    }

    #[test]
    fn a_signed_verdict_opens_to_its_prover_and_tampering_is_refused() {
        let key = Signer::random();
        let signed = verdict().sign(&key);
        assert_eq!(BlockVerdict::open(&signed, 31337).unwrap(), (key.address(), verdict()));
        assert!(BlockVerdict::open(&signed, 1).is_err(), "another chain");
        for at in 0..signed.len() {
            let mut bad = signed.clone();
            bad[at] ^= 1;
            if let Ok((prover, v)) = BlockVerdict::open(&bad, 31337) {
                assert!(prover != key.address() || v != verdict(), "byte {at} changed nothing");
            }
        }
        for cut in 0..signed.len() {
            let _ = BlockVerdict::open(&signed[..cut], 31337);
        }
    }
}
