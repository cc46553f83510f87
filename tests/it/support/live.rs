//! Harness for executor tests: the seven fake vendors on loopback, the shipped connector files
//! rewritten to `live` mode against them (secrets in files, short retry delays), and helpers to
//! drive an alert through approval to a finished action.

#![allow(dead_code)]

use std::path::Path;

use cordon::config::Config;
use serde_json::{Value, json};

use crate::support::fakes::crowdstrike::FakeCrowdStrike;
use crate::support::fakes::defender::FakeDefender;
use crate::support::fakes::entra::FakeEntra;
use crate::support::fakes::jira::FakeJira;
use crate::support::fakes::okta::FakeOkta;
use crate::support::fakes::thehive::FakeTheHive;
use crate::support::fakes::webhook::FakeWebhook;
use crate::support::{self, TestDaemon};

pub const TENANT: &str = "tenant-1";
pub const CS_ID: &str = "cs-client";
pub const CS_SECRET: &str = "cs-secret-value-1";
pub const MDE_ID: &str = "mde-client";
pub const MDE_SECRET: &str = "mde-secret-value-2";
pub const ENTRA_ID: &str = "entra-client";
pub const ENTRA_SECRET: &str = "entra-secret-value-3";
pub const OKTA_TOKEN: &str = "okta-api-token-4";
pub const JIRA_EMAIL: &str = "soc-automation@example.com";
pub const JIRA_TOKEN: &str = "jira-api-token-5";
pub const HIVE_KEY: &str = "hive-api-key-6";
pub const HOOK_TOKEN: &str = "hook-token-7";

