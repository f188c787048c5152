//! Starting the real `sequencer` binary and talking to it like a client would.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_network::EthereumWallet;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use sequencer::dev::DEV_ACCOUNTS;

pub(crate) const CHAIN_ID: u64 = 31337;

/// A sequencer process, killed when dropped.
pub(crate) struct Sequencer {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) addr: String,
    /// The multiaddrs its libp2p node listens on (with `/p2p/<peer id>`).
    pub(crate) p2p: Vec<String>,
    /// The data directory when the test gave none: removed when the test ends. (Dev mode's own
    /// temporary directory is removed only on a clean stop, and tests kill the process.)
    _datadir: Option<tempfile::TempDir>,
}

impl Sequencer {
    pub(crate) fn start(extra: &[&str]) -> Self {
        Self::start_in(None, extra)
    }

    pub(crate) fn start_in(datadir: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_logged(datadir, extra, None)
    }

    /// As [`Sequencer::start_in`], with stderr (the logs) written to `log` when given.
    pub(crate) fn start_logged(datadir: Option<&Path>, extra: &[&str], log: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sequencer"));
        cmd.args(["--dev", "--rpc-addr", "127.0.0.1:0"]);
        if !extra.contains(&"--p2p-listen") {
            // Tests run side by side: each on a free port, not the dev default.
            cmd.args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        if !extra.contains(&"--metrics-addr") {
            cmd.arg("--no-metrics");
        }
        let owned = match datadir {
            Some(_) => None,
            None => Some(tempfile::Builder::new().prefix("e2e-").tempdir().expect("temp dir")),
        };
        if let Some(dir) = datadir.or(owned.as_ref().map(|d| d.path())) {
            cmd.arg("--datadir").arg(dir);
        }
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        cmd.args(extra).stdout(Stdio::piped()).stderr(stderr);
        let mut child = cmd.spawn().expect("spawn sequencer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut p2p = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("p2p listening on ") {
                    p2p.push(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("RPC listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send((addr, std::mem::take(&mut p2p)));
                }
            }
        });
        let (addr, p2p) =
            rx.recv_timeout(Duration::from_secs(60)).expect("sequencer did not start");
        Self { child, url: format!("http://{addr}"), addr, p2p, _datadir: owned }
    }

    /// SIGKILL, no chance to flush anything.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    pub(crate) fn wallet_provider(&self, account: usize) -> impl Provider + Clone {
        let signer = signer(account);
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.url.parse().unwrap())
    }

    /// Sends a JSON-RPC call and returns the raw response object.
    pub(crate) async fn raw(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        rpc(&self.url, method, params).await
    }
}

/// Sends a JSON-RPC call to `url` and returns the raw response object.
pub(crate) async fn rpc(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("json")
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn signer(account: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&DEV_ACCOUNTS[account].1).unwrap()
}

pub(crate) fn address(account: usize) -> Address {
    DEV_ACCOUNTS[account].0
}

pub(crate) fn gwei(n: u64) -> u128 {
    u128::from(n) * 1_000_000_000
}

/// A signed EIP-1559 transfer, encoded. (One argument per field the tests vary.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn eip1559(
    account: usize,
    nonce: u64,
    to: Address,
    value: U256,
    gas: u64,
    max_fee: u128,
    tip: u128,
    chain_id: u64,
) -> Bytes {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: Bytes::new(),
    };
    sign(account, tx)
}

pub(crate) fn sign<T: SignableTransaction<alloy_primitives::Signature>>(
    account: usize,
    tx: T,
) -> Bytes
where
    TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let sig = signer(account).sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(sig).into();
    envelope.encoded_2718().into()
}

pub(crate) fn legacy(account: usize, nonce: u64, to: Address, chain_id: Option<u64>) -> Bytes {
    sign(
        account,
        TxLegacy {
            chain_id,
            nonce,
            gas_price: gwei(10),
            gas_limit: 21_000,
            to: TxKind::Call(to),
            value: U256::from(1),
            input: Bytes::new(),
        },
    )
}

pub(crate) fn hash_of(raw: &Bytes) -> B256 {
    alloy_primitives::keccak256(raw)
}

pub(crate) fn token_creation_code() -> Bytes {
    let hex = include_str!("../../../contracts/out/Token.bin").trim();
    Bytes::from(alloy_primitives::hex::decode(hex).unwrap())
}

/// A binary of another workspace package (`fullnode`, `prover`) of this build, built here if
/// the test run did not build it.
pub(crate) fn workspace_bin(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sequencer")).with_file_name(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    path
}
