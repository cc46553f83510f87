//! House rules checked mechanically: every source file starts with a `//!` doc saying what it
//! owns, and only `store` touches sled, only `policy` calls Cedar; the connector, chat,
//! executor and enrichment layers return typed errors (no `Result<_, String>`), the CLI knows no
//! protobuf or tonic (it goes through `api`), and only `http` and `api` pick a status code.

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

/// The text with comment lines blanked (line numbers kept).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `file:line` whose code has `needle` starting a word.
fn word_hits(files: &[(String, String)], needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (file, text) in files {
        let code = code_of(text);
        for (at, _) in code.match_indices(needle) {
            if code[..at].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            out.push(format!("{file}:{}", line_of(&code, at)));
        }
    }
    out
}

/// The error type of every `Result<T, E>` in `code` whose `E` is `String`, as byte offsets.
fn string_errors(code: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (at, m) in code.match_indices("Result<") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        // Walk the generic arguments; the last top-level one is the error type.
        let args = &code[at + m.len()..];
        let (mut depth, mut commas, mut end) = (0i32, Vec::new(), None);
        let mut prev = ' ';
        for (i, c) in args.char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' if prev == '-' => {} // `->` in a function type
                '>' | ')' | ']' if depth == 0 => {
                    end = Some(i);
                    break;
                }
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => commas.push(i),
                _ => {}
            }
            prev = c;
        }
        let Some(end) = end else { continue };
        // A trailing comma leaves an empty last piece: the error type is the one before it.
        let mut pieces: Vec<&str> = Vec::new();
        let mut from = 0;
        for &c in &commas {
            pieces.push(args[from..c].trim());
            from = c + 1;
        }
        pieces.push(args[from..end].trim());
        if pieces.last() == Some(&"") {
            pieces.pop();
        }
        if pieces.len() >= 2 && pieces.last() == Some(&"String") {
            out.push(at);
        }
    }
    out
}

#[test]
fn string_error_detection() {
    // (code, how many `Result<_, String>` it holds)
    let table: &[(&str, usize)] = &[
        ("fn f() -> Result<(), String> {", 1),
        ("fn f() -> Result<Result<Answer, String>, Halt> {", 1),
        ("fn f() -> Result<Option<(String, String)>, AuthError> {", 0),
        ("fn f() -> Result<\n    String,\n    String,\n> {", 1),
        ("encode: &dyn Fn(&str) -> Result<String, ValueError>,", 0),
        ("x: Result<Box<dyn Fn() -> u8>, String>", 1),
        ("type R = io::Result<String>;", 0),
        ("fn f() -> Result<Vec<String>, E> {", 0),
        ("MyResult<u8, String>", 0),
    ];
    for (code, n) in table {
        assert_eq!(string_errors(code).len(), *n, "{code}");
    }
}

#[test]
fn connector_chat_executor_and_enrichment_errors_are_typed() {
    let mut violations = Vec::new();
    for (file, text) in sources() {
        let layer = ["src/connector/", "src/chat/", "src/executor/"]
            .iter()
            .any(|d| file.starts_with(d))
            || file == "src/enrich.rs";
        if !layer {
            continue;
        }
        let code = code_of(&text);
        for at in string_errors(&code) {
            violations.push(format!("{file}:{}", line_of(&code, at)));
        }
    }
    assert!(
        violations.is_empty(),
        "Result<_, String> where a thiserror enum belongs: {violations:#?}"
    );
}

#[test]
fn the_cli_knows_no_protobuf_or_tonic() {
    let cli: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(f, _)| f.starts_with("src/cli/") || f == "src/cli.rs")
        .collect();
    let mut violations = Vec::new();
    for needle in ["pb::", "api::pb", "tonic"] {
        violations.extend(word_hits(&cli, needle));
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "protobuf or tonic in the CLI (use api::calls / api::client): {violations:#?}"
    );
}

#[test]
fn only_http_and_api_pick_a_status_code() {
    let others: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(f, _)| {
            !(f.starts_with("src/http/") || f == "src/http.rs" || f.starts_with("src/api/"))
        })
        .collect();
    let mut violations = Vec::new();
    for needle in ["StatusCode::", "Status::", "Code::"] {
        violations.extend(word_hits(&others, needle));
    }
    assert!(
        violations.is_empty(),
        "a status code picked outside http and api: {violations:#?}"
    );
}

/// Issue 15's seams stay cut: no file of the engine or the executor grows past 700 lines.
#[test]
fn engine_and_executor_files_stay_under_700_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(f, _)| f.starts_with("src/engine/") || f.starts_with("src/executor/"))
        .map(|(f, text)| (f, text.lines().count()))
        .filter(|(_, n)| *n > 700)
        .map(|(f, n)| format!("{f}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

/// Only `engine/lifecycle.rs` moves a case or an action from one state to another (it checks
/// the state machine and writes the transition's record). A new request or case is created in
/// its first state elsewhere; nothing else assigns `.state`. The receivers listed hold other
/// states (learning proposals, a query filter, the executor's plan).
#[test]
fn only_lifecycle_assigns_a_case_or_action_state() {
    let other_states = [
        ("src/learn.rs", "d"),
        ("src/engine/learn.rs", "p"),
        ("src/http/cases.rs", "f"),
        ("src/executor/plan.rs", "k"),
    ];
    let mut found = Vec::new();
    for (f, text) in sources() {
        if f == "src/engine/lifecycle.rs" || f.ends_with("tests.rs") {
            continue;
        }
        // Unit tests at the end of a file may set states to build their fixtures.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            let Some(at) = line.find(".state = ") else {
                continue;
            };
            let receiver = line[..at]
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            if !other_states.contains(&(f.as_str(), receiver)) {
                found.push(format!("{f}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "state assigned outside engine/lifecycle.rs: {found:#?}"
    );
}
