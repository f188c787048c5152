//! The `[host]` and `[memory]` sections of the sequencer's config: where threads run and how
//! state memory is placed. They live here because the sequencer, `tuning plan` and
//! `tuning check` all read them.

use serde::{Deserialize, Serialize};

/// What kind of host a config is for; decides whether an unmet requirement is fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A developer's machine: every unmet requirement is a warning and the sequencer degrades
    /// (no pinning, no huge pages).
    #[default]
    Laptop,
    /// A dedicated host: an unmet requirement stops the sequencer at start with the finding.
    Server,
}

/// `[host]`: thread placement.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// `laptop` or `server`. Default `laptop`.
    pub profile: Profile,
    /// Pin threads to the CPUs of the placement plan. Default true (nothing is pinned when the
    /// host has too few cores for dedicated service cores).
    pub pin: bool,
    /// Run executors on both SMT threads of a core instead of one. Default false.
    pub use_smt: bool,
    /// Physical cores left to the operating system (interrupts, daemons). Default 0.
    pub os_cores: usize,
    /// Physical cores for the JSON-RPC server and networking. Default 1.
    pub rpc_cores: usize,
    /// Physical cores for the NOMT commit and io_uring threads. Default 1.
    pub nomt_cores: usize,
    /// Physical cores for JIT compile threads. Default 1.
    pub jit_cores: usize,
    /// Most executor threads per node; 0 uses every core left. Default 0.
    pub executors_per_node: usize,
    /// NUMA nodes to run on; empty means every node with CPUs. Default empty.
    pub nodes: Vec<usize>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Laptop,
            pin: true,
            use_smt: false,
            os_cores: 0,
            rpc_cores: 1,
            nomt_cores: 1,
            jit_cores: 1,
            executors_per_node: 0,
            nodes: Vec::new(),
        }
    }
}

/// Which pages state memory asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum HugePages {
    /// Reserved 1 GiB pages, then 2 MiB ones if they are reserved and free, then THP, then
    /// plain pages. Default.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Reserved 1 GiB pages (`hugetlbfs`); required in the server profile.
    #[serde(rename = "1g")]
    Gib1,
    /// Reserved 2 MiB pages (`hugetlbfs`); required in the server profile.
    #[serde(rename = "2m")]
    Mib2,
    /// Transparent huge pages via `madvise(MADV_HUGEPAGE)`.
    #[serde(rename = "thp")]
    Thp,
    /// Plain 4 KiB pages.
    #[serde(rename = "off")]
    Off,
}

/// `[memory]`: state memory placement.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// `auto`, `1g`, `2m`, `thp` or `off`. Default `auto`.
    pub huge_pages: HugePages,
    /// State memory grows by regions of this many MiB per node (rounded up to the page size).
    /// Default 256.
    pub region_mib: u64,
    /// Expected size of the state in MiB, used to size huge-page reservations and checked
    /// against the host's memory. Default 1024.
    pub expected_state_mib: u64,
    /// Bind each node's regions to that node (`mbind`). Default true.
    pub bind: bool,
    /// State table shards (a power of two), spread over the nodes in use. Default 64.
    pub shards: usize,
    /// How long the process allocator (mimalloc) keeps freed memory before returning it to the
    /// operating system, in milliseconds; -1 keeps it for reuse. Default -1: NOMT and the
    /// block pipeline free and re-allocate buffers of many MiB every block, and memory handed
    /// back in between costs a page fault and a zeroed page (2 MiB with THP) to get again.
    pub allocator_purge_ms: i64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            huge_pages: HugePages::Auto,
            region_mib: 256,
            expected_state_mib: 1024,
            bind: true,
            shards: 64,
            allocator_purge_ms: -1,
        }
    }
}

impl MemoryConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.shards.is_power_of_two() || self.shards > 4096 {
            return Err(("memory.shards", format!("{} is not a power of two ≤ 4096", self.shards)));
        }
        if self.allocator_purge_ms < -1 {
            return Err(("memory.allocator_purge_ms", "must be -1 (keep) or at least 0".into()));
        }
        if self.region_mib < 64 {
            return Err(("memory.region_mib", "must be at least 64".into()));
        }
        Ok(())
    }
}
