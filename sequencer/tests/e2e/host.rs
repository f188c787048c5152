//! The start-up host check and thread pinning, on the machine running the tests.

use std::process::Command;

use crate::common::Sequencer;

fn config_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("sequencer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// More service cores than any CI machine has.
const TOO_MANY_CORES: &str = "[host]\nrpc_cores = 4096\n";

#[test]
fn server_profile_refuses_a_host_that_cannot_run_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &format!("{TOO_MANY_CORES}profile = \"server\"\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_sequencer"))
        .args(["--dev", "--no-metrics", "--rpc-addr", "127.0.0.1:0"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("this host does not satisfy the config"), "{stderr}");
    assert!(stderr.contains("FAIL cores"), "{stderr}");
    assert!(stderr.contains("4098 service cores"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("RPC listening"));
}

#[test]
fn laptop_profile_degrades_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), TOO_MANY_CORES);
    let log = dir.path().join("log");
    let node = Sequencer::start_logged(None, &["--config", config.to_str().unwrap()], Some(&log));
    drop(node);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("threads will share cores"), "{logged}");
    assert!(logged.contains("nothing pinned"), "{logged}");
}

/// The CPUs a thread of `pid` named `name` may run on (`Cpus_allowed_list`).
fn thread_cpus(pid: u32, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(name) {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if let Some(line) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
                found.push(line.split_whitespace().nth(1).unwrap_or_default().to_string());
            }
        }
    }
    found
}

#[test]
fn a_satisfiable_server_config_starts_and_pins_the_builder() {
    // No service cores: every core runs an executor, so the plan fits any host with a core.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cpus = numa::current_affinity();
    let config = config_file(
        dir.path(),
        "[host]\nprofile = \"server\"\nrpc_cores = 0\nnomt_cores = 0\njit_cores = 0\n\
         [memory]\nhuge_pages = \"off\"\nexpected_state_mib = 64\n\
         [executor]\nthreads = 0\n",
    );
    let data = dir.path().join("data");
    let node = Sequencer::start_in(Some(&data), &["--config", config.to_str().unwrap()]);
    let mut topology = numa::Topology::host().unwrap();
    topology.restrict_to(&cpus);
    let first_core_cpu = topology.cores.first().map(|c| c.cpus[0]);
    let want = vec![first_core_cpu.unwrap().to_string()];
    // Threads pin themselves as they start, which may be just after the RPC banner.
    let settled = |name: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut cpus = thread_cpus(node.child.id(), name);
        while cpus != want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            cpus = thread_cpus(node.child.id(), name);
        }
        cpus
    };
    assert_eq!(settled("block-builder"), want);
    // The parallel engine's workers: one per executor CPU of the node, each pinned to its own.
    assert_eq!(settled("exec-n0-0"), want);
    let workers: usize = topology.cores.len();
    let mut pinned: Vec<String> =
        (0..workers).flat_map(|i| thread_cpus(node.child.id(), &format!("exec-n0-{i}"))).collect();
    pinned.sort();
    pinned.dedup();
    assert_eq!(pinned.len(), workers, "each worker on its own CPU: {pinned:?}");
    drop(node);
}
