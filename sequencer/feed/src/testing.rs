//! Test doubles for crates that use the feed (feature `testing`): what cannot run in a test.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use alloy_primitives::keccak256;

/// An HTTP server that follows the EigenDA proxy's documented REST API in standard commitment
/// mode, storing blobs in memory: `POST /put?commitment_mode=standard` answers the certificate
/// (here a version byte and the blob's keccak), `GET /get/0x{cert}?commitment_mode=standard`
/// the blob or 404, and every call 503 while `unavailable` is set. It is a stand-in written for
/// tests, not the proxy.
pub struct FakeProxy {
    /// Its base URL.
    pub url: String,
    /// While set, every call answers 503.
    pub unavailable: Arc<AtomicBool>,
    /// Blobs stored so far.
    pub puts: Arc<Mutex<usize>>,
}

/// Starts a [`FakeProxy`] on a free loopback port.
pub fn fake_proxy() -> FakeProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let unavailable = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(Mutex::new(0));
    let blobs: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    let (down, count) = (unavailable.clone(), puts.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let (status, answer) = if down.load(Ordering::SeqCst) {
                ("503 Service Unavailable", b"unavailable".to_vec())
            } else if method == "POST" && target == "/put?commitment_mode=standard" {
                *count.lock().unwrap() += 1;
                let cert = [&[0u8][..], keccak256(&body).as_slice()].concat();
                blobs.lock().unwrap().insert(cert.clone(), body);
                ("200 OK", cert)
            } else if let Some(hex) = target
                .strip_prefix("/get/0x")
                .and_then(|t| t.strip_suffix("?commitment_mode=standard"))
                && method == "GET"
            {
                match hex::decode(hex).ok().and_then(|c| blobs.lock().unwrap().get(&c).cloned()) {
                    Some(blob) => ("200 OK", blob),
                    None => ("404 Not Found", b"not found".to_vec()),
                }
            } else {
                ("400 Bad Request", b"unknown route".to_vec())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&answer));
        }
    });
    FakeProxy { url, unavailable, puts }
}
