//! The prover on the network: it pulls each block's batch and witness from a peer (the
//! sequencer) by request-response, verifies blocks on a pool of workers as they come (in any
//! order: each carries what it needs), and sends each verdict, signed with its own key, back
//! over request-response.

use std::{
    sync::{Arc, mpsc},
    time::Duration,
};

use alloy_primitives::{Address, Bytes};
use feed::{BlockVerdict, Signer};
use p2p::P2p;

use crate::{BlockInput, ProofBackend, Verdict, archive::parse_batch};

/// How the prover follows the chain.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The sequencer's feed address (envelopes must be signed by it).
    pub sequencer: Address,
    /// Chain id.
    pub chain_id: u64,
    /// First block to verify (at least 1).
    pub from: u64,
    /// Last block, if it should stop.
    pub to: Option<u64>,
}

/// A verdict and whether the sequencer acknowledged it.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The verdict.
    pub verdict: Verdict,
    /// Acknowledged by a peer that records verdicts.
    pub acknowledged: bool,
    /// The witness came by gossip (not by request).
    pub gossiped: bool,
}

/// Asks for `request` until a peer has it (or `stop` says to give up).
fn fetch(
    mut request: impl FnMut() -> Result<Option<Vec<u8>>, p2p::P2pError>,
    stop: &dyn Fn() -> bool,
) -> Option<Vec<u8>> {
    loop {
        match request() {
            Ok(Some(bytes)) => return Some(bytes),
            Ok(None) | Err(p2p::P2pError::Request(_)) => {}
            Err(_) => return None,
        }
        if stop() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Follows the chain from `config.from`, verifying every block with `backend` on `pool` and
/// sending the signed verdicts; each is also handed to `report`. A block's witness is taken
/// from `gossiped` (witnesses received on [`p2p::Topic::Witnesses`]) when there, else asked
/// for; a gossiped witness that fails as a witness is replaced by the one the sequencer
/// serves before the verdict is given (gossip is unsigned). Returns after `config.to` (when
/// given) or when the network stops; `stop` ends it early.
#[allow(clippy::too_many_arguments)]
pub fn follow(
    net: &P2p,
    backend: Arc<dyn ProofBackend>,
    key: &Signer,
    config: &FollowConfig,
    pool: &rayon::ThreadPool,
    gossiped: &(dyn Fn(u64) -> Option<Vec<u8>> + Sync),
    report: impl Fn(&Sent) + Send + Sync,
    stop: &dyn Fn() -> bool,
) {
    let parse = |n: u64, bytes: &[u8]| parse_batch(n, bytes, config.sequencer, config.chain_id);
    let from = config.from.max(1);
    let Some(parent) = fetch(|| net.request_batch(from - 1), stop) else { return };
    let (mut parent, _) = match parse(from - 1, &parent) {
        Ok(block) => block,
        Err(err) => {
            tracing::error!(%err, "cannot read the first parent block");
            return;
        }
    };
    let (done_tx, done_rx) = mpsc::channel::<Sent>();
    let report = &report;
    pool.in_place_scope(|scope| {
        let mut next = from;
        let mut in_flight = 0usize;
        let drain = |in_flight: &mut usize, wait: bool| {
            if wait
                && *in_flight > 0
                && let Ok(sent) = done_rx.recv()
            {
                *in_flight -= 1;
                report(&sent);
            }
            while let Ok(sent) = done_rx.try_recv() {
                *in_flight -= 1;
                report(&sent);
            }
        };
        while config.to.is_none_or(|to| next <= to) && !stop() {
            // Keep the workers fed, no further ahead than twice their number.
            while in_flight >= 2 * pool.current_num_threads() {
                drain(&mut in_flight, true);
            }
            drain(&mut in_flight, false);
            let Some(bytes) = fetch(|| net.request_batch(next), stop) else { break };
            let (header, txs) = match parse(next, &bytes) {
                Ok(block) => block,
                Err(err) => {
                    tracing::warn!(block = next, %err, "batch refused; asking again");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            if header.parent_hash != parent.hash_slow() {
                tracing::warn!(block = next, "batch does not continue the chain; asking again");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let (witness, from_gossip) = match gossiped(next) {
                Some(witness) => (witness, true),
                None => match fetch(|| net.request_witness(next), stop) {
                    Some(witness) => (witness, false),
                    None => break,
                },
            };
            let mut input = BlockInput {
                parent_root: parent.state_root,
                header: header.clone(),
                txs,
                witness: Bytes::from(witness),
            };
            parent = header;
            next += 1;
            in_flight += 1;
            let (backend, done_tx, net) = (backend.clone(), done_tx.clone(), net.clone());
            let chain_id = config.chain_id;
            scope.spawn(move |_| {
                let mut verdict = backend.verify(&input);
                if from_gossip
                    && matches!(verdict.outcome, Err(crate::Reason::Witness(_)))
                    && let Ok(Some(served)) = net.request_witness(input.header.number)
                {
                    input.witness = Bytes::from(served);
                    verdict = backend.verify(&input);
                }
                let signed = BlockVerdict {
                    chain_id,
                    block: verdict.block,
                    block_hash: verdict.block_hash,
                    parent_root: verdict.parent_root,
                    post_root: verdict.post_root,
                    valid: verdict.is_valid(),
                    reason: verdict
                        .outcome
                        .as_ref()
                        .err()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    backend: backend.name().to_string(),
                }
                .sign(key);
                let acknowledged = net.send_verdict(signed).unwrap_or(false);
                let _ = done_tx.send(Sent { verdict, acknowledged, gossiped: from_gossip });
            });
        }
        while in_flight > 0 {
            drain(&mut in_flight, true);
        }
    });
}
