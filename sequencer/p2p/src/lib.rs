//! `p2p`: the libp2p side of the feed — TCP and QUIC transports with noise and yamux, gossipsub
//! topics for the signed envelopes of mini-blocks and EVM blocks, and a request-response
//! protocol ([`Request`]) that serves a block's DA batch or witness by number (catching up
//! after downtime, proving) and takes provers' signed verdicts.
//!
//! The crate moves bytes; it does not judge them. Every received gossip message is handed to
//! the application, which opens the envelope (`feed::Envelope::open`) and reports the verdict
//! back ([`P2p::report`]); gossipsub forwards only accepted messages, and a peer whose messages
//! are rejected [`MAX_STRIKES`] times is disconnected and blacklisted. It links neither the
//! executor nor the JIT: the sequencer, the full node and the prover share it.

use std::{
    collections::HashMap,
    sync::{Arc, mpsc as std_mpsc},
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, identity, noise, ping,
    request_response::{self, ProtocolSupport, cbor},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

pub use libp2p::{Multiaddr as Address, PeerId as Peer, gossipsub::MessageId, identity::Keypair};

/// Rejected messages after which a peer is disconnected and blacklisted.
pub const MAX_STRIKES: u32 = 3;

/// Largest gossip message (a mini-block envelope).
pub const MAX_GOSSIP_BYTES: usize = 16 << 20;

/// Largest batch served over request-response (one EVM block's envelopes).
pub const MAX_BATCH_RESPONSE_BYTES: u64 = 256 << 20;

/// The gossip topics. Every node subscribes to the first two; provers also to
/// [`Topic::Witnesses`] ([`P2p::subscribe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Signed mini-block envelopes (transactions, receipts, diff): for realtime readers.
    MiniBlocks,
    /// Signed EVM block envelopes (header, state root).
    Blocks,
    /// Block witnesses, published with their block's envelope: the block number (8 bytes,
    /// big-endian) then the witness. Not signed: a witness is checked against its parent's
    /// state root by whoever uses it.
    Witnesses,
}

impl Topic {
    fn name(self, chain_id: u64) -> String {
        match self {
            Topic::MiniBlocks => format!("/sequencer/{chain_id}/mini-blocks/2"),
            Topic::Blocks => format!("/sequencer/{chain_id}/blocks/2"),
            Topic::Witnesses => format!("/sequencer/{chain_id}/witnesses/2"),
        }
    }
}

/// What the application decided about a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and new: forward it.
    Accept,
    /// Valid but not useful (a duplicate, an old one): drop it, no penalty.
    Ignore,
    /// Invalid (forged, malformed): drop it and strike the peer that sent it.
    Reject,
}

/// Something that happened on the network.
#[derive(Debug)]
pub enum Event {
    /// A gossip message; answer with [`P2p::report`].
    Message {
        /// Its topic.
        topic: Topic,
        /// Its bytes.
        data: Vec<u8>,
        /// Its id, for the report.
        id: MessageId,
        /// The peer that forwarded it, for the report.
        source: PeerId,
    },
    /// A peer connected.
    Connected(PeerId),
    /// A peer was disconnected and blacklisted for sending invalid messages.
    Banned(PeerId),
}

/// What a peer can ask over the request-response protocol.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// Block `n`'s DA batch (its signed envelopes).
    Batch(u64),
    /// Block `n`'s witness.
    Witness(u64),
    /// A prover's signed verdict; answered with an acknowledgement by a node that records
    /// verdicts (the sequencer), with nothing by others.
    Verdict(Vec<u8>),
}

/// Answers requests (`None`: not here). It may block (read disk, call a DA service): it runs
/// off the network task.
pub type Server = Arc<dyn Fn(Request) -> Option<Vec<u8>> + Send + Sync>;

/// Largest request (a signed verdict).
pub const MAX_REQUEST_BYTES: u64 = 64 << 10;

