//! Chat approvals (Slack, Mattermost, Teams) against the stateful fakes in `fakes::chat`:
//! requests are posted with their evidence, signed callbacks count as votes through the same
//! engine path as gRPC, every unverifiable callback is refused with 401 and recorded, the
//! two-person rule and the "first vote over gRPC" policy hold across channels, posting survives
//! a platform outage, and escalation/expiry notices land in the message's thread.

use std::path::Path;

use chrono::{DateTime, Utc};
use cordon::config::Config;
use cordon::secret::SecretRef;
use serde_json::{Value, json};

use crate::support::fakes::chat::{
    BadJwt, Down, FakeBotFramework, FakeMattermost, FakeSlack, MmPost, SlackCallback,
    SlackInteraction, SlackMessage, markdown_shown, mint_bad_jwt, mint_jwt, mm_token, send_mm,
    send_teams, teams_invoke, write_jwks,
};
use crate::support::live::{self, Vendors};
use crate::support::{self, TestClock, TestDaemon, eventually};

pub(crate) const SLACK_TOKEN: &str = "xoxb-cordon-test-bot-token-8";
const SLACK_SECRET: &str = "slack-signing-secret-9";
const SLACK_TEAM: &str = "T0CORDON";
const SLACK_CHANNEL: &str = "C0APPROVALS";
const MM_TOKEN: &str = "mm-bot-token-10";
const MM_SECRET: &str = "mm-callback-secret-11";
const MM_CHANNEL: &str = "mmapprovalschannel00000000";
const TEAMS_APP: &str = "11111111-2222-3333-4444-555555555555";
const TEAMS_PASSWORD: &str = "teams-app-password-12";
const TEAMS_CONV: &str = "19:abc@thread.tacv2";
const BF_ISSUER: &str = "https://api.botframework.com";
/// Only used to build Mattermost button URLs; the tests post callbacks to the real listener.
const PUBLIC_URL: &str = "http://127.0.0.1:8080";
const PROD_VM: &str = "/subscriptions/3f2b8c1d-6e4a-4b7f-9c2d-8e1f0a3b5c7d/resourceGroups/rg-prod-web/providers/Microsoft.Compute/virtualMachines/prod-web-01";

/// A route: (playbook, min_severity_id, channel).
pub(crate) type Route = (Option<&'static str>, Option<u8>, &'static str);

/// Which fakes the daemon talks to.
#[derive(Default)]
pub(crate) struct Chat<'a> {
    pub(crate) slack: Option<&'a FakeSlack>,
    pub(crate) slack_routes: Vec<Route>,
    pub(crate) mattermost: Option<&'a FakeMattermost>,
    pub(crate) teams: Option<&'a FakeBotFramework>,
    /// Teams keys from a JWKS file instead of the fake's JWKS URL.
    pub(crate) teams_jwks_file: bool,
    /// `chat.teams.tenant_id`.
    pub(crate) teams_tenant: Option<&'static str>,
}

// ---------------------------------------------------------------------------------------------
// The only place that names the new config types.
// ---------------------------------------------------------------------------------------------

