//! `tuning`: what operators and performance engineers run on a host before the sequencer. It
//! probes a host (`probe`), writes a commented `sequencer.toml` for it together with the host
//! commands the config assumes (`plan`, which runs them only with `--apply`), and checks a
//! host against a config (`check`, the same check the sequencer runs at start-up). Topology,
//! placement and checks live in the `numa` crate; this crate turns them into files, commands
//! and exit codes. It does not link the sequencer.

use std::{fmt::Write as _, path::Path};

use numa::{HostConfig, HugePages, MemoryConfig, Plan, Profile, Topology, cpulist, page_name};

/// Bytes a state key (an account or a storage slot) takes in memory, about: used to turn an
/// expected state size into a key count for NOMT's table.
pub const BYTES_PER_KEY: u64 = 160;

/// Bytes of NOMT's page tree per key, about (measured: 110–145 at 5–10 M random keys), and of
/// its leaves (about 200 with 40-byte values): what the page and leaf caches need to hold the
/// whole trie, so that no block waits for a page read from disk.
const NOMT_PAGE_BYTES_PER_KEY: u64 = 160;
const NOMT_LEAF_BYTES_PER_KEY: u64 = 200;
/// NOMT's own cache default, MiB: the least the plan gives either cache.
const NOMT_CACHE_MIN_MIB: u64 = 256;

/// What `tuning plan` decided, before it is written out.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// The `[host]` section.
    pub host: HostConfig,
    /// The `[memory]` section.
    pub memory: MemoryConfig,
    /// NOMT hash-table buckets.
    pub nomt_buckets: u32,
    /// NOMT commit threads.
    pub nomt_commit_concurrency: usize,
    /// NOMT io_uring workers.
    pub nomt_io_workers: usize,
    /// NOMT page cache, MiB.
    pub nomt_page_cache_mib: u64,
    /// NOMT leaf cache, MiB.
    pub nomt_leaf_cache_mib: u64,
    /// Mini-block interval, as the config writes it.
    pub mini_block_interval: &'static str,
    /// The data directory.
    pub datadir: &'static str,
    /// Where every thread runs.
    pub plan: Plan,
    /// Host commands the config assumes, each with why.
    pub commands: Vec<Command>,
}

/// One host command an operator should run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Command {
    /// Why.
    pub why: String,
    /// The shell command.
    pub shell: String,
    /// For `--apply`: a file to write and its content; `None` for commands that cannot be
    /// applied at runtime (kernel command line, systemd).
    pub write: Option<(String, String)>,
}

