//! Opening a store: sled opened on a checked directory, then what sled holds checked against
//! the directory and the witness (format version, chain head, every page readable, no gap in
//! the audit records), with sled's panics turned into errors.

use std::path::Path;

use super::{
    AUDIT_PREFIX, FORMAT_VERSION, GENESIS_HASH, Head, KEY_FORMAT, KEY_HEAD, StoreError, archive,
    audit_key, chunk_parts, dir, seq_of_key, sled_config_for, unpack_value,
};

/// A store's sled database, opened and checked against its directory and witness.
pub(super) struct Opened {
    pub(super) db: sled::Db,
    pub(super) head: Head,
    /// The format version key as found (`None` in a new store).
    pub(super) format: Option<String>,
}

/// Checks the directory ([`dir::inspect`]), opens sled on it and checks what sled holds: the
/// format version, that the chain head is not before the one the witness names, that every page
/// reads, and with `check_chain` that no audit record is missing. `Ok(None)` when there is no
/// store and `create` is false. A panic inside sled is an error.
pub(super) fn open_checked(
    path: &Path,
    cache_bytes: u64,
    create: bool,
    check_chain: bool,
    compress_new: bool,
) -> Result<Option<Opened>, StoreError> {
    let found = dir::inspect(path)?;
    if matches!(found, dir::Found::New) {
        if !create {
            return Ok(None);
        }
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: sled::Error::Io(e),
        })?;
    }
    dir::guarded(path, "opening it", || {
        let db = sled_config_for(path, compress_new)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| sled_error(path, e))?;
        let format = db
            .get(KEY_FORMAT)
            .map_err(|e| sled_error(path, e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        let head = match db.get(KEY_HEAD).map_err(|e| sled_error(path, e))? {
            Some(v) => Some(serde_json::from_slice::<Head>(&v).map_err(|e| {
                dir::damaged(path, format!("its chain head (m/head) is unreadable: {e}"))
            })?),
            None => None,
        };
        let damaged = |reason: String| Err(dir::damaged(path, reason));
        match (format.as_deref(), &found) {
            (None, _) if db.first().map_err(|e| sled_error(path, e))?.is_some() => {
                return damaged(
                    "it holds a database without cordon's format-version key (not a cordon store)"
                        .into(),
                );
            }
            (None, dir::Found::Marked(w)) => {
                return damaged(format!(
                    "its database is empty, but {} says the store reached audit seq {}",
                    dir::WITNESS,
                    w.head.seq
                ));
            }
            // A new store, or one whose first start ended before it wrote anything.
            (None, _) if !create => return Ok(None),
            (None, _) => {}
            (Some("1" | "2"), _) => {}
            (Some(v), dir::Found::Unmarked) if v == "3" || v == FORMAT_VERSION.to_string() => {
                if head.is_some() {
                    return damaged(format!("{} is missing", dir::WITNESS));
                }
            }
            (Some(v), _) if v == "3" || v == FORMAT_VERSION.to_string() => {}
            (Some(v), _) => {
                return Err(StoreError::FormatVersion {
                    path: path.to_path_buf(),
                    found: v.to_string(),
                });
            }
        }
        let head = head.unwrap_or_else(Head::genesis);
        if let dir::Found::Marked(w) = &found {
            check_witness(path, &db, &head, &w.head)?;
        }
        read_every_page(path, &db, check_chain.then_some(&head))?;
        Ok(Some(Opened { db, head, format }))
    })
}

