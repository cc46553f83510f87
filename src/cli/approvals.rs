//! `cordon approvals …`: the approver's command line over gRPC.
//!
//! Owns: connecting with the caller's identity (token file, `CORDON_TOKEN`, or mTLS), the
//! list/show/approve/deny/rollback commands, and printing their answers as text or JSON.

use super::*;

/// The client options for `conn`: the token from `--token-file` or `CORDON_TOKEN`. `Err` is
/// the exit code after the problem was printed.
pub(super) fn client_options(conn: Conn) -> Result<crate::api::client::ClientOptions, i32> {
    use crate::api::client::ClientOptions;
    let token = match (&conn.token_file, std::env::var("CORDON_TOKEN")) {
        (Some(f), _) => match std::fs::read_to_string(f) {
            Ok(t) => Some(crate::secret::Secret::new(t.trim().to_string())),
            Err(e) => {
                eprintln!("cannot read {}: {e}", f.display());
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
            eprintln!("cordon approvals: {e}");
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
                            a.approval_id,
                            a.action,
                            a.target
                                .as_ref()
                                .map(|t| format!("{}:{}", t.kind, t.id))
                                .unwrap_or_default(),
                            a.tier,
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
                            last.approval_id
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
                        a.action_id, a.action, a.state, a.tier
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
            eprintln!("cordon approvals: {refused}");
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
        .map(|t| format!("{} {}", t.kind, t.id))
        .unwrap_or_default();
    println!("approval {}  ({})", a.approval_id, a.state);
    println!("  action:    {} on {}", a.action, target);
    println!(
        "  tier:      {} ({}/{} approvals)",
        a.tier, a.approvals_given, a.approvals_needed
    );
    for r in &a.reasons {
        println!("  reason:    {r}");
    }
    if let Some(p) = &a.agent_proposal {
        println!(
            "  proposed:  by AI agent {} (AI-generated, confidence {}%)",
            p.agent, p.confidence
        );
        println!("  hypothesis: {}", p.hypothesis);
        println!("  citations: {}", p.citations.join(", "));
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
            b.criticality,
            b.environment
        );
    }
    if let Some(c) = &a.case {
        println!(
            "  case:      {} {} [{} {}]",
            c.case_id, c.title, c.severity, c.state
        );
        println!("  entities:  {}", c.entities.join(", "));
    }
    println!("  deadline:  {}", when(a.deadline_unix_ms));
    println!(
        "  requester: {}  (playbook {} step {})",
        a.requester, a.playbook, a.step
    );
    println!("  hash:      {}", a.request_hash);
    for v in &a.votes {
        println!(
            "  vote:      {} {} via {} ({}) at {}{}",
            v.user,
            v.decision,
            v.channel,
            v.identity,
            when(v.at_unix_ms),
            if v.counted { "" } else { " [not counted]" }
        );
    }
    for e in &a.evidence {
        println!("  evidence:  {}: {}", e.source, e.data_json);
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
            a.approval_id, r.outcome, a.state, a.approvals_given, a.approvals_needed
        );
    }
}
