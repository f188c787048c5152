//! The sequencer's configuration: a TOML file with one table per section, every key documented
//! here with its unit and default, validated at load with errors that name the key.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use alloy_primitives::Address;
use revm::primitives::hardfork::SpecId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Smallest NOMT cache accepted, MiB (NOMT panics on a page cache below 1 MiB).
const MIN_NOMT_CACHE_MIB: usize = 16;
/// Largest NOMT cache accepted, MiB (4 TiB: more than any host this runs on has).
const MAX_NOMT_CACHE_MIB: usize = 4 << 20;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (it names the key).
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `blocks.mini_block_interval`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[chain]`: identity and rules of the chain.
    pub chain: ChainConfig,
    /// `[blocks]`: block production.
    pub blocks: BlocksConfig,
    /// `[pool]`: transaction admission.
    pub pool: PoolConfig,
    /// `[rpc]`: the JSON-RPC server.
    pub rpc: RpcConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[storage]`: where and how data is kept.
    pub storage: StorageConfig,
    /// `[host]`: where threads run (see the `numa` crate and `tuning plan`).
    pub host: numa::HostConfig,
    /// `[memory]`: how state memory is placed (huge pages, nodes, shards).
    pub memory: numa::MemoryConfig,
    /// `[executor]`: the parallel execution engine.
    pub executor: ExecutorSection,
    /// `[jit]`: compiling hot contracts to native code (see the `jit` crate).
    pub jit: jit::JitConfig,
    /// `[feed]`: the signed output stream (mini-blocks, blocks, state diffs) and its data
    /// availability.
    pub feed: FeedConfig,
    /// `[p2p]`: gossiping the feed and serving batches over libp2p.
    pub p2p: P2pSection,
}

/// `[p2p]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pSection {
    /// Gossip every envelope and serve DA batches to followers. Needs `feed.da` on. Default
    /// true.
    pub enabled: bool,
    /// Listen multiaddrs. Default `["/ip4/0.0.0.0/tcp/30333", "/ip4/0.0.0.0/udp/30333/quic-v1"]`;
    /// `--dev` listens on 127.0.0.1 instead, where `fullnode --dev` looks.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to dial at start. Default none.
    pub bootstrap: Vec<String>,
    /// The node's libp2p identity (an ed25519 key, libp2p's protobuf encoding), created when
    /// missing. Default `<datadir>/p2p.key`.
    pub key_file: Option<PathBuf>,
}

impl Default for P2pSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec!["/ip4/0.0.0.0/tcp/30333".into(), "/ip4/0.0.0.0/udp/30333/quic-v1".into()],
            bootstrap: Vec::new(),
            key_file: None,
        }
    }
}

/// Where each EVM block's signed envelopes are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DaBackend {
    /// A local archive directory (embedded, no service).
    #[default]
    Archive,
    /// The EigenDA proxy's REST API (`feed.eigenda_url`).
    Eigenda,
    /// Nowhere: followers can only follow live. For throwaway chains.
    Off,
}

/// `[feed]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// File holding the key envelopes are signed with (32 bytes, hex); followers are
    /// configured with its address. Created with a random key at first start when missing.
    /// Default `<datadir>/feed.key`. `--dev` signs with the public dev key instead (see
    /// `feed::Signer::dev`), so that `fullnode --dev` needs no flag.
    pub signer_key_file: Option<PathBuf>,
    /// Data availability backend: `"archive"`, `"eigenda"` or `"off"`. Default `"archive"`.
    pub da: DaBackend,
    /// Archive directory. Default `<datadir>/archive`.
    pub archive_dir: Option<PathBuf>,
    /// EigenDA proxy base URL, e.g. `"http://127.0.0.1:3100"`; required when
    /// `da = "eigenda"`. Default none.
    pub eigenda_url: Option<String>,
    /// Timeout of one EigenDA proxy request. Default `"30s"`.
    #[serde(with = "duration_str")]
    pub eigenda_timeout: Duration,
    /// Build a witness of every EVM block (the pre-state it read and wrote with a NOMT proof
    /// against the parent root, for provers) and store it beside the archive's batches, in
    /// `archive_dir`. Default true.
    pub witnesses: bool,
    /// Addresses of the provers whose verdicts are recorded (their verdict keys). Empty: any
    /// prover's signed verdict is recorded under its address. Default empty.
    pub provers: Vec<alloy_primitives::Address>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            signer_key_file: None,
            da: DaBackend::Archive,
            archive_dir: None,
            eigenda_url: None,
            eigenda_timeout: Duration::from_secs(30),
            witnesses: true,
            provers: Vec::new(),
        }
    }
}

