//! The data directory around sled's files: what is checked before sled may open it, cordon's
//! own witness file, and running sled so that a panic inside it becomes an error.
//!
//! sled 0.34 trusts its directory: it rewrites a missing or empty `conf`, starts an empty
//! database over a missing or zeroed `db`, recovers a truncated `db` to an earlier state as if
//! it were a crash's torn tail, and can panic (also in its own threads) on damaged pages. So:
//! - Before sled opens an existing store, [`inspect`] checks the files: `conf` and every
//!   snapshot must be present where expected and match the checksum sled wrote at their end;
//!   `db` must be present and not empty.
//! - [`WITNESS`] (`cordon.head`, written by cordon, atomically, when it opens a store and when it
//!   flushes at shutdown) names a chain head the store reached and the snapshot sled had then.
//!   The audit chain only grows, so the store's head must be at or after it, with the same hash
//!   at that seq: a `db` recovered to an earlier state, or emptied, is refused. Its presence is
//!   also what makes a directory an existing store (format version 3 and later): a store without it that
//!   has ever committed is damaged.
//! - [`guarded`] runs sled calls under `catch_unwind`, and a panic hook keeps a panic raised
//!   inside sled from being printed raw: it becomes [`StoreError::Damaged`].
//!
//! What is checked once sled has opened the directory (format version, witness, every page
//! readable, no gap in the audit records) is in `store::open`.

use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, Once};

use serde::{Deserialize, Serialize};

use super::{Head, StoreError};

/// cordon's witness file in the data directory.
pub const WITNESS: &str = "cordon.head";
const CONF: &str = "conf";
const DB: &str = "db";
const SNAP_PREFIX: &str = "snap.";

/// What `cordon.head` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Witness {
    /// A chain head the store reached (the store's head is never before it).
    pub head: Head,
    /// The log sequence number of the newest sled snapshot when the witness was written: sled
    /// only replaces a snapshot with a newer one, so one at least this new must exist.
    pub snapshot_lsn: Option<u64>,
}

/// What [`inspect`] found.
#[derive(Debug)]
pub(super) enum Found {
    /// No directory, or one without any of sled's or cordon's files: a new store.
    New,
    /// sled's files without a witness: a store of format version 1 or 2, one whose very first
    /// start was cut short, or something that is not cordon's (told apart once sled is open).
    Unmarked,
    /// A cordon store (format version 3 or later) and its witness.
    Marked(Witness),
}

pub(super) fn damaged(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Checks the data directory before sled opens it (see the module doc).
pub(super) fn inspect(path: &Path) -> Result<Found, StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::New),
        Err(e) => return Err(damaged(path, format!("cannot read it: {e}"))),
    };
    if !meta.is_dir() {
        return Err(damaged(path, "it is not a directory"));
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| damaged(path, format!("cannot list it: {e}")))?;
    let mut snapshots = Vec::new();
    let (mut conf, mut db, mut witness) = (false, false, false);
    for e in entries {
        let e = e.map_err(|e| damaged(path, format!("cannot list it: {e}")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        match name.as_str() {
            CONF => conf = true,
            DB => db = true,
            WITNESS => witness = true,
            n if n.starts_with(SNAP_PREFIX) => snapshots.push(n.to_string()),
            _ => {}
        }
    }
    if !conf && !db && !witness && snapshots.is_empty() {
        return Ok(Found::New);
    }
    let read = |name: &str| {
        std::fs::read(path.join(name))
            .map_err(|e| damaged(path, format!("cannot read {name}: {e}")))
    };
    // sled writes `conf` before it creates `db`, so a `db` without it was not left by a start
    // that was cut short.
    if conf {
        check_conf(&read(CONF)?).map_err(|r| damaged(path, format!("{CONF} {r}")))?;
    } else if db || witness {
        return Err(damaged(path, format!("{CONF} is missing")));
    }
    for name in &snapshots {
        check_snapshot(&read(name)?).map_err(|r| damaged(path, format!("{name} {r}")))?;
    }
    if !witness {
        return Ok(Found::Unmarked);
    }
    let w: Witness = serde_json::from_slice(&read(WITNESS)?)
        .map_err(|e| damaged(path, format!("{WITNESS} is unreadable: {e}")))?;
    match std::fs::metadata(path.join(DB)) {
        Ok(m) if m.len() == 0 => return Err(damaged(path, format!("{DB} is empty"))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(damaged(path, format!("{DB} is missing")));
        }
        Err(e) => return Err(damaged(path, format!("cannot read {DB}: {e}"))),
    }
    if let Some(lsn) = w.snapshot_lsn
        && newest_snapshot(&snapshots).is_none_or(|n| n < lsn)
    {
        return Err(damaged(
            path,
            format!("the sled snapshot {SNAP_PREFIX}{lsn:016X} (or a newer one) is missing"),
        ));
    }
    Ok(Found::Marked(w))
}

/// `conf`: sled's settings as text, then their CRC-32 (little-endian).
fn check_conf(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(split) = bytes.len().checked_sub(4).filter(|n| *n > 4) else {
        return Err("is truncated");
    };
    let (body, crc) = bytes.split_at(split);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("does not match its checksum");
    }
    if !body.starts_with(b"segment_size: ") {
        return Err("is not a sled configuration");
    }
    Ok(())
}

