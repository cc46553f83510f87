//! `cordon agents …` and `cordon mcp`: AI agents' calls from the command line.
//!
//! Owns: `cordon agents propose` and `cordon agents finding` (gRPC `Agents`, with an agent's
//! token from `--token-file` or `CORDON_TOKEN`), for a person driving an agent's credential by
//! hand or a script; and `cordon mcp`, the stdio transport for local assistants: it relays each
//! JSON-RPC line from stdin to the daemon's `/mcp` endpoint with the agent's bearer token and
//! prints the answer on stdout, so the daemon authenticates, checks and records every call as
//! for any MCP client. The text output of `agents` escapes every string from the daemon
//! ([`shown`]); `--json` and the MCP relay print JSON.

use super::logging::shown;
use super::*;

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Propose an action on a case (it is decided by policy and approved like any request).
    Propose {
        case_id: String,
        /// Action kind: isolate_host, create_ticket, ...
        #[arg(long)]
        action: String,
        /// One of the case's entities (empty for case actions).
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long)]
        connector: String,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "")]
        parameters: String,
        #[arg(long)]
        hypothesis: String,
        /// 0..100.
        #[arg(long, default_value_t = 50)]
        confidence: u32,
        /// alert:<id>, fact:<kind>:<value> or record:<seq> of this case (repeat; at least one).
        #[arg(long = "cite")]
        citations: Vec<String>,
    },
    /// Add an AI-generated finding to a case (never changes its state).
    Finding {
        case_id: String,
        /// summary | hypothesis | attack_mapping | blast_radius
        #[arg(long)]
        kind: String,
        #[arg(long)]
        text: String,
        /// ATT&CK technique ids (repeat), for attack_mapping.
        #[arg(long = "technique")]
        techniques: Vec<String>,
        #[arg(long, default_value_t = 50)]
        confidence: u32,
        #[arg(long = "cite")]
        citations: Vec<String>,
    },
}

fn token(file: Option<&PathBuf>) -> Result<Option<crate::secret::Secret>, i32> {
    match (file, std::env::var("CORDON_TOKEN")) {
        (Some(f), _) => match std::fs::read_to_string(f) {
            Ok(t) => Ok(Some(crate::secret::Secret::new(t.trim().to_string()))),
            Err(e) => {
                eprintln!(
                    "cannot read {}: {}",
                    shown(&f.display().to_string()),
                    shown(&e.to_string())
                );
                Err(2)
            }
        },
        (None, Ok(t)) if !t.is_empty() => Ok(Some(crate::secret::Secret::new(t))),
        _ => Ok(None),
    }
}

pub(super) async fn agents(conn: Conn, json: bool, command: AgentsCommand) -> i32 {
    use crate::api::calls::{self, Finding, Proposal};
    use crate::api::client::{ClientOptions, connect};
    let token = match token(conn.token_file.as_ref()) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let opts = ClientOptions {
        addr: conn.addr,
        token,
        ca: conn.ca,
        cert: conn.cert,
        key: conn.key,
        server_name: conn.server_name,
    };
    let mut c = match connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cordon agents: {}", shown(&e.to_string()));
            return 2;
        }
    };
    let result = match command {
        AgentsCommand::Propose {
            case_id,
            action,
            target,
            connector,
            parameters,
            hypothesis,
            confidence,
            citations,
        } => calls::propose_action(
            &mut c,
            Proposal {
                case_id,
                action,
                target,
                connector,
                parameters_json: parameters,
                hypothesis,
                confidence,
                citations,
            },
        )
        .await
        .map(|r| {
            let a = r.action;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"action_id": a.action_id, "state": a.state, "tier": a.tier,
                            "reasons": a.reasons, "duplicate": r.duplicate})
                );
            } else {
                let again = if r.duplicate {
                    " (already proposed)"
                } else {
                    ""
                };
                println!(
                    "{}  {}  {}  {}{again}",
                    shown(&a.action_id),
                    shown(&a.action),
                    shown(&a.tier),
                    shown(&a.state)
                );
                for reason in &a.reasons {
                    println!("  reason: {}", shown(reason));
                }
            }
        }),
        AgentsCommand::Finding {
            case_id,
            kind,
            text,
            techniques,
            confidence,
            citations,
        } => calls::add_finding(
            &mut c,
            Finding {
                case_id,
                kind,
                text,
                techniques,
                confidence,
                citations,
            },
        )
        .await
        .map(|seq| {
            if json {
                println!("{}", serde_json::json!({"finding_seq": seq}));
            } else {
                println!("finding recorded as audit record {seq}");
            }
        }),
    };
    match result {
        Ok(()) => 0,
        Err(refused) => {
            eprintln!("cordon agents: {}", shown(&refused.to_string()));
            refused.agent_exit_status()
        }
    }
}

/// The JSON-RPC answer in an MCP HTTP response body: JSON, or the last SSE `data:` event.
fn answer_of(body: &str) -> Option<String> {
    if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        return Some(body.trim().to_string());
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .map(str::to_string)
}

/// A JSON-RPC answer (a result or an error), which the relay passes on whatever the HTTP
/// status: the daemon answers a line it cannot read with `400` and a JSON-RPC error.
fn is_rpc_answer(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        v.get("jsonrpc").and_then(|j| j.as_str()) == Some("2.0")
            && (v.get("result").is_some() || v.get("error").is_some())
    })
}

/// `cordon mcp`: relays stdin's JSON-RPC lines to `url` and prints each answer on one line.
pub(super) async fn mcp_stdio(url: String, token_file: Option<PathBuf>) -> i32 {
    use std::io::{BufRead, Write};
    let token = match token(token_file.as_ref()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("cordon mcp: an agent token is needed (--token-file or CORDON_TOKEN)");
            return 2;
        }
        Err(code) => return code,
    };
    let client = reqwest::Client::new();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<String>(16);
    // stdin is read on a blocking thread; each line is one JSON-RPC message.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines_rx.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let id = crate::ingest::json::parse(line.as_bytes())
            .ok()
            .and_then(|v| v.get("id").cloned());
        let sent = client
            .post(&url)
            .bearer_auth(token.expose())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(line)
            .send()
            .await;
        let out = match sent {
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                match answer_of(&body) {
                    Some(a) if status.is_success() || is_rpc_answer(&a) => Some(a),
                    // A notification's 202 has no answer.
                    None if status.is_success() => None,
                    _ => id.map(|id| {
                        serde_json::json!({"jsonrpc": "2.0", "id": id,
                            "error": {"code": -32000, "message": format!("cordon answered {status}: {}", crate::ingest::clip(&body, 512))}})
                        .to_string()
                    }),
                }
            }
            Err(e) => id.map(|id| {
                serde_json::json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32000, "message": format!("cordon is unreachable: {e}")}})
                .to_string()
            }),
        };
        if let Some(out) = out {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{out}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return 0;
            }
        }
    }
    0
}