/// `[executor]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSection {
    /// Worker threads; 0 takes the executor CPUs of one node of the placement plan (all CPUs
    /// when nothing is pinned), 1 executes sequentially. Default 0. Batches of cheap
    /// transactions run sequentially anyway (`min_parallel_gas`).
    pub threads: usize,
    /// Run a batch sequentially when one dependency group (a sender's transactions, or calls
    /// to a contract learned to conflict) holds more than this percentage of it. Default 50.
    pub sequential_share_percent: u8,
    /// Batches with fewer transactions run sequentially. Default 16.
    pub min_parallel: usize,
    /// Batches whose transactions are predicted (from the gas each called contract used
    /// before) to use less gas than this on average run sequentially; 0 never. Default
    /// 1 000 000.
    pub min_parallel_gas: u64,
}

impl Default for ExecutorSection {
    fn default() -> Self {
        Self {
            threads: 0,
            sequential_share_percent: 50,
            min_parallel: 16,
            min_parallel_gas: 1_000_000,
        }
    }
}

/// `[chain]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    /// EIP-155 chain id. Default 31337 (as anvil and hardhat).
    pub chain_id: u64,
    /// Hard fork whose rules apply, by revm's name (`cancun`, `prague`, `osaka`, …).
    /// Default `osaka`, the newest that revm 43 supports as stable.
    pub hardfork: String,
    /// Address credited with priority fees. Default the zero address.
    pub beneficiary: Address,
    /// Genesis `alloc` JSON (geth format; a whole genesis file also works). Required outside
    /// `--dev`; in dev mode the default is the ten dev accounts with 10 000 ETH each.
    pub genesis: Option<PathBuf>,
    /// Base fee of block 1, in wei. Default 1 000 000 000 (1 gwei).
    pub initial_base_fee: u64,
    /// Gas limit of one EVM block (all its mini-blocks together), in gas. Default 3 000 000 000.
    pub block_gas_limit: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            chain_id: 31337,
            hardfork: "osaka".into(),
            beneficiary: Address::ZERO,
            genesis: None,
            initial_base_fee: 1_000_000_000,
            block_gas_limit: 3_000_000_000,
        }
    }
}

impl ChainConfig {
    /// The hard fork as revm's [`SpecId`].
    pub fn spec(&self) -> Result<SpecId, ConfigError> {
        parse_spec(&self.hardfork).ok_or_else(|| ConfigError::Invalid {
            key: "chain.hardfork",
            reason: format!(
                "unknown hard fork {:?} (expected one of: cancun, prague, osaka)",
                self.hardfork
            ),
        })
    }
}

use chain_rpc::evm::parse_spec;

/// `[blocks]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksConfig {
    /// Longest time between mini-blocks while transactions wait (`"10ms"`, `"1s"`, `"500us"`).
    /// A mini-block seals earlier when the executor is idle and transactions are ready, so a
    /// lone transaction does not wait out the tick. Default `"10ms"`.
    #[serde(with = "duration_str")]
    pub mini_block_interval: Duration,
    /// Time between EVM blocks, each holding the mini-blocks sealed in that time. Default `"1s"`.
    #[serde(with = "duration_str")]
    pub evm_block_interval: Duration,
    /// Shortest time from one mini-block's seal to the next one's start while fewer than
    /// `max_mini_block_txs` transactions wait: under a trickle of transactions, each
    /// mini-block then holds those that arrived meanwhile instead of one or two, sharing its
    /// fixed costs (WAL fsync, diff, signed envelope). A transaction that arrives after the
    /// builder was idle that long starts at once. `"0ms"`: start as soon as any is ready.
    #[serde(with = "duration_str")]
    pub mini_block_gather: Duration,
    /// Most transactions in one mini-block. Default 10 000.
    pub max_mini_block_txs: usize,
}

