//! Following over libp2p: gossip applied as it arrives, gaps filled by asking a peer for whole
//! DA batches, invalid envelopes rejected (which strikes the peer that sent them).

use std::{
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use p2p::{Event, P2p, Verdict};

use crate::{FollowError, Follower, Offer};

/// How often a quiet follower asks a peer whether a newer block exists.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Asks peers for the batches from the follower's next block on, until one is missing;
/// returns how many were applied. No connected peer is not an error: nothing is applied.
pub fn catch_up_network(follower: &mut Follower, net: &P2p) -> Result<u64, FollowError> {
    let mut applied = 0;
    loop {
        let number = follower.next_block();
        match net.request_batch(number) {
            Ok(Some(bytes)) => {
                follower.offer_batch(number, &bytes)?;
                applied += 1;
            }
            Ok(None) => return Ok(applied),
            Err(err) => {
                tracing::debug!(%err, block = number, "batch request failed");
                return Ok(applied);
            }
        }
    }
}

/// Follows the network until `done` says so. Returns an error the follower cannot go on from
/// by itself: a state-root mismatch (or a diff that does not decode although the sequencer
/// signed it), after which the caller re-syncs.
pub fn follow_network(
    follower: &mut Follower,
    net: &P2p,
    events: &Receiver<Event>,
    mut done: impl FnMut(&Follower) -> bool,
) -> Result<(), FollowError> {
    catch_up_network(follower, net)?;
    let mut last_probe = Instant::now();
    while !done(follower) {
        match events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Message { data, id, source, .. }) => {
                let verdict = match follower.offer(&data) {
                    Ok(Offer::Applied) => Verdict::Accept,
                    Ok(Offer::Stale) => Verdict::Ignore,
                    Ok(Offer::Ahead) => {
                        net.report(id, source, Verdict::Ignore);
                        catch_up_network(follower, net)?;
                        continue;
                    }
                    Err(FollowError::Envelope(err)) => {
                        tracing::warn!(%source, %err, "invalid envelope from a peer");
                        metrics::counter!("fullnode_rejected_envelopes_total").increment(1);
                        Verdict::Reject
                    }
                    // Signed by the sequencer but not continuing this node's chain (a fork
                    // after a sequencer restart would look so): not the peer's fault; the
                    // batches decide.
                    Err(err @ FollowError::OutOfOrder { .. }) => {
                        tracing::warn!(%err, "envelope does not continue the chain");
                        net.report(id, source, Verdict::Ignore);
                        catch_up_network(follower, net)?;
                        continue;
                    }
                    Err(err) => {
                        net.report(id, source, Verdict::Ignore);
                        return Err(err);
                    }
                };
                net.report(id, source, verdict);
            }
            Ok(Event::Connected(peer)) => {
                tracing::info!(%peer, "peer connected");
                catch_up_network(follower, net)?;
            }
            Ok(Event::Banned(peer)) => {
                tracing::warn!(%peer, "peer banned for invalid envelopes");
            }
            Err(RecvTimeoutError::Timeout) => {
                if last_probe.elapsed() >= PROBE_INTERVAL {
                    catch_up_network(follower, net)?;
                    last_probe = Instant::now();
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(FollowError::NetworkStopped);
            }
        }
    }
    Ok(())
}