pub(crate) fn configure_chat(cfg: &mut Config, root: &Path, c: &Chat) {
    use cordon::config::{ChatRoute, MattermostConfig, SlackConfig, TeamsConfig};
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let secret = |name: &str, value: &str| {
        let p = secrets.join(name);
        std::fs::write(&p, value).unwrap();
        SecretRef::File(p)
    };
    let routes = |r: &[Route]| -> Vec<ChatRoute> {
        r.iter()
            .map(|(playbook, sev, channel)| ChatRoute {
                playbook: playbook.map(String::from),
                min_severity_id: *sev,
                channel: channel.to_string(),
            })
            .collect()
    };
    cfg.chat.public_url = PUBLIC_URL.into();
    cfg.chat.retry_initial_ms = 20;
    cfg.chat.retry_max_ms = 200;
    cfg.chat.timeout_ms = 2000;
    cfg.chat.slack = c.slack.map(|s| SlackConfig {
        api_base: s.api_base(),
        bot_token: secret("slack-bot-token", SLACK_TOKEN),
        signing_secret: secret("slack-signing-secret", SLACK_SECRET),
        team_id: Some(SLACK_TEAM.into()),
        channel: SLACK_CHANNEL.into(),
        routes: routes(&c.slack_routes),
    });
    cfg.chat.mattermost = c.mattermost.map(|m| MattermostConfig {
        url: m.url(),
        bot_token: secret("mm-bot-token", MM_TOKEN),
        callback_secret: secret("mm-callback-secret", MM_SECRET),
        channel: MM_CHANNEL.into(),
        routes: vec![],
    });
    cfg.chat.teams = c.teams.map(|t| {
        let file = root.join("teams-keys.json");
        write_jwks(&file);
        TeamsConfig {
            app_id: TEAMS_APP.into(),
            app_password: secret("teams-app-password", TEAMS_PASSWORD),
            token_url: t.token_url(),
            service_url: t.service_url(),
            channel: TEAMS_CONV.into(),
            issuer: BF_ISSUER.into(),
            jwks_url: (!c.teams_jwks_file).then(|| t.jwks_url()),
            jwks_file: c.teams_jwks_file.then_some(file),
            tenant_id: c.teams_tenant.map(String::from),
            routes: vec![],
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A daemon (executor off) wired to the given fakes.
async fn start_chat(c: Chat<'_>) -> TestDaemon {
    support::start_with(|cfg, root| configure_chat(cfg, root, &c)).await
}

fn malware_alert(id: &str, host: &str) -> String {
    live::alert(id, "Malware EncodedCommand", &["T1059"], &[("host", host)])
}

fn cloud_alert(id: &str, resource: &str) -> String {
    live::alert(
        id,
        "Cloud admin role grant",
        &["T1098"],
        &[("cloud_resource", resource)],
    )
}

/// Posts an alert and returns the id of its `kind` action, which must await approval.
async fn pending(d: &TestDaemon, alert: String, kind: &str) -> String {
    let case_id = live::post_alert(d, alert).await;
    let a = live::find_action(d, &case_id, kind, None).await;
    assert_eq!(a["state"], json!("awaiting_approval"), "{a}");
    a["action_id"].as_str().unwrap().to_string()
}

async fn action(d: &TestDaemon, id: &str) -> Value {
    let (s, a) = d.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(s, 200, "{a}");
    a
}

async fn state(d: &TestDaemon, id: &str) -> String {
    action(d, id).await["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Audit records of `kind` about `action_id` (linked, or naming it in the body).
fn about(d: &TestDaemon, kind: &str, action_id: &str) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind)
        .filter(|r| {
            r.body.action_id.as_deref() == Some(action_id)
                || r.body.data["action_id"] == json!(action_id)
                || r.body.data["approval_id"] == json!(action_id)
        })
        .map(|r| r.body.data)
        .collect()
}

fn votes(d: &TestDaemon, id: &str) -> Vec<Value> {
    live::records(d, "vote", id)
}

/// Every `chat_callback` record, in order.
fn callbacks(d: &TestDaemon) -> Vec<Value> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == "chat_callback")
        .map(|r| r.body.data)
        .collect()
}

/// Waits for the `chat_callback` record after the first `before`; returns it.
async fn callback_after(d: &TestDaemon, before: usize) -> Value {
    eventually(10, || async {
        let c = callbacks(d);
        (c.len() > before).then(|| c[before].clone())
    })
    .await
}

fn assert_refused_record(rec: &Value, platform: &str, reason: &str) {
    assert_eq!(rec["platform"], json!(platform), "{rec}");
    assert_eq!(rec["outcome"], json!("refused"), "{rec}");
    assert_eq!(rec["reason"], json!(reason), "{rec}");
}

fn assert_accepted_record(rec: &Value, platform: &str, user: &str, id: &str, decision: &str) {
    assert_eq!(rec["platform"], json!(platform), "{rec}");
    assert_eq!(rec["outcome"], json!("accepted"), "{rec}");
    assert_eq!(rec["reason"], Value::Null, "{rec}");
    assert_eq!(rec["user"], json!(user), "{rec}");
    assert_eq!(rec["approval_id"], json!(id), "{rec}");
    assert_eq!(rec["decision"], json!(decision), "{rec}");
}

/// A 401 `{"code": code, "message": ...}` answer, recorded, and the request unchanged.
async fn expect_401(
    d: &TestDaemon,
    id: &str,
    platform: &str,
    code: &str,
    what: &str,
    answer: (u16, Value),
    before: usize,
) {
    let (status, body) = answer;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["code"], json!(code), "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
    let rec = callback_after(d, before).await;
    assert_refused_record(&rec, platform, code);
    assert_eq!(state(d, id).await, "awaiting_approval", "{what}");
    assert!(votes(d, id).is_empty(), "{what}: {:?}", votes(d, id));
}

/// The first Slack message about `id` (waits for it).
async fn slack_post(slack: &FakeSlack, id: &str) -> SlackMessage {
    eventually(15, || async { slack.post_for(id) }).await
}

async fn mm_post(mm: &FakeMattermost, id: &str) -> MmPost {
    eventually(15, || async { mm.post_for(id) }).await
}

/// A vote of `user` over gRPC (the engine path the gRPC API uses): its outcome.
async fn grpc_vote(d: &TestDaemon, id: &str, user: &str) -> &'static str {
    d.running()
        .engine
        .vote(cordon::engine::VoteCast {
            approval_id: id.to_string(),
            user: user.to_string(),
            channel: "grpc".into(),
            identity: "mtls".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("gRPC vote by {user} on {id}: {e:?}"))
        .outcome
}

/// Whether `text` shows `deadline`: RFC 3339 or "YYYY-MM-DD HH:MM" to the minute (UTC), unix
/// seconds (also inside Slack's `<!date^...>`), or unix milliseconds.
fn shows_deadline(text: &str, deadline: DateTime<Utc>) -> bool {
    [
        deadline.format("%Y-%m-%dT%H:%M").to_string(),
        deadline.format("%Y-%m-%d %H:%M").to_string(),
        deadline.timestamp().to_string(),
        deadline.timestamp_millis().to_string(),
    ]
    .iter()
    .any(|s| text.contains(s.as_str()))
}

fn deadline_of(a: &Value) -> DateTime<Utc> {
    a["approval"]["deadline"].as_str().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. The request is posted with its evidence on all three platforms
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_request_is_posted_with_its_evidence_to_slack_mattermost_and_teams() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let mm = FakeMattermost::start(MM_TOKEN).await;
    let bf = FakeBotFramework::start(TEAMS_APP, TEAMS_PASSWORD).await;
    let d = start_chat(Chat {
        slack: Some(&slack),
        // Neither route matches a high-severity malware case: the default channel.
        slack_routes: vec![
            (Some("cloud_admin"), None, "C0CLOUD"),
            (None, Some(5), "C0CRITICAL"),
        ],
        mattermost: Some(&mm),
        teams: Some(&bf),
        ..Chat::default()
    })
    .await;
    let id = pending(&d, malware_alert("chat-ev-1", "db-07"), "isolate_host").await;
    let a = action(&d, &id).await;
    assert_eq!(a["tier"], json!("one_approver"), "{a}");
    let reason = a["reasons"][0].as_str().unwrap().to_string();
    let deadline = deadline_of(&a);
    // What a person must see to decide: kind, target, blast radius, tier and reason, case.
    let evidence = [
        "isolate_host",
        "db-07",
        "production",
        "critical",
        "one_approver",
        reason.as_str(),
        "Malware EncodedCommand",
    ];

    // Slack.
    let m = slack_post(&slack, &id).await;
    assert_eq!(m.channel, SLACK_CHANNEL);
    assert!(m.thread_ts.is_none());
    let text = m.all_text();
    for e in evidence {
        assert!(text.contains(e), "Slack message lacks {e:?}:\n{text}");
    }
    assert!(
        shows_deadline(&text, deadline),
        "Slack message lacks the deadline {deadline}:\n{text}"
    );
    assert!(m.text.chars().count() <= 4000);
    let block = m
        .actions_blocks()
        .into_iter()
        .find(|b| b["block_id"] == json!(format!("approval:{id}")))
        .unwrap_or_else(|| panic!("no actions block approval:{id} in {}", m.blocks));
    assert_eq!(block["elements"].as_array().unwrap().len(), 2, "{block}");
    for b in ["approve", "deny"] {
        assert_eq!(m.button(b).unwrap()["value"], json!(id), "{block}");
    }
    assert!(slack.errors().is_empty(), "{:?}", slack.errors());
    let auth = slack.log().matching("POST", "/api/chat.postMessage");
    assert!(
        auth.iter()
            .all(|r| r.header("authorization") == Some(&format!("Bearer {SLACK_TOKEN}"))),
        "every Web API call carries the bot token"
    );

    // Mattermost.
    let p = mm_post(&mm, &id).await;
    assert_eq!(p.channel_id, MM_CHANNEL);
    assert!(p.root_id.is_empty());
    let text = p.shown();
    for e in ["isolate_host", "db-07", "one_approver", reason.as_str()] {
        assert!(text.contains(e), "Mattermost post lacks {e:?}:\n{text}");
    }
    for (b, name) in [("approve", "Approve"), ("deny", "Deny")] {
        let button = p
            .button(b)
            .unwrap_or_else(|| panic!("no {b} in {}", p.props));
        assert_eq!(button["name"], json!(name), "{button}");
        assert_eq!(
            button["integration"]["url"],
            json!(format!("{PUBLIC_URL}/v1/chat/mattermost/actions")),
            "{button}"
        );
        let cx = p.context(b);
        assert_eq!(cx["approval_id"], json!(id), "{cx}");
        assert_eq!(cx["decision"], json!(b), "{cx}");
        assert_eq!(cx["token"], json!(mm_token(MM_SECRET, &id)), "{cx}");
    }

    // Teams.
    let act = eventually(15, || async { bf.post_for(&id) }).await;
    assert_eq!(act.conversation, TEAMS_CONV);
    assert_eq!(act.body["type"], json!("message"));
    let card = act.card().expect("an adaptive card");
    assert_eq!(card["type"], json!("AdaptiveCard"));
    let text = act.shown();
    for e in ["isolate_host", "db-07", "one_approver", reason.as_str()] {
        assert!(text.contains(e), "Teams card lacks {e:?}:\n{text}");
    }
    for verb in ["approve", "deny"] {
        let x = act
            .execute(verb)
            .unwrap_or_else(|| panic!("no {verb} in {card}"));
        assert_eq!(x["data"]["approval_id"], json!(id), "{x}");
    }
    assert!(bf.tokens_issued() >= 1);
    for r in bf.log().all() {
        if r.body.contains(TEAMS_PASSWORD) || r.target().contains(TEAMS_PASSWORD) {
            assert!(r.path.ends_with("/oauth2/v2.0/token"), "{r:?}");
        }
    }

    // Each post is audited with the platform's reference (a post reaches the fake before cordon
    // records it: wait for all three records).
    let posted: Vec<Value> = eventually(10, || async {
        let posted: Vec<Value> = about(&d, "chat_post", &id)
            .into_iter()
            .filter(|r| r["purpose"] == json!("request") && r["outcome"] == json!("posted"))
            .collect();
        (posted.len() >= 3).then_some(posted)
    })
    .await;
    let find = |platform: &str| {
        posted
            .iter()
            .find(|r| r["platform"] == json!(platform))
            .cloned()
            .unwrap_or_else(|| panic!("no posted request record for {platform}: {posted:?}"))
    };
    let r = find("slack");
    assert_eq!(
        (&r["channel"], &r["ref"]),
        (&json!(SLACK_CHANNEL), &json!(m.ts)),
        "{r}"
    );
    assert_eq!(find("mattermost")["ref"], json!(p.id));
    assert_eq!(find("teams")["ref"], json!(act.id));

    // Only pending requests are posted, and no secret ever reaches a platform.
    let case_id = a["case_id"].as_str().unwrap();
    let awaiting = d.case(case_id).await["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["approval"].is_object())
        .count();
    eventually(15, || async {
        (slack.posts().len() >= awaiting).then_some(())
    })
    .await;
    assert_eq!(slack.posts().len(), awaiting, "{:?}", slack.posts());
    assert!(!slack.log().contains_text(SLACK_SECRET));
    assert!(!mm.log().contains_text(MM_SECRET));
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Slack: a signed callback counts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_slack_callback_counts_the_vote_and_updates_the_message() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let d = start_chat(Chat {
        slack: Some(&slack),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-ok-1", "ws-chat-ok-1"),
        "isolate_host",
    )
    .await;
    let m = slack_post(&slack, &id).await;

    let before = callbacks(&d).len();
    let cb = SlackInteraction::new("U0ALICE", &id, "approve")
        .on(&m)
        .signed(SLACK_SECRET);
    let (s, body) = cb.send(&d.client, &d.base).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["outcome"], json!("approved"), "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    let rec = callback_after(&d, before).await;
    assert_accepted_record(&rec, "slack", "alice", &id, "approve");
    assert_eq!(rec["platform_user"], json!("U0ALICE"), "{rec}");
    let v = votes(&d, &id);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (
            &v[0]["user"],
            &v[0]["channel"],
            &v[0]["identity"],
            &v[0]["decision"]
        ),
        (
            &json!("alice"),
            &json!("slack"),
            &json!("chat"),
            &json!("approve")
        ),
        "{v:?}"
    );
    assert!(
        ["counted", "approved"].contains(&v[0]["outcome"].as_str().unwrap_or("")),
        "{v:?}"
    );
    let got = action(&d, &id).await;
    let vr = &got["approval"]["votes"][0];
    assert_eq!(
        (&vr["channel"], &vr["identity"]),
        (&json!("slack"), &json!("chat"))
    );

    // The message is updated in place: decided, no buttons any more.
    let updated = eventually(15, || async {
        slack
            .current(&m.ts)
            .filter(|c| !slack.updates(&m.ts).is_empty() && !c.has_buttons())
    })
    .await;
    assert!(
        updated.all_text().to_lowercase().contains("approved"),
        "{}",
        updated.all_text()
    );
    // Recorded once the platform answered: wait for the record.
    eventually(10, || async {
        about(&d, "chat_post", &id)
            .iter()
            .any(|r| r["purpose"] == json!("update") && r["outcome"] == json!("posted"))
            .then_some(())
    })
    .await;

    // The very same request again (same body, same headers) is a replay: refused, not a vote.
    let before = callbacks(&d).len();
    let (s, body) = cb.send(&d.client, &d.base).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["code"], json!("replayed"), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "slack", "replayed");
    assert_eq!(votes(&d, &id).len(), 1, "the replay reached the engine");

    // A Deny from another approver on another request rejects it.
    let id2 = pending(
        &d,
        malware_alert("chat-ok-2", "ws-chat-ok-2"),
        "isolate_host",
    )
    .await;
    let m2 = slack_post(&slack, &id2).await;
    let (s, body) = SlackInteraction::new("U0BOB", &id2, "deny")
        .on(&m2)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["ok"], &body["outcome"]),
        (&json!(true), &json!("rejected")),
        "{body}"
    );
    assert_eq!(state(&d, &id2).await, "rejected");
    let v = votes(&d, &id2);
    assert_eq!(
        (&v[0]["user"], &v[0]["decision"], &v[0]["channel"]),
        (&json!("bob"), &json!("deny"), &json!("slack")),
        "{v:?}"
    );
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Slack: what fails verification is refused and recorded
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_callbacks_that_fail_verification_are_refused_and_recorded() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let evil = FakeSlack::start("unused").await;
    let d = start_chat(Chat {
        slack: Some(&slack),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-bad-1", "ws-chat-bad-1"),
        "isolate_host",
    )
    .await;
    let m = slack_post(&slack, &id).await;
    let alice = || SlackInteraction::new("U0ALICE", &id, "approve").on(&m);
    let now = Utc::now().timestamp();

    let cases: Vec<(&str, &str, SlackCallback)> = vec![
        (
            "signed with another secret",
            "bad_signature",
            alice().signed("not-the-signing-secret"),
        ),
        (
            "body changed after signing",
            "bad_signature",
            alice().signed(SLACK_SECRET).tamper_body(),
        ),
        (
            "no signature header",
            "bad_signature",
            alice().signed(SLACK_SECRET).with_signature(None),
        ),
        (
            "a garbage signature",
            "bad_signature",
            alice().signed(SLACK_SECRET).with_signature(Some("v0=00ff")),
        ),
        (
            "timestamp header changed after signing",
            "bad_signature",
            alice().signed(SLACK_SECRET).with_timestamp(Some(now + 1)),
        ),
        (
            "correctly signed six minutes ago",
            "stale_timestamp",
            SlackCallback::sign(SLACK_SECRET, &alice().payload(), now - 360),
        ),
        (
            "correctly signed six minutes ahead",
            "stale_timestamp",
            SlackCallback::sign(SLACK_SECRET, &alice().payload(), now + 360),
        ),
    ];
    for (what, code, cb) in cases {
        let before = callbacks(&d).len();
        let answer = cb.send(&d.client, &d.base).await;
        expect_401(&d, &id, "slack", code, what, answer, before).await;
    }

    // Verified, but from a workspace other than the configured one: refused like an unverified
    // callback (401), and recorded.
    let before = callbacks(&d).len();
    let (s, body) = alice()
        .team("T0OTHER")
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(
        (&body["ok"], &body["code"]),
        (&json!(false), &json!("wrong_team")),
        "{body}"
    );
    assert_refused_record(&callback_after(&d, before).await, "slack", "wrong_team");

    // A correctly signed callback sent with a second, wrong signature: ambiguous, refused before
    // it is verified, and nothing recorded.
    let before = (callbacks(&d).len(), d.head());
    let cb = alice().signed(SLACK_SECRET);
    let r = d
        .client
        .post(format!("{}/v1/chat/slack/interactions", d.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", cb.timestamp.clone().unwrap())
        .header("x-slack-signature", cb.signature.clone().unwrap())
        .header("x-slack-signature", "v0=00ff")
        .body(cb.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], json!("ambiguous_credentials"), "{body}");
    assert_eq!((callbacks(&d).len(), d.head()), before);

    // Correctly signed, but the payload names a key twice (`type`): refused as malformed.
    let before = callbacks(&d).len();
    let payload = alice().payload().to_string();
    assert!(payload.contains("\"type\":\"block_actions\""), "{payload}");
    let dup = payload.replacen('{', "{\"type\":\"view_submission\",", 1);
    let form = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(dup.as_bytes()).collect::<String>()
    );
    let (s, body) = SlackCallback::sign_raw(SLACK_SECRET, form, Utc::now().timestamp())
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["code"], json!("malformed"), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("duplicate key"),
        "{body}"
    );
    assert_refused_record(&callback_after(&d, before).await, "slack", "malformed");

    // Verified, but from a Slack user no Cordon::User maps: 200 ok:false, nothing counted. The
    // refusal note goes to response_url only on Slack's (here: the api_base) origin.
    let before = callbacks(&d).len();
    let (s, body) = SlackInteraction::new("U0EVE", &id, "approve")
        .on(&m)
        .response_url(&evil.response_url("phish"))
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["code"], json!("unknown_user"), "{body}");
    callback_after(&d, before).await;
    // Her id, quoted back in the note, carries a mention: inert there.
    let before = callbacks(&d).len();
    let eve = SlackInteraction::new("U0EVE<!channel>", &id, "approve")
        .on(&m)
        .response_url(&slack.response_url("eve-1"))
        .signed(SLACK_SECRET);
    let (s, body) = eve.send(&d.client, &d.base).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["ok"], &body["code"]),
        (&json!(false), &json!("unknown_user")),
        "{body}"
    );
    assert!(body["message"].is_string(), "{body}");
    let rec = callback_after(&d, before).await;
    assert_refused_record(&rec, "slack", "unknown_user");
    assert_eq!(rec["platform_user"], json!("U0EVE<!channel>"), "{rec}");
    assert_eq!(rec["user"], Value::Null, "{rec}");
    let (_, note) = eventually(10, || async {
        slack.responses().into_iter().find(|(k, _)| k == "eve-1")
    })
    .await;
    assert_eq!(note["response_type"], json!("ephemeral"), "{note}");
    assert_eq!(note["replace_original"], json!(false), "{note}");
    let text = note["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("not counted") && text.contains("&lt;!channel&gt;") && !text.contains('<'),
        "{note}"
    );
    assert_eq!(
        evil.log().count(),
        0,
        "a refusal note went to a foreign response_url"
    );

    // The same unknown-user callback again: a replay now.
    let before = callbacks(&d).len();
    let answer = eve.send(&d.client, &d.base).await;
    expect_401(&d, &id, "slack", "replayed", "replay", answer, before).await;

    // A signed body that is not an interaction payload.
    let before = callbacks(&d).len();
    let (s, body) = SlackCallback::sign_raw(SLACK_SECRET, "payload=%7Bnot%20json".into(), now)
        .send(&d.client, &d.base)
        .await;
    assert!((400..500).contains(&s), "{s} {body}");
    assert_eq!(body["code"], json!("malformed"), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "slack", "malformed");

    // None of it changed anything.
    assert_eq!(state(&d, &id).await, "awaiting_approval");
    assert!(votes(&d, &id).is_empty(), "{:?}", votes(&d, &id));
    assert!(slack.updates(&m.ts).is_empty());
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Mattermost
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mattermost_callbacks_need_the_per_request_token() {
    let mm = FakeMattermost::start(MM_TOKEN).await;
    let d = start_chat(Chat {
        mattermost: Some(&mm),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-mm-1", "ws-chat-mm-1"),
        "isolate_host",
    )
    .await;
    let p = mm_post(&mm, &id).await;

    // A tampered token; a token for another request.
    let mut cb = p.callback("approve", "mm-alice", "alice");
    cb["context"]["token"] = json!(mm_token("guessed-secret", &id));
    let before = callbacks(&d).len();
    let answer = send_mm(&d.client, &d.base, &cb).await;
    expect_401(
        &d,
        &id,
        "mattermost",
        "bad_token",
        "tampered token",
        answer,
        before,
    )
    .await;
    let mut cb = p.callback("approve", "mm-alice", "alice");
    cb["context"]["token"] = json!(mm_token(MM_SECRET, "01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    let before = callbacks(&d).len();
    let answer = send_mm(&d.client, &d.base, &cb).await;
    expect_401(
        &d,
        &id,
        "mattermost",
        "bad_token",
        "another request's token",
        answer,
        before,
    )
    .await;
    let mut cb = p.callback("approve", "mm-alice", "alice");
    cb["context"]
        .as_object_mut()
        .unwrap()
        .remove("token")
        .unwrap();
    let before = callbacks(&d).len();
    let (s, body) = send_mm(&d.client, &d.base, &cb).await;
    // A missing token is a wrong token (or, at least, a malformed callback).
    assert_eq!(s, 401, "{body}");
    let code = body["code"].as_str().unwrap_or("");
    assert!(["bad_token", "malformed"].contains(&code), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "mattermost", code);
    assert_eq!(state(&d, &id).await, "awaiting_approval");

    // An unmapped Mattermost user, whose id (quoted back to them) carries Markdown and a
    // mention: both inert in the reply.
    let before = callbacks(&d).len();
    let (s, body) = send_mm(
        &d.client,
        &d.base,
        &p.callback("approve", "mm-**@here**", "eve"),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let text = body["ephemeral_text"].as_str().unwrap_or_default();
    assert!(text.contains("not counted"), "{body}");
    assert!(!text.contains("**") && !text.contains("@here"), "{text}");
    assert_refused_record(
        &callback_after(&d, before).await,
        "mattermost",
        "unknown_user",
    );
    assert_eq!(state(&d, &id).await, "awaiting_approval");

    // The real thing.
    let cb = p.callback("approve", "mm-alice", "alice");
    let before = callbacks(&d).len();
    let (s, body) = send_mm(&d.client, &d.base, &cb).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["ephemeral_text"].is_string(), "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    let rec = callback_after(&d, before).await;
    assert_accepted_record(&rec, "mattermost", "alice", &id, "approve");
    assert_eq!(rec["platform_user"], json!("mm-alice"), "{rec}");
    let v = votes(&d, &id);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (&v[0]["user"], &v[0]["channel"], &v[0]["identity"]),
        (&json!("alice"), &json!("mattermost"), &json!("chat")),
        "{v:?}"
    );

    // The same trigger again is a replay.
    let before = callbacks(&d).len();
    let (s, body) = send_mm(&d.client, &d.base, &cb).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["code"], json!("replayed"), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "mattermost", "replayed");
    assert_eq!(votes(&d, &id).len(), 1);

    // The post loses its buttons.
    eventually(15, || async {
        mm.current(&p.id)
            .filter(|c| !mm.patches(&p.id).is_empty() && !c.has_buttons())
    })
    .await;
    assert!(!mm.log().contains_text(MM_SECRET));
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Teams
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_callbacks_need_a_valid_bot_framework_jwt() {
    let bf = FakeBotFramework::start(TEAMS_APP, TEAMS_PASSWORD).await;
    let d = start_chat(Chat {
        teams: Some(&bf),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-teams-1", "ws-chat-teams-1"),
        "isolate_host",
    )
    .await;
    let card = eventually(15, || async { bf.post_for(&id) }).await;
    let svc = bf.service_url();
    let invoke = |aad: &str| teams_invoke(&svc, TEAMS_CONV, aad, "approve", &id);

    for bad in BadJwt::ALL {
        let jwt = mint_bad_jwt(bad, TEAMS_APP, BF_ISSUER, &svc);
        let before = callbacks(&d).len();
        let answer = send_teams(&d.client, &d.base, Some(&jwt), &invoke("aad-alice")).await;
        expect_401(
            &d,
            &id,
            "teams",
            "bad_jwt",
            &format!("{bad:?}"),
            answer,
            before,
        )
        .await;
    }
    let before = callbacks(&d).len();
    let answer = send_teams(&d.client, &d.base, None, &invoke("aad-alice")).await;
    expect_401(
        &d,
        &id,
        "teams",
        "bad_jwt",
        "no Authorization",
        answer,
        before,
    )
    .await;

    // A valid token for an unmapped Entra user.
    let before = callbacks(&d).len();
    let (s, body) = send_teams(
        &d.client,
        &d.base,
        Some(&mint_jwt(TEAMS_APP, BF_ISSUER, &svc)),
        &invoke("aad-eve"),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["statusCode"], json!(200), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "teams", "unknown_user");
    assert_eq!(state(&d, &id).await, "awaiting_approval");

    // The real thing.
    let activity = invoke("aad-alice");
    let before = callbacks(&d).len();
    let (s, body) = send_teams(
        &d.client,
        &d.base,
        Some(&mint_jwt(TEAMS_APP, BF_ISSUER, &svc)),
        &activity,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["statusCode"], json!(200), "{body}");
    assert_eq!(
        body["type"],
        json!("application/vnd.microsoft.activity.message"),
        "{body}"
    );
    assert!(body["value"].is_string(), "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    assert_accepted_record(
        &callback_after(&d, before).await,
        "teams",
        "alice",
        &id,
        "approve",
    );
    let v = votes(&d, &id);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (&v[0]["user"], &v[0]["channel"], &v[0]["identity"]),
        (&json!("alice"), &json!("teams"), &json!("entra")),
        "{v:?}"
    );

    // The same activity id again (with a fresh, valid token) is a replay.
    let before = callbacks(&d).len();
    let (s, body) = send_teams(
        &d.client,
        &d.base,
        Some(&mint_jwt(TEAMS_APP, BF_ISSUER, &svc)),
        &activity,
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["code"], json!("replayed"), "{body}");
    assert_refused_record(&callback_after(&d, before).await, "teams", "replayed");
    assert_eq!(votes(&d, &id).len(), 1);

    // The card is replaced by one without buttons.
    eventually(15, || async {
        bf.updates(&card.id)
            .last()
            .filter(|u| u.executes().is_empty())
            .cloned()
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

/// A valid Bot Framework token is not enough: the activity must come from Teams (`msteams`),
/// through the configured service URL, from the configured tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_callbacks_from_another_channel_service_or_tenant_are_refused() {
    let bf = FakeBotFramework::start(TEAMS_APP, TEAMS_PASSWORD).await;
    let d = start_chat(Chat {
        teams: Some(&bf),
        teams_tenant: Some("tenant-1"),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-teams-origin", "ws-chat-teams-origin"),
        "isolate_host",
    )
    .await;
    eventually(15, || async { bf.post_for(&id) }).await;
    let svc = bf.service_url();
    let other_svc = "https://smba.evil.example/emea/";
    let mut webchat = teams_invoke(&svc, TEAMS_CONV, "aad-alice", "approve", &id);
    webchat["channelId"] = json!("webchat");
    let other_service = teams_invoke(other_svc, TEAMS_CONV, "aad-alice", "approve", &id);
    let mut other_tenant = teams_invoke(&svc, TEAMS_CONV, "aad-alice", "approve", &id);
    other_tenant["channelData"]["tenant"]["id"] = json!("tenant-2");
    let mut no_tenant = teams_invoke(&svc, TEAMS_CONV, "aad-alice", "approve", &id);
    no_tenant["channelData"] = json!({});
    for (what, activity, token_svc) in [
        ("channel webchat", webchat, svc.as_str()),
        ("another service URL", other_service, other_svc),
        ("another tenant", other_tenant, svc.as_str()),
        ("no tenant", no_tenant, svc.as_str()),
    ] {
        // The token is valid for the activity it comes with.
        let jwt = mint_jwt(TEAMS_APP, BF_ISSUER, token_svc);
        let before = callbacks(&d).len();
        let answer = send_teams(&d.client, &d.base, Some(&jwt), &activity).await;
        expect_401(&d, &id, "teams", "wrong_team", what, answer, before).await;
    }
    // From the configured tenant, service and channel, the same vote counts.
    let activity = teams_invoke(&svc, TEAMS_CONV, "aad-alice", "approve", &id);
    let (s, body) = send_teams(
        &d.client,
        &d.base,
        Some(&mint_jwt(TEAMS_APP, BF_ISSUER, &svc)),
        &activity,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_keys_can_come_from_a_jwks_file() {
    let bf = FakeBotFramework::start(TEAMS_APP, TEAMS_PASSWORD).await;
    let d = start_chat(Chat {
        teams: Some(&bf),
        teams_jwks_file: true,
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-jwks-1", "ws-chat-jwks-1"),
        "isolate_host",
    )
    .await;
    eventually(15, || async { bf.post_for(&id) }).await;
    let svc = bf.service_url();
    let before = callbacks(&d).len();
    let answer = send_teams(
        &d.client,
        &d.base,
        Some(&mint_bad_jwt(
            BadJwt::UnknownKid,
            TEAMS_APP,
            BF_ISSUER,
            &svc,
        )),
        &teams_invoke(&svc, TEAMS_CONV, "aad-bob", "approve", &id),
    )
    .await;
    expect_401(&d, &id, "teams", "bad_jwt", "unknown kid", answer, before).await;
    let (s, body) = send_teams(
        &d.client,
        &d.base,
        Some(&mint_jwt(TEAMS_APP, BF_ISSUER, &svc)),
        &teams_invoke(&svc, TEAMS_CONV, "aad-bob", "approve", &id),
    )
    .await;
    assert_eq!((s, &body["statusCode"]), (200, &json!(200)), "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    assert_eq!(
        bf.log().count_matching("GET", "/.well-known/keys"),
        0,
        "keys come from the file"
    );
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 6. Two-person across channels
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_containment_with_a_grpc_vote_then_a_slack_vote_by_another_person_executes() {
    let v = Vendors::start().await;
    v.hook.add_resource(PROD_VM);
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let c = Chat {
        slack: Some(&slack),
        slack_routes: vec![(Some("cloud_admin"), None, "C0CLOUD")],
        ..Chat::default()
    };
    let d = live::start_live(&v, |cfg, root| configure_chat(cfg, root, &c)).await;
    let id = pending(
        &d,
        cloud_alert("chat-2p-1", PROD_VM),
        "contain_cloud_resource",
    )
    .await;
    assert_eq!(action(&d, &id).await["tier"], json!("two_person"));
    let m = slack_post(&slack, &id).await;
    assert_eq!(m.channel, "C0CLOUD", "routed by playbook");

    // bob over gRPC: one of two.
    assert_eq!(grpc_vote(&d, &id, "bob").await, "counted");
    // The message shows the vote and still has its buttons.
    eventually(15, || async {
        slack
            .current(&m.ts)
            .filter(|c| !slack.updates(&m.ts).is_empty() && c.has_buttons())
    })
    .await;

    // bob again, now over Slack: the same person, not a second approver.
    let before = callbacks(&d).len();
    let (s, body) = SlackInteraction::new("U0BOB", &id, "approve")
        .on(&m)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["ok"], &body["outcome"]),
        (&json!(true), &json!("already_counted")),
        "{body}"
    );
    assert_accepted_record(
        &callback_after(&d, before).await,
        "slack",
        "bob",
        &id,
        "approve",
    );
    assert_eq!(state(&d, &id).await, "awaiting_approval");
    assert!(
        votes(&d, &id).iter().any(|x| x["user"] == json!("bob")
            && x["channel"] == json!("slack")
            && x["outcome"] == json!("already_counted")),
        "{:?}",
        votes(&d, &id)
    );
    assert_eq!(v.hook.effects().count(&format!("contain:{PROD_VM}")), 0);

    // dave over Slack: the second person. Approved, executed for real.
    let (s, body) = SlackInteraction::new("U0DAVE", &id, "approve")
        .on(&m)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["ok"], &body["outcome"]),
        (&json!(true), &json!("approved")),
        "{body}"
    );
    let done = live::settled(&d, &id).await;
    assert_eq!(done["state"], json!("succeeded"), "{done}");
    assert_eq!(v.hook.effects().count(&format!("contain:{PROD_VM}")), 1);
    assert_eq!(v.hook.state(PROD_VM), "contained");
    let counted: Vec<(String, String, String)> = done["approval"]["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["user"].as_str().unwrap().to_string(),
                x["channel"].as_str().unwrap().to_string(),
                x["identity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        counted.contains(&("bob".into(), "grpc".into(), "mtls".into())),
        "{counted:?}"
    );
    assert!(
        counted.contains(&("dave".into(), "slack".into(), "chat".into())),
        "{counted:?}"
    );

    // The message ends showing the final state, without buttons.
    eventually(30, || async {
        slack
            .current(&m.ts)
            .filter(|c| !c.has_buttons() && c.all_text().to_lowercase().contains("succeeded"))
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_vote_cannot_be_the_first_vote_on_a_two_person_request() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let d = start_chat(Chat {
        slack: Some(&slack),
        // The first route names another playbook; the second matches on severity (high = 4).
        slack_routes: vec![
            (Some("malware_execution"), None, "C0MALWARE"),
            (None, Some(4), "C0HIGH"),
        ],
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        cloud_alert("chat-first-1", PROD_VM),
        "contain_cloud_resource",
    )
    .await;
    assert_eq!(action(&d, &id).await["tier"], json!("two_person"));
    let m = slack_post(&slack, &id).await;
    assert_eq!(m.channel, "C0HIGH", "routed by severity");

    // dave (a cloud owner) is allowed to approve, but not as the first vote, not from chat.
    let before = callbacks(&d).len();
    let (s, body) = SlackInteraction::new("U0DAVE", &id, "approve")
        .on(&m)
        .response_url(&slack.response_url("dave-1"))
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (&body["ok"], &body["code"]),
        (&json!(false), &json!("vote_refused")),
        "{body}"
    );
    let rec = callback_after(&d, before).await;
    assert_refused_record(&rec, "slack", "vote_refused");
    assert_eq!(rec["user"], json!("dave"), "{rec}");
    let v = votes(&d, &id);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (
            &v[0]["user"],
            &v[0]["channel"],
            &v[0]["identity"],
            &v[0]["outcome"]
        ),
        (
            &json!("dave"),
            &json!("slack"),
            &json!("chat"),
            &json!("refused")
        ),
        "{v:?}"
    );
    assert_eq!(state(&d, &id).await, "awaiting_approval");
    eventually(10, || async {
        slack.responses().into_iter().find(|(k, _)| k == "dave-1")
    })
    .await;

    // Once someone voted over gRPC, the same chat vote is a valid second vote.
    assert_eq!(grpc_vote(&d, &id, "bob").await, "counted");
    let (s, body) = SlackInteraction::new("U0DAVE", &id, "approve")
        .on(&m)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["outcome"], json!("approved"), "{body}");
    assert_eq!(state(&d, &id).await, "approved");
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Posting survives an outage
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_slack_down_approvals_still_work_over_grpc_and_posts_land_once_it_is_back() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    slack.set_down(Some(Down::Http500));
    let d = start_chat(Chat {
        slack: Some(&slack),
        ..Chat::default()
    })
    .await;
    let a = pending(
        &d,
        malware_alert("chat-down-1", "ws-chat-down-1"),
        "isolate_host",
    )
    .await;
    let b = pending(
        &d,
        malware_alert("chat-down-2", "ws-chat-down-2"),
        "isolate_host",
    )
    .await;
    let failed = |id: &str| {
        about(&d, "chat_post", id)
            .into_iter()
            .filter(|r| r["platform"] == json!("slack") && r["outcome"] == json!("failed"))
            .collect::<Vec<_>>()
    };
    // Several failed attempts for each, with the error recorded.
    eventually(20, || async {
        (failed(&a).len() >= 3 && failed(&b).len() >= 3).then_some(())
    })
    .await;
    for r in failed(&b) {
        assert!(
            r["error"].is_string() && r["error"] != json!(""),
            "a failed attempt without its error: {r}"
        );
        assert_eq!(r["purpose"], json!("request"), "{r}");
    }
    assert!(slack.posts().is_empty());

    // Chat being down does not hold up approvals over gRPC.
    assert_eq!(grpc_vote(&d, &a, "alice").await, "approved");
    assert_eq!(state(&d, &a).await, "approved");

    // Back up: the request still pending is posted (by a retry) and works.
    slack.set_down(None);
    let m = slack_post(&slack, &b).await;
    // The post reaches the fake before cordon records it: wait for the record.
    let attempts: Vec<Value> = eventually(10, || async {
        let all: Vec<Value> = about(&d, "chat_post", &b)
            .into_iter()
            .filter(|r| r["platform"] == json!("slack") && r["purpose"] == json!("request"))
            .collect();
        all.iter()
            .any(|r| r["outcome"] == json!("posted"))
            .then_some(all)
    })
    .await;
    let posted: Vec<&Value> = attempts
        .iter()
        .filter(|r| r["outcome"] == json!("posted"))
        .collect();
    assert_eq!(posted.len(), 1, "{attempts:?}");
    assert_eq!(posted[0]["ref"], json!(m.ts), "{attempts:?}");
    assert!(
        posted[0]["attempt"].as_u64().unwrap_or(0) >= 4,
        "the post that landed is a retry: {attempts:?}"
    );
    assert_eq!(
        attempts.last().unwrap()["outcome"],
        json!("posted"),
        "{attempts:?}"
    );
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "attempts count up: {numbers:?}"
    );
    let (s, body) = SlackInteraction::new("U0ALICE", &b, "approve")
        .on(&m)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!((s, &body["outcome"]), (200, &json!("approved")), "{body}");

    // The request decided during the outage never shows live buttons.
    assert!(
        slack
            .posts()
            .iter()
            .filter(|p| p.is_about(&a))
            .all(|p| !p.has_buttons()),
        "{:?}",
        slack.posts()
    );
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Escalation and expiry notices in the thread
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_and_expiry_notices_are_posted_to_the_slack_thread() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let (dir, mut cfg) = support::workspace();
    cfg.policy.watch = false;
    configure_chat(
        &mut cfg,
        dir.path(),
        &Chat {
            slack: Some(&slack),
            ..Chat::default()
        },
    );
    let clock = TestClock::new();
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    let id = pending(
        &d,
        malware_alert("chat-exp-1", "ws-chat-exp-1"),
        "isolate_host",
    )
    .await;
    let a = action(&d, &id).await;
    let deadline = deadline_of(&a);
    assert_eq!((deadline - clock.now()).num_minutes(), 60, "{a}");
    let m = slack_post(&slack, &id).await;
    assert!(slack.thread(&m.ts).is_empty());

    // Past the escalation point.
    clock.advance_secs(31 * 60);
    d.running().engine.tick().await;
    let replies = eventually(15, || async {
        let t = slack.thread(&m.ts);
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(replies[0].channel, m.channel);
    assert!(
        replies[0].all_text().to_lowercase().contains("escalat"),
        "{}",
        replies[0].all_text()
    );
    // The reply reaches the fake before cordon records it: wait for the record.
    eventually(10, || async {
        about(&d, "chat_post", &id)
            .iter()
            .any(|r| r["purpose"] == json!("thread") && r["outcome"] == json!("posted"))
            .then_some(())
    })
    .await;
    assert_eq!(state(&d, &id).await, "awaiting_approval");
    assert!(slack.current(&m.ts).unwrap().has_buttons());

    // Past the deadline.
    clock.advance_secs(30 * 60);
    d.running().engine.tick().await;
    assert_eq!(state(&d, &id).await, "expired");
    let replies = eventually(15, || async {
        let t = slack.thread(&m.ts);
        (t.len() >= 2).then_some(t)
    })
    .await;
    assert!(
        replies[1].all_text().to_lowercase().contains("expired"),
        "{}",
        replies[1].all_text()
    );
    eventually(15, || async {
        slack
            .current(&m.ts)
            .filter(|c| !c.has_buttons() && c.all_text().to_lowercase().contains("expired"))
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

/// Chat markup an attacker can put in an alert: a mass mention, a labelled link, an image that
/// loads from outside, Slack's channel mention and a Slack link with a label of its own.
const MARKUP: &str = "@all [x](https://evil.example) ![i](https://evil.example/p.png) <!channel> <https://evil.example|approve>";

/// Every text an outside value reaches (the request message and its updates, the thread notices,
/// the owner's escalation with the case title) carries that markup inert, on every platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_values_cannot_mention_link_or_embed_in_any_chat_message() {
    for platform in ["slack", "mattermost", "teams"] {
        let slack = FakeSlack::start(SLACK_TOKEN).await;
        let mm = FakeMattermost::start(MM_TOKEN).await;
        let bf = FakeBotFramework::start(TEAMS_APP, TEAMS_PASSWORD).await;
        let (dir, mut cfg) = support::workspace();
        cfg.policy.watch = false;
        cfg.cases.sla.high_mins = 30;
        configure_chat(
            &mut cfg,
            dir.path(),
            &Chat {
                slack: (platform == "slack").then_some(&slack),
                mattermost: (platform == "mattermost").then_some(&mm),
                teams: (platform == "teams").then_some(&bf),
                ..Chat::default()
            },
        );
        // The malware playbook's escalations go to a chat channel.
        let pb = dir.path().join("playbooks/malware_execution.toml");
        let text = std::fs::read_to_string(&pb).unwrap();
        let ours: String = text
            .lines()
            .map(|l| {
                if l.starts_with("escalation_route") {
                    "escalation_route = \"chat:C0IRENDPOINT\""
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(ours, text, "the shipped playbook declares its route");
        std::fs::write(&pb, ours).unwrap();
        let clock = TestClock::new();
        let d = support::start_in(dir, cfg, Some(clock.clone())).await;
        let host = format!("ws-{}", MARKUP.replace(' ', ""));
        let alert = json!({
            "source_alert_id": format!("markup-{platform}"),
            "title": MARKUP,
            "rule": {"id": "rule-markup", "name": format!("Malware EncodedCommand {MARKUP}")},
            "severity": "high",
            "techniques": ["T1059"],
            "entities": [{"kind": "host", "value": host}],
        });
        let id = pending(&d, alert.to_string(), "isolate_host").await;
        let posted = |purpose: &'static str, n: usize| {
            let d = &d;
            let id = id.clone();
            async move {
                eventually(20, || async {
                    let all = d.audit();
                    let count = all
                        .iter()
                        .filter(|r| r.body.kind == "chat_post")
                        .filter(|r| {
                            r.body.data["purpose"] == json!(purpose)
                                && r.body.data["outcome"] == json!("posted")
                        })
                        .filter(|r| purpose == "escalation" || about_id(&r.body, &id))
                        .count();
                    (count >= n).then_some(())
                })
                .await
            }
        };
        posted("request", 1).await;
        // Past the SLA and half the approval deadline: the owner's escalations and the thread
        // notice; past the deadline: the expiry notice and the message's last update.
        clock.advance_secs(31 * 60);
        d.running().engine.tick().await;
        d.running().engine.tick().await;
        posted("escalation", 2).await;
        clock.advance_secs(30 * 60);
        d.running().engine.tick().await;
        assert_eq!(state(&d, &id).await, "expired");
        posted("thread", 2).await;
        posted("update", 1).await;

        let log = match platform {
            "slack" => slack.log().all(),
            "mattermost" => mm.log().all(),
            _ => bf.log().all(),
        };
        // Every string each message carried, JSON-decoded.
        let bodies: Vec<String> = log
            .into_iter()
            .filter(|r| r.method == "POST" || r.method == "PUT")
            .filter(|r| !r.path.contains("token"))
            .map(|r| {
                let mut out = String::new();
                strings(&r.json().expect("a JSON body"), &mut out);
                out
            })
            .collect();
        assert!(bodies.len() >= 5, "{platform}: {bodies:?}");
        let active: &[&str] = match platform {
            // Slack's mrkdwn: mentions and labelled links are `<…>`; `[x](…)` is text there.
            "slack" => &[
                "<!channel>",
                "<https://evil.example|approve>",
                "<https://evil",
            ],
            _ => &[
                "@all",
                "[x](",
                "![i](",
                "<!channel>",
                "<https://evil",
                "](https://evil",
            ],
        };
        for b in &bodies {
            // A backslash-escaped character is literal text in Markdown.
            let live = match platform {
                "slack" => b.clone(),
                _ => without_escaped(b),
            };
            for a in active {
                assert!(!live.contains(a), "{platform} received {a:?} active: {b}");
            }
        }
        // The text is still there for a reader to see.
        let seen = match platform {
            "slack" => bodies.join("\n").replace("&lt;", "<").replace("&gt;", ">"),
            _ => markdown_shown(&bodies.join("\n")),
        };
        assert!(seen.contains(MARKUP), "{platform}: {seen}");
        assert!(
            bodies.iter().any(|b| b.contains("SLA breached")),
            "{platform}: the escalation was posted"
        );
        assert_eq!(d.stop().await, 0);
    }
}

/// Every string in `v`, one a line.
fn strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Markdown with each backslash-escaped character replaced by `§` (it cannot start anything).
fn without_escaped(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' && it.peek().is_some_and(|n| n.is_ascii_punctuation()) {
            it.next();
            out.push('§');
        } else {
            out.push(c);
        }
    }
    out
}

fn about_id(r: &cordon::store::AuditBody, id: &str) -> bool {
    r.action_id.as_deref() == Some(id) || r.data["action_id"] == json!(id)
}

/// Anyone can send a callback that fails verification, so their recording is bounded: at most
/// 60 per minute reach the audit store; the rest are still refused, and counted in the metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_callbacks_are_refused_but_their_recording_is_bounded() {
    let slack = FakeSlack::start(SLACK_TOKEN).await;
    let d = start_chat(Chat {
        slack: Some(&slack),
        ..Chat::default()
    })
    .await;
    let id = pending(
        &d,
        malware_alert("chat-flood-1", "ws-chat-flood-1"),
        "isolate_host",
    )
    .await;
    let m = slack_post(&slack, &id).await;
    let forged = SlackInteraction::new("U0ALICE", &id, "approve")
        .on(&m)
        .signed("not the signing secret");
    for _ in 0..75 {
        let (status, body) = forged.send(&d.client, &d.base).await;
        assert_eq!(
            (status, body["code"].clone()),
            (401, json!("bad_signature"))
        );
    }
    let recorded: Vec<Value> = callbacks(&d)
        .into_iter()
        .filter(|c| c["reason"] == json!("bad_signature"))
        .collect();
    assert_eq!(
        recorded.len(),
        60,
        "recorded refusals per minute are capped"
    );
    let (_, metrics) = d.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains(
            r#"cordon_chat_callbacks_total{platform="slack",outcome="bad_signature"} 75"#
        ),
        "every refusal is counted: {metrics}"
    );
    // Nothing was counted as a vote and a genuine callback still works.
    assert_eq!(state(&d, &id).await, "awaiting_approval");
    let (status, body) = SlackInteraction::new("U0ALICE", &id, "approve")
        .on(&m)
        .signed(SLACK_SECRET)
        .send(&d.client, &d.base)
        .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (200, json!("approved")),
        "{body}"
    );
}
