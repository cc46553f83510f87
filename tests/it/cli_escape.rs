//! The CLI's text output cannot be driven from outside: an alert whose title and entity carry
//! ESC/OSC sequences, BEL, CR/LF, a C1 CSI and a bidi override, and a note with the same, are
//! shown by the real `cordon cases list|show` and `cordon approvals show` binaries as escapes on
//! the line that names them, never as bytes that reach the terminal or start a line of their own;
//! the same goes for a daemon's error message that echoes an id the user typed.

use serde_json::Value;

use crate::support::live;
use crate::support::{self, USERS, eventually, token_of};

/// The line an attacker wants the approver to read as the CLI's own.
const FORGED: &str = "FAKE LINE approved by alice";

/// The title of the attacker's alert: clears the screen, turns it red, retitles the window,
/// rings the bell, a C1 CSI, a right-to-left override, then a forged line.
fn title() -> String {
    format!(
        "Malware \u{1b}[2J\u{1b}[31mRED\u{1b}]0;pwned\u{7} \u{9b}1m \u{202e}exe.gpj\u{202c} \r\n{FORGED}"
    )
}

/// How the title must read in text output: every control written as an escape.
const TITLE_SHOWN: &str = "Malware \\u{1b}[2J\\u{1b}[31mRED\\u{1b}]0;pwned\\u{7} \\u{9b}1m \\u{202e}exe.gpj\\u{202c} \\r\\nFAKE LINE approved by alice";

/// Fails unless `out` (what `what` printed) holds no control character but the `\n` line ends,
/// no DEL, C1, line separator or bidi control, and no line that starts with forged text (in any
/// case: entity values are stored lowercased).
fn assert_inert(what: &str, out: &str) {
    for (i, b) in out.bytes().enumerate() {
        assert!(
            (b >= 0x20 && b != 0x7f) || b == b'\n',
            "{what}: byte {b:#04x} at {i} reaches the terminal:\n{out:?}"
        );
    }
    for c in out.chars() {
        assert!(
            c == '\n'
                || !(c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')),
            "{what}: {c:?} reaches the terminal:\n{out:?}"
        );
    }
    for line in out.lines() {
        assert!(
            !line.trim_start().to_lowercase().starts_with("fake"),
            "{what}: a forged line {line:?}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_values_are_escaped_in_the_cli_text_output() {
    let (dir, mut cfg) = support::workspace();
    cfg.grpc.approvers = support::approvers(&USERS);
    cfg.policy.watch = false;
    let d = support::start_in(dir, cfg, None).await;
    let grpc = d.grpc_url();
    let cli = |command: &'static str, args: Vec<String>| {
        let grpc = grpc.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            support::cli_as(&grpc, &token_of("alice"), command, &args).await
        }
    };

    let mut alert: Value = serde_json::from_str(&live::alert(
        "cli-escape-1",
        "Malware EncodedCommand",
        &["T1059"],
        &[
            ("host", "ws-esc-01"),
            ("user", &format!("erin\u{1b}[8m\r\n{FORGED} (user)")),
        ],
    ))
    .unwrap();
    alert["title"] = Value::String(title());
    let case_id = live::post_alert(&d, alert.to_string()).await;

    // A note (the daemon refuses controls in it but \n and \t, and lets bidi controls pass) is
    // shown escaped as well, on its one line.
    let (code, out, err) = cli(
        "cases",
        vec!["assign".into(), case_id.clone(), "alice".into()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_inert("cases assign", &out);
    let note = format!("looked at it\n{FORGED} (note)\t\u{202e}gpj.exe\u{2029}");
    let (code, out, err) = cli("cases", vec!["note".into(), case_id.clone(), note]).await;
    assert_eq!(code, 0, "{err}");
    assert_inert("cases note", &out);

    // --json is the daemon's answer as it is: valid JSON holding the raw title.
    let (code, out, err) = cli(
        "cases",
        vec!["show".into(), case_id.clone(), "--json".into()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["title"], Value::String(title()), "{v}");

    // cases list: one line for the case, the title escaped on it.
    let (code, out, err) = cli("cases", vec!["list".into()]).await;
    assert_eq!(code, 0, "{err}");
    assert_inert("cases list", &out);
    let listed: Vec<&str> = out.lines().filter(|l| l.contains(&case_id)).collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert!(listed[0].ends_with(TITLE_SHOWN), "{out}");

    // cases show: the title and the note, each escaped on its own line.
    let (code, out, err) = cli("cases", vec!["show".into(), case_id.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert_inert("cases show", &out);
    assert!(
        out.lines().next().is_some_and(|l| l.ends_with(TITLE_SHOWN)),
        "{out}"
    );
    assert!(
        out.contains(
            "  note by alice: looked at it\\nFAKE LINE approved by alice (note)\\t\\u{202e}gpj.exe\\u{2029}\n"
        ),
        "{out}"
    );

    // approvals show: the isolate_host request the case raised, with its case title and entities.
    let approval_id = eventually(10, || {
        let case_id = case_id.clone();
        async move {
            let (code, out, _) = cli("approvals", vec!["list".into(), "--json".into()]).await;
            assert_eq!(code, 0);
            let list: Value = serde_json::from_str(&out).unwrap();
            list.as_array()?
                .iter()
                .find(|a| a["case_id"] == case_id.as_str() && a["action"] == "isolate_host")
                .and_then(|a| a["approval_id"].as_str().map(str::to_string))
        }
    })
    .await;
    let (code, out, err) = cli("approvals", vec!["show".into(), approval_id.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert_inert("approvals show", &out);
    assert!(
        out.contains(&format!("  case:      {case_id} {TITLE_SHOWN} [")),
        "{out}"
    );
    assert!(
        out.contains("user:erin\\u{1b}[8m\\r\\nfake line approved by alice (user)"),
        "{out}"
    );
    let (code, out, err) = cli("approvals", vec!["list".into()]).await;
    assert_eq!(code, 0, "{err}");
    assert_inert("approvals list", &out);
    assert_inert("approvals list (stderr)", &err);

    // A refusal whose message may echo what was typed: the `cordon <cmd>: …` line is escaped.
    let bad_id = format!("nope\u{1b}[2J\r\ncordon approvals: {FORGED}");
    for command in ["approvals", "cases"] {
        let (code, out, err) = cli(command, vec!["show".into(), bad_id.clone()]).await;
        assert_eq!(code, 1, "{command}: {out}{err}");
        assert_inert(command, &out);
        assert_inert(command, &err);
        assert_eq!(err.lines().count(), 1, "{command}: {err}");
        assert!(err.starts_with(&format!("cordon {command}: ")), "{err}");
    }
    assert_eq!(d.stop().await, 0);
}
