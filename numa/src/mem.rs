//! Large memory regions: reserved huge pages (1 GiB, 2 MiB), then transparent huge pages, then
//! plain pages, each bound to a NUMA node with `mbind`. Every region reports what it got.

use std::{
    fmt,
    ptr::NonNull,
    sync::{Mutex, OnceLock},
};

use serde::Serialize;

use crate::config::HugePages;

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The pages a region is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    /// Reserved 1 GiB pages (`MAP_HUGETLB | MAP_HUGE_1GB`), faulted in at mapping time.
    Huge1G,
    /// Reserved 2 MiB pages (`MAP_HUGETLB | MAP_HUGE_2MB`), faulted in at mapping time.
    Huge2M,
    /// Transparent huge pages asked for with `madvise(MADV_HUGEPAGE)`; the kernel gives them
    /// when it can.
    Thp,
    /// Plain pages.
    Plain,
}

impl PageKind {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Huge1G => "huge_1g",
            Self::Huge2M => "huge_2m",
            Self::Thp => "thp",
            Self::Plain => "plain",
        }
    }

    /// Size the region's length is rounded to.
    fn granule(self) -> usize {
        match self {
            Self::Huge1G => GIB,
            _ => 2 * MIB,
        }
    }

    /// The kinds to try, in order, for a policy.
    pub fn attempts(policy: HugePages) -> &'static [PageKind] {
        use PageKind::*;
        match policy {
            HugePages::Auto => &[Huge1G, Huge2M, Thp, Plain],
            HugePages::Gib1 => &[Huge1G, Huge2M, Thp, Plain],
            HugePages::Mib2 => &[Huge2M, Thp, Plain],
            HugePages::Thp => &[Thp, Plain],
            HugePages::Off => &[Plain],
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a region is tied to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Not bound (no node asked for, or binding turned off).
    None,
    /// `MPOL_BIND`: pages come from the node only (reserved huge pages, faulted in at once).
    Bind,
    /// `MPOL_PREFERRED`: pages come from the node while it has memory (lazily faulted kinds,
    /// so that a full node spills instead of invoking the OOM killer).
    Preferred,
    /// The kernel refused `mbind` (no NUMA support): placement is the kernel's.
    Refused,
}

/// One mapped region. It is unmapped on drop.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    kind: PageKind,
    node: Option<usize>,
    binding: Binding,
}

// SAFETY: a region is plain memory owned by this value.
unsafe impl Send for Region {}
// SAFETY: the region hands out raw pointers only; callers synchronise access to its bytes.
unsafe impl Sync for Region {}

/// A region could not be mapped at all (not even plain pages).
#[derive(Debug, thiserror::Error)]
#[error("cannot map {len} bytes of memory: {source}")]
pub struct MapError {
    /// The requested length.
    pub len: usize,
    /// What the last attempt (plain pages) said.
    pub source: std::io::Error,
}

impl Region {
    /// Maps at least `len` bytes (rounded up to the page size of the kind obtained), trying the
    /// kinds `policy` allows in order and binding the region to `node` if given. Reserved huge
    /// pages are faulted in here (`MADV_POPULATE_WRITE`), so a shortage shows now as a fallback
    /// instead of as SIGBUS later. Each fallback is logged once per process and kind.
    pub fn map(len: usize, policy: HugePages, node: Option<usize>) -> Result<Self, MapError> {
        let attempts = PageKind::attempts(policy);
        let mut last_error = None;
        for &kind in attempts {
            match Self::map_kind(len, kind, node) {
                Ok(region) => {
                    record(&region);
                    return Ok(region);
                }
                Err(e) => {
                    log_fallback_once(kind, policy, &e);
                    last_error = Some(e);
                }
            }
        }
        Err(MapError { len, source: last_error.unwrap_or_else(std::io::Error::last_os_error) })
    }

