//! The checks behind cordon's fuzz targets (one `fuzz_targets/<name>.rs` each, see FUZZING.md).
//!
//! Owns: nothing of the daemon. Each function feeds raw bytes to the same public entry the
//! daemon calls on untrusted input (HTTP bodies, chat callbacks, operator files, stored bytes)
//! and asserts what the caller relies on. A panic, an overflow (debug assertions are on) or a
//! failed assertion is a finding. Pure: no network, no files except the shipped connectors read
//! once at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, TimeZone, Utc};
use cordon::alert::AlertFields;
use cordon::chat::mattermost::{self, Mattermost};
use cordon::chat::slack::{self, Slack};
use cordon::chat::teams::{self, Teams};
use cordon::config::parse_toml_str;
use cordon::connector::spec::ConnectorFile;
use cordon::connector::{Mode, Registry};
use cordon::ingest::IngestFormat;
use cordon::ingest::mapped::{self, SourceMapping};
use cordon::secret::Secret;
use cordon::store::{self, AuditBody, Head};
use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

/// The receive time every target uses (a payload without an event time gets this one).
fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One ingest payload through [`IngestFormat::parse`], as `POST /v1/alerts[/<format>]` does.
/// An accepted alert must serialize, read back equal (the store keeps it as JSON) and yield its
/// derived keys.
pub fn ingest(format: IngestFormat, data: &[u8]) {
    let Ok(fields) = format.parse(data, received_at()) else {
        return;
    };
    let bytes = serde_json::to_vec(&fields).expect("an accepted alert serializes");
    let back: AlertFields = serde_json::from_slice(&bytes).expect("a stored alert reads back");
    assert_eq!(back, fields, "a stored alert reads back unchanged");
    let _ = fields.fingerprint();
    let _ = fields.correlation_key();
    let _ = fields.primary_entity();
}

/// One connector file: TOML parse, then the validation `Registry::load` runs. The mode is
/// forced to dry run so no secret is resolved and no client is built (that is I/O, not parsing).
pub fn connector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut cf) = parse_toml_str::<ConnectorFile>("fuzz.toml", text) else {
        return;
    };
    cf.mode = Mode::DryRun;
    let _ = cordon::connector::validate("fuzz.toml", "fuzz", cf);
}

fn shipped_connectors() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Registry::load(&repo().join("connectors")).0)
}

fn shipped_mappings() -> &'static BTreeMap<String, SourceMapping> {
    static MAPS: OnceLock<BTreeMap<String, SourceMapping>> = OnceLock::new();
    MAPS.get_or_init(|| {
        let (maps, problems) = mapped::load_dir(&repo().join("sources"));
        assert!(
            problems.is_empty(),
            "the shipped mappings load: {problems:?}"
        );
        maps
    })
}

/// One body to a mapped source (`POST /v1/alerts/<source>`): split into alerts as the HTTP
/// handler does (the first byte says whether it was declared NDJSON), then each part through
/// every shipped mapping. An accepted alert must serialize and read back equal.
pub fn mapped_body(data: &[u8]) {
    let Some((flag, body)) = data.split_first() else {
        return;
    };
    let Ok((_, parts)) = mapped::split_body(body, flag & 1 == 1, 1000) else {
        return;
    };
    for part in parts {
        for m in shipped_mappings().values() {
            let Ok(fields) = m.parse_value(&part.value, received_at()) else {
                continue;
            };
            let bytes = serde_json::to_vec(&fields).expect("an accepted alert serializes");
            let back: AlertFields =
                serde_json::from_slice(&bytes).expect("a stored alert reads back");
            assert_eq!(back, fields, "a stored alert reads back unchanged");
        }
    }
}

/// One source mapping file (`sources/<name>.toml`): parse and validate, as `cordon check` and
/// the daemon's start do; a mapping that loads then maps the shipped samples without panicking.
pub fn source_mapping(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = mapped::parse("fuzz.toml", "fuzz_source", text, &repo().join("sources")) else {
        return;
    };
    for name in ["qradar", "wazuh", "suricata"] {
        if let Ok(body) = std::fs::read(repo().join(format!("sources/samples/{name}.json"))) {
            let _ = m.parse(&body, received_at());
        }
    }
}

fn sample_alerts() -> &'static [(IngestFormat, AlertFields)] {
    static ALERTS: OnceLock<Vec<(IngestFormat, AlertFields)>> = OnceLock::new();
    ALERTS.get_or_init(|| {
        IngestFormat::ALL
            .into_iter()
            .filter_map(|f| {
                let body = std::fs::read(repo().join(format!("tests/fixtures/{f}.json"))).ok()?;
                Some((f, f.parse(&body, received_at()).ok()?))
            })
            .collect()
    })
}

/// One playbook file against the shipped connectors; a valid one is matched against the
/// fixture alerts and proposes its steps, as the engine does for each new case.
pub fn playbook(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pb) = cordon::playbook::parse("fuzz.toml", "fuzz".into(), text, shipped_connectors())
    else {
        return;
    };
    for (format, alert) in sample_alerts() {
        if pb.matcher.matches(*format, alert) {
            let _ = pb.propose("case-1", alert);
        }
    }
}

/// Splits `data` into two header lines and a body (missing lines are empty headers).
fn headers_and_body(data: &[u8]) -> (Option<&str>, Option<&str>, &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let a = parts.next().and_then(|l| std::str::from_utf8(l).ok());
    let b = parts.next().and_then(|l| std::str::from_utf8(l).ok());
    (a, b, parts.next().unwrap_or_default())
}