/// Plans a config for `topology` under `profile` for a state of `expected_state_mib`.
pub fn propose(topology: &Topology, profile: Profile, expected_state_mib: u64) -> Proposal {
    let cores = topology.cores.len();
    let host = match profile {
        // The defaults, unpinned: a laptop's cores are shared with everything else.
        Profile::Laptop => HostConfig { profile, pin: false, ..HostConfig::default() },
        Profile::Server => HostConfig {
            profile,
            os_cores: 1,
            rpc_cores: (cores / 32).clamp(2, 8),
            nomt_cores: (cores / 32).clamp(2, 8),
            jit_cores: (cores / 64).clamp(1, 4),
            ..HostConfig::default()
        },
    };
    let host = fit_services(host, cores);
    let plan = Plan::new(topology, &host).expect("a plan over every node with CPUs exists");
    let memory_nodes = plan.memory_nodes.len().max(1) as u64;
    let per_node_mib = expected_state_mib.div_ceil(memory_nodes);
    let gib_pages = topology.huge_pool(1 << 30).is_some();
    // 2 MiB pages already reserved for the whole state need no reboot; otherwise a large state
    // gets 1 GiB pages (fewer TLB misses), reserved at boot.
    let two_mib_ready = plan.memory_nodes.iter().all(|&id| {
        let (_, need) = pages_per_node_mib(per_node_mib, 2 << 20);
        node_pool(topology, id, 2 << 20) >= need
    });
    let huge_pages = match profile {
        Profile::Laptop => HugePages::Auto,
        Profile::Server if two_mib_ready => HugePages::Mib2,
        Profile::Server if gib_pages && per_node_mib >= 8 * 1024 => HugePages::Gib1,
        Profile::Server => HugePages::Mib2,
    };
    let memory = MemoryConfig {
        huge_pages,
        region_mib: match (profile, huge_pages) {
            (Profile::Laptop, _) => 64,
            (_, HugePages::Gib1) => 1024,
            _ => 512,
        },
        expected_state_mib,
        bind: true,
        shards: (cores * 2).next_power_of_two().clamp(64, 4096),
        allocator_purge_ms: MemoryConfig::default().allocator_purge_ms,
    };
    let keys = (expected_state_mib << 20) / BYTES_PER_KEY;
    let nomt_buckets = (keys / 16).max(16_384).next_power_of_two().min(1 << 31) as u32;
    let memory_mib = plan
        .memory_nodes
        .iter()
        .filter_map(|&id| topology.nodes.iter().find(|n| n.id == id)?.mem_total)
        .sum::<u64>()
        >> 20;
    let (nomt_page_cache_mib, nomt_leaf_cache_mib) =
        nomt_caches_mib(keys, expected_state_mib, memory_mib);
    let commands = host_commands(topology, &host, &memory, &plan);
    Proposal {
        nomt_commit_concurrency: host.nomt_cores.max(1),
        nomt_io_workers: (host.nomt_cores * 2).max(3),
        host,
        memory,
        nomt_buckets,
        nomt_page_cache_mib,
        nomt_leaf_cache_mib,
        mini_block_interval: "10ms",
        datadir: match profile {
            Profile::Laptop => "./sequencer-data",
            Profile::Server => "/var/lib/sequencer",
        },
        plan,
        commands,
    }
}

/// NOMT's page and leaf cache sizes (MiB) for a trie of `keys` keys: large enough to hold it
/// all, but shrunk so that the state and the caches take at most three quarters of
/// `memory_mib` (the nodes' memory; 0 when unknown, then no cap), and never below NOMT's own
/// default.
pub fn nomt_caches_mib(keys: u64, state_mib: u64, memory_mib: u64) -> (u64, u64) {
    let page = (keys * NOMT_PAGE_BYTES_PER_KEY) >> 20;
    let leaf = (keys * NOMT_LEAF_BYTES_PER_KEY) >> 20;
    let room = (memory_mib * 3 / 4).saturating_sub(state_mib);
    let (page, leaf) = if memory_mib > 0 && page + leaf > room {
        (page * room / (page + leaf), leaf * room / (page + leaf))
    } else {
        (page, leaf)
    };
    (page.max(NOMT_CACHE_MIN_MIB), leaf.max(NOMT_CACHE_MIN_MIB))
}

/// Shrinks the service reservations until they and one executor fit in `cores`: the JIT's
/// first, then the OS's, then NOMT's, then RPC's, so that a small host still gets a config it
/// satisfies.
fn fit_services(mut host: HostConfig, cores: usize) -> HostConfig {
    loop {
        let services = host.os_cores + host.rpc_cores + host.nomt_cores + host.jit_cores;
        if services < cores {
            return host;
        }
        let next =
            [&mut host.jit_cores, &mut host.os_cores, &mut host.nomt_cores, &mut host.rpc_cores]
                .into_iter()
                .find(|n| **n > 0);
        match next {
            Some(n) => *n -= 1,
            None => return host,
        }
    }
}

/// Huge pages to reserve per node for `memory`: the expected state plus a quarter for table
/// growth (a hash table doubles when it fills).
pub fn pages_per_node(memory: &MemoryConfig, nodes: usize) -> (u64, u64) {
    let page: u64 = if memory.huge_pages == HugePages::Gib1 { 1 << 30 } else { 2 << 20 };
    pages_per_node_mib(memory.expected_state_mib.div_ceil(nodes.max(1) as u64), page)
}

fn pages_per_node_mib(per_node_mib: u64, page: u64) -> (u64, u64) {
    let per_node = per_node_mib << 20;
    (page, (per_node + per_node / 4).div_ceil(page))
}

