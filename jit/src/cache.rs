//! The JIT runtime: per-contract call counters, background compilation, the compiled-code
//! cache with a byte budget, and the on-disk AOT cache.
//!
//! A contract (keyed by code hash and fork) is counted on every call frame that runs it. When
//! its count reaches `hot_threshold` it is queued to the compile threads; frames keep running
//! in the interpreter until the code is ready (in `blocking` mode, used by conformance tests,
//! the frame compiles it at once). Compiled objects are written to `aot_dir` (keyed by compiler
//! version, CPU and fork) and loaded from it at start, so a restarted process is warm at once.

use crate::analysis::analyse;
use crate::engine::{self, COMPILER_VERSION, EngineError, Loaded, OptLevel};
use parking_lot::{Condvar, Mutex, RwLock};
use revm::interpreter::instructions::gas_table_spec;
use revm::primitives::hardfork::SpecId;
use revm::primitives::{B256, keccak256};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Largest code the runtime compiles (twice EIP-170's limit; larger code is interpreted).
pub const MAX_CODE_BYTES: usize = 2 * 0x6000;

/// The `[jit]` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JitConfig {
    /// Compile hot contracts at all. Default true.
    pub enabled: bool,
    /// Calls of one contract (per fork) before it is compiled; 0 compiles on first call.
    /// Default 64.
    pub hot_threshold: u32,
    /// Background compile threads. Default 1.
    pub compile_threads: usize,
    /// Byte budget of loaded object code; least recently used code is unloaded past it.
    /// Default 256 MiB.
    pub cache_bytes: usize,
    /// LLVM optimisation level: "o0", "o1", "o2" or "o3". Default "o2".
    pub opt_level: OptLevel,
    /// Directory of the AOT cache; unset means none (the sequencer sets `<datadir>/jit`).
    pub aot_dir: Option<PathBuf>,
    /// Compile in the calling frame instead of in the background (tests and conformance runs;
    /// not a config key).
    #[serde(skip)]
    pub blocking: bool,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            enabled: true,
            hot_threshold: 64,
            compile_threads: 1,
            cache_bytes: 256 << 20,
            opt_level: OptLevel::O2,
            aot_dir: None,
            blocking: false,
        }
    }
}

impl JitConfig {
    /// Every contract compiled on its first call, in the calling frame.
    pub fn eager() -> Self {
        JitConfig { hot_threshold: 0, blocking: true, ..JitConfig::default() }
    }
}

/// Compiled code for one contract and fork.
pub struct Compiled {
    loaded: Arc<Loaded>,
    /// The contract's code hash.
    pub code_hash: B256,
    /// The fork it was compiled for.
    pub spec: SpecId,
    /// Time to compile it (zero when loaded from the AOT cache).
    pub compile_time: Duration,
    last_used: AtomicU64,
    /// Median interpreter time of one run segment before it was compiled (ns; 0 = unknown,
    /// then no trial is made).
    interp_median_ns: u64,
    trial: Mutex<Vec<u64>>,
    trial_n: AtomicU64,
}

/// Run segments (a frame's run between suspensions) timed on each side before the runtime
/// decides whether compiled code is faster than the interpreter for a contract.
pub const TRIAL_SEGMENTS: u64 = 32;

/// What to run a frame with.
pub struct Lookup {
    /// Compiled code, or `None` for the interpreter.
    pub code: Option<Arc<Compiled>>,
    /// Time this frame's run segments and report them ([`JitRuntime::record`]): the contract
    /// is in its interpreter sampling phase or its compiled trial.
    pub sample: bool,
}

impl Compiled {
    /// Whether its timed trial against the interpreter is still running.
    fn in_trial(&self) -> bool {
        self.interp_median_ns > 0 && self.trial_n.load(Ordering::Relaxed) < TRIAL_SEGMENTS
    }

    /// The compiled function.
    pub fn func(&self) -> crate::runtime::CompiledFn {
        self.loaded.func()
    }

    /// Size of its object code.
    pub fn code_bytes(&self) -> usize {
        self.loaded.code_bytes
    }
}

/// Why a contract runs in the interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The fork is newer than the compiler supports (Amsterdam: EIP-8037 state gas).
    Fork,
    /// The code is larger than [`MAX_CODE_BYTES`].
    TooLarge,
    /// Compiling it would take too long: more than `analysis::MAX_JUMP_TARGETS` jump targets
    /// or a cost above `analysis::MAX_COST` (crafted code must not hold a compile thread).
    TooComplex,
    /// The frame runs EOF or EIP-7702 designator bytes, not legacy code.
    NotLegacy,
    /// Its compiled code ran no faster than the interpreter in the trial.
    NotFaster,
    /// Compilation or loading failed (logged with the reason).
    Error,
}

