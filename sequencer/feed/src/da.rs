//! Data availability: every EVM block's signed envelopes (its mini-blocks, then the block)
//! stored as one batch, from which a node that was away catches up.
//!
//! Two backends: a local archive directory (the default; embedded, no service) and the EigenDA
//! proxy's REST API. A batch is found by its block number; where a backend returns its own
//! pointer (EigenDA's certificate), the sequencer records it in a [`PointerLog`] and serves it.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use alloy_primitives::Bytes;
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

/// Largest batch accepted from a backend (one EVM block's envelopes).
pub const MAX_BATCH_BYTES: usize = 1 << 30;

/// Why a DA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DaError {
    /// A file or directory of the local archive.
    #[error("DA archive {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A batch that is not one (wrong RLP, wrong number, over the size limit).
    #[error("DA batch for block {number} is malformed: {what}")]
    Malformed {
        /// The block.
        number: u64,
        /// What is wrong.
        what: String,
    },
    /// The archive already holds different bytes for this block.
    #[error("DA archive already holds a different batch for block {0}")]
    Conflict(u64),
    /// The EigenDA proxy answered 503: the caller should retry or fail over.
    #[error("EigenDA proxy unavailable (503): retry later")]
    Unavailable,
    /// Any other failure of the EigenDA proxy.
    #[error("EigenDA proxy: {0}")]
    Proxy(String),
    /// The backend needs a pointer that was not given.
    #[error("no DA pointer for block {0}: ask the sequencer for it")]
    NoPointer(u64),
}

/// Where a batch can be fetched: empty for the local archive (the number is enough), the
/// certificate for EigenDA.
#[derive(Clone, Debug, Default, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct DaPointer(pub Bytes);

/// Stores batches.
pub trait DaSink: Send + Sync {
    /// Stores the batch of EVM block `number`. Storing the same batch twice is not an error.
    fn put(&self, number: u64, batch: &[u8]) -> Result<DaPointer, DaError>;
}

/// Fetches batches.
pub trait DaSource: Send + Sync {
    /// The batch of EVM block `number`, `None` if the backend does not have it.
    fn get(&self, number: u64, pointer: &DaPointer) -> Result<Option<Vec<u8>>, DaError>;
}

/// One EVM block's signed envelopes: its mini-blocks in order, then the block.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct Batch {
    /// The EVM block number.
    pub number: u64,
    /// Signed envelopes (see [`crate::Envelope::open`]).
    pub envelopes: Vec<Bytes>,
}

impl Batch {
    /// The byte form stored in DA.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.length());
        self.encode(&mut out);
        out
    }

    /// Parses a stored batch, which must be the one of block `number`.
    pub fn from_bytes(number: u64, bytes: &[u8]) -> Result<Self, DaError> {
        let bad = |what: String| DaError::Malformed { number, what };
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(bad(format!("{} bytes is over the limit", bytes.len())));
        }
        let mut rest = bytes;
        let batch = Batch::decode(&mut rest).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        if batch.number != number {
            return Err(bad(format!("it holds block {}", batch.number)));
        }
        Ok(batch)
    }
}

/// Maps an I/O error to [`DaError::Io`] at `path`.
fn io(path: &Path) -> impl Fn(io::Error) -> DaError + use<> {
    let path = path.to_path_buf();
    move |source| DaError::Io { path: path.clone(), source }
}

/// The local archive: one file per EVM block, `<dir>/<number / 10 000>/<number>.batch`,
/// written to a temporary file, synced and renamed, so a crash leaves a whole batch or none.
#[derive(Clone, Debug)]
pub struct LocalArchive {
    dir: PathBuf,
    /// File extension: `batch`, or `witness` for block witnesses.
    ext: &'static str,
}

