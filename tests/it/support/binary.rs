//! The daemon under test as the real binary: `cordon` commands with no inherited settings, run
//! to completion with a time limit, and [`Daemon`], a `cordon serve` child process on free
//! loopback ports with its output in files, killed and reaped when dropped; config files for it.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::auth::{sha, token_of};
use super::clients::http_client;

pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `cordon` command with no inherited cordon settings from the test's environment.
pub fn cordon() -> Command {
    let mut c = Command::new(BIN);
    for k in [
        "CORDON_CONFIG",
        "CORDON_DATA_DIR",
        "CORDON_HTTP_ADDR",
        "CORDON_GRPC_ADDR",
    ] {
        c.env_remove(k);
    }
    c.env("RUST_LOG", "info").stdin(Stdio::null());
    c
}

/// Runs a one-shot `cordon` command to completion (at most 30 s, then it is killed and the test
/// fails) and returns its output.
pub fn run(cmd: Command) -> Output {
    run_within(cmd, 30)
}

/// [`run`] with a time limit of `secs` (for tools whose work grows with the store, such as
/// `cordon audit export` after a long crash loop).
pub fn run_within(mut cmd: Command, secs: u64) -> Output {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    cmd.stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let mut child = cmd.spawn().expect("spawn cordon");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |f: &mut File| {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cordon audit export ARGS…` (exit 0 or the test fails): each line as JSON.
pub fn audit_export(args: &[&std::ffi::OsStr]) -> Vec<serde_json::Value> {
    let mut c = cordon();
    c.args(["audit", "export"]).args(args);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `cordon simulate --data-dir DATA --policies POLICIES EXTRA…`: exit code, stdout, stderr.
pub fn simulate(data: &Path, policies: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut c = cordon();
    c.args(["simulate", "--data-dir"])
        .arg(data)
        .arg("--policies")
        .arg(policies)
        .args(extra);
    let out = run(c);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// A `cordon serve` child process with stdout/stderr in files. Dropping it kills (SIGKILL) and
/// reaps the process, so no daemon outlives a failing test.
pub struct Daemon {
    child: Option<std::process::Child>,
    pub base: String,
    /// The gRPC endpoint, `http://127.0.0.1:<port>`.
    pub grpc: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Daemon {
    /// Spawns `cordon` configured by `configure` (args, env, working directory) with
    /// `CORDON_HTTP_ADDR`/`CORDON_GRPC_ADDR` set to free loopback ports, logs to
    /// `<logs>/<name>.stdout|stderr`, and waits until `GET /readyz` answers 200.
    pub async fn start(logs: &Path, name: &str, configure: impl Fn(&mut Command)) -> Daemon {
        for attempt in 0..3 {
            let (http, grpc) = (free_port(), free_port());
            let stdout = logs.join(format!("{name}.stdout"));
            let stderr = logs.join(format!("{name}.stderr"));
            let mut cmd = cordon();
            configure(&mut cmd);
            cmd.env("CORDON_HTTP_ADDR", format!("127.0.0.1:{http}"))
                .env("CORDON_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
                .stdout(File::create(&stdout).unwrap())
                .stderr(File::create(&stderr).unwrap());
            let child = cmd.spawn().expect("spawn cordon serve");
            let mut d = Daemon {
                child: Some(child),
                base: format!("http://127.0.0.1:{http}"),
                grpc: format!("http://127.0.0.1:{grpc}"),
                stdout,
                stderr,
            };
            match d.wait_ready(30).await {
                Ok(()) => return d,
                // Someone took the port between our probe and the child's bind: try another.
                Err(_) if attempt < 2 && d.logs().contains("cannot listen") => continue,
                Err(status) => panic!(
                    "cordon {name} exited with {status} before it was ready:\n{}",
                    d.logs()
                ),
            }
        }
        unreachable!()
    }

    async fn wait_ready(&mut self, secs: u64) -> Result<(), ExitStatus> {
        let c = http_client();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(s);
            }
            if let Ok(r) = c
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "cordon not ready within {secs}s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The exit status, if the process already ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM, then wait (at most 30 s) for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "cordon did not exit within 30 s of SIGTERM:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let r = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", r(&self.stdout), r(&self.stderr))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The arguments of `cordon serve --config <cfg>`, for [`Daemon::start`].
pub fn serve_args(cfg: &Path) -> impl Fn(&mut Command) + '_ {
    move |c| {
        c.arg("serve").arg("--config").arg(cfg);
    }
}

/// A TOML string literal for a path.
pub fn toml_path(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// A config file for a child daemon on `root` (a `support::workspace()` dir), with `extra` TOML
/// appended; returns its path.
pub fn write_config(root: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "data_dir = {}\npolicies_dir = {}\nplaybooks_dir = {}\nconnectors_dir = {}\n{extra}\n",
        toml_path(&root.join("data")),
        toml_path(&root.join("policies")),
        toml_path(&root.join("playbooks")),
        toml_path(&root.join("connectors")),
    );
    let path = root.join("cordon.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cordon <command> <args…>` as an operator does, against the gRPC API at `grpc_url` with
/// `token` in `CORDON_TOKEN`; returns the exit code, stdout and stderr.
pub async fn cli_as(
    grpc_url: &str,
    token: &str,
    command: &str,
    args: &[&str],
) -> (i32, String, String) {
    let (grpc_url, token, command) = (grpc_url.to_string(), token.to_string(), command.to_string());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg(command)
            .args(&args)
            .env("CORDON_GRPC_URL", grpc_url)
            .env("CORDON_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The `[enrichment]` table for the example enrichment files of a `support::workspace()` dir.
pub fn enrichment_toml(root: &Path) -> String {
    format!(
        "[enrichment]\nassets = {}\nidentities = {}\nintel = {}\n",
        toml_path(&root.join("enrichment/assets.toml")),
        toml_path(&root.join("enrichment/identities.toml")),
        toml_path(&root.join("enrichment/intel.toml")),
    )
}

/// `[[grpc.approvers]]` tables for `users`, each with its [`token_of`] stored as a SHA-256.
pub fn approvers_toml(users: &[&str]) -> String {
    users
        .iter()
        .map(|u| {
            format!(
                "[[grpc.approvers]]\nuser = \"{u}\"\ntoken = {{ sha256 = \"{}\" }}\n",
                sha(&token_of(u))
            )
        })
        .collect()
}
