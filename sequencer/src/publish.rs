//! The feed publisher: signs every mini-block and EVM block as an envelope (the `feed` crate)
//! and stores each EVM block's envelopes as one batch in the configured DA backend.
//!
//! The builder hands over each mini-block with its diff already encoded (the codec needs the
//! state before the diff lands); the root committer hands over each sealed block. Both go
//! through one channel to one thread, so signing and DA writes never hold up execution. A
//! batch that cannot be stored is retried until it is; the committer writes a checkpoint only
//! once DA holds every block up to it, so a crash never leaves a block that a restart would not
//! replay (and publish again: envelopes are deterministic, so the archive sees the same bytes).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use alloy_primitives::{B256, Bytes};
use feed::{
    Batch, BlockEnvelope, DaSink, DaSource, EigenDaProxy, Envelope, LocalArchive,
    MiniBlockEnvelope, PointerLog, Signer, TxRecord,
};
use p2p::{P2p, Topic};
use parking_lot::Mutex;

use crate::{
    chain::{MiniBlock, SealedBlock},
    config::{DaBackend, FeedConfig, P2pSection},
};

/// Reads block `n`'s batch back from DA (`None`: not there).
type BatchFn = Arc<dyn Fn(u64) -> Option<Vec<u8>> + Send + Sync>;

/// What the network serves besides batches: block witnesses, and where provers' verdicts go.
#[derive(Debug)]
pub struct Services {
    /// The witness store (`feed.witnesses`).
    pub witnesses: Option<LocalArchive>,
    /// Provers' verdicts.
    pub verdicts: Arc<crate::verdicts::Verdicts>,
}

/// The DA backend the config selects: where batches go, and how they are read back to serve
/// followers that catch up.
pub struct Da {
    sink: Box<dyn DaSink>,
    server: BatchFn,
    pointers: Option<Arc<Mutex<PointerLog>>>,
}

impl std::fmt::Debug for Da {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Da").finish_non_exhaustive()
    }
}

impl Da {
    /// Opens the backend of `config` (`None` when `feed.da = "off"`).
    pub fn open(config: &FeedConfig, datadir: &Path) -> Result<Option<Self>, PublishError> {
        match config.da {
            DaBackend::Off => Ok(None),
            DaBackend::Archive => {
                let archive = LocalArchive::open(
                    &config.archive_dir.clone().unwrap_or_else(|| datadir.join("archive")),
                )?;
                let reader = archive.clone();
                let server: BatchFn =
                    Arc::new(move |n| reader.get(n, &feed::DaPointer::default()).ok().flatten());
                Ok(Some(Self { sink: Box::new(archive), server, pointers: None }))
            }
            DaBackend::Eigenda => {
                let proxy = EigenDaProxy::new(
                    config.eigenda_url.as_deref().unwrap_or_default(),
                    config.eigenda_timeout,
                )?;
                let pointers =
                    Arc::new(Mutex::new(PointerLog::open(&datadir.join("da-pointers"))?));
                let (reader, log) = (proxy.clone(), pointers.clone());
                // A follower's request waits on the proxy; requests are rare (catching up).
                let server: BatchFn = Arc::new(move |n| {
                    let pointer = log.lock().get(n).cloned()?;
                    reader.get(n, &pointer).ok().flatten()
                });
                Ok(Some(Self { sink: Box::new(proxy), server, pointers: Some(pointers) }))
            }
        }
    }
}

