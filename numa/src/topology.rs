//! The host's NUMA topology as sysfs describes it: nodes, their CPUs and memory, SMT siblings,
//! distances, huge-page pools and the transparent-huge-page mode.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::cpulist;

/// sysfs could not be read or says something this crate cannot parse.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A file that must exist could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's content is not in the kernel's format.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How transparent huge pages are enabled (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThpMode {
    /// Every anonymous mapping may get huge pages.
    Always,
    /// Only regions marked with `madvise(MADV_HUGEPAGE)`.
    Madvise,
    /// Never.
    Never,
    /// The kernel has no THP support (the file is missing).
    Unavailable,
}

impl fmt::Display for ThpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::Madvise => "madvise",
            Self::Never => "never",
            Self::Unavailable => "unavailable",
        })
    }
}

/// One pool of huge pages of one size (on a node or host-wide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HugePool {
    /// Page size in bytes (2 MiB, 1 GiB).
    pub page_bytes: u64,
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Pages not in use (`free_hugepages`).
    pub free: u64,
}

/// One NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Node number.
    pub id: usize,
    /// Online CPUs on this node (empty for a memory-only node).
    pub cpus: Vec<usize>,
    /// Memory on this node in bytes, if sysfs says.
    pub mem_total: Option<u64>,
    /// Free memory on this node in bytes, if sysfs says.
    pub mem_free: Option<u64>,
    /// Distance to every node, by node index in [`Topology::nodes`] (10 = local).
    pub distances: Vec<u32>,
    /// Huge-page pools on this node, smallest page first.
    pub huge_pages: Vec<HugePool>,
}

/// One physical core: the CPUs (SMT threads) that share it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Core {
    /// Node the core belongs to.
    pub node: usize,
    /// Socket (`physical_package_id`).
    pub package: usize,
    /// Its online CPUs, lowest first; the first is the core's primary thread.
    pub cpus: Vec<usize>,
}

/// The whole host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The sysfs root this was read from.
    pub root: PathBuf,
    /// NUMA nodes, by id.
    pub nodes: Vec<Node>,
    /// Physical cores, by node and then by primary CPU.
    pub cores: Vec<Core>,
    /// THP mode.
    pub thp: ThpMode,
    /// Host-wide huge-page pools, smallest page first.
    pub huge_pages: Vec<HugePool>,
    /// True if sysfs had no `devices/system/node` (a kernel without NUMA): one node was
    /// assumed.
    pub numa_absent: bool,
}

impl Topology {
    /// Reads the running host (`/sys`).
    pub fn host() -> Result<Self, TopologyError> {
        Self::read("/sys")
    }

    /// Reads a sysfs tree rooted at `root` (`/sys` on a real host; a fixture tree in tests).
    pub fn read(root: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let root = root.as_ref();
        let cpu_dir = root.join("devices/system/cpu");
        let online = cpulist_file(&cpu_dir.join("online"))?;
        let node_dir = root.join("devices/system/node");
        let numa_absent = !node_dir.join("online").exists();

        let node_ids = if numa_absent { vec![0] } else { cpulist_file(&node_dir.join("online"))? };
        let mut nodes = Vec::with_capacity(node_ids.len());
        let mut node_of_cpu = BTreeMap::new();
        for &id in &node_ids {
            let dir = node_dir.join(format!("node{id}"));
            let cpus: Vec<usize> = if numa_absent {
                online.clone()
            } else {
                cpulist_file(&dir.join("cpulist"))?
                    .into_iter()
                    .filter(|c| online.binary_search(c).is_ok())
                    .collect()
            };
            for &cpu in &cpus {
                node_of_cpu.insert(cpu, id);
            }
            let (mem_total, mem_free) = read_meminfo(&dir.join("meminfo"))?;
            let distances = match optional(&dir.join("distance"))? {
                Some(text) => text
                    .split_whitespace()
                    .map(|d| d.parse::<u32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| parse_error(&dir.join("distance"), e))?,
                None => vec![10],
            };
            let huge_pages = read_huge_pools(&dir.join("hugepages"))?;
            nodes.push(Node { id, cpus, mem_total, mem_free, distances, huge_pages });
        }

        // Group online CPUs into physical cores by their SMT sibling lists.
        let mut cores: BTreeMap<(usize, usize), Core> = BTreeMap::new();
        for &cpu in &online {
            let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
            let siblings: Vec<usize> = match optional(&topo.join("thread_siblings_list"))? {
                Some(text) => cpulist::parse(&text)
                    .map_err(|e| parse_error(&topo.join("thread_siblings_list"), e))?,
                None => vec![cpu],
            };
            let siblings: Vec<usize> =
                siblings.into_iter().filter(|c| online.binary_search(c).is_ok()).collect();
            let primary = siblings.first().copied().unwrap_or(cpu);
            let package = match optional(&topo.join("physical_package_id"))? {
                Some(text) => text
                    .trim()
                    .parse::<i64>()
                    .map_err(|e| parse_error(&topo.join("physical_package_id"), e))?
                    .max(0) as usize,
                None => 0,
            };
            let node = node_of_cpu.get(&cpu).copied().unwrap_or(0);
            cores.entry((node, primary)).or_insert(Core { node, package, cpus: siblings });
        }

        let thp = match optional(&root.join("kernel/mm/transparent_hugepage/enabled"))? {
            Some(text) => parse_thp(&text)
                .ok_or_else(|| parse_error(&root.join("kernel/mm/transparent_hugepage"), &text))?,
            None => ThpMode::Unavailable,
        };
        let huge_pages = read_huge_pools(&root.join("kernel/mm/hugepages"))?;
        Ok(Self {
            root: root.to_path_buf(),
            nodes,
            cores: cores.into_values().collect(),
            thp,
            huge_pages,
            numa_absent,
        })
    }

