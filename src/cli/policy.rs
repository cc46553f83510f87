//! `cordon policy validate|test|prove`: the policy set checked against the schema, its
//! Cedar test files run, and its properties proved (cvc5).

use std::path::Path;

use super::*;

pub(super) fn policy_validate(dir: &Path) -> i32 {
    match crate::policy::load_dir(dir) {
        Ok(e) => {
            println!(
                "ok: {} polic(ies) in {} file(s), hash {}",
                e.policy_count(),
                e.files.len(),
                e.hash
            );
            0
        }
        Err(problems) => {
            eprintln!("{} problem(s):", problems.len());
            for p in &problems {
                eprintln!("  {p}");
            }
            1
        }
    }
}

pub(super) fn policy_test(dir: &Path) -> i32 {
    let engine = match crate::policy::load_dir(dir) {
        Ok(e) => e,
        Err(problems) => {
            eprintln!(
                "the policy set does not load ({} problem(s)):",
                problems.len()
            );
            for p in &problems {
                eprintln!("  {p}");
            }
            return 1;
        }
    };
    let outcomes = match crate::policy::testfile::run_dir(&engine, &dir.join("tests")) {
        Ok(o) => o,
        Err(problems) => {
            print_problems(&problems);
            return 1;
        }
    };
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
    for o in &outcomes {
        if o.passed {
            println!("ok   {}: {}", o.file, o.name);
        } else {
            println!("FAIL {}: {}\n       {}", o.file, o.name, o.detail);
        }
    }
    println!(
        "{} passed, {} failed",
        outcomes.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() && !outcomes.is_empty() {
        0
    } else {
        1
    }
}

/// `policy prove`: 0 every property proven, 1 one is not (with counterexamples), 64 the policy
/// set or a property file is bad, 69 no cvc5, 70 the solver failed.
pub(super) async fn policy_prove(dir: &Path, json: bool) -> i32 {
    use crate::policy::prove::{self, ProveError, Verdict};
    let engine = match crate::policy::load_dir(dir) {
        Ok(e) => e,
        Err(problems) => {
            eprintln!(
                "the policy set does not load ({} problem(s)):",
                problems.len()
            );
            for p in &problems {
                eprintln!("  {p}");
            }
            return EXIT_CONFIG;
        }
    };
    let props = match prove::load_dir(&engine, &dir.join("properties")) {
        Ok(p) => p,
        Err(problems) => return print_problems(&problems),
    };
    let outcomes = match prove::prove(&engine, &props).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cordon: {e}");
            return match e {
                ProveError::NoSolver(_) => 69,
                ProveError::Solver(_) => 70,
            };
        }
    };
    let mut failed = 0;
    for o in &outcomes {
        let (status, detail) = match &o.verdict {
            Verdict::Proven => ("proven", serde_json::Value::Null),
            Verdict::Refuted(c) => ("refuted", serde_json::json!(c)),
            Verdict::Unknown(why) => ("unknown", serde_json::json!(why)),
        };
        if status != "proven" {
            failed += 1;
        }
        if json {
            let line = serde_json::json!({
                "file": o.file, "property": o.name, "kind": o.kind.as_str(),
                "request_envs": o.envs, "status": status,
                "counterexamples": if status == "refuted" { detail.clone() } else { serde_json::json!([]) },
                "reason": if status == "unknown" { detail } else { serde_json::Value::Null },
            });
            println!("{line}");
            continue;
        }
        match &o.verdict {
            Verdict::Proven => println!(
                "proven  {}: {} ({}, {} request environment(s))",
                o.file,
                o.name,
                o.kind.as_str(),
                o.envs
            ),
            Verdict::Unknown(why) => println!(
                "UNKNOWN {}: {}
        {why}",
                o.file, o.name
            ),
            Verdict::Refuted(cexs) => {
                println!(
                    "FAILED  {}: {} ({}); counterexample(s), each re-checked with Cedar's authorizer:",
                    o.file,
                    o.name,
                    o.kind.as_str()
                );
                for c in cexs {
                    println!("        principal: {}", c.principal);
                    println!("        action:    {}", c.action);
                    println!("        resource:  {}", c.resource);
                    if let Some(p) = &c.policy {
                        println!("        errors in: {p}");
                    }
                    println!("        context:   {}", c.context);
                    println!("        entities:  {}", c.entities);
                }
            }
        }
    }
    if !json {
        println!("{} proven, {} not proven", outcomes.len() - failed, failed);
    }
    if failed == 0 { 0 } else { 1 }
}
