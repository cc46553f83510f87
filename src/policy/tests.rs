//! Unit tests of the policy engine: action groups refused, the shipped policies against their test files, Cedar JSON shapes of recorded requests.

use super::*;

fn shipped() -> PolicyEngine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    match load_dir(&dir) {
        Ok(e) => e,
        Err(p) => panic!("shipped policies do not load: {p:#?}"),
    }
}

#[test]
fn action_groups_are_refused() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let schema = dir.path().join("cordon.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    let text = text.replace(
        "action contain_cloud_resource, release_cloud_resource appliesTo {",
        "action contain_cloud_resource appliesTo {\n    principal: Playbook, resource: CloudResource, context: StepContext\n  };\n  action release_cloud_resource in [contain_cloud_resource] appliesTo {",
    );
    std::fs::write(&schema, text).unwrap();
    let problems = match load_dir(dir.path()) {
        Ok(_) => panic!("a schema with an action group loaded"),
        Err(p) => p,
    };
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("action groups are not supported")),
        "{problems:?}"
    );
}

#[test]
fn shipped_policies_pass_their_tests() {
    let engine = shipped();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tests");
    let outcomes = testfile::run_dir(&engine, &dir).unwrap_or_else(|p| panic!("{p:#?}"));
    assert!(outcomes.len() >= 20, "{}", outcomes.len());
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{}: {}", o.name, o.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

mod direct_values {
    use super::*;
    use proptest::prelude::*;

    /// JSON as cordon puts it in requests: no nulls, no floats, and no `__entity`/`__extn`
    /// keys (Cedar's JSON format gives those a meaning).
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z0-9 .:@_-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// `cedar_value` makes exactly the context and entities Cedar's own JSON parser and
        /// evaluator make of the same data, so the direct path cannot change a decision.
        #[test]
        fn cedar_value_matches_cedars_own_parser(
            ctx in proptest::collection::btree_map("[a-z_]{1,8}", json(), 0..8),
            attrs in proptest::collection::btree_map("[a-z_]{1,8}", json(), 0..8),
        ) {
            let ctx: Map<String, Value> = ctx.into_iter().collect();
            let ours: BTreeMap<SmolStr, cedar_core::ast::Value> = ctx
                .iter()
                .map(|(k, v)| (k.into(), cedar_value(v).unwrap()))
                .collect();
            let ours = Context::from(cedar_core::ast::Context::Value(Arc::new(ours)));
            let cedars = Context::from_json_value(Value::Object(ctx), None).unwrap();
            prop_assert_eq!(ours, cedars);

            let req = StepRequest {
                playbook: "pb".into(),
                family: "malware_execution".into(),
                step: "s".into(),
                kind: ActionKind::IsolateHost,
                target: Target { kind: TargetKind::Host, id: "ws-1".into() },
                resource_attrs: attrs.into_iter().collect(),
                context: Map::new(),
            };
            static ENGINE: std::sync::LazyLock<PolicyEngine> = std::sync::LazyLock::new(shipped);
            let step = ENGINE.typed_step(req);
            let prepared = ENGINE.prepare_step(&step).unwrap();
            let recorded = serde_json::to_value(RequestRecord::Step(step)).unwrap();
            let cedars = Entities::from_json_value(recorded["entities"].clone(), None).unwrap();
            prop_assert_eq!(prepared.entities, cedars);
        }
    }

    /// The typed step request is written as the JSON shape decision records have always had.
    #[test]
    fn a_step_request_is_recorded_in_cedars_json_shapes() {
        let mut context = Map::new();
        context.insert(
            "alert".into(),
            json!({"severity": "high", "techniques": ["T1059"]}),
        );
        context.insert("approvals".into(), json!(7)); // replaced by the probed value
        context.insert("step".into(), json!("isolate"));
        let rec = shipped().decide_step(StepRequest {
            playbook: "malware_execution".into(),
            family: "malware_execution".into(),
            step: "isolate".into(),
            kind: ActionKind::IsolateHost,
            target: Target {
                kind: TargetKind::Host,
                id: "ws-\"1".into(),
            },
            resource_attrs: default_attrs(TargetKind::Host, "ws-\"1"),
            context,
        });
        let want = json!({
            "principal": {"type": "Cordon::Playbook", "id": "malware_execution"},
            "action": {"type": "Cordon::Action", "id": "isolate_host"},
            "resource": {"type": "Cordon::Host", "id": "ws-\"1"},
            "context": {"alert": {"severity": "high", "techniques": ["T1059"]},
                        "step": "isolate", "approvals": 1},
            "entities": [
                {"uid": {"type": "Cordon::Playbook", "id": "malware_execution"},
                 "attrs": {"family": "malware_execution"}, "parents": []},
                {"uid": {"type": "Cordon::Host", "id": "ws-\"1"},
                 "attrs": default_attrs(TargetKind::Host, "ws-\"1"), "parents": []},
            ],
        });
        let got = serde_json::to_value(&rec).unwrap();
        assert_eq!(got["request"], want);
        // Key order too: it is part of the hash-chained record.
        assert_eq!(
            serde_json::to_string(&got["request"]).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        assert_eq!(rec.tier, Tier::OneApprover);
        // Read back, it is the same JSON.
        let back: DecisionRecord = serde_json::from_value(got.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), got);
    }

    #[test]
    fn null_and_fractions_are_refused() {
        assert!(cedar_value(&json!({"a": [1, null]})).is_err());
        assert!(cedar_value(&json!(1.5)).is_err());
    }
}