/// Pages of `page` bytes reserved on node `id`.
fn node_pool(topology: &Topology, id: usize, page: u64) -> u64 {
    topology
        .nodes
        .iter()
        .find(|n| n.id == id)
        .and_then(|n| n.huge_pages.iter().find(|p| p.page_bytes == page))
        .map_or(0, |p| p.total)
}

fn host_commands(
    topology: &Topology,
    host: &HostConfig,
    memory: &MemoryConfig,
    plan: &Plan,
) -> Vec<Command> {
    let mut out = Vec::new();
    if matches!(memory.huge_pages, HugePages::Gib1 | HugePages::Mib2) {
        let (page, pages) = pages_per_node(memory, plan.memory_nodes.len());
        for &node in &plan.memory_nodes {
            let have = node_pool(topology, node, page);
            if have >= pages {
                continue;
            }
            let file = format!(
                "/sys/devices/system/node/node{node}/hugepages/hugepages-{}kB/nr_hugepages",
                page / 1024
            );
            out.push(Command {
                why: format!(
                    "reserve {pages} × {} on node {node} for its share of the state ({have} now)",
                    page_name(page)
                ),
                shell: format!("echo {pages} > {file}"),
                write: Some((file, pages.to_string())),
            });
        }
        if page == 1 << 30 {
            let total = pages * plan.memory_nodes.len() as u64;
            out.push(Command {
                why: "1 GiB pages are best reserved at boot, before memory fragments".into(),
                shell: format!(
                    "add to the kernel command line: default_hugepagesz=2M hugepagesz=1G \
                     hugepages={total}"
                ),
                write: None,
            });
        }
    }
    if topology.cpu_nodes().count() > 1 && host.pin {
        out.push(Command {
            why: "stop the kernel migrating pages away from the nodes they were placed on".into(),
            shell: "sysctl -w kernel.numa_balancing=0".into(),
            write: Some(("/proc/sys/kernel/numa_balancing".into(), "0".into())),
        });
    }
    let governed = topology.root.join("devices/system/cpu/cpu0/cpufreq/scaling_governor");
    if host.profile == Profile::Server && governed.exists() {
        for cpu in plan.process_cpus() {
            let file = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
            out.push(Command {
                why: format!("cpu {cpu}: full frequency, no ramp-up delay"),
                shell: format!("echo performance > {file}"),
                write: Some((file, "performance".into())),
            });
        }
    }
    if host.pin && !plan.shared {
        out.push(Command {
            why: "keep the sequencer off the operating system's cores (systemd drop-in)".into(),
            shell: format!(
                "systemctl edit sequencer  # [Service] CPUAffinity={} LimitMEMLOCK=infinity",
                cpulist::format(&plan.process_cpus()).replace(',', " ")
            ),
            write: None,
        });
    }
    out
}

