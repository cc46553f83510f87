//! Retention: archiving a settled prefix of the audit chain out of the store, keeping the proof.
//!
//! Owns: `m/base` (where the chain kept in the store starts once a prefix was archived), the
//! archive file format, cutting the prefix out of the store (whole chunks removed, the chunk
//! that straddles the cut re-keyed at the first kept record), and verifying an archive file on
//! its own.
//!
//! The chain is cut only at a prefix: every record up to the cut is archived, so the records
//! kept still link to each other and the first kept record links to the archived end, whose hash
//! `m/base` keeps together with the signed checkpoint of it. What may be archived is decided by
//! the caller (the engine's reads: records of settled cases only, older than the cut-off); the
//! first record that may not be stops the prefix, and is reported as what held it back.
//!
//! An archive file is JSON lines: a header line `{"archive": {...}}` (format, the chain's
//! `start` before its first record — genesis or the previous archive's end —, its `end`, the
//! record count, the cut-off, the signed checkpoint of `end`, the cases whose records it holds),
//! then every archived record exactly as `cordon audit export` prints it. It verifies on its
//! own: the records link from `start` to `end` and the checkpoint, signed by the configured key,
//! signs `end`.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    AUDIT_PREFIX, AuditBody, AuditRecord, GENESIS_HASH, Head, Store, StoreError, audit_key,
    chunk_parts, encode, seq_of_key,
};

/// Key of the chain's base in the store.
pub(super) const KEY_BASE: &[u8] = b"m/base";
/// The archive file format this build writes and reads.
pub const ARCHIVE_FORMAT: &str = "cordon-archive/1";

/// Where the chain kept in the store starts: the last archived record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub seq: u64,
    pub hash: String,
    /// The signed checkpoint of that record (signed-note text), as the archive holds it.
    pub checkpoint: String,
    pub archived_at: DateTime<Utc>,
}

/// The first line of an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: String,
    /// The chain before this archive's first record: genesis, or the previous archive's end.
    pub start: Head,
    /// Its last record.
    pub end: Head,
    pub records: u64,
    /// Records from this time on were not archived.
    pub before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The signed checkpoint of `end` (signed-note text).
    pub checkpoint: String,
    /// The cases whose records it holds.
    pub cases: Vec<String>,
    /// What the caller carries with the records so the archive stands on its own (the policy
    /// sets its decisions were made with, for `cordon replay --archive`); opaque to the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_sets: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    archive: ArchiveHeader,
}

/// The first record the prefix could not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub seq: u64,
    pub reason: String,
}

/// What an archive run did.
#[derive(Debug, Clone)]
pub struct ArchiveReport {
    pub header: ArchiveHeader,
    /// Why the prefix ends where it does (absent when it reached the chain's head).
    pub held_back: Option<HeldBack>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("nothing to archive: record {} is held back: {}", .0.seq, .0.reason)]
    Nothing(HeldBack),
    #[error("nothing to archive: the chain has no records after seq {0}")]
    Empty(u64),
    #[error("the audit chain does not verify, nothing was archived: {0}")]
    Chain(String),
    #[error("cannot sign the checkpoint: {0}")]
    Sign(String),
    #[error("{0} exists: an archive is never overwritten")]
    Exists(String),
    #[error("cannot write the archive: {0}")]
    Write(std::io::Error),
}

impl Store {
    /// The chain's base: genesis (seq 0) until a prefix was archived.
    pub fn base(&self) -> Result<Option<Base>, StoreError> {
        read_base(&self.inner.db)
    }