/// The libp2p network of a sequencer: its handle and the runtime it runs on.
#[derive(Debug)]
pub struct Network {
    /// The handle.
    pub p2p: P2p,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Network {
    /// Starts the network for `section` (`None` when disabled or DA is off), serving batches
    /// from `da`. Gossip from other peers is not
    /// forwarded: the sequencer is where the feed starts.
    pub fn start(
        section: &P2pSection,
        da: Option<&Da>,
        datadir: &Path,
        dev: bool,
        chain_id: u64,
        services: Services,
    ) -> Result<Option<Self>, PublishError> {
        let Some(da) = da.filter(|_| section.enabled) else { return Ok(None) };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("p2p")
            .enable_all()
            .build()
            .map_err(|e| PublishError::P2p(p2p::P2pError::Setup(e.to_string())))?;
        let key = if dev {
            p2p::random_key()
        } else {
            load_or_create_p2p_key(
                &section.key_file.clone().unwrap_or_else(|| datadir.join("p2p.key")),
            )?
        };
        let parse = |list: &[String]| -> Vec<p2p::Address> {
            list.iter().filter_map(|a| a.parse().ok()).collect()
        };
        let mut listen = parse(&section.listen);
        if dev && section.listen == P2pSection::default().listen {
            listen = parse(&[
                "/ip4/127.0.0.1/tcp/30333".into(),
                "/ip4/127.0.0.1/udp/30333/quic-v1".into(),
            ]);
        }
        let batches = da.server.clone();
        let Services { witnesses, verdicts } = services;
        let server: p2p::Server = Arc::new(move |request| match request {
            p2p::Request::Batch(n) => batches(n),
            p2p::Request::Witness(n) => {
                witnesses.as_ref()?.get(n, &feed::DaPointer::default()).ok().flatten()
            }
            p2p::Request::Verdict(signed) => match verdicts.record(&signed) {
                Ok(_) => Some(vec![1]),
                Err(err) => {
                    tracing::warn!(%err, "verdict refused");
                    None
                }
            },
        });
        let server = Some(server);
        let config = p2p::P2pConfig { chain_id, listen, bootstrap: parse(&section.bootstrap) };
        let (p2p, events) = P2p::start(runtime.handle(), key, config, server)?;
        tracing::info!(peer_id = %p2p.peer_id(), "p2p started");
        let reporter = p2p.clone();
        std::thread::Builder::new()
            .name("p2p-events".into())
            .spawn(move || {
                for event in events {
                    if let p2p::Event::Message { id, source, .. } = event {
                        reporter.report(id, source, p2p::Verdict::Ignore);
                    }
                }
            })
            .map_err(|e| PublishError::P2p(p2p::P2pError::Setup(e.to_string())))?;
        Ok(Some(Self { p2p, runtime: Some(runtime) }))
    }

    /// Stops the network.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Reads the libp2p identity at `path`, or creates one there.
fn load_or_create_p2p_key(path: &Path) -> Result<p2p::Keypair, PublishError> {
    let err = |reason: String| PublishError::Key { path: path.to_path_buf(), reason };
    let (bytes, _) = read_or_create_secret(path, || {
        p2p::random_key().to_protobuf_encoding().map_err(|e| e.to_string())
    })?;
    p2p::Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string()))
}

