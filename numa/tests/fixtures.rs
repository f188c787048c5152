//! Topology, placement plans and host checks against committed sysfs trees of hosts this
//! machine is not (see `scripts/gen-sysfs-fixtures.py` for what each tree describes).

use std::path::PathBuf;

use numa::{
    ExecutorPool, HostConfig, HostReport, HugePages, Level, MemoryConfig, Plan, PlanError, Profile,
    StorageNeeds, ThpMode, Topology,
};

fn root(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs").join(name)
}

fn topology(name: &str) -> Topology {
    Topology::read(root(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn server() -> HostConfig {
    HostConfig {
        profile: Profile::Server,
        os_cores: 1,
        rpc_cores: 2,
        nomt_cores: 2,
        jit_cores: 2,
        ..HostConfig::default()
    }
}

fn range(a: usize, b: usize) -> Vec<usize> {
    (a..b).collect()
}

#[test]
fn laptop_topology_and_plan() {
    let t = topology("laptop");
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.cpu_count(), 8);
    assert_eq!(t.cores.len(), 4);
    assert!(t.smt());
    assert_eq!(t.cores[1].cpus, vec![1, 5]);
    assert_eq!(t.mem_total(), Some(32 << 30));
    assert_eq!(t.thp, ThpMode::Madvise);

    let plan = Plan::new(&t, &HostConfig::default()).unwrap();
    assert!(!plan.shared);
    assert_eq!(plan.os, Vec::<usize>::new());
    assert_eq!(plan.rpc, vec![0, 4]);
    assert_eq!(plan.nomt, vec![1, 5]);
    assert_eq!(plan.jit, vec![2, 6]);
    assert_eq!(plan.executors, vec![ExecutorPool { node: 0, cpus: vec![3] }]);

    let smt = Plan::new(&t, &HostConfig { use_smt: true, ..HostConfig::default() }).unwrap();
    assert_eq!(smt.executors[0].cpus, vec![3, 7]);

    // The server profile's seven service cores do not fit in four: nothing is reserved.
    let shared = Plan::new(&t, &server()).unwrap();
    assert!(shared.shared);
    assert!(shared.rpc.is_empty() && shared.os.is_empty());
    assert_eq!(shared.executors[0].cpus, vec![0, 1, 2, 3]);
    assert_eq!(shared.notes.len(), 1, "{:?}", shared.notes);
}

#[test]
fn two_socket_topology_and_plan() {
    let t = topology("two-socket-128");
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.cpu_count(), 256);
    assert_eq!(t.cores.len(), 128);
    assert_eq!(t.nodes[1].distances, vec![21, 10]);
    assert_eq!(t.nodes[0].cpus, [range(0, 64), range(128, 192)].concat());
    assert_eq!(t.cores[64].node, 1);
    assert_eq!(t.cores[64].package, 1);
    assert_eq!(t.cores[64].cpus, vec![64, 192]);
    assert_eq!(t.mem_total(), Some(1 << 40));
    let pool = t.huge_pool(2 << 20).unwrap();
    assert_eq!((pool.total, pool.free), (131_072, 131_072));
    assert_eq!(t.nodes[0].huge_pages[0].free, 65_536);

    let plan = Plan::new(&t, &server()).unwrap();
    assert_eq!(plan.os, vec![0, 128]);
    assert_eq!(plan.rpc, vec![1, 2, 129, 130]);
    assert_eq!(plan.nomt, vec![3, 4, 131, 132]);
    assert_eq!(plan.jit, vec![5, 6, 133, 134]);
    assert_eq!(
        plan.executors,
        vec![
            ExecutorPool { node: 0, cpus: range(7, 64) },
            ExecutorPool { node: 1, cpus: range(64, 128) }
        ]
    );
    assert_eq!(plan.executor_count(), 121);
    assert_eq!(plan.memory_nodes, vec![0, 1]);
    assert!(plan.notes.is_empty());
    // systemd's CPUAffinity covers every CPU but the OS's.
    assert_eq!(plan.process_cpus().len(), 256 - 2 - (128 - 7 - 64) - (128 - 64));

    // One socket only.
    let one = Plan::new(&t, &HostConfig { nodes: vec![1], ..server() }).unwrap();
    assert_eq!(one.os, vec![64, 192]);
    assert_eq!(one.executors, vec![ExecutorPool { node: 1, cpus: range(71, 128) }]);
}

#[test]
fn eight_node_topology_and_plan() {
    let t = topology("eight-node-100");
    assert_eq!(t.nodes.len(), 8);
    assert_eq!(t.cores.len(), 100);
    assert!(!t.smt());
    assert_eq!(t.nodes[4].cpus, range(52, 64));
    assert_eq!(t.nodes[5].distances, vec![32, 32, 32, 32, 16, 10, 32, 32]);
    assert_eq!(t.thp, ThpMode::Never);
    assert_eq!(t.huge_pool(1 << 30).unwrap().free, 8 * 64);

    let plan = Plan::new(&t, &HostConfig { executors_per_node: 4, ..server() }).unwrap();
    assert_eq!(plan.os, vec![0]);
    assert_eq!(plan.rpc, vec![1, 2]);
    assert_eq!(plan.nomt, vec![3, 4]);
    assert_eq!(plan.jit, vec![5, 6]);
    let firsts = [7, 13, 26, 39, 52, 64, 76, 88];
    let expected: Vec<ExecutorPool> = firsts
        .iter()
        .enumerate()
        .map(|(node, &first)| ExecutorPool { node, cpus: range(first, first + 4) })
        .collect();
    assert_eq!(plan.executors, expected);

    let all = Plan::new(&t, &server()).unwrap();
    assert_eq!(all.executor_count(), 93);
    assert_eq!(all.executors[0].cpus, range(7, 13));
}

#[test]
fn memory_only_node_gets_no_executors() {
    let t = topology("memory-only-node");
    assert_eq!(t.nodes.len(), 2);
    assert!(t.nodes[1].cpus.is_empty());
    assert_eq!(t.nodes[1].mem_total, Some(256 << 30));
    assert_eq!(t.cpu_nodes().count(), 1);
    assert_eq!(t.thp, ThpMode::Always);

    let plan = Plan::new(&t, &HostConfig::default()).unwrap();
    assert_eq!(plan.rpc, vec![0, 8]);
    assert_eq!(plan.executors, vec![ExecutorPool { node: 0, cpus: range(3, 8) }]);
    assert_eq!(plan.memory_nodes, vec![0]);

    let bad = HostConfig { nodes: vec![1], ..HostConfig::default() };
    assert_eq!(Plan::new(&t, &bad).unwrap_err(), PlanError::MemoryOnlyNode(1));
    let missing = HostConfig { nodes: vec![5], ..HostConfig::default() };
    assert_eq!(Plan::new(&t, &missing).unwrap_err(), PlanError::NoSuchNode(5));
}

fn findings(
    name: &str,
    host: &HostConfig,
    memory: &MemoryConfig,
) -> Vec<(Level, &'static str, String)> {
    let report = HostReport::probe(&root(name)).unwrap();
    numa::check(&report, host, memory, &StorageNeeds::default())
        .into_iter()
        .map(|f| (f.level, f.topic, f.message))
        .collect()
}

fn level_of(found: &[(Level, &'static str, String)], topic: &str) -> Level {
    found.iter().find(|f| f.1 == topic).unwrap_or_else(|| panic!("no {topic}: {found:?}")).0
}

#[test]
fn checks_huge_page_reservations_per_node() {
    let two_mib = MemoryConfig {
        huge_pages: HugePages::Mib2,
        expected_state_mib: 100 * 1024,
        ..MemoryConfig::default()
    };
    let found = findings("two-socket-128", &server(), &two_mib);
    assert_eq!(level_of(&found, "huge_pages"), Level::Ok, "{found:?}");
    assert_eq!(level_of(&found, "cores"), Level::Ok);
    assert_eq!(level_of(&found, "memory"), Level::Ok);

    // No 1 GiB pages are reserved there: a server config asking for them fails, naming the
    // shortfall per node; a laptop config only warns.
    let one_gib = MemoryConfig { huge_pages: HugePages::Gib1, ..two_mib.clone() };
    let found = findings("two-socket-128", &server(), &one_gib);
    let (level, _, message) = found.iter().find(|f| f.1 == "huge_pages").unwrap();
    assert_eq!(*level, Level::Fail);
    assert!(message.contains("node 0 has 0 free, needs 50"), "{message}");
    let laptop = HostConfig { profile: Profile::Laptop, ..server() };
    assert_eq!(level_of(&findings("two-socket-128", &laptop, &one_gib), "huge_pages"), Level::Warn);

    // 64 × 1 GiB per node on the eight-node host: 512 GiB fits, 1000 GiB does not.
    let fits = MemoryConfig {
        huge_pages: HugePages::Gib1,
        expected_state_mib: 512 * 1024,
        ..MemoryConfig::default()
    };
    assert_eq!(level_of(&findings("eight-node-100", &server(), &fits), "huge_pages"), Level::Ok);
    let too_big = MemoryConfig { expected_state_mib: 1000 * 1024, ..fits };
    assert_eq!(
        level_of(&findings("eight-node-100", &server(), &too_big), "huge_pages"),
        Level::Fail
    );
    // THP is off there.
    let thp = MemoryConfig { huge_pages: HugePages::Thp, ..MemoryConfig::default() };
    assert_eq!(level_of(&findings("eight-node-100", &server(), &thp), "huge_pages"), Level::Fail);
}

#[test]
fn checks_cores_and_memory_size() {
    // Seven service cores on a four-core laptop: a server config fails, a laptop one warns.
    let found = findings("laptop", &server(), &MemoryConfig::default());
    assert_eq!(level_of(&found, "cores"), Level::Fail);
    let laptop = HostConfig { profile: Profile::Laptop, ..server() };
    assert_eq!(
        level_of(&findings("laptop", &laptop, &MemoryConfig::default()), "cores"),
        Level::Warn
    );

    let huge_state = MemoryConfig { expected_state_mib: 64 * 1024, ..MemoryConfig::default() };
    let found = findings("laptop", &HostConfig::default(), &huge_state);
    assert_eq!(level_of(&found, "memory"), Level::Warn, "{found:?}");

    // NOMT's caches count too: 20 GiB of state fits the laptop's 32 GiB, not with 16 GiB of
    // caches on top.
    let state = MemoryConfig { expected_state_mib: 20 * 1024, ..MemoryConfig::default() };
    let report = HostReport::probe(&root("laptop")).unwrap();
    let level = |cache_gib: u64| {
        let storage = StorageNeeds { nomt_cache_bytes: cache_gib << 30, ..StorageNeeds::default() };
        let found = numa::check(&report, &HostConfig::default(), &state, &storage);
        let memory = found.into_iter().find(|f| f.topic == "memory").unwrap();
        (memory.level, memory.message)
    };
    assert_eq!(level(8).0, Level::Ok, "{:?}", level(8));
    let (found, message) = level(16);
    assert_eq!(found, Level::Warn);
    assert!(message.contains("NOMT's caches 16384 MiB"), "{message}");

    // A memory-only node is not a place for executors.
    let bad = HostConfig { nodes: vec![1], profile: Profile::Server, ..HostConfig::default() };
    let found = findings("memory-only-node", &bad, &MemoryConfig::default());
    let (level, _, message) = found.iter().find(|f| f.1 == "cores").unwrap();
    assert_eq!(*level, Level::Fail);
    assert!(message.contains("node 1 has no CPUs"), "{message}");
}

#[test]
fn plans_and_reports_serialize() {
    let t = topology("two-socket-128");
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["nodes"][1]["distances"], serde_json::json!([21, 10]));
    let plan = Plan::new(&t, &server()).unwrap();
    assert!(plan.describe().contains("executors node 1: 64 threads on cpus 64-127"));
}
