//! `cordon replay`, `cordon explain` and `cordon simulate`: past decisions from a data
//! directory.
//!
//! Owns: these commands' flags, how their reports are printed (text, `--json`, Markdown) and
//! their exit statuses. The work is `policy::replay` and `explain`; a running daemon's store
//! cannot be opened a second time (sled locks it), which is reported as such (exit 74).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::audit::AuditKind;
use crate::daemon::{EXIT_CONFIG, EXIT_STORE};
use crate::policy::replay::{self, Filter, ReplayReport, SimulationReport};
use crate::store::{Links, Store, StoreError};

/// Which recorded decisions a command takes.
#[derive(Debug, clap::Args)]
pub struct Range {
    /// The data directory (default: CORDON_DATA_DIR or ./data). The daemon must be stopped (or
    /// give a copy of the directory).
    #[arg(long, env = "CORDON_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Only this case's decisions (exit 1 when no audit record names the case).
    #[arg(long = "case")]
    pub case_id: Option<String>,
    /// Only records from this time on (RFC 3339, or YYYY-MM-DD: midnight UTC).
    #[arg(long, value_parser = parse_bound)]
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time (RFC 3339, or YYYY-MM-DD: midnight UTC).
    #[arg(long, value_parser = parse_bound)]
    pub until: Option<DateTime<Utc>>,
}

/// A time bound as `cordon report` reads one (RFC 3339, or a date: midnight UTC), or any other
/// form chrono reads as a UTC time (what these flags took before dates were).
fn parse_bound(s: &str) -> Result<DateTime<Utc>, String> {
    super::report::parse_time(s).or_else(|e| s.parse::<DateTime<Utc>>().map_err(|_| e))
}

impl Range {
    pub(super) fn filter(&self) -> Filter {
        Filter {
            case_id: self.case_id.clone(),
            since: self.since,
            until: self.until,
            ..Filter::default()
        }
    }
}

/// When `simulate` fails (a CI gate for a policy repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Any decision would need fewer approvals (or be allowed where it was denied).
    Looser,
    /// Any decision would need more approvals (or be denied).
    Stricter,
    /// Any decision would change, or have new evaluation errors.
    Any,
}

fn open(path: &Path) -> Result<Store, i32> {
    Store::open_read_only(path).map_err(|e| store_error("cannot open the store", &e))
}

fn store_error(what: &str, e: &StoreError) -> i32 {
    eprintln!("{what}: {e}");
    EXIT_STORE
}

/// Exit status for an id that names nothing in the store, as `cordon explain` exits for one.
pub(super) const EXIT_NOT_FOUND: i32 = 1;

/// Says which of the given ids no record in `place` names (`no case "X" in the audit store`);
/// true when there is one, and the command must stop (a typo must not pass as "0 decisions").
pub(super) fn refuse_unknown(unknown: &[(&'static str, String)], place: &str) -> bool {
    for (what, id) in unknown {
        eprintln!("no {what} {id:?} in {place}");
    }
    !unknown.is_empty()
}

/// `cordon replay`: exit 0 only if every replayed decision is identical.
pub fn replay_cmd(range: &Range, action: Option<String>, alert: Option<String>, json: bool) -> i32 {
    let store = match open(&range.data_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let filter = Filter {
        action_id: action,
        alert_id: alert,
        ..range.filter()
    };
    let report = match replay::replay(&store, &filter) {
        Ok(r) => r,
        Err(e) => return store_error("cannot read the audit store", &e),
    };
    if refuse_unknown(&report.unknown, "the audit store") {
        return EXIT_NOT_FOUND;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", replay_text(&report));
    }
    if report.all_identical() { 0 } else { 1 }
}

pub(super) fn replay_text(r: &ReplayReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} decision(s) replayed: {} identical, {} diverged; {} not replayed (policy text not recorded); {} could not be replayed",
        r.replayed,
        r.identical,
        r.diverged.len(),
        r.not_recorded,
        r.failed.len()
    );
    for d in &r.diverged {
        let p = &d.place;
        let _ = writeln!(
            out,
            "diverged: seq {} at {} ({}, case {}, action {}, policy set {})",
            p.seq,
            p.at.to_rfc3339(),
            p.phase.as_str(),
            p.case_id.as_deref().unwrap_or("-"),
            p.action_id.as_deref().unwrap_or("-"),
            p.policy_hash
        );
        for x in &d.differences {
            let _ = writeln!(
                out,
                "    {}: recorded {}, replayed {}",
                x.field, x.recorded, x.replayed
            );
        }
    }
    for (seq, why) in &r.failed {
        let _ = writeln!(out, "not replayed: seq {seq}: {why}");
    }
    out
}

/// `cordon explain ID`.
pub fn explain_cmd(data_dir: &Path, id: &str, json: bool) -> i32 {
    let store = match open(data_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match crate::explain::read(&store, id) {
        Ok(Some(story)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&story).unwrap_or_default()
                );
            } else {
                print!("{}", crate::explain::render_text(&story));
            }
            0
        }
        Ok(None) => {
            eprintln!("no action or case {id:?} in the audit store");
            EXIT_NOT_FOUND
        }
        Err(e) => store_error("cannot read the audit store", &e),
    }
}