/// The secret stored at `path`, or, when there is none, `fresh` written there first: readable
/// by the owner only, never over an existing file. The flag says it was created.
fn read_or_create_secret(
    path: &Path,
    fresh: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<(Vec<u8>, bool), PublishError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let err = |reason: String| PublishError::Key { path: path.to_path_buf(), reason };
    match std::fs::read(path) {
        Ok(bytes) => Ok((bytes, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = fresh().map_err(err)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok((bytes, true))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The signer key file.
    #[error("feed signer key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The DA backend.
    #[error(transparent)]
    Da(#[from] feed::DaError),
    /// The libp2p network.
    #[error(transparent)]
    P2p(#[from] p2p::P2pError),
}

/// What the publisher is told.
#[derive(Debug)]
pub enum FeedEvent {
    /// A sealed mini-block.
    MiniBlock {
        /// It.
        mini: Arc<MiniBlock>,
        /// The previous mini-block's hash.
        parent_hash: B256,
        /// Its EVM block's timestamp.
        timestamp: u64,
        /// Its EVM block's base fee.
        base_fee: u64,
        /// Its diff as a codec message.
        diff: Bytes,
    },
    /// A sealed EVM block (state root known).
    Block(Arc<SealedBlock>),
}

/// A handle to send events; cheap to clone.
#[derive(Clone, Debug)]
pub struct FeedSender(mpsc::Sender<FeedEvent>);

impl FeedSender {
    /// Queues an event (dropped only if the publisher has stopped).
    pub fn send(&self, event: FeedEvent) {
        let _ = self.0.send(event);
    }
}

/// The running publisher.
#[derive(Debug)]
pub struct Publisher {
    sender: Mutex<Option<FeedSender>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    archived: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// `u64::MAX` in [`Publisher::archived`]: no block stored yet.
const NONE_ARCHIVED: u64 = u64::MAX;

impl Publisher {
    /// Starts the publisher for `config`, or returns `None` when `feed.da = "off"`.
    pub fn start(
        config: &FeedConfig,
        da: Option<Da>,
        datadir: &Path,
        dev: bool,
        chain_id: u64,
        network: Option<P2p>,
    ) -> Result<Option<Self>, PublishError> {
        let Some(Da { sink, pointers, .. }) = da else { return Ok(None) };
        let signer = if dev {
            Signer::dev()
        } else {
            load_or_create_key(
                &config.signer_key_file.clone().unwrap_or_else(|| datadir.join("feed.key")),
            )?
        };
        tracing::info!(signer = %signer.address(), da = ?config.da, "feed publisher started");
        let (tx, rx) = mpsc::channel();
        let archived = Arc::new(AtomicU64::new(NONE_ARCHIVED));
        let stop = Arc::new(AtomicBool::new(false));
        // Witnesses are gossiped with their block's envelope, for provers.
        let witnesses = match (&network, config.witnesses) {
            (Some(_), true) => Some(LocalArchive::witnesses(
                &config.archive_dir.clone().unwrap_or_else(|| datadir.join("archive")),
            )?),
            _ => None,
        };
        let worker = Worker {
            signer,
            chain_id,
            sink,
            pointers,
            witnesses,
            pending: BTreeMap::new(),
            archived: archived.clone(),
            stop: stop.clone(),
            network,
        };
        let thread = std::thread::Builder::new()
            .name("feed-publisher".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| PublishError::Da(feed::DaError::Proxy(e.to_string())))?;
        Ok(Some(Self {
            sender: Mutex::new(Some(FeedSender(tx))),
            thread: Mutex::new(Some(thread)),
            archived,
            stop,
        }))
    }

    /// A sender for the builder and the committer.
    pub fn sender(&self) -> Option<FeedSender> {
        self.sender.lock().clone()
    }

    /// The highest block DA holds, as the committer's checkpoint gate reads it.
    pub fn archived(&self) -> ArchivedGate {
        ArchivedGate(self.archived.clone())
    }

    /// Publishes everything queued, then stops. Every sender must be dropped first (the
    /// builder and the committer have stopped). A batch DA keeps refusing is given up after a
    /// few more attempts: the block is after the last checkpoint, so a restart publishes it.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Release);
        self.sender.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// Reads how far DA has got (see [`Publisher::archived`]).
#[derive(Clone, Debug)]
pub struct ArchivedGate(Arc<AtomicU64>);

impl ArchivedGate {
    /// Waits up to `timeout` for DA to hold block `number`; false if it does not by then.
    pub fn wait_for(&self, number: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let at = self.0.load(Ordering::Acquire);
            if at != NONE_ARCHIVED && at >= number {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Reads the signer key at `path` (32 bytes as hex), or creates one there.
fn load_or_create_key(path: &Path) -> Result<Signer, PublishError> {
    let err = |reason: &str| PublishError::Key { path: path.to_path_buf(), reason: reason.into() };
    let (bytes, created) = read_or_create_secret(path, || {
        Ok(format!("0x{}\n", hex::encode(Signer::random().secret_bytes())).into_bytes())
    })?;
    let text = String::from_utf8(bytes).map_err(|_| err("expected 32 bytes as hex"))?;
    let secret: [u8; 32] = hex::decode(text.trim().trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err("expected 32 bytes as hex"))?;
    let signer = Signer::from_bytes(&secret).map_err(|_| err("not a valid secp256k1 key"))?;
    if created {
        tracing::warn!(path = %path.display(), address = %signer.address(), "created a new feed signer key");
    }
    Ok(signer)
}

struct Worker {
    signer: Signer,
    chain_id: u64,
    sink: Box<dyn DaSink>,
    pointers: Option<Arc<Mutex<PointerLog>>>,
    /// Where the committer stored each block's witness (it is there before the block's event).
    witnesses: Option<LocalArchive>,
    /// Signed mini-block envelopes of blocks not sealed yet, by block number.
    pending: BTreeMap<u64, Vec<(u64, Bytes)>>,
    archived: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    network: Option<P2p>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<FeedEvent>) {
        for event in rx {
            match event {
                FeedEvent::MiniBlock { mini, parent_hash, timestamp, base_fee, diff } => {
                    metrics::counter!("feed_diff_bytes_total").increment(diff.len() as u64);
                    let envelope = Envelope::MiniBlock(MiniBlockEnvelope {
                        chain_id: self.chain_id,
                        number: mini.number,
                        block_number: mini.block_number,
                        index: mini.index,
                        hash: mini.hash,
                        parent_hash,
                        sealed_at_ms: mini.sealed_at_ms,
                        timestamp,
                        base_fee,
                        txs: mini.txs.iter().map(|t| tx_record(t)).collect(),
                        diff,
                    });
                    let signed = envelope.sign(&self.signer);
                    metrics::counter!("feed_envelopes_total", "kind" => "mini_block").increment(1);
                    if let Some(network) = &self.network {
                        network.publish(Topic::MiniBlocks, signed.to_vec());
                    }
                    self.pending.entry(mini.block_number).or_default().push((mini.number, signed));
                }
                FeedEvent::Block(block) => self.publish_block(&block),
            }
        }
    }

    fn publish_block(&mut self, block: &SealedBlock) {
        let number = block.header.number;
        let minis = self.pending.remove(&number).unwrap_or_default();
        // Zero for a block without mini-blocks (genesis, an idle interval).
        let first_mini_block = minis.first().map_or(0, |(n, _)| *n);
        let envelope = Envelope::Block(Box::new(BlockEnvelope {
            chain_id: self.chain_id,
            header: block.header.clone(),
            first_mini_block,
            mini_blocks: minis.len() as u32,
        }));
        let mut envelopes: Vec<Bytes> = minis.into_iter().map(|(_, e)| e).collect();
        let signed = envelope.sign(&self.signer);
        if let Some(network) = &self.network {
            network.publish(Topic::Blocks, signed.to_vec());
            if let Some(witness) = self
                .witnesses
                .as_ref()
                .and_then(|w| w.get(number, &feed::DaPointer::default()).ok().flatten())
            {
                let mut message = number.to_be_bytes().to_vec();
                message.extend_from_slice(&witness);
                network.publish(Topic::Witnesses, message);
            }
        }
        envelopes.push(signed);
        metrics::counter!("feed_envelopes_total", "kind" => "block").increment(1);
        let batch = Batch { number, envelopes }.to_bytes();
        let mut backoff = Duration::from_millis(100);
        let mut attempts_while_stopping = 0;
        loop {
            let started = Instant::now();
            match self.sink.put(number, &batch) {
                Ok(pointer) => {
                    metrics::histogram!("feed_da_put_seconds").record(started.elapsed());
                    metrics::histogram!("feed_da_batch_bytes").record(batch.len() as f64);
                    if let Some(log) = &self.pointers
                        && let Err(err) = log.lock().record(number, pointer)
                    {
                        tracing::error!(%err, block = number, "DA pointer not recorded");
                    }
                    break;
                }
                Err(feed::DaError::Conflict(n)) => {
                    // A replay after a crash publishes again; different bytes mean the archive
                    // belongs to another chain or another history. Keep what is there.
                    tracing::error!(
                        block = n,
                        "DA archive holds a different batch for this block; keeping it"
                    );
                    metrics::counter!("feed_da_errors_total").increment(1);
                    break;
                }
                Err(err) => {
                    metrics::counter!("feed_da_errors_total").increment(1);
                    if self.stop.load(Ordering::Acquire) {
                        attempts_while_stopping += 1;
                        if attempts_while_stopping > 3 {
                            tracing::error!(%err, block = number, "DA write failed at shutdown; the next start publishes this block again");
                            return;
                        }
                    }
                    tracing::error!(%err, block = number, retry_in_ms = backoff.as_millis() as u64, "DA write failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.archived.store(number, Ordering::Release);
        metrics::gauge!("feed_da_archived_block").set(number as f64);
    }
}

fn tx_record(t: &crate::chain::ExecutedTx) -> TxRecord {
    TxRecord {
        raw: t.tx.raw.clone(),
        sender: t.tx.sender,
        success: t.success,
        gas_used: t.gas_used,
        effective_gas_price: t.effective_gas_price,
        contract_address: t.contract_address.unwrap_or_default(),
        logs: t.logs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_then_read_back_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.key");
        let first = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap().address(), first.address());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "0x1234").unwrap();
        assert!(matches!(load_or_create_key(&path), Err(PublishError::Key { .. })));

        let p2p_path = dir.path().join("p2p.key");
        let id = load_or_create_p2p_key(&p2p_path).unwrap().public().to_peer_id();
        assert_eq!(load_or_create_p2p_key(&p2p_path).unwrap().public().to_peer_id(), id);
        std::fs::write(&p2p_path, b"garbage").unwrap();
        assert!(matches!(load_or_create_p2p_key(&p2p_path), Err(PublishError::Key { .. })));
    }
}
