//! Huge pages on the machine running the tests. As root the test reserves 2 MiB pages through
//! `/proc/sys/vm/nr_hugepages` (and gives them back); otherwise it checks the fallback path.
//! Either way it asserts which kind of page each mapping got. One test, so nothing else in
//! this binary races for the pool.

use numa::{ArenaSettings, Binding, HugePages, NodeArena, PageKind, Region, ThpMode, Topology};

const NR: &str = "/proc/sys/vm/nr_hugepages";
const TWO_MIB: u64 = 2 << 20;

fn nr_hugepages() -> u64 {
    std::fs::read_to_string(NR).unwrap().trim().parse().unwrap()
}

fn set_nr_hugepages(n: u64) -> bool {
    std::fs::write(NR, n.to_string()).is_ok() && nr_hugepages() == n
}

/// Puts the pool back however the test ends.
struct Restore(u64);
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.0.to_string());
    }
}

fn expected_fallback() -> PageKind {
    match Topology::host().unwrap().thp {
        ThpMode::Always | ThpMode::Madvise => PageKind::Thp,
        _ => PageKind::Plain,
    }
}

#[test]
fn reserved_huge_pages_are_used_when_present_and_fallbacks_are_reported() {
    let before = nr_hugepages();
    let _restore = Restore(before);
    let free = numa::free_huge_pages(TWO_MIB);

    // Asking for more reserved pages than are free fails as an error (never as SIGBUS later),
    // and the policy falls back to THP or plain pages.
    let too_many = ((free + 1) * TWO_MIB) as usize;
    assert!(Region::map_kind(too_many, PageKind::Huge2M, Some(0)).is_err());
    let fallback = Region::map(too_many, HugePages::Mib2, Some(0)).unwrap();
    assert_eq!(fallback.kind(), expected_fallback());
    assert_eq!(fallback.binding(), Binding::Preferred);
    drop(fallback);

    if !set_nr_hugepages(before + 80) {
        eprintln!("cannot reserve huge pages here (not root?): only the fallback path was checked");
        return;
    }
    eprintln!("reserved 80 × 2 MiB pages for the test");

    // A region of reserved pages, bound to node 0 and faulted in at once.
    let free_before = numa::free_huge_pages(TWO_MIB);
    let region = Region::map(8 << 20, HugePages::Mib2, Some(0)).unwrap();
    assert_eq!(region.kind(), PageKind::Huge2M);
    assert_eq!(region.binding(), Binding::Bind);
    assert_eq!(numa::free_huge_pages(TWO_MIB), free_before - 4, "4 pages faulted in");
    // SAFETY: the region is ours and 8 MiB long.
    unsafe { region.as_ptr().add((8 << 20) - 1).write(1) };
    drop(region);
    assert_eq!(numa::free_huge_pages(TWO_MIB), free_before);

    // A node arena on reserved pages: a table built in it lives in huge pages.
    numa::configure(ArenaSettings {
        huge_pages: HugePages::Mib2,
        region_bytes: 64 << 20,
        bind: true,
    })
    .unwrap();
    let arena = NodeArena::of(0);
    let mut table = hashbrown::HashMap::with_hasher_in(
        hashbrown::DefaultHashBuilder::default(),
        arena.allocator(),
    );
    for i in 0..200_000u64 {
        table.insert(i, i * 3);
    }
    assert_eq!(table[&199_999], 599_997);
    let stats = arena.stats();
    assert_eq!(stats.mapped[0].0, PageKind::Huge2M, "{stats:?}");
    assert_eq!(stats.binding, Some(Binding::Bind));
    assert!(arena.contains((&table[&5] as *const u64).cast()));
}
