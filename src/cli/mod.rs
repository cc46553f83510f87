//! The `cordon` command line: flag parsing and dispatch to the library.
//!
//! Owns: the subcommands (`serve`, `check`, `policy validate|test|prove`, `audit
//! verify|export|keygen`, `source test`, `replay`, `explain`, `simulate`), how their results
//! are printed, and their exit statuses; `logging` the log format (text lines escape every
//! value, so nothing from outside can forge a line), `policy` the policy commands. No business
//! logic lives here.

mod agents;
mod approvals;
mod archive;
mod checkpoint;
use checkpoint::{keygen, verify_checkpoints};
mod cases;
mod learn;

mod report;
pub use cases::CasesCommand;
pub use learn::LearnCommand;

mod replay;

mod logging;
mod policy;
pub use logging::{EscapedFields, init_logging};
use policy::{policy_prove, policy_test, policy_validate};

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{self, EXIT_CONFIG, EXIT_STORE};
use crate::store::StoreError;

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
    /// Validate the config and every file it names (playbooks, connectors, source mappings,
    /// enrichment, policies) exactly as `serve` does, without starting. Exit 64 on any problem.
    Check {
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Source mapping tools (`sources/<name>.toml`).
    Source {
        #[command(subcommand)]
        command: SourceCommand,
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
    /// Re-decide recorded decisions with the policy set each was made with; exit 0 only if
    /// every replayed decision is identical (the daemon must be stopped, or give a copy).
    Replay {
        #[command(flatten)]
        range: replay::Range,
        /// Only this action's decisions (exit 1 when no audit record names the action).
        #[arg(long)]
        action: Option<String>,
        /// Only this alert's decisions (exit 1 when no audit record names the alert).
        #[arg(long)]
        alert: Option<String>,
        /// Replay archive files (`audit archive`) instead of the store, each with the policy
        /// sets it carries.
        #[arg(long, num_args = 1..)]
        archive: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The story of one action or case from the audit store, in the order it happened.
    Explain {
        /// An action id or a case id.
        id: String,
        #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-decide recorded step decisions under a candidate policy set and report what would
    /// change (recorded in the audit store; nothing else changes).
    Simulate {
        #[command(flatten)]
        range: replay::Range,
        /// The candidate policy directory.
        #[arg(long, required_unless_present = "shadow")]
        policies: Option<PathBuf>,
        /// Instead of a candidate directory, read back the shadow decisions `[policy.shadow]`
        /// recorded (read-only; not recorded as a simulation).
        #[arg(long, conflicts_with = "policies")]
        shadow: bool,
        /// Exit 1 when a decision would change this way.
        #[arg(long, value_enum)]
        fail_on: Option<replay::FailOn>,
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        #[arg(long)]
        markdown: bool,
    },

    /// The weekly board (per intel priority: rules in production and tuning, open incidents,
    /// recent learnings; the loop and operator metrics) from the store, as Markdown or JSON.
    /// Reads the store directly: stop the daemon first. Exit 64 on bad flags or config, 74 when
    /// the store cannot be read.
    Report {
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
        /// Start of the window (RFC 3339 or YYYY-MM-DD; default: seven days before --until).
        #[arg(long)]
        since: Option<String>,
        /// End of the window, exclusive (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Approval requests, over the gRPC API.
    Approvals {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Cases (list, show, assign, note, close, reopen, recover), over the gRPC API.
    Cases {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Learning proposals from closed cases (list, show, accept, dismiss), over the gRPC API.
    Learn {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: LearnCommand,
    },
    /// AI agents' calls over the gRPC API, with an agent's token (see `[[agents]]`).
    Agents {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// The MCP server over stdio for a local assistant: relays to the daemon's `/mcp`.
    Mcp {
        /// The daemon's MCP endpoint.
        #[arg(
            long,
            env = "CORDON_MCP_URL",
            default_value = "http://127.0.0.1:8080/mcp"
        )]
        url: String,
        /// File holding the agent's bearer token (else CORDON_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

/// How `cordon approvals` reaches the daemon. The token is read from the environment or a
/// file, never from a flag (flags show in process lists).
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// gRPC address: http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        env = "CORDON_GRPC_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// File holding the approver's bearer token (else CORDON_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long, env = "CORDON_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    #[arg(long, env = "CORDON_CERT", global = true)]
    pub cert: Option<PathBuf>,
    #[arg(long, env = "CORDON_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// TLS server name to verify, when it differs from the address's host.
    #[arg(long, global = true)]
    pub server_name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Requests awaiting approval.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this approval id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One request with its evidence, votes and deadline.
    Show { approval_id: String },
    /// Vote to approve.
    Approve {
        approval_id: String,
        /// Bind the vote to the request hash you reviewed (see `show`).
        #[arg(long)]
        request_hash: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Vote to deny (one authorised deny rejects the request).
    Deny {
        approval_id: String,
        #[arg(long)]
        request_hash: Option<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Propose undoing a succeeded, reversible action (it is decided and approved like any
    /// other request; you cannot approve your own rollback).
    Rollback {
        action_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Validate a mapping file (with its sample, if it names one) and print the normalized
    /// alert it makes of PAYLOAD (a JSON object, a JSON array or NDJSON) as JSON. Exit 64 when
    /// the file does not validate, 65 when the payload does not map (naming the path).
    Test { file: PathBuf, payload: PathBuf },
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
    /// Prove the properties in DIR/properties/*.toml for every request the schema allows
    /// (needs a cvc5 executable: CVC5 or PATH).
    Prove {
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// One JSON object per property on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first bad record, 74 when the data directory is
    /// damaged or not a cordon store. With --checkpoints, also check the chain against signed
    /// checkpoints (a rewritten or cut tail); exit 1 naming each checkpoint that fails.
    Verify {
        /// The data directory (default: CORDON_DATA_DIR or ./data).
        #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Directory of signed checkpoints (`*.checkpoint`), as `[audit.checkpoints] dir`.
        #[arg(long, requires = "public_key")]
        checkpoints: Option<PathBuf>,
        /// The checkpoint signer's Ed25519 public key (PEM).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Verify archive files (`audit archive`) instead of the store: each one's chain and
        /// signed end, and that each starts where the one before it ends (give them oldest
        /// first). Needs --public-key.
        #[arg(long, num_args = 1.., requires = "public_key", conflicts_with = "checkpoints")]
        archive: Vec<PathBuf>,
    },
    /// Retention: move the records of settled cases (closed, suppressed or learned before the
    /// cut-off, with no action open, pending or unknown) out of the store into an archive file,
    /// with a signed checkpoint of the archive's end; the chain kept in the store continues
    /// from it. Only a prefix of the chain is archived: the first record that must stay holds
    /// back every record after it (named in the report). The daemon must be stopped. Needs
    /// [audit.checkpoints] (the signing key).
    Archive {
        #[arg(long, env = "CORDON_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory (default: the config's data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Cut-off: YYYY-MM-DD (midnight UTC) or RFC 3339 (default: now minus [retention]
        /// closed_case_days).
        #[arg(long)]
        before: Option<String>,
        /// The archive file to write (must not exist; default: a new file in [retention] dir).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Create an Ed25519 key pair for signed checkpoints: the private key (PKCS#8 PEM, mode
    /// 0600) is written to --out, which must not exist; the public key (PEM) is printed, or
    /// written to --public-out.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Write every audit record as JSON lines (exit 74 when the data directory is damaged or not
    /// a cordon store).
    Export {
        #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Read an archive file (`audit archive`) instead of the store (its chain is checked
        /// as it is read).
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Only the records of this case (with --archive).
        #[arg(long, requires = "archive")]
        case: Option<String>,
    },
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
                        "ok: {} playbook(s), {} connector(s), {} source mapping(s), {} polic(ies) (hash {})",
                        v.playbooks.len(),
                        v.connectors.connectors.len(),
                        v.sources.len(),
                        v.policies.policy_count(),
                        v.policies.hash
                    );
                    0
                }
                Err(problems) => print_problems(&problems),
            }
        }
        Command::Report {
            config,
            since,
            until,
            json,
        } => {
            init_logging("text", "warn");
            report::report(config.as_deref(), since.as_deref(), until.as_deref(), json)
        }
        Command::Approvals {
            conn,
            json,
            command,
        } => {
            init_logging("text", "warn");
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(approvals::approvals(conn, json, command)),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Cases {
            conn,
            json,
            command,
        } => {
            init_logging("text", "warn");
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(cases::cases(conn, json, command)),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Learn {
            conn,
            json,
            command,
        } => {
            init_logging("text", "warn");
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(learn::learn(conn, json, command)),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Replay {
            range,
            action,
            alert,
            archive: files,
            json,
        } if !files.is_empty() => {
            let filter = crate::policy::replay::Filter {
                action_id: action,
                alert_id: alert,
                ..range.filter()
            };
            archive::replay_archives(&files, &filter, json)
        }
        Command::Replay {
            range,
            action,
            alert,
            json,
            ..
        } => replay::replay_cmd(&range, action, alert, json),
        Command::Explain { id, data_dir, json } => replay::explain_cmd(&data_dir, &id, json),
        Command::Simulate {
            range,
            policies,
            shadow,
            fail_on,
            json,
            markdown,
        } => {
            let format = match (json, markdown) {
                (true, _) => replay::Format::Json,
                (_, true) => replay::Format::Markdown,
                _ => replay::Format::Text,
            };
            match policies {
                Some(dir) if !shadow => replay::simulate_cmd(&range, &dir, fail_on, format),
                _ => replay::shadow_cmd(&range, fail_on, format),
            }
        }
        Command::Agents {
            conn,
            json,
            command,
        } => {
            init_logging("text", "warn");
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(agents::agents(conn, json, command)),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Mcp { url, token_file } => {
            // stdout carries the protocol: logs go to stderr only, warnings and worse.
            init_logging("text", "warn");
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(agents::mcp_stdio(url, token_file)),
                Err(e) => {
                    eprintln!("cordon: cannot start the runtime: {e}");
                    1
                }
            }
        }
        Command::Source {
            command: SourceCommand::Test { file, payload },
        } => source_test(&file, &payload),
        Command::Policy {
            command: PolicyCommand::Validate { dir },
        } => policy_validate(&dir),
        Command::Policy {
            command: PolicyCommand::Test { dir },
        } => policy_test(&dir),
        Command::Policy {
            command: PolicyCommand::Prove { dir, json },
        } => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(policy_prove(&dir, json)),
            Err(e) => {
                eprintln!("cordon: cannot start the runtime: {e}");
                1
            }
        },
        Command::Audit {
            command:
                AuditCommand::Verify {
                    archive: files,
                    public_key: Some(key),
                    ..
                },
        } if !files.is_empty() => archive::verify_archives(&files, &key),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    checkpoints: Some(dir),
                    public_key: Some(key),
                    ..
                },
        } => verify_checkpoints(&data_dir, &dir, &key),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    checkpoints: None,
                    public_key: Some(_),
                    ..
                },
        } => {
            eprintln!("cannot verify: --public-key goes with --checkpoints or --archive");
            1
        }
        Command::Audit {
            command:
                AuditCommand::Archive {
                    config,
                    data_dir,
                    before,
                    output,
                },
        } => archive::archive(
            config.as_deref(),
            data_dir.as_deref(),
            before.as_deref(),
            output.as_deref(),
        ),
        Command::Audit {
            command:
                AuditCommand::Export {
                    archive: Some(file),
                    case,
                    output,
                    ..
                },
        } => match &output {
            Some(path) => match std::fs::File::create(path) {
                Ok(f) => {
                    archive::export_archive(&file, case.as_deref(), &mut std::io::BufWriter::new(f))
                }
                Err(e) => {
                    eprintln!("cannot export: {}: {e}", path.display());
                    1
                }
            },
            None => archive::export_archive(&file, case.as_deref(), &mut std::io::stdout().lock()),
        },
        Command::Audit {
            command: AuditCommand::Keygen { out, public_out },
        } => keygen(&out, public_out.as_deref()),
        Command::Audit {
            command: AuditCommand::Verify { data_dir, .. },
        } => match crate::store::verify(&data_dir).map_err(|e| verify_in_use(&data_dir, e)) {
            Ok(r) => {
                println!(
                    "ok: {} audit records, chain head {} at seq {}",
                    r.records, r.head.hash, r.head.seq
                );
                0
            }
            Err(e) => verify_failed(&data_dir, &e),
        },
        Command::Audit {
            command: AuditCommand::Export {
                data_dir, output, ..
            },
        } => {
            let result = match &output {
                Some(path) => std::fs::File::create(path)
                    .map_err(crate::store::ExportError::Write)
                    .and_then(|f| crate::store::export(&data_dir, &mut std::io::BufWriter::new(f))),
                None => crate::store::export(&data_dir, &mut std::io::stdout().lock()),
            }
            .map_err(|e| match e {
                crate::store::ExportError::Verify(e) => {
                    crate::store::ExportError::Verify(verify_in_use(&data_dir, e))
                }
                e => e,
            });
            match result {
                Ok(n) => {
                    eprintln!("exported {n} audit records");
                    0
                }
                Err(e) => {
                    eprintln!("cannot export: {e}");
                    match &e {
                        crate::store::ExportError::Verify(e) => store_exit(e),
                        crate::store::ExportError::Write(_) => 1,
                    }
                }
            }
        }
    }
}

/// Says why `audit verify` failed (naming the first bad record when the chain is broken) and
/// gives its exit status.
fn verify_failed(data_dir: &Path, e: &crate::store::VerifyError) -> i32 {
    match e.bad_seq() {
        Some(seq) => eprintln!(
            "audit chain in data directory {} broken at seq {seq}: {e}",
            data_dir.display()
        ),
        None => eprintln!("cannot verify: {e}"),
    }
    store_exit(e)
}

/// The exit status of `audit verify|export` for `e`: [`EXIT_STORE`] (74) when the data
/// directory cannot be opened or is damaged or not a cordon store, as for `serve`; 1 for a
/// broken chain or no store at all.
fn store_exit(e: &crate::store::VerifyError) -> i32 {
    match e {
        crate::store::VerifyError::Store(_) => EXIT_STORE,
        _ => 1,
    }
}

/// `e`, with sled's refusal of a directory another process holds said as `replay`, `explain`
/// and `simulate` say it ([`StoreError::InUse`]: "… is in use by a running cordon …") rather
/// than as a raw lock error. The exit status stays [`EXIT_STORE`].
fn in_use(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Open { source, .. }
            if source.to_string().contains("could not acquire lock") =>
        {
            StoreError::InUse {
                path: path.to_path_buf(),
            }
        }
        e => e,
    }
}

/// [`in_use`] for `audit verify|export`.
fn verify_in_use(path: &Path, e: crate::store::VerifyError) -> crate::store::VerifyError {
    match e {
        crate::store::VerifyError::Store(e) => crate::store::VerifyError::Store(in_use(path, e)),
        e => e,
    }
}

fn log_settings(config: Option<&Path>) -> (String, String) {
    match Config::load(config) {
        Ok((c, _)) => (c.log.format, c.log.level),
        Err(_) => ("text".into(), "info".into()),
    }
}

/// Exit status for a payload a mapping cannot turn into an alert (EX_DATAERR).
const EXIT_DATA: i32 = 65;

fn source_test(file: &Path, payload: &Path) -> i32 {
    use crate::ingest::mapped::{self, BodyError, Printed};
    let mapping = match mapped::load_file(file) {
        Ok(m) => m,
        Err(problems) => return print_problems(&problems),
    };
    let bytes = match std::fs::read(payload) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cordon: cannot read {}: {e}", payload.display());
            return EXIT_DATA;
        }
    };
    let shown = payload.display();
    let (_, parts) = match mapped::split_body(&bytes, false, usize::MAX) {
        Ok(p) => p,
        Err(BodyError::TooMany) => return EXIT_DATA,
        Err(BodyError::Whole(e)) => {
            eprintln!("{shown}: {e}");
            return EXIT_DATA;
        }
        Err(BodyError::At(at, e)) => {
            eprintln!("{shown}: {at}: {e}");
            return EXIT_DATA;
        }
    };
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for part in &parts {
        match mapping.parse_value(&part.value, now) {
            Ok(fields) => out.push(fields),
            Err(e) => {
                match &part.at {
                    Some(at) => eprintln!("{shown}: {at}: {e}"),
                    None => eprintln!("{shown}: {e}"),
                }
                return EXIT_DATA;
            }
        }
    }
    let printed: Vec<Printed> = out
        .iter()
        .map(|fields| Printed {
            source: &mapping.name,
            fields,
        })
        .collect();
    let text = match printed.as_slice() {
        [one] => serde_json::to_string_pretty(one),
        many => serde_json::to_string_pretty(many),
    };
    match text {
        Ok(t) => {
            println!("{t}");
            0
        }
        Err(e) => {
            eprintln!("cordon: {e}");
            1
        }
    }
}

fn print_problems(problems: &[crate::config::Problem]) -> i32 {
    eprintln!("{} problem(s):", problems.len());
    for p in problems {
        eprintln!("  {p}");
    }
    EXIT_CONFIG
}