impl Default for BlocksConfig {
    fn default() -> Self {
        Self {
            mini_block_interval: Duration::from_millis(10),
            evm_block_interval: Duration::from_secs(1),
            mini_block_gather: Duration::ZERO,
            max_mini_block_txs: 10_000,
        }
    }
}

/// `[pool]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// How far ahead of an account's next nonce a transaction may be and still wait in the
    /// pool. Default 64.
    pub max_nonce_gap: u64,
    /// Most transactions the pool holds. Default 200 000.
    pub capacity: usize,
    /// Largest accepted transaction, in bytes of its EIP-2718 encoding. Default 131 072.
    pub max_tx_size: usize,
    /// Fee increase, in percent, a transaction needs to replace one with the same nonce.
    /// Default 10.
    pub price_bump_percent: u64,
    /// Priority fee suggested by `eth_maxPriorityFeePerGas`, in wei. Default 1 000 000 000.
    pub suggested_priority_fee: u64,
    /// Priority lane: transactions from these senders go first in every mini-block.
    /// Default empty.
    pub priority_senders: Vec<Address>,
    /// Priority lane: transactions calling these contracts go first. Default empty.
    pub priority_targets: Vec<Address>,
    /// Priority lane: transactions paying at least this effective tip per gas (wei) go first;
    /// 0 turns the rule off. Default 0.
    pub priority_min_tip: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_nonce_gap: 64,
            capacity: 200_000,
            max_tx_size: 128 * 1024,
            price_bump_percent: 10,
            suggested_priority_fee: 1_000_000_000,
            priority_senders: Vec::new(),
            priority_targets: Vec::new(),
            priority_min_tip: 0,
        }
    }
}

/// `[rpc]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// Address of the HTTP + WebSocket server. Default `127.0.0.1:8545`.
    pub addr: SocketAddr,
    /// Largest request body, in bytes. Default 10 485 760.
    pub max_request_size: u32,
    /// Largest response body, in bytes. Default 104 857 600.
    pub max_response_size: u32,
    /// Most calls in one batch request. Default 1 000.
    pub max_batch_len: u32,
    /// Most concurrent connections. Default 1 000.
    pub max_connections: u32,
    /// How long `realtime_sendRawTransaction` and `eth_sendRawTransactionSync` wait for the
    /// receipt by default (`"10s"`). Default `"10s"`.
    #[serde(with = "duration_str")]
    pub realtime_timeout: Duration,
    /// Gas cap for `eth_call`, `eth_estimateGas` and `eth_createAccessList`. Default 50 000 000.
    pub gas_cap: u64,
    /// Most blocks one `eth_getLogs` may scan. Default 10 000.
    pub max_logs_range: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8545".parse().expect("valid literal"),
            max_request_size: 10 * 1024 * 1024,
            max_response_size: 100 * 1024 * 1024,
            max_batch_len: 1_000,
            max_connections: 1_000,
            realtime_timeout: Duration::from_secs(10),
            gas_cap: 50_000_000,
            max_logs_range: 10_000,
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus text at `http://ADDR/metrics`. Default true.
    pub enabled: bool,
    /// Address of the metrics endpoint. Default `127.0.0.1:9100`.
    pub addr: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, addr: "127.0.0.1:9100".parse().expect("valid literal") }
    }
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory (WAL and NOMT database). Default: `./sequencer-data`; in `--dev` mode a
    /// fresh temporary directory, removed at exit.
    pub datadir: Option<PathBuf>,
    /// NOMT hash-table buckets (4 KiB pages each; size it for the state). Default 16 384.
    pub nomt_buckets: u32,
    /// NOMT commit threads. Default 1.
    pub nomt_commit_concurrency: usize,
    /// NOMT io_uring worker threads. Default 3 (NOMT's own default).
    pub nomt_io_workers: usize,
    /// NOMT's cache of trie pages, MiB. A page missing from it is read from disk (O_DIRECT)
    /// when a block touches it; the whole page tree takes about 150 bytes per key at 10 M
    /// keys. Default 256 (NOMT's own default).
    pub nomt_page_cache_mib: usize,
    /// NOMT's cache of leaf nodes (keys and values), MiB; the leaves take about 200 bytes per
    /// key. Default 256 (NOMT's own default).
    pub nomt_leaf_cache_mib: usize,
    /// fsync the WAL before receipts are released. Turning it off loses acknowledged
    /// transactions on power loss; only for throwaway chains. Default true.
    pub fsync: bool,
    /// Write a checkpoint (the whole state) every this many EVM blocks, so that a restart
    /// replays only the WAL after it; 0 turns checkpoints off. Default 600 (10 min at 1 s).
    pub checkpoint_interval: u64,
}

