//! Unit tests of mapped sources: paths, transforms, checks against the sample, and body splitting.

use serde_json::json;

use super::*;

fn now() -> DateTime<Utc> {
    "2024-06-11T12:00:00Z".parse().unwrap()
}

fn mapping(text: &str) -> Result<SourceMapping, Vec<Problem>> {
    parse("t.toml", "t", text, Path::new("."))
}

const BASE: &str = r#"
[alert]
id = "id"
title = ["title", "rule.name"]
rule_id = "rule.id"
rule_name = "rule.name"
severity = { path = "level", at_least = { low = 1, medium = 4, high = 8, critical = 12 } }
techniques = "rule.mitre[*].id"
tags = { path = "labels", split = "," }
time = { path = "ts", unit = "millis" }

[entities]
user = { path = "who", strip_domain = true }
host = { paths = ["host.name", "agent.name"], lowercase = true }
ip = "ips[*]"
"#;

#[test]
fn paths_steps_and_flat_keys() {
    assert_eq!(
        parse_path("a.b[0].c[*]").unwrap(),
        vec![
            Step::Key("a".into()),
            Step::Key("b".into()),
            Step::Index(0),
            Step::Key("c".into()),
            Step::Each
        ]
    );
    for bad in ["", "a..b", "a[", "a[x]", "a]b", "a[0]b"] {
        assert!(parse_path(bad).is_err(), "{bad:?}");
    }
    let doc = json!({"kibana.alert": {"uuid": "m"}, "r": [{"id": 1}, {"id": 2}]});
    let mut out = Vec::new();
    eval(&doc, &parse_path("kibana.alert.uuid").unwrap(), &mut out);
    assert_eq!(out, [&json!("m")]);
    out.clear();
    eval(&doc, &parse_path("r[*].id").unwrap(), &mut out);
    assert_eq!(out, [&json!(1), &json!(2)]);
}

#[test]
fn maps_a_payload() {
    let m = mapping(BASE).unwrap();
    let doc = json!({
        "id": 7, "rule": {"id": "r1", "name": "Rule one", "mitre": [{"id": "t1059.001"}, {"id": "junk"}]},
        "level": 9, "labels": "a, b", "ts": 1718097241000_i64, "who": "CORP\\Alice",
        "agent": {"name": "WS-1"}, "ips": ["10.0.0.1", "nope"]
    });
    let f = super::super::finish(m.apply(&doc, now()).unwrap()).unwrap();
    assert_eq!(f.source_alert_id, "7");
    assert_eq!(f.title, "Rule one");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.techniques, ["T1059.001"]);
    assert_eq!(f.tags, ["a", "b"]);
    assert_eq!(f.time.to_rfc3339(), "2024-06-11T09:14:01+00:00");
    let keys: Vec<String> = f.entities.iter().map(Entity::key).collect();
    assert_eq!(keys, ["host:ws-1", "user:alice", "ip:10.0.0.1"]);
}