    /// Maps exactly one kind, or fails.
    pub fn map_kind(len: usize, kind: PageKind, node: Option<usize>) -> std::io::Result<Self> {
        let len = len.max(1).next_multiple_of(kind.granule());
        let (ptr, mapped) = match kind {
            PageKind::Huge1G | PageKind::Huge2M => {
                let shift = if kind == PageKind::Huge1G { 30 } else { 21 };
                let flags = libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_HUGETLB
                    | (shift << libc::MAP_HUGE_SHIFT);
                (mmap(len, flags)?, len)
            }
            PageKind::Thp | PageKind::Plain => {
                // Over-map by one granule so the region can start on a 2 MiB boundary, which
                // THP needs and mimalloc's arenas like; the slack is unmapped at once.
                let total = len + kind.granule();
                let raw =
                    mmap(total, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)?;
                let aligned = (raw as usize).next_multiple_of(kind.granule());
                let head = aligned - raw as usize;
                let tail = total - head - len;
                // SAFETY: both ranges lie inside the mapping just created.
                unsafe {
                    if head > 0 {
                        libc::munmap(raw.cast(), head);
                    }
                    if tail > 0 {
                        libc::munmap((aligned + len) as *mut libc::c_void, tail);
                    }
                }
                (aligned as *mut u8, len)
            }
        };
        let mut region = Region {
            // SAFETY: mmap never returns null on success (MAP_FAILED is checked in `mmap`).
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len: mapped,
            kind,
            node,
            binding: Binding::None,
        };
        let reserved = matches!(kind, PageKind::Huge1G | PageKind::Huge2M);
        if let Some(node) = node {
            region.binding = bind(region.ptr.as_ptr(), region.len, node, reserved);
        }
        if kind == PageKind::Thp {
            // SAFETY: the range is the region's own mapping.
            let rc = unsafe {
                libc::madvise(region.ptr.as_ptr().cast(), region.len, libc::MADV_HUGEPAGE)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if reserved {
            // Fault every page in now: a pool without enough free pages on the node fails
            // here with an error, where touching the memory later would raise SIGBUS.
            // SAFETY: the range is the region's own mapping.
            let rc = unsafe {
                libc::madvise(region.ptr.as_ptr().cast(), region.len, MADV_POPULATE_WRITE)
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(region)
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pages backing it.
    pub fn kind(&self) -> PageKind {
        self.kind
    }

    /// The node asked for.
    pub fn node(&self) -> Option<usize> {
        self.node
    }

    /// How it is bound to the node.
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// Leaks the region: its memory stays mapped for the rest of the process (used when an
    /// allocator that cannot give memory back takes it over).
    pub fn leak(self) -> (*mut u8, usize) {
        let parts = (self.ptr.as_ptr(), self.len);
        std::mem::forget(self);
        parts
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value and no longer used.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `MADV_POPULATE_WRITE` (Linux 5.14), not in every libc version's constants.
const MADV_POPULATE_WRITE: libc::c_int = 23;
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;

fn mmap(len: usize, flags: libc::c_int) -> std::io::Result<*mut u8> {
    // SAFETY: an anonymous mapping with no address hint touches no existing memory.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
    };
    if ptr == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(ptr.cast()) }
}

fn bind(ptr: *mut u8, len: usize, node: usize, strict: bool) -> Binding {
    if node >= 1024 {
        return Binding::Refused;
    }
    let mut mask = [0u64; 16];
    mask[node / 64] |= 1 << (node % 64);
    let mode = if strict { MPOL_BIND } else { MPOL_PREFERRED };
    // SAFETY: mbind only changes the policy of this process's own mapping; the mask outlives
    // the call and maxnode matches its size in bits.
    let rc = unsafe {
        libc::syscall(libc::SYS_mbind, ptr, len, mode, mask.as_ptr(), mask.len() * 64 + 1, 0)
    };
    if rc == 0 {
        if strict { Binding::Bind } else { Binding::Preferred }
    } else {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::warn!(
                node,
                error = %std::io::Error::last_os_error(),
                "mbind refused: memory is placed by the kernel's default policy"
            );
        });
        Binding::Refused
    }
}

fn log_fallback_once(kind: PageKind, policy: HugePages, error: &std::io::Error) {
    static SEEN: Mutex<Vec<PageKind>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(&kind) {
        seen.push(kind);
        let message = "cannot map state memory with these pages; falling back";
        if policy == HugePages::Auto {
            // `auto` tries every kind by design: a host without reserved pages is normal.
            tracing::info!(kind = kind.as_str(), %error, "{message}");
        } else {
            tracing::warn!(kind = kind.as_str(), %error, "{message}");
        }
        metrics::counter!("numa_page_fallbacks_total", "kind" => kind.as_str()).increment(1);
    }
}

fn record(region: &Region) {
    let node = region.node.map(|n| n.to_string()).unwrap_or_else(|| "any".into());
    metrics::gauge!("numa_region_bytes", "kind" => region.kind.as_str(), "node" => node)
        .increment(region.len as f64);
    if matches!(region.kind, PageKind::Huge1G | PageKind::Huge2M | PageKind::Thp) {
        metrics::gauge!("numa_hugepage_bytes", "kind" => region.kind.as_str())
            .increment(region.len as f64);
    }
}

/// Reserved pages of `page_bytes` currently free in the host-wide pool (from `/sys`).
pub fn free_huge_pages(page_bytes: u64) -> u64 {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages", page_bytes / 1024);
    std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_read(region: &Region) {
        // SAFETY: the region is ours and at least one page long.
        unsafe {
            let p = region.as_ptr();
            p.write(7);
            p.add(region.len() - 1).write(9);
            assert_eq!(p.read(), 7);
            assert_eq!(p.add(region.len() - 1).read(), 9);
        }
    }

    #[test]
    fn plain_and_thp_regions_are_aligned_and_usable() {
        for kind in [PageKind::Plain, PageKind::Thp] {
            let region = Region::map_kind(3 * MIB + 5, kind, Some(0)).unwrap();
            assert_eq!(region.len(), 4 * MIB);
            assert_eq!(region.as_ptr() as usize % (2 * MIB), 0);
            assert_eq!(region.kind(), kind);
            write_read(&region);
        }
    }

    #[test]
    fn off_policy_gives_plain_pages() {
        let region = Region::map(MIB, HugePages::Off, None).unwrap();
        assert_eq!(region.kind(), PageKind::Plain);
        assert_eq!(region.binding(), Binding::None);
    }
}
