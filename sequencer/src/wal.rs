//! The write-ahead log: every sealed mini-block's ordered transactions (and the block context
//! they ran in) are appended and fsynced before any of their receipts is released. Replaying it
//! from genesis re-executes the same transactions in the same order and so rebuilds the same
//! state, receipts and roots.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload`, payload `kind: u8 | body`.
//! A torn tail (short or failing its checksum) is cut off at open: it was never acknowledged.

use std::{
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use alloy_primitives::{Address, Bytes};

use crate::{
    exec::BlockEnvParams,
    frame::{Reader, Stop, encode_frame, read_frames},
};

/// A WAL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// I/O failed.
    #[error("WAL I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A record in the middle of the log is damaged (not a torn tail).
    #[error("WAL record at offset {offset} is corrupt: {reason}")]
    Corrupt {
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One WAL entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The chain started: genesis block timestamp.
    Genesis {
        /// Seconds since the epoch.
        timestamp: u64,
    },
    /// A sealed mini-block.
    MiniBlock {
        /// Block context it executed in.
        env: BlockEnvParams,
        /// Its position in the EVM block.
        index: u32,
        /// Wall time it sealed, ms since the epoch.
        sealed_at_ms: u64,
        /// Its transactions in execution order: the recovered sender (so that replay does
        /// not recover signatures again) and the EIP-2718 encoding.
        txs: Vec<(Address, Bytes)>,
    },
    /// An EVM block is complete (it may hold no mini-block at all).
    Seal {
        /// The block's context.
        env: BlockEnvParams,
    },
}

const KIND_GENESIS: u8 = 0;
const KIND_MINI: u8 = 1;
const KIND_SEAL: u8 = 2;

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Genesis { timestamp } => {
                out.push(KIND_GENESIS);
                out.extend_from_slice(&timestamp.to_le_bytes());
            }
            Record::MiniBlock { env, index, sealed_at_ms, txs } => {
                out.push(KIND_MINI);
                encode_env(env, out);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&sealed_at_ms.to_le_bytes());
                out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
                for (sender, tx) in txs {
                    out.extend_from_slice(sender.as_slice());
                    out.extend_from_slice(&(tx.len() as u32).to_le_bytes());
                    out.extend_from_slice(tx);
                }
            }
            Record::Seal { env } => {
                out.push(KIND_SEAL);
                encode_env(env, out);
            }
        }
    }

    fn decode(buf: &[u8]) -> Result<Self, String> {
        let mut r = Reader(buf);
        let record = match r.u8()? {
            KIND_GENESIS => Record::Genesis { timestamp: r.u64()? },
            KIND_MINI => {
                let env = decode_env(&mut r)?;
                let index = r.u32()?;
                let sealed_at_ms = r.u64()?;
                let count = r.u32()? as usize;
                let mut txs = Vec::with_capacity(count.min(buf.len() / 24));
                for _ in 0..count {
                    let sender = r.address()?;
                    txs.push((sender, Bytes::copy_from_slice(r.bytes()?)));
                }
                Record::MiniBlock { env, index, sealed_at_ms, txs }
            }
            KIND_SEAL => Record::Seal { env: decode_env(&mut r)? },
            other => return Err(format!("unknown record kind {other}")),
        };
        r.finish()?;
        Ok(record)
    }
}

pub(crate) fn decode_env(r: &mut Reader<'_>) -> Result<BlockEnvParams, String> {
    Ok(BlockEnvParams {
        number: r.u64()?,
        timestamp: r.u64()?,
        beneficiary: r.address()?,
        base_fee: r.u64()?,
        gas_limit: r.u64()?,
    })
}

pub(crate) fn encode_env(env: &BlockEnvParams, out: &mut Vec<u8>) {
    out.extend_from_slice(&env.number.to_le_bytes());
    out.extend_from_slice(&env.timestamp.to_le_bytes());
    out.extend_from_slice(env.beneficiary.as_slice());
    out.extend_from_slice(&env.base_fee.to_le_bytes());
    out.extend_from_slice(&env.gas_limit.to_le_bytes());
}

/// The append side of the log: a directory of segments `wal-<first block>.log`, the last one
/// active. A new segment starts after each checkpoint so that segments wholly behind a kept
/// checkpoint can be deleted.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// First block of each segment, ascending; the last is the active one.
    segments: Vec<u64>,
    file: File,
    fsync: bool,
    buf: Vec<u8>,
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("wal-{start:020}.log"))
}

