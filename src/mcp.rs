//! The MCP server for AI agents: cordon's tools over the Model Context Protocol (`rmcp`).
//!
//! Owns: the tool set (`list_cases`, `get_case`, `get_action`, `propose_action`,
//! `add_finding`), their input schemas, and answering a tool call as MCP content. Knows rmcp,
//! not axum: `http::mcp` mounts rmcp's streamable-HTTP service on the daemon's listener,
//! authenticates the agent's bearer token and puts the [`Agent`] in the request's extensions,
//! which rmcp hands to each call with the request's parts. Every tool call goes through
//! `engine::AgentFront`, so it counts against the agent's rate window and is recorded in the
//! audit store with the agent's name, accepted or refused. Tools answer a refusal as a tool
//! error with the reason (the model reads it); nothing changes.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use crate::agent::{Agent, FindingInput, ProposalInput};
use crate::engine::{self, AgentFront, FrontError};

/// One MCP session's handler (rmcp builds one per session or stateless request).
#[derive(Clone)]
pub struct CordonMcp {
    front: AgentFront,
}

impl CordonMcp {
    pub fn new(front: AgentFront) -> CordonMcp {
        CordonMcp { front }
    }
}

fn schema(v: Value) -> Arc<JsonObject> {
    Arc::new(match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    })
}

const CITATIONS: &str = "Evidence of this case: alert:<alert id>, fact:<entity kind>:<value> (an enrichment fact about one of its entities) or record:<audit seq> (an audit record of this case). At least one.";

