//! A short run of each workload against each target completes, and the work was really done.

use std::time::Duration;

use alloy_primitives::U256;
use bench::{
    baseline,
    target::{self, RunSettings, Target},
    workload::{self, Kind},
};

/// A node over `prepared`'s genesis that has executed all its transactions, each checked
/// with `check`.
fn run_all(
    prepared: &workload::Prepared,
    check: impl Fn(&sequencer::chain::ExecutedTx),
) -> (std::sync::Arc<sequencer::Node>, tempfile::TempDir) {
    run_all_with(prepared, sequencer::Config::default(), check)
}

fn run_all_with(
    prepared: &workload::Prepared,
    mut config: sequencer::Config,
    check: impl Fn(&sequencer::chain::ExecutedTx),
) -> (std::sync::Arc<sequencer::Node>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    config.storage.datadir = Some(dir.path().to_path_buf());
    config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    let node =
        sequencer::Node::start_with_alloc(config, false, Some((*prepared.alloc).clone())).unwrap();
    for result in node.submit_batch(prepared.txs.to_vec()) {
        result.unwrap();
    }
    for tx in prepared.txs.iter() {
        let hash = alloy_primitives::keccak256(tx);
        let executed = (0..500)
            .find_map(|_| {
                let found = node.chain.tx(&hash);
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                found
            })
            .expect("executed");
        check(&executed);
    }
    (node, dir)
}

fn settings() -> RunSettings {
    RunSettings {
        block_time: Duration::from_millis(100),
        mini_block_time: Duration::from_millis(10),
        mini_block_gather: Duration::ZERO,
        batch: 50,
        connections: 2,
        witnesses: true,
        rate: None,
    }
}

fn no_progress() -> indicatif::ProgressBar {
    indicatif::ProgressBar::hidden()
}

#[test]
fn every_workload_runs_on_every_target_and_the_baseline() {
    for kind in [Kind::Eth, Kind::Erc20, Kind::Amm, Kind::AmmHot, Kind::Mix] {
        let prepared = workload::prepare(kind, 3, 40, 200);
        for target in [Target::Inprocess, Target::Rpc, Target::Ws, Target::Realtime] {
            let r = target::run(&prepared, &settings(), target, &no_progress()).unwrap();
            assert!(r.elapsed > Duration::ZERO);
            // Every transaction's receipt was seen, so each has a latency.
            assert_eq!(r.latency.len(), 200, "{kind:?} {target:?}");
            assert!(r.latency.min() >= 1);
            match kind {
                Kind::Eth => assert_eq!(r.gas, 200 * 21_000),
                _ => assert!(r.gas > 200 * 21_000, "{kind:?} {target:?}: {}", r.gas),
            }
        }
        for parallel in [true, false] {
            let times = baseline::run(&prepared, 64, parallel);
            assert!(times.total >= times.execute);
            assert!(times.execute > Duration::ZERO && times.root > Duration::ZERO);
        }
    }
}

#[test]
fn an_open_loop_run_keeps_to_its_schedule_on_every_target() {
    // 150 transfers at 1 000 tx/s: the last is due at 149 ms, so no run can end before that;
    // each transaction's latency counts from when it was due.
    let prepared = workload::prepare(Kind::Eth, 12, 150, 150);
    let open = RunSettings { rate: Some(1000.0), batch: 10, ..settings() };
    for target in [Target::Inprocess, Target::Rpc, Target::Ws, Target::Realtime] {
        let r = target::run(&prepared, &open, target, &no_progress()).unwrap();
        assert!(r.elapsed >= Duration::from_millis(149), "{target:?}: {:?}", r.elapsed);
        assert_eq!(r.latency.len(), 150, "{target:?}");
    }
}

#[test]
fn a_refused_transaction_fails_the_run_on_every_target() {
    // Transactions signed for another chain: the node refuses each of them.
    let mut prepared = workload::prepare(Kind::Eth, 13, 10, 10);
    let wrong_chain: Vec<_> = prepared
        .txs
        .iter()
        .map(|raw| {
            let mut raw = raw.to_vec();
            // The chain id is the first field of an EIP-1559 payload: after the type byte and
            // the list header; 31337 is a two-byte string (0x82 0x7a 0x69).
            let header = if raw[1] >= 0xf8 { 1 + usize::from(raw[1] - 0xf7) } else { 1 };
            assert_eq!(raw[1 + header], 0x82, "two-byte chain id");
            raw[2 + header] ^= 1;
            alloy_primitives::Bytes::from(raw)
        })
        .collect();
    prepared.txs = std::sync::Arc::new(wrong_chain);
    for target in [Target::Inprocess, Target::Rpc, Target::Ws, Target::Realtime] {
        let err = target::run(&prepared, &settings(), target, &no_progress()).unwrap_err();
        assert!(matches!(err, target::RunError::Refused(_)), "{target:?}: {err}");
    }
}

#[test]
fn an_erc20_run_moves_exactly_the_tokens_it_should() {
    erc20_run(sequencer::Config::default());
}

