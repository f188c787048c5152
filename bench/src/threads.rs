//! CPU time by thread, from `/proc/self/task`: where a run's CPU went, grouped by what the
//! node's threads do (they are named: `block-builder`, `root-commit`, NOMT's, …). These add
//! up to the process's CPU time; the node's stage timers count only the stages themselves.

use std::{collections::HashMap, time::Duration};

/// CPU time of each live thread: thread id → (name, user + system time).
#[derive(Clone, Debug, Default)]
pub struct Snapshot(HashMap<u32, (String, Duration)>);

/// Reads every thread of this process (empty where `/proc` is not available).
pub fn snapshot() -> Snapshot {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut threads = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Snapshot(threads) };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((name, cpu)) = parse_stat(&stat, ticks) {
            threads.insert(tid, (name, cpu));
        }
    }
    Snapshot(threads)
}

/// Name and CPU time from a `/proc/<pid>/task/<tid>/stat` line: `tid (name) state …`, with
/// utime and stime the 14th and 15th fields, in clock ticks.
fn parse_stat(stat: &str, ticks_per_s: u64) -> Option<(String, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    // Fields after the name start at field 3 (state).
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some((name, Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_s)))
}

/// The group of NOMT's own threads (its commit workers, hash-table and B-tree I/O).
pub const NOMT_GROUP: &str = "NOMT workers and I/O";
/// The group of the JIT's compile threads.
pub const JIT_GROUP: &str = "JIT compiler";
/// The group of the feed's publisher and libp2p's threads.
pub const FEED_GROUP: &str = "feed and p2p";

/// What a thread does, from its name.
pub fn group(name: &str) -> &'static str {
    const GROUPS: [(&str, &str); 14] = [
        ("rayon-", "sender recovery (worker pool)"),
        ("block-builder", "builder: execute, diff, WAL"),
        ("root-commit", "root thread: NOMT session, witness, header"),
        ("nomt-", NOMT_GROUP),
        ("beatree-", NOMT_GROUP),
        ("bitbox-", NOMT_GROUP),
        ("io-worker", NOMT_GROUP),
        ("iou-wrk", NOMT_GROUP),
        ("feed-publisher", FEED_GROUP),
        ("p2p", FEED_GROUP),
        ("tokio-rt", "JSON-RPC server and clients"),
        ("tokio-runtime", "JSON-RPC server and clients"),
        ("jit-", JIT_GROUP),
        ("exec-", "parallel executor"),
    ];
    GROUPS.iter().find(|(prefix, _)| name.starts_with(prefix)).map_or("other", |(_, g)| g)
}

/// CPU time spent between two snapshots, by group, largest first. A thread that started
/// after `before` counts whole; one that ended before `after` is not seen.
pub fn by_group(before: &Snapshot, after: &Snapshot) -> Vec<(String, Duration)> {
    let mut groups: HashMap<&'static str, Duration> = HashMap::new();
    for (tid, (name, cpu)) in &after.0 {
        let earlier = before.0.get(tid).filter(|(n, _)| n == name).map_or(Duration::ZERO, |e| e.1);
        *groups.entry(group(name)).or_default() += cpu.saturating_sub(earlier);
    }
    let mut out: Vec<(String, Duration)> =
        groups.into_iter().map(|(g, d)| (g.to_string(), d)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_names() {
        let line = "4242 (nomt (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        let (name, cpu) = parse_stat(line, 100).unwrap();
        assert_eq!(name, "nomt (x) y");
        assert_eq!(cpu, Duration::from_secs(2));
        assert!(parse_stat("garbage", 100).is_none());
    }

    /// This thread's own CPU time, from the kernel's per-thread clock.
    fn own_cpu() -> Duration {
        // SAFETY: clock_gettime only writes the struct we pass.
        let ts = unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
            ts
        };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn a_named_thread_shows_up_in_its_group_with_its_cpu_time() {
        let before = snapshot();
        let worker = std::thread::Builder::new()
            .name("block-builder".into())
            .spawn(|| {
                // Work until the kernel has counted 200 ms of this thread's CPU time.
                let mut x = 0u64;
                while own_cpu() < Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                let after = snapshot();
                (own_cpu(), after)
            })
            .unwrap();
        let (spent, after) = worker.join().unwrap();
        let groups = by_group(&before, &after);
        let builder = groups.iter().find(|(g, _)| g == "builder: execute, diff, WAL").unwrap();
        // The stat file counts in clock ticks (10 ms here): within one tick of the clock.
        let tick = Duration::from_millis(10);
        assert!(builder.1 + tick >= Duration::from_millis(200), "{groups:?}");
        assert!(builder.1 <= spent + tick, "{groups:?} vs {spent:?}");
    }
}