/// The tools, with their input schemas.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "list_cases",
            "List cases, oldest first: id, title, state, severity, entities.",
            schema(json!({
                "type": "object",
                "properties": {
                    "after": {"type": "string", "description": "a case id: list the cases after it"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100}
                },
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "get_case",
            "Read one case: its alerts (with enrichment facts), actions, AI findings and transitions.",
            schema(json!({
                "type": "object",
                "properties": {"case_id": {"type": "string"}},
                "required": ["case_id"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "get_action",
            "Explain one action request: its tier, the determining policies and reasons, votes, execution, and its audit records.",
            schema(json!({
                "type": "object",
                "properties": {"action_id": {"type": "string"}},
                "required": ["action_id"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "propose_action",
            "Propose a response action on a case. Policy decides its tier; people approve it. Never runs without approval.",
            schema(json!({
                "type": "object",
                "properties": {
                    "case_id": {"type": "string"},
                    "action": {"type": "string", "enum": crate::action::ActionKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>()},
                    "target": {"type": "string", "description": "one of the case's entities (ws-042, host:ws-042); empty for enrich, summarize_case, create_ticket"},
                    "connector": {"type": "string", "description": "the connector that carries it out (cordon for enrich and summarize_case)"},
                    "parameters": {"type": "object"},
                    "hypothesis": {"type": "string"},
                    "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
                    "citations": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": CITATIONS}
                },
                "required": ["case_id", "action", "connector", "hypothesis", "confidence", "citations"],
                "additionalProperties": false
            })),
        ),
        Tool::new(
            "add_finding",
            "Add an AI-generated finding to a case (summary, hypothesis, attack_mapping, blast_radius). It never changes the case's state.",
            schema(json!({
                "type": "object",
                "properties": {
                    "case_id": {"type": "string"},
                    "kind": {"type": "string", "enum": ["summary", "hypothesis", "attack_mapping", "blast_radius"]},
                    "text": {"type": "string"},
                    "techniques": {"type": "array", "items": {"type": "string"}},
                    "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
                    "citations": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": CITATIONS}
                },
                "required": ["case_id", "kind", "text", "citations"],
                "additionalProperties": false
            })),
        ),
    ]
}

fn ok(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    r.structured_content = Some(v);
    r
}

fn refused(why: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why.into())])
}

fn front_result(e: FrontError) -> Result<CallToolResult, McpError> {
    match e {
        FrontError::Refused(e) => Ok(refused(e.to_string())),
        FrontError::Engine(e) => Err(McpError::internal_error(e.to_string(), None)),
    }
}

fn arg<'a>(args: &'a JsonObject, k: &str) -> Option<&'a str> {
    args.get(k).and_then(Value::as_str)
}

/// The agent `http::mcp` authenticated for this request.
fn agent_of(ctx: &RequestContext<RoleServer>) -> Option<Agent> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Agent>())
        .cloned()
}

impl CordonMcp {
    async fn call(
        &self,
        agent: &Agent,
        name: &str,
        args: JsonObject,
    ) -> Result<CallToolResult, McpError> {
        let f = &self.front;
        let store = &f.store;
        let internal = |e: crate::store::StoreError| McpError::internal_error(e.to_string(), None);
        match name {
            "list_cases" => {
                if let Err(e) = f.read(agent, "mcp", "list_cases", None).await {
                    return front_result(e);
                }
                let limit = args
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(50)
                    .clamp(1, 100) as usize;
                let cases =
                    engine::read::cases(store, arg(&args, "after"), limit).map_err(internal)?;
                let list: Vec<Value> = cases
                    .iter()
                    .map(|c| {
                        json!({"case_id": c.case_id, "title": c.title, "state": c.state,
                               "severity": c.severity.as_str(), "alert_count": c.alert_ids.len(),
                               "entities": c.entities.iter().map(|e| e.key()).collect::<Vec<_>>()})
                    })
                    .collect();
                Ok(ok(json!({"cases": list})))
            }
            "get_case" => {
                let Some(id) = arg(&args, "case_id") else {
                    return Ok(refused("case_id is required"));
                };
                if let Err(e) = f.read(agent, "mcp", "get_case", Some(id)).await {
                    return front_result(e);
                }
                let Some(case) = engine::read::case(store, id).map_err(internal)? else {
                    return Ok(refused(format!("no case {}", crate::ingest::clip(id, 128))));
                };
                let mut alerts = Vec::new();
                for a in &case.alert_ids {
                    if let Some(s) = engine::read::alert(store, a).map_err(internal)? {
                        alerts.push(
                            json!({"alert_id": s.alert.alert_id, "source": s.alert.source,
                            "fields": s.alert.fields, "enrichment": s.enrichment}),
                        );
                    }
                }
                let actions = engine::read::actions_of(store, &case).map_err(internal)?;
                let findings = engine::findings(store, &case.case_id).map_err(internal)?;
                Ok(ok(
                    json!({"case": case, "alerts": alerts, "actions": actions, "findings": findings}),
                ))
            }
            "get_action" => {
                let Some(id) = arg(&args, "action_id") else {
                    return Ok(refused("action_id is required"));
                };
                let Some(a) = engine::read::action(store, id).map_err(internal)? else {
                    if let Err(e) = f.read(agent, "mcp", "get_action", None).await {
                        return front_result(e);
                    }
                    return Ok(refused(format!(
                        "no action {}",
                        crate::ingest::clip(id, 128)
                    )));
                };
                if let Err(e) = f.read(agent, "mcp", "get_action", Some(&a.case_id)).await {
                    return front_result(e);
                }
                let records = engine::action_records(store, &a).map_err(internal)?;
                Ok(ok(json!({"action": a, "records": records})))
            }
            "propose_action" => {
                let case_id = arg(&args, "case_id").unwrap_or_default().to_string();
                let mut body = args.clone();
                body.remove("case_id");
                let input: ProposalInput = match serde_json::from_value(Value::Object(body)) {
                    Ok(i) => i,
                    Err(e) => {
                        return front_result(
                            f.refuse_input(
                                agent,
                                "mcp",
                                "propose_action",
                                Some(&case_id),
                                e.to_string(),
                            )
                            .await,
                        );
                    }
                };
                match f.propose(agent, "mcp", &case_id, input).await {
                    Ok((a, duplicate)) => Ok(ok(json!({
                        "action_id": a.action_id, "state": a.state, "tier": a.tier,
                        "reasons": a.reasons, "duplicate": duplicate,
                    }))),
                    Err(e) => front_result(e),
                }
            }
            "add_finding" => {
                let case_id = arg(&args, "case_id").unwrap_or_default().to_string();
                let mut body = args.clone();
                body.remove("case_id");
                let input: FindingInput = match serde_json::from_value(Value::Object(body)) {
                    Ok(i) => i,
                    Err(e) => {
                        return front_result(
                            f.refuse_input(
                                agent,
                                "mcp",
                                "add_finding",
                                Some(&case_id),
                                e.to_string(),
                            )
                            .await,
                        );
                    }
                };
                match f.add_finding(agent, "mcp", &case_id, input).await {
                    Ok(seq) => Ok(ok(json!({"finding_seq": seq}))),
                    Err(e) => front_result(e),
                }
            }
            other => Err(McpError::invalid_params(
                format!("unknown tool {:?}", crate::ingest::clip(other, 64)),
                None,
            )),
        }
    }
}

impl rmcp::ServerHandler for CordonMcp {
    fn get_info(&self) -> InitializeResult {
        let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("cordon", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "cordon SOAR: read cases, propose actions with citations, add findings. Policy decides; people approve."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(agent) = agent_of(&context) else {
            return Err(McpError::invalid_request(
                "not authenticated as an agent",
                None,
            ));
        };
        let args = request.arguments.unwrap_or_default();
        self.call(&agent, &request.name, args).await.map(Into::into)
    }
}
