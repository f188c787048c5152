//! Does a host satisfy a config? One finding per requirement. The sequencer runs this at
//! start-up (refusing to start on a failure) and `tuning check` prints it.
//!
//! Under the `server` profile an unmet placement or memory requirement is a failure; under
//! `laptop` it is a warning and the sequencer degrades (no pinning, smaller pages). What NOMT
//! cannot run without (io_uring, kernel ≥ 6.0, a usable data directory) fails in both.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    HostConfig, HostReport, MemoryConfig, Plan, Profile, config::HugePages, probe::page_name,
};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Satisfied.
    Ok,
    /// Not as configured; the sequencer degrades and says so.
    Warn,
    /// The sequencer refuses to start.
    Fail,
}

/// One requirement and whether the host meets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Verdict.
    pub level: Level,
    /// What was checked (`cores`, `huge_pages`, `io_uring`, …).
    pub topic: &'static str,
    /// What was found, with the numbers.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level} {:<12} {}", self.topic, self.message)
    }
}

/// Facts about storage the check needs (from the sequencer's `[storage]` section).
#[derive(Clone, Debug, Default)]
pub struct StorageNeeds {
    /// The data directory (NOMT and WAL); `None` skips the directory checks.
    pub datadir: Option<PathBuf>,
    /// Bytes NOMT's hash table takes on disk.
    pub nomt_bytes: u64,
    /// Bytes NOMT's page and leaf caches may take in memory, besides the state.
    pub nomt_cache_bytes: u64,
}

/// Checks `host` against the `[host]`, `[memory]` and `[storage]` needs of a config.
pub fn check(
    report: &HostReport,
    host: &HostConfig,
    memory: &MemoryConfig,
    storage: &StorageNeeds,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let unmet = if host.profile == Profile::Server { Level::Fail } else { Level::Warn };
    let mut push = |level, topic, message: String| out.push(Finding { level, topic, message });
    let topo = &report.topology;

    // Cores and placement.
    match Plan::new(topo, host) {
        Err(e) => push(unmet, "cores", e.to_string()),
        Ok(plan) => {
            if plan.shared {
                push(
                    unmet,
                    "cores",
                    format!(
                        "{} physical cores cannot give {} service cores (os {}, rpc {}, nomt {}, \
                         jit {}) and executors their own cores: threads will share cores",
                        topo.cores.len(),
                        host.os_cores + host.rpc_cores + host.nomt_cores + host.jit_cores,
                        host.os_cores,
                        host.rpc_cores,
                        host.nomt_cores,
                        host.jit_cores
                    ),
                );
            } else {
                push(
                    Level::Ok,
                    "cores",
                    format!(
                        "{} executors on {} node(s), {} service cores reserved",
                        plan.executor_count(),
                        plan.executors.len(),
                        host.os_cores + host.rpc_cores + host.nomt_cores + host.jit_cores
                    ),
                );
            }
            if !report.excluded_cpus.is_empty() {
                push(
                    Level::Warn,
                    "affinity",
                    format!(
                        "cpus {} are outside this process's affinity mask (taskset or cgroup \
                         cpuset): planned without them",
                        crate::cpulist::format(&report.excluded_cpus)
                    ),
                );
            }
            check_memory(&mut push, report, memory, storage.nomt_cache_bytes, &plan, unmet);
        }
    }

    // What NOMT needs.
    match &report.io_uring {
        Ok(()) => push(Level::Ok, "io_uring", "usable".into()),
        Err(e) => push(Level::Fail, "io_uring", format!("{e}; NOMT needs io_uring")),
    }
    match report.kernel_version {
        Some(v) if v < (6, 0) => push(
            Level::Fail,
            "kernel",
            format!("{} is older than 6.0, which NOMT's io_uring setup needs", report.kernel),
        ),
        Some(_) => push(Level::Ok, "kernel", report.kernel.clone()),
        None => push(Level::Warn, "kernel", format!("cannot parse release {:?}", report.kernel)),
    }
    if let (Some(limit), Some(v)) = (report.memlock, report.kernel_version)
        && v < (5, 12)
        && limit < 64 << 20
    {
        push(
            Level::Fail,
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {} KiB: kernels before 5.12 charge io_uring rings to it; raise \
                 it (LimitMEMLOCK=infinity)",
                limit / 1024
            ),
        );
    }
    if let Some(dir) = &storage.datadir {
        check_datadir(&mut push, dir, storage.nomt_bytes, unmet);
    }

    // Host settings that cost performance.
    let slow: Vec<&str> = report
        .governors
        .iter()
        .filter(|(g, _)| g != "performance")
        .map(|(g, _)| g.as_str())
        .collect();
    if !slow.is_empty() && host.profile == Profile::Server {
        push(
            Level::Warn,
            "governor",
            format!("CPU frequency governor {}; use performance", slow.join(", ")),
        );
    }
    if report.numa_balancing == Some(true) && topo.cpu_nodes().count() > 1 && host.pin {
        push(
            Level::Warn,
            "numa_balancing",
            "kernel.numa_balancing=1 migrates pages away from the nodes they were placed on; \
             set it to 0"
                .into(),
        );
    }
    out
}