    /// Archives the longest prefix of the chain whose records were all written before `before`
    /// and for each of which `hold` says nothing (`Some(reason)` holds a record, and every
    /// record after it, back). The records go to a new file at `out` (written to a temporary
    /// file, synced, then linked into place), with the checkpoint `sign` makes of the last
    /// one; only then are they removed from the store, in one batch with the new base.
    ///
    /// Offline only: the daemon must be stopped (sled allows one process, and nothing may
    /// commit meanwhile).
    pub fn archive_prefix(
        &self,
        before: DateTime<Utc>,
        hold: &mut dyn FnMut(&AuditBody) -> Option<String>,
        sign: &dyn Fn(&Head) -> Result<String, String>,
        attach: &dyn Fn() -> Vec<serde_json::Value>,
        out: &Path,
        now: DateTime<Utc>,
    ) -> Result<ArchiveReport, ArchiveError> {
        if out.exists() {
            return Err(ArchiveError::Exists(out.display().to_string()));
        }
        let db = &self.inner.db;
        let base = read_base(db)?;
        let start = base
            .as_ref()
            .map(|b| Head {
                seq: b.seq,
                hash: b.hash.clone(),
            })
            .unwrap_or_else(Head::genesis);
        // First pass: where the prefix ends, checking the links on the way.
        let mut end = start.clone();
        let mut held_back = None;
        let mut cases = BTreeSet::new();
        'scan: for item in db.scan_prefix(AUDIT_PREFIX) {
            let (k, v) = item.map_err(StoreError::from)?;
            let v = super::unpack_value(&k, &v)?;
            for part in chunk_parts(&v) {
                let (hash, body) = part.map_err(|e| {
                    ArchiveError::Chain(format!("record {}: unreadable: {e}", end.seq + 1))
                })?;
                let rec = check_raw(&end, hash, body).map_err(ArchiveError::Chain)?;
                let why = if rec.at >= before {
                    Some(format!("written at {}, not before {before}", rec.at))
                } else {
                    hold(&rec)
                };
                if let Some(reason) = why {
                    held_back = Some(HeldBack {
                        seq: rec.seq,
                        reason,
                    });
                    break 'scan;
                }
                if let Some(c) = &rec.case_id {
                    cases.insert(c.clone());
                }
                end = Head {
                    seq: rec.seq,
                    hash: String::from_utf8_lossy(hash).into_owned(),
                };
            }
        }
        if end.seq == start.seq {
            return Err(match held_back {
                Some(h) => ArchiveError::Nothing(h),
                None => ArchiveError::Empty(start.seq),
            });
        }
        let checkpoint = sign(&end).map_err(ArchiveError::Sign)?;
        let header = ArchiveHeader {
            format: ARCHIVE_FORMAT.into(),
            start: start.clone(),
            end: end.clone(),
            records: end.seq - start.seq,
            before,
            created_at: now,
            checkpoint: checkpoint.clone(),
            cases: cases.into_iter().collect(),
            policy_sets: attach(),
        };
        write_archive(self, &header, out)?;
        // Cut the prefix: chunks wholly inside it go, the one that straddles the end is kept
        // from the first record after it, under that record's key.
        let mut batch = sled::Batch::default();
        for item in db.range(audit_key(start.seq + 1)..=audit_key(end.seq)) {
            let (k, v) = item.map_err(StoreError::from)?;
            let Some(first) = seq_of_key(&k) else {
                continue;
            };
            batch.remove(k.to_vec());
            let v = super::unpack_value(&k, &v)?;
            let parts: Vec<(&[u8], &[u8])> = chunk_parts(&v).filter_map(Result::ok).collect();
            let last = first + parts.len() as u64 - 1;
            if last > end.seq {
                let keep = &parts[(end.seq + 1 - first) as usize..];
                let mut chunk = Vec::with_capacity(v.len());
                for (i, (h, b)) in keep.iter().enumerate() {
                    if i > 0 {
                        chunk.push(b'\n');
                    }
                    chunk.extend_from_slice(h);
                    chunk.push(b'\n');
                    chunk.extend_from_slice(b);
                }
                batch.insert(audit_key(end.seq + 1), &*super::codec::pack(&chunk));
            }
        }
        batch.insert(
            KEY_BASE,
            encode(&Base {
                seq: end.seq,
                hash: end.hash.clone(),
                checkpoint,
                archived_at: now,
            })?,
        );
        db.apply_batch(batch).map_err(StoreError::from)?;
        self.flush()?;
        Ok(ArchiveReport { header, held_back })
    }
}

pub(super) fn read_base(db: &sled::Db) -> Result<Option<Base>, StoreError> {
    match db.get(KEY_BASE)? {
        Some(v) => super::decode(KEY_BASE, &v).map(Some),
        None => Ok(None),
    }
}

/// A stored record (its hash and body bytes) must follow `prev`: see [`check_link`].
fn check_raw(prev: &Head, hash: &[u8], body: &[u8]) -> Result<AuditBody, String> {
    let seq = prev.seq + 1;
    let rec: AuditBody =
        serde_json::from_slice(body).map_err(|e| format!("record {seq}: unreadable: {e}"))?;
    if rec.seq != seq || rec.prev != prev.hash {
        return Err(format!(
            "record {seq} does not follow record {} (holds seq {}): the chain is broken",
            prev.seq, rec.seq
        ));
    }
    if hex::encode(Sha256::digest(body)).as_bytes() != hash {
        return Err(format!("record {seq} does not match its hash: edited"));
    }
    Ok(rec)
}

