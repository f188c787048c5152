//! Node-local heaps for large, long-lived tables.
//!
//! Each node gets a [`NodeArena`]: regions from [`Region::map`] (huge pages when the host has
//! them) handed to mimalloc as exclusive arenas, with a mimalloc heap allocating only inside
//! them. mimalloc does the allocating, freeing and reuse; this module picks the pages, binds
//! them to the node, grows the arena when it is full, and counts the bytes. [`NodeAlloc`] is
//! the `allocator_api2::Allocator` handle that hashbrown tables take.
//!
//! Arenas live for the whole process (mimalloc cannot forget an arena), so they are created
//! once per node and shared by every table on that node; memory freed by one table is reused
//! by the others.

use std::{
    alloc::Layout,
    ffi::c_void,
    ptr::NonNull,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering},
    },
};

use allocator_api2::alloc::{AllocError, Allocator};
use libmimalloc_sys as mi;

use crate::{
    config::{HugePages, MemoryConfig},
    mem::{Binding, PageKind, Region},
};

/// Most arenas (regions) one node's heap may grow to. Region sizes double up to 8× the first
/// (reserved huge pages are taken whole, so growth stays in modest steps), which with the
/// default 256 MiB regions covers half a terabyte per node, and 4 TiB with 1 GiB regions.
const MAX_REGIONS: usize = 256;

/// How arenas are set up, fixed at the first use in a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaSettings {
    /// Pages to ask for.
    pub huge_pages: HugePages,
    /// First region size per node, in bytes.
    pub region_bytes: usize,
    /// Bind regions to their node.
    pub bind: bool,
}

impl Default for ArenaSettings {
    fn default() -> Self {
        Self::from(&MemoryConfig::default())
    }
}

impl From<&MemoryConfig> for ArenaSettings {
    fn from(config: &MemoryConfig) -> Self {
        Self {
            huge_pages: config.huge_pages,
            region_bytes: (config.region_mib as usize) << 20,
            bind: config.bind,
        }
    }
}

/// The settings were already fixed differently in this process.
#[derive(Debug, thiserror::Error)]
#[error("node arenas already use {current:?}; cannot switch to {wanted:?} in the same process")]
pub struct SettingsConflict {
    /// Settings in force.
    pub current: ArenaSettings,
    /// Settings asked for.
    pub wanted: ArenaSettings,
}

static SETTINGS: OnceLock<ArenaSettings> = OnceLock::new();
static ARENAS: OnceLock<Vec<NodeArena>> = OnceLock::new();
/// Node ids above this share the last arena (no real host has that many nodes).
const MAX_NODES: usize = 64;

/// Fixes the arena settings for this process. Call it before the first table is built; the
/// same settings again are accepted, different ones are refused.
pub fn configure(settings: ArenaSettings) -> Result<(), SettingsConflict> {
    let current = *SETTINGS.get_or_init(|| settings);
    if current == settings { Ok(()) } else { Err(SettingsConflict { current, wanted: settings }) }
}

/// The settings in force (the defaults if [`configure`] was never called).
pub fn settings() -> ArenaSettings {
    *SETTINGS.get_or_init(ArenaSettings::default)
}

/// mimalloc's `mi_option_purge_delay` (its position in mimalloc 3's `mi_option_t`, which
/// `libmimalloc-sys` does not name).
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// Sets how long mimalloc keeps freed memory before returning it to the operating system
/// (`memory.allocator_purge_ms`; -1 keeps it). Takes effect at once, for every heap.
pub fn set_allocator_purge_delay(ms: i64) {
    #[allow(clippy::unnecessary_cast, reason = "c_long is i64 only on LP64 targets")]
    let ms = ms.max(-1) as std::ffi::c_long;
    // SAFETY: mimalloc's options are plain integers, safe to set from any thread at any time.
    unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// mimalloc's current purge delay in milliseconds (-1: freed memory is kept).
#[allow(clippy::useless_conversion, reason = "c_long is i64 only on LP64 targets")]
pub fn allocator_purge_delay() -> i64 {
    // SAFETY: reading an option has no precondition.
    i64::from(unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) })
}

/// What one node's arena holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArenaStats {
    /// Node.
    pub node: usize,
    /// Bytes handed out and not yet freed (requested sizes).
    pub allocated: u64,
    /// Bytes mapped for the arena, by page kind.
    pub mapped: Vec<(PageKind, u64)>,
    /// How the regions are bound (the most recent region's binding).
    pub binding: Option<Binding>,
}

