//! From IR to callable code: optimisation and object emission with a target machine for this
//! host, and loading object code (fresh or from the AOT cache) into one process-wide ORC LLJIT.
//!
//! inkwell 0.11 has no ORCv2 wrapper, so loading uses `llvm_sys`'s LLJIT C API directly. Each
//! loaded object gets its own resource tracker; dropping the last [`Loaded`] handle removes the
//! code. A symbol is loaded at most once per process: a second load of the same name returns
//! the live handle.

use crate::analysis::analyse;
use crate::codegen::{self, CodegenError};
use crate::runtime::CompiledFn;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::llvm_sys::core::LLVMCreateMemoryBufferWithMemoryRangeCopy;
use inkwell::llvm_sys::error::{LLVMDisposeErrorMessage, LLVMErrorRef, LLVMGetErrorMessage};
use inkwell::llvm_sys::orc2::lljit::{
    LLVMOrcCreateLLJIT, LLVMOrcLLJITAddObjectFileWithRT, LLVMOrcLLJITGetGlobalPrefix,
    LLVMOrcLLJITGetMainJITDylib, LLVMOrcLLJITLookup, LLVMOrcLLJITRef,
};
use inkwell::llvm_sys::orc2::{
    LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess, LLVMOrcDefinitionGeneratorRef,
    LLVMOrcExecutorAddress, LLVMOrcJITDylibAddGenerator, LLVMOrcJITDylibCreateResourceTracker,
    LLVMOrcReleaseResourceTracker, LLVMOrcResourceTrackerRef, LLVMOrcResourceTrackerRemove,
};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use parking_lot::Mutex;
use revm::interpreter::instructions::GasTable;
use revm::primitives::hardfork::SpecId;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Compiler version: part of every cache key, bumped when generated code changes meaning.
pub const COMPILER_VERSION: u32 = 3;

/// Why compiling or loading failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// IR generation failed.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// LLVM could not set up a target machine for this host.
    #[error("target machine: {0}")]
    Target(String),
    /// Optimisation or object emission failed.
    #[error("LLVM: {0}")]
    Llvm(String),
    /// The LLJIT refused the object or could not find the symbol.
    #[error("ORC: {0}")]
    Orc(String),
}

/// Optimisation level of generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptLevel {
    /// No optimisation: fastest compile.
    O0,
    /// Light optimisation.
    O1,
    /// The default: LLVM's `default<O2>` pipeline.
    O2,
    /// Aggressive.
    O3,
}

impl OptLevel {
    /// The IR pipeline. O1 and O2 are function-local pipelines without loop passes: a
    /// contract is one loop through its jump dispatch, and LLVM's loop passes spent seconds on
    /// large contracts for no measured gain. O3 is LLVM's own `default<O3>`.
    fn pipeline(self) -> &'static str {
        match self {
            OptLevel::O0 => "default<O0>",
            OptLevel::O1 => {
                "function(sroa,early-cse,simplifycfg,instcombine<no-verify-fixpoint>,dse)"
            }
            OptLevel::O2 => {
                "function(sroa,early-cse,simplifycfg,instcombine<no-verify-fixpoint>,gvn,dse,simplifycfg)"
            }
            OptLevel::O3 => "default<O3>",
        }
    }

    fn codegen(self) -> OptimizationLevel {
        match self {
            OptLevel::O0 => OptimizationLevel::None,
            OptLevel::O1 => OptimizationLevel::Less,
            OptLevel::O2 => OptimizationLevel::Default,
            OptLevel::O3 => OptimizationLevel::Aggressive,
        }
    }
}

/// Object code for one contract and fork, with what it cost to make.
pub struct Object {
    /// The symbol of the compiled function inside `bytes`.
    pub symbol: String,
    /// A relocatable ELF object for this host.
    pub bytes: Vec<u8>,
    /// Time spent in analysis, IR generation, optimisation and emission.
    pub compile_time: Duration,
}

/// The CPU this process runs on, as LLVM names it (part of the AOT cache key).
pub fn host_cpu() -> (String, String) {
    (
        TargetMachine::get_host_cpu_name().to_string(),
        TargetMachine::get_host_cpu_features().to_string(),
    )
}

fn target_machine(opt: OptLevel) -> Result<TargetMachine, EngineError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // Machine LICM hoists out of the one loop every contract forms through its jump
        // dispatch; on a large contract it took 12 of 27 s of snailtracer's compile and gained
        // nothing measurable. `JIT_LLVM_FLAGS` adds LLVM options (for experiments).
        let extra = std::env::var("JIT_LLVM_FLAGS").unwrap_or_default();
        {
            let args: Vec<CString> = ["jit", "-disable-machine-licm"]
                .into_iter()
                .map(str::to_string)
                .chain(extra.split_whitespace().map(str::to_string))
                .map(|a| CString::new(a).expect("no NUL"))
                .collect();
            let ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
            // SAFETY: argv-style array of NUL-terminated strings that outlive the call.
            unsafe {
                inkwell::llvm_sys::support::LLVMParseCommandLineOptions(
                    ptrs.len() as i32,
                    ptrs.as_ptr(),
                    std::ptr::null(),
                )
            };
        }
        Target::initialize_native(&InitializationConfig::default())
    })
    .clone()
    .map_err(EngineError::Target)?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| EngineError::Target(e.to_string()))?;
    let (cpu, features) = host_cpu();
    target
        .create_target_machine(
            &triple,
            &cpu,
            &features,
            opt.codegen(),
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| EngineError::Target(format!("no target machine for {triple}")))
}

