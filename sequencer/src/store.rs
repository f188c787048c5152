//! What lets a restart start from the last checkpoint instead of genesis:
//!
//! - the **block store** (`blocks.log`): every sealed block with its transactions and receipt
//!   data, appended by the root committer. Derived data: the WAL can rebuild it.
//! - the **checkpoint** (`checkpoint.bin`): the whole state at the end of a sealed block, with
//!   what the builder needs to go on, written atomically (temporary file, fsync, rename).
//!
//! A restart loads the checkpoint, takes blocks up to it from the block store, rebuilds NOMT
//! from the checkpoint's state (its root must equal that block's state root), and replays only
//! the WAL records after it.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use alloy_consensus::Header;
use alloy_primitives::{B256, Bytes, U256, logs_bloom};
use alloy_rlp::{Decodable, Encodable};
use memstate::{AccountData, AccountDiff, MemState, StateDiff};
use revm::state::Bytecode;

use crate::{
    chain::{ExecutedTx, SealedBlock},
    exec::BlockEnvParams,
    frame::{Reader, encode_frame, read_frames},
    tx::decode_recovered,
};

/// The block store or a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Contents that do not decode.
    #[error("{path}: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_block(block: &SealedBlock, out: &mut Vec<u8>) {
    let mut header = Vec::new();
    block.header.encode(&mut header);
    put_bytes(out, &header);
    out.extend_from_slice(&block.mini_block_count.to_le_bytes());
    out.extend_from_slice(&block.size.to_le_bytes());
    out.extend_from_slice(&(block.txs.len() as u32).to_le_bytes());
    for tx in &block.txs {
        out.extend_from_slice(tx.tx.sender.as_slice());
        put_bytes(out, &tx.tx.raw);
        out.push(u8::from(tx.success));
        out.extend_from_slice(&tx.gas_used.to_le_bytes());
        out.extend_from_slice(&tx.cumulative_gas_used.to_le_bytes());
        let mut logs = Vec::new();
        tx.logs.encode(&mut logs);
        put_bytes(out, &logs);
        out.extend_from_slice(&tx.first_log_index.to_le_bytes());
        match tx.contract_address {
            Some(a) => {
                out.push(1);
                out.extend_from_slice(a.as_slice());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&tx.effective_gas_price.to_le_bytes());
        out.extend_from_slice(&tx.mini_block.to_le_bytes());
        out.extend_from_slice(tx.mini_block_hash.as_slice());
    }
}

fn decode_block(payload: &[u8]) -> Result<SealedBlock, String> {
    let mut r = Reader(payload);
    let mut header_bytes = r.bytes()?;
    let header = Header::decode(&mut header_bytes).map_err(|e| e.to_string())?;
    let mini_block_count = r.u32()?;
    let size = r.u64()?;
    let count = r.u32()? as usize;
    let mut txs = Vec::with_capacity(count.min(payload.len() / 64));
    for index in 0..count as u64 {
        let sender = r.address()?;
        let raw = Bytes::copy_from_slice(r.bytes()?);
        let tx = decode_recovered(raw, sender).map_err(|e| e.to_string())?;
        let success = r.u8()? == 1;
        let gas_used = r.u64()?;
        let cumulative_gas_used = r.u64()?;
        let mut logs_bytes = r.bytes()?;
        let logs =
            Vec::<alloy_primitives::Log>::decode(&mut logs_bytes).map_err(|e| e.to_string())?;
        let first_log_index = r.u64()?;
        let contract_address = match r.u8()? {
            1 => Some(r.address()?),
            _ => None,
        };
        let effective_gas_price = r.u128()?;
        let mini_block = r.u64()?;
        let mini_block_hash = r.b256()?;
        txs.push(Arc::new(ExecutedTx {
            bloom: logs_bloom(logs.iter()),
            tx: Arc::new(tx),
            block_number: header.number,
            index,
            mini_block,
            mini_block_hash,
            success,
            gas_used,
            cumulative_gas_used,
            logs,
            first_log_index,
            contract_address,
            effective_gas_price,
        }));
    }
    r.finish()?;
    let hash = header.hash_slow();
    Ok(SealedBlock { header, hash, txs, mini_block_count, size })
}

