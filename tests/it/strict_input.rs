//! Ambiguous or hostile input that a lenient parser would resolve silently: more than one
//! credential, `?token=` where it is not configured, duplicate JSON keys, bodies that cannot be
//! read, methods an endpoint does not take, and ids long enough to blow up an error message.
//! Each is refused with a stable JSON code (or gRPC status) and records nothing.

use std::time::Duration;

use cordon::api::pb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::support::{self, TestDaemon};

const ROUTES: [(&str, &str, &str); 5] = [
    ("cordon", "/v1/alerts", "cordon.json"),
    ("splunk", "/v1/alerts/splunk", "splunk.json"),
    ("elastic", "/v1/alerts/elastic", "elastic.json"),
    ("sentinel", "/v1/alerts/sentinel", "sentinel.json"),
    ("ocsf", "/v1/alerts/ocsf", "ocsf.json"),
];

fn token_of(source: &str) -> String {
    format!("{source}-ingest-token")
}

const ADMIN: &str = "operator-admin-token";

/// A daemon with a token for every source, an admin token and an approver token for alice.
async fn start_with_tokens(query_token_sources: Option<&[&str]>) -> TestDaemon {
    support::start_with(|cfg, _| {
        for (source, _, _) in ROUTES {
            cfg.ingest
                .tokens
                .insert(source.into(), support::sha_ref(&token_of(source)));
        }
        if let Some(q) = query_token_sources {
            cfg.ingest.query_token_sources = q.iter().map(|s| s.to_string()).collect();
        }
        cfg.http.admin_token = Some(support::sha_ref(ADMIN));
        cfg.grpc.approvers = support::approvers(&["alice"]);
    })
    .await
}