/// The symbol name of the compiled function for `code_hash` under `spec`.
pub fn symbol_name(code_hash: &[u8; 32], spec: SpecId) -> String {
    let hex: String = code_hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("evm_v{COMPILER_VERSION}_{hex}_{}", spec as u8)
}

/// What `compile` produces besides the object, for inspection (`jit compile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emit {
    /// Only the object.
    #[default]
    Object,
    /// The optimised LLVM IR too.
    Ir,
    /// The assembly too.
    Asm,
}

/// Time per compile stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Analysis and IR generation.
    pub codegen: Duration,
    /// LLVM's optimisation pipeline.
    pub optimise: Duration,
    /// Instruction selection and object emission.
    pub emit: Duration,
}

/// Compiles `code` for `spec` to an object, with `passes` (an LLVM pass pipeline) instead of
/// the level's default pipeline when given.
pub fn compile_with(
    code: &[u8],
    code_hash: &[u8; 32],
    spec: SpecId,
    gas_table: &GasTable,
    opt: OptLevel,
    passes: Option<&str>,
    emit: Emit,
) -> Result<(Object, Timings, Option<String>), EngineError> {
    let started = Instant::now();
    let analysis = analyse(code, spec, gas_table);
    let cx = Context::create();
    let module = cx.create_module("evm");
    let tm = target_machine(opt)?;
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let symbol = symbol_name(code_hash, spec);
    codegen::build(&cx, &module, &symbol, &analysis)?;
    let codegen_done = Instant::now();
    module
        .run_passes(passes.unwrap_or(opt.pipeline()), &tm, PassBuilderOptions::create())
        .map_err(|e| EngineError::Llvm(e.to_string()))?;
    let optimised = Instant::now();
    let text = match emit {
        Emit::Object => None,
        Emit::Ir => Some(module.print_to_string().to_string()),
        Emit::Asm => {
            let asm = tm
                .write_to_memory_buffer(&module, FileType::Assembly)
                .map_err(|e| EngineError::Llvm(e.to_string()))?;
            Some(String::from_utf8_lossy(asm.as_slice()).into_owned())
        }
    };
    let emit_started = Instant::now();
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| EngineError::Llvm(e.to_string()))?;
    let done = Instant::now();
    let timings = Timings {
        codegen: codegen_done - started,
        optimise: optimised - codegen_done,
        emit: done - emit_started,
    };
    let object = Object {
        symbol,
        bytes: buf.as_slice().to_vec(),
        compile_time: timings.codegen + timings.optimise + timings.emit,
    };
    Ok((object, timings, text))
}

/// Compiles `code` for `spec` to an object with the level's default pipeline.
pub fn compile(
    code: &[u8],
    code_hash: &[u8; 32],
    spec: SpecId,
    gas_table: &GasTable,
    opt: OptLevel,
) -> Result<Object, EngineError> {
    compile_with(code, code_hash, spec, gas_table, opt, None, Emit::Object).map(|(o, _, _)| o)
}

/// Loaded code: callable while this handle lives.
pub struct Loaded {
    func: CompiledFn,
    tracker: LLVMOrcResourceTrackerRef,
    symbol: String,
    /// Size of the object code in bytes.
    pub code_bytes: usize,
}

// SAFETY: the function pointer is to immutable code; the tracker is only used under the
// engine's lock in `Drop`.
unsafe impl Send for Loaded {}
// SAFETY: as above; calling the function does not touch the handle.
unsafe impl Sync for Loaded {}

impl Loaded {
    /// The compiled function.
    pub fn func(&self) -> CompiledFn {
        self.func
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let Some(jit) = JIT.get() else { return };
        let mut inner = jit.lock();
        // Whoever takes the map entry removes the code: here, or a concurrent `load` of the
        // same symbol that found this handle already dead.
        let mine = inner.loaded.get(&self.symbol).is_some_and(|(_, t)| *t == self.tracker);
        // SAFETY: the tracker was created for this object; it is removed once (by whoever
        // takes the map entry) and released once, here.
        unsafe {
            if mine {
                inner.loaded.remove(&self.symbol);
                if let Some(msg) = take_error(LLVMOrcResourceTrackerRemove(self.tracker)) {
                    tracing::warn!(symbol = %self.symbol, %msg, "JIT code removal failed");
                }
            }
            LLVMOrcReleaseResourceTracker(self.tracker);
        }
    }
}

struct Jit {
    lljit: LLVMOrcLLJITRef,
    loaded: HashMap<String, (Weak<Loaded>, LLVMOrcResourceTrackerRef)>,
}

// SAFETY: the LLJIT is only used under the mutex.
unsafe impl Send for Jit {}

