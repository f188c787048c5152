//! Length- and checksum-framed records in an append-only file: `len: u32 LE | crc32: u32 LE |
//! payload`. Shared by the WAL and the block store.

use std::{
    fs::File,
    io::{BufReader, Read},
};

/// Largest record accepted when reading; a larger length is damage, not data.
const MAX_RECORD: usize = 1 << 30;

/// Why reading stopped before the end of the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A short or failing record at the very end: a write cut off by a crash.
    Torn,
    /// A bad record with more data after it.
    Corrupt {
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Every intact record from the start, and where and why reading stopped.
#[derive(Debug)]
pub(crate) struct Frames {
    /// (offset, payload) of each intact record.
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    /// Offset just past the last intact record.
    pub(crate) end: u64,
    /// Set when the file holds more than the intact records.
    pub(crate) stop: Option<Stop>,
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads `file` from its start.
pub(crate) fn read_frames(file: &File) -> std::io::Result<Frames> {
    let total = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let stop = loop {
        let mut head = [0u8; 8];
        match read_full(&mut reader, &mut head)? {
            0 => break None,
            8 => {}
            _ => break Some(Stop::Torn),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let end = offset + 8 + len as u64;
        if len > MAX_RECORD || len == 0 {
            break Some(Stop::Corrupt { offset, reason: format!("length {len}") });
        }
        let mut payload = vec![0u8; len];
        if read_full(&mut reader, &mut payload)? < len {
            break Some(Stop::Torn);
        }
        if crc32fast::hash(&payload) != crc {
            break Some(if end == total {
                Stop::Torn
            } else {
                Stop::Corrupt { offset, reason: "checksum mismatch".into() }
            });
        }
        records.push((offset, payload));
        offset = end;
    };
    Ok(Frames { records, end: offset, stop })
}

/// Appends one framed record to `out`.
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Little-endian field readers over a byte slice, for record decoders.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: wanted {n} bytes, {} left", self.0.len()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub(crate) fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }

    pub(crate) fn b256(&mut self) -> Result<alloy_primitives::B256, String> {
        Ok(alloy_primitives::B256::from_slice(self.take(32)?))
    }

    pub(crate) fn address(&mut self) -> Result<alloy_primitives::Address, String> {
        Ok(alloy_primitives::Address::from_slice(self.take(20)?))
    }

    /// A `u32` length and that many bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    pub(crate) fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected bytes after record", self.0.len()))
        }
    }
}
