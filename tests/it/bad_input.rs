//! Bad input over real HTTP: every class of refused payload gets its status, its stable JSON
//! error code and the offending field names, and leaves the store exactly as it was (no audit
//! record, no case).

use serde_json::{Value, json};

use crate::support::{self, TestDaemon};

/// Store state a refused request must not change: the audit head and the case list.
async fn snapshot(d: &TestDaemon) -> (u64, Value) {
    let (s, cases) = d.get("/v1/cases").await;
    assert_eq!(s, 200, "{cases}");
    (d.head(), cases)
}

/// Starts a daemon that already holds one accepted alert, so "nothing changed" is checked
/// against a non-empty store.
async fn seeded(d: TestDaemon) -> TestDaemon {
    let ack = d.ingest_fixture("cordon", "cordon.json").await;
    assert_eq!(ack["duplicate"], json!(false));
    assert!(d.head() > 0);
    d
}

/// Sends `body` to `path` (with `auth` applied) and checks it is refused with `status`, `code`
/// and, when given, exactly `fields`; and that the store did not change.
async fn refused(
    d: &TestDaemon,
    path: &str,
    body: impl Into<reqwest::Body>,
    auth: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    status: u16,
    code: &str,
    fields: Option<&[&str]>,
) -> Value {
    let before = snapshot(d).await;
    let (s, err) = d.post_with(path, body, auth).await;
    assert_eq!(s, status, "{path}: {err}");
    assert_eq!(err["code"], json!(code), "{path}: {err}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: a message explains it: {err}"
    );
    match fields {
        Some(f) => assert_eq!(err["fields"], json!(f), "{path}: {err}"),
        None => assert!(err.get("fields").is_none(), "{path}: {err}"),
    }
    assert_eq!(
        snapshot(d).await,
        before,
        "{path}: a refused request changed the store"
    );
    err
}

fn none(r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    r
}