/// Settings.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Chain id (part of every topic and protocol name).
    pub chain_id: u64,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/30333`, `/ip4/0.0.0.0/udp/30333/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// Transport, behaviour or listener setup.
    #[error("libp2p: {0}")]
    Setup(String),
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// A request failed (no peer answered, timeout, …).
    #[error("request failed: {0}")]
    Request(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    batches: cbor::Behaviour<Request, Option<Vec<u8>>>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// A batch served, on its way back to the requester.
type Answer = (request_response::ResponseChannel<Option<Vec<u8>>>, Option<Vec<u8>>);

/// Where the answer to a batch request goes.
type BatchReply = oneshot::Sender<Result<Option<Vec<u8>>, P2pError>>;

enum Command {
    Publish(Topic, Vec<u8>),
    Subscribe(Topic),
    Report(MessageId, PeerId, Verdict),
    Request(Option<PeerId>, Request, BatchReply),
    Listening(oneshot::Sender<Vec<Multiaddr>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
}

/// A handle on the network task; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct P2p {
    commands: mpsc::UnboundedSender<Command>,
    peer_id: PeerId,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl P2p {
    /// Starts the network on `runtime` with identity `key`; events arrive on the returned
    /// receiver. `server` answers requests (the sequencer serves its DA archive and witnesses,
    /// and records verdicts).
    pub fn start(
        runtime: &tokio::runtime::Handle,
        key: Keypair,
        config: P2pConfig,
        server: Option<Server>,
    ) -> Result<(Self, std_mpsc::Receiver<Event>), P2pError> {
        let setup = |e: &dyn std::fmt::Display| P2pError::Setup(e.to_string());
        let peer_id = key.public().to_peer_id();
        let chain_id = config.chain_id;
        let _guard = runtime.enter();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_behaviour(|key| {
                // Unsigned gossip, as Ethereum's consensus layer does it (`StrictNoSign`):
                // every envelope carries the sequencer's own signature, which followers
                // check, so a second (ed25519) signature per message by whichever peer
                // published it adds a sign per message here and a verify at every receiver,
                // and proves nothing that matters. Messages carry no author or sequence
                // number; their id is their content's hash.
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .validate_messages()
                    .max_transmit_size(MAX_GOSSIP_BYTES)
                    .heartbeat_interval(Duration::from_millis(500))
                    // The content is the id: the same envelope twice is one message.
                    .message_id_fn(|m: &gossipsub::Message| {
                        MessageId::from(alloy_primitives::keccak256(&m.data).to_vec())
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    gossip_config,
                )?;
                let codec = cbor::codec::Codec::<Request, Option<Vec<u8>>>::default()
                    .set_request_size_maximum(MAX_REQUEST_BYTES)
                    .set_response_size_maximum(MAX_BATCH_RESPONSE_BYTES);
                let batches = request_response::Behaviour::with_codec(
                    codec,
                    [(
                        StreamProtocol::try_from_owned(format!("/sequencer/{chain_id}/req/1"))
                            .map_err(|e| e.to_string())?,
                        ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                );
                let identify = identify::Behaviour::new(identify::Config::new(
                    format!("/sequencer/{chain_id}/1"),
                    key.public(),
                ));
                Ok(Behaviour { gossipsub, batches, identify, ping: ping::Behaviour::default() })
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        for topic in [Topic::MiniBlocks, Topic::Blocks] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&gossipsub::IdentTopic::new(topic.name(chain_id)))
                .map_err(|e| setup(&e))?;
        }
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| P2pError::Setup(format!("cannot listen on {addr}: {}", chain(&e))))?;
        }
        for addr in &config.bootstrap {
            if let Err(err) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, %err, "cannot dial bootstrap peer");
            }
        }
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = std_mpsc::channel();
        let hash = |t: Topic| (t, gossipsub::IdentTopic::new(t.name(chain_id)).hash());
        let task = Task {
            swarm,
            chain_id,
            topics: [hash(Topic::MiniBlocks), hash(Topic::Blocks), hash(Topic::Witnesses)],
            server,
            events,
            strikes: HashMap::new(),
            pending: HashMap::new(),
            answers: mpsc::unbounded_channel(),
        };
        runtime.spawn(task.run(rx));
        Ok((Self { commands, peer_id }, events_rx))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Gossips `data` on `topic` (dropped when no peer subscribes yet: followers catch up).
    pub fn publish(&self, topic: Topic, data: Vec<u8>) {
        let _ = self.commands.send(Command::Publish(topic, data));
    }

    /// Subscribes to `topic` as well (its messages then arrive as events).
    pub fn subscribe(&self, topic: Topic) {
        let _ = self.commands.send(Command::Subscribe(topic));
    }

    /// Reports the verdict on a received message (see [`Verdict`]).
    pub fn report(&self, id: MessageId, source: PeerId, verdict: Verdict) {
        let _ = self.commands.send(Command::Report(id, source, verdict));
    }

    /// Asks a connected peer for block `number`'s batch; fails at once when no peer is
    /// connected.
    pub fn request_batch(&self, number: u64) -> Result<Option<Vec<u8>>, P2pError> {
        self.request(None, Request::Batch(number))
    }

    /// Asks a connected peer for block `number`'s witness.
    pub fn request_witness(&self, number: u64) -> Result<Option<Vec<u8>>, P2pError> {
        self.request(None, Request::Witness(number))
    }

    /// Sends a signed verdict to each connected peer in turn until one acknowledges it (the
    /// sequencer); returns whether one did.
    pub fn send_verdict(&self, verdict: Vec<u8>) -> Result<bool, P2pError> {
        for peer in self.peers()? {
            if let Ok(Some(_)) = self.request(Some(peer), Request::Verdict(verdict.clone())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends `request` to `peer` (any connected peer when `None`) and waits for the answer.
    pub fn request(
        &self,
        peer: Option<PeerId>,
        request: Request,
    ) -> Result<Option<Vec<u8>>, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Request(peer, request, tx)).map_err(|_| P2pError::Stopped)?;
        rx.blocking_recv().map_err(|_| P2pError::Stopped)?
    }

    /// The addresses it listens on.
    pub fn listening(&self) -> Result<Vec<Multiaddr>, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Listening(tx)).map_err(|_| P2pError::Stopped)?;
        rx.blocking_recv().map_err(|_| P2pError::Stopped)
    }

    /// Connected peers.
    pub fn peers(&self) -> Result<Vec<PeerId>, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Peers(tx)).map_err(|_| P2pError::Stopped)?;
        rx.blocking_recv().map_err(|_| P2pError::Stopped)
    }
}

