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
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, Implementation, InitializeResult, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, Tool,
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
                let id = arg(&args, "case_id").unwrap_or_default();
                let Some(case) = engine::read::case(store, id).map_err(internal)? else {
                    let why = format!("no case {}", crate::ingest::clip(id, 128));
                    return front_result(
                        f.refuse_input(agent, "mcp", "get_case", Some(id), why)
                            .await,
                    );
                };
                if let Err(e) = f.read(agent, "mcp", "get_case", Some(id)).await {
                    return front_result(e);
                }
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
                let id = arg(&args, "action_id").unwrap_or_default();
                let Some(a) = engine::read::action(store, id).map_err(internal)? else {
                    let why = format!("no action {}", crate::ingest::clip(id, 128));
                    return front_result(
                        f.refuse_input(agent, "mcp", "get_action", None, why).await,
                    );
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
        let f = &self.front;
        let case_id = arg(&args, "case_id").map(str::to_string);
        let Some(tool) = tools().into_iter().find(|t| t.name == request.name) else {
            // Unknown tool: a protocol error (-32602), recorded like every other call.
            let name = crate::ingest::clip(&request.name, 64).into_owned();
            let why = format!("unknown tool {name:?}");
            return match f
                .refuse_input(&agent, "mcp", &name, None, why.clone())
                .await
            {
                FrontError::Engine(e) => Err(McpError::internal_error(e.to_string(), None)),
                FrontError::Refused(_) => Err(McpError::invalid_params(why, None)),
            };
        };
        if let Err(why) = check_args(&tool.input_schema, &args) {
            let why = format!("{}: {why}", tool.name);
            return front_result(
                f.refuse_input(&agent, "mcp", &tool.name, case_id.as_deref(), why)
                    .await,
            )
            .map(Into::into);
        }
        self.call(&agent, &request.name, args).await.map(Into::into)
    }

    /// A request rmcp could not read as any MCP method lands here. A standard method name means
    /// its params did not fit (`-32602`, invalid params); any other name is not a method
    /// (`-32601`).
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        let method = crate::ingest::clip(&request.method, 64).into_owned();
        if STANDARD_METHODS.contains(&request.method.as_str()) {
            Err(McpError::invalid_params(
                format!("invalid params for {method}"),
                None,
            ))
        } else {
            Err(McpError::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("no method {method:?}"),
                None,
            ))
        }
    }
}

/// The MCP methods a client may send; rmcp reads each into its own type, so one that reaches
/// `on_custom_request` had params that did not fit.
const STANDARD_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// Checks a tool call's arguments against the tool's input schema (the subset of JSON Schema
/// the tools here use: `type` object, string, integer, array; `properties`, `required`,
/// `additionalProperties: false`, `enum`, `minimum`, `maximum`, `items`, `minItems`). The first
/// mismatch is the reason, naming the argument; values are never echoed.
pub fn check_args(schema: &JsonObject, args: &JsonObject) -> Result<(), String> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !args.contains_key(r) {
                return Err(format!("{r} is required"));
            }
        }
    }
    for (k, v) in args {
        match props.and_then(|p| p.get(k)).and_then(Value::as_object) {
            Some(s) => check_value(k, s, v)?,
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                return Err(format!("unknown argument {:?}", crate::ingest::clip(k, 64)));
            }
            None => {}
        }
    }
    Ok(())
}

fn check_value(name: &str, s: &JsonObject, v: &Value) -> Result<(), String> {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or_default();
    let fits = match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "boolean" => v.is_boolean(),
        _ => true,
    };
    if !fits {
        return Err(format!(
            "{name} must be a{} {ty}",
            if ty == "integer" || ty == "array" || ty == "object" {
                "n"
            } else {
                ""
            }
        ));
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        return Err(format!("{name} must be one of {}", names.join(", ")));
    }
    if let Some(n) = v.as_i64() {
        let lo = s.get("minimum").and_then(Value::as_i64);
        let hi = s.get("maximum").and_then(Value::as_i64);
        if lo.is_some_and(|lo| n < lo) || hi.is_some_and(|hi| n > hi) {
            return Err(format!(
                "{name} must be from {} to {}",
                lo.map_or("-".into(), |x| x.to_string()),
                hi.map_or("-".into(), |x| x.to_string())
            ));
        }
    } else if v.is_u64() && s.contains_key("maximum") {
        return Err(format!("{name} is too large"));
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            return Err(format!("{name} needs at least {min} item(s)"));
        }
        if let Some(item) = s.get("items").and_then(Value::as_object) {
            for (i, x) in items.iter().enumerate() {
                check_value(&format!("{name}[{i}]"), item, x)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every keyword the tool schemas use is one `check_args` enforces (or only describes), so
    /// a schema cannot promise a constraint the server does not hold.
    #[test]
    fn the_checker_knows_every_keyword_the_tool_schemas_use() {
        const ENFORCED: &[&str] = &[
            "type",
            "properties",
            "required",
            "additionalProperties",
            "enum",
            "minimum",
            "maximum",
            "items",
            "minItems",
        ];
        fn walk(s: &JsonObject, at: &str) {
            for (k, v) in s {
                assert!(
                    ENFORCED.contains(&k.as_str()) || k == "description",
                    "{at}: {k} is not checked"
                );
                if k == "properties" {
                    for (name, p) in v.as_object().unwrap() {
                        walk(p.as_object().unwrap(), &format!("{at}.{name}"));
                    }
                } else if k == "items" {
                    walk(v.as_object().unwrap(), &format!("{at}[]"));
                }
            }
        }
        for t in tools() {
            walk(&t.input_schema, &t.name);
        }
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let find = |n: &str| tools().into_iter().find(|t| t.name == n).unwrap();
        let list = find("list_cases").input_schema;
        let propose = find("propose_action").input_schema;
        let args = |v: Value| v.as_object().unwrap().clone();
        let good = json!({"case_id": "C", "action": "isolate_host", "connector": "c",
            "hypothesis": "h", "confidence": 50, "citations": ["alert:A"]});
        assert_eq!(check_args(&propose, &args(good.clone())), Ok(()));
        assert_eq!(check_args(&list, &args(json!({}))), Ok(()));
        assert_eq!(check_args(&list, &args(json!({"limit": 100}))), Ok(()));
        let cases: &[(&JsonObject, Value, &str)] = &[
            (&list, json!({"limit": 0}), "limit must be from 1 to 100"),
            (&list, json!({"limit": 101}), "limit must be from 1 to 100"),
            (&list, json!({"limit": 1.5}), "limit must be an integer"),
            (&list, json!({"limit": u64::MAX}), "limit is too large"),
            (&list, json!({"after": 3}), "after must be a string"),
            (&list, json!({"x": 1}), "unknown argument \"x\""),
            (&propose, json!({"case_id": "C"}), "action is required"),
        ];
        for (schema, a, want) in cases {
            assert_eq!(
                check_args(schema, &args(a.clone())).unwrap_err(),
                *want,
                "{a}"
            );
        }
        let mut bad = good.clone();
        bad["action"] = json!("reboot");
        assert!(
            check_args(&propose, &args(bad))
                .unwrap_err()
                .starts_with("action must be one of")
        );
        let mut bad = good.clone();
        bad["citations"] = json!([]);
        assert_eq!(
            check_args(&propose, &args(bad)).unwrap_err(),
            "citations needs at least 1 item(s)"
        );
        let mut bad = good;
        bad["citations"] = json!(["alert:A", 2]);
        assert_eq!(
            check_args(&propose, &args(bad)).unwrap_err(),
            "citations[1] must be a string"
        );
    }
}