/// Reads every key and value once. sled reads pages, and the `blobs/` files that hold the big
/// ones, only when they are needed: without this, a damaged one would surface (or make sled
/// panic) later, in the running daemon, instead of at open. With `head`, also checks that the
/// audit records run from 1 to the head without a gap: replaying its log, sled skips a page
/// whose blob file is missing as if it had been collected, silently serving the page's older
/// version (the full chain check is `verify`'s, which names the first bad record instead).
fn read_every_page(path: &Path, db: &sled::Db, head: Option<&Head>) -> Result<(), StoreError> {
    let mut next = archive::read_base(db)?.map_or(1, |b| b.seq + 1);
    for item in db.iter() {
        let (k, v) = item.map_err(|e| match e {
            sled::Error::Io(e) => {
                dir::damaged(path, format!("a file of its database cannot be read: {e}"))
            }
            e => sled_error(path, e),
        })?;
        let audit = k.starts_with(AUDIT_PREFIX);
        // Without the chain check (`verify`), an audit chunk that does not unpack is left to
        // the chain walk, which names its first record.
        if audit && head.is_none() {
            continue;
        }
        let v = unpack_value(&k, &v).map_err(|e| dir::damaged(path, e.to_string()))?;
        if !audit {
            continue;
        }
        match seq_of_key(&k) {
            Some(first) if first == next => {
                let lines = v.iter().filter(|b| **b == b'\n').count() as u64 + 1;
                next = first + lines.div_ceil(2);
            }
            Some(first) if first > next => {
                return Err(dir::damaged(
                    path,
                    format!("audit records {next} to {} are missing", first - 1),
                ));
            }
            _ => {
                return Err(dir::damaged(
                    path,
                    format!("audit record {next} is stored out of place"),
                ));
            }
        }
    }
    match head {
        Some(h) if h.seq >= next => Err(dir::damaged(
            path,
            format!("audit records {next} to {} are missing", h.seq),
        )),
        Some(h) if h.seq + 1 < next => Err(dir::damaged(
            path,
            format!("audit records after its head (seq {}) exist", h.seq),
        )),
        _ => Ok(()),
    }
}

/// The store's head must be the witness's, or a later one whose chain holds the witness's
/// record unchanged: the audit chain only grows.
fn check_witness(path: &Path, db: &sled::Db, head: &Head, w: &Head) -> Result<(), StoreError> {
    let lost = |what: String| {
        Err(dir::damaged(
            path,
            format!(
                "{what}, but the store had reached audit seq {} ({}): data was lost",
                w.seq,
                dir::WITNESS
            ),
        ))
    };
    if head.seq < w.seq {
        return lost(format!("its audit chain ends at seq {}", head.seq));
    }
    // A witnessed record that was archived since is the archive's to prove.
    if let Some(b) = archive::read_base(db)?
        && w.seq <= b.seq
    {
        return if w.seq < b.seq || w.hash == b.hash {
            Ok(())
        } else {
            lost(format!("archived record {} has a different hash", w.seq))
        };
    }
    let hash = if head.seq == w.seq {
        Some(head.hash.clone())
    } else {
        record_hash(db, w.seq).map_err(|e| match e {
            StoreError::Io(e) => sled_error(path, e),
            e => e,
        })?
    };
    match hash {
        Some(h) if h == w.hash => Ok(()),
        Some(_) => lost(format!("audit record {} has a different hash", w.seq)),
        None => lost(format!("audit record {} is missing", w.seq)),
    }
}

/// The stored hash of audit record `seq` (genesis for 0), if the record is there.
fn record_hash(db: &sled::Db, seq: u64) -> Result<Option<String>, StoreError> {
    if seq == 0 {
        return Ok(Some(GENESIS_HASH.to_string()));
    }
    let Some(item) = db.range(..=audit_key(seq)).next_back() else {
        return Ok(None);
    };
    let (k, v) = item?;
    let Some(first) = seq_of_key(&k).filter(|f| *f <= seq) else {
        return Ok(None);
    };
    let v = unpack_value(&k, &v)?;
    Ok(chunk_parts(&v)
        .nth((seq - first) as usize)
        .and_then(|p| p.ok())
        .map(|(hash, _)| String::from_utf8_lossy(hash).into_owned()))
}

/// A sled error met while opening: corruption is damage; anything else (a lock held by a
/// running daemon, an I/O error) is reported as it is.
pub(super) fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => dir::damaged(
            path,
            match at {
                Some(at) => format!("sled found corrupted data (at {at:?})"),
                None => "sled found corrupted data".into(),
            },
        ),
        sled::Error::Unsupported(m) | sled::Error::ReportableBug(m) => {
            dir::damaged(path, format!("sled refused it: {m}"))
        }
        source => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}