/// One node's heap over regions of that node's memory.
pub struct NodeArena {
    node: usize,
    /// The heap allocations go to; replaced by a heap in a new region when this one is full.
    heap: AtomicPtr<mi::mi_heap_t>,
    grow: Mutex<Growth>,
    allocated: AtomicU64,
    regions: AtomicUsize,
}

#[derive(Default)]
struct Growth {
    mapped: Vec<(PageKind, u64)>,
    ranges: Vec<(usize, usize)>,
    binding: Option<Binding>,
}

impl std::fmt::Debug for NodeArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeArena").field("node", &self.node).finish_non_exhaustive()
    }
}

impl NodeArena {
    /// The arena of `node`, created on first use.
    pub fn of(node: usize) -> &'static NodeArena {
        let arenas = ARENAS.get_or_init(|| {
            (0..MAX_NODES)
                .map(|node| NodeArena {
                    node,
                    heap: AtomicPtr::new(std::ptr::null_mut()),
                    grow: Mutex::new(Growth::default()),
                    allocated: AtomicU64::new(0),
                    regions: AtomicUsize::new(0),
                })
                .collect()
        });
        &arenas[node.min(MAX_NODES - 1)]
    }

    /// Node number.
    pub fn node(&self) -> usize {
        self.node
    }

    /// What the arena holds now.
    pub fn stats(&self) -> ArenaStats {
        let grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        ArenaStats {
            node: self.node,
            allocated: self.allocated.load(Ordering::Relaxed),
            mapped: grow.mapped.clone(),
            binding: grow.binding,
        }
    }

    /// True if `ptr` points into one of this arena's regions.
    pub fn contains(&self, ptr: *const u8) -> bool {
        let grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let addr = ptr as usize;
        grow.ranges.iter().any(|&(start, len)| addr >= start && addr < start + len)
    }

    /// An allocator handle for hashbrown tables and other `allocator_api2` collections.
    pub fn allocator(&'static self) -> NodeAlloc {
        NodeAlloc(self)
    }

    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        let mut heap = self.heap.load(Ordering::Acquire);
        loop {
            if !heap.is_null() {
                // SAFETY: `heap` is a live mimalloc heap (heaps are never deleted) and v3 heaps
                // allocate from any thread.
                let p = unsafe { mi::mi_heap_malloc_aligned(heap, layout.size(), layout.align()) };
                if let Some(p) = NonNull::new(p.cast::<u8>()) {
                    self.allocated.fetch_add(layout.size() as u64, Ordering::Relaxed);
                    return Some(p);
                }
            }
            heap = self.add_region(heap, layout.size())?;
        }
    }

    /// Maps a region, gives it to mimalloc as an exclusive arena and makes a heap in it the
    /// current one, unless another thread already did since `seen` was read.
    fn add_region(&self, seen: *mut mi::mi_heap_t, need: usize) -> Option<*mut mi::mi_heap_t> {
        let mut grow = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.heap.load(Ordering::Acquire);
        if current != seen {
            return Some(current);
        }
        let count = self.regions.load(Ordering::Relaxed);
        if count >= MAX_REGIONS {
            return None;
        }
        let settings = settings();
        // SAFETY: a query without preconditions.
        let min_arena = unsafe { mi::mi_arena_min_size() };
        // Grow geometrically so that a large state needs few regions (mimalloc gives every
        // heap a thread-local slot), and always leave room for the request plus mimalloc's
        // own arena metadata.
        let size =
            (settings.region_bytes << count.min(8)).max(need.saturating_mul(2)).max(2 * min_arena);
        let node = settings.bind.then_some(self.node);
        let region = Region::map(size, settings.huge_pages, node).ok()?;
        let kind = region.kind();
        let binding = region.binding();
        let pinned = true; // never decommitted: keeps huge pages whole and the memory resident
        let (ptr, len) = region.leak();
        let mut arena_id: mi::mi_arena_id_t = std::ptr::null_mut();
        // SAFETY: the memory is mapped read-write, aligned to 2 MiB (more than mimalloc's slice
        // alignment), zeroed, and leaked, so it stays valid for the process's lifetime.
        let ok = unsafe {
            mi::mi_manage_os_memory_ex(
                ptr as *const c_void,
                len,
                true,
                pinned,
                true,
                self.node as i32,
                true,
                &mut arena_id,
            )
        };
        if !ok {
            tracing::error!(node = self.node, len, "mimalloc refused a state memory region");
            return None;
        }
        // SAFETY: the arena id was just returned by mimalloc.
        let heap = unsafe { mi::mi_heap_new_in_arena(arena_id) };
        if heap.is_null() {
            return None;
        }
        if let Some(entry) = grow.mapped.iter_mut().find(|(k, _)| *k == kind) {
            entry.1 += len as u64;
        } else {
            grow.mapped.push((kind, len as u64));
        }
        grow.binding = Some(binding);
        grow.ranges.push((ptr as usize, len));
        self.regions.store(count + 1, Ordering::Relaxed);
        self.heap.store(heap, Ordering::Release);
        tracing::debug!(node = self.node, len, kind = kind.as_str(), ?binding, "state arena grew");
        Some(heap)
    }
}