/// Output format of `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// `cordon simulate --policies DIR`: recorded in the audit store; changes no case or action.
pub fn simulate_cmd(
    range: &Range,
    policies: &Path,
    fail_on: Option<FailOn>,
    format: Format,
) -> i32 {
    let candidate = match crate::policy::load_dir(policies) {
        Ok(e) => e,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("the candidate policy set does not load");
            return EXIT_CONFIG;
        }
    };
    let store = match Store::open_existing_for_append(
        &range.data_dir,
        &crate::store::StoreOptions::default(),
    ) {
        Ok(s) => s,
        Err(e) => return store_error("cannot open the store", &e),
    };
    let report = match replay::simulate(&store, &candidate, &range.filter()) {
        Ok(r) => r,
        Err(e) => return store_error("cannot read the audit store", &e),
    };
    // Nothing is recorded for a run over an id that is not there.
    if refuse_unknown(&report.unknown, "the audit store") {
        return EXIT_NOT_FOUND;
    }
    if let Err(e) = record(&store, &candidate, range, &report) {
        return store_error("cannot record the simulation", &e);
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Markdown => print!("{}", simulate_markdown(&report, policies)),
        Format::Text => print!("{}", simulate_text(&report, policies)),
    }
    gate(&report, fail_on)
}

/// The exit status of a simulation report under `--fail-on`.
fn gate(report: &SimulationReport, fail_on: Option<FailOn>) -> i32 {
    let failed = match fail_on {
        None => false,
        Some(FailOn::Looser) => report.looser > 0,
        Some(FailOn::Stricter) => report.stricter > 0,
        Some(FailOn::Any) => !report.changes.is_empty(),
    };
    if !report.failed.is_empty() {
        for (seq, why) in &report.failed {
            eprintln!("not simulated: seq {seq}: {why}");
        }
        return 1;
    }
    if failed { 1 } else { 0 }
}

/// `cordon simulate --shadow`: the recorded shadow decisions against the decisions in force.
pub fn shadow_cmd(range: &Range, fail_on: Option<FailOn>, format: Format) -> i32 {
    let store = match open(&range.data_dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = match replay::shadow_report(&store, &range.filter()) {
        Ok(r) => r,
        Err(e) => return store_error("cannot read the audit store", &e),
    };
    if refuse_unknown(&report.unknown, "the audit store") {
        return EXIT_NOT_FOUND;
    }
    let label = Path::new("[policy.shadow]");
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Markdown => print!("{}", simulate_markdown(&report, label)),
        Format::Text => print!("{}", simulate_text(&report, label)),
    }
    gate(&report, fail_on)
}

/// Appends the `simulation` record (who ran it, which set, the summary) and flushes.
fn record(
    store: &Store,
    candidate: &crate::policy::PolicyEngine,
    range: &Range,
    r: &SimulationReport,
) -> Result<(), StoreError> {
    let who = os_user();
    let mut txn = store.begin();
    txn.audit(
        AuditKind::Simulation,
        Links::default(),
        Utc::now(),
        json!({
            "user": who, "candidate_hash": candidate.hash, "candidate_dir": candidate.source.dir,
            "case": range.case_id, "since": range.since, "until": range.until,
            "decisions": r.decisions, "unchanged": r.unchanged, "changed": r.changes.len(),
            "looser": r.looser, "stricter": r.stricter, "new_errors": r.new_errors,
            "by_transition": r.by_transition, "cases": r.cases,
        }),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::Aborted(e.to_string()))?;
    rt.block_on(async { store.start_commit(txn).await })?;
    store.flush()
}

