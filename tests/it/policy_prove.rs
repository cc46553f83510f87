//! `cordon policy prove` as a user runs it: the shipped properties hold for every request the
//! schema allows; a weakened policy set fails with a concrete counterexample that Cedar's
//! ordinary authorizer confirms; bad property files and a missing cvc5 are clear errors.
//! Needs a cvc5 executable (`.ci/setup` installs it).

use std::path::Path;
use std::process::Output;

use cordon::policy::prove::{Counterexample, recheck};
use serde_json::Value;

use crate::support;
use crate::support::{cordon, run};

fn prove(dir: &Path, json: bool) -> Output {
    let mut c = cordon();
    c.args(["policy", "prove"]).arg(dir);
    if json {
        c.arg("--json");
    }
    run(c)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the shipped policy directory, with `edit` applied to `file`.
fn policies_with(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = support::repo().join("policies");
    for sub in ["", "properties", "tests"] {
        std::fs::create_dir_all(tmp.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, tmp.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let path = tmp.path().join(file);
    let before = std::fs::read_to_string(&path).unwrap();
    let after = edit(before.clone());
    assert_ne!(before, after, "the edit changed nothing");
    std::fs::write(&path, after).unwrap();
    tmp
}

/// Removes the policy whose `@id` is `id` (up to the `};` that ends it).
fn without_policy(text: String, id: &str) -> String {
    let start = text.find(&format!("@id(\"{id}\")")).unwrap();
    let end = start + text[start..].find("};").unwrap() + 2;
    format!("{}{}", &text[..start], &text[end..])
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn shipped_properties_are_proven() {
    let out = prove(&support::repo().join("policies"), false);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for name in [
        "no production contain_cloud_resource is allowed below two approvals",
        "nothing is allowed on a never-isolate host's isolation",
        "only enrich, summarize_case and create_ticket are ever auto without intel",
        "no policy ever errors on a schema-valid request",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("proven") && l.contains(name)),
            "{name} not proven: {stdout}"
        );
    }
    assert!(stdout.contains(" 0 not proven"), "{stdout}");
}

#[test]
fn removing_the_production_two_person_forbid_fails_with_a_confirmed_counterexample() {
    let weak = policies_with("blast_radius.cedar", |t| {
        without_policy(t, "cloud-containment-production-two-person")
    });
    let out = prove(weak.path(), true);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let lines = json_lines(&out);
    let refuted: Vec<&Value> = lines.iter().filter(|l| l["status"] == "refuted").collect();
    assert_eq!(refuted.len(), 1, "{lines:#?}");
    assert_eq!(
        refuted[0]["property"],
        "no production contain_cloud_resource is allowed below two approvals"
    );
    let cexs = refuted[0]["counterexamples"].as_array().unwrap();
    assert!(!cexs.is_empty());
    let weak_engine = cordon::policy::load_dir(weak.path()).unwrap();
    let shipped_engine = cordon::policy::load_dir(&support::repo().join("policies")).unwrap();
    for c in cexs {
        let cex: Counterexample = serde_json::from_value(c.clone()).unwrap();
        assert_eq!(cex.action, r#"Cordon::Action::"contain_cloud_resource""#);
        let approvals = cex.context["approvals"].as_i64().unwrap();
        assert!(approvals < 2, "{cex:?}");
        let resource = cex
            .entities
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                format!(
                    "{}::{:?}",
                    e["uid"]["type"].as_str().unwrap(),
                    e["uid"]["id"].as_str().unwrap()
                ) == cex.resource
            })
            .unwrap_or_else(|| panic!("the resource is not in the entities: {cex:?}"));
        assert_eq!(resource["attrs"]["environment"], "production", "{cex:?}");
        // The printed request, parsed back and re-evaluated by Cedar's authorizer: the weakened
        // set allows it, the shipped set (with the forbid) does not.
        assert!(recheck(&weak_engine, &cex).unwrap().allowed, "{cex:?}");
        assert!(!recheck(&shipped_engine, &cex).unwrap().allowed, "{cex:?}");
    }
    // The text form names the property and prints the request.
    let out = prove(weak.path(), false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("FAILED") && stdout.contains("resource:  Cordon::CloudResource::"),
        "{stdout}"
    );
    assert!(stdout.contains("1 not proven"), "{stdout}");
}

#[test]
fn a_policy_that_can_error_fails_never_errors_with_the_policy_named() {
    let weak = policies_with("blast_radius.cedar", |t| {
        t + "\n@id(\"overflowing\")\n@reason(\"test\")\npermit (principal, action == Cordon::Action::\"enrich\", resource)\nwhen { context.approvals + 9223372036854775807 > 0 };\n"
    });
    let out = prove(weak.path(), true);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let lines = json_lines(&out);
    let refuted: Vec<&Value> = lines.iter().filter(|l| l["status"] == "refuted").collect();
    assert_eq!(refuted.len(), 1, "{lines:#?}");
    assert_eq!(refuted[0]["kind"], "never_errors");
    let engine = cordon::policy::load_dir(weak.path()).unwrap();
    for c in refuted[0]["counterexamples"].as_array().unwrap() {
        let cex: Counterexample = serde_json::from_value(c.clone()).unwrap();
        assert_eq!(cex.policy.as_deref(), Some("overflowing"));
        assert!(cex.context["approvals"].as_i64().unwrap() > 0, "{cex:?}");
        let r = recheck(&engine, &cex).unwrap();
        assert_eq!(r.errors, vec!["overflowing".to_string()], "{cex:?}");
    }
}

#[test]
fn a_bad_property_file_is_refused_with_file_key_and_reason() {
    let bad = policies_with("properties/blast_radius.toml", |t| {
        t.replace(
            "actions = [\"contain_cloud_resource\"]",
            "actions = [\"contain_cloud_resources\"]",
        )
        .replace(
            "kind = \"never_errors\"",
            "kind = \"never_errors\"\nwhen = \"true\"",
        )
    });
    let out = prove(bad.path(), false);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("properties/blast_radius.toml")
            && stderr.contains("property[0] (no production contain_cloud_resource is allowed below two approvals).actions")
            && stderr.contains("unknown action \"contain_cloud_resources\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("(no policy ever errors on a schema-valid request).when")
            && stderr.contains("takes no condition"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing is proven from a bad file");
}

#[test]
fn a_missing_cvc5_is_a_clear_error() {
    let dir = support::repo().join("policies");
    let mut c = cordon();
    c.args(["policy", "prove"])
        .arg(&dir)
        .env("CVC5", "/nonexistent/cvc5");
    let out = run(c);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("no cvc5 executable") && stderr.contains("CVC5=/nonexistent/cvc5"),
        "{stderr}"
    );
    let empty = tempfile::tempdir().unwrap();
    let mut c = cordon();
    c.args(["policy", "prove"])
        .arg(&dir)
        .env_remove("CVC5")
        .env("PATH", empty.path());
    let out = run(c);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("none on PATH"), "{stderr}");
}
