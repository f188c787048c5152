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

use super::*;

/// An HTTP server that follows the EigenDA proxy's documented REST API in standard commitment
/// mode, storing blobs in memory: `POST /put?commitment_mode=standard` answers the certificate
/// (here a version byte and the blob's keccak), `GET /get/0x{cert}?commitment_mode=standard`
/// the blob or 404, and every call 503 while `unavailable` is set. It is a stand-in written for
/// this test, not the proxy.
struct FakeProxy {
    url: String,
    unavailable: Arc<AtomicBool>,
    puts: Arc<Mutex<usize>>,
}

fn fake_proxy() -> FakeProxy {
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

fn batch(number: u64) -> Vec<u8> {
    Batch { number, envelopes: vec![Bytes::from(vec![number as u8; 40]), Bytes::from_static(b"b")] }
        .to_bytes()
}

#[test]
fn the_eigenda_client_stores_and_fetches_through_the_proxy_api() {
    let proxy = fake_proxy();
    let client = EigenDaProxy::new(&proxy.url, Duration::from_secs(5)).unwrap();
    let pointer = client.put(4, &batch(4)).unwrap();
    assert_eq!(pointer.0.len(), 33, "the proxy's certificate");
    let got = client.get(4, &pointer).unwrap().unwrap();
    assert_eq!(Batch::from_bytes(4, &got).unwrap(), Batch::from_bytes(4, &batch(4)).unwrap());
    assert_eq!(*proxy.puts.lock().unwrap(), 1);
    // An unknown certificate is "not there"; no certificate at all is the caller's error.
    assert_eq!(client.get(4, &DaPointer(vec![1u8; 33].into())).unwrap(), None);
    assert!(matches!(client.get(4, &DaPointer::default()), Err(DaError::NoPointer(4))));
    proxy.unavailable.store(true, Ordering::SeqCst);
    assert!(matches!(client.put(5, &batch(5)), Err(DaError::Unavailable)));
    assert!(matches!(client.get(4, &pointer), Err(DaError::Unavailable)));
}

#[test]
fn an_unreachable_proxy_is_an_error_not_a_hang() {
    let client = EigenDaProxy::new("http://127.0.0.1:9", Duration::from_secs(2)).unwrap();
    assert!(matches!(client.put(1, &batch(1)), Err(DaError::Proxy(_))));
}

#[test]
fn the_local_archive_stores_once_finds_the_last_and_refuses_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let archive = LocalArchive::open(&dir.path().join("archive")).unwrap();
    assert_eq!(archive.last().unwrap(), None);
    assert_eq!(archive.get(1, &DaPointer::default()).unwrap(), None);
    for n in [1, 2, 9_999, 10_000, 10_001] {
        archive.put(n, &batch(n)).unwrap();
    }
    archive.put(2, &batch(2)).unwrap();
    assert!(matches!(archive.put(2, &batch(3)), Err(DaError::Conflict(2))));
    assert_eq!(archive.last().unwrap(), Some(10_001));
    let got = archive.get(10_000, &DaPointer::default()).unwrap().unwrap();
    assert_eq!(Batch::from_bytes(10_000, &got).unwrap().number, 10_000);
    // A batch presented as another block's is refused.
    assert!(matches!(Batch::from_bytes(7, &got), Err(DaError::Malformed { number: 7, .. })));
    assert!(Batch::from_bytes(1, &got[..got.len() - 1]).is_err());
}

#[test]
fn the_pointer_log_survives_a_restart_and_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pointers");
    {
        let mut log = PointerLog::open(&path).unwrap();
        log.record(1, DaPointer(vec![1; 33].into())).unwrap();
        log.record(2, DaPointer(vec![2; 33].into())).unwrap();
    }
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[0xf8, 0x40, 1]).unwrap();
    let mut log = PointerLog::open(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "the torn record is cut off");
    assert_eq!(log.last(), Some(2));
    assert_eq!(log.get(1), Some(&DaPointer(vec![1; 33].into())));
    log.record(3, DaPointer(vec![3; 33].into())).unwrap();
    assert_eq!(PointerLog::open(&path).unwrap().last(), Some(3));
}