    /// Keeps only `allowed` CPUs (a process's affinity mask, e.g. a container's cpuset), dropping
    /// cores left without CPUs. Nodes stay, possibly without CPUs.
    pub fn restrict_to(&mut self, allowed: &[usize]) {
        for node in &mut self.nodes {
            node.cpus.retain(|c| allowed.contains(c));
        }
        for core in &mut self.cores {
            core.cpus.retain(|c| allowed.contains(c));
        }
        self.cores.retain(|core| !core.cpus.is_empty());
    }

    /// Nodes that have CPUs (memory-only nodes excluded).
    pub fn cpu_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| !n.cpus.is_empty())
    }

    /// Online CPUs.
    pub fn cpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.cpus.len()).sum()
    }

    /// True if any core has more than one thread.
    pub fn smt(&self) -> bool {
        self.cores.iter().any(|c| c.cpus.len() > 1)
    }

    /// Total memory in bytes, if known.
    pub fn mem_total(&self) -> Option<u64> {
        self.nodes.iter().map(|n| n.mem_total).sum()
    }

    /// The node a CPU belongs to.
    pub fn node_of(&self, cpu: usize) -> Option<usize> {
        self.nodes.iter().find(|n| n.cpus.contains(&cpu)).map(|n| n.id)
    }

    /// Host-wide pool of `page_bytes` pages, if the kernel supports that size.
    pub fn huge_pool(&self, page_bytes: u64) -> Option<HugePool> {
        self.huge_pages.iter().copied().find(|p| p.page_bytes == page_bytes)
    }
}

fn parse_error(path: &Path, reason: impl fmt::Display) -> TopologyError {
    TopologyError::Parse { path: path.to_path_buf(), reason: reason.to_string() }
}

fn required(path: &Path) -> Result<String, TopologyError> {
    std::fs::read_to_string(path)
        .map_err(|source| TopologyError::Read { path: path.to_path_buf(), source })
}

fn optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TopologyError::Read { path: path.to_path_buf(), source }),
    }
}

fn cpulist_file(path: &Path) -> Result<Vec<usize>, TopologyError> {
    cpulist::parse(&required(path)?).map_err(|e| parse_error(path, e))
}

/// `Node 0 MemTotal:  15034580 kB` lines; either value may be missing.
fn read_meminfo(path: &Path) -> Result<(Option<u64>, Option<u64>), TopologyError> {
    let Some(text) = optional(path)? else { return Ok((None, None)) };
    let mut total = None;
    let mut free = None;
    for line in text.lines() {
        let mut words = line.split_whitespace().skip(2);
        let (Some(key), Some(value)) = (words.next(), words.next()) else { continue };
        let slot = match key {
            "MemTotal:" => &mut total,
            "MemFree:" => &mut free,
            _ => continue,
        };
        let kb: u64 = value.parse().map_err(|e| parse_error(path, e))?;
        *slot = Some(kb * 1024);
    }
    Ok((total, free))
}

/// `hugepages-<size>kB/{nr,free}_hugepages` under `dir`.
fn read_huge_pools(dir: &Path) -> Result<Vec<HugePool>, TopologyError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut pools = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kb) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let number = |file: &str| -> Result<u64, TopologyError> {
            let path = entry.path().join(file);
            match optional(&path)? {
                Some(text) => text.trim().parse().map_err(|e| parse_error(&path, e)),
                None => Ok(0),
            }
        };
        pools.push(HugePool {
            page_bytes: kb * 1024,
            total: number("nr_hugepages")?,
            free: number("free_hugepages")?,
        });
    }
    pools.sort_by_key(|p| p.page_bytes);
    Ok(pools)
}

/// `always [madvise] never` → the bracketed word.
fn parse_thp(text: &str) -> Option<ThpMode> {
    let chosen = text.split_whitespace().find(|w| w.starts_with('['))?;
    match chosen.trim_matches(|c| c == '[' || c == ']') {
        "always" => Some(ThpMode::Always),
        "madvise" => Some(ThpMode::Madvise),
        "never" => Some(ThpMode::Never),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thp_mode_is_the_bracketed_word() {
        assert_eq!(parse_thp("always [madvise] never\n"), Some(ThpMode::Madvise));
        assert_eq!(parse_thp("[always] madvise never"), Some(ThpMode::Always));
        assert_eq!(parse_thp("always madvise never"), None);
    }

    #[test]
    fn the_running_host_reads() {
        let host = Topology::host().expect("this host's sysfs reads");
        assert!(host.cpu_count() >= 1);
        assert!(!host.cores.is_empty());
        let cpus_in_cores: usize = host.cores.iter().map(|c| c.cpus.len()).sum();
        assert_eq!(cpus_in_cores, host.cpu_count(), "every online CPU is in exactly one core");
        // The affinity mask or a cgroup quota may hide CPUs from this process, never add some.
        assert!(host.cpu_count() >= std::thread::available_parallelism().unwrap().get());
    }
}
