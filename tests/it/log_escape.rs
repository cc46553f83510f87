//! The text log cannot be forged from outside (CWE-117): the real binary, text log format, fed a
//! refused unknown key and an alert entity that hold `\r\n`, NUL and a line made to look like
//! cordon's own; every line it writes starts with its own timestamp and the outside values appear
//! escaped, on the line that names them.

use cordon::api::pb;
use serde_json::{Value, json};

use crate::support;
use crate::support::{Daemon, http_client, post_json, serve_args, write_config};

/// What an attacker wants to read as a line of cordon's log.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO cordon::daemon: forged";

/// Whether `line` starts as the text log's lines do: `YYYY-MM-DDTHH:MM:SS.ffffffZ `.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    b.len() > 28
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && line[20..]
            .split_once('Z')
            .is_some_and(|(f, _)| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_values_never_start_a_line_in_the_text_log() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = write_config(
        root,
        &format!(
            "[log]\nformat = \"text\"\n[policy]\nwatch = false\n{}{}",
            support::enrichment_toml(root),
            support::approvers_toml(&["alice", "bob"]),
        ),
    );
    let d = Daemon::start(root, "log_escape", serve_args(&cfg)).await;
    let c = http_client();

    // 1. A refused unknown key (logged as `alert refused ... message=unknown field <key>`).
    let key = format!("zz\r\n{FORGED} log line\u{0}\u{1b}[2J");
    let mut alert = json!({
        "source_alert_id": "log-escape-1",
        "title": "Password spray against the VPN",
        "rule": {"id": "log-escape-rule", "name": "Password spray"},
        "severity": "high",
        "techniques": ["T1110"],
        "entities": [{"kind": "user", "value": "erin"}],
    });
    alert[&key] = json!(1);
    let (s, body) = post_json(
        &c,
        &format!("{}/v1/alerts", d.base),
        alert.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["code"], json!("unknown_field"), "{body}");

    // 2. An accepted alert whose user entity carries the forged line: it becomes the target of
    // a revoke_sessions request, which is approved and runs (dry run), logged with `target=`.
    let user = format!("evil\r\n{FORGED} user line\u{0}");
    let alert = json!({
        "source_alert_id": "log-escape-2",
        "title": "Password spray against the VPN",
        "rule": {"id": "log-escape-rule", "name": "Password spray"},
        "severity": "high",
        "techniques": ["T1110"],
        "entities": [{"kind": "user", "value": user}],
    });
    let (s, ack) = post_json(
        &c,
        &format!("{}/v1/alerts", d.base),
        alert.to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(s, 202, "{ack}");
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let mut approvers = Vec::new();
    for u in ["alice", "bob"] {
        approvers.push(support::grpc(&d.grpc, Some(&support::token_of(u))).await);
    }
    let pending = approvers[0]
        .approvals
        .list_pending(pb::ListPendingRequest::default())
        .await
        .expect("ListPending")
        .into_inner()
        .approvals;
    let revoke = pending
        .iter()
        .find(|a| a.case_id == case_id && a.action == "revoke_sessions")
        .unwrap_or_else(|| panic!("no pending revoke_sessions in {pending:?}"))
        .clone();
    assert!(
        revoke.target.as_ref().unwrap().id.contains("\r\n"),
        "the target keeps what the alert said: {revoke:?}"
    );
    let mut votes = Vec::new();
    for a in &mut approvers {
        let r = a
            .approvals
            .approve(pb::VoteRequest {
                approval_id: revoke.approval_id.clone(),
                request_hash: revoke.request_hash.clone(),
                comment: String::new(),
            })
            .await
            .map(|v| v.into_inner());
        let done = r.as_ref().is_ok_and(|v| {
            v.approval
                .as_ref()
                .is_some_and(|v| v.state != "awaiting_approval")
        });
        votes.push(format!("{r:?}"));
        if done {
            break;
        }
    }
    let url = format!("{}/v1/actions/{}", d.base, revoke.approval_id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let a: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        // The connector refuses to put the control characters into a request URL: the action
        // fails and is escalated, which logs the target twice (executor and engine).
        if a["state"] == json!("failed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the approved request did not run: {a}\nvotes: {votes:?}\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The executor logs after the engine recorded the outcome: wait for the lines themselves.
    // Both lines: the engine's escalation can be written before the executor's own line.
    support::eventually(30, || async {
        let logs = d.logs();
        ["action finished", "escalation:"]
            .iter()
            .all(|what| {
                logs.lines()
                    .any(|l| l.contains(what) && l.contains("kind=revoke_sessions"))
            })
            .then_some(())
    })
    .await;

    let log = std::fs::read(&d.stderr).unwrap();
    assert!(!log.contains(&0), "a NUL reached the log");
    assert!(!log.contains(&0x1b), "an escape sequence reached the log");
    let log = String::from_utf8(log).unwrap();
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            starts_with_timestamp(line),
            "a line that is not one of cordon's own: {line:?}"
        );
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.starts_with("2026-01-01t00:00:00.000000z"),
            "a forged line: {line:?}"
        );
        assert!(!line.contains('\r'), "{line:?}");
    }
    let refused = log
        .lines()
        .find(|l| l.contains("alert refused") && l.contains("unknown_field"))
        .unwrap_or_else(|| panic!("no `alert refused` line:\n{log}"));
    assert!(
        refused.contains(&format!("zz\\r\\n{FORGED} log line\\0\\u{{1b}}[2J")),
        "{refused}"
    );
    for what in ["action finished", "escalation:"] {
        let line = log
            .lines()
            .find(|l| l.contains(what) && l.contains("kind=revoke_sessions"))
            .unwrap_or_else(|| panic!("no `{what}` line for revoke_sessions:\n{log}"));
        assert!(
            line.contains(&format!(
                "target=evil\\r\\n{} user line\\0 ",
                FORGED.to_lowercase()
            )),
            "{line}"
        );
    }
}