/// `rec` must follow `prev` in a chain: the next seq, linking to its hash, hashing to its own.
fn check_link(prev: &Head, rec: &AuditRecord) -> Result<(), String> {
    if rec.body.seq != prev.seq + 1 {
        return Err(format!(
            "record {} follows record {}: records are missing or out of order",
            rec.body.seq, prev.seq
        ));
    }
    if rec.body.prev != prev.hash {
        return Err(format!(
            "record {} does not link to record {}'s hash",
            rec.body.seq, prev.seq
        ));
    }
    let body = serde_json::to_vec(&rec.body).map_err(|e| e.to_string())?;
    if hex::encode(Sha256::digest(&body)) != rec.hash {
        return Err(format!(
            "record {} does not match its hash: edited",
            rec.body.seq
        ));
    }
    Ok(())
}

fn write_archive(store: &Store, header: &ArchiveHeader, out: &Path) -> Result<(), ArchiveError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| -> Result<(), ArchiveError> {
        let f = std::fs::File::create(&tmp).map_err(ArchiveError::Write)?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(
            &mut w,
            &HeaderLine {
                archive: header.clone(),
            },
        )
        .map_err(|e| ArchiveError::Write(std::io::Error::other(e)))?;
        w.write_all(b"\n").map_err(ArchiveError::Write)?;
        let mut from = header.start.seq + 1;
        while from <= header.end.seq {
            let recs = store.audit_records(from, 4096)?;
            if recs.is_empty() {
                break;
            }
            for rec in recs {
                if rec.body.seq > header.end.seq {
                    break;
                }
                from = rec.body.seq + 1;
                serde_json::to_writer(&mut w, &rec)
                    .map_err(|e| ArchiveError::Write(std::io::Error::other(e)))?;
                w.write_all(b"\n").map_err(ArchiveError::Write)?;
            }
        }
        let f = w
            .into_inner()
            .map_err(|e| ArchiveError::Write(e.into_error()))?;
        f.sync_all().map_err(ArchiveError::Write)?;
        // Linked into place without replacing a file that appeared meanwhile.
        std::fs::hard_link(&tmp, out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ArchiveError::Exists(out.display().to_string())
            } else {
                ArchiveError::Write(e)
            }
        })?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// What is wrong with an archive file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveFileError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("line {line}: {reason}")]
    Bad { line: u64, reason: String },
}

/// Reads an archive file, checking its chain from `start` to `end` (not its checkpoint's
/// signature: that needs the public key, see `checkpoint`). `each` sees every record.
pub fn read_archive(
    path: &Path,
    each: &mut dyn FnMut(&AuditRecord),
) -> Result<ArchiveHeader, ArchiveFileError> {
    let f = std::fs::File::open(path)
        .map_err(|e| ArchiveFileError::Read(path.display().to_string(), e))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let bad = |line: u64, reason: String| ArchiveFileError::Bad { line, reason };
    let first = lines
        .next()
        .ok_or_else(|| bad(1, "empty file: not a cordon archive".into()))?
        .map_err(|e| ArchiveFileError::Read(path.display().to_string(), e))?;
    let header: HeaderLine = serde_json::from_str(&first)
        .map_err(|e| bad(1, format!("not a cordon archive header: {e}")))?;
    let header = header.archive;
    if header.format != ARCHIVE_FORMAT {
        return Err(bad(
            1,
            format!(
                "format {:?}, this build reads {ARCHIVE_FORMAT}",
                header.format
            ),
        ));
    }
    let mut prev = header.start.clone();
    let mut n = 1u64;
    for line in lines {
        n += 1;
        let line = line.map_err(|e| ArchiveFileError::Read(path.display().to_string(), e))?;
        let rec: AuditRecord =
            serde_json::from_str(&line).map_err(|e| bad(n, format!("not an audit record: {e}")))?;
        check_link(&prev, &rec).map_err(|e| bad(n, e))?;
        each(&rec);
        prev = Head {
            seq: rec.body.seq,
            hash: rec.hash,
        };
    }
    if prev != header.end {
        return Err(bad(
            n,
            format!(
                "the records end at seq {} ({}), the header says seq {} ({}): records were removed or added",
                prev.seq, prev.hash, header.end.seq, header.end.hash
            ),
        ));
    }
    if header.records != header.end.seq - header.start.seq {
        return Err(bad(1, "the header's record count does not match".into()));
    }
    Ok(header)
}