/// The Slack signing secret of the seed corpus (FUZZING.md says how the seeds are signed).
pub const SLACK_SECRET: &str = "fuzz-slack-signing-secret";
/// "Now" for the Slack replay window: the seeds carry this timestamp.
pub const SLACK_NOW: i64 = 1_767_225_600;

/// A Slack callback: `<X-Slack-Request-Timestamp>\n<X-Slack-Signature>\n<body>`. The signature
/// check runs over the body as the handler runs it, then the interaction parser (on every body,
/// since the fuzzer cannot sign).
pub fn chat_slack(data: &[u8]) {
    static SLACK: OnceLock<Slack> = OnceLock::new();
    let s = SLACK.get_or_init(|| Slack {
        api_base: "http://127.0.0.1:9".into(),
        bot_token: Secret::new("xoxb-fuzz".into()),
        signing_secret: Secret::new(SLACK_SECRET.into()),
        team_id: None,
    });
    let (ts, sig, body) = headers_and_body(data);
    let _ = s.verify(ts, sig, body, SLACK_NOW);
    if let Ok(i) = slack::parse_interaction(body) {
        assert!(!i.approval_id.is_empty() && !i.user.is_empty());
        assert!(i.decision == "approve" || i.decision == "deny");
    }
}

/// The Mattermost callback secret of the seed corpus.
pub const MATTERMOST_SECRET: &str = "fuzz-mattermost-callback-secret";

/// A Mattermost button callback body: parsed, then its token checked, as the handler does.
pub fn chat_mattermost(data: &[u8]) {
    static MM: OnceLock<Mattermost> = OnceLock::new();
    let m = MM.get_or_init(|| Mattermost {
        url: "http://127.0.0.1:9".into(),
        bot_token: Secret::new("fuzz".into()),
        callback_secret: Secret::new(MATTERMOST_SECRET.into()),
        action_url: "http://127.0.0.1:9/v1/chat/mattermost/actions".into(),
    });
    if let Ok(c) = mattermost::parse_click(data) {
        assert!(c.decision == "approve" || c.decision == "deny");
        let _ = m.verify_token(&c.approval_id, &c.token);
    }
}

/// The key id of the one signing key the Teams target trusts.
pub const TEAMS_KID: &str = "cordon-fuzz-kid";
/// A fixed RSA-2048 public key (modulus, base64url); the fuzzer cannot sign with it, so token
/// parsing and signature checking are what is exercised.
const TEAMS_N: &str = "13Bk_mWHEZdzbEQeDr2rmc9pHpXjLsk1bLgtyngfIoBJ00vaps6nMLlBCd-7fQKuAU54evm5oTAVbeURaIyleU4f18JDkfdc1g82me2gp4r4lDlexizJx9RW7LAR-fwDtMKiwMb9Deai0_p0XmW9brzlUMJNZjVPPWWyPuiSQGwOdurcjVmBHfQVq3W-9ciRY7LFv9xYMrDS57O8d_pBKHf72ydsJnF-olaTShqLdrNpze4kt8zitxMrsijlUlh7bnTGubCmJjP8iJZrCj9Y8inSkdl4kfqEJ_49YqyI3PTVJMrqOtCVTZG3riC-PgqBZj04Tt7boZF-iG721sorfw";

/// Polls a future that must finish without waiting (Teams verification with configured keys
/// and no JWKS URL never awaits anything that is pending).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("teams verification waited on something"),
    }
}

/// A Teams activity: `<Authorization header>\n<body>`. The bearer token is verified against a
/// fixed key, then the body is parsed as an invoke, as the handler does (the parser runs on
/// every body, since the fuzzer cannot sign).
pub fn chat_teams(data: &[u8]) {
    static TEAMS: OnceLock<(Teams, reqwest::Client)> = OnceLock::new();
    let (t, http) = TEAMS.get_or_init(|| {
        let keys: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": TEAMS_KID, "n": TEAMS_N, "e": "AQAB"}
        ]}))
        .expect("a valid JWKS");
        let t = Teams::new(
            "fuzz-app-id".into(),
            Secret::new("fuzz".into()),
            "http://127.0.0.1:9/token".into(),
            "http://127.0.0.1:9/".into(),
            "https://api.botframework.com".into(),
            None,
            Some("fuzz-tenant".into()),
            keys,
        );
        (t, reqwest::Client::new())
    });
    let mut parts = data.splitn(2, |b| *b == b'\n');
    let auth = parts.next().and_then(|l| std::str::from_utf8(l).ok());
    let body = parts.next().unwrap_or_default();
    let activity: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let _ = now_or_never(t.verify(http, auth, &activity));
    let _ = t.check_origin(&activity);
    if let Ok(i) = teams::parse_invoke(&activity) {
        assert!(!i.approval_id.is_empty() && !i.user.is_empty());
    }
}

/// Stored bytes: the first byte picks what they are read as (an audit chunk under key
/// `a/<seq>`, the chain head, an audit body, a case, an action request), the rest is the value.
/// Decoded audit records must serialize again (`cordon audit export` writes them).
pub fn store_records(data: &[u8]) {
    let Some((&pick, v)) = data.split_first() else {
        return;
    };
    let key = b"fuzz";
    match pick % 5 {
        0 => {
            let seq = u64::from(pick / 5) + 1;
            if let Ok(records) = store::decode_audit_chunk(&store::audit_key(seq), v) {
                for r in records {
                    serde_json::to_vec(&r).expect("a decoded audit record serializes");
                }
            }
        }
        1 => {
            let _ = store::decode::<Head>(key, v);
        }
        2 => {
            let _ = store::decode::<AuditBody>(key, v);
        }
        3 => {
            let _ = store::decode::<cordon::case::Case>(key, v);
        }
        _ => {
            let _ = store::decode::<cordon::action::ActionRequest>(key, v);
        }
    }
}
