//! The `cordon` command line: flag parsing and dispatch to the library.
//!
//! Owns: the subcommands (`serve`, `check`, `policy validate|test`, `audit verify|export`), how
//! their results are printed, and their exit statuses. No business logic lives here.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{self, EXIT_CONFIG};

#[derive(Debug, Parser)]
#[command(
    name = "cordon",
    version,
    about = "Policy-driven SOAR orchestration daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (embedded defaults when no --config is given).
    Serve {
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the config and every file it names (playbooks, connectors, enrichment,
    /// policies) exactly as `serve` does, without starting. Exit 64 on any problem.
    Check {
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Policy authoring tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit store.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and strictly validate a policy directory against its schema.
    Validate {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Run the policy tests in DIR/tests/*.toml.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first bad record.
    Verify {
        /// The data directory (default: CORDON_DATA_DIR or ./data).
        #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Write every audit record as JSON lines.
    Export {
        #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Sets up logging to stderr: `RUST_LOG` wins, else `level`; `json` or human text.
pub fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the command line; returns the exit status.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve { config } => {
            let (fmt, level) = log_settings(config.as_deref());
            init_logging(&fmt, &level);
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(daemon::serve(config.as_deref())),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Check { config } => {
            init_logging("text", "warn");
            let file = config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(embedded defaults)".into());
            let (cfg, unknown) = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(problems) => return print_problems(&problems),
            };
            match daemon::validate_with(cfg, &file, unknown) {
                Ok(v) => {
                    println!(
                        "ok: {} playbook(s), {} connector(s), {} polic(ies) (hash {})",
                        v.playbooks.len(),
                        v.connectors.connectors.len(),
                        v.policies.policy_count(),
                        v.policies.hash
                    );
                    0
                }
                Err(problems) => print_problems(&problems),
            }
        }
        Command::Policy {
            command: PolicyCommand::Validate { dir },
        } => policy_validate(&dir),
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => policy_test(&dir),
        Command::Audit {
            command: AuditCommand::Verify { data_dir },
        } => match crate::store::verify(&data_dir) {
            Ok(r) => {
                println!(
                    "ok: {} audit records, chain head {} at seq {}",
                    r.records, r.head.hash, r.head.seq
                );
                0
            }
            Err(e) => {
                match e.bad_seq() {
                    Some(seq) => eprintln!("audit chain broken at seq {seq}: {e}"),
                    None => eprintln!("cannot verify: {e}"),
                }
                1
            }
        },
        Command::Audit {
            command: AuditCommand::Export { data_dir, output },
        } => {
            let result = match &output {
                Some(path) => std::fs::File::create(path)
                    .map_err(crate::store::ExportError::Write)
                    .and_then(|f| crate::store::export(&data_dir, &mut std::io::BufWriter::new(f))),
                None => crate::store::export(&data_dir, &mut std::io::stdout().lock()),
            };
            match result {
                Ok(n) => {
                    eprintln!("exported {n} audit records");
                    0
                }
                Err(e) => {
                    eprintln!("cannot export: {e}");
                    1
                }
            }
        }
    }
}

fn log_settings(config: Option<&Path>) -> (String, String) {
    match Config::load(config) {
        Ok((c, _)) => (c.log.format, c.log.level),
        Err(_) => ("text".into(), "info".into()),
    }
}

fn print_problems(problems: &[crate::config::Problem]) -> i32 {
    eprintln!("{} problem(s):", problems.len());
    for p in problems {
        eprintln!("  {p}");
    }
    EXIT_CONFIG
}

fn policy_validate(dir: &Path) -> i32 {
    match crate::policy::load_dir(dir) {
        Ok(e) => {
            println!(
                "ok: {} polic(ies) in {} file(s), hash {}",
                e.policy_count(),
                e.files.len(),
                e.hash
            );
            0
        }
        Err(problems) => {
            eprintln!("{} problem(s):", problems.len());
            for p in &problems {
                eprintln!("  {p}");
            }
            1
        }
    }
}

fn policy_test(dir: &Path) -> i32 {
    let engine = match crate::policy::load_dir(dir) {
        Ok(e) => e,
        Err(problems) => {
            eprintln!(
                "the policy set does not load ({} problem(s)):",
                problems.len()
            );
            for p in &problems {
                eprintln!("  {p}");
            }
            return 1;
        }
    };
    let outcomes = match crate::policy::testfile::run_dir(&engine, &dir.join("tests")) {
        Ok(o) => o,
        Err(problems) => {
            print_problems(&problems);
            return 1;
        }
    };
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    for o in &outcomes {
        if o.passed {
            println!("ok   {}: {}", o.file, o.name);
        } else {
            println!("FAIL {}: {}\n       {}", o.file, o.name, o.detail);
        }
    }
    println!(
        "{} passed, {} failed",
        outcomes.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() && !outcomes.is_empty() {
        0
    } else {
        1
    }
}
