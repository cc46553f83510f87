//! The `cordon` binary's own tools as a user runs them: `policy validate`, `policy test`,
//! `serve`/`check` refusing a bad configuration with exit 64 and every problem listed, and
//! `serve` on embedded defaults plus environment overrides.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{self, Daemon, cordon, free_port, http_client, run, text, write_config};

// ---------------------------------------------------------------------------------------------
// policy validate
// ---------------------------------------------------------------------------------------------

fn policy(sub: &str, dir: &Path) -> Output {
    let mut c = cordon();
    c.args(["policy", sub]).arg(dir);
    run(c)
}

/// A private copy of the shipped policy directory.
fn policies_copy() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("policies");
    support::copy_dir(&support::repo().join("policies"), &p);
    (t, p)
}

/// The `LINE` of every `<file>:LINE:` mention in `stderr`.
fn lines_named(stderr: &str, file: &Path) -> Vec<usize> {
    let needle = format!("{}:", file.display());
    stderr
        .match_indices(&needle)
        .filter_map(|(i, _)| {
            let rest = &stderr[i + needle.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn policy_validate_accepts_the_shipped_policies() {
    let out = policy("validate", &support::repo().join("policies"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("polic(ies) in"), "{stdout}");
}

#[test]
fn policy_validate_names_file_and_line_of_an_unknown_attribute() {
    let (_t, dir) = policies_copy();
    let file = dir.join("blast_radius.cedar");
    let mut text0 = std::fs::read_to_string(&file).unwrap();
    let first = text0.lines().count() + 2; // the @id line of the appended policy
    text0.push_str(
        "\n@id(\"broken-attr\")\n@reason(\"uses an attribute the schema does not declare\")\n\
         permit (principal, action == Cordon::Action::\"isolate_host\", resource)\n\
         when { resource.nonexistent_attr == \"x\" };\n",
    );
    std::fs::write(&file, text0).unwrap();
    let out = policy("validate", &dir);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("nonexistent_attr"), "{stderr}");
    let lines = lines_named(&stderr, &file);
    assert!(
        !lines.is_empty(),
        "stderr does not name {}:<line>:\n{stderr}",
        file.display()
    );
    assert!(
        lines.iter().all(|l| (first..first + 4).contains(l)),
        "line {lines:?} is outside the broken policy (lines {first}..{}):\n{stderr}",
        first + 3
    );
}

#[test]
fn policy_validate_names_file_and_line_of_an_unknown_entity_type() {
    let (_t, dir) = policies_copy();
    let file = dir.join("zz_extra.cedar");
    std::fs::write(
        &file,
        "// an extra policy\n// naming an entity type the schema does not have\n\n\
         @id(\"nope-type\")\n@reason(\"r\")\n\
         permit (principal == Cordon::Nope::\"x\", action == Cordon::Action::\"enrich\", resource);\n",
    )
    .unwrap();
    let out = policy("validate", &dir);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Cordon::Nope"), "{stderr}");
    assert_eq!(lines_named(&stderr, &file), vec![6], "{stderr}");
}

#[test]
fn policy_validate_names_file_and_line_of_a_syntax_error() {
    let (_t, dir) = policies_copy();
    let file = dir.join("syntax.cedar");
    std::fs::write(&file, "// one\n// two\n\n@id(\"syn\") @reason(\"r\") permit (principal, action, resource) when { resource.x == };\n").unwrap();
    let out = policy("validate", &dir);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(lines_named(&stderr, &file), vec![4], "{stderr}");
}

#[test]
fn policy_validate_refuses_a_missing_id_and_an_unknown_annotation() {
    let (_t, dir) = policies_copy();
    let file = dir.join("annotations.cedar");
    std::fs::write(
        &file,
        "// no @id\n\n@reason(\"r\")\npermit (principal, action == Cordon::Action::\"enrich\", resource);\n\n\
         @id(\"typo-annotation\")\n@reaosn(\"r\")\npermit (principal, action == Cordon::Action::\"enrich\", resource);\n",
    )
    .unwrap();
    let out = policy("validate", &dir);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let missing_id = stderr
        .lines()
        .find(|l| l.contains("no @id"))
        .unwrap_or_else(|| panic!("no @id problem:\n{stderr}"));
    assert!(
        missing_id.contains(&format!("{}:3:", file.display())),
        "{missing_id}"
    );
    let typo = stderr
        .lines()
        .find(|l| l.contains("@reaosn"))
        .unwrap_or_else(|| panic!("@reaosn not named:\n{stderr}"));
    assert!(typo.contains(&format!("{}:6:", file.display())), "{typo}");
}

#[test]
fn policy_validate_refuses_an_empty_directory() {
    let t = tempfile::tempdir().unwrap();
    let out = policy("validate", t.path());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("cordon.cedarschema"),
        "{}",
        text(&out.stderr)
    );

    // A schema alone is still no policy set.
    std::fs::copy(
        support::repo().join("policies/cordon.cedarschema"),
        t.path().join("cordon.cedarschema"),
    )
    .unwrap();
    let out = policy("validate", t.path());
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no policies"),
        "{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// policy test
// ---------------------------------------------------------------------------------------------

fn shipped_test_count() -> usize {
    let dir = support::repo().join("policies/tests");
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|t| t.lines().filter(|l| l.trim() == "[[test]]").count())
        .sum()
}

#[test]
fn policy_test_passes_the_shipped_tests() {
    let n = shipped_test_count();
    assert!(n > 0);
    let out = policy("test", &support::repo().join("policies"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("{n} passed, 0 failed")),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn policy_test_reports_a_wrong_expectation_with_the_determining_policy() {
    let (_t, dir) = policies_copy();
    let file = dir.join("tests/blast_radius.toml");
    let mut t = std::fs::read_to_string(&file).unwrap();
    t.push_str("\n[[test]]\nname = \"deliberately wrong: host isolation claimed automatic\"\naction = \"isolate_host\"\ntarget = \"ws-042\"\nexpect_tier = \"auto\"\n");
    std::fs::write(&file, t).unwrap();
    let out = policy("test", &dir);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let n = shipped_test_count();
    assert!(
        stdout.contains(&format!("{n} passed, 1 failed")),
        "{stdout}"
    );
    let fail = stdout
        .lines()
        .position(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line:\n{stdout}"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[fail].contains("deliberately wrong: host isolation claimed automatic"),
        "{stdout}"
    );
    let detail = lines[fail + 1];
    assert!(
        detail.contains("expected tier auto, got one_approver"),
        "{detail}"
    );
    assert!(
        detail.contains("isolate-host-one-approver"),
        "the determining policy is not named: {detail}"
    );
}

#[test]
fn policy_test_refuses_a_test_file_with_an_unknown_key() {
    let (_t, dir) = policies_copy();
    let file = dir.join("tests/blast_radius.toml");
    let mut t = std::fs::read_to_string(&file).unwrap();
    t.push_str("\n[[test]]\nname = \"typo\"\naction = \"isolate_host\"\nexpect_teir = \"auto\"\n");
    std::fs::write(&file, t).unwrap();
    let out = policy("test", &dir);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("expect_teir"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// serve / check refuse a bad configuration
// ---------------------------------------------------------------------------------------------

/// Runs `cordon <sub> --config <cfg>` and asserts exit 64 without starting (no store created).
fn refuses(sub: &str, root: &Path, cfg: &Path) -> String {
    let mut c = cordon();
    c.arg(sub).arg("--config").arg(cfg).current_dir(root);
    if sub == "serve" {
        // If it did start it must not collide with anything: give it private ports.
        c.env("CORDON_HTTP_ADDR", format!("127.0.0.1:{}", free_port()));
    }
    let out = run(c);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "cordon {sub}: {}{stderr}",
        text(&out.stdout)
    );
    assert!(
        !root.join("data").exists(),
        "cordon {sub} opened the store although the config is invalid"
    );
    stderr
}

/// The problem lines (`  file: ...`) of the report.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect()
}

#[test]
fn serve_and_check_refuse_an_unknown_config_key() {
    let (dir, _) = support::workspace();
    let cfg = write_config(
        dir.path(),
        "[http]\naddr = \"127.0.0.1:1\"\nmax_body_byte = 5\n",
    );
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("max_body_byte"))
        .unwrap()
        + 1;
    for sub in ["serve", "check"] {
        let stderr = refuses(sub, dir.path(), &cfg);
        let p = problem_lines(&stderr);
        let hit = p
            .iter()
            .find(|l| l.contains("max_body_byte"))
            .unwrap_or_else(|| panic!("{sub}: key not named:\n{stderr}"));
        assert!(
            hit.starts_with(&format!("{}: line {line}", cfg.display())),
            "{sub}: {hit}"
        );
        assert!(hit.contains("unknown field"), "{sub}: {hit}");
    }
}

/// Bug: a config with two unknown keys (and a broken playbook) lists only the first unknown key.
#[test]
fn serve_and_check_list_every_problem_even_with_unknown_keys() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = write_config(
        root,
        "[http]\nmax_body_byte = 5\n\n[log]\nformatt = \"json\"\n",
    );
    let pb = std::fs::read_to_string(root.join("playbooks/malware_execution.toml")).unwrap();
    std::fs::write(
        root.join("playbooks/zz_broken.toml"),
        pb.replace("connector = \"thehive\"", "connector = \"nosuch\""),
    )
    .unwrap();
    for sub in ["serve", "check"] {
        let stderr = refuses(sub, root, &cfg);
        for want in ["max_body_byte", "formatt", "\"nosuch\""] {
            assert!(
                problem_lines(&stderr).iter().any(|l| l.contains(want)),
                "cordon {sub} does not list the problem {want}:\n{stderr}"
            );
        }
    }
}

/// A config with a bad value, a playbook naming an unknown connector and a connector file with
/// an unknown key.
fn three_problems() -> (tempfile::TempDir, PathBuf) {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let cfg = write_config(root, "[log]\nformat = \"xml\"\n");
    let pb = std::fs::read_to_string(root.join("playbooks/malware_execution.toml")).unwrap();
    assert!(pb.contains("connector = \"thehive\""));
    std::fs::write(
        root.join("playbooks/zz_broken.toml"),
        pb.replace("connector = \"thehive\"", "connector = \"nosuch\""),
    )
    .unwrap();
    std::fs::write(
        root.join("connectors/zz_broken.toml"),
        "kind = \"jira\"\ndescription = \"x\"\nbase_url = \"https://example.atlassian.net\"\nmode = \"dry_run\"\ntimeout_sec = 5\n",
    )
    .unwrap();
    (dir, cfg)
}

#[test]
fn serve_and_check_list_a_bad_value_a_bad_playbook_and_a_bad_connector_at_once() {
    let (dir, cfg) = three_problems();
    let root = dir.path();
    for sub in ["serve", "check"] {
        let stderr = refuses(sub, root, &cfg);
        let p = problem_lines(&stderr);
        let has = |file: &str, key: &str, reason: &str| {
            p.iter()
                .any(|l| l.starts_with(file) && l.contains(key) && l.contains(reason))
        };
        assert!(
            has(
                &cfg.display().to_string(),
                "log.format",
                "must be `text` or `json`"
            ),
            "{sub}: log.format:\n{stderr}"
        );
        assert!(
            has(
                &root.join("playbooks/zz_broken.toml").display().to_string(),
                "steps[2].connector",
                "unknown connector \"nosuch\""
            ),
            "{sub}: playbook:\n{stderr}"
        );
        assert!(
            has(
                &root.join("connectors/zz_broken.toml").display().to_string(),
                "line 5",
                "timeout_sec"
            ),
            "{sub}: connector:\n{stderr}"
        );
    }
}

/// Bug: one connector file with a problem makes every valid connector "unknown" to the
/// playbooks, so the report is flooded with false problems.
#[test]
fn a_bad_connector_file_does_not_make_the_valid_connectors_unknown() {
    let (dir, cfg) = three_problems();
    let stderr = refuses("check", dir.path(), &cfg);
    let bogus: Vec<&str> = problem_lines(&stderr)
        .into_iter()
        .filter(|l| {
            [
                "jira",
                "thehive",
                "crowdstrike",
                "defender",
                "okta",
                "entra",
                "cloud-webhook",
            ]
            .iter()
            .any(|c| l.contains(&format!("unknown connector \"{c}\"")))
        })
        .collect();
    assert!(
        bogus.is_empty(),
        "valid connectors reported as unknown ({} false problems):\n{}",
        bogus.len(),
        bogus.join("\n")
    );
}

#[test]
fn check_accepts_a_good_config() {
    let (dir, _) = support::workspace();
    let cfg = write_config(dir.path(), "");
    let mut c = cordon();
    c.arg("check").arg("--config").arg(&cfg);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 4 playbook(s), 7 connector(s)"),
        "{}",
        text(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// serve on embedded defaults + env overrides
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_embedded_defaults_with_env_overrides_and_stops_on_sigterm() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    let data = root.join("elsewhere/data");
    let mut d = Daemon::start(root, "serve-defaults", |c| {
        c.arg("serve")
            .current_dir(root)
            .env("CORDON_DATA_DIR", &data);
    })
    .await;
    let c = http_client();
    let h = c.get(format!("{}/healthz", d.base)).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = c.get(format!("{}/readyz", d.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["playbooks"], 4, "{ready}");
    assert_eq!(ready["connectors"], 7, "{ready}");
    assert!(ready["policies"]["count"].as_u64().unwrap() > 0, "{ready}");
    assert!(
        data.join("db").exists(),
        "the store is not at CORDON_DATA_DIR"
    );
    assert!(
        !root.join("data").exists(),
        "CORDON_DATA_DIR was ignored: ./data was created"
    );

    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    let logs = d.logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("drained and flushed"), "{logs}");
}

#[test]
fn serve_refuses_to_start_without_a_policies_directory() {
    let (dir, _) = support::workspace();
    let root = dir.path();
    std::fs::remove_dir_all(root.join("policies")).unwrap();
    let mut c = cordon();
    c.arg("serve")
        .current_dir(root)
        .env("CORDON_DATA_DIR", root.join("data"))
        .env("CORDON_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CORDON_GRPC_ADDR", format!("127.0.0.1:{}", free_port()));
    let out = run(c);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        problem_lines(&stderr)
            .iter()
            .any(|l| l.starts_with("./policies")),
        "{stderr}"
    );
    assert!(
        !root.join("data").exists(),
        "the store was opened although the daemon refused to start"
    );
}

// ---------------------------------------------------------------------------------------------
// thread priorities
// ---------------------------------------------------------------------------------------------

/// Every thread of process `pid` as (name, `nice`), from `/proc`.
fn threads_of(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // After the name in parentheses: state (field 3) … nice (field 19).
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        out.push((comm.trim().to_string(), nice));
    }
    out
}

/// The threads every answer waits for, the engine's, the store's writing thread and the gRPC
/// server's (where votes are answered), run at `store.critical_nice`; every other thread (the
/// runtime's: HTTP request parsing, connector calls; sled's) stays at the process's priority. A value above the process's is always granted; the default (-10) is
/// granted when the system allows it (root here), and otherwise the daemon says it was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_and_the_store_writer_run_at_the_critical_priority() {
    let ours = std::fs::read_to_string("/proc/self/stat").unwrap();
    let ours: i32 = ours[ours.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    let may_lower = std::thread::spawn(move || cordon::nice::set_current_thread(ours - 1).is_ok())
        .join()
        .unwrap();
    for (asked, name) in [(Some(ours + 3), "nice-above"), (None, "nice-default")] {
        let (dir, _) = support::workspace();
        let root = dir.path();
        let extra = asked.map_or(String::new(), |n| format!("[store]\ncritical_nice = {n}\n"));
        let cfg = write_config(root, &extra);
        let mut d = Daemon::start(root, name, support::serve_args(&cfg)).await;
        // The writing thread starts with the first commit: an alert's.
        let r = http_client()
            .post(format!("{}/v1/alerts", d.base))
            .header("content-type", "application/json")
            .body(support::fixture("cordon.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", d.logs());
        let critical = match asked {
            Some(n) => n,
            None if may_lower => -10,
            None => ours,
        };
        // sled's I/O threads, which a commit's flush waits for, are given the writing thread's
        // value after the first commit is answered (never a higher one than they have).
        let sled = critical.min(ours);
        let pid = d.pid();
        let threads = support::eventually(20, || async {
            let threads = threads_of(pid);
            let io: Vec<i32> = threads
                .iter()
                .filter(|(n, _)| n.starts_with("sled-io-"))
                .map(|(_, v)| *v)
                .collect();
            (!io.is_empty() && io.iter().all(|v| *v == sled)).then_some(threads)
        })
        .await;
        let of = |name: &str| -> Vec<i32> {
            threads
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect()
        };
        assert_eq!(of("cordon-engine"), [critical], "{name}: {threads:?}");
        // `comm` holds 15 bytes of the name.
        assert_eq!(of("cordon-store-wr"), [critical], "{name}: {threads:?}");
        // The gRPC server's runtime: the thread that drives it and its workers.
        let grpc = of("cordon-grpc");
        assert!(grpc.len() >= 2, "{name}: {threads:?}");
        assert!(grpc.iter().all(|v| *v == critical), "{name}: {threads:?}");
        assert!(
            threads.iter().any(|(n, _)| n.starts_with("tokio-")),
            "{threads:?}"
        );
        // A whole-store read (the loop gauges at start) may be running on its own thread, which
        // yields: at `nice::BACKGROUND` (or still at the process's value, if caught the instant
        // after it started, before it asked).
        let others = threads.iter().filter(|(n, _)| {
            ![
                "cordon-engine",
                "cordon-store-wr",
                "cordon-grpc",
                "cordon-report",
            ]
            .contains(&n.as_str())
                && !n.starts_with("sled-io-")
        });
        assert!(
            others.clone().all(|(_, v)| *v == ours),
            "{name}: {threads:?}"
        );
        assert!(
            of("cordon-report")
                .iter()
                .all(|v| [cordon::nice::BACKGROUND.max(ours), ours].contains(v)),
            "{name}: {threads:?}"
        );
        let logs = d.logs();
        assert_eq!(
            logs.contains("refused a lower nice value"),
            asked.is_none() && !may_lower,
            "{logs}"
        );
        assert_eq!(d.terminate().await.code(), Some(0), "{}", d.logs());
    }
}