/// Posts and checks the refusal: status, code, a message, and no audit record written.
async fn refused(
    d: &TestDaemon,
    what: &str,
    rb: reqwest::RequestBuilder,
    status: u16,
    code: &str,
) -> Value {
    let before = d.head();
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(body["code"], json!(code), "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert_eq!(d.head(), before, "{what}: a refused request was recorded");
    body
}

async fn accepted(what: &str, rb: reqwest::RequestBuilder) -> Value {
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(s, 202, "{what}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_one_credential_is_refused_on_every_ingest_endpoint() {
    let d = start_with_tokens(None).await;
    let c = &d.client;
    for (source, route, fixture) in ROUTES {
        let url = format!("{}{route}", d.base);
        let good = token_of(source);
        let body = || support::fixture(fixture);
        // The valid token first or second: either way the request is refused.
        for (a, b) in [(good.as_str(), "wrong"), ("wrong", good.as_str())] {
            refused(
                &d,
                &format!("{source}: two Authorization headers"),
                c.post(&url)
                    .header("authorization", format!("Bearer {a}"))
                    .header("authorization", format!("Bearer {b}"))
                    .body(body()),
                401,
                "ambiguous_credentials",
            )
            .await;
        }
        // The same valid token twice is still two credentials.
        refused(
            &d,
            &format!("{source}: the valid header twice"),
            c.post(&url)
                .header("authorization", format!("Bearer {good}"))
                .header("authorization", format!("Bearer {good}"))
                .body(body()),
            401,
            "ambiguous_credentials",
        )
        .await;
        // A header and a ?token= together.
        refused(
            &d,
            &format!("{source}: header and ?token="),
            c.post(format!("{url}?token=wrong"))
                .bearer_auth(&good)
                .body(body()),
            401,
            "ambiguous_credentials",
        )
        .await;
    }
    // Splunk takes ?token=, but only one.
    let splunk = token_of("splunk");
    refused(
        &d,
        "splunk: two ?token=",
        c.post(format!(
            "{}/v1/alerts/splunk?token={splunk}&token=wrong",
            d.base
        ))
        .body(support::fixture("splunk.json")),
        401,
        "ambiguous_credentials",
    )
    .await;
    // One credential is let in, for every source.
    for (source, route, fixture) in ROUTES {
        accepted(
            source,
            c.post(format!("{}{route}", d.base))
                .bearer_auth(token_of(source))
                .body(support::fixture(fixture)),
        )
        .await;
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_only_on_the_sources_configured_for_it() {
    // Default: Splunk only.
    let d = start_with_tokens(None).await;
    let c = &d.client;
    for (source, route, fixture) in ROUTES {
        let rb = c
            .post(format!("{}{route}?token={}", d.base, token_of(source)))
            .body(support::fixture(fixture));
        if source == "splunk" {
            accepted(source, rb).await;
        } else {
            let err = refused(&d, source, rb, 401, "query_token_not_allowed").await;
            assert!(
                !err["message"].as_str().unwrap().contains(&token_of(source)),
                "{err}"
            );
        }
    }
    // Operator endpoints take the admin token in the header only, and one of it.
    for (what, rb) in [
        (
            "admin ?token=",
            d.client.get(format!("{}/v1/cases?token={ADMIN}", d.base)),
        ),
        (
            "admin reload ?token=",
            d.client
                .post(format!("{}/v1/policies/reload?token={ADMIN}", d.base)),
        ),
    ] {
        refused(&d, what, rb, 401, "query_token_not_allowed").await;
    }
    refused(
        &d,
        "admin: two headers",
        d.client
            .get(format!("{}/v1/cases", d.base))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("authorization", "Bearer wrong"),
        401,
        "ambiguous_credentials",
    )
    .await;
    let r = d
        .client
        .get(format!("{}/v1/cases", d.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(d.stop().await, 0);

    // Configured otherwise: Elastic takes ?token=, Splunk no longer does.
    let d = start_with_tokens(Some(&["elastic"])).await;
    accepted(
        "elastic ?token=",
        d.client
            .post(format!(
                "{}/v1/alerts/elastic?token={}",
                d.base,
                token_of("elastic")
            ))
            .body(support::fixture("elastic.json")),
    )
    .await;
    refused(
        &d,
        "splunk ?token= not configured",
        d.client
            .post(format!(
                "{}/v1/alerts/splunk?token={}",
                d.base,
                token_of("splunk")
            ))
            .body(support::fixture("splunk.json")),
        401,
        "query_token_not_allowed",
    )
    .await;
    assert_eq!(d.stop().await, 0);
}

#[test]
fn an_unknown_query_token_source_is_a_config_problem() {
    let (_, mut cfg) = support::workspace();
    cfg.ingest.query_token_sources = vec!["splunk".into(), "splunkk".into()];
    // A well-spelled name may be a mapped source: known once `sources_dir` is loaded.
    let problems = cordon::daemon::validate(cfg, "c.toml")
        .err()
        .unwrap_or_default();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "ingest.query_token_sources[1]"),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_more_than_one_authorization_entry() {
    let d = start_with_tokens(None).await;
    // No token on the channel: each request carries its own metadata.
    let mut c = d.grpc(None).await;
    for pair in [
        ["Bearer alice-token", "Bearer wrong"],
        ["Bearer wrong", "Bearer alice-token"],
        ["Bearer alice-token", "Bearer alice-token"],
    ] {
        let mut req = tonic::Request::new(pb::ListPendingRequest::default());
        for v in pair {
            req.metadata_mut()
                .append("authorization", v.parse().unwrap());
        }
        let err = c.approvals.list_pending(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{pair:?}: {err:?}");
        assert!(err.message().contains("ambiguous"), "{err:?}");
    }
    // One is let in.
    let mut req = tonic::Request::new(pb::ListPendingRequest::default());
    req.metadata_mut()
        .append("authorization", "Bearer alice-token".parse().unwrap());
    c.approvals.list_pending(req).await.expect("one credential");
    assert_eq!(d.stop().await, 0);
}

/// `fixture` with `"dup": 1, "dup": 2` (or `extra`) added at the start of its top-level object.
fn with_leading(fixture: &str, extra: &str) -> String {
    let text = String::from_utf8(support::fixture(fixture)).unwrap();
    let i = text.find('{').unwrap();
    format!("{}{{{extra},{}", &text[..i], &text[i + 1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_are_refused_at_any_depth() {
    let d = support::start().await;
    let c = &d.client;
    let ocsf = String::from_utf8(support::fixture("ocsf.json")).unwrap();
    assert!(ocsf.contains("\"class_uid\": 2004,"));
    // Another class first, then 2004: a last-wins parser sees a Detection Finding, a first-wins
    // SIEM saw something else.
    let differential = ocsf.replace(
        "\"class_uid\": 2004,",
        "\"class_uid\": 9999, \"class_uid\": 2004,",
    );
    let err = refused(
        &d,
        "ocsf class_uid twice",
        c.post(format!("{}/v1/alerts/ocsf", d.base))
            .body(differential),
        400,
        "duplicate_key",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("class_uid"),
        "{err}"
    );
    // Nested.
    assert!(ocsf.contains("\"metadata\": {"));
    let nested = ocsf.replace("\"metadata\": {", "\"metadata\": {\"uid\": \"forged\",");
    let err = refused(
        &d,
        "ocsf metadata.uid twice",
        c.post(format!("{}/v1/alerts/ocsf", d.base)).body(nested),
        400,
        "duplicate_key",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("uid"), "{err}");
    // Every format.
    for (source, route, fixture) in ROUTES {
        refused(
            &d,
            source,
            c.post(format!("{}{route}", d.base))
                .body(with_leading(fixture, "\"dup\": 1, \"dup\": 2")),
            400,
            "duplicate_key",
        )
        .await;
    }
    // gRPC SubmitAlert parses the same way.
    let mut g = d.grpc(None).await;
    let err = g
        .alerts
        .submit_alert(pb::SubmitAlertRequest {
            format: "ocsf".into(),
            payload: ocsf
                .replace(
                    "\"class_uid\": 2004,",
                    "\"class_uid\": 9999, \"class_uid\": 2004,",
                )
                .into_bytes(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("duplicate key"), "{err:?}");
    // The same payloads without duplicates are accepted.
    for (source, route, fixture) in ROUTES {
        accepted(
            source,
            c.post(format!("{}{route}", d.base))
                .body(support::fixture(fixture)),
        )
        .await;
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths_answer_a_json_code() {
    let d = support::start().await;
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/alerts", "POST"),
        (reqwest::Method::DELETE, "/v1/cases/x", "GET"),
        (reqwest::Method::GET, "/v1/policies/reload", "POST"),
        (reqwest::Method::PATCH, "/v1/alerts/splunk", "POST"),
    ] {
        let r = d
            .client
            .request(method.clone(), format!("{}{path}", d.base))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let allowed = r.headers()["allow"].to_str().unwrap().to_string();
        assert!(allowed.contains(allow), "{method} {path}: Allow: {allowed}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["code"],
            json!("method_not_allowed"),
            "{method} {path}: {body}"
        );
        assert!(body["message"].is_string(), "{body}");
    }
    for path in ["/nope", "/v1/alerts/splunk/extra", "/v1/chat/slack/x/y"] {
        let (s, body) = d.get(path).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert_eq!(body["code"], json!("not_found"), "{path}: {body}");
    }
    // A path segment that is not UTF-8 once decoded.
    for path in ["/v1/cases/%FF", "/v1/actions/a%C3", "/v1/alerts/%FE%FF"] {
        let (s, body) = d.get(path).await;
        assert_eq!(s, 400, "{path}: {body}");
        assert_eq!(body["code"], json!("malformed_path"), "{path}: {body}");
    }
    let (s, body) = d.post("/v1/alerts/%FF", "{}").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["code"], json!("malformed_path"), "{body}");
    assert_eq!(d.stop().await, 0);
}

/// Sends `request` as raw bytes and returns the status and the JSON body of the answer.
async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the daemon answers and closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(text.clone())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_400_not_413() {
    let d = support::start().await;
    let addr = d.running().http_addr;
    let before = d.head();
    for path in ["/v1/alerts", "/v1/alerts/ocsf"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        );
        let (s, body) = raw_http(addr, req.as_bytes()).await;
        assert_eq!(s, 400, "{path}: {body}");
        assert_eq!(body["code"], json!("malformed_body"), "{path}: {body}");
    }
    // Over the limit is still 413, chunked or not.
    let big = "x".repeat(d.config.http.max_body_bytes + 10);
    let req = format!(
        "POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (s, body) = raw_http(addr, req.as_bytes()).await;
    assert_eq!(s, 413, "{body}");
    assert_eq!(body["code"], json!("body_too_large"), "{body}");
    assert_eq!(d.head(), before);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_clip_what_they_echo() {
    let d = support::start().await;
    // URIs are capped at 64 KiB by the client: 50,000 bytes of id in the path.
    let long = "A".repeat(50_000);
    for path in [
        format!("/v1/cases/{long}"),
        format!("/v1/actions/{long}"),
        format!("/v1/alerts/{long}"),
    ] {
        let r = d
            .client
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "GET {}", &path[..20]);
        let text = r.text().await.unwrap();
        assert!(text.len() < 2048, "{} bytes: {}", text.len(), &text[..200]);
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["code"], json!("not_found"), "{body}");
        assert!(
            body["message"].as_str().unwrap().ends_with(" bytes)"),
            "the original length is named: {body}"
        );
    }
    let r = d
        .client
        .post(format!("{}/v1/alerts/{long}", d.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().len() < 2048);
    // An unknown key of 100 KB: named, clipped, in `message` and `fields`.
    let long = "A".repeat(100_000);
    let body = with_leading("cordon.json", &format!("\"{long}\": 1"));
    let err = refused(
        &d,
        "long unknown key",
        d.client.post(format!("{}/v1/alerts", d.base)).body(body),
        422,
        "unknown_field",
    )
    .await;
    assert!(err.to_string().len() < 2048, "{}", err.to_string().len());
    assert!(
        err["fields"][0].as_str().unwrap().starts_with("AAAA"),
        "{err}"
    );
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_clip_what_they_echo() {
    let d = start_with_tokens(None).await;
    let mut c = d.grpc_as("alice").await;
    let long = "B".repeat(100_000);
    let err = c
        .approvals
        .get_approval(pb::GetApprovalRequest {
            approval_id: long.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{:?}", err.code());
    assert!(err.message().len() < 2048, "{}", err.message().len());
    assert!(
        err.message().starts_with("no approval request BBB"),
        "{}",
        err.message()
    );
    let err = c
        .cases
        .get_case(pb::GetCaseRequest {
            case_id: long.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{:?}", err.code());
    assert!(err.message().len() < 2048, "{}", err.message().len());
    let err = c
        .approvals
        .approve(pb::VoteRequest {
            approval_id: long.clone(),
            request_hash: long.clone(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{:?}", err.code());
    assert!(err.message().len() < 2048, "{}", err.message().len());
    let mut ingest = d.grpc(None).await;
    let err = ingest
        .alerts
        .submit_alert(pb::SubmitAlertRequest {
            format: long.clone(),
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{:?}", err.code());
    assert!(err.message().len() < 2048, "{}", err.message().len());
    assert_eq!(d.stop().await, 0);
}