impl StorageConfig {
    /// Bytes NOMT's page and leaf caches may take.
    pub fn nomt_cache_bytes(&self) -> u64 {
        (self.nomt_page_cache_mib as u64 + self.nomt_leaf_cache_mib as u64) << 20
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            datadir: None,
            nomt_buckets: 16_384,
            nomt_commit_concurrency: 1,
            nomt_io_workers: 3,
            nomt_page_cache_mib: 256,
            nomt_leaf_cache_mib: 256,
            fsync: true,
            checkpoint_interval: 600,
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let config: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.into(), source })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        self.chain.spec()?;
        if self.chain.chain_id == 0 {
            return invalid("chain.chain_id", "must be greater than 0");
        }
        if self.chain.block_gas_limit < 21_000 {
            return invalid("chain.block_gas_limit", "must be at least 21000");
        }
        if self.blocks.mini_block_interval.is_zero() {
            return invalid("blocks.mini_block_interval", "must be greater than 0");
        }
        if self.blocks.evm_block_interval < self.blocks.mini_block_interval {
            return invalid(
                "blocks.evm_block_interval",
                "must be at least blocks.mini_block_interval",
            );
        }
        if self.blocks.mini_block_gather >= self.blocks.mini_block_interval {
            return invalid(
                "blocks.mini_block_gather",
                "must be less than blocks.mini_block_interval",
            );
        }
        if self.blocks.max_mini_block_txs == 0 {
            return invalid("blocks.max_mini_block_txs", "must be greater than 0");
        }
        if self.pool.capacity == 0 {
            return invalid("pool.capacity", "must be greater than 0");
        }
        if self.pool.max_tx_size < 128 {
            return invalid("pool.max_tx_size", "must be at least 128 bytes");
        }
        if self.rpc.max_batch_len == 0 {
            return invalid("rpc.max_batch_len", "must be greater than 0");
        }
        if self.rpc.gas_cap < 21_000 {
            return invalid("rpc.gas_cap", "must be at least 21000");
        }
        if self.feed.da == DaBackend::Eigenda {
            match &self.feed.eigenda_url {
                None => return invalid("feed.eigenda_url", "required when feed.da = \"eigenda\""),
                Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                    return invalid("feed.eigenda_url", "must be an http:// or https:// URL");
                }
                Some(_) => {}
            }
        }
        for addr in self.p2p.listen.iter().chain(&self.p2p.bootstrap) {
            if addr.parse::<p2p::Address>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "p2p.listen / p2p.bootstrap",
                    reason: format!("{addr:?} is not a multiaddr"),
                });
            }
        }
        if self.p2p.enabled && self.feed.da == DaBackend::Off {
            return invalid("p2p.enabled", "needs feed.da on (the feed is what it gossips)");
        }
        if self.feed.eigenda_timeout.is_zero() {
            return invalid("feed.eigenda_timeout", "must be greater than 0");
        }
        if self.storage.nomt_buckets < 64 {
            return invalid("storage.nomt_buckets", "must be at least 64");
        }
        if self.storage.nomt_commit_concurrency == 0 {
            return invalid("storage.nomt_commit_concurrency", "must be at least 1");
        }
        if self.storage.nomt_io_workers == 0 {
            return invalid("storage.nomt_io_workers", "must be at least 1");
        }
        for (key, mib) in [
            ("storage.nomt_page_cache_mib", self.storage.nomt_page_cache_mib),
            ("storage.nomt_leaf_cache_mib", self.storage.nomt_leaf_cache_mib),
        ] {
            if !(MIN_NOMT_CACHE_MIB..=MAX_NOMT_CACHE_MIB).contains(&mib) {
                return invalid(key, "must be between 16 and 4194304 (4 TiB)");
            }
        }
        if self.executor.sequential_share_percent > 100 {
            return invalid("executor.sequential_share_percent", "must be at most 100");
        }
        if let Err((key, reason)) = jit::JitRuntime::validate(&self.jit) {
            return invalid(key, reason);
        }
        if let Err((key, reason)) = self.memory.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        Ok(())
    }
}

