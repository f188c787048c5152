//! `jit compile FILE.hex`: compile one contract and show its analysis, the compile time per
//! stage, the object size, and optionally the optimised IR or the assembly.

use clap::{Parser, Subcommand, ValueEnum};
use jit::engine::{Emit, compile_with};
use jit::{OptLevel, analysis::Lowering};
use revm::interpreter::instructions::gas_table_spec;
use revm::primitives::hardfork::SpecId;
use revm::primitives::keccak256;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(about = "The EVM JIT compiler, for inspection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile runtime bytecode (a hex file) and report analysis, timing and size.
    Compile {
        /// A file holding the contract's runtime code in hex (0x optional).
        file: PathBuf,
        /// Hard fork (revm's name, e.g. Cancun, Prague, Osaka).
        #[arg(long, default_value = "Osaka")]
        spec: String,
        /// Optimisation level.
        #[arg(long, value_enum, default_value = "o2")]
        opt: Opt,
        /// An LLVM pass pipeline to use instead of the level's (e.g. "default<O1>").
        #[arg(long)]
        passes: Option<String>,
        /// Print the optimised IR or the assembly as well.
        #[arg(long, value_enum)]
        emit: Option<Show>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Opt {
    O0,
    O1,
    O2,
    O3,
}

#[derive(Clone, Copy, ValueEnum)]
enum Show {
    Ir,
    Asm,
}

fn main() -> ExitCode {
    let Command::Compile { file, spec, opt, passes, emit } = Cli::parse().command;
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let code = match revm::primitives::hex::decode(text.trim()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: not hex: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let Ok(spec) = spec.parse::<SpecId>() else {
        eprintln!("error: unknown hard fork {spec:?}");
        return ExitCode::from(2);
    };
    let opt = match opt {
        Opt::O0 => OptLevel::O0,
        Opt::O1 => OptLevel::O1,
        Opt::O2 => OptLevel::O2,
        Opt::O3 => OptLevel::O3,
    };
    let table = gas_table_spec(spec);
    let analysis = jit::analysis::analyse(&code, spec, &table);
    let count = |l: Lowering| analysis.insts.iter().filter(|i| i.lowering == l).count();
    println!(
        "{}: {} bytes, {} instructions ({} native, {} arithmetic helper, {} revm helper), {} blocks ({} jump targets, {} resume points)",
        file.display(),
        code.len(),
        analysis.insts.len(),
        count(Lowering::Native),
        count(Lowering::Arith),
        count(Lowering::Helper),
        analysis.blocks.len(),
        analysis.blocks.iter().filter(|b| b.jumpdest).count(),
        analysis.blocks.iter().filter(|b| b.resume).count(),
    );
    println!(
        "compile cost {} (the runtime compiles up to {}), {} jump targets (up to {})",
        analysis.cost(),
        jit::analysis::MAX_COST,
        analysis.jump_targets(),
        jit::analysis::MAX_JUMP_TARGETS
    );
    let emit = match emit {
        None => Emit::Object,
        Some(Show::Ir) => Emit::Ir,
        Some(Show::Asm) => Emit::Asm,
    };
    let hash = keccak256(&code);
    match compile_with(&code, &hash.0, spec, &table, opt, passes.as_deref(), emit) {
        Ok((obj, t, text)) => {
            if let Some(text) = text {
                println!("{text}");
            }
            println!(
                "compiled in {:.1} ms (IR {:.1} ms, optimise {:.1} ms, emit {:.1} ms); object {} bytes",
                obj.compile_time.as_secs_f64() * 1e3,
                t.codegen.as_secs_f64() * 1e3,
                t.optimise.as_secs_f64() * 1e3,
                t.emit.as_secs_f64() * 1e3,
                obj.bytes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
