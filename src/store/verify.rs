//! Offline audit-chain verification and export (`cordon audit verify|export`).
//!
//! Walks the audit records in key order (each key a chunk of consecutive records, see the
//! store's key layout) and checks, for each: its position (the chunk's key plus its index) is
//! the next sequence, the body's `seq` matches its position (catches reordering), the body hashes to the stored
//! hash (catches edits), the body's `prev` is the previous record's hash (catches deletions and
//! re-hashed edits), and that the chain ends at the recorded head (catches a truncated tail).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{
    AUDIT_PREFIX, AuditBody, GENESIS_HASH, Head, KEY_HEAD, StoreError, chunk_parts, dir,
    seq_of_key, sled_error,
};

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked (those kept in the store).
    pub records: u64,
    pub head: Head,
    /// Where the chain kept starts, when a prefix was archived (`m/base`).
    pub base: Option<Head>,
}

/// The first problem found in the chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no store at {0}")]
    Missing(String),
    #[error("audit record {seq}: {reason}")]
    Broken { seq: u64, reason: String },
}

impl VerifyError {
    /// The first bad sequence number, when the problem is in the chain itself.
    pub fn bad_seq(&self) -> Option<u64> {
        match self {
            VerifyError::Broken { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// Opens an existing store for reading, checked as the daemon checks it (see `dir`).
fn open_existing(path: &Path, check_chain: bool) -> Result<sled::Db, VerifyError> {
    match super::open_checked(path, 64 << 20, false, check_chain, false)? {
        Some(o) => Ok(o.db),
        None => Err(VerifyError::Missing(path.display().to_string())),
    }
}

/// Verifies the audit chain of the store at `path` (the daemon must not be running: sled
/// allows one process at a time).
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_pinned(path, &BTreeSet::new()).map(|(report, _)| report)
}

/// [`verify`], also returning the stored hash of each record in `seqs` that the chain holds
/// (signed checkpoints pin these: see `checkpoint`).
pub fn verify_pinned(
    path: &Path,
    seqs: &BTreeSet<u64>,
) -> Result<(VerifyReport, BTreeMap<u64, String>), VerifyError> {
    // The walk below checks the chain and names the first bad record.
    let db = open_existing(path, false)?;
    let mut pinned = BTreeMap::new();
    let report = dir::guarded(path, "reading the audit chain", || {
        walk(path, &db, &mut |seq, hash, _| {
            if seqs.contains(&seq) {
                pinned.insert(seq, hash.to_string());
            }
            Ok(())
        })
    })
    .map_err(|e| match e {
        ExportError::Verify(e) => e,
        // Only export's visitor writes.
        ExportError::Write(e) => VerifyError::Missing(e.to_string()),
    })?;
    Ok((report, pinned))
}

/// Checks the chain; `seen` is called with each record's seq, hash and body once it has checked
/// out, and may stop the walk with a write error.
fn walk(
    path: &Path,
    db: &sled::Db,
    seen: &mut dyn FnMut(u64, &str, AuditBody) -> std::io::Result<()>,
) -> Result<VerifyReport, ExportError> {
    let mut failed = None;
    let r = walk_checked(
        path,
        db,
        &mut |seq, hash, body| match seen(seq, hash, body) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    );
    match failed {
        Some(e) => Err(ExportError::Write(e)),
        None => Ok(r?),
    }
}

/// [`walk`]'s checks; a `seen` that answers `false` stops the walk (with an error `walk`
/// replaces by the visitor's).
fn walk_checked(
    path: &Path,
    db: &sled::Db,
    seen: &mut dyn FnMut(u64, &str, AuditBody) -> bool,
) -> Result<VerifyReport, VerifyError> {
    // After an archive the chain kept starts at the base (the last archived record).
    let base = super::archive::read_base(db).map_err(VerifyError::Store)?;
    let mut expected_seq = base.as_ref().map_or(1, |b| b.seq + 1);
    let mut prev = base
        .as_ref()
        .map_or_else(|| GENESIS_HASH.to_string(), |b| b.hash.clone());
    // When a record's own hash is intact but the next record does not link to it, the record
    // was rewritten with a fresh hash: report it, not its successor.
    for item in db.scan_prefix(AUDIT_PREFIX) {
        let (k, v) = item.map_err(|e| sled_error(path, e))?;
        let key_seq = seq_of_key(&k).ok_or_else(|| VerifyError::Broken {
            seq: expected_seq,
            reason: "malformed audit key".into(),
        })?;
        if key_seq > expected_seq {
            return Err(VerifyError::Broken {
                seq: expected_seq,
                reason: format!("missing (the next record present is {key_seq}): deleted"),
            });
        }
        if key_seq < expected_seq {
            return Err(VerifyError::Broken {
                seq: key_seq,
                reason: format!(
                    "stored twice (a chunk starting at {key_seq} overlaps records up to {}): records were added or duplicated",
                    expected_seq - 1
                ),
            });
        }
        let v = super::unpack_value(&k, &v).map_err(|e| VerifyError::Broken {
            seq: expected_seq,
            reason: format!("unreadable: {e}"),
        })?;
        for part in chunk_parts(&v) {
            let pos = expected_seq;
            let unreadable = |e: &str| VerifyError::Broken {
                seq: pos,
                reason: format!("unreadable: {e}"),
            };
            let (hash, body) = part.map_err(unreadable)?;
            let hash = std::str::from_utf8(hash).map_err(|_| unreadable("hash is not utf-8"))?;
            let rec: AuditBody =
                serde_json::from_slice(body).map_err(|e| unreadable(&e.to_string()))?;
            if rec.seq != pos {
                let what = if rec.seq > pos {
                    "records were deleted or reordered"
                } else {
                    "records were reordered"
                };
                return Err(VerifyError::Broken {
                    seq: pos,
                    reason: format!("holds the body of record {}: {what}", rec.seq),
                });
            }
            if hex::encode(Sha256::digest(body)) != hash {
                return Err(VerifyError::Broken {
                    seq: pos,
                    reason: "content does not match its hash: edited".into(),
                });
            }
            if rec.prev != prev {
                let seq = pos.saturating_sub(1).max(1);
                return Err(VerifyError::Broken {
                    seq,
                    reason: format!(
                        "record {pos} links to a different hash than record {seq} has: record {seq} was edited and re-hashed"
                    ),
                });
            }
            if !seen(pos, hash, rec) {
                return Err(VerifyError::Broken {
                    seq: pos,
                    reason: "not written".into(),
                });
            }
            prev = hash.to_string();
            expected_seq += 1;
        }
    }
    let last = expected_seq - 1;
    let first = base.as_ref().map_or(1, |b| b.seq + 1);
    let head: Head = match db.get(KEY_HEAD).map_err(|e| sled_error(path, e))? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| VerifyError::Broken {
            seq: last,
            reason: format!("chain head unreadable: {e}"),
        })?,
        None => Head {
            seq: 0,
            hash: GENESIS_HASH.into(),
        },
    };
    if head.seq > last {
        return Err(VerifyError::Broken {
            seq: last + 1,
            reason: format!("missing: the chain head says {} records exist", head.seq),
        });
    }
    if head.seq < last || head.hash != prev {
        return Err(VerifyError::Broken {
            seq: last,
            reason: "does not match the recorded chain head: edited and re-hashed".into(),
        });
    }
    Ok(VerifyReport {
        records: last + 1 - first,
        head,
        base: base.map(|b| Head {
            seq: b.seq,
            hash: b.hash,
        }),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Verify(#[from] VerifyError),
    #[error("write: {0}")]
    Write(#[from] std::io::Error),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> ExportError {
        ExportError::Verify(VerifyError::Store(e))
    }
}

/// Writes every audit record as one JSON line (`{"hash":..,"seq":..,"prev":..,...}`) in chain
/// order, checking the chain as [`verify`] does while it writes: at the first bad record it
/// stops with that record's error, having written only the records before it. A record is
/// written once the next one links to it (or, for the last, once the chain head matches it),
/// since a record edited and re-hashed shows only there. Returns the number of records written.
pub fn export(path: &Path, out: &mut dyn Write) -> Result<u64, ExportError> {
    let db = open_existing(path, true)?;
    let mut n = 0;
    let mut write = |rec: &super::AuditRecord, out: &mut dyn Write| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, rec).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        n += 1;
        Ok(())
    };
    let mut held: Option<super::AuditRecord> = None;
    dir::guarded(path, "reading the audit chain", || {
        walk(path, &db, &mut |_, hash, body| {
            let rec = super::AuditRecord {
                hash: hash.to_string(),
                body,
            };
            match held.replace(rec) {
                Some(linked) => write(&linked, out),
                None => Ok(()),
            }
        })
    })?;
    if let Some(last) = held {
        write(&last, out)?;
    }
    out.flush()?;
    Ok(n)
}
