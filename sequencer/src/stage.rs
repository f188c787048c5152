//! Stage timers: each pipeline stage records its wall time (`…_seconds`, what a block waits
//! for) and the CPU time of the thread that ran it (`…_cpu_seconds`, what it costs). On a host
//! with more runnable threads than cores the two differ: wall time then also counts the time
//! the thread waited for a core, so only CPU times add up to the process's.

use std::time::{Duration, Instant};

/// The calling thread's CPU time so far (user + system), from the kernel's per-thread clock.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the struct it is given, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A stage being timed on the current thread.
#[derive(Debug)]
pub struct Stage {
    wall: Instant,
    cpu: Duration,
}

impl Stage {
    /// Starts timing.
    pub fn start() -> Self {
        Self { wall: Instant::now(), cpu: thread_cpu_time() }
    }

    /// When the stage started.
    pub fn started(&self) -> Instant {
        self.wall
    }

    /// Records the stage's wall time into `wall` and its thread's CPU time into `cpu`
    /// (histograms, seconds). Must be called on the thread that started it.
    pub fn record(self, wall: &'static str, cpu: &'static str) {
        // Read in the reverse order of `start`, so that the CPU interval lies within the wall
        // one, and both before recording either.
        let cpu_time = thread_cpu_time().saturating_sub(self.cpu);
        let wall_time = self.wall.elapsed();
        metrics::histogram!(wall).record(wall_time);
        metrics::histogram!(cpu).record(cpu_time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_work_and_not_sleep() {
        let start = Stage::start();
        std::thread::sleep(Duration::from_millis(200));
        let slept = thread_cpu_time() - start.cpu;
        assert!(slept < Duration::from_millis(100), "sleeping counted {slept:?} of CPU");
        let mut x = 1u64;
        while thread_cpu_time() - start.cpu < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(start.started().elapsed() >= Duration::from_millis(300));
    }
}
