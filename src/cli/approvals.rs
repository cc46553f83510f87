//! `cordon approvals …`: the approver's command line over gRPC.
//!
//! Owns: connecting with the caller's identity (token file, `CORDON_TOKEN`, or mTLS), the
//! list/show/approve/deny/rollback commands, and printing their answers as text or JSON.
//! Text output passes every string from the daemon (case titles, targets, entities, reasons,
//! evidence, the agent's hypothesis and citations, votes, error messages) through [`shown`], so
//! none of it can start a line of its own or drive the approver's terminal; `--json` prints the
//! answer as it is.

use super::logging::shown;
use super::*;

/// The client options for `conn`: the token from `--token-file` or `CORDON_TOKEN`. `Err` is
/// the exit code after the problem was printed.
pub(super) fn client_options(conn: Conn) -> Result<crate::api::client::ClientOptions, i32> {
    use crate::api::client::ClientOptions;
    let token = match (&conn.token_file, std::env::var("CORDON_TOKEN")) {
        (Some(f), _) => match std::fs::read_to_string(f) {
            Ok(t) => Some(crate::secret::Secret::new(t.trim().to_string())),
            Err(e) => {
                eprintln!(
                    "cannot read {}: {}",
                    shown(&f.display().to_string()),
                    shown(&e.to_string())
                );
                return Err(2);
            }
        },
        (None, Ok(t)) if !t.is_empty() => Some(crate::secret::Secret::new(t)),
        _ => None,
    };
    Ok(ClientOptions {
        addr: conn.addr,
        token,
        ca: conn.ca,
        cert: conn.cert,
        key: conn.key,
        server_name: conn.server_name,
    })
}

pub(super) async fn approvals(conn: Conn, json: bool, command: ApprovalsCommand) -> i32 {
    use crate::api::calls;
    use crate::api::client::connect;
    let opts = match client_options(conn) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut c = match connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cordon approvals: {}", shown(&e.to_string()));
            return 2;
        }
    };
    let result = match command {
        ApprovalsCommand::List { limit, after } => {
            calls::list_pending(&mut c, limit, after)
                .await
                .map(|list| {
                if json {
                    println!(
                        "{}",
                        serde_json::Value::Array(list.iter().map(approval_json).collect())
                    );
                } else if list.is_empty() {
                    println!("no requests awaiting approval");
                } else {
                    for a in &list {
                        println!(
                            "{}  {:<22} {:<40} {:<12} {}/{} approvals  expires {}",
                            shown(&a.approval_id),
                            shown(&a.action),
                            a.target
                                .as_ref()
                                .map(|t| format!("{}:{}", shown(&t.kind), shown(&t.id)))
                                .unwrap_or_default(),
                            shown(&a.tier),
                            a.approvals_given,
                            a.approvals_needed,
                            when(a.deadline_unix_ms)
                        );
                    }
                    if let Some(last) = list.last() {
                        // On stderr, so that stdout stays one request per line.
                        eprintln!(
                            "{} shown, oldest first; the next page: cordon approvals list --after {}",
                            list.len(),
                            shown(&last.approval_id)
                        );
                    }
                }
            })
        }
        ApprovalsCommand::Show { approval_id } => calls::get_approval(&mut c, approval_id)
            .await
            .map(|a| show(&a, json)),
        ApprovalsCommand::Approve {
            approval_id,
            request_hash,
            comment,
        } => calls::vote(&mut c, true, approval_id, request_hash, comment)
            .await
            .map(|r| voted(r, json)),
        ApprovalsCommand::Deny {
            approval_id,
            request_hash,
            comment,
        } => calls::vote(&mut c, false, approval_id, request_hash, comment)
            .await
            .map(|r| voted(r, json)),
        ApprovalsCommand::Rollback { action_id, reason } => {
            calls::request_rollback(&mut c, action_id, reason)
                .await
                .map(|a| {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"action_id": a.action_id, "action": a.action, "state": a.state, "tier": a.tier, "reasons": a.reasons, "rollback_of": a.rollback_of})
                    );
                } else {
                    println!(
                        "rollback {} proposed: {} is {} (tier {})",
                        shown(&a.action_id),
                        shown(&a.action),
                        shown(&a.state),
                        shown(&a.tier)
                    );
                }
            })
        }
    };
    match result {
        Ok(()) => 0,
        Err(refused) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": refused.code_name(), "message": refused.message})
                );
            }
            eprintln!("cordon approvals: {}", shown(&refused.to_string()));
            1
        }
    }
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "-".into())
}

