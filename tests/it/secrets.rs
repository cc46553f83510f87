//! Secrets stay secret: ingest tokens (and wrong tokens presented by clients) never appear in
//! the daemon's logs at debug level, in HTTP error bodies, in config error reports, or in the
//! audit store, while the alerts they authorized are all there.

use std::path::Path;

use serde_json::{Value, json};

use crate::support;
use crate::support::{Daemon, cordon, http_client, run, text, toml_path, write_config};

/// The configured token (from an environment variable).
const CANARY: &str = "canary-5f1e-do-not-log";
/// The configured token for `elastic` (from a file).
const FILE_CANARY: &str = "canary-file-71c0-do-not-log";
/// A wrong token presented by a client.
const WRONG: &str = "canary-wrong-9b2c-do-not-log";
const ALL: [&str; 3] = [CANARY, FILE_CANARY, WRONG];

fn assert_clean(what: &str, haystack: &[u8]) {
    for c in ALL {
        let found = haystack.windows(c.len()).any(|w| w == c.as_bytes());
        assert!(!found, "{what} contains the secret {c:?}");
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p))
        } else {
            out.push(p)
        }
    }
    out
}

fn cordon_alert(tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "source_alert_id": format!("secrets-{tag}"),
        "title": format!("secrets test {tag}"),
        "rule": {"id": "secrets-rule", "name": "Secrets test"},
        "severity": "low",
        "entities": [{"kind": "host", "value": format!("secrets-{tag}.corp.example")}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_logs_errors_or_the_audit_store() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let token_file = root.join("elastic.token");
    std::fs::write(&token_file, format!("{FILE_CANARY}\n")).unwrap();
    let cfg = write_config(
        root,
        &format!(
            "[ingest.tokens]\nsplunk = {{ env = \"CORDON_TEST_CANARY\" }}\ncordon = {{ env = \"CORDON_TEST_CANARY\" }}\nelastic = {{ file = {} }}\n",
            toml_path(&token_file)
        ),
    );
    let mut d = Daemon::start(root, "secrets", |c| {
        c.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("CORDON_TEST_CANARY", CANARY)
            .env("RUST_LOG", "debug");
    })
    .await;
    let c = http_client();
    let url = |p: &str| format!("{}{p}", d.base);

    // Accepted: the right token as ?token= and as a Bearer header.
    let mut accepted = Vec::new();
    let r = c
        .post(url(&format!("/v1/alerts/splunk?token={CANARY}")))
        .body(support::fixture("splunk.json"))
        .send()
        .await
        .unwrap();
    accepted.push((r.status().as_u16(), r.json::<Value>().await.unwrap()));
    let r = c
        .post(url("/v1/alerts"))
        .bearer_auth(CANARY)
        .body(cordon_alert("bearer"))
        .send()
        .await
        .unwrap();
    accepted.push((r.status().as_u16(), r.json::<Value>().await.unwrap()));
    let r = c
        .post(url("/v1/alerts/elastic"))
        .bearer_auth(FILE_CANARY)
        .body(support::fixture("elastic.json"))
        .send()
        .await
        .unwrap();
    accepted.push((r.status().as_u16(), r.json::<Value>().await.unwrap()));
    let mut alert_ids = Vec::new();
    for (status, body) in &accepted {
        assert_eq!(*status, 202, "{body}");
        alert_ids.push(body["alert_id"].as_str().unwrap().to_string());
    }

    // Refused or failed requests that carry a secret: their error bodies must not echo it.
    async fn send(what: &str, rb: reqwest::RequestBuilder) -> (String, u16, String) {
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (what.to_string(), status, r.text().await.unwrap())
    }
    let errors = [
        send(
            "wrong bearer",
            c.post(url("/v1/alerts/splunk"))
                .bearer_auth(WRONG)
                .body(support::fixture("splunk.json")),
        )
        .await,
        send(
            "wrong ?token=",
            c.post(url(&format!("/v1/alerts?token={WRONG}")))
                .body(cordon_alert("wrong-query")),
        )
        .await,
        send(
            "token of another source",
            c.post(url("/v1/alerts/elastic"))
                .bearer_auth(CANARY)
                .body(support::fixture("elastic.json")),
        )
        .await,
        send(
            "no token",
            c.post(url("/v1/alerts/splunk"))
                .body(support::fixture("splunk.json")),
        )
        .await,
        send(
            "right token, malformed body",
            c.post(url("/v1/alerts"))
                .bearer_auth(CANARY)
                .body("{not json"),
        )
        .await,
        send(
            "a wrong token in the body",
            c.post(url("/v1/alerts"))
                .bearer_auth(CANARY)
                .body(format!("{{\"token\": \"{WRONG}\"}}")),
        )
        .await,
        send(
            "unknown format",
            c.post(url(&format!("/v1/alerts/nope?token={WRONG}")))
                .body("{}"),
        )
        .await,
        send(
            "the right token as ?token= where only the header is taken",
            c.post(url("/v1/alerts?token=") + CANARY)
                .body(cordon_alert("query")),
        )
        .await,
        send(
            "the right token twice",
            c.post(url("/v1/alerts/splunk?token=") + CANARY)
                .bearer_auth(CANARY)
                .body(support::fixture("splunk.json")),
        )
        .await,
    ];
    let expect = [401, 401, 401, 401, 400, 422, 404, 401, 401];
    for ((what, status, body), want) in errors.iter().zip(expect) {
        assert_eq!(*status, want, "{what}: {body}");
        assert!(
            serde_json::from_str::<Value>(body).unwrap()["code"].is_string(),
            "{what}: {body}"
        );
        assert_clean(&format!("the error body for {what}"), body.as_bytes());
    }

    // The accepted alerts are readable.
    for id in &alert_ids {
        let r = c
            .get(url(&format!("/v1/alerts/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_clean("an alert read back over HTTP", &r.bytes().await.unwrap());
    }

    let status = d.terminate().await;
    let logs = d.logs();
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(
        logs.contains("DEBUG"),
        "RUST_LOG=debug did not take effect, the log check would prove nothing:\n{logs}"
    );
    assert!(
        logs.contains("alert refused"),
        "refusals are not logged:\n{logs}"
    );
    assert_clean("the daemon's stdout/stderr", logs.as_bytes());

    // The audit store: the export has the accepted alerts and no secret; nor do the raw files.
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"])
        .arg(root.join("data"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let export = text(&out.stdout);
    for id in &alert_ids {
        assert!(
            export
                .lines()
                .any(|l| serde_json::from_str::<Value>(l).unwrap()["alert_id"] == id.as_str()),
            "accepted alert {id} is not in the audit export"
        );
    }
    assert_clean("the audit export", export.as_bytes());
    assert_clean("the export's stderr", &out.stderr);
    let mut raw = Vec::new();
    for f in files(&root.join("data")) {
        let bytes = std::fs::read(&f).unwrap();
        assert_clean(&format!("store file {}", f.display()), &bytes);
        raw.extend(bytes);
    }
    // Control: the same byte search does find what the store holds in plain text.
    assert!(
        raw.windows(14).any(|w| w == b"secrets-bearer"),
        "the raw store scan cannot see stored strings"
    );
}

#[test]
fn config_problems_never_print_the_secret() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = write_config(
        root,
        "[ingest.tokens]\nsplunk = { env = \"CORDON_TEST_CANARY\" }\nsplunkk = { env = \"CORDON_TEST_CANARY\" }\nelastic = { sha256 = \"canary-wrong-9b2c-do-not-log\" }\n[log]\nformat = \"xml\"\n",
    );
    for sub in ["check", "serve"] {
        let mut c = cordon();
        c.arg(sub)
            .arg("--config")
            .arg(&cfg)
            .env("CORDON_TEST_CANARY", CANARY)
            .env("RUST_LOG", "debug");
        let out = run(c);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("ingest.tokens.splunkk"), "{stderr}");
        assert!(stderr.contains("ingest.tokens.elastic"), "{stderr}");
        assert_clean(&format!("cordon {sub} stderr"), &out.stderr);
        assert_clean(&format!("cordon {sub} stdout"), &out.stdout);
    }
}