/// The genesis hash, for callers that start a chain of archives.
pub fn genesis() -> Head {
    Head {
        seq: 0,
        hash: GENESIS_HASH.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditKind;
    use crate::store::{Links, StoreOptions};

    fn at(min: i64) -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(min)
    }

    fn case(c: &str) -> Links {
        Links {
            case_id: Some(c.into()),
            ..Links::default()
        }
    }

    /// One commit of 12 records (a few chunks) for cases a then b, cut inside a chunk: the
    /// records kept still verify, from the base; the archive reads back whole and linked; the
    /// store reopens; a second archive continues where the first ended.
    #[tokio::test]
    async fn a_prefix_is_cut_inside_a_chunk_and_the_rest_verifies_from_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data, &StoreOptions::default()).unwrap();
        let filler = "x".repeat(crate::store::AUDIT_CHUNK_BYTES / 5);
        let mut t = store.begin();
        for i in 0..12 {
            let c = if i < 7 { "a" } else { "b" };
            t.audit(
                AuditKind::Vote,
                case(c),
                at(i),
                serde_json::json!({"i": i, "f": filler}),
            )
            .unwrap();
        }
        store.commit(t).await.unwrap();
        let keys_before = store.inner.db.scan_prefix(AUDIT_PREFIX).count();
        assert!(keys_before >= 2, "{keys_before} chunks");
        let out = dir.path().join("one.jsonl");
        let mut hold = |b: &AuditBody| (b.case_id.as_deref() == Some("b")).then(|| "open".into());
        let sign = |h: &Head| Ok(format!("signed {} {}", h.seq, h.hash));
        let r = store
            .archive_prefix(at(100), &mut hold, &sign, &Vec::new, &out, at(200))
            .unwrap();
        assert_eq!((r.header.start.seq, r.header.end.seq), (0, 7));
        assert_eq!(r.header.cases, vec!["a".to_string()]);
        assert_eq!(r.held_back.as_ref().map(|h| h.seq), Some(8));
        assert_eq!(store.audit_records(1, 100).unwrap()[0].body.seq, 8);
        let base = store.base().unwrap().unwrap();
        assert_eq!(
            (base.seq, base.checkpoint.as_str()),
            (7, r.header.checkpoint.as_str())
        );
        // The archive reads back, linked from genesis to its end.
        let mut seqs = Vec::new();
        let h = read_archive(&out, &mut |rec| seqs.push(rec.body.seq)).unwrap();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
        assert_eq!(h, r.header);
        // Nothing is overwritten; nothing more may go while b is open.
        assert!(matches!(
            store.archive_prefix(at(100), &mut hold, &sign, &Vec::new, &out, at(200)),
            Err(ArchiveError::Exists(_))
        ));
        let again = dir.path().join("again.jsonl");
        assert!(matches!(
            store.archive_prefix(at(100), &mut hold, &sign, &Vec::new, &again, at(200)),
            Err(ArchiveError::Nothing(HeldBack { seq: 8, .. }))
        ));
        assert!(!again.exists());
        let head = store.head();
        drop(store);

        // The kept chain verifies from the base and the store reopens on it.
        let report = crate::store::verify(&data).unwrap();
        assert_eq!((report.records, report.head.seq), (5, 12));
        assert_eq!(report.base.map(|b| b.seq), Some(7));
        let store = Store::open(&data, &StoreOptions::default()).unwrap();
        assert_eq!(store.head(), head);
        // A second archive starts at the first one's end.
        let two = dir.path().join("two.jsonl");
        let r2 = store
            .archive_prefix(at(100), &mut |_| None, &sign, &Vec::new, &two, at(300))
            .unwrap();
        assert_eq!(r2.header.start, r.header.end);
        assert_eq!(r2.header.end.seq, 12);
        drop(store);
        let report = crate::store::verify(&data).unwrap();
        assert_eq!((report.records, report.head.seq), (0, 12));
        read_archive(&two, &mut |_| {}).unwrap();
    }

    /// An edited, dropped or added line in an archive file is found.
    #[tokio::test]
    async fn an_altered_archive_file_does_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), &StoreOptions::default()).unwrap();
        let mut t = store.begin();
        for i in 0..5 {
            t.audit(
                AuditKind::Vote,
                case("a"),
                at(i),
                serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        store.commit(t).await.unwrap();
        let out = dir.path().join("a.jsonl");
        store
            .archive_prefix(
                at(100),
                &mut |_| None,
                &|_| Ok("cp".into()),
                &Vec::new,
                &out,
                at(200),
            )
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let bad = dir.path().join("bad.jsonl");
        let edited = text.replacen("\"i\":2", "\"i\":9", 1);
        let dropped = [&lines[..3], &lines[4..]].concat().join("\n");
        let cut = lines[..5].join("\n");
        for (what, body) in [("edited", edited), ("dropped", dropped), ("cut", cut)] {
            std::fs::write(&bad, body).unwrap();
            assert!(
                read_archive(&bad, &mut |_| {}).is_err(),
                "{what} archive read back"
            );
        }
    }
}