/// The append side of `blocks.log`.
#[derive(Debug)]
pub struct BlockStore {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

impl BlockStore {
    /// Opens the store and reads its blocks. Reading stops at the first damaged record, which
    /// and everything after it is cut off: the WAL can rebuild it.
    pub fn open(path: &Path) -> Result<(Self, Vec<(u64, SealedBlock)>), StoreError> {
        let io = |source| StoreError::Io { path: path.into(), source };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let frames = read_frames(&file).map_err(io)?;
        let mut blocks = Vec::with_capacity(frames.records.len());
        let mut end = frames.end;
        for (offset, payload) in frames.records {
            match decode_block(&payload) {
                Ok(block) if block.header.number == blocks.len() as u64 => {
                    blocks.push((offset, block))
                }
                _ => {
                    end = offset;
                    break;
                }
            }
        }
        let store = Self { file, path: path.into(), buf: Vec::new() };
        store.truncate(end)?;
        Ok((store, blocks))
    }

    /// Drops everything from byte `offset` on.
    pub fn truncate(&self, offset: u64) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        if self.file.metadata().map_err(io)?.len() > offset {
            self.file.set_len(offset).map_err(io)?;
        }
        Ok(())
    }

    /// Appends a sealed block. Not fsynced: the WAL is the durability point, and a checkpoint
    /// fsyncs the store before it names a block.
    pub fn append(&mut self, block: &SealedBlock) -> Result<(), StoreError> {
        let mut payload = Vec::new();
        encode_block(block, &mut payload);
        self.buf.clear();
        encode_frame(&payload, &mut self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|source| StoreError::Io { path: self.path.clone(), source })
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|source| StoreError::Io { path: self.path.clone(), source })
    }
}

/// The state at the end of a sealed block and the builder's position after it.
#[derive(Debug)]
pub struct Checkpoint {
    /// The block it was taken after.
    pub block: u64,
    /// The open block's context right after it.
    pub next_env: BlockEnvParams,
    /// Mini-blocks sealed so far.
    pub mini_number: u64,
    /// Hash of the last mini-block.
    pub last_mini_hash: B256,
    /// The whole state, as a diff from an empty state.
    pub state: StateDiff,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"SEQCKPT1";

impl Checkpoint {
    /// Captures `state` (call it between blocks, when no mini-block is being applied).
    pub fn capture(
        block: u64,
        next_env: BlockEnvParams,
        mini_number: u64,
        last_mini_hash: B256,
        state: &MemState,
    ) -> Self {
        // The state's tables hold accounts in no order: gathered, then sorted once.
        let mut accounts = Vec::new();
        state.for_each_account(|address, account| {
            accounts.push((
                *address,
                AccountDiff {
                    info: Some(AccountData {
                        nonce: account.nonce,
                        balance: account.balance,
                        code_hash: account.code_hash(),
                    }),
                    storage_cleared: true,
                    storage: account.storage().map(|(k, v)| (*k, *v)).collect(),
                },
            ));
        });
        let mut diff = StateDiff { accounts: accounts.into_iter().collect(), ..Default::default() };
        for change in diff.accounts.values() {
            let hash = change.info.expect("present").code_hash;
            if hash != memstate::KECCAK_EMPTY
                && let Some(code) = state.code_by_hash(&hash)
            {
                diff.codes.insert(hash, code);
            }
        }
        Self { block, next_env, mini_number, last_mini_hash, state: diff }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.block.to_le_bytes());
        crate::wal::encode_env(&self.next_env, &mut out);
        out.extend_from_slice(&self.mini_number.to_le_bytes());
        out.extend_from_slice(self.last_mini_hash.as_slice());
        out.extend_from_slice(&(self.state.codes.len() as u32).to_le_bytes());
        for (hash, code) in &self.state.codes {
            out.extend_from_slice(hash.as_slice());
            put_bytes(&mut out, &code.original_bytes());
        }
        out.extend_from_slice(&(self.state.accounts.len() as u64).to_le_bytes());
        for (address, change) in &self.state.accounts {
            let info = change.info.expect("checkpoints hold existing accounts");
            out.extend_from_slice(address.as_slice());
            out.extend_from_slice(&info.nonce.to_le_bytes());
            out.extend_from_slice(&info.balance.to_be_bytes::<32>());
            out.extend_from_slice(info.code_hash.as_slice());
            out.extend_from_slice(&(change.storage.len() as u64).to_le_bytes());
            for (slot, value) in &change.storage {
                out.extend_from_slice(&slot.to_be_bytes::<32>());
                out.extend_from_slice(&value.to_be_bytes::<32>());
            }
        }
        out
    }

