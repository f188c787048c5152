//! The placement plan: which CPUs the operating system, the RPC server, NOMT and the JIT keep,
//! and which run executors, node by node; and on which nodes state memory lives.
//!
//! The rule, so that a plan can be predicted by hand:
//! 1. Only nodes with CPUs are used (all of them, or `host.nodes`). Cores are taken in order:
//!    node by node, lowest CPU first.
//! 2. Service cores come first, from the start of that order: `os_cores`, then `rpc_cores`,
//!    `nomt_cores`, `jit_cores`. A service core keeps all its SMT threads.
//! 3. Every core left runs one executor on its first thread (both threads with `use_smt`),
//!    at most `executors_per_node` per node.
//! 4. If there are not enough cores for the services plus one executor, nothing is reserved
//!    (the plan is *shared*): executors get every core and services float.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{HostConfig, Topology, cpulist};

/// The plan cannot be made for this host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `host.nodes` names a node the host does not have.
    #[error("host.nodes: node {0} does not exist on this host")]
    NoSuchNode(usize),
    /// `host.nodes` names a node without CPUs.
    #[error("host.nodes: node {0} has no CPUs (memory only); executors cannot run there")]
    MemoryOnlyNode(usize),
}

/// Executor threads of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecutorPool {
    /// Node.
    pub node: usize,
    /// One executor thread per CPU, pinned to it.
    pub cpus: Vec<usize>,
}

/// Where every thread runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// True when the host has too few cores to reserve any: nothing is pinned.
    pub shared: bool,
    /// CPUs left to the operating system.
    pub os: Vec<usize>,
    /// CPUs for the RPC server and networking.
    pub rpc: Vec<usize>,
    /// CPUs for NOMT's commit and io threads.
    pub nomt: Vec<usize>,
    /// CPUs for JIT compile threads.
    pub jit: Vec<usize>,
    /// Executors, per node.
    pub executors: Vec<ExecutorPool>,
    /// Nodes that hold state shards (round-robin).
    pub memory_nodes: Vec<usize>,
    /// Why the plan differs from what the config asked for, if it does.
    pub notes: Vec<String>,
}

impl Plan {
    /// Makes the plan for `topology` under `host`.
    pub fn new(topology: &Topology, host: &HostConfig) -> Result<Self, PlanError> {
        let nodes: Vec<usize> = if host.nodes.is_empty() {
            topology.cpu_nodes().map(|n| n.id).collect()
        } else {
            for &id in &host.nodes {
                let node =
                    topology.nodes.iter().find(|n| n.id == id).ok_or(PlanError::NoSuchNode(id))?;
                if node.cpus.is_empty() {
                    return Err(PlanError::MemoryOnlyNode(id));
                }
            }
            host.nodes.clone()
        };
        let cores: Vec<_> =
            topology.cores.iter().filter(|core| nodes.contains(&core.node)).collect();
        let executor_cpus = |core: &crate::Core| -> Vec<usize> {
            if host.use_smt { core.cpus.clone() } else { core.cpus[..1].to_vec() }
        };
        let mut notes = Vec::new();
        let wanted = [host.os_cores, host.rpc_cores, host.nomt_cores, host.jit_cores];
        let services: usize = wanted.iter().sum();

        let mut reserved: [Vec<usize>; 4] = Default::default();
        let mut next = 0;
        let shared = cores.len() < services + 1;
        if shared {
            notes.push(format!(
                "{} cores cannot hold {services} service cores and an executor: nothing is \
                 reserved or pinned, services share the executors' cores",
                cores.len()
            ));
        } else {
            for (list, &count) in reserved.iter_mut().zip(&wanted) {
                for core in &cores[next..next + count] {
                    list.extend(&core.cpus);
                }
                next += count;
            }
        }

        let mut executors = Vec::new();
        for &node in &nodes {
            let limit =
                if host.executors_per_node == 0 { usize::MAX } else { host.executors_per_node };
            let mut cpus: Vec<usize> = cores[next..]
                .iter()
                .filter(|c| c.node == node)
                .take(limit)
                .flat_map(|c| executor_cpus(c))
                .collect();
            if cpus.is_empty() {
                notes.push(format!("node {node} runs no executor: its cores serve the services"));
            }
            cpus.sort_unstable();
            executors.push(ExecutorPool { node, cpus });
        }
        let [os, rpc, nomt, jit] = reserved.map(|mut v| {
            v.sort_unstable();
            v
        });
        Ok(Self { shared, os, rpc, nomt, jit, executors, memory_nodes: nodes, notes })
    }

    /// Every executor CPU, node by node.
    pub fn executor_cpus(&self) -> Vec<usize> {
        self.executors.iter().flat_map(|p| p.cpus.iter().copied()).collect()
    }

    /// Total executor threads.
    pub fn executor_count(&self) -> usize {
        self.executors.iter().map(|p| p.cpus.len()).sum()
    }

    /// CPUs the sequencer runs on (all but the OS's), for a systemd `CPUAffinity=` line.
    pub fn process_cpus(&self) -> Vec<usize> {
        let mut all: Vec<usize> = [&self.rpc, &self.nomt, &self.jit]
            .into_iter()
            .flatten()
            .copied()
            .chain(self.executor_cpus())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// A human-readable description, one line per role.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if self.shared {
            let _ = writeln!(out, "shared: no dedicated service cores, nothing pinned");
        }
        for (name, cpus) in
            [("os", &self.os), ("rpc", &self.rpc), ("nomt", &self.nomt), ("jit", &self.jit)]
        {
            if !cpus.is_empty() {
                let _ = writeln!(out, "{name:<10} cpus {}", cpulist::format(cpus));
            }
        }
        for pool in &self.executors {
            let _ = writeln!(
                out,
                "executors node {}: {} threads on cpus {}",
                pool.node,
                pool.cpus.len(),
                cpulist::format(&pool.cpus)
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}
