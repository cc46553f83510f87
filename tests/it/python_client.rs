//! The gRPC API works outside Rust: a Python client (grpcio, stubs generated from
//! `proto/cordon/v1/cordon.proto` by grpc_tools) submits an alert, reviews and approves the
//! pending host isolation, and checks the case, against the real daemon in-process. The
//! virtualenv lives in `<target>/pyenv` and is built once from `tests/python/requirements.txt`;
//! a failed install fails the test (CI installs through this same code path).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cordon::config::ApproverToken;

use crate::support;

const APPROVER_TOKEN: &str = "alice-python-approver-token-0123456789";
const INGEST_TOKEN: &str = "python-ingest-token-9876543210";

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => support::repo().join(d),
        _ => support::repo().join("target"),
    }
}

fn show(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The venv's python, with grpcio and grpcio-tools importable: created and installed if not.
fn python_env() -> PathBuf {
    let venv = target_dir().join("pyenv");
    let python = venv.join("bin/python");
    let ready = |py: &Path| {
        py.exists()
            && Command::new(py)
                .args(["-c", "import grpc, grpc_tools"])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return python;
    }
    let o = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    assert!(
        o.status.success(),
        "python3 -m venv {} failed:\n{}",
        venv.display(),
        show(&o)
    );
    let reqs = support::repo().join("tests/python/requirements.txt");
    let o = run(Command::new(venv.join("bin/pip"))
        .args(["install", "--disable-pip-version-check", "-r"])
        .arg(&reqs));
    assert!(
        o.status.success(),
        "pip install -r {} failed (the Python client test needs PyPI):\n{}",
        reqs.display(),
        show(&o)
    );
    assert!(
        ready(&python),
        "{} cannot import grpc and grpc_tools after the install",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_approves_host_isolation() {
    let python = tokio::task::spawn_blocking(python_env).await.unwrap();

    let (dir, mut cfg) = support::workspace();
    cfg.grpc.approvers = vec![ApproverToken {
        user: "alice".into(),
        token: support::sha_ref(APPROVER_TOKEN),
    }];
    cfg.grpc
        .ingest_tokens
        .insert("python".into(), support::sha_ref(INGEST_TOKEN));
    let d = support::start_in(dir, cfg, None).await;
    let addr = d.running().grpc_addr.to_string();
    let stubs = d.dir.path().join("pystubs");

    let repo = support::repo();
    let mut cmd = Command::new(&python);
    cmd.arg(repo.join("tests/python/approve_flow.py"))
        .arg("--proto-dir")
        .arg(repo.join("proto"))
        .arg("--out-dir")
        .arg(&stubs)
        .args(["--addr", &addr, "--token", APPROVER_TOKEN])
        .args(["--ingest-token", INGEST_TOKEN])
        .arg("--payload")
        .arg(repo.join("tests/fixtures/elastic.json"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the Python client failed:\n{}",
        show(&out)
    );
    // Shown with --nocapture: what the Python client saw, one line per step.
    println!("{stdout}");
    for n in 1..=6 {
        assert!(
            stdout.contains(&format!("step {n}: ")),
            "step {n} not reported:\n{}",
            show(&out)
        );
    }
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{}", show(&out)));
    let field = |k: &str| {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {result:?}"))
            .to_string()
    };
    let (case_id, approval_id) = (field("case_id"), field("approval_id"));

    // The vote landed in the daemon's own audit log, as alice over gRPC with a token.
    let votes: Vec<_> = d
        .audit()
        .into_iter()
        .filter(|r| r.body.kind == "vote")
        .collect();
    assert_eq!(votes.len(), 1, "exactly one vote recorded: {votes:#?}");
    let v = &votes[0];
    assert_eq!(v.body.action_id.as_deref(), Some(approval_id.as_str()));
    assert_eq!(v.body.case_id.as_deref(), Some(case_id.as_str()));
    assert_eq!(v.body.data["user"], "alice", "{v:#?}");
    assert_eq!(v.body.data["channel"], "grpc", "{v:#?}");
    assert_eq!(v.body.data["identity"], "token", "{v:#?}");
    assert_eq!(v.body.data["decision"], "approve", "{v:#?}");
    assert!(
        ["approved", "counted"].contains(&v.body.data["outcome"].as_str().unwrap_or("")),
        "vote outcome: {v:#?}"
    );

    // And the HTTP view of the case agrees.
    let case = d.case(&case_id).await;
    let isolate: Vec<_> = support::actions(&case)
        .into_iter()
        .filter(|a| a.0 == "isolate_host")
        .collect();
    assert_eq!(
        isolate,
        vec![(
            "isolate_host".to_string(),
            "ws-042".to_string(),
            "approved".to_string(),
            "one_approver".to_string()
        )],
        "{case}"
    );
    assert_eq!(d.stop().await, 0);
}