impl Fallback {
    /// Its name in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Fork => "fork",
            Fallback::TooLarge => "too_large",
            Fallback::TooComplex => "too_complex",
            Fallback::NotLegacy => "not_legacy",
            Fallback::NotFaster => "not_faster",
            Fallback::Error => "error",
        }
    }
}

enum Entry {
    /// Not compiled yet: its calls so far.
    Cold(AtomicU32),
    Queued,
    Ready(Arc<Compiled>),
    Declined(Fallback),
}

/// Counters of what the runtime did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JitStats {
    /// Contracts compiled in this process.
    pub compiled: u64,
    /// Contracts loaded from the AOT cache.
    pub loaded_aot: u64,
    /// Distinct contracts declined, by reason.
    pub declined: Vec<(Fallback, u64)>,
    /// Frames run by compiled code.
    pub frames_compiled: u64,
    /// Frames run by the interpreter.
    pub frames_interpreted: u64,
    /// Total compile time in microseconds.
    pub compile_micros: u64,
    /// Loaded object code in bytes.
    pub code_bytes: usize,
    /// Compiled code unloaded for the byte budget.
    pub evicted: u64,
}

struct Job {
    hash: B256,
    spec: SpecId,
    code: Vec<u8>,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    stop: AtomicBool,
}

/// The JIT runtime, shared by every EVM of a process.
pub struct JitRuntime {
    cfg: JitConfig,
    map: RwLock<HashMap<(B256, SpecId), Entry>>,
    queue: Arc<Queue>,
    clock: AtomicU64,
    bytes: AtomicUsize,
    compiled: AtomicU64,
    loaded_aot: AtomicU64,
    evicted: AtomicU64,
    compile_micros: AtomicU64,
    frames_compiled: AtomicU64,
    frames_interpreted: AtomicU64,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Interpreter times of run segments per contract while it is cold (ns, at most
    /// [`TRIAL_SEGMENTS`]).
    samples: Mutex<HashMap<(B256, SpecId), Vec<u64>>>,
}

impl JitRuntime {
    /// Starts the runtime: loads the AOT cache and starts the compile threads (pinned to
    /// `cpus` when given).
    pub fn start(cfg: JitConfig, cpus: Option<Vec<usize>>) -> Arc<JitRuntime> {
        let rt = Arc::new(JitRuntime {
            cfg,
            map: RwLock::new(HashMap::new()),
            queue: Arc::new(Queue {
                jobs: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            clock: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            compiled: AtomicU64::new(0),
            loaded_aot: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            compile_micros: AtomicU64::new(0),
            frames_compiled: AtomicU64::new(0),
            frames_interpreted: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
            samples: Mutex::new(HashMap::new()),
        });
        if !rt.cfg.enabled {
            return rt;
        }
        rt.load_aot();
        if !rt.cfg.blocking {
            let mut workers = rt.workers.lock();
            for i in 0..rt.cfg.compile_threads.max(1) {
                let weak = Arc::downgrade(&rt);
                let queue = rt.queue.clone();
                let cpus = cpus.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("jit-compile-{i}"))
                    .spawn(move || {
                        if let Some(cpus) = cpus
                            && !numa::pin_to_set(&cpus)
                        {
                            tracing::warn!(?cpus, "JIT compile thread not pinned");
                        }
                        compile_loop(&weak, &queue);
                    })
                    .expect("spawn JIT compile thread");
                workers.push(handle);
            }
        }
        rt
    }

    /// A runtime that compiles nothing (`enabled = false`), shared by every caller.
    pub fn disabled() -> Arc<JitRuntime> {
        static OFF: std::sync::OnceLock<Arc<JitRuntime>> = std::sync::OnceLock::new();
        OFF.get_or_init(|| {
            JitRuntime::start(JitConfig { enabled: false, ..JitConfig::default() }, None)
        })
        .clone()
    }

    /// Checks the settings; the error names the key.
    pub fn validate(cfg: &JitConfig) -> Result<(), (&'static str, &'static str)> {
        if cfg.enabled && cfg.compile_threads == 0 {
            return Err(("jit.compile_threads", "must be at least 1 when the JIT is enabled"));
        }
        if cfg.cache_bytes < (1 << 20) {
            return Err(("jit.cache_bytes", "must be at least 1 MiB"));
        }
        Ok(())
    }

    /// Its configuration.
    pub fn config(&self) -> &JitConfig {
        &self.cfg
    }

    /// What to run a call frame of `code` with. Counts the call and queues (or, in blocking
    /// mode, compiles) the contract once it is hot. Called for every call frame: compiled,
    /// declined, queued and cold contracts are answered under the map's read lock (a cold
    /// contract's count is atomic); the write lock is taken only for a contract's first call
    /// and when it becomes hot.
    pub fn lookup(&self, hash: B256, spec: SpecId, code: &[u8]) -> Lookup {
        const INTERPRET: Lookup = Lookup { code: None, sample: false };
        if !self.cfg.enabled {
            return INTERPRET;
        }
        let key = (hash, spec);
        let sample_cold = self.cfg.hot_threshold > 0;
        {
            let map = self.map.read();
            match map.get(&key) {
                Some(Entry::Ready(c)) => return self.run_compiled(c),
                Some(Entry::Declined(_)) => return self.interpret(INTERPRET),
                Some(Entry::Queued) if !self.cfg.blocking => return self.interpret(INTERPRET),
                // Cold and still below the threshold; once hot, queued below.
                Some(Entry::Cold(n))
                    if n.fetch_add(1, Ordering::Relaxed) < self.cfg.hot_threshold =>
                {
                    return self.interpret(Lookup { code: None, sample: sample_cold });
                }
                _ => {}
            }
        }
        let mut map = self.map.write();
        let entry = map.entry(key).or_insert_with(|| Entry::Cold(AtomicU32::new(0)));
        match entry {
            Entry::Ready(c) => return self.run_compiled(c),
            Entry::Queued if self.cfg.blocking => {
                // Another frame is compiling it: in blocking mode, wait for its result.
                drop(map);
                let code = self.wait_for(hash, spec);
                return Lookup { sample: code.as_ref().is_some_and(|c| c.in_trial()), code };
            }
            Entry::Queued | Entry::Declined(_) => return self.interpret(INTERPRET),
            Entry::Cold(n) => {
                // A first call is counted here; later ones were counted under the read lock.
                let seen = match n.load(Ordering::Relaxed) {
                    0 => n.fetch_add(1, Ordering::Relaxed) + 1,
                    seen => seen,
                };
                if seen <= self.cfg.hot_threshold {
                    return self.interpret(Lookup { code: None, sample: sample_cold });
                }
            }
        }
        if let Some(reason) = decline(spec, code) {
            *entry = Entry::Declined(reason);
            metrics::counter!("jit_declined_total", "reason" => reason.as_str()).increment(1);
            return self.interpret(INTERPRET);
        }
        *entry = Entry::Queued;
        let job = Job { hash, spec, code: code.to_vec() };
        drop(map);
        if self.cfg.blocking {
            match self.compile_job(job) {
                Some(c) => self.run_compiled(&c),
                None => self.interpret(INTERPRET),
            }
        } else {
            self.queue.jobs.lock().push_back(job);
            self.queue.ready.notify_one();
            self.interpret(INTERPRET)
        }
    }

    /// Counts a frame run by `c` and answers it.
    fn run_compiled(&self, c: &Arc<Compiled>) -> Lookup {
        // The clock advances with each contract compiled or loaded: a load, not a shared
        // increment, on this per-frame path.
        c.last_used.store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
        self.frames_compiled.fetch_add(1, Ordering::Relaxed);
        Lookup { sample: c.in_trial(), code: Some(c.clone()) }
    }

    /// Counts a frame run by the interpreter and answers it.
    fn interpret(&self, l: Lookup) -> Lookup {
        self.frames_interpreted.fetch_add(1, Ordering::Relaxed);
        l
    }

    /// Reports the time of one run segment of a frame that [`JitRuntime::lookup`] asked to
    /// sample. After [`TRIAL_SEGMENTS`] compiled segments, code that was not faster than the
    /// interpreter's mean is dropped and the contract is interpreted from then on.
    pub fn record(&self, hash: B256, spec: SpecId, compiled: Option<&Arc<Compiled>>, ns: u64) {
        let Some(c) = compiled else {
            let mut samples = self.samples.lock();
            let s = samples.entry((hash, spec)).or_default();
            if (s.len() as u64) < TRIAL_SEGMENTS {
                s.push(ns);
            }
            return;
        };
        if c.interp_median_ns == 0 {
            return;
        }
        let mean = {
            let mut trial = c.trial.lock();
            if trial.len() as u64 >= TRIAL_SEGMENTS {
                return;
            }
            trial.push(ns);
            c.trial_n.store(trial.len() as u64, Ordering::Relaxed);
            if (trial.len() as u64) < TRIAL_SEGMENTS {
                return;
            }
            // Medians: the first runs of fresh code fault its pages in.
            median(&mut trial)
        };
        if mean < c.interp_median_ns {
            tracing::debug!(%hash, mean, interp = c.interp_median_ns, "JIT code is faster; kept");
            return;
        }
        tracing::info!(%hash, mean, interp = c.interp_median_ns, "JIT code no faster than the interpreter; declined");
        metrics::counter!("jit_declined_total", "reason" => Fallback::NotFaster.as_str())
            .increment(1);
        let mut map = self.map.write();
        if let Some(Entry::Ready(cur)) = map.get(&(hash, spec))
            && Arc::ptr_eq(cur, c)
        {
            map.insert((hash, spec), Entry::Declined(Fallback::NotFaster));
            self.bytes.fetch_sub(c.code_bytes(), Ordering::Relaxed);
            // A restart must not load it unjudged from the AOT cache.
            if let Some(path) = self.aot_path(hash, spec) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Median interpreter time per run segment recorded while the contract was cold (0: too
    /// few samples).
    fn interp_median(&self, hash: B256, spec: SpecId) -> u64 {
        match self.samples.lock().remove(&(hash, spec)) {
            Some(mut v)
                if !v.is_empty()
                    && v.len() as u64 >= TRIAL_SEGMENTS.min(u64::from(self.cfg.hot_threshold)) =>
            {
                median(&mut v)
            }
            _ => 0,
        }
    }

    /// Waits until a queued contract is compiled or declined (blocking mode).
    fn wait_for(&self, hash: B256, spec: SpecId) -> Option<Arc<Compiled>> {
        loop {
            match self.map.read().get(&(hash, spec)) {
                Some(Entry::Ready(c)) => {
                    self.frames_compiled.fetch_add(1, Ordering::Relaxed);
                    return Some(c.clone());
                }
                Some(Entry::Queued) => {}
                _ => {
                    self.frames_interpreted.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Compiles (or loads from the AOT cache) and installs one job's code.
    fn compile_job(&self, job: Job) -> Option<Arc<Compiled>> {
        let key = (job.hash, job.spec);
        let result =
            self.load_aot_one(job.hash, job.spec).map(Ok).unwrap_or_else(|| self.compile_now(&job));
        let mut map = self.map.write();
        match result {
            Ok(c) => {
                map.insert(key, Entry::Ready(c.clone()));
                drop(map);
                self.account(&c);
                Some(c)
            }
            Err(err) => {
                tracing::warn!(hash = %job.hash, spec = ?job.spec, %err, "JIT compile failed; interpreting");
                metrics::counter!("jit_declined_total", "reason" => Fallback::Error.as_str())
                    .increment(1);
                map.insert(key, Entry::Declined(Fallback::Error));
                None
            }
        }
    }

    fn compile_now(&self, job: &Job) -> Result<Arc<Compiled>, EngineError> {
        debug_assert_eq!(keccak256(&job.code), job.hash, "code hash of a compiled contract");
        let obj = engine::compile(
            &job.code,
            &job.hash.0,
            job.spec,
            &gas_table_spec(job.spec),
            self.cfg.opt_level,
        )?;
        let loaded = engine::load(&obj.symbol, &obj.bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        self.compile_micros.fetch_add(obj.compile_time.as_micros() as u64, Ordering::Relaxed);
        metrics::counter!("jit_compiled_total").increment(1);
        metrics::histogram!("jit_compile_seconds").record(obj.compile_time.as_secs_f64());
        if let Some(path) = self.aot_path(job.hash, job.spec)
            && let Err(err) = write_atomic(&path, &obj.bytes)
        {
            tracing::warn!(path = %path.display(), %err, "JIT AOT cache write failed");
        }
        Ok(Arc::new(Compiled {
            loaded,
            code_hash: job.hash,
            spec: job.spec,
            compile_time: obj.compile_time,
            last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            interp_median_ns: self.interp_median(job.hash, job.spec),
            trial: Mutex::new(Vec::new()),
            trial_n: AtomicU64::new(0),
        }))
    }

    /// Adds `c`'s bytes to the budget and unloads least recently used code past it.
    fn account(&self, c: &Compiled) {
        let total = self.bytes.fetch_add(c.code_bytes(), Ordering::Relaxed) + c.code_bytes();
        metrics::gauge!("jit_code_bytes").set(total as f64);
        if total <= self.cfg.cache_bytes {
            return;
        }
        let mut map = self.map.write();
        let mut ready: Vec<(u64, (B256, SpecId), usize)> = map
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Ready(c) => Some((c.last_used.load(Ordering::Relaxed), *k, c.code_bytes())),
                _ => None,
            })
            .collect();
        ready.sort_unstable();
        let mut total = self.bytes.load(Ordering::Relaxed);
        for (_, key, bytes) in ready {
            if total <= self.cfg.cache_bytes {
                break;
            }
            // Frames running this code hold their own handle; it is unloaded when they end.
            map.insert(key, Entry::Cold(AtomicU32::new(0)));
            total -= bytes;
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("jit_evicted_total").increment(1);
        }
        metrics::gauge!("jit_code_bytes").set(total as f64);
    }

    fn aot_dir(&self) -> Option<PathBuf> {
        let (cpu, _) = engine::host_cpu();
        let features = keccak256(engine::host_cpu().1.as_bytes());
        self.cfg.aot_dir.as_ref().map(|d| {
            d.join(format!("v{COMPILER_VERSION}"))
                .join(format!("{cpu}-{}", &hex_str(&features.0)[..12]))
        })
    }

    fn aot_path(&self, hash: B256, spec: SpecId) -> Option<PathBuf> {
        self.aot_dir()
            .map(|d| d.join(format!("{}", spec as u8)).join(format!("{}.o", hex_str(&hash.0))))
    }

    fn load_aot_one(&self, hash: B256, spec: SpecId) -> Option<Arc<Compiled>> {
        let path = self.aot_path(hash, spec)?;
        let bytes = std::fs::read(&path).ok()?;
        match engine::load(&engine::symbol_name(&hash.0, spec), &bytes) {
            Ok(loaded) => {
                self.loaded_aot.fetch_add(1, Ordering::Relaxed);
                Some(Arc::new(Compiled {
                    loaded,
                    code_hash: hash,
                    spec,
                    compile_time: Duration::ZERO,
                    last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
                    interp_median_ns: self.interp_median(hash, spec),
                    trial: Mutex::new(Vec::new()),
                    trial_n: AtomicU64::new(0),
                }))
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "unusable JIT AOT object; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Loads every object of the AOT cache for this compiler and CPU.
    fn load_aot(&self) {
        let Some(dir) = self.aot_dir() else { return };
        let Ok(specs) = std::fs::read_dir(&dir) else { return };
        for spec_dir in specs.flatten() {
            let Some(spec) = spec_dir
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u8>().ok())
                .and_then(SpecId::try_from_u8)
            else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(spec_dir.path()) else { continue };
            for f in files.flatten() {
                let name = f.file_name();
                let Some(hash) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".o"))
                    .and_then(|h| h.parse::<B256>().ok())
                else {
                    continue;
                };
                if let Some(c) = self.load_aot_one(hash, spec) {
                    self.map.write().insert((hash, spec), Entry::Ready(c.clone()));
                    self.account(&c);
                }
            }
        }
        let n = self.loaded_aot.load(Ordering::Relaxed);
        if n > 0 {
            tracing::info!(contracts = n, dir = %dir.display(), "JIT AOT cache loaded");
        }
    }

    /// Waits until the compile queue is empty and no job is running (tests and benchmarks).
    pub fn wait_idle(&self) {
        loop {
            let busy = !self.queue.jobs.lock().is_empty()
                || self.map.read().values().any(|e| matches!(e, Entry::Queued));
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Compiled code for `hash` under `spec` if it is ready.
    pub fn ready(&self, hash: B256, spec: SpecId) -> Option<Arc<Compiled>> {
        match self.map.read().get(&(hash, spec)) {
            Some(Entry::Ready(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// What the runtime did so far.
    pub fn stats(&self) -> JitStats {
        let mut declined: HashMap<Fallback, u64> = HashMap::new();
        for e in self.map.read().values() {
            if let Entry::Declined(r) = e {
                *declined.entry(*r).or_default() += 1;
            }
        }
        let mut declined: Vec<_> = declined.into_iter().collect();
        declined.sort_by_key(|(r, _)| r.as_str());
        JitStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded_aot: self.loaded_aot.load(Ordering::Relaxed),
            declined,
            frames_compiled: self.frames_compiled.load(Ordering::Relaxed),
            frames_interpreted: self.frames_interpreted.load(Ordering::Relaxed),
            compile_micros: self.compile_micros.load(Ordering::Relaxed),
            code_bytes: self.bytes.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for JitRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitRuntime")
            .field("config", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

impl JitRuntime {
    /// Stops the compile threads and waits for them (a compile under way finishes first).
    /// Contracts not compiled yet stay interpreted. An owner that shuts down calls this: a
    /// compile thread still inside LLVM when the process exits races LLVM's own teardown.
    pub fn stop(&self) {
        self.queue.stop.store(true, Ordering::Relaxed);
        self.queue.ready.notify_all();
        let workers: Vec<_> = self.workers.lock().drain(..).collect();
        for h in workers {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for JitRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

fn decline(spec: SpecId, code: &[u8]) -> Option<Fallback> {
    if spec.is_enabled_in(SpecId::AMSTERDAM) {
        return Some(Fallback::Fork);
    }
    if code.len() > MAX_CODE_BYTES {
        return Some(Fallback::TooLarge);
    }
    let a = analyse(code, spec, &gas_table_spec(spec));
    if a.jump_targets() > crate::analysis::MAX_JUMP_TARGETS || a.cost() > crate::analysis::MAX_COST
    {
        return Some(Fallback::TooComplex);
    }
    None
}

fn compile_loop(rt: &std::sync::Weak<JitRuntime>, queue: &Queue) {
    loop {
        let job = {
            let mut jobs = queue.jobs.lock();
            loop {
                if queue.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(j) = jobs.pop_front() {
                    break j;
                }
                queue.ready.wait_for(&mut jobs, Duration::from_millis(200));
            }
        };
        let Some(rt) = rt.upgrade() else { return };
        rt.compile_job(job);
    }
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn hex_str(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The static analysis of `code` (for `jit compile` and tests).
pub fn analysis_of(code: &[u8], spec: SpecId) -> crate::analysis::Analysis {
    analyse(code, spec, &gas_table_spec(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds synthetic segment times (no clock involved) and checks the verdict.
    fn trial(interp_ns: u64, compiled_ns: u64) -> (Arc<JitRuntime>, B256) {
        let cfg = JitConfig { hot_threshold: 32, blocking: true, ..JitConfig::default() };
        let rt = JitRuntime::start(cfg, None);
        // A loop, distinct per call so that each runtime compiles its own copy.
        let code = [
            0x60,
            (interp_ns % 200) as u8,
            0x5b,
            0x60,
            0x01,
            0x90,
            0x03,
            0x80,
            0x60,
            0x02,
            0x57,
            0x00,
        ];
        let hash = keccak256(code);
        let spec = SpecId::CANCUN;
        for _ in 0..32 {
            let l = rt.lookup(hash, spec, &code);
            assert!(l.code.is_none() && l.sample, "cold: interpreted and sampled");
            rt.record(hash, spec, None, interp_ns);
        }
        let l = rt.lookup(hash, spec, &code);
        let c = l.code.expect("compiled once hot");
        assert!(l.sample, "the compiled trial is sampled");
        for _ in 0..TRIAL_SEGMENTS {
            rt.record(hash, spec, Some(&c), compiled_ns);
        }
        (rt, hash)
    }

    #[test]
    fn compiled_code_slower_than_the_interpreter_is_declined() {
        let (rt, hash) = trial(100, 150);
        assert!(rt.ready(hash, SpecId::CANCUN).is_none());
        assert_eq!(rt.stats().declined, vec![(Fallback::NotFaster, 1)]);
        let l = rt.lookup(hash, SpecId::CANCUN, &[]);
        assert!(l.code.is_none() && !l.sample, "interpreted from then on, unsampled");
    }

    #[test]
    fn faster_compiled_code_is_kept_and_no_longer_sampled() {
        let (rt, hash) = trial(101, 40);
        assert!(rt.ready(hash, SpecId::CANCUN).is_some());
        assert!(rt.stats().declined.is_empty());
        let l = rt.lookup(hash, SpecId::CANCUN, &[]);
        assert!(l.code.is_some() && !l.sample);
    }
}
