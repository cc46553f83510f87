//! The MCP server on the daemon's HTTP listener (`/mcp`, streamable HTTP), driven by a plain
//! JSON-RPC client over reqwest on loopback: initialize, list the tools, list and read cases,
//! propose `isolate_host` with citations (it becomes an agent-proposed request an approver
//! sees), add a finding, read the action's records; agent credentials only; every tool call
//! recorded in the audit store with the agent's identity; refusals are tool errors.

use cordon::api::pb;
use serde_json::{Value, json};

use crate::agents::{COPILOT, TRIAGE, calls_of, start};
use crate::support::TestDaemon;

async fn rpc(
    d: &TestDaemon,
    token: Option<&str>,
    id: u64,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    post_mcp(d, token, &body.to_string(), &[]).await
}

/// Posts `body` as is to `/mcp` with `token` and `extra` headers: the status and the JSON
/// answer (or the one SSE event carrying it, or the text).
async fn post_mcp(
    d: &TestDaemon,
    token: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = d
        .client
        .post(format!("{}/mcp", d.base))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    // A JSON answer, or one SSE event carrying it.
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .next_back()
            .unwrap_or(Value::String(text.clone()))
    });
    (status, body)
}

async fn tool(d: &TestDaemon, token: &str, name: &str, args: Value) -> Value {
    let (s, v) = rpc(
        d,
        Some(token),
        7,
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
    .await;
    assert_eq!(s, 200, "{name}: {v}");
    assert!(v.get("error").is_none(), "{name}: {v}");
    v["result"].clone()
}

fn structured(r: &Value) -> Value {
    if let Some(s) = r.get("structuredContent") {
        return s.clone();
    }
    serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_reads_cases_proposes_and_adds_a_finding() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap().to_string();

    let (s, init) = rpc(
        &d,
        Some(COPILOT),
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "cordon-test", "version": "1"}}),
    )
    .await;
    assert_eq!(s, 200, "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        json!("cordon"),
        "{init}"
    );
    let (_, tools) = rpc(&d, Some(COPILOT), 2, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for n in [
        "list_cases",
        "get_case",
        "get_action",
        "propose_action",
        "add_finding",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }

    let listed = structured(&tool(&d, COPILOT, "list_cases", json!({})).await);
    assert!(
        listed["cases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["case_id"] == json!(case_id)),
        "{listed}"
    );
    let case = structured(&tool(&d, COPILOT, "get_case", json!({"case_id": case_id})).await);
    assert_eq!(case["alerts"][0]["alert_id"], json!(alert_id), "{case}");

    let proposed = tool(
        &d,
        COPILOT,
        "propose_action",
        json!({"case_id": case_id, "action": "isolate_host", "target": "ws-042",
               "connector": "crowdstrike", "hypothesis": "macro dropper on ws-042",
               "confidence": 85, "citations": [format!("alert:{alert_id}"), "fact:host:ws-042"]}),
    )
    .await;
    assert_ne!(proposed["isError"], json!(true), "{proposed}");
    let p = structured(&proposed);
    assert_eq!(p["tier"], json!("two_person"), "{p}");
    assert_eq!(p["state"], json!("awaiting_approval"));
    let action_id = p["action_id"].as_str().unwrap().to_string();

    let f = structured(
        &tool(
            &d,
            COPILOT,
            "add_finding",
            json!({"case_id": case_id, "kind": "blast_radius",
                   "text": "isolating ws-042 cuts one finance workstation off",
                   "confidence": 60, "citations": [format!("alert:{alert_id}")]}),
        )
        .await,
    );
    let seq = f["finding_seq"].as_u64().unwrap();
    let case = structured(&tool(&d, COPILOT, "get_case", json!({"case_id": case_id})).await);
    assert_eq!(case["findings"][0]["ai_generated"], json!(true), "{case}");
    assert_eq!(case["findings"][0]["agent"], json!("soc-copilot"));

    // The action's explanation: its records, the proposal and the decision among them.
    let explained =
        structured(&tool(&d, COPILOT, "get_action", json!({"action_id": action_id})).await);
    let kinds: Vec<&str> = explained["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for k in ["action_proposed", "policy_decision", "action_transition"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    assert_eq!(
        explained["action"]["proposal"]["agent"],
        json!("soc-copilot")
    );

    // The approver sees the agent's hypothesis and citations.
    let mut alice = d.grpc_as("alice").await;
    let view = alice
        .approvals
        .get_approval(pb::GetApprovalRequest {
            approval_id: action_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let ap = view.agent_proposal.unwrap();
    assert_eq!(ap.hypothesis, "macro dropper on ws-042");
    assert_eq!(ap.citations.len(), 2);

    // Every tool call is in the audit store with the agent's identity.
    let calls: Vec<String> = calls_of(&d, "soc-copilot")
        .iter()
        .filter(|r| r.body.data["via"] == json!("mcp"))
        .map(|r| r.body.data["call"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        calls,
        [
            "list_cases",
            "get_case",
            "propose_action",
            "add_finding",
            "get_case",
            "get_action"
        ],
    );
    let finding = d.audit().into_iter().find(|r| r.body.seq == seq).unwrap();
    assert_eq!(finding.body.kind, "agent_finding");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_takes_agent_credentials_only_and_refusals_are_tool_errors() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap().to_string();
    // The executor runs the case's automatic steps meanwhile, so count agent records only.
    let agent_records = || {
        d.audit()
            .iter()
            .filter(|r| r.body.kind.starts_with("agent_"))
            .count()
    };
    let before = agent_records();
    for token in [None, Some("alice-token"), Some("wrong")] {
        let (s, v) = rpc(&d, token, 1, "tools/list", json!({})).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}: {v}"
        );
    }
    assert_eq!(
        agent_records(),
        before,
        "an unauthenticated request records nothing"
    );

    // Refusals: no citations, a foreign case, a policy-denied kind is accepted but denied.
    let r = tool(
        &d,
        COPILOT,
        "propose_action",
        json!({"case_id": case_id, "action": "isolate_host", "target": "ws-042",
               "connector": "crowdstrike", "hypothesis": "h", "confidence": 1, "citations": []}),
    )
    .await;
    assert_eq!(r["isError"], json!(true), "{r}");
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("citation"),
        "{r}"
    );
    let r = tool(
        &d,
        COPILOT,
        "propose_action",
        json!({"case_id": case_id, "action": "isolate_host", "target": "ws-042",
               "connector": "crowdstrike", "hypothesis": "h", "confidence": 1,
               "citations": ["alert:01SOMEONEELSES"], "extra": 1}),
    )
    .await;
    assert_eq!(r["isError"], json!(true), "{r}");
    // (Unknown tools and cases: see the next test.)
    let denied = structured(
        &tool(
            &d,
            TRIAGE,
            "propose_action",
            json!({"case_id": case_id, "action": "isolate_host", "target": "ws-042",
                   "connector": "crowdstrike", "hypothesis": "h", "confidence": 1,
                   "citations": [format!("alert:{alert_id}")]}),
        )
        .await,
    );
    assert_eq!(denied["tier"], json!("denied"), "{denied}");
    let case = d.case(&case_id).await;
    let by_copilot = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["requester"] == json!("agent:soc-copilot"))
        .count();
    assert_eq!(by_copilot, 0, "refused proposals made no request");
    let refused = calls_of(&d, "soc-copilot")
        .iter()
        .filter(|r| r.body.data["outcome"] == json!("refused"))
        .count();
    assert!(refused >= 2, "refusals are recorded");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_input_gets_jsonrpc_errors_and_every_bad_tool_call_is_a_recorded_refusal() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();

    // Not JSON: 400 with a JSON-RPC parse error (no id can be known).
    let (s, v) = post_mcp(&d, Some(COPILOT), "{\"jsonrpc\": \"2.0\", \"id\": 1, ", &[]).await;
    assert_eq!(
        (s, &v["error"]["code"], &v["id"]),
        (400, &json!(-32700), &Value::Null),
        "{v}"
    );
    // JSON, not JSON-RPC: invalid request, with the id it carried.
    let (s, v) = post_mcp(&d, Some(COPILOT), r#"{"hello": "world", "id": 5}"#, &[]).await;
    assert_eq!(
        (s, &v["error"]["code"], &v["id"]),
        (400, &json!(-32600), &json!(5)),
        "{v}"
    );
    // A standard method with params that do not fit, and a method that does not exist.
    let (_, v) = rpc(&d, Some(COPILOT), 3, "tools/call", json!({"arguments": {}})).await;
    assert_eq!(v["error"]["code"], json!(-32602), "{v}");
    let (_, v) = rpc(&d, Some(COPILOT), 4, "tools/frobnicate", json!({})).await;
    assert_eq!(v["error"]["code"], json!(-32601), "{v}");
    // A browser page's request (it carries Origin) is refused; the same request without
    // Origin is answered.
    let list = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list", "params": {}}).to_string();
    let (s, _) = post_mcp(
        &d,
        Some(COPILOT),
        &list,
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(s, 403);
    let (s, v) = post_mcp(&d, Some(COPILOT), &list, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["result"]["tools"].is_array(), "{v}");
    assert!(
        calls_of(&d, "soc-copilot").is_empty(),
        "protocol errors are not tool calls"
    );

    // Tool calls whose arguments do not fit the tool's schema, an unknown tool, and a case
    // that does not exist: each is refused, changes nothing and leaves one refused record.
    let bad: Vec<(&str, Value)> = vec![
        ("list_cases", json!({"limit": 0})),
        ("list_cases", json!({"limit": 1000})),
        ("list_cases", json!({"limit": "5"})),
        ("list_cases", json!({"limit": 5, "verbose": true})),
        ("get_case", json!({})),
        ("get_case", json!({"case_id": 7})),
        ("get_case", json!({"case_id": "01NOSUCHCASE"})),
        ("get_action", json!({"action_id": "01NOSUCHACTION"})),
        (
            "propose_action",
            json!({"case_id": case_id, "action": "reboot_everything",
            "connector": "crowdstrike", "hypothesis": "h", "confidence": 1,
            "citations": ["alert:x"]}),
        ),
        (
            "propose_action",
            json!({"case_id": case_id, "action": "isolate_host",
            "connector": "crowdstrike", "hypothesis": "h", "confidence": 101,
            "citations": ["alert:x"]}),
        ),
        (
            "add_finding",
            json!({"case_id": case_id, "kind": "summary", "text": "t",
            "citations": [1]}),
        ),
    ];
    let actions_before = d.case(&case_id).await["actions"].as_array().unwrap().len();
    for (name, args) in &bad {
        let r = tool(&d, COPILOT, name, args.clone()).await;
        assert_eq!(r["isError"], json!(true), "{name} {args}: {r}");
    }
    let (_, v) = rpc(
        &d,
        Some(COPILOT),
        9,
        "tools/call",
        json!({"name": "drop_tables", "arguments": {}}),
    )
    .await;
    assert_eq!(v["error"]["code"], json!(-32602), "{v}");
    let calls = calls_of(&d, "soc-copilot");
    assert_eq!(calls.len(), bad.len() + 1, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|r| r.body.data["outcome"] == json!("refused")),
        "{calls:?}"
    );
    assert_eq!(
        calls.last().unwrap().body.data["call"],
        json!("drop_tables")
    );
    assert_eq!(
        d.case(&case_id).await["actions"].as_array().unwrap().len(),
        actions_before,
        "no refused call made a request"
    );
    // A good call is still answered and recorded as such.
    let r = tool(&d, COPILOT, "list_cases", json!({"limit": 5})).await;
    assert_ne!(r["isError"], json!(true), "{r}");
    assert_eq!(
        calls_of(&d, "soc-copilot").last().unwrap().body.data["outcome"],
        json!("ok")
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_mcp_relays_stdio_to_the_daemon_with_the_agents_token() {
    use std::io::{BufRead, Write};
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let url = format!("{}/mcp", d.base);
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_case", "arguments": {"case_id": case_id}}}),
        // Not JSON (sent as is below): answered with a parse error, and the relay goes on.
        json!(null),
        json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(crate::support::BIN)
            .args(["mcp", "--url", &url])
            .env("CORDON_TOKEN", COPILOT)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut answers = stdout.lines();
        let mut got = Vec::new();
        for l in &lines {
            if l.is_null() {
                writeln!(stdin, "this is not json {{").unwrap();
            } else {
                writeln!(stdin, "{l}").unwrap();
            }
            stdin.flush().unwrap();
            if l.is_null() || l.get("id").is_some() {
                got.push(answers.next().unwrap().unwrap());
            }
        }
        drop(stdin);
        assert!(child.wait().unwrap().success());
        got
    })
    .await
    .unwrap();
    let init: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        json!("cordon"),
        "{init}"
    );
    let case: Value = serde_json::from_str(&out[1]).unwrap();
    assert_eq!(case["id"], json!(2));
    assert_ne!(case["result"]["isError"], json!(true), "{case}");
    let parse: Value = serde_json::from_str(&out[2]).unwrap();
    assert_eq!(
        (&parse["id"], &parse["error"]["code"]),
        (&Value::Null, &json!(-32700)),
        "{parse}"
    );
    let pong: Value = serde_json::from_str(&out[3]).unwrap();
    assert_eq!(pong["id"], json!(3), "{pong}");
    assert!(pong.get("result").is_some(), "{pong}");
    let calls = calls_of(&d, "soc-copilot");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].body.data["call"], json!("get_case"));
    assert_eq!(d.stop().await, 0);
}

