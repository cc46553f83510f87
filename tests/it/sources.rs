//! Source mappings (`sources/<name>.toml`): every shipped mapping turns its documented payload
//! into the expected normalized alert; a mapping written only as a file is checked and served;
//! typos and paths that match nothing are refused with file, key and reason; multi-alert bodies
//! are acknowledged only when all of them are durable, and refused whole on one bad line.

use std::path::Path;

use cordon::ingest::mapped::{self, Printed};
use serde_json::{Value, json};

use crate::support::{self, TestDaemon};
use crate::support::{cordon, run, toml_path, write_config};

fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(support::repo().join("sources"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "toml"))
                .then(|| p.file_stem().unwrap().to_string_lossy().to_string())
        })
        .collect();
    names.sort();
    names
}

/// `time` compared as an instant (the expected files write it as the vendor docs do).
fn comparable(mut v: Value) -> Value {
    if let Some(t) = v.get("time").and_then(Value::as_str) {
        let t: chrono::DateTime<chrono::Utc> = t.parse().unwrap();
        v["time"] = json!(t.timestamp_nanos_opt());
    }
    v
}

#[test]
fn each_shipped_mapping_turns_its_documented_payload_into_the_expected_alert() {
    let names = shipped();
    for want in [
        "aws_guardduty",
        "aws_securityhub",
        "crowdstrike",
        "datadog",
        "google_secops",
        "qradar",
        "suricata",
        "wazuh",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} is not shipped");
    }
    let repo = support::repo();
    for name in &names {
        // Loading validates the file and checks every path against its sample payload.
        let m = mapped::load_file(&repo.join(format!("sources/{name}.toml")))
            .unwrap_or_else(|p| panic!("{name}: {p:#?}"));
        let payload = std::fs::read(repo.join(format!("sources/samples/{name}.json"))).unwrap();
        let fields = m
            .parse(&payload, "2000-01-01T00:00:00Z".parse().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = serde_json::to_value(Printed {
            source: name,
            fields: &fields,
        })
        .unwrap();
        let expected = support::fixture(&format!("sources/{name}.expected.json"));
        let expected: Value = serde_json::from_slice(&expected).unwrap();
        assert_eq!(
            comparable(got.clone()),
            comparable(expected),
            "{name}: got {}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_each_shipped_mapping_on_its_own_endpoint() {
    let d = support::start().await;
    for name in shipped() {
        let payload =
            std::fs::read(support::repo().join(format!("sources/samples/{name}.json"))).unwrap();
        let (status, ack) = d.post(&format!("/v1/alerts/{name}"), payload.clone()).await;
        assert_eq!(status, 202, "{name}: {ack}");
        let id = ack["alert_id"].as_str().unwrap();
        let (status, alert) = d.get(&format!("/v1/alerts/{id}")).await;
        assert_eq!(status, 200, "{alert}");
        assert_eq!(alert["source"], json!(name));
        let expected: Value =
            serde_json::from_slice(&support::fixture(&format!("sources/{name}.expected.json")))
                .unwrap();
        assert_eq!(alert["entities"], expected["entities"], "{name}");
        assert_eq!(alert["rule"], expected["rule"], "{name}");
        // The payload is kept verbatim.
        let raw = d
            .audit()
            .into_iter()
            .filter(|r| r.body.kind == "alert_received" && r.body.alert_id.as_deref() == Some(id))
            .map(|r| r.body.data["raw"].as_str().unwrap().to_string())
            .next()
            .unwrap_or_else(|| panic!("{name}: no alert_received record"));
        assert_eq!(raw.as_bytes(), payload.as_slice(), "{name}");
    }
    d.stop().await;
}

/// The generic malware alert of issue 19: `source`, `entities` as an object, no `title`.
const NEW_PAYLOAD: &str = r#"{
  "alert_id": "mw-20240611-0042",
  "source": "acme-edr",
  "detected_at": "2024-06-11T09:14:01Z",
  "rule": {"id": "MW-1001", "name": "Known malware hash executed"},
  "severity": 9,
  "entities": {
    "hosts": ["WS-042.corp.example"],
    "users": ["CORP\\alice"],
    "ips": ["10.1.2.3"],
    "hashes": {"sha256": "DE96A6E69944335375DC1AC238336066889D9FFC7D73628EF4FE1B1B160AB32C"}
  },
  "tags": ["malware"]
}"#;

const NEW_MAPPING: &str = r#"
description = "ACME EDR malware alert"
sample = "samples/acme_edr.json"

[alert]
id = "alert_id"
title = ["title", "rule.name"]
time = "detected_at"
rule_id = "rule.id"
rule_name = "rule.name"
severity = { path = "severity", at_least = { low = 1, medium = 4, high = 7, critical = 9 } }
tags = "tags"
intel_source = "source"

[entities]
host = "entities.hosts[*]"
user = { path = "entities.users", strip_domain = true }
ip = "entities.ips"
file_hash = "entities.hashes.sha256"
"#;

fn write_new_mapping(root: &Path, mapping: &str) -> std::path::PathBuf {
    std::fs::write(root.join("sources/samples/acme_edr.json"), NEW_PAYLOAD).unwrap();
    let file = root.join("sources/acme_edr.toml");
    std::fs::write(&file, mapping).unwrap();
    file
}

fn check(root: &Path) -> std::process::Output {
    let extra = format!("sources_dir = {}", toml_path(&root.join("sources")));
    let config = write_config(root, &extra);
    let mut c = cordon();
    c.arg("check").arg("--config").arg(config);
    run(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_written_only_as_a_file_is_checked_and_served() {
    let (dir, cfg) = support::workspace();
    let root = dir.path().to_path_buf();
    write_new_mapping(&root, NEW_MAPPING);

    // A playbook may filter on the mapped source.
    std::fs::write(
        root.join("playbooks/acme_edr.toml"),
        r#"
description = "Enrich every ACME EDR malware alert."
family = "acme"

[match]
rule_ids = ["MW-1001"]
sources = ["acme_edr"]

[[steps]]
id = "enrich-acme"
action = "enrich"
connector = "cordon"
target = "case"
"#,
    )
    .unwrap();

    let out = check(&root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("9 source mapping(s)"), "{stdout}");

    // `cordon source test` prints the normalized alert.
    let mut c = cordon();
    c.args(["source", "test"])
        .arg(root.join("sources/acme_edr.toml"))
        .arg(root.join("sources/samples/acme_edr.json"));
    let out = run(c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["source"], "acme_edr");
    assert_eq!(printed["title"], "Known malware hash executed");
    assert_eq!(printed["severity"], "critical");
    // A payload it cannot map: exit 65, naming the paths.
    let bad = root.join("bad.json");
    std::fs::write(&bad, r#"{"alert_id": "x", "severity": 3}"#).unwrap();
    let mut c = cordon();
    c.args(["source", "test"])
        .arg(root.join("sources/acme_edr.toml"))
        .arg(&bad);
    let out = run(c);
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("title | rule.name (title)"), "{stderr}");

    let d = support::start_in(dir, cfg, None).await;
    let (status, ack) = d.post("/v1/alerts/acme_edr", NEW_PAYLOAD).await;
    assert_eq!(status, 202, "{ack}");
    let case = d.case(ack["case_id"].as_str().unwrap()).await;
    assert!(
        case["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["requester"] == "playbook:acme_edr"),
        "the acme_edr playbook proposed nothing: {case}"
    );
    let keys: Vec<String> = case["case"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            "host:ws-042.corp.example",
            "user:alice",
            "ip:10.1.2.3",
            "file_hash:de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"
        ]
    );
    let (_, alert) = d
        .get(&format!("/v1/alerts/{}", ack["alert_id"].as_str().unwrap()))
        .await;
    assert_eq!(alert["source"], "acme_edr");
    assert_eq!(alert["intel_source"], "acme-edr");

    // A payload the mapping cannot use is a 422 naming the path it looked at.
    let (status, body) = d
        .post("/v1/alerts/acme_edr", r#"{"alert_id": "x", "severity": 3}"#)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "missing_fields");
    assert!(
        body["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("title | rule.name (title)")),
        "{body}"
    );
    let (status, body) = d
        .post(
            "/v1/alerts/acme_edr",
            NEW_PAYLOAD.replace("\"severity\": 9", "\"severity\": \"bad\""),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"], json!(["severity"]), "{body}");
    d.stop().await;
}

#[test]
fn a_typo_or_a_path_that_never_matches_the_sample_is_refused_with_file_key_and_reason() {
    let (dir, _) = support::workspace();
    let root = dir.path();

    let file = write_new_mapping(root, &NEW_MAPPING.replace("rule_name =", "rule_nmae ="));
    let out = check(root);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = file.display().to_string();
    assert!(
        stderr.contains(&format!("{file}: line 10: alert.rule_nmae: unknown field")),
        "{stderr}"
    );

    write_new_mapping(
        root,
        &NEW_MAPPING.replace("entities.ips", "entities.ip_addresses"),
    );
    let out = check(root);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{file}: entities.ip: entities.ip_addresses matches nothing in the sample"
        )),
        "{stderr}"
    );

    // An entity kind that does not exist, a bad path and a built-in name.
    write_new_mapping(
        root,
        &NEW_MAPPING
            .replace("ip = ", "ipv4 = ")
            .replace("\"rule.id\"", "\"rule[id\""),
    );
    std::fs::write(root.join("sources/splunk.toml"), NEW_MAPPING).unwrap();
    let out = check(root);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        format!("{file}: line 18: entities.ipv4: unknown field"),
        format!("{file}: alert.rule_id: unclosed [ in path"),
        "splunk.toml: the source name \"splunk\" is a built-in format".to_string(),
    ] {
        assert!(stderr.contains(&want), "{want}\n{stderr}");
    }
}

/// A config whose body limit fits 1,000 alerts.
async fn start_big() -> TestDaemon {
    support::start_with(|cfg, _| cfg.http.max_body_bytes = 8 << 20).await
}

fn wazuh_line(i: usize) -> String {
    let sample = std::fs::read(support::repo().join("sources/samples/wazuh.json")).unwrap();
    let mut v: Value = serde_json::from_slice(&sample).unwrap();
    v["id"] = json!(format!("1718097241.{i}"));
    v["data"]["srcip"] = json!(format!("203.0.{}.{}", i / 250, i % 250 + 1));
    v["agent"]["name"] = json!(format!("web-{i}"));
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_alert_ndjson_body_is_acknowledged_when_all_are_durable() {
    let d = start_big().await;
    let body: String = (0..1000).map(|i| wazuh_line(i) + "\n").collect();
    let (status, ack) = d
        .post_with("/v1/alerts/wazuh", body, |r| {
            r.header("content-type", "application/x-ndjson")
        })
        .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ack["accepted"], 1000);
    let acks = ack["alerts"].as_array().unwrap();
    assert_eq!(acks.len(), 1000);
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a["duplicate"], false, "{a}");
        let (status, alert) = d
            .get(&format!("/v1/alerts/{}", a["alert_id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200, "{alert}");
        // Acks come back in the body's order.
        assert_eq!(alert["source_alert_id"], json!(format!("1718097241.{i}")));
    }
    // A JSON array is several alerts too; a retry of the same alerts is recognised.
    let array = format!("[{},{}]", wazuh_line(0), wazuh_line(1000));
    let (status, ack) = d.post("/v1/alerts/wazuh", array).await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ack["accepted"], 2);
    assert_eq!(ack["alerts"][0]["duplicate"], true);
    assert_eq!(ack["alerts"][1]["duplicate"], false);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_one_bad_line_is_refused_whole_with_its_line_number() {
    let d = start_big().await;
    let head = d.head();
    let mut lines: Vec<String> = (0..10).map(wazuh_line).collect();
    lines[6] = lines[6].replace("\"description\"", "\"descr\"");
    // Sniffed as NDJSON: no content type.
    let (status, body) = d.post("/v1/alerts/wazuh", lines.join("\n")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "missing_fields");
    assert!(
        body["message"].as_str().unwrap().starts_with("line 7: "),
        "{body}"
    );
    assert_eq!(
        body["fields"],
        json!([
            "line 7: rule.description (title)",
            "line 7: rule.description (rule_name)"
        ])
    );

    lines[6] = "{\"id\": ".to_string();
    let (status, body) = d.post("/v1/alerts/wazuh", lines.join("\r\n")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(body["fields"], json!(["line 7"]));

    // Over the per-body cap: refused whole.
    let many: String = (0..1001).map(|i| wazuh_line(i) + "\n").collect();
    let (status, body) = d.post("/v1/alerts/wazuh", many).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "too_many_alerts");

    // Nothing was recorded.
    assert_eq!(d.head(), head);
    let (_, cases) = d.get("/v1/cases").await;
    assert_eq!(cases["cases"], json!([]));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_source_takes_its_own_token() {
    let d = support::start_with(|cfg, _| {
        cfg.ingest
            .tokens
            .insert("wazuh".into(), crate::support::sha_ref("wazuh-secret"));
    })
    .await;
    let payload = std::fs::read(support::repo().join("sources/samples/wazuh.json")).unwrap();
    let (status, body) = d.post("/v1/alerts/wazuh", payload.clone()).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = d
        .post_with("/v1/alerts/wazuh", payload.clone(), |r| {
            r.bearer_auth("wrong")
        })
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = d
        .post_with("/v1/alerts/wazuh", payload, |r| {
            r.bearer_auth("wazuh-secret")
        })
        .await;
    assert_eq!(status, 202, "{body}");
    d.stop().await;

    // A token for a source that is neither built in nor mapped is refused at start.
    let (_dir, mut cfg) = support::workspace();
    cfg.ingest
        .tokens
        .insert("wazhu".into(), crate::support::sha_ref("x"));
    let problems = cordon::daemon::validate(cfg, "cordon.toml").err().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "ingest.tokens.wazhu" && p.reason.starts_with("no source \"wazhu\"")),
        "{problems:?}"
    );
}
