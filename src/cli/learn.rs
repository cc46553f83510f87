//! `cordon learn …`: learning proposals over gRPC.
//!
//! Owns: the `list | show | accept | dismiss` subcommands, calling the daemon through
//! `api::learning::call` (no protobuf here), and printing the answers as text or JSON. A
//! refusal prints the daemon's code and message and exits 1. Text output is formatted from the
//! answer with every string in it escaped once ([`shown_json`]); a proposed file's contents keep
//! their own line breaks but each line is escaped and indented, so no line of it can pass for
//! the command's own. `--json` prints the answer as it is.

use super::logging::{shown, shown_json};
use super::*;
use crate::api::learning::{LearnCall, call};

#[derive(Debug, Subcommand)]
pub enum LearnCommand {
    /// Proposals, newest first.
    List {
        /// Only those learned from this case.
        #[arg(long)]
        case: Option<String>,
        /// open | accepted | dismissed
        #[arg(long)]
        state: Option<String>,
        /// tuning | regression_test | intel_credit | detection_backlog
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One proposal with its files.
    Show { proposal_id: String },
    /// Accept: its files are written into the proposals directory for review.
    Accept {
        proposal_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Dismiss, with a reason.
    Dismiss {
        proposal_id: String,
        #[arg(long)]
        reason: String,
    },
}

pub(super) async fn learn(conn: Conn, json: bool, command: LearnCommand) -> i32 {
    let opts = match approvals::client_options(conn) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut c = match crate::api::client::connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cordon learn: {}", shown(&e.to_string()));
            return 2;
        }
    };
    let show = matches!(command, LearnCommand::Show { .. });
    let req = match command {
        LearnCommand::List {
            case,
            state,
            kind,
            limit,
        } => LearnCall::List {
            case_id: case,
            state,
            kind,
            limit,
        },
        LearnCommand::Show { proposal_id } => LearnCall::Show { proposal_id },
        LearnCommand::Accept {
            proposal_id,
            reason,
        } => LearnCall::Accept {
            proposal_id,
            reason,
        },
        LearnCommand::Dismiss {
            proposal_id,
            reason,
        } => LearnCall::Dismiss {
            proposal_id,
            reason,
        },
    };
    match call(&mut c, req).await {
        Ok(v) if json => {
            println!("{v}");
            0
        }
        Ok(raw) => {
            let v = shown_json(raw.clone());
            if let Some(list) = v["proposals"].as_array() {
                if list.is_empty() {
                    println!("no proposals");
                }
                for p in list {
                    println!("{}", line(p));
                }
            } else if show {
                println!("{}", line(&v));
                println!("  {}", v["rationale"].as_str().unwrap_or_default());
                for f in raw["files"].as_array().into_iter().flatten() {
                    println!("--- {}", shown(f["name"].as_str().unwrap_or_default()));
                    for l in f["contents"].as_str().unwrap_or_default().lines() {
                        println!("    {}", shown(l));
                    }
                }
            } else {
                println!("{}", line(&v["proposal"]));
                for w in v["proposal"]["written"].as_array().into_iter().flatten() {
                    println!("  wrote {}", w.as_str().unwrap_or_default());
                }
                println!(
                    "  case {} is {}",
                    v["case"]["case_id"].as_str().unwrap_or_default(),
                    v["case"]["state"].as_str().unwrap_or_default()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("cordon learn: {}: {}", e.code(), shown(e.message()));
            1
        }
    }
}

/// One proposal on one line; `p` is already [`shown_json`].
fn line(p: &serde_json::Value) -> String {
    let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
    format!(
        "{}  {:<17} {:<9} {}",
        s("proposal_id"),
        s("kind"),
        s("state"),
        s("title")
    )
}