fn open_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).append(true).create(true).truncate(false).open(path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens (or creates) the log in `dir`, returning it with every intact record, oldest
    /// first. A torn tail of the active segment is truncated; damage anywhere else is an
    /// error, since records after it were acknowledged.
    pub fn open(dir: &Path, fsync: bool) -> Result<(Self, Vec<Record>), WalError> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        if segments.is_empty() {
            segments.push(0);
        }
        let mut records = Vec::new();
        let mut active = None;
        for (i, start) in segments.iter().enumerate() {
            let path = segment_path(dir, *start);
            let mut file = open_segment(&path)?;
            let frames = read_frames(&file)?;
            let last = i + 1 == segments.len();
            let corrupt = |offset: u64, reason: String| WalError::Corrupt {
                offset,
                reason: format!("{}: {reason}", path.display()),
            };
            match frames.stop {
                Some(Stop::Corrupt { offset, reason }) => return Err(corrupt(offset, reason)),
                Some(Stop::Torn) if !last => {
                    return Err(corrupt(frames.end, "torn record in a closed segment".into()));
                }
                _ => {}
            }
            for (offset, payload) in &frames.records {
                records.push(Record::decode(payload).map_err(|reason| corrupt(*offset, reason))?);
            }
            if last {
                if frames.stop == Some(Stop::Torn) {
                    tracing::warn!(segment = %path.display(), end = frames.end, "WAL: cutting off a torn tail");
                    file.set_len(frames.end)?;
                    file.sync_all()?;
                }
                file.seek(SeekFrom::End(0))?;
                active = Some(file);
            }
        }
        let file = active.expect("at least one segment");
        sync_dir(dir)?;
        Ok((Self { dir: dir.into(), segments, file, fsync, buf: Vec::new() }, records))
    }

    /// Appends records and makes them durable (fsync) before returning.
    pub fn append(&mut self, records: &[Record]) -> Result<(), WalError> {
        self.buf.clear();
        let mut payload = Vec::new();
        for record in records {
            payload.clear();
            record.encode(&mut payload);
            encode_frame(&payload, &mut self.buf);
        }
        self.file.write_all(&self.buf)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Starts a new segment whose first block is `start`.
    pub fn rotate(&mut self, start: u64) -> Result<(), WalError> {
        self.file.sync_data()?;
        let file = open_segment(&segment_path(&self.dir, start))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segments.push(start);
        Ok(())
    }

    /// Deletes the closed segments that hold only blocks up to `upto`; returns how many.
    pub fn prune(&mut self, upto: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1] <= upto.saturating_add(1) {
            std::fs::remove_file(segment_path(&self.dir, self.segments[0]))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: u64) -> BlockEnvParams {
        BlockEnvParams {
            number: n,
            timestamp: 1000 + n,
            beneficiary: Address::repeat_byte(3),
            base_fee: 7,
            gas_limit: 30_000_000,
        }
    }

    fn mini(n: u64) -> Record {
        Record::MiniBlock {
            env: env(n),
            index: n as u32,
            sealed_at_ms: 99,
            txs: vec![
                (Address::repeat_byte(1), Bytes::from(vec![1, 2, 3])),
                (Address::repeat_byte(2), Bytes::from(vec![4; 300])),
            ],
        }
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, none) = Wal::open(&path, true).unwrap();
        assert!(none.is_empty());
        let written = vec![Record::Genesis { timestamp: 5 }, mini(1), Record::Seal { env: env(1) }];
        wal.append(&written).unwrap();
        drop(wal);
        let (_, read) = Wal::open(&path, true).unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.append(&[mini(1)]).unwrap();
        wal.append(&[mini(2)]).unwrap();
        drop(wal);
        let len = std::fs::metadata(segment_path(&path, 0)).unwrap().len();
        let file = OpenOptions::new().write(true).open(segment_path(&path, 0)).unwrap();
        file.set_len(len - 5).unwrap();
        drop(file);
        let (mut wal, read) = Wal::open(&path, false).unwrap();
        assert_eq!(read, vec![mini(1)]);
        wal.append(&[mini(3)]).unwrap();
        drop(wal);
        let (_, read) = Wal::open(&path, false).unwrap();
        assert_eq!(read, vec![mini(1), mini(3)]);
    }

    #[test]
    fn damage_before_the_tail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.append(&[mini(1), mini(2)]).unwrap();
        drop(wal);
        let mut bytes = std::fs::read(segment_path(&path, 0)).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(segment_path(&path, 0), bytes).unwrap();
        assert!(matches!(Wal::open(&path, false), Err(WalError::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn segments_rotate_replay_in_order_and_prune_behind_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.append(&[Record::Genesis { timestamp: 1 }, mini(1), Record::Seal { env: env(1) }])
            .unwrap();
        wal.rotate(2).unwrap();
        wal.append(&[mini(2), Record::Seal { env: env(2) }]).unwrap();
        wal.rotate(3).unwrap();
        wal.append(&[mini(3)]).unwrap();
        drop(wal);
        let (mut wal, read) = Wal::open(&path, false).unwrap();
        assert_eq!(read.len(), 6);
        assert_eq!(read[5], mini(3));
        assert_eq!(wal.segment_count(), 3);
        // Only segments wholly at or behind block 1 go; the active one always stays.
        assert_eq!(wal.prune(1).unwrap(), 1);
        assert_eq!(wal.prune(1).unwrap(), 0);
        assert_eq!(wal.prune(100).unwrap(), 1);
        assert_eq!(wal.segment_count(), 1);
        drop(wal);
        let (_, read) = Wal::open(&path, false).unwrap();
        assert_eq!(read, vec![mini(3)]);
    }

    #[test]
    fn a_torn_closed_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, false).unwrap();
        wal.append(&[mini(1)]).unwrap();
        wal.rotate(2).unwrap();
        wal.append(&[mini(2)]).unwrap();
        drop(wal);
        let first = segment_path(&path, 0);
        let len = std::fs::metadata(&first).unwrap().len();
        OpenOptions::new().write(true).open(&first).unwrap().set_len(len - 3).unwrap();
        assert!(matches!(Wal::open(&path, false), Err(WalError::Corrupt { .. })));
    }
}
