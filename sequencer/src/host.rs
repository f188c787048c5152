//! Start-up on a host: probe it, check it against the config (the same check as
//! `tuning check`), fix the state memory settings, and plan where threads run.

use std::path::{Path, PathBuf};

use numa::{ArenaSettings, Finding, HostConfig, HostReport, Level, Plan, Profile, StorageNeeds};

use crate::config::Config;

/// The host cannot run this config.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `tuning check` would fail: the findings that fail, one per line.
    #[error("this host does not satisfy the config (profile {profile:?}):\n{findings}")]
    Unsatisfied {
        /// The config's profile.
        profile: Profile,
        /// The failing findings, formatted as `tuning check` prints them.
        findings: String,
    },
    /// sysfs could not be read on a server-profile host.
    #[error("cannot read the host topology: {0}")]
    Topology(#[from] numa::TopologyError),
}

/// Where this process runs its threads and keeps its state.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The plan (`None` when the topology could not be read in laptop mode).
    pub plan: Option<Plan>,
    /// Pin threads to the plan's CPUs.
    pub pin: bool,
    /// The state tables' layout.
    pub layout: memstate::Layout,
    /// What the check found.
    pub findings: Vec<Finding>,
}

impl Placement {
    /// Probes `/sys`, checks, and plans. Failures refuse the start under the `server` profile;
    /// under `laptop` they are logged as warnings and the sequencer degrades.
    pub fn prepare(config: &Config, datadir: Option<&Path>) -> Result<Self, HostError> {
        numa::set_allocator_purge_delay(config.memory.allocator_purge_ms);
        let host = &config.host;
        let report = match HostReport::probe(Path::new("/sys")) {
            Ok(report) => report,
            Err(e) if host.profile == Profile::Laptop => {
                tracing::warn!(error = %e, "cannot read the host topology: no placement");
                return Ok(Self::unplaced(config));
            }
            Err(e) => return Err(e.into()),
        };
        let storage = StorageNeeds {
            datadir: Some(datadir.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir)),
            nomt_bytes: u64::from(config.storage.nomt_buckets) * 4096,
            nomt_cache_bytes: config.storage.nomt_cache_bytes(),
        };
        let findings = numa::check(&report, host, &config.memory, &storage);
        for finding in &findings {
            match finding.level {
                Level::Ok => tracing::debug!(topic = finding.topic, "{}", finding.message),
                Level::Warn => tracing::warn!(topic = finding.topic, "{}", finding.message),
                Level::Fail => tracing::error!(topic = finding.topic, "{}", finding.message),
            }
        }
        if numa::failed(&findings) {
            let failing: Vec<String> = findings
                .iter()
                .filter(|f| f.level == Level::Fail)
                .map(ToString::to_string)
                .collect();
            return Err(HostError::Unsatisfied {
                profile: host.profile,
                findings: failing.join("\n"),
            });
        }
        if let Err(conflict) = numa::configure(ArenaSettings::from(&config.memory)) {
            // Only a process that starts several nodes (tests, benchmarks) gets here.
            tracing::warn!(%conflict, "state memory settings are fixed per process");
        }
        // In laptop mode a plan the config cannot have (a node that is not there) degrades
        // to the plan over every node.
        let plan = Plan::new(&report.topology, host)
            .or_else(|_| Plan::new(&report.topology, &HostConfig { nodes: vec![], ..host.clone() }))
            .ok();
        let pin = host.pin && plan.as_ref().is_some_and(|p| !p.shared);
        let layout = memstate::Layout {
            shards: config.memory.shards,
            nodes: plan.as_ref().map(|p| p.memory_nodes.clone()).unwrap_or_else(|| vec![0]),
        };
        if let Some(plan) = &plan {
            for line in plan.describe().lines() {
                tracing::info!(pinned = pin, "placement: {line}");
            }
        }
        Ok(Self { plan, pin, layout, findings })
    }

    /// No plan, nothing pinned, state on node 0.
    pub fn unplaced(config: &Config) -> Self {
        Self {
            plan: None,
            pin: false,
            layout: memstate::Layout { shards: config.memory.shards, nodes: vec![0] },
            findings: Vec::new(),
        }
    }

    /// CPUs for the RPC runtime's threads, if they have their own (otherwise they float).
    pub fn rpc_cpus(&self) -> Option<Vec<usize>> {
        self.pinned(|p| p.rpc.clone()).filter(|c| !c.is_empty())
    }

    /// CPUs for the NOMT committer, if it has its own (otherwise it floats).
    pub fn nomt_cpus(&self) -> Option<Vec<usize>> {
        self.pinned(|p| p.nomt.clone()).filter(|c| !c.is_empty())
    }

    /// The CPU of the block builder (the executor until the parallel engine lands), if pinned.
    pub fn builder_cpu(&self) -> Option<usize> {
        self.pinned(|p| p.executor_cpus().first().copied()).flatten()
    }

    /// Executor CPUs for the worker pool (sender recovery now), if pinned.
    pub fn executor_cpus(&self) -> Option<Vec<usize>> {
        self.pinned(|p| p.executor_cpus()).filter(|c| !c.is_empty())
    }

    fn pinned<T>(&self, f: impl FnOnce(&Plan) -> T) -> Option<T> {
        self.plan.as_ref().filter(|_| self.pin).map(f)
    }
}

/// Pins the calling thread to `cpus` if given, logging a refusal once per call site.
pub fn pin_current(role: &str, cpus: Option<&[usize]>) {
    if let Some(cpus) = cpus.filter(|c| !c.is_empty())
        && !numa::pin_to_set(cpus)
    {
        tracing::warn!(role, cpus = %numa::cpulist::format(cpus), "cannot pin thread");
    }
}

/// The data directory a config uses: `storage.datadir`, else `./sequencer-data`; `None` in
/// dev mode without one (a fresh temporary directory then).
pub fn intended_datadir(config: &Config, dev: bool) -> Option<PathBuf> {
    match (&config.storage.datadir, dev) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => None,
        (None, false) => Some(PathBuf::from("sequencer-data")),
    }
}