/// The venv with the official `mcp` SDK (`<target>/mcpenv`, from `tests/python/mcp-requirements.txt`
/// on PyPI), created once; a failed install fails the test.
fn mcp_python() -> std::path::PathBuf {
    use std::process::Command;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => crate::support::repo().join(d),
        _ => crate::support::repo().join("target"),
    };
    let venv = target.join("mcpenv");
    let python = venv.join("bin/python");
    let ready = |py: &std::path::Path| {
        Command::new(py)
            .args(["-c", "import mcp.client.streamable_http"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists() && ready(&python) {
        return python;
    }
    let o = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(o.status.success(), "python3 -m venv: {o:?}");
    let reqs = crate::support::repo().join("tests/python/mcp-requirements.txt");
    let o = Command::new(venv.join("bin/pip"))
        .args(["install", "--disable-pip-version-check", "-q", "-r"])
        .arg(&reqs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pip install -r {}: {o:?}",
        reqs.display()
    );
    assert!(
        ready(&python),
        "the mcp SDK does not import after the install"
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_mcp_client_drives_a_proposal_to_execution() {
    let d = start().await;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let alert_id = ack["alert_id"].as_str().unwrap().to_string();
    let python = tokio::task::spawn_blocking(mcp_python).await.unwrap();
    let script = crate::support::repo().join("tests/python/mcp_agent.py");
    let url = format!("{}/mcp", d.base);
    let (c, a) = (case_id.clone(), alert_id.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&url, COPILOT, &c, &a])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["server"], json!("cordon"));
    assert_eq!(
        seen["tools"],
        json!([
            "add_finding",
            "get_action",
            "get_case",
            "list_cases",
            "propose_action"
        ])
    );
    assert!(
        seen["cases"].as_array().unwrap().contains(&json!(case_id)),
        "{seen}"
    );
    assert_eq!(seen["case_alerts"], json!([alert_id]));
    assert_eq!(seen["refused"]["is_error"], json!(true), "{seen}");
    let p = &seen["proposed"];
    assert_eq!(p["tier"], json!("two_person"), "{seen}");
    let id = p["action_id"].as_str().unwrap().to_string();

    // Two approvers approve over gRPC; the executor runs it (connectors in dry_run).
    for user in ["alice", "bob"] {
        let mut c = d.grpc_as(user).await;
        let view = c
            .approvals
            .get_approval(pb::GetApprovalRequest {
                approval_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(view.agent_proposal.as_ref().unwrap().agent, "soc-copilot");
        c.approvals
            .approve(pb::VoteRequest {
                approval_id: id.clone(),
                request_hash: view.request_hash,
                comment: String::new(),
            })
            .await
            .unwrap();
    }
    crate::support::eventually(20, || async {
        let (_, a) = d.get(&format!("/v1/actions/{id}")).await;
        (a["state"] == json!("dry_run")).then_some(())
    })
    .await;
    // The proposal and the finding are in the audit store with the agent's identity.
    let calls = calls_of(&d, "soc-copilot");
    let accepted: Vec<&str> = calls
        .iter()
        .filter(|r| r.body.data["outcome"] == json!("accepted"))
        .map(|r| r.body.data["call"].as_str().unwrap())
        .collect();
    assert_eq!(accepted, ["propose_action", "add_finding"], "{calls:?}");
    let seq = seen["finding"]["finding_seq"].as_u64().unwrap();
    let f = d.audit().into_iter().find(|r| r.body.seq == seq).unwrap();
    assert_eq!(
        (f.body.kind.as_str(), &f.body.data["agent"]),
        ("agent_finding", &json!("soc-copilot"))
    );
    // And in the case's story (`explain`): the agent's proposal and its finding.
    let case_id = f.body.case_id.clone().unwrap();
    let (s, story) = d.get(&format!("/v1/cases/{case_id}/explain")).await;
    assert_eq!(s, 200, "{story}");
    let events = story["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == json!("action_proposed")
            && e["facts"]["agent"] == json!("soc-copilot")
            && e["facts"]["citations"]
                .as_array()
                .is_some_and(|c| !c.is_empty())),
        "{story}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == json!("agent_finding")),
        "{story}"
    );
    assert_eq!(d.stop().await, 0);
}