static JIT: OnceLock<Mutex<Jit>> = OnceLock::new();

/// # Safety
/// `err` must be a fresh `LLVMErrorRef` (or null); it is consumed.
unsafe fn take_error(err: LLVMErrorRef) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: per the contract, err is a live error; the message is disposed after copying.
    unsafe {
        let msg = LLVMGetErrorMessage(err);
        let s = CStr::from_ptr(msg).to_string_lossy().into_owned();
        LLVMDisposeErrorMessage(msg);
        Some(s)
    }
}

fn lljit() -> Result<&'static Mutex<Jit>, EngineError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        Target::initialize_native(&InitializationConfig::default())?;
        // SAFETY: plain C API calls with valid out-pointers; a null builder selects defaults.
        unsafe {
            let mut j: LLVMOrcLLJITRef = std::ptr::null_mut();
            if let Some(e) = take_error(LLVMOrcCreateLLJIT(&mut j, std::ptr::null_mut())) {
                return Err(e);
            }
            // Let objects resolve memcpy, memset and compiler-rt helpers from this process.
            let mut generator: LLVMOrcDefinitionGeneratorRef = std::ptr::null_mut();
            let prefix = LLVMOrcLLJITGetGlobalPrefix(j);
            if let Some(e) = take_error(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                &mut generator,
                prefix,
                None,
                std::ptr::null_mut(),
            )) {
                return Err(e);
            }
            LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j), generator);
            let _ = JIT.set(Mutex::new(Jit { lljit: j, loaded: HashMap::new() }));
        }
        Ok(())
    })
    .clone()
    .map_err(EngineError::Orc)?;
    JIT.get().ok_or_else(|| EngineError::Orc("LLJIT not initialised".into()))
}

/// Loads `object` (defining `symbol`) and returns a handle to the function.
pub fn load(symbol: &str, object: &[u8]) -> Result<Arc<Loaded>, EngineError> {
    let jit = lljit()?;
    let mut inner = jit.lock();
    if let Some((weak, tracker)) = inner.loaded.get(symbol) {
        if let Some(live) = weak.upgrade() {
            return Ok(live);
        }
        // Its last handle is being dropped and waits for this lock: remove the code now so
        // the symbol can be defined again.
        let tracker = *tracker;
        inner.loaded.remove(symbol);
        // SAFETY: the entry's tracker is live (released only by the dying handle's drop).
        if let Some(msg) = unsafe { take_error(LLVMOrcResourceTrackerRemove(tracker)) } {
            return Err(EngineError::Orc(msg));
        }
    }
    let name = CString::new(symbol).map_err(|e| EngineError::Orc(e.to_string()))?;
    // SAFETY: C API calls on the live LLJIT under its lock; the buffer is copied by LLVM and
    // owned by the LLJIT after AddObjectFile; the tracker is released by `Loaded::drop`.
    unsafe {
        let buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(
            object.as_ptr().cast(),
            object.len(),
            name.as_ptr(),
        );
        let jd = LLVMOrcLLJITGetMainJITDylib(inner.lljit);
        let tracker = LLVMOrcJITDylibCreateResourceTracker(jd);
        if let Some(e) = take_error(LLVMOrcLLJITAddObjectFileWithRT(inner.lljit, tracker, buf)) {
            LLVMOrcReleaseResourceTracker(tracker);
            return Err(EngineError::Orc(e));
        }
        let mut addr: LLVMOrcExecutorAddress = 0;
        if let Some(e) = take_error(LLVMOrcLLJITLookup(inner.lljit, &mut addr, name.as_ptr())) {
            let _ = take_error(LLVMOrcResourceTrackerRemove(tracker));
            LLVMOrcReleaseResourceTracker(tracker);
            return Err(EngineError::Orc(e));
        }
        if addr == 0 {
            let _ = take_error(LLVMOrcResourceTrackerRemove(tracker));
            LLVMOrcReleaseResourceTracker(tracker);
            return Err(EngineError::Orc(format!("{symbol} resolved to null")));
        }
        let func: CompiledFn = std::mem::transmute::<usize, CompiledFn>(addr as usize);
        let loaded = Arc::new(Loaded {
            func,
            tracker,
            symbol: symbol.to_string(),
            code_bytes: object.len(),
        });
        inner.loaded.insert(symbol.to_string(), (Arc::downgrade(&loaded), tracker));
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::interpreter::instructions::gas_table_spec;

    #[test]
    fn compiles_and_loads_a_small_contract() {
        let code = [0x60, 0x02, 0x60, 0x03, 0x01, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3];
        let hash = [7u8; 32];
        let spec = SpecId::CANCUN;
        let table = gas_table_spec(spec);
        let (obj, _, ir) =
            compile_with(&code, &hash, spec, &table, OptLevel::O2, None, Emit::Ir).unwrap();
        assert!(ir.unwrap().contains("define"));
        assert!(!obj.bytes.is_empty());
        let a = load(&obj.symbol, &obj.bytes).unwrap();
        let b = load(&obj.symbol, &obj.bytes).unwrap();
        assert_eq!(a.func() as usize, b.func() as usize, "one load per symbol");
    }
}
