//! House rules checked mechanically: every source file starts with a `//!` doc saying what it
//! owns, and only `store` touches sled, only `policy` calls Cedar.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&crate::support::repo().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(crate::support::repo())
                .unwrap()
                .display()
                .to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(f, _)| f)
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:?}");
}

#[test]
fn one_owner_per_resource() {
    // Outbound HTTP has three owners: `connector` calls response vendors, `chat` calls chat
    // platforms (posting approval requests), `oidc` calls the console's identity provider;
    // beyond them only `cordon mcp` (`cli/agents.rs`) relays a local assistant's stdio to
    // cordon's own `/mcp`.
    let owners: [(&str, &[&str]); 5] = [
        ("sled::", &["src/store/"]),
        ("cedar_policy::", &["src/policy/"]),
        ("cedar_policy_core", &["src/policy/"]),
        ("tonic::", &["src/api/"]),
        (
            "reqwest::Client",
            &[
                "src/connector/",
                "src/chat/",
                "src/oidc.rs",
                "src/cli/agents.rs",
            ],
        ),
    ];
    let mut violations = Vec::new();
    for (file, text) in sources() {
        for (needle, owner) in owners {
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            if code.contains(needle) && !owner.iter().any(|o| file.starts_with(o)) {
                violations.push(format!("{file} uses {needle} (owned by {owner:?})"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}
