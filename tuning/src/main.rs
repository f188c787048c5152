//! The `tuning` binary: `probe`, `plan` and `check` a host for the sequencer.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use numa::{HostReport, Level, Profile, StorageNeeds};

/// Probe a host, plan a sequencer config for it, check a host against a config.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Laptop,
    Server,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// What this host is: nodes, cores, SMT, memory, huge pages, THP, io_uring, kernel,
    /// governor, memlock.
    Probe {
        /// sysfs root to read the topology from (a fixture tree; default the host's).
        #[arg(long, default_value = "/sys")]
        sysfs: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented sequencer.toml for this host, and the host commands it assumes.
    Plan {
        /// sysfs root to read the topology from (default the host's).
        #[arg(long, default_value = "/sys")]
        sysfs: PathBuf,
        /// laptop: nothing pinned, no reservations; server: dedicated cores, huge pages.
        #[arg(long, value_enum, default_value = "laptop")]
        profile: ProfileArg,
        /// Expected state size in GiB (sizes huge-page reservations and NOMT).
        #[arg(long, default_value_t = 1)]
        expected_state_gib: u64,
        /// Write the config here instead of stdout (the commands then go to stdout).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Run the runtime host commands (as root, on the running host only).
        #[arg(long)]
        apply: bool,
    },
    /// Does this host satisfy this config? One line per finding; exit 1 if any fails.
    Check {
        /// The sequencer config file.
        config: PathBuf,
        /// sysfs root to read the topology from (default the host's).
        #[arg(long, default_value = "/sys")]
        sysfs: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Probe { sysfs, json } => probe(&sysfs, json),
        Cmd::Plan { sysfs, profile, expected_state_gib, output, apply } => {
            let profile = match profile {
                ProfileArg::Laptop => Profile::Laptop,
                ProfileArg::Server => Profile::Server,
            };
            plan(&sysfs, profile, expected_state_gib, output.as_deref(), apply)
        }
        Cmd::Check { config, sysfs, json } => check(&config, &sysfs, json),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn report(sysfs: &Path) -> Result<HostReport, String> {
    HostReport::probe(sysfs).map_err(|e| e.to_string())
}

fn probe(sysfs: &Path, json: bool) -> Result<ExitCode, String> {
    let report = report(sysfs)?;
    if json {
        let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        value["io_uring"] = match &report.io_uring {
            Ok(()) => serde_json::json!({"usable": true}),
            Err(e) => serde_json::json!({"usable": false, "error": e}),
        };
        println!("{value}");
    } else {
        print!("{}", report.describe());
        if sysfs != Path::new("/sys") {
            println!(
                "(topology from {}; kernel, io_uring, memlock and governor are this machine's)",
                sysfs.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(
    sysfs: &Path,
    profile: Profile,
    expected_state_gib: u64,
    output: Option<&Path>,
    apply: bool,
) -> Result<ExitCode, String> {
    let report = report(sysfs)?;
    let proposal = tuning::propose(&report.topology, profile, expected_state_gib * 1024);
    let text = tuning::render(&proposal, &report.topology);
    match output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
            for c in &proposal.commands {
                println!("{}    # {}", c.shell, c.why);
            }
        }
        None => print!("{text}"),
    }
    if apply {
        if sysfs != Path::new("/sys") {
            return Err("--apply changes the running host: it cannot be used with --sysfs".into());
        }
        if !report.root {
            return Err("--apply needs root".into());
        }
        let mut failed = false;
        for line in tuning::apply(&proposal.commands) {
            match line {
                Ok(done) => eprintln!("{done}"),
                Err(why) => {
                    failed = true;
                    eprintln!("{why}");
                }
            }
        }
        if failed {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(config: &Path, sysfs: &Path, json: bool) -> Result<ExitCode, String> {
    let parsed = tuning::read_config(config)?;
    let report = report(sysfs)?;
    let storage = StorageNeeds {
        datadir: Some(
            parsed.storage.datadir.clone().unwrap_or_else(|| PathBuf::from("sequencer-data")),
        ),
        nomt_bytes: u64::from(parsed.storage.nomt_buckets) * 4096,
        nomt_cache_bytes: (parsed.storage.nomt_page_cache_mib + parsed.storage.nomt_leaf_cache_mib)
            << 20,
    };
    let findings = numa::check(&report, &parsed.host, &parsed.memory, &storage);
    if json {
        for finding in &findings {
            println!("{}", serde_json::to_string(finding).map_err(|e| e.to_string())?);
        }
    } else {
        for finding in &findings {
            println!("{finding}");
        }
    }
    let failed = findings.iter().any(|f| f.level == Level::Fail);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
