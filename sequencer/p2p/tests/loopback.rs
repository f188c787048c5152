//! Two and three nodes on loopback: gossip arrives and is forwarded, batches are served by
//! number, and a peer whose messages are rejected is disconnected and banned.

use std::{sync::Arc, sync::mpsc::Receiver, time::Duration};

use p2p::{Event, P2p, P2pConfig, Topic, Verdict, random_key};

fn config(bootstrap: Vec<p2p::Address>) -> P2pConfig {
    P2pConfig { chain_id: 7, listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], bootstrap }
}

fn start(
    rt: &tokio::runtime::Runtime,
    bootstrap: Vec<p2p::Address>,
    server: Option<p2p::Server>,
) -> (P2p, Receiver<Event>) {
    let (p2p, events) = P2p::start(rt.handle(), random_key(), config(bootstrap), server).unwrap();
    (p2p, events)
}

fn listen_addr(p: &P2p) -> p2p::Address {
    for _ in 0..100 {
        if let Some(addr) = p.listening().unwrap().into_iter().next() {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not listening")
}

/// Publishes `data` until `events` delivers it (the mesh forms within a few heartbeats).
fn deliver(from: &P2p, topic: Topic, data: &[u8], events: &Receiver<Event>) -> Event {
    for _ in 0..100 {
        from.publish(topic, data.to_vec());
        while let Ok(event) = events.recv_timeout(Duration::from_millis(100)) {
            if let Event::Message { data: got, .. } = &event
                && got == data
            {
                return event;
            }
        }
    }
    panic!("message never arrived")
}

#[test]
fn gossip_arrives_batches_are_served_and_a_bad_peer_is_banned() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server: p2p::Server = Arc::new(|request| match request {
        p2p::Request::Batch(n) => (n < 10).then(|| vec![n as u8; 100]),
        p2p::Request::Witness(n) => (n == 5).then(|| vec![0xee; 10]),
        p2p::Request::Verdict(bytes) => (bytes == b"ok").then(|| vec![1]),
    });
    let (seq, _seq_events) = start(&rt, vec![], Some(server));
    let addr = listen_addr(&seq);
    let (follower, events) = start(&rt, vec![addr.clone()], None);

    let Event::Message { topic, id, source, .. } =
        deliver(&seq, Topic::Blocks, b"block one", &events)
    else {
        unreachable!()
    };
    assert_eq!((topic, source), (Topic::Blocks, seq.peer_id()));
    follower.report(id, source, Verdict::Accept);

    // Witnesses reach a node that subscribed to them.
    follower.subscribe(Topic::Witnesses);
    let Event::Message { topic, id, source, .. } =
        deliver(&seq, Topic::Witnesses, b"witness of block 9", &events)
    else {
        unreachable!()
    };
    assert_eq!(topic, Topic::Witnesses);
    follower.report(id, source, Verdict::Ignore);

    assert_eq!(follower.request_batch(3).unwrap(), Some(vec![3u8; 100]));
    assert_eq!(follower.request_batch(42).unwrap(), None);
    assert_eq!(follower.request_witness(5).unwrap(), Some(vec![0xee; 10]));
    assert_eq!(follower.request_witness(6).unwrap(), None);
    assert!(follower.send_verdict(b"ok".to_vec()).unwrap());
    assert!(!follower.send_verdict(b"not ok".to_vec()).unwrap());

    // A third node that sends what the follower rejects is cut off after MAX_STRIKES.
    let (bad, _bad_events) = start(&rt, vec![listen_addr(&follower)], None);
    let mut banned = false;
    for i in 0..p2p::MAX_STRIKES * 4 {
        let Event::Message { id, source, .. } =
            deliver(&bad, Topic::MiniBlocks, format!("forged {i}").as_bytes(), &events)
        else {
            unreachable!()
        };
        assert_eq!(source, bad.peer_id());
        follower.report(id, source, Verdict::Reject);
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(event) = events.try_recv() {
            banned |= matches!(event, Event::Banned(peer) if peer == bad.peer_id());
        }
        if banned {
            break;
        }
    }
    assert!(banned, "the peer was not banned");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!follower.peers().unwrap().contains(&bad.peer_id()), "still connected");
    assert!(follower.peers().unwrap().contains(&seq.peer_id()), "the good peer stays");
}
