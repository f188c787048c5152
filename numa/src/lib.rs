//! `numa`: the host as the sequencer's threads and memory see it. It reads the topology from a
//! sysfs root (nodes, CPUs, SMT siblings, memory, distances, huge-page pools, THP) so tests
//! can point it at fixture trees; plans where every thread runs and pins threads there; maps
//! large regions with reserved huge pages, then THP, then plain pages, bound to a node, each
//! fallback logged once and counted in metrics; gives each node a mimalloc heap over such
//! regions as an `allocator_api2::Allocator` for state tables; and checks a host against a
//! config. It depends on no workspace crate and knows nothing of the EVM.

mod arena;
mod check;
mod config;
pub mod cpulist;
mod mem;
mod pin;
mod plan;
mod probe;
mod topology;

pub use arena::{
    ArenaSettings, ArenaStats, NodeAlloc, NodeArena, SettingsConflict, allocator_purge_delay,
    configure, set_allocator_purge_delay, settings,
};
pub use check::{Finding, Level, StorageNeeds, check, failed};
pub use config::{HostConfig, HugePages, MemoryConfig, Profile};
pub use mem::{Binding, MapError, PageKind, Region, free_huge_pages};
pub use pin::{ExecutorPools, current_affinity, pin_to, pin_to_set, restrict_process};
pub use plan::{ExecutorPool, Plan, PlanError};
pub use probe::{HostReport, page_name, parse_kernel_version};
pub use topology::{Core, HugePool, Node, ThpMode, Topology, TopologyError};
