//! The gRPC approval API over the network: a real tonic client (bearer tokens, TLS and mTLS
//! client certificates made with rcgen) against the daemon on 127.0.0.1, covering one-approver
//! and two-person flows, refusals and their status codes, denies, expiry and escalation with a
//! test clock, request changes after a policy reload, WatchApprovals, restarts (clean and
//! kill -9), and health/reflection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon::api::client::{self, ClientOptions, Clients};
use cordon::api::pb;
use cordon::config::{ApproverToken, CertUser, Config, GrpcTls};
use cordon::secret::Secret;
use cordon::store::AuditRecord;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{self, TestClock, TestDaemon, USERS, token_of};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

const INGEST_TOKEN: &str = "siem-ingest-token";

/// Approver tokens for every known user (as SHA-256 hashes only), one ingest token, no policy
/// file watcher (reloads happen when a test asks for them).
fn configure_tokens(cfg: &mut Config) {
    cfg.grpc.approvers = support::approvers(&USERS);
    cfg.grpc
        .ingest_tokens
        .insert("siem".into(), support::sha_ref(INGEST_TOKEN));
    cfg.policy.watch = false;
}

/// A daemon with token approvers and a hand-driven clock.
async fn start_tokens() -> (TestDaemon, TestClock) {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let clock = TestClock::new();
    let d = support::start_in(dir, cfg, Some(clock.clone())).await;
    (d, clock)
}

/// Posts a fixture over HTTP; returns the case id.
async fn post_fixture(d: &TestDaemon, format: &str, file: &str) -> String {
    let ack = d.ingest_fixture(format, file).await;
    assert_eq!(ack["duplicate"], json!(false), "{ack}");
    ack["case_id"].as_str().unwrap().to_string()
}

/// The pending approval of `kind` in `case_id`, via ListPending.
async fn pending_of(c: &mut Clients, case_id: &str, kind: &str) -> pb::Approval {
    let list = c
        .approvals
        .list_pending(pb::ListPendingRequest::default())
        .await
        .expect("ListPending")
        .into_inner()
        .approvals;
    let found: Vec<pb::Approval> = list
        .iter()
        .filter(|a| a.case_id == case_id && a.action == kind)
        .cloned()
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one pending {kind} in case {case_id}, got: {:?}",
        list.iter()
            .map(|a| (&a.case_id, &a.action, &a.state))
            .collect::<Vec<_>>()
    );
    found.into_iter().next().unwrap()
}

async fn pending_ids(c: &mut Clients) -> Vec<String> {
    c.approvals
        .list_pending(pb::ListPendingRequest::default())
        .await
        .expect("ListPending")
        .into_inner()
        .approvals
        .into_iter()
        .map(|a| a.approval_id)
        .collect()
}

async fn get(c: &mut Clients, id: &str) -> pb::Approval {
    c.approvals
        .get_approval(pb::GetApprovalRequest {
            approval_id: id.into(),
        })
        .await
        .expect("GetApproval")
        .into_inner()
}

fn vote_req(id: &str, hash: &str) -> pb::VoteRequest {
    pb::VoteRequest {
        approval_id: id.into(),
        request_hash: hash.into(),
        comment: String::new(),
    }
}

async fn approve(c: &mut Clients, id: &str, hash: &str) -> Result<pb::VoteResponse, tonic::Status> {
    c.approvals
        .approve(vote_req(id, hash))
        .await
        .map(|r| r.into_inner())
}

async fn deny(c: &mut Clients, id: &str, hash: &str) -> Result<pb::VoteResponse, tonic::Status> {
    c.approvals
        .deny(vote_req(id, hash))
        .await
        .map(|r| r.into_inner())
}

#[track_caller]
fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got OK: {v:?}"),
        Err(s) => assert_eq!(s.code(), code, "{what}: {s:?}"),
    }
}

/// Audit records of `kind` about action `id`.
fn audit_of(d: &TestDaemon, kind: &str, id: &str) -> Vec<AuditRecord> {
    d.audit()
        .into_iter()
        .filter(|r| r.body.kind == kind && r.body.action_id.as_deref() == Some(id))
        .collect()
}

/// The next watch event for which `f` holds (others are skipped), within 10 s.
async fn next_event(
    s: &mut tonic::Streaming<pb::ApprovalEvent>,
    what: &str,
    mut f: impl FnMut(&pb::approval_event::Event) -> bool,
) -> pb::approval_event::Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, s.message())
            .await
            .unwrap_or_else(|_| panic!("no {what} on WatchApprovals within 10 s"))
            .expect("WatchApprovals failed")
            .expect("WatchApprovals ended");
        let ev = ev.event.expect("an ApprovalEvent without an event");
        if f(&ev) {
            return ev;
        }
    }
}

