//! `restrict_process` changes the affinity of every thread of the process, so it is tested
//! alone in its own test binary (a process of its own), where no other test is pinned.

use numa::{current_affinity, restrict_process};

#[test]
fn restricting_the_process_reaches_its_threads_and_those_started_later() {
    let all = current_affinity();
    assert!(!all.is_empty());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let earlier = std::thread::spawn(move || {
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        current_affinity()
    });
    ready_rx.recv().unwrap();
    assert!(restrict_process(&all[..1]).unwrap() >= 2);
    go_tx.send(()).unwrap();
    assert_eq!(earlier.join().unwrap(), all[..1].to_vec(), "a thread that already ran");
    let later = std::thread::spawn(current_affinity).join().unwrap();
    assert_eq!(later, all[..1].to_vec(), "a thread started afterwards");
    restrict_process(&all).unwrap();
    assert_eq!(current_affinity(), all);
    assert!(restrict_process(&[]).is_err());
}
