//! Pinning threads to the CPUs of a [`Plan`](crate::Plan).

use std::sync::Arc;

use crate::Plan;

/// Pins the calling thread to one CPU (through `core_affinity`). Returns false if the OS
/// refused (the CPU is offline or outside this process's allowed set).
pub fn pin_to(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Restricts the calling thread to a set of CPUs (threads that may move among a role's cores,
/// such as the RPC workers). An empty set leaves the thread as it is and returns false.
pub fn pin_to_set(cpus: &[usize]) -> bool {
    if cpus.is_empty() {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for ids below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Restricts every thread of this process to `cpus` (threads started later inherit it from
/// the thread that starts them), e.g. to measure a pipeline on fewer cores. Returns how many
/// threads were restricted; a thread that ended meanwhile is skipped.
pub fn restrict_process(cpus: &[usize]) -> std::io::Result<usize> {
    if cpus.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no CPUs given"));
    }
    // SAFETY: as in `pin_to_set`.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    };
    let mut restricted = 0;
    for entry in std::fs::read_dir("/proc/self/task")?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: sched_setaffinity reads the set we pass.
        let done =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if done == 0 {
            restricted += 1;
        } else if std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(restricted)
}

/// CPUs the calling thread may run on.
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: as in `pin_to_set`; the kernel fills the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// One rayon pool per node of the plan, each thread pinned to its CPU when `pin` is set and the
/// plan is not shared.
#[derive(Debug)]
pub struct ExecutorPools {
    pools: Vec<(usize, Arc<rayon::ThreadPool>)>,
}

impl ExecutorPools {
    /// Builds the pools. A node without executors gets no pool.
    pub fn build(plan: &Plan, pin: bool) -> Result<Self, rayon::ThreadPoolBuildError> {
        let mut pools = Vec::new();
        for pool in plan.executors.iter().filter(|p| !p.cpus.is_empty()) {
            pools.push((pool.node, Arc::new(Self::node_pool(plan, pool.node, pin, None)?)));
        }
        Ok(Self { pools })
    }

    /// One pool on `node`'s executor CPUs (`threads` of them, all if `None`), each thread
    /// pinned to its CPU when `pin` is set and the plan is not shared. More threads than the
    /// node has executor CPUs are not pinned.
    pub fn node_pool(
        plan: &Plan,
        node: usize,
        pin: bool,
        threads: Option<usize>,
    ) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
        let cpus: Vec<usize> = plan
            .executors
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.cpus.clone())
            .unwrap_or_default();
        let threads = threads.unwrap_or(cpus.len()).max(1);
        let pin = pin && !plan.shared && cpus.len() >= threads;
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("exec-n{node}-{i}"))
            .start_handler(move |i| {
                if pin && !pin_to(cpus[i]) {
                    tracing::warn!(cpu = cpus[i], "cannot pin executor thread");
                }
            })
            .build()
    }

    /// The pools, by node.
    pub fn pools(&self) -> &[(usize, Arc<rayon::ThreadPool>)] {
        &self.pools
    }

    /// The pool of `node`, if it has one.
    pub fn node(&self, node: usize) -> Option<&Arc<rayon::ThreadPool>> {
        self.pools.iter().find(|(n, _)| *n == node).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_follow_the_plan() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/laptop");
        let topology = crate::Topology::read(root).unwrap();
        let plan = Plan::new(&topology, &crate::HostConfig::default()).unwrap();
        // Not pinned: the fixture's CPUs are not this machine's.
        let pools = ExecutorPools::build(&plan, false).unwrap();
        assert_eq!(pools.pools().len(), 1);
        assert_eq!(pools.node(0).unwrap().current_num_threads(), plan.executors[0].cpus.len());
        assert!(pools.node(1).is_none());
        let three = ExecutorPools::node_pool(&plan, 0, false, Some(3)).unwrap();
        assert_eq!(three.current_num_threads(), 3);
    }

    #[test]
    fn pinning_on_this_host_changes_the_affinity() {
        let cpu = *current_affinity().first().expect("some CPU is allowed");
        std::thread::spawn(move || {
            assert!(pin_to(cpu));
            assert_eq!(current_affinity(), vec![cpu]);
            assert!(!pin_to_set(&[]));
        })
        .join()
        .unwrap();
    }
}