/// The config file: every section the plan decides, each key commented.
pub fn render(proposal: &Proposal, topology: &Topology) -> String {
    let p = proposal;
    let h = &p.host;
    let m = &p.memory;
    let mut out = String::new();
    let _ = writeln!(out, "# sequencer.toml written by `tuning plan` for this host:");
    let _ = writeln!(
        out,
        "#   {} node(s), {} physical cores, {} CPUs, SMT {}, {} of memory, THP {}",
        topology.nodes.len(),
        topology.cores.len(),
        topology.cpu_count(),
        if topology.smt() { "on" } else { "off" },
        topology.mem_total().map(|b| format!("{} GiB", b >> 30)).unwrap_or_else(|| "?".into()),
        topology.thp
    );
    let _ = writeln!(out, "# Placement (sequencer threads, one executor per listed CPU):");
    for line in p.plan.describe().lines() {
        let _ = writeln!(out, "#   {line}");
    }
    if !p.commands.is_empty() {
        let _ =
            writeln!(out, "# Host commands this config assumes (`tuning plan --apply` runs the");
        let _ = writeln!(out, "# runtime ones as root):");
        for c in &p.commands {
            let _ = writeln!(out, "#   {}    # {}", c.shell, c.why);
        }
    }
    let _ = writeln!(out, "# Keys not written here take the sequencer's defaults (README).");
    let _ = writeln!(out);
    let _ = writeln!(out, "[blocks]");
    let _ = writeln!(out, "# Longest time between mini-blocks.");
    let _ = writeln!(out, "mini_block_interval = \"{}\"", p.mini_block_interval);
    let _ = writeln!(out);
    let _ = writeln!(out, "[storage]");
    let _ = writeln!(out, "# WAL, block store, checkpoints and NOMT (needs O_DIRECT: not tmpfs).");
    let _ = writeln!(out, "datadir = \"{}\"", p.datadir);
    let _ = writeln!(
        out,
        "# NOMT hash-table pages (4 KiB each, {} MiB on disk): about one per 16 keys of a",
        (u64::from(p.nomt_buckets) * 4096) >> 20
    );
    let _ =
        writeln!(out, "# {} MiB state at ~{BYTES_PER_KEY} bytes per key.", m.expected_state_mib);
    let _ = writeln!(out, "nomt_buckets = {}", p.nomt_buckets);
    let _ = writeln!(out, "# One commit thread per NOMT core.");
    let _ = writeln!(out, "nomt_commit_concurrency = {}", p.nomt_commit_concurrency);
    let _ = writeln!(out, "# io_uring workers: two per NOMT core, at least NOMT's default of 3.");
    let _ = writeln!(out, "nomt_io_workers = {}", p.nomt_io_workers);
    let _ = writeln!(
        out,
        "# NOMT's caches, to hold the whole trie (~{NOMT_PAGE_BYTES_PER_KEY} B of pages and \
         ~{NOMT_LEAF_BYTES_PER_KEY} B of leaves"
    );
    let _ = writeln!(
        out,
        "# per key), within three quarters of the nodes' memory with the state; at least 256."
    );
    let _ = writeln!(out, "nomt_page_cache_mib = {}", p.nomt_page_cache_mib);
    let _ = writeln!(out, "nomt_leaf_cache_mib = {}", p.nomt_leaf_cache_mib);
    let _ = writeln!(out);
    let _ = writeln!(out, "[host]");
    let _ = writeln!(
        out,
        "# laptop: unmet requirements warn; server: they stop the sequencer at start."
    );
    let _ = writeln!(
        out,
        "profile = \"{}\"",
        if h.profile == Profile::Server { "server" } else { "laptop" }
    );
    let _ = writeln!(out, "# Pin threads to the CPUs above.");
    let _ = writeln!(out, "pin = {}", h.pin);
    let _ = writeln!(out, "# One executor per physical core; SMT siblings stay idle.");
    let _ = writeln!(out, "use_smt = {}", h.use_smt);
    let _ =
        writeln!(out, "# Physical cores for the OS, RPC/network, NOMT, and JIT compile threads.");
    let _ = writeln!(out, "os_cores = {}", h.os_cores);
    let _ = writeln!(out, "rpc_cores = {}", h.rpc_cores);
    let _ = writeln!(out, "nomt_cores = {}", h.nomt_cores);
    let _ = writeln!(out, "jit_cores = {}", h.jit_cores);
    let _ = writeln!(out, "# 0: every core left runs an executor.");
    let _ = writeln!(out, "executors_per_node = {}", h.executors_per_node);
    let _ = writeln!(out, "# Empty: every node with CPUs.");
    let _ = writeln!(out, "nodes = []");
    let _ = writeln!(out);
    let _ = writeln!(out, "[memory]");
    let pages = match m.huge_pages {
        HugePages::Auto => "auto",
        HugePages::Gib1 => "1g",
        HugePages::Mib2 => "2m",
        HugePages::Thp => "thp",
        HugePages::Off => "off",
    };
    let _ = writeln!(out, "# Pages for state memory: auto, 1g, 2m (reserved), thp or off.");
    let _ = writeln!(out, "huge_pages = \"{pages}\"");
    let _ = writeln!(out, "# State memory grows by regions of this many MiB per node.");
    let _ = writeln!(out, "region_mib = {}", m.region_mib);
    let _ = writeln!(out, "# Expected state size; huge-page reservations above are sized for it.");
    let _ = writeln!(out, "expected_state_mib = {}", m.expected_state_mib);
    let _ = writeln!(out, "# Bind each node's state memory to that node.");
    let _ = writeln!(out, "bind = {}", m.bind);
    let _ = writeln!(out, "# Account-table shards, spread over the nodes: two per core.");
    let _ = writeln!(out, "shards = {}", m.shards);
    let _ = writeln!(
        out,
        "# Freed heap memory kept for reuse (ms before it goes back to the OS; -1: kept)."
    );
    let _ = writeln!(out, "allocator_purge_ms = {}", m.allocator_purge_ms);
    out
}

