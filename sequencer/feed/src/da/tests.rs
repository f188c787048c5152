use std::{io::Write, sync::atomic::Ordering};

use super::*;
use crate::testing::fake_proxy;

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
