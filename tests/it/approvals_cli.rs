//! `cordon approvals list|show|approve|deny`: the real binary as a gRPC client against the
//! in-process daemon, human output and `--json`.

use crate::support;

async fn cli(grpc: std::net::SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    support::cli_as(&format!("http://{grpc}"), token, "approvals", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_approve_deny() {
    let (dir, mut cfg) = support::workspace();
    cfg.grpc.approvers = support::approvers(&["alice", "mallory"]);
    let d = support::start_in(dir, cfg, None).await;
    let grpc = d.running().grpc_addr;
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    let case_id = ack["case_id"].as_str().unwrap();

    // list --json: the pending requests of the case, with tier and deadline.
    let (code, out, err) = cli(grpc, "alice-token", &["list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pending: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["case_id"] == case_id)
        .collect();
    let isolate = pending
        .iter()
        .find(|a| a["action"] == "isolate_host")
        .expect("isolate_host pending");
    assert_eq!(isolate["tier"], "one_approver");
    let id = isolate["approval_id"].as_str().unwrap().to_string();
    let other = pending.iter().find(|a| a["action"] == "block_ioc").unwrap()["approval_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Paging: one request per page, each page continuing after the last id of the previous,
    // walks the same requests in the same order as one big page.
    let all: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["approval_id"].as_str().unwrap().to_string())
        .collect();
    assert!(all.len() >= 2, "{all:?}");
    let mut paged = Vec::new();
    let mut after = String::new();
    for _ in 0..=all.len() {
        let (code, out, err) = cli(
            grpc,
            "alice-token",
            &["list", "--json", "--limit", "1", "--after", &after],
        )
        .await;
        assert_eq!(code, 0, "{err}");
        let page: serde_json::Value = serde_json::from_str(&out).unwrap();
        let page = page.as_array().unwrap();
        assert!(page.len() <= 1, "{out}");
        let Some(a) = page.first() else { break };
        after = a["approval_id"].as_str().unwrap().to_string();
        paged.push(after.clone());
    }
    assert_eq!(paged, all);

    // list (text) and show (text): what an approver reads.
    let (code, out, err) = cli(grpc, "alice-token", &["list"]).await;
    assert_eq!(code, 0);
    assert!(
        err.contains(&format!("--after {}", all.last().unwrap())),
        "{err}"
    );
    assert!(
        out.contains(&id)
            && out.contains("isolate_host")
            && out.contains("host:ws-042")
            && out.contains("0/1 approvals"),
        "{out}"
    );
    let (code, out, _) = cli(grpc, "alice-token", &["show", &id]).await;
    assert_eq!(code, 0);
    for want in [
        "isolate_host on host ws-042",
        "one_approver (0/1 approvals)",
        "host isolation cuts a machine off the network",
        "criticality medium",
        "requester: playbook:malware_execution",
        "evidence:  assets:",
        // What the action runs with is part of what is approved.
        r#"parameters: {"comment":"cordon: malware execution"}"#,
    ] {
        assert!(out.contains(want), "show lacks {want:?}:\n{out}");
    }

    // An approver policy does not allow: refused, exit 1, nothing counted.
    let (code, _, err) = cli(grpc, "mallory-token", &["approve", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("PermissionDenied"), "{err}");

    // approve with the reviewed hash (--json), deny the other.
    let (_, out, _) = cli(grpc, "alice-token", &["show", &id, "--json"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["parameters"],
        serde_json::json!({"comment": "cordon: malware execution"}),
        "{out}"
    );
    let hash = serde_json::from_str::<serde_json::Value>(&out).unwrap()["request_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, err) = cli(
        grpc,
        "alice-token",
        &[
            "approve",
            &id,
            "--request-hash",
            &hash,
            "--comment",
            "EDR evidence checked",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "approved");
    assert_eq!(v["approval"]["state"], "approved");
    let (code, out, _) = cli(grpc, "alice-token", &["deny", &other]).await;
    assert_eq!(code, 0);
    assert!(out.contains("rejected"), "{out}");

    // Both are gone from the list; voting again is refused.
    let (_, out, _) = cli(grpc, "alice-token", &["list"]).await;
    assert!(!out.contains(&id) && !out.contains(&other), "{out}");
    let (code, _, err) = cli(grpc, "alice-token", &["approve", &other]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("FailedPrecondition") && err.contains("rejected"),
        "{err}"
    );

    // Bad credentials: exit 1, the token is not echoed.
    let (code, out, err) = cli(grpc, "not-a-token-9c1", &["list", "--json"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(!err.contains("not-a-token-9c1") && !out.contains("not-a-token-9c1"));
    assert_eq!(d.stop().await, 0);
}