fn approval_json(a: &crate::api::calls::Approval) -> serde_json::Value {
    serde_json::json!({
        "approval_id": a.approval_id, "case_id": a.case_id, "action": a.action,
        "target": a.target.as_ref().map(|t| serde_json::json!({"kind": t.kind, "id": t.id})),
        "parameters": serde_json::from_str::<serde_json::Value>(&a.parameters_json).unwrap_or_default(),
        "tier": a.tier, "state": a.state, "reasons": a.reasons, "determining_policies": a.determining_policies,
        "approvals_needed": a.approvals_needed, "approvals_given": a.approvals_given,
        "deadline": when(a.deadline_unix_ms), "request_hash": a.request_hash, "requester": a.requester,
        "blast_radius": a.blast_radius.as_ref().map(|b| serde_json::json!({"targets": b.targets, "reversible": b.reversible, "criticality": b.criticality, "environment": b.environment})),
        "case": a.case.as_ref().map(|c| serde_json::json!({"case_id": c.case_id, "title": c.title, "state": c.state, "severity": c.severity, "entities": c.entities})),
        "votes": a.votes.iter().map(|v| serde_json::json!({"user": v.user, "channel": v.channel, "identity": v.identity, "decision": v.decision, "at": when(v.at_unix_ms), "counted": v.counted})).collect::<Vec<_>>(),
        "agent_proposal": a.agent_proposal.as_ref().map(|p| serde_json::json!({"agent": p.agent, "hypothesis": p.hypothesis, "confidence": p.confidence, "citations": p.citations, "ai_generated": p.ai_generated})),
        "evidence": a.evidence.iter().map(|e| serde_json::json!({"source": e.source, "data": serde_json::from_str::<serde_json::Value>(&e.data_json).unwrap_or_default()})).collect::<Vec<_>>(),
    })
}

fn show(a: &crate::api::calls::Approval, json: bool) {
    if json {
        println!("{}", approval_json(a));
        return;
    }
    let target = a
        .target
        .as_ref()
        .map(|t| format!("{} {}", shown(&t.kind), shown(&t.id)))
        .unwrap_or_default();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|i| shown(i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("approval {}  ({})", shown(&a.approval_id), shown(&a.state));
    println!("  action:    {} on {}", shown(&a.action), target);
    // What the action will be run with is part of what the approver votes on.
    if !matches!(a.parameters_json.trim(), "" | "{}" | "null") {
        println!("  parameters: {}", shown(&a.parameters_json));
    }
    println!(
        "  tier:      {} ({}/{} approvals)",
        shown(&a.tier),
        a.approvals_given,
        a.approvals_needed
    );
    for r in &a.reasons {
        println!("  reason:    {}", shown(r));
    }
    if let Some(p) = &a.agent_proposal {
        println!(
            "  proposed:  by AI agent {} (AI-generated, confidence {}%)",
            shown(&p.agent),
            p.confidence
        );
        println!("  hypothesis: {}", shown(&p.hypothesis));
        println!("  citations: {}", list(&p.citations));
    }
    if let Some(b) = &a.blast_radius {
        println!(
            "  blast:     {} target(s), {}, criticality {}, environment {}",
            b.targets,
            if b.reversible {
                "reversible"
            } else {
                "IRREVERSIBLE"
            },
            shown(&b.criticality),
            shown(&b.environment)
        );
    }
    if let Some(c) = &a.case {
        println!(
            "  case:      {} {} [{} {}]",
            shown(&c.case_id),
            shown(&c.title),
            shown(&c.severity),
            shown(&c.state)
        );
        println!("  entities:  {}", list(&c.entities));
    }
    println!("  deadline:  {}", when(a.deadline_unix_ms));
    println!(
        "  requester: {}  (playbook {} step {})",
        shown(&a.requester),
        shown(&a.playbook),
        shown(&a.step)
    );
    println!("  hash:      {}", shown(&a.request_hash));
    for v in &a.votes {
        println!(
            "  vote:      {} {} via {} ({}) at {}{}",
            shown(&v.user),
            shown(&v.decision),
            shown(&v.channel),
            shown(&v.identity),
            when(v.at_unix_ms),
            if v.counted { "" } else { " [not counted]" }
        );
    }
    for e in &a.evidence {
        println!("  evidence:  {}: {}", shown(&e.source), shown(&e.data_json));
    }
}

fn voted(r: crate::api::calls::Voted, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"outcome": r.outcome, "approval": r.approval.as_ref().map(approval_json)})
        );
    } else {
        let a = r.approval.unwrap_or_default();
        println!(
            "{}: {} (now {}, {}/{} approvals)",
            shown(&a.approval_id),
            shown(&r.outcome),
            shown(&a.state),
            a.approvals_given,
            a.approvals_needed
        );
    }
}