impl LocalArchive {
    /// The archive in `dir` (created when missing).
    pub fn open(dir: &Path) -> Result<Self, DaError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self { dir: dir.to_path_buf(), ext: "batch" })
    }

    /// The block witnesses kept beside the batches in `dir`, as `<number>.witness` files. A
    /// witness is checked against the parent block's root by whoever reads it, so one written
    /// again (a restarted sequencer re-sealing a block) replaces the old one.
    pub fn witnesses(dir: &Path) -> Result<Self, DaError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self { dir: dir.to_path_buf(), ext: "witness" })
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{:08}", number / 10_000)).join(format!("{number:012}.{}", self.ext))
    }

    /// The highest block number stored, if any.
    pub fn last(&self) -> Result<Option<u64>, DaError> {
        let numbered = |dir: &Path, suffix: &str| -> Result<Option<u64>, DaError> {
            let mut best = None;
            for entry in fs::read_dir(dir).map_err(io(dir))? {
                let name = entry.map_err(io(dir))?.file_name();
                let number = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(suffix))
                    .and_then(|n| n.parse::<u64>().ok());
                best = best.max(number);
            }
            Ok(best)
        };
        let mut buckets: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = entry.map_err(io(&self.dir))?.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                buckets.push(n);
            }
        }
        buckets.sort_unstable();
        // The newest bucket may hold no finished batch yet (only a temporary file).
        for bucket in buckets.iter().rev() {
            let suffix = format!(".{}", self.ext);
            if let Some(n) = numbered(&self.dir.join(format!("{bucket:08}")), &suffix)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

impl DaSink for LocalArchive {
    fn put(&self, number: u64, batch: &[u8]) -> Result<DaPointer, DaError> {
        let path = self.path(number);
        match fs::read(&path) {
            Ok(existing) if existing == batch => return Ok(DaPointer::default()),
            Ok(_) if self.ext == "batch" => return Err(DaError::Conflict(number)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DaError::Io { path, source: e }),
        }
        let dir = path.parent().expect("a bucket directory");
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(batch).map_err(io(&tmp))?;
        file.sync_data().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(DaPointer::default())
    }
}

impl DaSource for LocalArchive {
    fn get(&self, number: u64, _: &DaPointer) -> Result<Option<Vec<u8>>, DaError> {
        let path = self.path(number);
        match fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_BATCH_BYTES as u64 => {
                return Err(DaError::Malformed {
                    number,
                    what: format!("{} bytes is over the limit", meta.len()),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DaError::Io { path, source: e }),
        }
        fs::read(&path).map(Some).map_err(|source| DaError::Io { path, source })
    }
}

/// A client of the EigenDA proxy's REST API in standard commitment mode:
/// `POST /put?commitment_mode=standard` with the bytes returns the certificate,
/// `GET /get/0x{certificate}?commitment_mode=standard` returns the bytes, and 503 means
/// "unavailable, fail over or retry".
#[derive(Clone, Debug)]
pub struct EigenDaProxy {
    base: String,
    client: reqwest::blocking::Client,
}

impl EigenDaProxy {
    /// A client of the proxy at `base` (e.g. `http://127.0.0.1:3100`).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, DaError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| DaError::Proxy(e.to_string()))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), client })
    }

    fn fail(status: reqwest::StatusCode, body: &[u8]) -> DaError {
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return DaError::Unavailable;
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        DaError::Proxy(format!("HTTP {status}: {text}"))
    }
}

impl DaSink for EigenDaProxy {
    fn put(&self, _number: u64, batch: &[u8]) -> Result<DaPointer, DaError> {
        let response = self
            .client
            .post(format!("{}/put?commitment_mode=standard", self.base))
            .header("content-type", "application/octet-stream")
            .body(batch.to_vec())
            .send()
            .map_err(|e| DaError::Proxy(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().map_err(|e| DaError::Proxy(e.to_string()))?;
        if !status.is_success() {
            return Err(Self::fail(status, &body));
        }
        if body.is_empty() {
            return Err(DaError::Proxy("empty certificate".into()));
        }
        Ok(DaPointer(body.to_vec().into()))
    }
}

impl DaSource for EigenDaProxy {
    fn get(&self, number: u64, pointer: &DaPointer) -> Result<Option<Vec<u8>>, DaError> {
        if pointer.0.is_empty() {
            return Err(DaError::NoPointer(number));
        }
        let url =
            format!("{}/get/0x{}?commitment_mode=standard", self.base, hex::encode(&pointer.0));
        let response = self.client.get(url).send().map_err(|e| DaError::Proxy(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if let Some(len) = response.content_length()
            && len > MAX_BATCH_BYTES as u64
        {
            return Err(DaError::Malformed {
                number,
                what: format!("{len} bytes is over the limit"),
            });
        }
        let body = response.bytes().map_err(|e| DaError::Proxy(e.to_string()))?;
        if !status.is_success() {
            return Err(Self::fail(status, &body));
        }
        Ok(Some(body.to_vec()))
    }
}

/// The sequencer's record of where each batch went (block number → pointer), an append-only
/// file of RLP records, so pointers survive a restart and can be served to followers.
#[derive(Debug)]
pub struct PointerLog {
    path: PathBuf,
    file: fs::File,
    entries: std::collections::BTreeMap<u64, DaPointer>,
}

#[derive(RlpEncodable, RlpDecodable)]
struct PointerRecord {
    number: u64,
    pointer: DaPointer,
}

impl PointerLog {
    /// Opens (or creates) the log at `path`; a torn last record (a crash mid-append) is
    /// dropped.
    pub fn open(path: &Path) -> Result<Self, DaError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(path)(e)),
        };
        let mut entries = std::collections::BTreeMap::new();
        let mut rest = &bytes[..];
        let mut good = 0;
        while !rest.is_empty() {
            match PointerRecord::decode(&mut rest) {
                Ok(r) => {
                    entries.insert(r.number, r.pointer);
                    good = bytes.len() - rest.len();
                }
                Err(_) => break,
            }
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
        if good < bytes.len() {
            file.set_len(good as u64).map_err(io(path))?;
        }
        Ok(Self { path: path.to_path_buf(), file, entries })
    }

    /// Records where block `number`'s batch went (durably).
    pub fn record(&mut self, number: u64, pointer: DaPointer) -> Result<(), DaError> {
        let mut out = Vec::new();
        PointerRecord { number, pointer: pointer.clone() }.encode(&mut out);
        self.file.write_all(&out).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.entries.insert(number, pointer);
        Ok(())
    }

    /// Where block `number`'s batch went.
    pub fn get(&self, number: u64) -> Option<&DaPointer> {
        self.entries.get(&number)
    }

    /// The highest block recorded.
    pub fn last(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests;
