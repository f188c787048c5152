//! Byte-level pieces of the diff format: LEB128 varints, tagged 256-bit values, and a reader
//! whose every method fails cleanly on short or malformed input.

use alloy_primitives::U256;

use super::CodecError;

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How a value is written relative to what the receiver already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Absolute = 0,
    Plus = 1,
    Minus = 2,
}

fn be_trimmed(v: &U256) -> ([u8; 32], usize) {
    let bytes = v.to_be_bytes::<32>();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    (bytes, skip)
}

/// Writes `new` as a tag byte (mode in the top two bits, length in the low six) and that many
/// big-endian bytes: either the value itself or its distance from `prior`, whichever is
/// shorter. Equal lengths prefer the distance: a fee or an increment repeats from one
/// transaction to the next, which the compressor then removes.
pub(super) fn put_value(out: &mut Vec<u8>, prior: &U256, new: &U256) {
    let absolute = be_trimmed(new);
    let (mode, (bytes, skip)) = if prior.is_zero() {
        (Mode::Absolute, absolute)
    } else {
        let (mode, delta) =
            if new >= prior { (Mode::Plus, *new - *prior) } else { (Mode::Minus, *prior - *new) };
        let delta = be_trimmed(&delta);
        if delta.1 >= absolute.1 { (mode, delta) } else { (Mode::Absolute, absolute) }
    };
    out.push(((mode as u8) << 6) | (32 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Writes a slot key or other number by its significant bytes only.
pub(super) fn put_number(out: &mut Vec<u8>, v: &U256) {
    let (bytes, skip) = be_trimmed(v);
    out.push((32 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// A cursor over one section of a message.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    section: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], section: &'static str) -> Self {
        Self { bytes, pos: 0, section }
    }

    fn short(&self) -> CodecError {
        CodecError::Truncated { section: self.section }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    #[inline]
    pub(super) fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(self.short());
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    #[inline]
    pub(super) fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::Malformed {
                    section: self.section,
                    what: "varint overflow",
                });
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(CodecError::Malformed {
                        section: self.section,
                        what: "varint not minimal",
                    });
                }
                return Ok(v);
            }
        }
        Err(CodecError::Malformed { section: self.section, what: "varint too long" })
    }

    /// A varint used as a count or length: at most `max`.
    pub(super) fn count(&mut self, max: usize, what: &'static str) -> Result<usize, CodecError> {
        let v = self.varint()?;
        if v > max as u64 {
            return Err(CodecError::Malformed { section: self.section, what });
        }
        Ok(v as usize)
    }

    #[inline]
    fn trimmed(&mut self, len: usize) -> Result<U256, CodecError> {
        if len > 32 {
            return Err(CodecError::Malformed {
                section: self.section,
                what: "value over 32 bytes",
            });
        }
        let bytes = self.bytes(len)?;
        if bytes.first() == Some(&0) {
            return Err(CodecError::Malformed {
                section: self.section,
                what: "value with a leading zero byte",
            });
        }
        // Limb by limb from the end: a whole limb is one load and a byte swap, where
        // `from_be_slice` goes byte by byte (and a copy into a zeroed word would be reloaded
        // wide from narrow stores, which waits for them).
        let mut limbs = [0u64; 4];
        let mut end = bytes.len();
        for limb in limbs.iter_mut() {
            let start = end.saturating_sub(8);
            *limb = match bytes[start..end].try_into() {
                Ok(whole) => u64::from_be_bytes(whole),
                Err(_) => bytes[start..end].iter().fold(0, |v, &b| (v << 8) | u64::from(b)),
            };
            end = start;
        }
        Ok(U256::from_limbs(limbs))
    }

    /// Reads what [`put_value`] wrote against the same `prior`.
    #[inline]
    pub(super) fn value(&mut self, prior: &U256) -> Result<U256, CodecError> {
        let mut value = *prior;
        self.value_in_place(&mut value)?;
        Ok(value)
    }

    /// As [`Reader::value`] against the prior `*value`, which it replaces: written in place,
    /// a value is not copied out of a returned `Result` (whose wide loads would wait for the
    /// narrow stores that wrote it).
    pub(super) fn value_in_place(&mut self, value: &mut U256) -> Result<(), CodecError> {
        let tag = self.byte()?;
        let v = self.trimmed(usize::from(tag & 0x3f))?;
        let bad = |what| CodecError::Malformed { section: self.section, what };
        *value = match tag >> 6 {
            0 => v,
            1 => value.checked_add(v).ok_or(bad("delta overflows"))?,
            2 => value.checked_sub(v).ok_or(bad("delta below zero"))?,
            _ => return Err(bad("unknown value mode")),
        };
        Ok(())
    }

    /// Reads what [`put_number`] wrote.
    #[inline]
    pub(super) fn number(&mut self) -> Result<U256, CodecError> {
        let len = usize::from(self.byte()?);
        self.trimmed(len)
    }

    /// Fails unless every byte of the section was read.
    pub(super) fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() != 0 {
            return Err(CodecError::Malformed { section: self.section, what: "trailing bytes" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn u256() -> impl Strategy<Value = U256> {
        prop_oneof![
            any::<u64>().prop_map(U256::from),
            any::<[u8; 32]>().prop_map(U256::from_be_bytes),
            Just(U256::ZERO),
            Just(U256::MAX),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip_against_any_prior(prior in u256(), new in u256()) {
            let mut out = Vec::new();
            put_value(&mut out, &prior, &new);
            let mut r = Reader::new(&out, "test");
            prop_assert_eq!(r.value(&prior).unwrap(), new);
            r.finish().unwrap();
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out, "test");
            prop_assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn a_small_change_to_a_large_value_costs_its_distance() {
        let prior = U256::from(10).pow(U256::from(24));
        let mut out = Vec::new();
        put_value(&mut out, &prior, &(prior - U256::from(21_000u64 * 1_000_000_000)));
        assert_eq!(out.len(), 1 + 6);
    }

    #[test]
    fn malformed_varints_and_values_are_errors() {
        for bad in [
            &[0x80u8][..],
            &[0xff; 11][..],
            &[0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..],
        ] {
            assert!(Reader::new(bad, "t").varint().is_err(), "{bad:?}");
        }
        for bad in [&[0x21u8][..], &[0x02, 0x00, 0x01][..], &[0xc1, 0x01][..], &[0x41][..]] {
            assert!(Reader::new(bad, "t").value(&U256::from(1)).is_err(), "{bad:?}");
        }
        assert!(Reader::new(&[0x81, 0x05], "t").value(&U256::from(1)).is_err());
        assert!(Reader::new(&[0x41, 0x01], "t").value(&U256::MAX).is_err());
    }
}