struct Task {
    swarm: Swarm<Behaviour>,
    chain_id: u64,
    /// Each topic with its hash, as received messages name it.
    topics: [(Topic, gossipsub::TopicHash); 3],
    server: Option<Server>,
    events: std_mpsc::Sender<Event>,
    strikes: HashMap<PeerId, u32>,
    pending: HashMap<request_response::OutboundRequestId, BatchReply>,
    /// Answers computed off the network task (a server may read disk or call a DA service).
    answers: (mpsc::UnboundedSender<Answer>, mpsc::UnboundedReceiver<Answer>),
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return,
                },
                Some((channel, answer)) = self.answers.1.recv() => {
                    let _ = self.swarm.behaviour_mut().batches.send_response(channel, answer);
                }
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
    }

    fn topic_of(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        self.topics.iter().find(|(_, h)| h == hash).map(|(t, _)| *t)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Publish(topic, data) => {
                let topic = gossipsub::IdentTopic::new(topic.name(self.chain_id));
                if let Err(err) = self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                    tracing::debug!(%err, "gossip not published");
                }
            }
            Command::Subscribe(topic) => {
                let topic = gossipsub::IdentTopic::new(topic.name(self.chain_id));
                if let Err(err) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                    tracing::warn!(%err, "cannot subscribe");
                }
            }
            Command::Report(id, source, verdict) => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
                if verdict == Verdict::Reject {
                    self.strike(source);
                }
            }
            Command::Request(peer, request, reply) => self.request(peer, request, reply),
            Command::Listening(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn request(&mut self, peer: Option<PeerId>, request: Request, reply: BatchReply) {
        let peer = peer.or_else(|| self.swarm.connected_peers().next().copied());
        match peer {
            Some(peer) => {
                let id = self.swarm.behaviour_mut().batches.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            None => {
                let _ = reply.send(Err(P2pError::Request("no peer connected".into())));
            }
        }
    }

    fn strike(&mut self, peer: PeerId) {
        let strikes = self.strikes.entry(peer).or_default();
        *strikes += 1;
        if *strikes >= MAX_STRIKES {
            tracing::warn!(%peer, strikes = *strikes, "peer sent invalid messages: disconnected and blacklisted");
            self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            let _ = self.events.send(Event::Banned(peer));
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => match self.topic_of(&message.topic) {
                Some(topic) => {
                    let _ = self.events.send(Event::Message {
                        topic,
                        data: message.data,
                        id: message_id,
                        source: propagation_source,
                    });
                }
                None => {
                    self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Reject,
                    );
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Batches(request_response::Event::Message {
                message,
                ..
            })) => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let server = self.server.clone();
                    let answers = self.answers.0.clone();
                    tokio::task::spawn_blocking(move || {
                        let answer = server.and_then(|serve| serve(request));
                        let _ = answers.send((channel, answer));
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Batches(
                request_response::Event::OutboundFailure { request_id, error, .. },
            )) => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(P2pError::Request(error.to_string())));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.strikes.get(&peer_id).is_some_and(|s| *s >= MAX_STRIKES) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let _ = self.events.send(Event::Connected(peer_id));
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
            }
            _ => {}
        }
    }
}

/// An error and its sources, joined: some libp2p errors display as nothing but their source.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// A new random identity.
pub fn random_key() -> Keypair {
    identity::Keypair::generate_ed25519()
}