#[test]
fn missing_and_invalid_fields_name_their_paths() {
    let m = mapping(BASE).unwrap();
    match m.apply(&json!({"level": 3}), now()) {
        Err(IngestError::MissingFields(f)) => assert_eq!(
            f,
            [
                "id (id)",
                "title | rule.name (title)",
                "rule.id (rule_id)",
                "rule.name (rule_name)"
            ]
        ),
        other => panic!("{other:?}"),
    }
    let doc =
        json!({"id": 1, "title": "t", "rule": {"id": "r", "name": "n"}, "level": 3, "ts": "soon"});
    match m.apply(&doc, now()) {
        Err(IngestError::InvalidField { field, .. }) => assert_eq!(field, "ts"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn typos_and_bad_values_are_problems_with_keys() {
    // Every unknown key (a missing required field stops the parse where it is noticed).
    let text = BASE
        .replace("[alert]\n", "[alert]\nsevrity = 1\n")
        .replace("[entities]\n", "[entities]\nhots = \"h\"\n");
    let shown: Vec<String> = mapping(&text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "t.toml: line 3: alert.sevrity: unknown field",
            "t.toml: line 14: entities.hots: unknown field (entity kinds: host, user, ip, domain, url, file_hash, cloud_resource)"
        ]
    );
    let text = BASE.replace("title =", "titel =");
    let problems = mapping(&text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|p| p.contains("alert.titel: unknown field")),
        "{shown:?}"
    );

    assert!(
        shown.iter().any(|p| p.contains("missing field `title`")),
        "{shown:?}"
    );

    let text = BASE
        .replace("unit = \"millis\"", "unit = \"hours\"")
        .replace("\"rule.id\"", "\"rule[x]\"");
    let shown: Vec<String> = mapping(&text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        shown.iter().any(|p| p.contains("alert.time: unit")),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|p| p.contains("alert.rule_id: [x]")),
        "{shown:?}"
    );
    let text = BASE.replace(
        "[alert]",
        "[alert]\nextra = { path = \"x\", lowercse = true }",
    );
    let shown: Vec<String> = mapping(&text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(shown.iter().any(|p| p.contains("alert.extra")), "{shown:?}");
}

/// Every shipped mapping, on its sample with one node at a time replaced by an odd value:
/// an answer (alert or error) every time, never a panic.
#[test]
fn shipped_mappings_survive_odd_shapes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sources");
    let (mappings, problems) = load_dir(&dir);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(mappings.len() >= 8);
    let odd = [
        Value::Null,
        json!([]),
        json!([1, "x", null, {}]),
        json!({}),
        json!(-1.5e300),
        json!(""),
        json!(true),
    ];
    for (name, m) in &mappings {
        let text = std::fs::read(dir.join(format!("samples/{name}.json"))).unwrap();
        let doc: Value = serde_json::from_slice(&text).unwrap();
        assert!(m.parse_value(&doc, now()).is_ok(), "{name}");
        let mut pointers = Vec::new();
        pointers_of(&doc, String::new(), &mut pointers);
        for p in &pointers {
            for r in &odd {
                let mut mutated = doc.clone();
                if let Some(slot) = mutated.pointer_mut(p) {
                    *slot = r.clone();
                }
                let _ = m.parse_value(&mutated, now());
            }
        }
    }
}

fn pointers_of(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers_of(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers_of(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    if !at.is_empty() {
        out.push(at);
    }
}

#[test]
fn bodies_split_into_objects_arrays_and_ndjson() {
    let (many, parts) = split_body(br#"{"a": 1}"#, false, 10).unwrap();
    assert!(!many);
    assert_eq!(parts.len(), 1);
    let (many, parts) = split_body(br#"[{"a": 1}, {"a": 2}]"#, false, 10).unwrap();
    assert!(many);
    assert_eq!(parts[1].raw, r#"{"a":2}"#);
    let (_, parts) = split_body(b"{\"a\": 1}\r\n\n{\"a\": 2}\n", false, 10).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].at.as_deref(), Some("line 3"));
    assert_eq!(parts[0].raw, r#"{"a": 1}"#);
    // A broken pretty-printed object is one broken document, not NDJSON.
    assert!(matches!(
        split_body(b"{\n  \"a\": 1,\n}", false, 10),
        Err(BodyError::Whole(_))
    ));
    assert!(matches!(
        split_body(b"{}\n[]", false, 10),
        Err(BodyError::At(at, _)) if at == "line 2"
    ));
    assert!(
        matches!(split_body(b"[1]", false, 10), Err(BodyError::At(at, _)) if at == "element 0")
    );
    assert!(matches!(
        split_body(b"[]", false, 10),
        Err(BodyError::Whole(_))
    ));
    assert!(matches!(
        split_body(b"[{},{}]", false, 1),
        Err(BodyError::TooMany)
    ));
    assert!(matches!(
        split_body(b"{}\n{}", true, 1),
        Err(BodyError::TooMany)
    ));
    assert!(matches!(
        split_body(b"\n \n", true, 1),
        Err(BodyError::Whole(_))
    ));
    // Duplicate keys are refused in every part.
    assert!(matches!(
        split_body(b"{}\n{\"k\": 1, \"k\": 2}", true, 10),
        Err(BodyError::At(_, IngestError::DuplicateKey(_)))
    ));
}

#[test]
fn names_are_checked() {
    assert!(parse("cordon.toml", "splunk", BASE, Path::new(".")).is_err());
    assert!(parse("x.toml", "Bad Name", BASE, Path::new(".")).is_err());
}
