//! The `tuning` binary as an operator runs it, against the fixture hosts and this machine.

use std::{path::PathBuf, process::Command};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../numa/tests/fixtures/sysfs").join(name)
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn tuning(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tuning")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The example configs in docs/tuning are exactly what `tuning plan` writes for the fixture
/// hosts (regenerate them with the commands in docs/tuning/README.md when the plan changes).
#[test]
fn plans_for_the_fixture_hosts_match_the_documented_examples() {
    for (host, profile, gib, example) in [
        ("two-socket-128", "server", "200", "docs/tuning/two-socket-128.server.toml"),
        ("eight-node-100", "server", "512", "docs/tuning/eight-node-100.server.toml"),
        ("laptop", "laptop", "1", "docs/tuning/laptop.toml"),
    ] {
        let root = fixture(host);
        let (code, out, err) = tuning(&[
            "plan",
            "--sysfs",
            root.to_str().unwrap(),
            "--profile",
            profile,
            "--expected-state-gib",
            gib,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, std::fs::read_to_string(repo(example)).unwrap(), "{example}");
    }
}

#[test]
fn the_two_socket_plan_reserves_pages_per_node_and_dedicates_cores() {
    let text = std::fs::read_to_string(repo("docs/tuning/two-socket-128.server.toml")).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(config["memory"]["huge_pages"].as_str(), Some("2m"));
    assert_eq!(config["host"]["rpc_cores"].as_integer(), Some(4));
    // 200 GiB over two nodes is 100 GiB each, plus a quarter for table growth: 64 000 pages,
    // which the 65 536 already reserved per node cover, so nothing is to be reserved.
    assert!(!text.contains("nr_hugepages"), "{text}");
    assert!(text.contains("sysctl -w kernel.numa_balancing=0"));
    assert!(text.contains("executors node 1: 64 threads on cpus 64-127"));

    // Eight nodes and 512 GiB: 1 GiB pages, with the boot-time reservation spelled out.
    let eight = std::fs::read_to_string(repo("docs/tuning/eight-node-100.server.toml")).unwrap();
    assert!(eight.contains("huge_pages = \"1g\""));
    assert!(eight.contains("hugepagesz=1G hugepages=640"), "{eight}");

    // 300 GiB does not fit the 2 MiB pools: the plan moves to 1 GiB pages, 188 per node.
    let root = fixture("two-socket-128");
    let (_, bigger, _) = tuning(&[
        "plan",
        "--sysfs",
        root.to_str().unwrap(),
        "--profile",
        "server",
        "--expected-state-gib",
        "300",
    ]);
    assert!(bigger.contains("huge_pages = \"1g\""), "{bigger}");
    for node in [0, 1] {
        let line = format!(
            "echo 188 > /sys/devices/system/node/node{node}/hugepages/hugepages-1048576kB/nr_hugepages"
        );
        assert!(bigger.contains(&line), "{line}\n{bigger}");
    }
}

#[test]
fn probe_reads_fixture_hosts_as_json() {
    let root = fixture("memory-only-node");
    let (code, out, err) = tuning(&["probe", "--json", "--sysfs", root.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["topology"]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(value["topology"]["nodes"][1]["cpus"], serde_json::json!([]));
    assert_eq!(value["topology"]["thp"], "always");
    assert!(value["io_uring"]["usable"].is_boolean());

    let (code, out, _) = tuning(&["probe"]);
    assert_eq!(code, 0);
    assert!(out.contains("physical cores") && out.contains("io_uring"), "{out}");
}

#[test]
fn check_exit_codes_follow_the_findings() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The plan for this machine is satisfied by this machine (its data directory aside,
    // which is pointed at a directory that exists).
    let planned = dir.path().join("planned.toml");
    let (code, _, err) = tuning(&["plan", "-o", planned.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&planned)
        .unwrap()
        .replace("./sequencer-data", dir.path().join("data").to_str().unwrap());
    std::fs::write(&planned, text).unwrap();
    let (code, out, _) = tuning(&["check", planned.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok   io_uring")), "{out}");

    // A server config this machine cannot have.
    let impossible = dir.path().join("impossible.toml");
    std::fs::write(
        &impossible,
        format!(
            "[host]\nprofile = \"server\"\nrpc_cores = 4096\n[storage]\ndatadir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let (code, out, _) = tuning(&["check", impossible.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("FAIL cores")), "{out}");
    let (_, json, _) = tuning(&["check", "--json", impossible.to_str().unwrap()]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["level"], "fail");

    // A typo in a section the check reads is an error, not a silent default.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[host]\nrpc_core = 1\n").unwrap();
    let (code, _, err) = tuning(&["check", typo.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("rpc_core"), "{err}");
}

#[test]
fn apply_is_refused_on_a_fixture_tree() {
    let root = fixture("two-socket-128");
    let (code, _, err) =
        tuning(&["plan", "--profile", "server", "--sysfs", root.to_str().unwrap(), "--apply"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with --sysfs"), "{err}");
}

/// As root, `--apply` reserves the planned pages on this machine, after which `check` passes
/// the huge-page requirement it failed before. The pool is put back afterwards.
#[test]
fn apply_reserves_huge_pages_on_this_host_when_root() {
    let nr = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";
    let Ok(before) = std::fs::read_to_string(nr) else {
        eprintln!("no per-node 2 MiB pool here: nothing to apply");
        return;
    };
    let (_, probe, _) = tuning(&["probe", "--json"]);
    let probe: serde_json::Value = serde_json::from_str(&probe).unwrap();
    if probe["root"] != true {
        eprintln!("not root: --apply is not exercised");
        return;
    }
    struct Restore(&'static str, String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0, &self.1);
        }
    }
    let _restore = Restore(nr, before.trim().to_string());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = dir.path().join("server.toml");
    let (code, out, err) =
        tuning(&["plan", "--profile", "server", "-o", config.to_str().unwrap(), "--apply"]);
    assert_eq!(code, 0, "{out}{err}");
    let done = err.lines().find(|l| l.starts_with("done: echo ") && l.ends_with(nr));
    let planned: u64 = done
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reservation on node 0 was applied: {err}"));
    let reserved: u64 = std::fs::read_to_string(nr).unwrap().trim().parse().unwrap();
    if reserved < planned {
        eprintln!("the kernel reserved only {reserved} of {planned} pages (fragmented memory)");
        return;
    }
    // Point the data directory at the target dir (the plan's /var/lib/sequencer may not exist).
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/var/lib/sequencer", dir.path().join("data").to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let (_, out, _) = tuning(&["check", config.to_str().unwrap()]);
    assert!(out.lines().any(|l| l.starts_with("ok   huge_pages")), "{out}");
}
