//! `cordon audit archive` (retention) and the archive files it writes: `audit verify --archive`
//! and `audit export --archive`.
//!
//! Owns: turning the command line and `[retention]` / `[audit.checkpoints]` into one archive
//! run, and its report. The cut is the store's (`Store::archive_prefix`), what may be archived
//! the engine's (`engine::retention`), the signature `checkpoint`'s.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use crate::checkpoint::{self, Checkpoint, PublicKey, Signer};
use crate::config::Config;
use crate::store::{ArchiveError, ArchiveHeader, Head, Store, StoreOptions};

use super::print_problems;
use crate::daemon::EXIT_STORE;

/// A cut-off given as RFC 3339 or a date (midnight UTC).
pub fn parse_before(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("--before {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

/// `cordon audit archive`.
pub fn archive(
    config: Option<&Path>,
    data_dir: Option<&Path>,
    before: Option<&str>,
    output: Option<&Path>,
) -> i32 {
    let (cfg, unknown) = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => return print_problems(&problems),
    };
    if !unknown.is_empty() {
        return print_problems(&unknown);
    }
    let Some(cp) = &cfg.audit.checkpoints else {
        eprintln!(
            "cannot archive: [audit.checkpoints] is not configured; an archive's end is signed with its key, so the chain kept in the store can be proven from it"
        );
        return 1;
    };
    let signer = match Signer::from_ref(&cp.signing_key, &cp.origin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot archive: {e}");
            return 1;
        }
    };
    let now = Utc::now();
    let before = match before {
        Some(b) => match parse_before(b) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot archive: {e}");
                return 1;
            }
        },
        None => now - chrono::Duration::days(cfg.retention.closed_case_days.min(36_500) as i64),
    };
    if before > now {
        eprintln!("cannot archive: --before {before} is in the future");
        return 1;
    }
    let out: PathBuf = match (output, &cfg.retention.dir) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(dir)) => {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("cannot archive: cannot create {}: {e}", dir.display());
                return 1;
            }
            dir.join(format!(
                "cordon-archive-{}.jsonl",
                now.format("%Y%m%dT%H%M%SZ")
            ))
        }
        (None, None) => {
            eprintln!("cannot archive: give --output, or set [retention] dir");
            return 1;
        }
    };
    let data_dir = data_dir.unwrap_or(&cfg.data_dir);
    // Never create a store here: Store::open would start an empty one.
    if !data_dir.join("conf").exists() {
        eprintln!("cannot archive: no store at {}", data_dir.display());
        return EXIT_STORE;
    }
    let store = match Store::open(data_dir, &StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot archive: {}", super::in_use(data_dir, e));
            return EXIT_STORE;
        }
    };
    let mut settled = crate::engine::retention::Settled::new(&store, before);
    let sign =
        |head: &Head| checkpoint::sign_into(&signer, &cp.dir, head, now).map_err(|e| e.to_string());
    // The policy sets the archived decisions were made with go into the archive, so it
    // replays on its own (`cordon replay --archive`).
    let hashes = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut hold = |rec: &crate::store::AuditBody| {
        let why = settled.hold(rec);
        if why.is_none()
            && let Some(Ok(d)) = crate::policy::replay::recorded_decision(&rec.kind, &rec.data)
        {
            hashes.borrow_mut().insert(d.record.policy_hash);
        }
        why
    };
    let attach = || {
        hashes
            .borrow()
            .iter()
            .filter_map(|h| {
                store
                    .get_json::<crate::policy::PolicySource>(&crate::store::policy_set_key(h))
                    .ok()
                    .flatten()
                    .and_then(|source| {
                        serde_json::to_value(CarriedSet {
                            hash: h.clone(),
                            source,
                        })
                        .ok()
                    })
            })
            .collect()
    };
    let result = store.archive_prefix(before, &mut hold, &sign, &attach, &out, now);
    match result {
        Ok(r) => {
            let h = &r.header;
            println!(
                "archived {} audit records (seq {} to {}) of {} case(s) to {}; the chain in the store now starts after seq {} (hash {}), signed in the archive and in {}",
                h.records,
                h.start.seq + 1,
                h.end.seq,
                h.cases.len(),
                out.display(),
                h.end.seq,
                h.end.hash,
                cp.dir.display()
            );
            if let Some(held) = r.held_back {
                println!(
                    "stopped at seq {}: {} (records after it stay)",
                    held.seq, held.reason
                );
            }
            0
        }
        Err(ArchiveError::Nothing(held)) => {
            println!(
                "nothing to archive: the first record kept (seq {}) is held back: {}",
                held.seq, held.reason
            );
            0
        }
        Err(ArchiveError::Empty(seq)) => {
            println!("nothing to archive: the chain has no records after seq {seq}");
            0
        }
        Err(ArchiveError::Store(e)) => {
            eprintln!("cannot archive: {e}");
            EXIT_STORE
        }
        Err(e) => {
            eprintln!("cannot archive: {e}");
            1
        }
    }
}