/// Runs the runtime commands (those with a file to write). Returns one line per command.
pub fn apply(commands: &[Command]) -> Vec<Result<String, String>> {
    commands
        .iter()
        .filter_map(|c| c.write.as_ref().map(|w| (c, w)))
        .map(|(c, (file, value))| {
            std::fs::write(file, value)
                .map(|()| format!("done: {}", c.shell))
                .map_err(|e| format!("failed: {}: {e}", c.shell))
        })
        .collect()
}

/// The sections of a sequencer config that `check` reads; other sections are ignored here
/// (the sequencer validates them).
#[derive(Debug, Default, serde::Deserialize)]
pub struct CheckedConfig {
    /// `[host]`.
    #[serde(default)]
    pub host: HostConfig,
    /// `[memory]`.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// `[storage]`, the keys the check needs.
    #[serde(default)]
    pub storage: CheckedStorage,
}

/// The `[storage]` keys `check` needs.
#[derive(Debug, serde::Deserialize)]
pub struct CheckedStorage {
    /// Data directory (the sequencer's default when absent).
    #[serde(default)]
    pub datadir: Option<std::path::PathBuf>,
    /// NOMT buckets.
    #[serde(default = "default_buckets")]
    pub nomt_buckets: u32,
    /// NOMT page cache, MiB.
    #[serde(default = "default_cache_mib")]
    pub nomt_page_cache_mib: u64,
    /// NOMT leaf cache, MiB.
    #[serde(default = "default_cache_mib")]
    pub nomt_leaf_cache_mib: u64,
}

impl Default for CheckedStorage {
    fn default() -> Self {
        Self {
            datadir: None,
            nomt_buckets: default_buckets(),
            nomt_page_cache_mib: default_cache_mib(),
            nomt_leaf_cache_mib: default_cache_mib(),
        }
    }
}

fn default_cache_mib() -> u64 {
    NOMT_CACHE_MIN_MIB
}

fn default_buckets() -> u32 {
    16_384
}

/// Reads a sequencer config's checked sections.
pub fn read_config(path: &Path) -> Result<CheckedConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nomt_caches_hold_the_trie_within_the_memory_left() {
        // 10 M keys: 1 525 MiB of pages and 1 907 MiB of leaves, with room to spare.
        assert_eq!(nomt_caches_mib(10_000_000, 1_600, 64 << 10), (1_525, 1_907));
        // 32 GiB: three quarters is 24 576 MiB, 20 000 of it state; the rest is split in
        // the same proportion.
        let (page, leaf) = nomt_caches_mib(100_000_000, 20_000, 32 << 10);
        assert!(page + leaf <= 24_576 - 20_000, "{page} + {leaf}");
        assert!(page + leaf > 24_576 - 20_000 - 2, "{page} + {leaf}");
        assert!((page * 200 / 160).abs_diff(leaf) <= 1, "{page} {leaf}");
        // A small state, a full host, an unknown memory size: NOMT's default at least.
        assert_eq!(nomt_caches_mib(1_000, 1, 0), (256, 256));
        assert_eq!(nomt_caches_mib(100_000_000, 40_000, 32 << 10), (256, 256));
        assert_eq!(nomt_caches_mib(100_000_000, 1, 0), (15_258, 19_073));
    }
}