#[test]
fn the_node_on_the_parallel_engine_moves_exactly_the_same_tokens() {
    let mut config = sequencer::Config::default();
    config.executor.threads = 2;
    config.executor.min_parallel = 2;
    config.executor.min_parallel_gas = 0;
    let node = erc20_run(config);
    assert!(node.executor.stats().parallel_batches > 0, "{:?}", node.executor.stats());
}

fn erc20_run(config: sequencer::Config) -> std::sync::Arc<sequencer::Node> {
    // 45 transfers among 30 accounts: the first 15 send twice, the others once.
    let (n, count) = (30usize, 45usize);
    let prepared = workload::prepare(Kind::Erc20, 5, n, count);
    let (node, _dir) = run_all_with(&prepared, config, |executed| {
        assert!(executed.success);
        assert_eq!(executed.logs.len(), 1, "one Transfer event");
    });
    let mut expected = vec![U256::from(workload::TOKEN_BALANCE); n];
    for k in 0..count {
        let from = k % n;
        let amount = workload::amount(k, workload::TOKEN_TRANSFER_MAX);
        expected[from] -= amount;
        expected[workload::recipient(from, n)] += amount;
    }
    for (i, who) in prepared.addresses.iter().enumerate() {
        let balance = node.state.storage(&workload::TOKEN, &workload::balance_slot(who));
        assert_eq!(balance, expected[i], "balance of account {i}");
    }
    assert_ne!(expected, vec![U256::from(workload::TOKEN_BALANCE); n], "the run moves tokens");
    node.shutdown();
    node
}

#[test]
fn bench_parallel_measures_both_engines_on_the_same_blocks() {
    let prepared = workload::prepare(Kind::Erc20, 6, 40, 200);
    let r = bench::parallel::measure(&prepared, "erc20", 2, 50, 1, 0).unwrap();
    assert_eq!(r.txs, 200);
    assert!(r.sequential_s > 0.0 && r.parallel_s > 0.0);
    assert_eq!(r.ratio, r.sequential_s / r.parallel_s, "the ratio is of this run's own times");
    assert_eq!(r.parallel_blocks + r.sequential_blocks, 4);
    assert!(r.parallel_blocks > 0, "{r:?}");
    // A chain (one sender) is recognised and runs on the sequential path.
    let chain = workload::prepare(Kind::Eth, 6, 1, 100);
    let r = bench::parallel::measure(&chain, "chain", 2, 50, 1, 0).unwrap();
    assert_eq!((r.parallel_blocks, r.sequential_blocks), (0, 2));
    // With the default gas gate, cheap ERC-20 transfers stay on the sequential path.
    let default_gate = sequencer::parallel::ExecutorConfig::default().min_parallel_gas;
    let r = bench::parallel::measure(&prepared, "erc20", 2, 50, 1, default_gate).unwrap();
    assert_eq!((r.parallel_blocks, r.sequential_blocks), (0, 4));
}

#[test]
fn latency_measures_every_transfer_with_both_methods() {
    use bench::latency::{Method, measure};
    let prepared = workload::prepare(Kind::Eth, 4, 20, 20);
    for method in [Method::Realtime, Method::SendAndPoll] {
        let p = measure(&prepared, &settings(), method, Duration::from_millis(1)).unwrap();
        assert_eq!(p.count, 20);
        // Every transfer crosses HTTP at least once: no sample can be a microsecond.
        assert!(p.p50_us >= 20, "{p:?}");
        assert!(p.p50_us <= p.p90_us && p.p90_us <= p.p99_us && p.p99_us <= p.max_us, "{p:?}");
    }
}

#[test]
fn the_mix_runs_each_kind_of_transaction_with_its_event() {
    let prepared = workload::prepare(Kind::Mix, 10, 30, 90);
    let kinds: std::collections::HashMap<_, _> = prepared
        .txs
        .iter()
        .enumerate()
        .map(|(k, raw)| (alloy_primitives::keccak256(raw), Kind::Mix.of_tx(k)))
        .collect();
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let (node, _dir) = run_all(&prepared, |executed| {
        let kind = kinds[&executed.tx.hash];
        assert!(executed.success, "{kind:?} transaction reverted");
        assert_eq!(executed.logs.len(), usize::from(kind != Kind::Eth), "{kind:?}");
        seen.lock().unwrap().insert(format!("{kind:?}"));
    });
    node.shutdown();
    assert_eq!(seen.into_inner().unwrap().len(), 3, "ETH, ERC-20 and AMM all ran");
}

#[test]
fn every_transaction_of_every_workload_succeeds_with_its_event() {
    for (kind, logs) in [(Kind::Eth, 0), (Kind::Erc20, 1), (Kind::Amm, 1), (Kind::AmmHot, 1)] {
        let prepared = workload::prepare(kind, 9, 30, 60);
        let (node, _dir) = run_all(&prepared, |executed| {
            assert!(executed.success, "{kind:?} transaction reverted");
            assert_eq!(executed.logs.len(), logs, "{kind:?}");
        });
        node.shutdown();
    }
}