/// A policy set as an archive carries it: its hash and its texts.
#[derive(serde::Serialize, serde::Deserialize)]
struct CarriedSet {
    hash: String,
    source: crate::policy::PolicySource,
}

/// `cordon replay --archive FILE...`: every decision in the archives re-decided with the policy
/// set it was made with, as the archive carries it; exit 0 only if every one is identical.
pub fn replay_archives(
    files: &[PathBuf],
    filter: &crate::policy::replay::Filter,
    json: bool,
) -> i32 {
    use crate::policy::replay::{KeptSets, Named, ReplayReport, recorded_in, replay_one};
    let mut out = ReplayReport::default();
    let mut named = Named::default();
    // Shared decision inputs carry over from one archive file to the next.
    let mut shared = crate::policy::SharedInputs::default();
    for f in files {
        // First the header (with the chain checked), then the records.
        let header = match crate::store::read_archive(f, &mut |_| {}) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("archive {}: {e}", f.display());
                return 1;
            }
        };
        let sets = header
            .policy_sets
            .iter()
            .filter_map(|v| serde_json::from_value::<CarriedSet>(v.clone()).ok())
            .map(|c| (c.hash, c.source))
            .collect();
        let mut sets = KeptSets::carried(sets);
        let r = crate::store::read_archive(f, &mut |rec| {
            named.note(filter, rec);
            if let Some(d) = recorded_in(&mut shared, filter, rec) {
                replay_one(&mut sets, &mut out, rec, d);
            }
        });
        if let Err(e) = r {
            eprintln!("archive {}: {e}", f.display());
            return 1;
        }
    }
    let place = if files.len() == 1 {
        "the archive"
    } else {
        "the archives"
    };
    if super::replay::refuse_unknown(&named.missing(filter), place) {
        return super::replay::EXIT_NOT_FOUND;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", super::replay::replay_text(&out));
    }
    if out.all_identical() { 0 } else { 1 }
}

/// `audit verify --archive FILE... --public-key KEY`: each archive's chain, its signed end,
/// and that each archive starts where the one before it ends.
pub fn verify_archives(files: &[PathBuf], key: &Path) -> i32 {
    let key = match PublicKey::read(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cannot verify: {e}");
            return 1;
        }
    };
    let mut prev: Option<(PathBuf, Head)> = None;
    for f in files {
        let header = match verify_one(f, &key) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("archive {}: {e}", f.display());
                return 1;
            }
        };
        if let Some((pf, end)) = &prev
            && *end != header.start
        {
            eprintln!(
                "archive {} starts after seq {} ({}), but {} ends at seq {} ({}): an archive is missing between them",
                f.display(),
                header.start.seq,
                header.start.hash,
                pf.display(),
                end.seq,
                end.hash
            );
            return 1;
        }
        println!(
            "ok: {} holds {} audit records (seq {} to {}) of {} case(s), its end signed by key {}{}",
            f.display(),
            header.records,
            header.start.seq + 1,
            header.end.seq,
            header.cases.len(),
            key.fingerprint(),
            if header.start.seq == 0 {
                String::new()
            } else {
                format!(
                    "; it continues the chain after seq {} (the previous archive's end)",
                    header.start.seq
                )
            }
        );
        prev = Some((f.clone(), header.end));
    }
    0
}

fn verify_one(f: &Path, key: &PublicKey) -> Result<ArchiveHeader, String> {
    let header = crate::store::read_archive(f, &mut |_| {}).map_err(|e| e.to_string())?;
    let cp = Checkpoint::open(&header.checkpoint, key).map_err(|e| format!("checkpoint: {e}"))?;
    if cp.seq != header.end.seq || cp.hash != header.end.hash {
        return Err(format!(
            "its checkpoint signs seq {} ({}), the archive ends at seq {} ({})",
            cp.seq, cp.hash, header.end.seq, header.end.hash
        ));
    }
    Ok(header)
}

/// `audit export --archive FILE [--case ID]`: the archive's records (checked as they are read)
/// as JSON lines, as `audit export` prints them.
pub fn export_archive(file: &Path, case: Option<&str>, out: &mut dyn std::io::Write) -> i32 {
    let mut n = 0u64;
    let mut failed = None;
    let r = crate::store::read_archive(file, &mut |rec| {
        if failed.is_some() || case.is_some_and(|c| rec.body.case_id.as_deref() != Some(c)) {
            return;
        }
        let w = serde_json::to_writer(&mut *out, rec)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"));
        match w {
            Ok(()) => n += 1,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        eprintln!("cannot export: write: {e}");
        return 1;
    }
    match r.map(|_| out.flush()) {
        Ok(Ok(())) => {
            eprintln!("exported {n} audit records from {}", file.display());
            0
        }
        Ok(Err(e)) => {
            eprintln!("cannot export: write: {e}");
            1
        }
        Err(e) => {
            eprintln!("cannot export: archive {}: {e}", file.display());
            1
        }
    }
}