/// `snap.<lsn>`: the snapshot, its length (8 bytes) and its CRC-32 (little-endian).
fn check_snapshot(bytes: &[u8]) -> Result<(), &'static str> {
    let Some(split) = bytes.len().checked_sub(12).filter(|n| *n > 0) else {
        return Err("is truncated");
    };
    if crc32fast::hash(&bytes[..split]).to_le_bytes() != bytes[split + 8..] {
        return Err("does not match its checksum");
    }
    Ok(())
}

/// The log sequence number of the newest complete snapshot among `names`.
fn newest_snapshot(names: &[String]) -> Option<u64> {
    names
        .iter()
        .filter_map(|n| u64::from_str_radix(n.strip_prefix(SNAP_PREFIX)?, 16).ok())
        .max()
}

/// The newest complete sled snapshot in `path` now.
pub(super) fn snapshot_lsn(path: &Path) -> Result<Option<u64>, StoreError> {
    let names = std::fs::read_dir(path)
        .and_then(|d| {
            d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| damaged(path, format!("cannot list it: {e}")))?;
    Ok(newest_snapshot(&names))
}

/// Replaces the witness file atomically (a temporary file, synced, renamed over it, and the
/// directory synced).
pub(super) fn write_witness(path: &Path, w: &Witness) -> Result<(), StoreError> {
    let tmp = path.join(format!("{WITNESS}.tmp"));
    let bytes = serde_json::to_vec(w).map_err(|e| StoreError::Encode(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path.join(WITNESS))?;
        std::fs::File::open(path)?.sync_all()
    };
    write().map_err(|source| StoreError::Witness {
        path: path.to_path_buf(),
        source,
    })
}

thread_local! {
    /// Set while this thread runs a [`guarded`] call.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// The message of the last panic the hook kept from being printed.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs (once) a panic hook that keeps panics inside [`guarded`] calls, and panics raised in
/// sled's own code on any thread, from being printed as a Rust panic: they are recorded for the
/// error that reports them (and, from sled's own threads, logged as an error). Every other panic
/// goes to the hook that was installed before.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let guarded = GUARDED.with(Cell::get);
            let in_sled = info.location().is_some_and(|l| {
                let f = l.file().replace('\\', "/");
                f.contains("/sled-0.") || f.contains("/sled/src/")
            });
            if !guarded && !in_sled {
                return previous(info);
            }
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            // The crate's own path (`sled-0.34.7/src/...`), not where cargo keeps it.
            let message = match info.location() {
                Some(l) => {
                    let file = l.file();
                    let short = file.find("sled-").map_or(file, |i| &file[i..]);
                    format!("{payload} (at {short}:{})", l.line())
                }
                None => payload,
            };
            if !guarded {
                tracing::error!(panic = %message, "The store's database failed on a background thread; its data directory may be damaged.");
            }
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
        }));
    });
}

/// Runs `f` (sled calls on the store at `path`, `what` saying what they do); a panic becomes
/// [`StoreError::Damaged`] instead of unwinding further.
pub(super) fn guarded<T, E: From<StoreError>>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.unwrap_or_else(|_| {
        let message = LAST_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "(no message)".into());
        Err(damaged(path, format!("the database failed while {what}: {message}")).into())
    })
}