/// `allocator_api2::Allocator` over a node's arena: 8 bytes, `Copy`.
#[derive(Clone, Copy, Debug)]
pub struct NodeAlloc(&'static NodeArena);

impl NodeAlloc {
    /// The allocator of `node`'s arena.
    pub fn node(node: usize) -> Self {
        NodeArena::of(node).allocator()
    }

    /// The arena behind it.
    pub fn arena(&self) -> &'static NodeArena {
        self.0
    }
}

impl Default for NodeAlloc {
    fn default() -> Self {
        Self::node(0)
    }
}

// SAFETY: memory comes from mimalloc with the layout's size and alignment and stays valid until
// `deallocate`, which frees it with mimalloc; the handle refers to a process-lifetime arena, so
// copies of it remain valid and interchangeable.
unsafe impl Allocator for NodeAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let p = self.0.alloc(layout).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        self.0.allocated.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `allocate` (mimalloc) and is freed once, as the caller
        // guarantees; mimalloc frees into the owning heap from any thread.
        unsafe { mi::mi_free(ptr.as_ptr().cast()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // The purge delay's default in mimalloc 3's options table is 1 000 ms (unless the
        // environment sets one): reading it through our index shows the index names it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(allocator_purge_delay(), 1000);
        }
        set_allocator_purge_delay(-1);
        assert_eq!(allocator_purge_delay(), -1);
        set_allocator_purge_delay(-7);
        assert_eq!(allocator_purge_delay(), -1, "below -1 means keep");
        set_allocator_purge_delay(1000);
        assert_eq!(allocator_purge_delay(), 1000);
    }

    #[test]
    fn tables_live_in_the_node_arena_and_free_memory_is_counted() {
        let arena = NodeArena::of(3);
        let before = arena.stats().allocated;
        let alloc = arena.allocator();
        let mut map = hashbrown::HashMap::<u64, [u8; 40], _, _>::with_capacity_and_hasher_in(
            0,
            hashbrown::DefaultHashBuilder::default(),
            alloc,
        );
        for i in 0..100_000u64 {
            map.insert(i, [i as u8; 40]);
        }
        assert_eq!(map.get(&77_777).unwrap()[0], 77_777u64 as u8);
        let stats = arena.stats();
        assert!(stats.allocated >= before + 100_000 * 48, "{stats:?}");
        assert!(!stats.mapped.is_empty());
        // The table's memory lies inside the node's mapped regions, not the global heap.
        assert!(arena.contains(map.get(&1).unwrap().as_ptr()));
        assert!(!arena.contains(Box::new(5u64).as_ref() as *const u64 as *const u8));
        drop(map);
        assert_eq!(arena.stats().allocated, before);
    }

    #[test]
    fn a_full_region_grows_the_arena() {
        let arena = NodeArena::of(4);
        let alloc = arena.allocator();
        let chunk = Layout::from_size_align(8 << 20, 64).unwrap();
        // More than the first region holds: the arena must add regions, not fail.
        let total = settings().region_bytes * 2;
        let mut held = Vec::new();
        while held.len() * chunk.size() < total {
            held.push(alloc.allocate(chunk).expect("the arena grows"));
        }
        assert!(arena.regions.load(Ordering::Relaxed) >= 2);
        for p in held {
            // SAFETY: each pointer was allocated above with `chunk`.
            unsafe { alloc.deallocate(p.cast(), chunk) };
        }
    }
}