/// The OS user running the command: `USER`, else `LOGNAME`, else the name the user database
/// gives the process's real uid, else `uid N` (as root from cron or a container, neither
/// variable may be set).
fn os_user() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(u) = env("USER").or_else(|| env("LOGNAME")) {
        return u;
    }
    uid_user().unwrap_or_else(|| "unknown".into())
}

#[cfg(unix)]
fn uid_user() -> Option<String> {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into `pwd` and `buf`, which outlive
    // the call, and `pw_name` (checked non-null) points into `buf`, NUL-terminated.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        let name = (rc == 0 && !found.is_null() && !pwd.pw_name.is_null())
            .then(|| {
                unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| !n.is_empty());
        return Some(name.unwrap_or_else(|| format!("uid {uid}")));
    }
}

#[cfg(not(unix))]
fn uid_user() -> Option<String> {
    None
}

fn simulate_text(r: &SimulationReport, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "candidate {} (hash {}): {} step decision(s), {} unchanged, {} changed ({} looser, {} stricter), {} with new evaluation errors",
        dir.display(),
        r.candidate_hash,
        r.decisions,
        r.unchanged,
        r.changes.len(),
        r.looser,
        r.stricter,
        r.new_errors
    );
    for (t, n) in &r.by_transition {
        let _ = writeln!(out, "  {t}: {n}");
    }
    for (p, n) in &r.by_policy {
        let _ = writeln!(out, "  determined by {p}: {n}");
    }
    if !r.cases.is_empty() {
        let _ = writeln!(
            out,
            "cases whose outcome would differ: {}",
            r.cases.join(", ")
        );
    }
    for c in &r.changes {
        let _ = writeln!(
            out,
            "  case {} action {} ({} on {}): {}{}",
            c.place.case_id.as_deref().unwrap_or("-"),
            c.place.action_id.as_deref().unwrap_or("-"),
            c.action,
            c.target,
            c.outcome,
            if c.new_errors.is_empty() {
                String::new()
            } else {
                format!("; new errors: {}", c.new_errors.join("; "))
            }
        );
    }
    let _ = writeln!(
        out,
        "evaluation: {:.1} µs per decision with the candidate{}",
        r.candidate_micros_per_decision,
        match r.recorded_micros_per_decision {
            Some(m) => format!(", {m:.1} µs with the recorded sets"),
            None => String::new(),
        }
    );
    out
}

fn simulate_markdown(r: &SimulationReport, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Policy simulation: `{}`\n", dir.display());
    let _ = writeln!(out, "Candidate hash `{}`.\n", r.candidate_hash);
    let _ = writeln!(
        out,
        "| decisions | unchanged | changed | looser | stricter | new errors |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} |\n",
        r.decisions,
        r.unchanged,
        r.changes.len(),
        r.looser,
        r.stricter,
        r.new_errors
    );
    if !r.by_transition.is_empty() {
        let _ = writeln!(out, "| action: old tier → new tier | count |\n|---|---:|");
        for (t, n) in &r.by_transition {
            let _ = writeln!(out, "| {t} | {n} |");
        }
        let _ = writeln!(out);
    }
    if !r.changes.is_empty() {
        let _ = writeln!(
            out,
            "| case | action | kind | target | outcome |\n|---|---|---|---|---|"
        );
        for c in &r.changes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | `{}` | {} |",
                c.place.case_id.as_deref().unwrap_or("-"),
                c.place.action_id.as_deref().unwrap_or("-"),
                c.action,
                c.target.replace('|', "\\|"),
                c.outcome
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "Evaluation: {:.1} µs per decision with the candidate{}.",
        r.candidate_micros_per_decision,
        match r.recorded_micros_per_decision {
            Some(m) => format!(", {m:.1} µs with the recorded sets"),
            None => String::new(),
        }
    );
    out
}