    fn decode(payload: &[u8]) -> Result<Self, String> {
        let mut r = Reader(payload);
        let block = r.u64()?;
        let next_env = crate::wal::decode_env(&mut r)?;
        let mini_number = r.u64()?;
        let last_mini_hash = r.b256()?;
        let mut state = StateDiff::default();
        for _ in 0..r.u32()? {
            let hash = r.b256()?;
            state.codes.insert(hash, Bytecode::new_raw(Bytes::copy_from_slice(r.bytes()?)));
        }
        let mut accounts = Vec::new();
        for _ in 0..r.u64()? {
            let address = r.address()?;
            let nonce = r.u64()?;
            let balance = U256::from_be_bytes::<32>(r.take(32)?.try_into().expect("32"));
            let code_hash = r.b256()?;
            let mut change = AccountDiff {
                info: Some(AccountData { nonce, balance, code_hash }),
                storage_cleared: true,
                storage: Default::default(),
            };
            for _ in 0..r.u64()? {
                let slot = U256::from_be_bytes::<32>(r.take(32)?.try_into().expect("32"));
                let value = U256::from_be_bytes::<32>(r.take(32)?.try_into().expect("32"));
                change.storage.insert(slot, value);
            }
            accounts.push((address, change));
        }
        r.finish()?;
        state.accounts = accounts.into_iter().collect();
        Ok(Self { block, next_env, mini_number, last_mini_hash, state })
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: path.into(), source };
        let payload = self.encode();
        let mut out = Vec::with_capacity(payload.len() + 16);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        encode_frame(&payload, &mut out);
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).map_err(io)?;
        file.write_all(&out).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Reads the checkpoint at `path`, if there is one.
    pub fn read(path: &Path) -> Result<Option<Self>, StoreError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path: path.into(), source }),
        };
        let corrupt = |reason: String| StoreError::Corrupt { path: path.into(), reason };
        let body = bytes
            .strip_prefix(CHECKPOINT_MAGIC)
            .ok_or_else(|| corrupt("not a checkpoint".into()))?;
        let mut r = Reader(body);
        let len = r.u32().map_err(corrupt)? as usize;
        let crc = r.u32().map_err(corrupt)?;
        let payload = r.take(len).map_err(corrupt)?;
        if crc32fast::hash(payload) != crc {
            return Err(corrupt("checksum mismatch".into()));
        }
        Self::decode(payload).map(Some).map_err(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::Address;

    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_damage_is_refused() {
        let state = MemState::from_genesis(
            &[(
                Address::repeat_byte(1),
                memstate::GenesisAccount {
                    balance: U256::from(7),
                    nonce: Some(alloy_primitives::U64::from(3)),
                    code: Some(Bytes::from_static(&[0x60, 0x00])),
                    storage: Some([(U256::from(1), U256::from(2))].into()),
                },
            )]
            .into(),
        );
        let env = BlockEnvParams {
            number: 9,
            timestamp: 100,
            beneficiary: Address::ZERO,
            base_fee: 5,
            gas_limit: 30_000_000,
        };
        let checkpoint = Checkpoint::capture(8, env, 4, B256::repeat_byte(4), &state);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.bin");
        checkpoint.write(&path).unwrap();
        let back = Checkpoint::read(&path).unwrap().unwrap();
        assert_eq!((back.block, back.next_env, back.mini_number), (8, env, 4));
        assert_eq!(back.state, checkpoint.state);
        assert_eq!(MemState::from_diff(&back.state).mpt_root(), state.mpt_root());

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(Checkpoint::read(&path), Err(StoreError::Corrupt { .. })));
        assert!(Checkpoint::read(&dir.path().join("none")).unwrap().is_none());
    }
}