fn approval_event(
    ev: &pb::approval_event::Event,
    id_or_case: &str,
    state: &str,
) -> Option<pb::Approval> {
    match ev {
        pb::approval_event::Event::Approval(a)
            if (a.approval_id == id_or_case || a.case_id == id_or_case) && a.state == state =>
        {
            Some(a.clone())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A private CA that writes its PEMs into a directory.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_pem: PathBuf,
    dir: PathBuf,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = dn(&format!("{name} test CA"));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        Pki {
            ca,
            ca_pem,
            dir: dir.to_path_buf(),
        }
    }

    /// Issues a certificate; returns (cert PEM path, key PEM path).
    fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &*self.ca).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn client(&self, file: &str, cn: &str, sans: Vec<SanType>) -> (PathBuf, PathBuf) {
        self.issue(file, cn, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn email(e: &str) -> SanType {
    SanType::Rfc822Name(e.try_into().unwrap())
}

/// A TLS daemon: server cert for localhost/127.0.0.1, client certs verified against the test CA,
/// `bob` by subject CN and `dave` by email SAN; bearer tokens for everyone as well.
struct TlsDaemon {
    d: TestDaemon,
    pki: Pki,
}

async fn start_tls() -> TlsDaemon {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let pki = Pki::new(&certs, "cordon");
    let (cert, key) = pki.issue(
        "server",
        "cordon test server",
        vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    cfg.grpc.tls = Some(GrpcTls {
        cert,
        key,
        client_ca: Some(pki.ca_pem.clone()),
    });
    cfg.grpc.cert_users = vec![
        CertUser {
            subject: "bob".into(),
            user: "bob".into(),
        },
        CertUser {
            subject: "dave@example.com".into(),
            user: "dave".into(),
        },
    ];
    let d = support::start_in(dir, cfg, Some(TestClock::new())).await;
    TlsDaemon { d, pki }
}

impl TlsDaemon {
    fn options(&self, cert: Option<&(PathBuf, PathBuf)>, token: Option<&str>) -> ClientOptions {
        ClientOptions {
            addr: format!("https://127.0.0.1:{}", self.d.running().grpc_addr.port()),
            token: token.map(|t| Secret::new(t.to_string())),
            ca: Some(self.pki.ca_pem.clone()),
            cert: cert.map(|c| c.0.clone()),
            key: cert.map(|c| c.1.clone()),
            server_name: Some("localhost".into()),
        }
    }

    async fn connect(&self, cert: Option<&(PathBuf, PathBuf)>, token: Option<&str>) -> Clients {
        client::connect(&self.options(cert, token))
            .await
            .expect("connect over TLS")
    }
}

// ---------------------------------------------------------------------------------------------
// 1. One approver, bearer token
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_approver_approves_a_one_approver_request_end_to_end() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;

    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let id = a.approval_id.clone();
    assert_eq!(a.tier, "one_approver", "{a:?}");
    assert_eq!(a.state, "awaiting_approval");
    assert_eq!(a.target.as_ref().unwrap().id, "ws-042");
    assert_eq!((a.approvals_needed, a.approvals_given), (1, 0));
    assert!(a.votes.is_empty());
    assert_eq!(a.request_hash.len(), 64, "{a:?}");
    assert!(a.requester.starts_with("playbook:"), "{}", a.requester);
    assert!(a.deadline_unix_ms > a.created_unix_ms);
    assert_eq!(a.case.as_ref().unwrap().case_id, case_id);
    assert!(!a.evidence.is_empty(), "the approver sees evidence");
    assert!(
        a.determining_policies
            .contains(&"isolate-host-one-approver".to_string()),
        "{:?}",
        a.determining_policies
    );
    assert!(a.blast_radius.as_ref().unwrap().reversible);

    let mut req = vote_req(&id, &a.request_hash);
    req.comment = "EDR shows the encoded PowerShell; isolating".into();
    let r = alice.approvals.approve(req).await.unwrap().into_inner();
    assert_eq!(r.outcome, "approved", "{r:?}");
    let after = r.approval.unwrap();
    assert_eq!(after.state, "approved");
    assert_eq!(after.approvals_given, 1);

    // GetApproval shows the vote as cast.
    let got = get(&mut alice, &id).await;
    assert_eq!(got.state, "approved");
    assert_eq!(got.votes.len(), 1, "{:?}", got.votes);
    let v = &got.votes[0];
    assert_eq!(
        (
            v.user.as_str(),
            v.channel.as_str(),
            v.identity.as_str(),
            v.decision.as_str()
        ),
        ("alice", "grpc", "token", "approve")
    );
    assert!(v.counted);
    assert_eq!(v.request_hash, a.request_hash);
    assert!(v.at_unix_ms > 0);
    // No longer pending.
    assert!(!pending_ids(&mut alice).await.contains(&id));

    // The case over gRPC shows the action approved.
    let case = alice
        .cases
        .get_case(pb::GetCaseRequest {
            case_id: case_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let action = case
        .actions
        .iter()
        .find(|x| x.action_id == id)
        .expect("the approved action is in its case");
    assert_eq!(action.state, "approved");
    assert_eq!(action.action, "isolate_host");

    // The audit log: the vote with who/how/what, and the re-check at approvals reached.
    let votes = audit_of(&d, "vote", &id);
    assert_eq!(votes.len(), 1, "{votes:?}");
    let data = &votes[0].body.data;
    assert_eq!(data["user"], json!("alice"), "{data}");
    assert_eq!(data["channel"], json!("grpc"));
    assert_eq!(data["identity"], json!("token"));
    assert_eq!(data["decision"], json!("approve"));
    assert_eq!(data["request_hash"], json!(a.request_hash));
    assert_eq!(data["reviewed_hash"], json!(a.request_hash));
    assert_eq!(
        data["comment"],
        json!("EDR shows the encoded PowerShell; isolating")
    );
    let outcome = data["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome == "counted" || outcome == "approved",
        "vote outcome {outcome}"
    );
    let rechecks: Vec<_> = audit_of(&d, "policy_decision", &id)
        .into_iter()
        .filter(|r| r.body.data["phase"] == json!("approvals_reached"))
        .collect();
    assert_eq!(rechecks.len(), 1);
    assert_eq!(rechecks[0].body.data["allowed"], json!(true));
    assert_eq!(rechecks[0].body.data["approvals"], json!(1));
    assert!(
        audit_of(&d, "action_transition", &id)
            .iter()
            .any(|r| r.body.data["to"] == json!("approved")),
        "no action_transition to approved"
    );
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Two-person over mTLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_request_over_mtls_needs_two_distinct_people() {
    let t = start_tls().await;
    let bob_cert = t.pki.client("bob", "bob", vec![]);
    // dave is identified by his email SAN (the CN maps to nobody).
    let dave_cert = t
        .pki
        .client("dave", "Dave Example", vec![email("dave@example.com")]);
    let case_id = post_fixture(&t.d, "sentinel", "sentinel.json").await;

    let mut bob = t.connect(Some(&bob_cert), None).await;
    let a = pending_of(&mut bob, &case_id, "contain_cloud_resource").await;
    let id = a.approval_id.clone();
    assert_eq!(a.tier, "two_person", "{a:?}");
    assert_eq!((a.approvals_needed, a.approvals_given), (2, 0));
    assert_eq!(a.blast_radius.as_ref().unwrap().environment, "production");

    let r = approve(&mut bob, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "counted", "{r:?}");
    let ap = r.approval.unwrap();
    assert_eq!(
        (ap.state.as_str(), ap.approvals_given),
        ("awaiting_approval", 1)
    );
    assert_eq!(ap.votes.len(), 1);
    assert_eq!(
        (ap.votes[0].user.as_str(), ap.votes[0].identity.as_str()),
        ("bob", "mtls")
    );

    // The same person again (same certificate, then his token) is not a second approver.
    let r = approve(&mut bob, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "already_counted", "{r:?}");
    let ap = r.approval.unwrap();
    assert_eq!(
        (ap.state.as_str(), ap.approvals_given),
        ("awaiting_approval", 1)
    );
    let mut bob_token = t.connect(None, Some(&token_of("bob"))).await;
    let r = approve(&mut bob_token, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "already_counted", "{r:?}");
    assert_eq!(r.approval.unwrap().approvals_given, 1);
    assert_eq!(get(&mut bob, &id).await.state, "awaiting_approval");

    let mut dave = t.connect(Some(&dave_cert), None).await;
    let r = approve(&mut dave, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "approved", "{r:?}");
    let ap = r.approval.unwrap();
    assert_eq!((ap.state.as_str(), ap.approvals_given), ("approved", 2));
    // The answer shows the request's case and alert evidence as a read of it does.
    let read = get(&mut dave, &id).await;
    assert_eq!(ap.evidence, read.evidence);
    assert_eq!(
        ap.case.as_ref().map(|c| (&c.case_id, c.alert_count)),
        read.case.as_ref().map(|c| (&c.case_id, c.alert_count))
    );
    assert!(ap.case.is_some() && !ap.evidence.is_empty());
    let who: Vec<(&str, &str, bool)> = ap
        .votes
        .iter()
        .map(|v| (v.user.as_str(), v.identity.as_str(), v.counted))
        .collect();
    assert!(who.contains(&("bob", "mtls", true)), "{who:?}");
    assert!(who.contains(&("dave", "mtls", true)), "{who:?}");
    let recheck = audit_of(&t.d, "policy_decision", &id)
        .into_iter()
        .find(|r| r.body.data["phase"] == json!("approvals_reached"))
        .expect("a re-check at approvals reached");
    assert_eq!(recheck.body.data["approvals"], json!(2));
    assert_eq!(recheck.body.data["allowed"], json!(true));
    assert_eq!(t.d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_identities_are_verified_and_mapped() {
    let t = start_tls().await;
    let case_id = post_fixture(&t.d, "sentinel", "sentinel.json").await;

    // A certificate from the right CA whose names map to no user: unauthenticated.
    let eve = t.pki.client("eve", "eve", vec![email("eve@example.com")]);
    let mut c = t.connect(Some(&eve), None).await;
    expect_code(
        c.approvals
            .list_pending(pb::ListPendingRequest::default())
            .await,
        Code::Unauthenticated,
        "unmapped certificate",
    );

    // A certificate naming bob but signed by another CA never gets through.
    let other_dir = tempfile::tempdir().unwrap();
    let rogue = Pki::new(other_dir.path(), "rogue");
    let fake_bob = rogue.client("fake-bob", "bob", vec![]);
    match client::connect(&t.options(Some(&fake_bob), None)).await {
        Err(_) => {}
        Ok(mut c) => {
            let r = c
                .approvals
                .list_pending(pb::ListPendingRequest::default())
                .await;
            assert!(r.is_err(), "a foreign CA's certificate was accepted: {r:?}");
        }
    }

    // TLS without a client certificate: a token approver works, an anonymous caller does not.
    let mut carol = t.connect(None, Some(&token_of("carol"))).await;
    let a = pending_of(&mut carol, &case_id, "contain_cloud_resource").await;
    let mut anon = t.connect(None, None).await;
    expect_code(
        anon.approvals
            .get_approval(pb::GetApprovalRequest {
                approval_id: a.approval_id.clone(),
            })
            .await,
        Code::Unauthenticated,
        "TLS without credentials",
    );

    // A valid certificate with a bad bearer token: the token is judged, not the certificate.
    let bob_cert = t.pki.client("bob", "bob", vec![]);
    let mut mixed = t.connect(Some(&bob_cert), Some("not-a-token")).await;
    expect_code(
        approve(&mut mixed, &a.approval_id, "").await,
        Code::Unauthenticated,
        "valid cert, unknown token",
    );
    assert_eq!(get(&mut carol, &a.approval_id).await.approvals_given, 0);

    // Plain HTTP/2 to the TLS port fails.
    let plain = support::try_grpc(&t.d.grpc_url(), Some(&token_of("carol"))).await;
    if let Ok(mut c) = plain {
        let r = c
            .approvals
            .list_pending(pb::ListPendingRequest::default())
            .await;
        assert!(r.is_err(), "plaintext reached a TLS listener: {r:?}");
    }
    assert_eq!(t.d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Refusals and authentication failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_votes_and_wrong_credentials_get_the_right_codes() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    // A requester can never be an approver: an approver named like a playbook requester is a
    // configuration error (the engine and the policies also refuse the requester's own vote;
    // see policies/tests/approvers.toml).
    let mut bad = cfg.clone();
    bad.grpc.approvers.push(ApproverToken {
        user: "playbook:malware_execution".into(),
        token: support::sha_ref("playbook-token"),
    });
    let problems = cordon::daemon::validate(bad, "test")
        .err()
        .expect("refused");
    assert!(
        problems.iter().any(|p| p.key
            == "grpc.approvers[".to_string() + &(cfg.grpc.approvers.len()).to_string() + "].user"),
        "{problems:?}"
    );
    let d = support::start_in(dir, cfg, Some(TestClock::new())).await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let id = a.approval_id.clone();

    // mallory is in no group: PERMISSION_DENIED, and the refusal is recorded.
    let mut mallory = d.grpc_as("mallory").await;
    expect_code(
        approve(&mut mallory, &id, &a.request_hash).await,
        Code::PermissionDenied,
        "mallory approves",
    );
    expect_code(
        deny(&mut mallory, &id, &a.request_hash).await,
        Code::PermissionDenied,
        "mallory denies",
    );
    let refused: Vec<_> = audit_of(&d, "vote", &id)
        .into_iter()
        .filter(|r| r.body.data["user"] == json!("mallory"))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for r in &refused {
        assert_eq!(
            r.body.data["outcome"],
            json!("refused"),
            "{:?}",
            r.body.data
        );
        assert_eq!(r.body.data["channel"], json!("grpc"));
        assert_eq!(r.body.data["identity"], json!("token"));
    }

    assert_eq!(a.requester, "playbook:malware_execution");

    // Unknown token, no credentials: UNAUTHENTICATED, and nothing is recorded for them.
    let before = d.audit().len();
    let mut unknown = d.grpc(Some("guessed-token")).await;
    expect_code(
        approve(&mut unknown, &id, "").await,
        Code::Unauthenticated,
        "unknown token",
    );
    expect_code(
        unknown
            .approvals
            .list_pending(pb::ListPendingRequest::default())
            .await,
        Code::Unauthenticated,
        "unknown token lists",
    );
    let mut anon = d.grpc(None).await;
    expect_code(
        approve(&mut anon, &id, "").await,
        Code::Unauthenticated,
        "no credentials",
    );
    expect_code(
        anon.cases
            .get_case(pb::GetCaseRequest {
                case_id: case_id.clone(),
            })
            .await,
        Code::Unauthenticated,
        "no credentials reads a case",
    );
    expect_code(
        anon.alerts
            .submit_alert(pb::SubmitAlertRequest {
                format: "elastic".into(),
                payload: support::fixture("elastic.json"),
            })
            .await,
        Code::Unauthenticated,
        "anonymous submit while ingest tokens are configured",
    );
    assert_eq!(
        d.audit().len(),
        before,
        "unauthenticated calls changed the log"
    );

    // Roles do not mix: an ingest token cannot vote, an approver token cannot submit.
    let mut siem = d.grpc(Some(INGEST_TOKEN)).await;
    expect_code(
        approve(&mut siem, &id, "").await,
        Code::PermissionDenied,
        "ingest token votes",
    );
    expect_code(
        siem.approvals
            .list_pending(pb::ListPendingRequest::default())
            .await,
        Code::PermissionDenied,
        "ingest token lists",
    );
    expect_code(
        alice
            .alerts
            .submit_alert(pb::SubmitAlertRequest {
                format: "elastic".into(),
                payload: support::fixture("elastic.json"),
            })
            .await,
        Code::PermissionDenied,
        "approver token submits",
    );
    // ...while the ingest token does submit (a re-delivery of the same alert).
    let ack = siem
        .alerts
        .submit_alert(pb::SubmitAlertRequest {
            format: "elastic".into(),
            payload: support::fixture("elastic.json"),
        })
        .await
        .expect("ingest token submits")
        .into_inner();
    assert_eq!(ack.case_id, case_id);
    assert!(ack.duplicate);

    // Unknown ids.
    expect_code(
        approve(&mut alice, "01NOSUCHAPPROVAL0000000000", "").await,
        Code::NotFound,
        "vote on an unknown id",
    );
    expect_code(
        alice
            .approvals
            .get_approval(pb::GetApprovalRequest {
                approval_id: "01NOSUCHAPPROVAL0000000000".into(),
            })
            .await,
        Code::NotFound,
        "get an unknown id",
    );

    // None of it moved the request.
    let now = get(&mut alice, &id).await;
    assert_eq!(now.state, "awaiting_approval");
    assert_eq!(now.approvals_given, 0);
    assert!(
        now.votes.is_empty(),
        "refused votes listed as votes: {:?}",
        now.votes
    );
    assert!(pending_ids(&mut alice).await.contains(&id));
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 4. Deny
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authorised_deny_rejects_and_later_votes_fail() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let id = a.approval_id.clone();

    let r = deny(&mut alice, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "rejected", "{r:?}");
    assert_eq!(r.approval.as_ref().unwrap().state, "rejected");
    let got = get(&mut alice, &id).await;
    assert_eq!(got.state, "rejected");
    assert_eq!(got.votes.len(), 1);
    assert_eq!(got.votes[0].decision, "deny");
    assert!(!got.votes[0].counted, "a deny is not an approval");
    assert_eq!(got.approvals_given, 0);
    assert!(!pending_ids(&mut alice).await.contains(&id));

    // Nobody can approve it afterwards.
    let mut carol = d.grpc_as("carol").await;
    expect_code(
        approve(&mut carol, &id, "").await,
        Code::FailedPrecondition,
        "approve after reject",
    );
    expect_code(
        approve(&mut alice, &id, &a.request_hash).await,
        Code::FailedPrecondition,
        "the denier approves after reject",
    );
    assert_eq!(get(&mut alice, &id).await.state, "rejected");
    assert!(
        audit_of(&d, "action_transition", &id)
            .iter()
            .any(|r| r.body.data["to"] == json!("rejected"))
    );
    assert!(
        audit_of(&d, "vote", &id)
            .iter()
            .any(|r| r.body.data["user"] == json!("alice")
                && r.body.data["decision"] == json!("deny")
                && r.body.data["outcome"] == json!("rejected"))
    );
    let case = d.case(&case_id).await;
    let st = case["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action_id"] == json!(id))
        .unwrap()["state"]
        .clone();
    assert_eq!(st, json!("rejected"));
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Escalation and expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_then_expiry_with_a_test_clock() {
    let (d, clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let id = a.approval_id.clone();
    // High severity and the policy's own @approval_timeout_mins: 60 minutes.
    assert_eq!(a.deadline_unix_ms - a.created_unix_ms, 60 * 60 * 1000);

    // Nothing is due yet.
    d.running().engine.tick().await;
    assert_eq!(get(&mut alice, &id).await.state, "awaiting_approval");

    // Past the escalation point (half the deadline): one Escalation event.
    let mut watch = alice
        .approvals
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await
        .unwrap()
        .into_inner();
    clock.advance_secs(31 * 60);
    d.running().engine.tick().await;
    let ev = next_event(
        &mut watch,
        "escalation",
        |e| matches!(e, pb::approval_event::Event::Escalation(x) if x.approval_id == id),
    )
    .await;
    let pb::approval_event::Event::Escalation(esc) = ev else {
        unreachable!()
    };
    assert_eq!(esc.approvals_missing, 1);
    assert_eq!(esc.deadline_unix_ms, a.deadline_unix_ms);
    assert_eq!(audit_of(&d, "approval_escalated", &id).len(), 1);
    // Still pending and still votable before the deadline.
    assert_eq!(get(&mut alice, &id).await.state, "awaiting_approval");
    assert!(pending_ids(&mut alice).await.contains(&id));
    // A second tick does not escalate again.
    d.running().engine.tick().await;
    assert_eq!(audit_of(&d, "approval_escalated", &id).len(), 1);

    // Past the deadline: expired, gone from the pending list, votes refused.
    clock.advance_secs(30 * 60);
    d.running().engine.tick().await;
    next_event(&mut watch, "the expired request", |e| {
        approval_event(e, &id, "expired").is_some()
    })
    .await;
    let got = get(&mut alice, &id).await;
    assert_eq!(got.state, "expired");
    assert!(!pending_ids(&mut alice).await.contains(&id));
    expect_code(
        approve(&mut alice, &id, &a.request_hash).await,
        Code::FailedPrecondition,
        "approve after expiry",
    );
    assert_eq!(get(&mut alice, &id).await.state, "expired");
    let to_expired: Vec<_> = audit_of(&d, "action_transition", &id)
        .into_iter()
        .filter(|r| r.body.data["to"] == json!("expired"))
        .collect();
    assert_eq!(to_expired.len(), 1, "{to_expired:?}");
    assert_eq!(to_expired[0].body.data["from"], json!("awaiting_approval"));
    // The watch is closed first: an open one blocks shutdown (see
    // `an_open_watch_stream_does_not_block_a_clean_shutdown`).
    drop(watch);
    drop(alice);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_after_the_deadline_is_refused_before_the_expiry_pass_runs() {
    let (d, clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    clock.advance_secs(61 * 60);
    // No tick: the vote itself must notice the deadline.
    expect_code(
        approve(&mut alice, &a.approval_id, &a.request_hash).await,
        Code::FailedPrecondition,
        "approve past the deadline",
    );
    let got = get(&mut alice, &a.approval_id).await;
    assert_eq!(got.state, "expired");
    assert_eq!(got.approvals_given, 0);
    assert!(!pending_ids(&mut alice).await.contains(&a.approval_id));
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 6. A changed request
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_changes_the_request_and_drops_earlier_approvals() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "sentinel", "sentinel.json").await;
    let mut bob = d.grpc_as("bob").await;
    let mut dave = d.grpc_as("dave").await;
    let a = pending_of(&mut bob, &case_id, "contain_cloud_resource").await;
    let id = a.approval_id.clone();
    let old_hash = a.request_hash.clone();
    let r = approve(&mut bob, &id, &old_hash).await.unwrap();
    assert_eq!(r.outcome, "counted");
    assert_eq!(r.approval.unwrap().approvals_given, 1);

    // A harmless extra policy: the policy set hash, and so the request hash, changes.
    std::fs::write(
        d.config.policies_dir.join("zz_extra.cedar"),
        "@id(\"zz-extra-enrich\")\n@reason(\"enrichment stays automatic\")\npermit (principal, action == Cordon::Action::\"enrich\", resource);\n",
    )
    .unwrap();
    let (s, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(s, 200, "{body}");
    assert_ne!(body["policy_hash"], json!(a.policy_hash), "{body}");

    let now = get(&mut bob, &id).await;
    assert_ne!(now.request_hash, old_hash, "the request hash must change");
    assert_eq!(now.state, "awaiting_approval");
    assert_eq!(now.approvals_given, 0, "{now:?}");
    assert_eq!(now.votes.len(), 1);
    assert_eq!(now.votes[0].user, "bob");
    assert!(
        !now.votes[0].counted,
        "an approval of the old request still counts"
    );
    assert_eq!(now.votes[0].request_hash, old_hash);
    let listed = pending_of(&mut bob, &case_id, "contain_cloud_resource").await;
    assert_eq!(listed.approvals_given, 0);
    assert_eq!(listed.request_hash, now.request_hash);

    // A vote for what was reviewed before is refused.
    expect_code(
        approve(&mut dave, &id, &old_hash).await,
        Code::FailedPrecondition,
        "vote carrying the old request hash",
    );
    assert!(
        audit_of(&d, "vote", &id)
            .iter()
            .any(|r| r.body.data["outcome"] == json!("refused_request_changed"))
    );
    assert_eq!(get(&mut bob, &id).await.approvals_given, 0);

    // Two fresh votes by two people approve it; bob's earlier vote does not make his new one a
    // repeat.
    let r = approve(&mut bob, &id, &now.request_hash).await.unwrap();
    assert_eq!(r.outcome, "counted", "{r:?}");
    assert_eq!(r.approval.unwrap().approvals_given, 1);
    let r = approve(&mut dave, &id, &now.request_hash).await.unwrap();
    assert_eq!(r.outcome, "approved", "{r:?}");
    let ap = r.approval.unwrap();
    assert_eq!((ap.state.as_str(), ap.approvals_given), ("approved", 2));
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_request_keeps_its_counted_votes_after_a_policy_reload() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let r = approve(&mut alice, &a.approval_id, &a.request_hash)
        .await
        .unwrap();
    assert_eq!(r.outcome, "approved");

    // An unrelated policy change after the decision.
    std::fs::write(
        d.config.policies_dir.join("zz_extra.cedar"),
        "@id(\"zz-extra-enrich\")\n@reason(\"enrichment stays automatic\")\npermit (principal, action == Cordon::Action::\"enrich\", resource);\n",
    )
    .unwrap();
    let (s, body) = d.post("/v1/policies/reload", "").await;
    assert_eq!(s, 200, "{body}");

    // The record of the decision must not be rewritten by it: alice's approval did count, and
    // it was given for the request hash she reviewed.
    let got = get(&mut alice, &a.approval_id).await;
    assert_eq!(got.state, "approved");
    assert_eq!(got.votes.len(), 1);
    assert!(
        got.votes[0].counted,
        "the approval that approved the request is now shown as not counted: {:?}",
        got.votes[0]
    );
    assert_eq!(
        got.approvals_given, 1,
        "an approved one-approver request now shows {} approvals given",
        got.approvals_given
    );
    assert_eq!(got.request_hash, a.request_hash);
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 7. WatchApprovals
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_pushes_new_and_changed_requests() {
    let (d, _clock) = start_tokens().await;
    let mut alice = d.grpc_as("alice").await;
    let mut anon = d.grpc(None).await;
    match anon
        .approvals
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await
    {
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s:?}"),
        Ok(r) => {
            // Some servers report the status on the first message instead.
            let first = r.into_inner().message().await;
            assert!(
                matches!(&first, Err(s) if s.code() == Code::Unauthenticated),
                "anonymous watch: {first:?}"
            );
        }
    }

    let mut watch = alice
        .approvals
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await
        .unwrap()
        .into_inner();
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let ev = next_event(&mut watch, "the new isolate_host request", |e| {
        approval_event(e, &case_id, "awaiting_approval").is_some_and(|a| a.action == "isolate_host")
    })
    .await;
    let pb::approval_event::Event::Approval(new) = ev else {
        unreachable!()
    };
    assert_eq!(new.target.as_ref().unwrap().id, "ws-042");
    assert_eq!(new.approvals_given, 0);
    // It is the request ListPending shows.
    let listed = pending_of(&mut alice, &case_id, "isolate_host").await;
    assert_eq!(listed.approval_id, new.approval_id);
    assert_eq!(listed.request_hash, new.request_hash);

    let r = approve(&mut alice, &new.approval_id, &new.request_hash)
        .await
        .unwrap();
    assert_eq!(r.outcome, "approved");
    let ev = next_event(&mut watch, "the approved request", |e| {
        approval_event(e, &new.approval_id, "approved").is_some()
    })
    .await;
    let pb::approval_event::Event::Approval(changed) = ev else {
        unreachable!()
    };
    assert_eq!(changed.votes.len(), 1);
    assert_eq!(changed.votes[0].user, "alice");
    assert_eq!(changed.approvals_given, 1);
    // The watch is closed first: an open one blocks shutdown (see
    // `an_open_watch_stream_does_not_block_a_clean_shutdown`).
    drop(watch);
    drop(alice);
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_stream_does_not_block_a_clean_shutdown() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    // A clean drain takes well under a second; the bound only keeps a failure short.
    cfg.shutdown.drain_timeout_secs = 5;
    let d = support::start_in(dir, cfg, Some(TestClock::new())).await;
    let mut alice = d.grpc_as("alice").await;
    let mut watch = alice
        .approvals
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await
        .unwrap()
        .into_inner();
    // The stream is live: it delivers the request of a new alert.
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    next_event(&mut watch, "the new request", |e| {
        approval_event(e, &case_id, "awaiting_approval").is_some()
    })
    .await;

    // A dashboard or chat bridge keeps its watch open across a daemon restart.
    let code = d.stop().await;
    assert_eq!(
        code, 0,
        "an open WatchApprovals stream made shutdown miss its drain deadline (exit {code})"
    );
    // And the watcher is told the stream is over instead of hanging (events announced before
    // the shutdown may still be delivered first).
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await
    .expect("the watch stream neither ended nor failed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pending_pages_oldest_first() {
    let (d, _clock) = start_tokens().await;
    post_fixture(&d, "elastic", "elastic.json").await;
    post_fixture(&d, "sentinel", "sentinel.json").await;
    let mut carol = d.grpc_as("carol").await;
    let all = pending_ids(&mut carol).await;
    assert!(all.len() >= 2, "{all:?}");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ids are ULIDs: oldest first means sorted");
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = carol
            .approvals
            .list_pending(pb::ListPendingRequest {
                limit: 1,
                after: after.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .approvals;
        assert!(page.len() <= 1, "limit 1 returned {}", page.len());
        let Some(a) = page.into_iter().next() else {
            break;
        };
        assert_eq!(a.state, "awaiting_approval");
        after = a.approval_id.clone();
        paged.push(a.approval_id);
        assert!(paged.len() <= all.len(), "paging does not end: {paged:?}");
    }
    assert_eq!(paged, all);
    // ListCases sees both cases.
    let cases = carol
        .cases
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .cases;
    assert_eq!(cases.len(), 2);
    assert_eq!(d.stop().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_requests_and_votes_survive_a_restart() {
    let (d, clock) = start_tokens().await;
    let case_id = post_fixture(&d, "sentinel", "sentinel.json").await;
    let mut bob = d.grpc_as("bob").await;
    let a = pending_of(&mut bob, &case_id, "contain_cloud_resource").await;
    let id = a.approval_id.clone();
    assert_eq!(
        approve(&mut bob, &id, &a.request_hash)
            .await
            .unwrap()
            .outcome,
        "counted"
    );
    drop(bob);

    // Stop cleanly, keeping the workspace.
    let mut d = d;
    let code = d.running.take().unwrap().shutdown().await;
    assert_eq!(code, 0);
    let TestDaemon { dir, config, .. } = d;
    let d = support::start_in(dir, config, Some(clock)).await;

    let mut dave = d.grpc_as("dave").await;
    let p = pending_of(&mut dave, &case_id, "contain_cloud_resource").await;
    assert_eq!(p.approval_id, id);
    assert_eq!(p.request_hash, a.request_hash);
    assert_eq!(p.approvals_given, 1);
    assert_eq!(p.votes.len(), 1);
    assert_eq!(
        (
            p.votes[0].user.as_str(),
            p.votes[0].identity.as_str(),
            p.votes[0].counted
        ),
        ("bob", "token", true)
    );
    // bob is still counted once, not twice.
    let mut bob = d.grpc_as("bob").await;
    assert_eq!(
        approve(&mut bob, &id, &a.request_hash)
            .await
            .unwrap()
            .outcome,
        "already_counted"
    );
    let r = approve(&mut dave, &id, &a.request_hash).await.unwrap();
    assert_eq!(r.outcome, "approved", "{r:?}");
    assert_eq!(r.approval.unwrap().state, "approved");
    assert_eq!(d.stop().await, 0);
}

/// The gRPC address a child daemon logged in its "cordon is serving" line.
fn child_grpc_addr(logs: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains("cordon is serving"))?;
    let at = line.find("grpc")? + 4;
    let rest = &line[at..];
    let start = rest.find("127.0.0.1:")?;
    let addr: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    Some(addr)
}

async fn child_clients(d: &crate::support::Daemon, user: &str) -> Clients {
    // `/readyz` may answer a moment before the "serving" line is written.
    let addr = support::eventually(10, || async { child_grpc_addr(&d.logs()) }).await;
    support::grpc(&format!("http://{addr}"), Some(&token_of(user))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_votes_survive_kill_9() {
    use crate::support::{Daemon, http_client, write_config};
    let (dir, _) = support::workspace();
    let root = dir.path();
    let extra = format!(
        "[policy]\nwatch = false\n{}{}",
        support::enrichment_toml(root),
        support::approvers_toml(&USERS),
    );
    let cfg = write_config(root, &extra);

    let mut d = Daemon::start(root, "grpc-first", support::serve_args(&cfg)).await;
    let r = http_client()
        .post(format!("{}/v1/alerts/sentinel", d.base))
        .body(support::fixture("sentinel.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", d.logs());
    let ack: Value = r.json().await.unwrap();
    let case_id = ack["case_id"].as_str().unwrap().to_string();
    let mut bob = child_clients(&d, "bob").await;
    let a = pending_of(&mut bob, &case_id, "contain_cloud_resource").await;
    let r = approve(&mut bob, &a.approval_id, &a.request_hash)
        .await
        .unwrap();
    assert_eq!(r.outcome, "counted");
    // Acknowledged means durable: no clean shutdown.
    d.kill9();
    drop(bob);

    let d = Daemon::start(root, "grpc-second", support::serve_args(&cfg)).await;
    let mut dave = child_clients(&d, "dave").await;
    let p = pending_of(&mut dave, &case_id, "contain_cloud_resource").await;
    assert_eq!(p.approval_id, a.approval_id);
    assert_eq!(p.approvals_given, 1, "{p:?}");
    assert_eq!(p.votes.len(), 1);
    assert_eq!(p.votes[0].user, "bob");
    let r = approve(&mut dave, &a.approval_id, &a.request_hash)
        .await
        .unwrap();
    assert_eq!(r.outcome, "approved", "{r:?}");
    drop(d);
}

// ---------------------------------------------------------------------------------------------
// 9. Health and reflection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let (d, _clock) = start_tokens().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", d.running().grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "cordon.v1.Approvals",
        "cordon.v1.Alerts",
        "cordon.v1.Cases",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    expect_code(
        health
            .check(HealthCheckRequest {
                service: "cordon.v1.NoSuchService".into(),
            })
            .await,
        Code::NotFound,
        "health of an unknown service",
    );

    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("reflection answers")
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in ["cordon.v1.Alerts", "cordon.v1.Approvals", "cordon.v1.Cases"] {
        assert!(names.contains(&s.to_string()), "{s} not in {names:?}");
    }
    assert_eq!(d.stop().await, 0);
}

/// A watcher that stops reading is told to resync instead of growing the daemon's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_gets_a_resync_marker() {
    let (d, _clock) = start_tokens().await;
    let mut alice = d.grpc_as("alice").await;
    let mut watch = alice
        .approvals
        .watch_approvals(pb::WatchApprovalsRequest {})
        .await
        .unwrap()
        .into_inner();
    // Far more changes than the per-watcher buffers hold (1,024 announced + 64 queued), while
    // the watcher reads nothing.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/alerts", d.base);
    let mut posts = Vec::new();
    for w in 0..8 {
        let (http, url) = (http.clone(), url.clone());
        posts.push(tokio::spawn(async move {
            for i in (w..2000).step_by(8) {
                let body = json!({
                    "source_alert_id": format!("lag-{i}"), "title": "t", "severity": "high",
                    "rule": {"id": format!("lag-rule-{i}"), "name": "Suspicious PowerShell EncodedCommand"},
                    "techniques": ["T1059.001"],
                    "entities": [{"kind": "host", "value": format!("lag-{i}")}, {"kind": "file_hash", "value": format!("{i:064x}")}]
                });
                let r = http.post(&url).body(body.to_string()).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202);
            }
        }));
    }
    for p in posts {
        p.await.unwrap();
    }
    let resync = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watch.message().await {
                Ok(Some(pb::ApprovalEvent {
                    event: Some(pb::approval_event::Event::Resync(r)),
                })) => return r,
                Ok(Some(_)) => continue,
                other => panic!("the watch ended without a resync marker: {other:?}"),
            }
        }
    })
    .await
    .expect("no resync marker");
    assert!(resync.missed > 0, "{resync:?}");
    drop(watch);
    assert_eq!(d.stop().await, 0);
}

/// The requester never counts, whatever the policies say: the engine refuses a vote whose user
/// is the request's requester (playbook requesters cannot authenticate as approvers at all, so
/// this goes to the engine directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requesters_vote_is_refused() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    let out = d
        .running()
        .engine
        .vote(cordon::engine::VoteCast {
            approval_id: a.approval_id.clone(),
            user: a.requester.clone(),
            channel: "grpc".into(),
            identity: "token".into(),
            approve: true,
            request_hash: None,
            comment: String::new(),
        })
        .await;
    match out {
        Err(cordon::engine::VoteError::Refused(why)) => assert!(why.contains("requester"), "{why}"),
        other => panic!("the requester's vote was not refused: {other:?}"),
    }
    let again = pending_of(&mut alice, &case_id, "isolate_host").await;
    assert_eq!(again.approvals_given, 0);
    assert_eq!(again.state, "awaiting_approval");
    assert_eq!(d.stop().await, 0);
}

/// A `ListPending` page stops short of the message limit instead of failing: requests carry
/// their evidence, so a full page of them can outgrow `grpc.max_message_bytes` (found by the
/// load generator: 1,000 realistic requests are ~1.7 MB against the 1 MiB default). Paging with
/// `after` = the last id returns every request exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pending_pages_fit_the_message_limit() {
    let (dir, mut cfg) = support::workspace();
    configure_tokens(&mut cfg);
    cfg.grpc.max_message_bytes = 8 * 1024;
    let d = support::start_in(dir, cfg, None).await;
    let mut expected = Vec::new();
    for i in 0..12 {
        let host = format!("ws-page-{i}");
        let body = crate::support::live::alert(
            &format!("page-{i}"),
            "Malware EncodedCommand",
            &["T1059"],
            &[("host", host.as_str())],
        );
        let case_id = crate::support::live::post_alert(&d, body).await;
        let a = crate::support::live::find_action(&d, &case_id, "isolate_host", None).await;
        assert_eq!(a["state"], json!("awaiting_approval"), "{a}");
        expected.push(a["action_id"].as_str().unwrap().to_string());
    }
    let mut c = d.grpc_as("alice").await;
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .approvals
            .list_pending(pb::ListPendingRequest {
                limit: 1000,
                after: after.clone(),
            })
            .await
            .expect("a page within the message limit")
            .into_inner()
            .approvals;
        let Some(last) = page.last() else { break };
        after = last.approval_id.clone();
        seen.extend(page.into_iter().map(|a| a.approval_id));
        pages += 1;
    }
    assert!(
        pages > 1,
        "12 requests with evidence do not fit one 8 KiB message"
    );
    assert_eq!(seen, expected, "every request once, in order");
}

/// Votes are served on the gRPC server's runtime of its own: with every worker of the runtime
/// that serves HTTP (where an alert storm's requests are parsed) held busy, an approver's vote is
/// still received, decided, made durable and answered. Before, the gRPC server shared that
/// runtime, and under a storm a vote waited there for a worker twice (its request, the engine's
/// answer); held like this, it was not answered at all until the workers were let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_is_answered_while_every_http_worker_is_busy() {
    let (d, _clock) = start_tokens().await;
    let case_id = post_fixture(&d, "elastic", "elastic.json").await;
    let mut alice = d.grpc_as("alice").await;
    let a = pending_of(&mut alice, &case_id, "isolate_host").await;
    // Hold both workers of this runtime (the daemon's HTTP server and tasks run on it) in a
    // blocking wait until the vote has been answered or given up on.
    let (holding_tx, holding) = std::sync::mpsc::channel::<()>();
    let mut releases = Vec::new();
    for _ in 0..2 {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holding_tx = holding_tx.clone();
        releases.push(release);
        tokio::spawn(async move {
            holding_tx.send(()).unwrap();
            let _ = held.recv();
        });
    }
    for _ in 0..2 {
        holding.recv().unwrap();
    }
    // The approver's client runs apart, on a runtime of its own.
    let (url, id, hash) = (d.grpc_url(), a.approval_id.clone(), a.request_hash.clone());
    let (answered, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async move {
            let mut c = support::grpc(&url, Some(&token_of("alice"))).await;
            c.approvals
                .approve(vote_req(&id, &hash))
                .await
                .map(|r| r.into_inner().outcome)
        });
        let _ = answered.send(out);
    });
    // A bound for a hung vote, not a wait for one that works (which takes milliseconds).
    let out = answer.recv_timeout(Duration::from_secs(30));
    for r in releases {
        let _ = r.send(());
    }
    let outcome = out
        .expect("no answer to the vote while the HTTP runtime's workers were busy")
        .expect("the vote");
    assert_eq!(outcome, "approved");
    let got = get(&mut alice, &a.approval_id).await;
    assert_eq!(got.state, "approved", "{got:?}");
    assert_eq!(got.votes.len(), 1, "{:?}", got.votes);
    assert_eq!(got.votes[0].user, "alice");
    assert_eq!(d.stop().await, 0);
}