/// (connector name, fake URL, secrets by the env var name the shipped file references)
type Wiring = Vec<(&'static str, String, Vec<(&'static str, &'static str)>)>;

pub struct Vendors {
    pub cs: FakeCrowdStrike,
    pub mde: FakeDefender,
    pub okta: FakeOkta,
    pub entra: FakeEntra,
    pub jira: FakeJira,
    pub hive: FakeTheHive,
    pub hook: FakeWebhook,
}

impl Vendors {
    pub async fn start() -> Vendors {
        let v = Vendors {
            cs: FakeCrowdStrike::start(CS_ID, CS_SECRET).await,
            mde: FakeDefender::start(TENANT, MDE_ID, MDE_SECRET).await,
            okta: FakeOkta::start(OKTA_TOKEN).await,
            entra: FakeEntra::start(TENANT, ENTRA_ID, ENTRA_SECRET).await,
            jira: FakeJira::start(JIRA_EMAIL, JIRA_TOKEN).await,
            hive: FakeTheHive::start(HIVE_KEY).await,
            hook: FakeWebhook::start(HOOK_TOKEN).await,
        };
        v.jira.add_project("SEC");
        v
    }

    /// Every request any fake received so far (reads and token requests included).
    pub fn requests(&self) -> usize {
        self.cs.log().count()
            + self.mde.log().count()
            + self.okta.log().count()
            + self.entra.log().count()
            + self.jira.log().count()
            + self.hive.log().count()
            + self.hook.log().count()
    }

    /// Disarms every fault armed at any fake.
    pub fn disarm_all(&self) {
        for f in [
            self.cs.faults(),
            self.mde.faults(),
            self.okta.faults(),
            self.entra.faults(),
            self.jira.faults(),
            self.hive.faults(),
            self.hook.faults(),
        ] {
            f.disarm_all();
        }
    }

    fn wiring(&self) -> Wiring {
        vec![
            (
                "crowdstrike",
                self.cs.url(),
                vec![
                    ("CORDON_CROWDSTRIKE_CLIENT_ID", CS_ID),
                    ("CORDON_CROWDSTRIKE_CLIENT_SECRET", CS_SECRET),
                ],
            ),
            (
                "defender",
                self.mde.url(),
                vec![
                    ("CORDON_DEFENDER_CLIENT_ID", MDE_ID),
                    ("CORDON_DEFENDER_CLIENT_SECRET", MDE_SECRET),
                ],
            ),
            (
                "entra",
                self.entra.url(),
                vec![
                    ("CORDON_ENTRA_CLIENT_ID", ENTRA_ID),
                    ("CORDON_ENTRA_CLIENT_SECRET", ENTRA_SECRET),
                ],
            ),
            (
                "okta",
                self.okta.url(),
                vec![("CORDON_OKTA_API_TOKEN", OKTA_TOKEN)],
            ),
            (
                "jira",
                self.jira.url(),
                vec![("CORDON_JIRA_API_TOKEN", JIRA_TOKEN)],
            ),
            (
                "thehive",
                self.hive.url(),
                vec![("CORDON_THEHIVE_API_KEY", HIVE_KEY)],
            ),
            (
                "cloud-webhook",
                self.hook.url(),
                vec![("CORDON_CLOUD_WEBHOOK_TOKEN", HOOK_TOKEN)],
            ),
        ]
    }

    /// Rewrites every connector in `root/connectors` to talk to these fakes; `live` picks the
    /// mode (dry-run connectors still point at the fakes, so a test can see they get nothing).
    pub fn wire(&self, root: &Path, live: bool) {
        let secrets = root.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        for (name, url, creds) in self.wiring() {
            let path = root.join("connectors").join(format!("{name}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut out = Vec::new();
            let mut skipping = false;
            for line in text.lines() {
                if skipping {
                    if line.trim().is_empty() {
                        skipping = false;
                    }
                    continue;
                }
                if line.trim() == "[retry]" {
                    skipping = true;
                    continue;
                }
                let l = if line.starts_with("base_url = ") {
                    format!("base_url = \"{url}\"")
                } else if line.starts_with("mode = ") {
                    format!("mode = \"{}\"", if live { "live" } else { "dry_run" })
                } else if line.starts_with("timeout_ms = ") {
                    "timeout_ms = 1500".to_string()
                } else if let Some(rest) = line.strip_prefix("token_url = \"https://") {
                    let path = &rest[rest.find('/').unwrap()..];
                    format!(
                        "token_url = \"{url}{}",
                        path.replace("YOUR-TENANT-ID", TENANT)
                    )
                } else if line.starts_with("completion = ") {
                    "completion = { poll_interval_ms = 20, max_wait_secs = 10 }".to_string()
                } else {
                    line.to_string()
                };
                out.push(l);
            }
            let mut text = out.join("\n");
            for (var, value) in creds {
                let file = secrets.join(var);
                std::fs::write(&file, value).unwrap();
                text = text.replace(
                    &format!("{{ env = \"{var}\" }}"),
                    &format!("{{ file = \"{}\" }}", file.display()),
                );
            }
            text.push_str(
                "\n[retry]\nmax_attempts = 5\nbase_delay_ms = 10\nmax_delay_ms = 100\nmax_wait_secs = 30\nunknown_settle_ms = 0\nepoch_headers = [\"X-Ratelimit-Retryafter\", \"X-Rate-Limit-Reset\"]\n",
            );
            std::fs::write(&path, text).unwrap();
        }
    }
}

/// A daemon with the executor on and every connector live against `v`.
pub async fn start_live(v: &Vendors, f: impl FnOnce(&mut Config, &Path)) -> TestDaemon {
    let (dir, mut cfg) = support::workspace();
    v.wire(dir.path(), true);
    cfg.executor.enabled = true;
    f(&mut cfg, dir.path());
    support::start_in(dir, cfg, None).await
}

/// A native alert.
pub fn alert(id: &str, rule: &str, techniques: &[&str], entities: &[(&str, &str)]) -> String {
    json!({
        "source_alert_id": id,
        "title": rule,
        "rule": {"id": format!("rule-{rule}"), "name": rule},
        "severity": "high",
        "techniques": techniques,
        "entities": entities.iter().map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Posts an alert; returns the case id.
pub async fn post_alert(d: &TestDaemon, body: String) -> String {
    let (s, ack) = d.post("/v1/alerts", body).await;
    assert_eq!(s, 202, "{ack}");
    ack["case_id"].as_str().unwrap().to_string()
}

/// The case's action of `kind` (on `target`, when given).
pub async fn find_action(d: &TestDaemon, case_id: &str, kind: &str, target: Option<&str>) -> Value {
    let case = d.case(case_id).await;
    case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == json!(kind) && target.is_none_or(|t| a["target"]["id"] == json!(t)))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} in {case}"))
}

/// Votes to approve `action_id` as each of `users` (over gRPC with mTLS identity).
pub async fn approve(d: &TestDaemon, action_id: &str, users: &[&str]) {
    for u in users {
        let r = d
            .running()
            .engine
            .vote(cordon::engine::VoteCast {
                approval_id: action_id.to_string(),
                user: u.to_string(),
                channel: "grpc".into(),
                identity: "mtls".into(),
                approve: true,
                request_hash: None,
                comment: String::new(),
            })
            .await;
        assert!(r.is_ok(), "vote by {u} on {action_id}: {r:?}");
    }
}

/// Casts approvals from whichever shipped approvers the policies accept until the request
/// leaves `awaiting_approval` (the approver rules differ per action kind and environment).
pub async fn approve_any(d: &TestDaemon, action_id: &str) {
    for u in ["alice", "bob", "carol", "dave"] {
        let r = d
            .running()
            .engine
            .vote(cordon::engine::VoteCast {
                approval_id: action_id.to_string(),
                user: u.to_string(),
                channel: "grpc".into(),
                identity: "mtls".into(),
                approve: true,
                request_hash: None,
                comment: String::new(),
            })
            .await;
        if let Ok(o) = r
            && o.action.state != cordon::action::ActionState::AwaitingApproval
        {
            return;
        }
    }
    panic!("no shipped approver could approve {action_id}");
}

/// The idempotency label cordon puts in the vendor's record (`cordon-` + 24 characters of the
/// action's idempotency key; see `executor::build_vars`).
pub fn idempotency_label(a: &Value) -> String {
    let k = a["idempotency_key"].as_str().unwrap_or("");
    format!("cordon-{}", &k[..k.len().min(24)])
}

pub const TERMINAL: &[&str] = &[
    "succeeded",
    "failed",
    "unknown",
    "denied",
    "rejected",
    "expired",
    "dry_run",
    "rolled_back",
];

/// Waits until the action is in a terminal (or unknown) state; returns it.
pub async fn settled(d: &TestDaemon, action_id: &str) -> Value {
    support::eventually(30, || async {
        let (s, a) = d.get(&format!("/v1/actions/{action_id}")).await;
        (s == 200 && TERMINAL.contains(&a["state"].as_str().unwrap_or(""))).then_some(a)
    })
    .await
}

/// Audit records of `kind` about `action_id`.
pub fn records(d: &TestDaemon, kind: &str, action_id: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind && r.body.action_id.as_deref() == Some(action_id))
        .map(|r| r.body.data)
        .collect()
}