fn check_memory(
    push: &mut impl FnMut(Level, &'static str, String),
    report: &HostReport,
    memory: &MemoryConfig,
    nomt_cache_bytes: u64,
    plan: &Plan,
    unmet: Level,
) {
    let topo = &report.topology;
    if let Err((key, reason)) = memory.validate() {
        push(Level::Fail, "memory", format!("{key}: {reason}"));
    }
    let need = memory.expected_state_mib << 20;
    let nodes: Vec<_> = topo.nodes.iter().filter(|n| plan.memory_nodes.contains(&n.id)).collect();
    let have: Option<u64> = nodes.iter().map(|n| n.mem_total).sum();
    match have {
        Some(have) if have < need + nomt_cache_bytes => push(
            unmet,
            "memory",
            format!(
                "state is expected to take {} MiB and NOMT's caches {} MiB but nodes {:?} \
                 have {} MiB",
                need >> 20,
                nomt_cache_bytes >> 20,
                plan.memory_nodes,
                have >> 20
            ),
        ),
        Some(have) => push(
            Level::Ok,
            "memory",
            format!(
                "{} MiB expected state and {} MiB of NOMT caches, {} MiB on the nodes used",
                need >> 20,
                nomt_cache_bytes >> 20,
                have >> 20
            ),
        ),
        None => push(Level::Warn, "memory", "the host does not report its memory".into()),
    }
    let per_node = need.div_ceil(nodes.len().max(1) as u64);
    let reserved = |page: u64| -> Result<(), String> {
        let short: Vec<String> = nodes
            .iter()
            .filter_map(|n| {
                let free = n.huge_pages.iter().find(|p| p.page_bytes == page).map_or(0, |p| p.free);
                let want = per_node.div_ceil(page);
                (free < want).then(|| format!("node {} has {free} free, needs {want}", n.id))
            })
            .collect();
        if short.is_empty() { Ok(()) } else { Err(short.join("; ")) }
    };
    match memory.huge_pages {
        HugePages::Gib1 | HugePages::Mib2 => {
            let page = if memory.huge_pages == HugePages::Gib1 { 1 << 30 } else { 2 << 20 };
            match reserved(page) {
                Ok(()) => push(
                    Level::Ok,
                    "huge_pages",
                    format!(
                        "{} pages reserved for {} MiB per node",
                        page_name(page),
                        per_node >> 20
                    ),
                ),
                Err(short) => push(
                    unmet,
                    "huge_pages",
                    format!(
                        "memory.huge_pages = {}: not enough reserved {} pages ({short}); state \
                         falls back to THP or plain pages",
                        if page == 1 << 30 { "1g" } else { "2m" },
                        page_name(page)
                    ),
                ),
            }
        }
        HugePages::Thp => {
            if topo.thp == crate::ThpMode::Never || topo.thp == crate::ThpMode::Unavailable {
                push(
                    unmet,
                    "huge_pages",
                    format!("memory.huge_pages = thp but THP is {}: plain pages", topo.thp),
                );
            } else {
                push(Level::Ok, "huge_pages", format!("THP ({})", topo.thp));
            }
        }
        HugePages::Auto => {
            let got = if reserved(1 << 30).is_ok() {
                "reserved 1 GiB pages".to_string()
            } else if reserved(2 << 20).is_ok() {
                "reserved 2 MiB pages".to_string()
            } else if matches!(topo.thp, crate::ThpMode::Always | crate::ThpMode::Madvise) {
                format!("THP ({}); no huge pages reserved for the expected state", topo.thp)
            } else {
                "plain pages: no huge pages reserved and THP is off".to_string()
            };
            push(Level::Ok, "huge_pages", format!("auto: {got}"));
        }
        HugePages::Off => push(Level::Ok, "huge_pages", "off: plain pages".into()),
    }
}

fn check_datadir(
    push: &mut impl FnMut(Level, &'static str, String),
    dir: &Path,
    nomt_bytes: u64,
    unmet: Level,
) {
    // The directory may not exist yet: check the filesystem it will be created on.
    let Some(existing) = dir.ancestors().find(|p| p.is_dir()) else {
        push(Level::Fail, "datadir", format!("no existing parent of {}", dir.display()));
        return;
    };
    // SAFETY: statvfs/statfs fill plain structs from a NUL-terminated path.
    let (fs_type, free) = unsafe {
        let Ok(path) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else {
            push(Level::Fail, "datadir", format!("{} is not a valid path", dir.display()));
            return;
        };
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(path.as_ptr(), &mut st) != 0 {
            push(
                Level::Fail,
                "datadir",
                format!("{}: {}", existing.display(), std::io::Error::last_os_error()),
            );
            return;
        }
        (st.f_type, st.f_bavail as u64 * st.f_bsize as u64)
    };
    if fs_type == libc::TMPFS_MAGIC {
        push(
            unmet,
            "datadir",
            format!("{} is on tmpfs: the chain does not survive a reboot", existing.display()),
        );
    } else {
        // NOMT opens its files with O_DIRECT except on tmpfs: try it.
        match probe_o_direct(existing) {
            Ok(()) => push(
                Level::Ok,
                "datadir",
                format!("{} supports O_DIRECT, {} GiB free", existing.display(), free >> 30),
            ),
            Err(e) => push(
                Level::Fail,
                "datadir",
                format!(
                    "cannot open a file with O_DIRECT in {} (NOMT needs it): {e}",
                    existing.display()
                ),
            ),
        }
    }
    if free < nomt_bytes {
        push(
            unmet,
            "disk",
            format!(
                "{} MiB free in {} but NOMT's table takes {} MiB",
                free >> 20,
                existing.display(),
                nomt_bytes >> 20
            ),
        );
    }
}

fn probe_o_direct(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(".odirect-probe-{}", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map(drop);
    let _ = std::fs::remove_file(&path);
    result
}

/// True if any finding fails.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Fail)
}
