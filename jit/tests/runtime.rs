//! The JIT runtime as the sequencer uses it: hot threshold and background compilation, the
//! AOT cache across restarts (and a damaged cache file), and the code-size budget.

mod common;
use common::*;
use jit::{JitConfig, JitRuntime};
use revm::primitives::hardfork::SpecId;
use revm::primitives::keccak256;

const LOOP: &str = "6000606460005b8115601a57818101906001900390600456 5b60005260206000f3";

fn code(hex_code: &str) -> Vec<u8> {
    hex::decode(hex_code.replace(' ', "")).unwrap()
}

fn run(rt: &std::sync::Arc<JitRuntime>, code: &[u8]) {
    let db = db(&[(TARGET, code.to_vec())]);
    let a = interpret(db.clone(), SpecId::CANCUN, tx(TARGET, vec![], 1_000_000, 0));
    let b = compiled(db, SpecId::CANCUN, tx(TARGET, vec![], 1_000_000, 0), rt.clone());
    same(&a, &b).unwrap();
}

#[test]
fn a_contract_is_compiled_in_the_background_once_hot() {
    let cfg = JitConfig { hot_threshold: 3, ..JitConfig::default() };
    let rt = JitRuntime::start(cfg, None);
    let c = code(LOOP);
    let hash = keccak256(&c);
    for _ in 0..3 {
        run(&rt, &c);
    }
    assert!(rt.ready(hash, SpecId::CANCUN).is_none(), "not hot yet after 3 calls");
    assert_eq!(rt.stats().compiled, 0);
    run(&rt, &c);
    rt.wait_idle();
    assert!(rt.ready(hash, SpecId::CANCUN).is_some(), "compiled after the 4th call");
    let before = rt.stats();
    assert_eq!(before.frames_compiled, 0, "no frame ran compiled code before it was ready");
    run(&rt, &c);
    let after = rt.stats();
    assert_eq!(after.frames_compiled, 1, "{after:?}");
    assert_eq!(after.compiled, 1);
}

#[test]
fn the_aot_cache_makes_a_restart_warm_and_survives_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JitConfig { aot_dir: Some(dir.path().into()), ..JitConfig::eager() };
    // Code no other test compiles: loaded code is shared process-wide by symbol, and a live
    // copy from a concurrent test would stand in for the damaged file below.
    let c = code(&LOOP.replace("6064", "6065"));
    let hash = keccak256(&c);
    {
        let rt = JitRuntime::start(cfg.clone(), None);
        run(&rt, &c);
        assert_eq!(rt.stats().compiled, 1);
    }
    let objects: Vec<_> =
        walk(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "o")).collect();
    assert_eq!(objects.len(), 1, "one object written: {objects:?}");

    // A restart loads it before any call and compiles nothing.
    let rt = JitRuntime::start(cfg.clone(), None);
    assert_eq!(rt.stats().loaded_aot, 1);
    assert!(rt.ready(hash, SpecId::CANCUN).is_some());
    run(&rt, &c);
    assert_eq!(rt.stats().compiled, 0);
    assert_eq!(rt.stats().frames_compiled, 1);
    drop(rt);

    // A damaged object is dropped and the contract compiled again.
    std::fs::write(&objects[0], b"not an object").unwrap();
    let rt = JitRuntime::start(cfg, None);
    assert_eq!(rt.stats().loaded_aot, 0);
    run(&rt, &c);
    assert_eq!(rt.stats().compiled, 1);
    assert!(std::fs::read(&objects[0]).unwrap().starts_with(b"\x7fELF"), "rewritten");
}

#[test]
fn past_the_byte_budget_the_least_recently_used_code_is_unloaded() {
    // A budget below one object: each compile unloads the code compiled before it.
    let cfg = JitConfig { cache_bytes: 1, ..JitConfig::eager() };
    let rt = JitRuntime::start(cfg, None);
    let a = code(LOOP);
    let b = code("600260030160005260206000f3");
    run(&rt, &a);
    run(&rt, &b);
    let stats = rt.stats();
    assert!(stats.evicted >= 1, "{stats:?}");
    assert!(rt.ready(keccak256(&a), SpecId::CANCUN).is_none(), "a was unloaded");
    // Still correct: compiled again on its next call.
    run(&rt, &a);
    assert!(rt.stats().compiled >= 3);
}

#[test]
fn amsterdam_and_oversized_code_fall_back_to_the_interpreter() {
    let rt = JitRuntime::start(JitConfig::eager(), None);
    let big = vec![0x5b; jit::cache::MAX_CODE_BYTES + 1];
    let state = db(&[(TARGET, big)]);
    let a = interpret(state.clone(), SpecId::CANCUN, tx(TARGET, vec![], 1_000_000, 0));
    let b = compiled(state, SpecId::CANCUN, tx(TARGET, vec![], 1_000_000, 0), rt.clone());
    same(&a, &b).unwrap();
    let c = code(LOOP);
    let state = db(&[(TARGET, c)]);
    let a = interpret(state.clone(), SpecId::AMSTERDAM, tx(TARGET, vec![], 1_000_000, 0));
    let b = compiled(state, SpecId::AMSTERDAM, tx(TARGET, vec![], 1_000_000, 0), rt.clone());
    same(&a, &b).unwrap();
    let stats = rt.stats();
    assert_eq!(stats.declined, vec![(jit::Fallback::Fork, 1), (jit::Fallback::TooLarge, 1)]);
    assert_eq!(stats.compiled, 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