/// Durations written as `"10ms"`, `"1s"`, `"250us"`, `"2m"`.
pub mod duration_str {
    use super::*;

    /// Parses `"<integer><unit>"` with unit `us`, `ms`, `s` or `m`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let value = u64::from_str(digits)
            .map_err(|_| format!("{text:?} is not a duration like \"10ms\" or \"1s\""))?;
        match unit.trim() {
            "us" | "µs" => Ok(Duration::from_micros(value)),
            "ms" => Ok(Duration::from_millis(value)),
            "s" => Ok(Duration::from_secs(value)),
            "m" => Ok(Duration::from_secs(value * 60)),
            other => Err(format!("unknown duration unit {other:?} in {text:?} (us, ms, s, m)")),
        }
    }

    /// Formats a duration in the largest unit that divides it.
    pub fn format(d: &Duration) -> String {
        let us = d.as_micros();
        if us.is_multiple_of(1_000_000) {
            format!("{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            format!("{}ms", us / 1_000)
        } else {
            format!("{us}us")
        }
    }

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let config = Config::default();
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.blocks.mini_block_interval, Duration::from_millis(10));
        assert_eq!(back.chain.spec().unwrap(), SpecId::OSAKA);
    }

    #[test]
    fn errors_name_the_key() {
        let bad: Config = toml::from_str("[blocks]\nmini_block_interval = \"0ms\"").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("blocks.mini_block_interval"), "{err}");
        let bad: Config = toml::from_str("[blocks]\nmini_block_gather = \"10ms\"").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("blocks.mini_block_gather"), "{err}");
        let good: Config = toml::from_str("[blocks]\nmini_block_gather = \"1ms\"").unwrap();
        good.validate().unwrap();
        assert_eq!(good.blocks.mini_block_gather, Duration::from_millis(1));

        let unknown = toml::from_str::<Config>("[blocks]\nmini_block_intervl = \"1ms\"");
        assert!(unknown.unwrap_err().to_string().contains("mini_block_intervl"));

        let fork: Config = toml::from_str("[chain]\nhardfork = \"byzantium2\"").unwrap();
        assert!(fork.validate().unwrap_err().to_string().contains("chain.hardfork"));

        let purge: Config = toml::from_str("[memory]\nallocator_purge_ms = -2").unwrap();
        assert!(purge.validate().unwrap_err().to_string().contains("memory.allocator_purge_ms"));
        let purge: Config = toml::from_str("[memory]\nallocator_purge_ms = 250").unwrap();
        purge.validate().unwrap();

        for key in ["nomt_page_cache_mib", "nomt_leaf_cache_mib"] {
            let tiny: Config = toml::from_str(&format!("[storage]\n{key} = 8")).unwrap();
            let error = tiny.validate().unwrap_err().to_string();
            assert!(error.contains(&format!("storage.{key}")), "{error}");
            let big: Config = toml::from_str(&format!("[storage]\n{key} = 65536")).unwrap();
            big.validate().unwrap();
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration_str::parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(duration_str::parse("2s").unwrap(), Duration::from_secs(2));
        assert!(duration_str::parse("10 parsecs").is_err());
        assert!(duration_str::parse("ms").is_err());
    }

    #[test]
    fn configs_written_by_tuning_plan_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tuning");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "toml") {
                let config = Config::load(&entry.path()).unwrap_or_else(|e| panic!("{e}"));
                assert!(config.memory.shards.is_power_of_two());
                loaded += 1;
            }
        }
        assert_eq!(loaded, 3);
        let server = Config::load(&dir.join("two-socket-128.server.toml")).unwrap();
        assert_eq!(server.host.profile, numa::Profile::Server);
        assert_eq!(server.memory.huge_pages, numa::HugePages::Mib2);
        assert_eq!(server.storage.nomt_io_workers, 8);
        assert_eq!(server.storage.nomt_cache_bytes(), (204_800 + 256_000) << 20);
    }
}
