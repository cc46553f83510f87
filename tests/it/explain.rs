//! `cordon explain`: an executed two-person action's story from the store alone, in order (raw
//! input, enrichment with source and time, the step, the decision with `@id`/`@reason`/
//! `file:line` and text from the policy set of that time although a later reload changed the
//! file, both votes with channel and identity, the re-checks, the vendor exchange, the outcome);
//! the HTTP and gRPC forms give the same facts.

use cordon::api::pb;
use serde_json::{Value, json};

use crate::replay::{OLD_REASON, recorded_run};
use crate::support;
use crate::support::{cordon, run, text};

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executed_two_person_action_is_explained_from_the_policy_set_of_its_time() {
    let r = recorded_run(true).await;
    let id = r.first_isolate.clone();
    let mut c = cordon();
    c.args(["explain", "--json", "--data-dir"])
        .arg(&r.data)
        .arg(&id);
    let out = run(c);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let story: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(story["subject"], json!({"kind": "action", "id": id}));
    let events = story["events"].as_array().unwrap();
    let at = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in {story:#}"))
    };
    let kind = |k: &'static str| move |e: &Value| e["kind"] == json!(k);
    let raw = at(&kind("alert_received"), "raw input");
    let enrich = at(&kind("enrichment"), "enrichment");
    let step = at(&kind("action_proposed"), "playbook step");
    let decision = at(
        &|e| e["kind"] == json!("policy_decision") && e["facts"]["phase"] == json!("step"),
        "step decision",
    );
    let alice = at(
        &|e| e["kind"] == json!("vote") && e["facts"]["user"] == json!("alice"),
        "alice",
    );
    let bob = at(
        &|e| e["kind"] == json!("vote") && e["facts"]["user"] == json!("bob"),
        "bob",
    );
    let pre = at(
        &|e| e["facts"]["phase"] == json!("pre_execution"),
        "pre-execution re-check",
    );
    let exchange = at(&kind("vendor_exchange"), "vendor exchange");
    let outcome = at(
        &|e| e["kind"] == json!("action_transition") && e["facts"]["to"] == json!("succeeded"),
        "outcome",
    );
    let order = [
        raw, enrich, step, decision, alice, bob, pre, exchange, outcome,
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?}\n{story:#}"
    );

    // The raw input and where it came from.
    assert_eq!(events[raw]["facts"]["source"], json!("cordon"));
    assert!(events[raw]["facts"]["raw"].to_string().contains("ws-042"));
    // Enrichment: the asset fact with its source and load time.
    let fact = events[enrich]["facts"]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["entity"]["value"] == json!("ws-042"))
        .unwrap_or_else(|| panic!("{:#}", events[enrich]));
    assert!(
        fact["source"].as_str().unwrap().starts_with("assets"),
        "{fact}"
    );
    assert!(fact["loaded_at"].is_string(), "{fact}");
    assert_eq!(fact["stale"], json!(false));
    // The decision, from the set of that time: the old @reason and line, not today's.
    let d = &events[decision]["facts"];
    assert_eq!(d["tier"], json!("two_person"), "{d:#}");
    assert_eq!(d["policy_hash"], json!(r.hashes.0));
    let pol = d["determining"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == json!("isolate-host-one-approver"))
        .unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(pol["reason"], json!(OLD_REASON));
    let now_text = std::fs::read_to_string(r.policies.join("blast_radius.cedar")).unwrap();
    assert!(
        !now_text.contains(OLD_REASON),
        "the reload changed the file"
    );
    let line_now = line_of(&now_text, "@id(\"isolate-host-one-approver\")");
    let line_then = pol["line"].as_u64().unwrap() as usize;
    assert_eq!(line_then + 2, line_now, "{pol:#}");
    assert!(
        pol["at"]
            .as_str()
            .unwrap()
            .ends_with(&format!("blast_radius.cedar:{line_then}")),
        "{pol:#}"
    );
    let old_text = pol["text"].as_str().unwrap();
    assert!(
        old_text.starts_with("@id(\"isolate-host-one-approver\")"),
        "{old_text}"
    );
    assert!(old_text.contains(OLD_REASON), "{old_text}");
    assert!(old_text.contains("context.approvals >= 2"), "{old_text}");
    // Both votes, with channel, identity and the request hash they approved.
    for v in [alice, bob] {
        let f = &events[v]["facts"];
        assert_eq!(f["channel"], json!("grpc"), "{f}");
        assert_eq!(f["identity"], json!("mtls"), "{f}");
        assert_eq!(f["decision"], json!("approve"), "{f}");
        assert!(!f["request_hash"].as_str().unwrap().is_empty(), "{f}");
    }
    assert!(events[exchange]["facts"]["phase"].is_string());
    // Vendor credentials were redacted when recorded: none is in the story.
    let all = story.to_string();
    let mut secrets = 0;
    for e in std::fs::read_dir(r.dir.path().join("secrets")).unwrap() {
        let value = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(
            value.len() >= 8 && !all.contains(value.trim()),
            "a secret is in the story"
        );
        secrets += 1;
    }
    assert!(secrets > 0);

    // Text for people says the same.
    let mut c = cordon();
    c.args(["explain", "--data-dir"]).arg(&r.data).arg(&id);
    let t = text(&run(c).stdout);
    assert!(t.contains(OLD_REASON), "{t}");
    assert!(
        t.contains(&format!("blast_radius.cedar:{line_then}")),
        "{t}"
    );
    assert!(
        t.contains("alice voted approve over grpc (mtls identity)"),
        "{t}"
    );
    assert!(t.contains("| when { context.approvals >= 2 };"), "{t}");

    // HTTP and gRPC give the same facts (the daemon restarted on the same store).
    let vendors = r.vendors;
    let d = support::start_in(r.dir, r.config, None).await;
    let (s, http) = d.get(&format!("/v1/actions/{id}/explain")).await;
    assert_eq!(s, 200, "{http}");
    assert_eq!(http, story);
    let (s, case) = d.get(&format!("/v1/cases/{}/explain", r.first_case)).await;
    assert_eq!(s, 200, "{case}");
    assert_eq!(case["subject"]["kind"], json!("case"));
    assert!(case["events"].as_array().unwrap().len() > events.len());
    let (s, _) = d.get("/v1/actions/01NOSUCHACTION/explain").await;
    assert_eq!(s, 404);

    let mut c = d.grpc_as("alice").await;
    let g = c
        .explanations
        .explain(pb::ExplainRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.subject_kind, "action");
    assert_eq!(g.events.len(), events.len());
    for (p, e) in g.events.iter().zip(events) {
        assert_eq!(json!(p.seq), e["seq"]);
        assert_eq!(json!(p.kind), e["kind"]);
        assert_eq!(json!(p.what), e["what"]);
        assert_eq!(
            serde_json::from_str::<Value>(&p.facts_json).unwrap(),
            e["facts"]
        );
    }
    d.stop().await;
    drop(vendors);
}
