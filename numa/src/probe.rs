//! What a host offers beyond its topology: kernel, io_uring, memlock limit, CPU frequency
//! governor, automatic NUMA balancing. Topology comes from the sysfs root given; the rest
//! always describes the machine this runs on.

use std::path::Path;

use serde::Serialize;

use crate::{Topology, TopologyError};

/// A host, as the sequencer and `tuning` see it.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Nodes, cores, memory, huge pages, THP.
    pub topology: Topology,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Kernel (major, minor), if the release parses.
    pub kernel_version: Option<(u32, u32)>,
    /// `Ok` if an io_uring instance can be created here; otherwise why not.
    pub io_uring: Result<(), String>,
    /// `RLIMIT_MEMLOCK` soft limit in bytes; `None` means unlimited.
    pub memlock: Option<u64>,
    /// Frequency governors in use, with how many CPUs use each (empty if cpufreq is absent,
    /// as in most VMs).
    pub governors: Vec<(String, usize)>,
    /// `kernel.numa_balancing` (automatic page migration), if the kernel has it.
    pub numa_balancing: Option<bool>,
    /// This process's allowed CPUs (its affinity mask).
    pub allowed_cpus: Vec<usize>,
    /// True if the process runs as root.
    pub root: bool,
    /// Online CPUs this process may not use, removed from `topology` (only when probing the
    /// running host, whose affinity mask or cpuset applies).
    pub excluded_cpus: Vec<usize>,
}

impl HostReport {
    /// Probes: topology from `sysfs` (normally `/sys`), everything else from this machine.
    pub fn probe(sysfs: &Path) -> Result<Self, TopologyError> {
        let mut topology = Topology::read(sysfs)?;
        let allowed_cpus = crate::pin::current_affinity();
        let mut excluded_cpus = Vec::new();
        if sysfs == Path::new("/sys") && !allowed_cpus.is_empty() {
            excluded_cpus = topology
                .nodes
                .iter()
                .flat_map(|n| n.cpus.iter().copied())
                .filter(|c| !allowed_cpus.contains(c))
                .collect();
            topology.restrict_to(&allowed_cpus);
        }
        let kernel = kernel_release();
        let kernel_version = parse_kernel_version(&kernel);
        let mut governors: Vec<(String, usize)> = Vec::new();
        for cpu in topology.nodes.iter().flat_map(|n| &n.cpus) {
            let path = sysfs.join(format!("devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"));
            if let Ok(g) = std::fs::read_to_string(path) {
                let g = g.trim().to_string();
                match governors.iter_mut().find(|(name, _)| *name == g) {
                    Some(entry) => entry.1 += 1,
                    None => governors.push((g, 1)),
                }
            }
        }
        let numa_balancing = std::fs::read_to_string("/proc/sys/kernel/numa_balancing")
            .ok()
            .map(|t| t.trim() != "0");
        Ok(Self {
            topology,
            kernel,
            kernel_version,
            io_uring: io_uring_usable(),
            memlock: memlock_limit(),
            governors,
            numa_balancing,
            allowed_cpus,
            excluded_cpus,
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
        })
    }

    /// A human-readable report.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let t = &self.topology;
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        let mut out = String::new();
        let _ = writeln!(out, "sysfs root     {}", t.root.display());
        let _ = writeln!(
            out,
            "cpus           {} online, {} physical cores, SMT {}",
            t.cpu_count(),
            t.cores.len(),
            if t.smt() { "on" } else { "off" }
        );
        let _ = writeln!(
            out,
            "memory         {}",
            t.mem_total().map(gib).unwrap_or_else(|| "unknown".into())
        );
        if t.numa_absent {
            let _ = writeln!(out, "numa           not in this kernel: one node assumed");
        }
        for node in &t.nodes {
            let cores = t.cores.iter().filter(|c| c.node == node.id).count();
            let huge: Vec<String> = node
                .huge_pages
                .iter()
                .filter(|p| p.total > 0)
                .map(|p| format!("{}×{} ({} free)", p.total, page_name(p.page_bytes), p.free))
                .collect();
            let _ = writeln!(
                out,
                "node {:<9} {} cores, cpus {}, memory {} (free {}), distances {:?}{}",
                node.id,
                cores,
                if node.cpus.is_empty() {
                    "none (memory only)".into()
                } else {
                    crate::cpulist::format(&node.cpus)
                },
                node.mem_total.map(gib).unwrap_or_else(|| "?".into()),
                node.mem_free.map(gib).unwrap_or_else(|| "?".into()),
                node.distances,
                if huge.is_empty() {
                    String::new()
                } else {
                    format!(", huge pages {}", huge.join(", "))
                }
            );
        }
        for pool in &t.huge_pages {
            let _ = writeln!(
                out,
                "huge pages     {}: {} reserved, {} free",
                page_name(pool.page_bytes),
                pool.total,
                pool.free
            );
        }
        let _ = writeln!(out, "thp            {}", t.thp);
        let _ = writeln!(out, "kernel         {}", self.kernel);
        let _ = writeln!(
            out,
            "io_uring       {}",
            match &self.io_uring {
                Ok(()) => "usable".to_string(),
                Err(e) => format!("NOT usable: {e}"),
            }
        );
        let _ = writeln!(
            out,
            "memlock        {}",
            self.memlock.map(|b| format!("{} KiB", b / 1024)).unwrap_or_else(|| "unlimited".into())
        );
        let _ = writeln!(
            out,
            "governor       {}",
            if self.governors.is_empty() {
                "no cpufreq (fixed frequency or VM)".to_string()
            } else {
                self.governors
                    .iter()
                    .map(|(g, n)| format!("{g} ({n} cpus)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some(on) = self.numa_balancing {
            let _ = writeln!(out, "numa balancing {}", if on { "on" } else { "off" });
        }
        let _ = writeln!(out, "allowed cpus   {}", crate::cpulist::format(&self.allowed_cpus));
        if !self.excluded_cpus.is_empty() {
            let _ = writeln!(
                out,
                "               (cpus {} are outside this process's affinity and left out above)",
                crate::cpulist::format(&self.excluded_cpus)
            );
        }
        out
    }
}

/// `2 MiB`, `1 GiB`.
pub fn page_name(bytes: u64) -> String {
    if bytes >= 1 << 30 { format!("{} GiB", bytes >> 30) } else { format!("{} MiB", bytes >> 20) }
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain data that uname fills.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(uts.release.as_ptr()).to_string_lossy().into_owned()
    }
}

/// `6.18.2-generic` → (6, 18).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn memlock_limit() -> Option<u64> {
    // SAFETY: rlimit is plain data that getrlimit fills.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0
            || limit.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        Some(limit.rlim_cur)
    }
}

/// Can this process create an io_uring the way NOMT does (single issuer, kernel ≥ 6.0)?
fn io_uring_usable() -> Result<(), String> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        match text.trim() {
            "2" => return Err("disabled by kernel.io_uring_disabled=2".into()),
            "1" => tracing::debug!("kernel.io_uring_disabled=1: only io_uring_group may use it"),
            _ => {}
        }
    }
    io_uring::IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .build(8)
        .map(drop)
        .map_err(|e| format!("io_uring_setup failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.18.2-1-cloud-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    #[test]
    fn this_host_probes() {
        let report = HostReport::probe(Path::new("/sys")).unwrap();
        assert!(report.kernel_version.is_some(), "{}", report.kernel);
        assert!(!report.allowed_cpus.is_empty());
        let text = report.describe();
        assert!(text.contains("io_uring"), "{text}");
    }
}
