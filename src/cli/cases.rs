//! `cordon cases …`: the analyst's case commands over gRPC.
//!
//! Owns: the `list | show | assign | note | close | reopen | recover` subcommands, calling the
//! daemon through `api::cases::call` (no protobuf here), and printing the answers as text or
//! JSON. A refusal prints the daemon's code and message and exits 1. Text output is formatted
//! from the answer with every string in it escaped once ([`shown_json`]): titles, notes,
//! closure reasons and owners come from outside and must not start a line or drive the
//! terminal. `--json` prints the answer as it is.

use super::logging::{shown, shown_json};
use super::*;
use crate::api::cases::{CasesCall, call};

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// Cases in creation order, optionally filtered.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this case id (the `next_after` of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        disposition: Option<String>,
        /// Only open (true) or closed (false) cases.
        #[arg(long)]
        open: Option<bool>,
    },
    /// One case with its owner, SLA, notes, closure and handoffs.
    Show { case_id: String },
    /// Give the case an owner.
    Assign { case_id: String, owner: String },
    /// Add a note.
    Note { case_id: String, text: String },
    /// Close with a disposition.
    Close {
        case_id: String,
        /// true_positive | benign_true_positive | false_positive | duplicate
        #[arg(long)]
        disposition: String,
        #[arg(long)]
        reason: String,
        /// True positives: the intel reference that helped.
        #[arg(long)]
        intel_ref: Option<String>,
        /// True positives: the rule that helped.
        #[arg(long)]
        rule: Option<String>,
        /// True positives: what was missed.
        #[arg(long)]
        missed: Option<String>,
        /// Duplicates: the case this one duplicates.
        #[arg(long)]
        duplicate_of: Option<String>,
        /// Cancel requests still awaiting approval or execution.
        #[arg(long)]
        cancel_pending: bool,
    },
    /// Reopen a closed case.
    Reopen {
        case_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Mark an executed or closed case recovered.
    Recover {
        case_id: String,
        #[arg(long)]
        reason: String,
    },
}

pub(super) async fn cases(conn: Conn, json: bool, command: CasesCommand) -> i32 {
    let opts = match approvals::client_options(conn) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut c = match crate::api::client::connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cordon cases: {}", shown(&e.to_string()));
            return 2;
        }
    };
    let is_list = matches!(command, CasesCommand::List { .. });
    let req = match command {
        CasesCommand::List {
            limit,
            after,
            state,
            owner,
            severity,
            disposition,
            open,
        } => CasesCall::List {
            limit,
            after,
            state,
            owner,
            severity,
            disposition,
            open,
        },
        CasesCommand::Show { case_id } => CasesCall::Show { case_id },
        CasesCommand::Assign { case_id, owner } => CasesCall::Assign { case_id, owner },
        CasesCommand::Note { case_id, text } => CasesCall::Note { case_id, text },
        CasesCommand::Close {
            case_id,
            disposition,
            reason,
            intel_ref,
            rule,
            missed,
            duplicate_of,
            cancel_pending,
        } => CasesCall::Close {
            case_id,
            disposition,
            reason,
            intel_ref,
            rule,
            missed,
            duplicate_of,
            cancel_pending,
        },
        CasesCommand::Reopen { case_id, reason } => CasesCall::Reopen { case_id, reason },
        CasesCommand::Recover { case_id, reason } => CasesCall::Recover { case_id, reason },
    };
    match call(&mut c, req).await {
        Ok(v) if json => {
            println!("{v}");
            0
        }
        Ok(v) if is_list => {
            let v = shown_json(v);
            let list = v["cases"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no cases");
            }
            for c in &list {
                println!("{}", line(c));
            }
            if let Some(next) = v["next_after"].as_str().filter(|s| !s.is_empty()) {
                eprintln!("the next page: cordon cases list --after {next}");
            }
            0
        }
        Ok(v) => {
            let v = shown_json(v);
            let case = if v.get("case").is_some() {
                &v["case"]
            } else {
                &v
            };
            println!("{}", line(case));
            if let Some(c) = case["closure"].as_object() {
                println!(
                    "  closed {} by {}: {}",
                    c["disposition"].as_str().unwrap_or_default(),
                    c["by"].as_str().unwrap_or_default(),
                    c["reason"].as_str().unwrap_or_default()
                );
            }
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            if let Some(at) = case["sla_deadline"].as_str() {
                let escalated = if case["sla_escalated"].as_bool() == Some(true) {
                    " (breached: escalated)"
                } else {
                    ""
                };
                println!("  SLA: act by {at}{escalated}");
            }
            if let Some(how) = case["recovered_how"].as_str().filter(|h| !h.is_empty()) {
                println!("  recovered ({how}): {}", text(&case["recovered_reason"]));
            }
            for n in case["notes"].as_array().into_iter().flatten() {
                println!(
                    "  note by {}: {}",
                    n["by"].as_str().unwrap_or_default(),
                    n["text"].as_str().unwrap_or_default()
                );
            }
            for a in case["actions"].as_array().into_iter().flatten() {
                println!(
                    "  action {}  {} on {}  {} {}",
                    text(&a["action_id"]),
                    text(&a["action"]),
                    text(&a["target"]),
                    text(&a["tier"]),
                    text(&a["state"])
                );
            }
            if let Some(h) = case["handoffs"].as_object() {
                let stamped: Vec<String> = [
                    ("opened", "opened"),
                    ("first_human_action", "first human action"),
                    ("ir_escalation", "escalated"),
                    ("closed", "closed"),
                    ("recovered", "recovered"),
                    ("learning_done", "learning done"),
                ]
                .iter()
                .filter_map(|(k, name)| Some(format!("{name} {}", h.get(*k)?.as_str()?)))
                .collect();
                if !stamped.is_empty() {
                    println!("  handoffs: {}", stamped.join(", "));
                }
            }
            for id in v["cancelled"].as_array().into_iter().flatten() {
                println!("  cancelled {}", id.as_str().unwrap_or_default());
            }
            0
        }
        Err(e) => {
            eprintln!("cordon cases: {}", shown(&e.to_string()));
            1
        }
    }
}

/// One case on one line; `c` is already [`shown_json`].
fn line(c: &serde_json::Value) -> String {
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    format!(
        "{}  {:<11} {:<13} owner {:<10} {}",
        s("case_id"),
        s("state"),
        s("severity"),
        if s("owner").is_empty() {
            "-".into()
        } else {
            s("owner")
        },
        s("title")
    )
}