const ROUTES: [&str; 5] = [
    "/v1/alerts",
    "/v1/alerts/splunk",
    "/v1/alerts/elastic",
    "/v1/alerts/sentinel",
    "/v1/alerts/ocsf",
];

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&support::fixture(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let d = seeded(support::start().await).await;
    for route in ROUTES {
        refused(
            &d,
            route,
            support::fixture("bad/malformed.json"),
            none,
            400,
            "malformed_json",
            None,
        )
        .await;
    }
    // Not UTF-8, and empty.
    refused(
        &d,
        "/v1/alerts",
        vec![0xff, 0xfe, b'{', b'}'],
        none,
        400,
        "malformed_json",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts/elastic",
        Vec::<u8>::new(),
        none,
        400,
        "malformed_json",
        None,
    )
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_an_object_is_400() {
    let d = seeded(support::start().await).await;
    let cordon = fixture_json("cordon.json");
    let bodies = [
        json!([cordon]).to_string(),
        json!("an alert").to_string(),
        "42".to_string(),
        "null".to_string(),
    ];
    for body in bodies {
        for route in ROUTES {
            let err = refused(&d, route, body.clone(), none, 400, "malformed_json", None).await;
            assert!(
                err["message"].as_str().unwrap().contains("object"),
                "{route} {body}: {err}"
            );
        }
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_fields_are_all_named() {
    let d = seeded(support::start().await).await;
    refused(
        &d,
        "/v1/alerts/splunk",
        support::fixture("bad/splunk_missing_sid.json"),
        none,
        422,
        "missing_fields",
        Some(&["sid", "search_name"]),
    )
    .await;
    refused(
        &d,
        "/v1/alerts",
        "{}",
        none,
        422,
        "missing_fields",
        Some(&["source_alert_id", "title", "rule", "severity"]),
    )
    .await;
    let mut cordon = fixture_json("cordon.json");
    cordon["rule"].as_object_mut().unwrap().remove("id");
    cordon["title"] = json!("   ");
    refused(
        &d,
        "/v1/alerts",
        cordon.to_string(),
        none,
        422,
        "missing_fields",
        Some(&["title", "rule.id"]),
    )
    .await;
    refused(
        &d,
        "/v1/alerts/elastic",
        r#"{"host.name": "ws-042"}"#,
        none,
        422,
        "missing_fields",
        Some(&["kibana.alert.uuid", "kibana.alert.rule.name"]),
    )
    .await;
    let mut sentinel = fixture_json("sentinel.json");
    sentinel["object"].as_object_mut().unwrap().remove("name");
    sentinel["object"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("severity");
    refused(
        &d,
        "/v1/alerts/sentinel",
        sentinel.to_string(),
        none,
        422,
        "missing_fields",
        Some(&["object.name", "object.properties.severity"]),
    )
    .await;
    refused(
        &d,
        "/v1/alerts/ocsf",
        r#"{"class_uid": 2004, "finding_info": {"title": ""}}"#,
        none,
        422,
        "missing_fields",
        Some(&["finding_info.uid", "finding_info.title"]),
    )
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_field_in_cordon_format_is_422() {
    let d = seeded(support::start().await).await;
    refused(
        &d,
        "/v1/alerts",
        support::fixture("bad/cordon_unknown_field.json"),
        none,
        422,
        "unknown_field",
        Some(&["severty"]),
    )
    .await;
    let mut nested = fixture_json("cordon.json");
    nested["entities"][2]["type"] = json!("ip");
    refused(
        &d,
        "/v1/alerts",
        nested.to_string(),
        none,
        422,
        "unknown_field",
        Some(&["entities[2].type"]),
    )
    .await;
    // The vendor formats are lenient about extra fields: the same typo there is accepted.
    let mut elastic = fixture_json("elastic.json");
    elastic["severty"] = json!("critical");
    let (s, ack) = d.post("/v1/alerts/elastic", elastic.to_string()).await;
    assert_eq!(s, 202, "{ack}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_field_values_are_422() {
    let d = seeded(support::start().await).await;
    let mut cordon = fixture_json("cordon.json");
    cordon["severity"] = json!("extreme");
    refused(
        &d,
        "/v1/alerts",
        cordon.to_string(),
        none,
        422,
        "invalid_field",
        Some(&["severity"]),
    )
    .await;
    let mut cordon = fixture_json("cordon.json");
    cordon["entities"][2]["value"] = json!("10.20.44.300");
    refused(
        &d,
        "/v1/alerts",
        cordon.to_string(),
        none,
        422,
        "invalid_field",
        Some(&["entities[2].value"]),
    )
    .await;
    let mut cordon = fixture_json("cordon.json");
    cordon["confidence"] = json!(101);
    refused(
        &d,
        "/v1/alerts",
        cordon.to_string(),
        none,
        422,
        "invalid_field",
        Some(&["confidence"]),
    )
    .await;
    refused(
        &d,
        "/v1/alerts/ocsf",
        support::fixture("bad/ocsf_wrong_class.json"),
        none,
        422,
        "invalid_field",
        Some(&["class_uid"]),
    )
    .await;
    let mut sentinel = fixture_json("sentinel.json");
    sentinel["object"]["properties"]["severity"] = json!("Extreme");
    refused(
        &d,
        "/v1/alerts/sentinel",
        sentinel.to_string(),
        none,
        422,
        "invalid_field",
        Some(&["object.properties.severity"]),
    )
    .await;
    let mut splunk = fixture_json("splunk.json");
    splunk["result"]["_time"] = json!("last tuesday");
    refused(
        &d,
        "/v1/alerts/splunk",
        splunk.to_string(),
        none,
        422,
        "invalid_field",
        Some(&["result._time"]),
    )
    .await;
    assert_eq!(d.stop().await, 0);
}

/// A cordon-format alert padded with a description to exactly `len` bytes.
fn cordon_of_len(id: &str, len: usize) -> String {
    let mut v = json!({"source_alert_id": id, "title": "padded", "rule": {"id": "pad", "name": "Padded"}, "severity": "low", "description": ""});
    let base = v.to_string().len();
    v["description"] = json!("x".repeat(len - base));
    let s = v.to_string();
    assert_eq!(s.len(), len);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let d = seeded(support::start_with(|cfg, _| cfg.http.max_body_bytes = 4096).await).await;
    refused(
        &d,
        "/v1/alerts",
        cordon_of_len("big-1", 10 * 1024),
        none,
        413,
        "body_too_large",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts",
        cordon_of_len("big-2", 4097),
        none,
        413,
        "body_too_large",
        None,
    )
    .await;
    let mut elastic = fixture_json("elastic.json");
    elastic["padding"] = json!("y".repeat(10 * 1024));
    refused(
        &d,
        "/v1/alerts/elastic",
        elastic.to_string(),
        none,
        413,
        "body_too_large",
        None,
    )
    .await;
    // At the limit it is accepted: the limit is the configured one, not a refusal of everything.
    let (s, ack) = d.post("/v1/alerts", cordon_of_len("fits", 4096)).await;
    assert_eq!(s, 202, "{ack}");
    assert_eq!(d.stop().await, 0);
}

const TOKEN: &str = "s3cret-splunk-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_401() {
    let d = support::start_with(|cfg, _| {
        cfg.ingest
            .tokens
            .insert("splunk".into(), crate::support::sha_ref(TOKEN));
    })
    .await;
    let d = seeded(d).await;
    let body = || support::fixture("splunk.json");
    refused(
        &d,
        "/v1/alerts/splunk",
        body(),
        none,
        401,
        "unauthorized",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts/splunk",
        body(),
        |r| r.bearer_auth("s3cret-splunk-tokeN"),
        401,
        "unauthorized",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts/splunk?token=s3cret",
        body(),
        none,
        401,
        "unauthorized",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts/splunk",
        body(),
        |r| r.header("authorization", format!("Basic {TOKEN}")),
        401,
        "unauthorized",
        None,
    )
    .await;
    // The token is checked before the body: a bad body without a token is still a 401.
    refused(
        &d,
        "/v1/alerts/splunk",
        "not json",
        none,
        401,
        "unauthorized",
        None,
    )
    .await;
    // The right token is let in.
    let (s, ack) = d
        .post_with("/v1/alerts/splunk", body(), |r| r.bearer_auth(TOKEN))
        .await;
    assert_eq!(s, 202, "{ack}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_format_is_404() {
    let d = seeded(support::start().await).await;
    let err = refused(
        &d,
        "/v1/alerts/arcsight",
        support::fixture("cordon.json"),
        none,
        404,
        "unknown_format",
        None,
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("arcsight"),
        "{err}"
    );
    // cordon's own format has no named route.
    refused(
        &d,
        "/v1/alerts/cordon",
        support::fixture("cordon.json"),
        none,
        404,
        "unknown_format",
        None,
    )
    .await;
    refused(
        &d,
        "/v1/alerts/Splunk",
        support::fixture("splunk.json"),
        none,
        404,
        "unknown_format",
        None,
    )
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_bad_inputs_then_one_good_yields_one_case() {
    let d = support::start_with(|cfg, _| cfg.http.max_body_bytes = 4096).await;
    assert_eq!(d.head(), 0);
    let mut unknown = fixture_json("cordon.json");
    unknown["extra"] = json!(1);
    let mut bad_severity = fixture_json("cordon.json");
    bad_severity["severity"] = json!("extreme");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("/v1/alerts", support::fixture("bad/malformed.json")),
        (
            "/v1/alerts",
            support::fixture("bad/cordon_unknown_field.json"),
        ),
        ("/v1/alerts", unknown.to_string().into_bytes()),
        ("/v1/alerts", bad_severity.to_string().into_bytes()),
        ("/v1/alerts", b"[]".to_vec()),
        ("/v1/alerts", cordon_of_len("big", 8192).into_bytes()),
        (
            "/v1/alerts/splunk",
            support::fixture("bad/splunk_missing_sid.json"),
        ),
        (
            "/v1/alerts/ocsf",
            support::fixture("bad/ocsf_wrong_class.json"),
        ),
        ("/v1/alerts/arcsight", support::fixture("cordon.json")),
        ("/v1/alerts/elastic", b"{\"kibana.alert.uuid\": 5".to_vec()),
    ];
    // Concurrently, several times over: the engine sees none of it.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for (path, body) in &bad {
            let url = format!("{}{path}", d.base);
            let (client, body) = (d.client.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                client
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!((400..500).contains(&s), "a bad input was answered {s}");
    }
    assert_eq!(d.head(), 0, "bad input wrote audit records");
    let (_, cases) = d.get("/v1/cases").await;
    assert_eq!(cases["cases"], json!([]));

    let ack = d.ingest_fixture("cordon", "cordon.json").await;
    let (_, cases) = d.get("/v1/cases").await;
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "{cases:?}");
    assert_eq!(cases[0]["case_id"], ack["case_id"]);
    assert_eq!(cases[0]["alert_ids"], json!([ack["alert_id"]]));
    let received: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "alert_received")
        .collect();
    assert_eq!(received.len(), 1, "only the good alert is in the audit log");
    assert_eq!(
        received[0].body.alert_id.as_ref(),
        ack["alert_id"].as_str().map(String::from).as_ref()
    );
    assert_eq!(d.stop().await, 0);
}
