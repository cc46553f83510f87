//! The embedded store: the only module that touches sled.
//!
//! Owns: the on-disk format (one sled tree, key prefixes below, a format-version key, and the
//! `cordon.head` witness file next to sled's files), the append-only, hash-chained audit log,
//! durable commits (atomic batch + flush + optional `fdatasync`), offline verification/export of
//! the chain, and refusing a damaged or foreign data directory (see `dir`) instead of letting
//! sled panic or start an empty store over it.
//!
//! Key layout (all in one tree so a commit is one atomic `apply_batch`):
//! - `m/format_version`, `m/head`: metadata; the head is the last audit sequence and its hash;
//!   `m/base`, once a prefix of the chain was archived (see `archive`): the last archived record,
//!   which the first record kept links to.
//! - `a/<seq u64 big-endian>`: audit records `seq, seq+1, ...` of one commit, each
//!   `<sha256 hex>\n<body json>`, joined by `\n` (a chunk of up to [`AUDIT_CHUNK_BYTES`]; format
//!   version 1 stored one record per key, which is a chunk of one). The body holds `seq` and
//!   `prev` (the previous record's hash), so editing, deleting or reordering a record breaks the
//!   chain. Chunks exist because sled's cost is per key (tree descent, page links, a leaf split
//!   every 16 keys): a new case's ~17 records in one or two keys instead of 17 shorten the time a
//!   commit holds sled's global write lock, during which the engine cannot read.
//! - any other prefix: state owned by the engine (alerts, cases, actions), written only through a
//!   [`Txn`] together with the audit records that explain it.
//!
//! Since format version 4 a value of [`codec::PACK_AT`] bytes or more (audit chunks, the
//! engine's records) is stored as one zstd frame when that is smaller (see `codec`); every read
//! goes through [`unpack_value`], so nothing outside this module sees the packed form.
//!
//! There is one writer (the engine task), with at most one commit in flight while it prepares
//! the next transaction on top of it ([`Store::begin_after`]); the durable write itself runs on
//! a blocking thread. Readers (HTTP/gRPC queries) read applied state.

mod archive;
mod codec;
mod dir;
mod policysets;
mod verify;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::audit::AuditKind;

pub use archive::{
    ARCHIVE_FORMAT, ArchiveError, ArchiveFileError, ArchiveHeader, ArchiveReport, Base, HeldBack,
    genesis, read_archive,
};
pub use dir::WITNESS;
pub use policysets::policy_set_key;
pub use verify::{ExportError, VerifyError, VerifyReport, export, verify, verify_pinned};

/// The on-disk format version this build writes: version 2 stores audit records in chunks,
/// version 3 adds the [`WITNESS`] file (without which a store of version 3 or later that has
/// committed anything is damaged), version 4 packs long values (see `codec`). It also reads
/// versions 1 (one audit record per key) to 3, and marks such a store as version 4 when it
/// opens it, so an older build refuses it.
pub const FORMAT_VERSION: u64 = 4;

/// A commit's audit records are stored in chunks of about this many bytes before packing (a
/// chunk always holds at least one record). Large, because a chunk is packed whole and zstd
/// finds more of what records repeat in a larger one (the load bench's records pack ~3.7x in
/// 8 KiB chunks, ~6x in 32 KiB, ~8x in 128 KiB); reading one record unpacks its chunk.
pub const AUDIT_CHUNK_BYTES: usize = 64 << 10;

const KEY_FORMAT: &[u8] = b"m/format_version";
const KEY_HEAD: &[u8] = b"m/head";
const AUDIT_PREFIX: &[u8] = b"a/";
/// Hash that the first record links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// zstd level of a compressed store's pages: the fastest; JSON audit chunks still shrink ~3x.
const COMPRESSION_LEVEL: i32 = 1;

/// sled's configuration for the existing store at `path` (public so tamper tests open it as the
/// daemon does): compressed or not as its `conf` file says it was created (sled refuses to
/// change the setting of an existing database); a new store is uncompressed.
pub fn sled_config(path: &Path) -> sled::Config {
    sled_config_for(path, false)
}

/// sled's configuration for the store at `path`: an existing store keeps the compression it
/// was created with; a new one compresses its pages with zstd when `compress_new`.
fn sled_config_for(path: &Path, compress_new: bool) -> sled::Config {
    let compressed = match std::fs::read(path.join("conf")) {
        Ok(conf) => conf.windows(21).any(|w| w == b"use_compression: true"),
        Err(_) => compress_new,
    };
    sled::Config::new()
        .path(path)
        .use_compression(compressed)
        .compression_factor(COMPRESSION_LEVEL)
}

/// Key of audit record `seq` (public so tamper tests can address a record).
pub fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = AUDIT_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open data directory {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    /// The data directory's files are damaged or missing, or are not a cordon store.
    #[error("data directory {path} is damaged or not a cordon store: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "data directory {path} has store format version {found}, this build reads versions 1 to {FORMAT_VERSION}"
    )]
    FormatVersion { path: PathBuf, found: String },
    /// Writing the witness file failed.
    #[error("cannot write {WITNESS} in data directory {path}: {source}")]
    Witness {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store io: {0}")]
    Io(#[from] sled::Error),
    #[error("store fsync: {0}")]
    Fsync(std::io::Error),
    #[error("store record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store encode: {0}")]
    Encode(String),
    /// A commit was refused because an earlier failure left the store in an unknown state.
    #[error("store is failed closed after an earlier write error; restart the daemon")]
    FailedClosed,
    /// A commit was prepared on top of a chain head that is not the store's (started before the
    /// commit it was prepared on had finished): refused, and the store fails closed.
    #[error(
        "store commit out of order: prepared after audit seq {prepared_on}, the store is at {at}"
    )]
    OutOfOrder { prepared_on: u64, at: u64 },
    /// The thread writing a commit panicked: what reached the disk is unknown.
    #[error("store write aborted: {0}")]
    Aborted(String),
    /// Another process (a running daemon) holds the directory's lock.
    #[error(
        "data directory {path} is in use by a running cordon (sled lets one process open a store at a time): stop the daemon, or point the command at a copy of the directory"
    )]
    InUse { path: PathBuf },
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache size.
    pub cache_capacity_bytes: u64,
    /// After each commit's flush, `fdatasync` the data file too (survives power loss, not just
    /// a process kill).
    pub sync_data: bool,
    /// A new store compresses its pages (zstd); an existing store keeps what it was created with.
    pub compression: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 32 << 20,
            sync_data: true,
            compression: false,
        }
    }
}

/// The end of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Body of one audit record, as hashed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditBody {
    pub seq: u64,
    pub prev: String,
    pub at: DateTime<Utc>,
    /// What happened (`alert_received`, `case_transition`, `policy_decision`, ...).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    pub data: serde_json::Value,
}

/// [`AuditBody`] as written: the same fields in the same order, with `data` borrowed or typed.
#[derive(Serialize)]
struct AuditBodyOut<'a, D: Serialize> {
    seq: u64,
    prev: &'a str,
    at: DateTime<Utc>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_id: Option<String>,
    data: D,
}

/// An audit record with its hash, as exported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub hash: String,
    #[serde(flatten)]
    pub body: AuditBody,
}

/// What an audit entry is about (ids for linking records to cases and actions).
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub case_id: Option<String>,
    pub alert_id: Option<String>,
    pub action_id: Option<String>,
}

/// Handle to the open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    data_file: Option<File>,
    /// The sled snapshot present when the store was opened (for the witness file).
    snapshot_lsn: Option<u64>,
    /// Committed head. Only advanced after a successful durable commit.
    head: Mutex<Head>,
    failed: std::sync::atomic::AtomicBool,
    /// Test hook: the next durable write fails as a broken disk would.
    fail_next_write: std::sync::atomic::AtomicBool,
    /// Commits written durably since the store was opened.
    durable_commits: std::sync::atomic::AtomicU64,
    /// Test hook: while set, durable writes wait ([`Store::hold_writes_for_tests`]).
    hold: Mutex<bool>,
    hold_released: std::sync::Condvar,
    /// Writes waiting on `hold`.
    held: std::sync::atomic::AtomicUsize,
}

/// Result of a durable commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub head: Head,
    pub records: usize,
    pub elapsed: Duration,
}

impl Store {
    /// Opens (or creates) the store at `path`. A new store is created when the directory does
    /// not exist or holds none of the store's files; an existing one that is damaged, or is not
    /// a cordon store, is refused with [`StoreError::Damaged`] naming the directory, as is a
    /// format this build does not read. Never panics on what it finds on disk.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
        let damaged = |reason: &str| dir::damaged(path, reason);
        let opened = match open_checked(
            path,
            opts.cache_capacity_bytes,
            true,
            true,
            opts.compression,
        )? {
            Some(o) => o,
            None => return Err(damaged("it vanished while it was being created")),
        };
        let db = opened.db;
        let head = opened.head;
        dir::guarded(path, "preparing it", || {
            if opened.format.as_deref() != Some(&*FORMAT_VERSION.to_string()) {
                db.insert(KEY_FORMAT, FORMAT_VERSION.to_string().as_bytes())?;
            }
            db.flush()?;
            Ok::<_, StoreError>(())
        })?;
        let data_file = File::open(path.join("db")).map_err(StoreError::Fsync)?;
        // What the witness names must be on disk first, even when commits do not `fdatasync`.
        data_file.sync_all().map_err(StoreError::Fsync)?;
        let snapshot_lsn = dir::snapshot_lsn(path)?;
        dir::write_witness(
            path,
            &dir::Witness {
                head: head.clone(),
                snapshot_lsn,
            },
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                data_file: opts.sync_data.then_some(data_file),
                snapshot_lsn,
                head: Mutex::new(head),
                failed: std::sync::atomic::AtomicBool::new(false),
                fail_next_write: std::sync::atomic::AtomicBool::new(false),
                durable_commits: std::sync::atomic::AtomicU64::new(0),
                hold: Mutex::new(false),
                hold_released: std::sync::Condvar::new(),
                held: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The committed end of the audit chain.
    pub fn head(&self) -> Head {
        lock(&self.inner.head).clone()
    }

    /// Starts a transaction on top of the committed state.
    pub fn begin(&self) -> Txn {
        self.begin_after(None)
    }

    /// Starts a transaction on top of the committed state and, when given, the writes of a
    /// commit still in flight: the transaction reads them as if they were committed and chains
    /// its audit records after them. It must be committed only after `after` has finished (the
    /// engine keeps at most one commit in flight), and if `after` fails, so does it (the store
    /// is then failed closed).
    pub fn begin_after(&self, after: Option<&InFlight>) -> Txn {
        let (head, below) = match after.and_then(|f| f.writes.clone()) {
            Some(w) => (w.head.clone(), Some(w)),
            None => (self.head(), None),
        };
        Txn {
            base: head.clone(),
            head,
            puts: BTreeMap::new(),
            audit: Vec::new(),
            undo: Vec::new(),
            below,
        }
    }

    /// Reads committed state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.inner.db.get(key)? {
            Some(v) => Ok(Some(unpack_value(key, &v)?.into_owned())),
            None => Ok(None),
        }
    }

    pub fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get(key)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Committed values under `prefix`, in key order, starting after `after` (exclusive) when
    /// given, at most `limit`.
    pub fn scan_json<T: DeserializeOwned>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match after {
            Some(a) => {
                let mut start = a.to_vec();
                start.push(0);
                Box::new(self.inner.db.range(start..).take_while(move |r| match r {
                    Ok((k, _)) => k.starts_with(prefix),
                    Err(_) => true,
                }))
            }
            None => Box::new(self.inner.db.scan_prefix(prefix)),
        };
        for item in iter {
            let (k, v) = item?;
            out.push((k.to_vec(), decode(&k, &v)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Keys and bytes (key + value as stored, packed or not) per key family (the key up to its
    /// first `/`, or the whole key when it has none), over every committed key: what the store
    /// spends its space on.
    pub fn usage(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for item in self.inner.db.iter() {
            let (k, v) = item?;
            let family = match k.iter().position(|b| *b == b'/') {
                Some(i) => &k[..i],
                None => &k[..],
            };
            let e = out
                .entry(String::from_utf8_lossy(family).into_owned())
                .or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
        }
        Ok(out)
    }

    /// Keys under `prefix` in order, while `keep` holds.
    pub fn keys_while(
        &self,
        prefix: &[u8],
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix(prefix).keys() {
            let k = item?;
            if !keep(&k) {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// Keys under `prefix` after `after` (exclusive), at most `limit`.
    pub fn keys_after(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = match after {
            Some(a) => {
                let mut s = a.to_vec();
                s.push(0);
                s
            }
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.inner.db.range(start..).keys() {
            let k = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// Writes `txn` atomically and durably: one `apply_batch`, then flush (and `fdatasync` when
    /// configured). Returns only when the data survives a process kill. After a failed write
    /// the store refuses further commits (fail closed) until the daemon restarts.
    pub async fn commit(&self, txn: Txn) -> Result<Committed, StoreError> {
        self.start_commit(txn).await
    }

    /// Starts the durable write of `txn` on a blocking thread and returns at once; the returned
    /// [`InFlight`] resolves as [`Store::commit`] would. Meanwhile the caller may prepare the
    /// next transaction on top of it ([`Store::begin_after`]) but must not start its commit
    /// before this one has resolved: commits are applied in the order they are started, and a
    /// transaction read through this one's writes must not become durable without them.
    pub fn start_commit(&self, txn: Txn) -> InFlight {
        // Nothing to write: the answer is known now.
        let resolved = |result| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(result);
            InFlight {
                writes: None,
                rx,
                store: self.clone(),
            }
        };
        if self.is_failed() {
            return resolved(Err(StoreError::FailedClosed));
        }
        let started = Instant::now();
        let Txn {
            base,
            head,
            puts,
            audit,
            ..
        } = txn;
        let records = audit.len();
        if puts.is_empty() && audit.is_empty() {
            return resolved(Ok(Committed {
                head,
                records,
                elapsed: started.elapsed(),
            }));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.clone();
        let writes = Arc::new(Pending {
            base,
            head,
            puts,
            audit,
        });
        let job = writes.clone();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_durably(&inner, &job)
            }))
            .unwrap_or_else(|_| Err(StoreError::Aborted("the writing thread panicked".into())));
            let outcome = match written {
                Ok(()) => {
                    *lock(&inner.head) = job.head.clone();
                    inner
                        .durable_commits
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Committed {
                        head: job.head.clone(),
                        records,
                        elapsed: started.elapsed(),
                    })
                }
                Err(e) => {
                    inner
                        .failed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    Err(e)
                }
            };
            // Let go of the database before answering: whoever hears the outcome may be about
            // to drop the last other handle and reopen the directory.
            drop(inner);
            let _ = tx.send(outcome);
        });
        InFlight {
            writes: Some(writes),
            rx,
            store,
        }
    }

    /// Flushes everything to disk and records the committed head in the witness file
    /// (shutdown path).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        File::open(self.inner.path.join("db"))
            .and_then(|f| f.sync_all())
            .map_err(StoreError::Fsync)?;
        dir::write_witness(
            &self.inner.path,
            &dir::Witness {
                head: self.head(),
                snapshot_lsn: self.inner.snapshot_lsn,
            },
        )
    }

    /// Reads audit records `from..` (inclusive) in chain order, at most `limit`.
    pub fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        // The chunk holding `from` starts at the last key at or before it.
        let start = match self.inner.db.range(..=audit_key(from)).next_back() {
            Some(item) => {
                let (k, _) = item?;
                if k.starts_with(AUDIT_PREFIX) {
                    k.to_vec()
                } else {
                    audit_key(from)
                }
            }
            None => audit_key(from),
        };
        for item in self.inner.db.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(AUDIT_PREFIX) {
                break;
            }
            let v = unpack_value(&k, &v)?;
            for rec in parse_chunk(&k, &v)? {
                let rec = rec?;
                if rec.body.seq < from {
                    continue;
                }
                out.push(rec);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Commits written durably since the store was opened (empty ones are not written).
    pub fn durable_commits(&self) -> u64 {
        self.inner
            .durable_commits
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// True after a failed write: the store refuses commits until restart.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: the next durable write fails (and the store then fails closed), as a disk
    /// error in the middle of a commit would.
    #[doc(hidden)]
    pub fn fail_next_write_for_tests(&self) {
        self.inner
            .fail_next_write
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: durable writes wait (on their blocking thread, before anything reaches sled)
    /// until the returned guard is dropped, so a test can act while a commit is in flight.
    #[doc(hidden)]
    pub fn hold_writes_for_tests(&self) -> WriteHold {
        *lock(&self.inner.hold) = true;
        WriteHold {
            inner: self.inner.clone(),
        }
    }

    /// Test hook: how many durable writes wait on [`Store::hold_writes_for_tests`].
    #[doc(hidden)]
    pub fn writes_held_for_tests(&self) -> usize {
        self.inner.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: makes the next commits fail as a broken disk would.
    #[doc(hidden)]
    pub fn fail_for_tests(&self) {
        self.inner
            .failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// See [`Store::hold_writes_for_tests`]; dropping it lets the held writes go on.
#[doc(hidden)]
pub struct WriteHold {
    inner: Arc<Inner>,
}

impl Drop for WriteHold {
    fn drop(&mut self) {
        *lock(&self.inner.hold) = false;
        self.inner.hold_released.notify_all();
    }
}

/// A store's sled database, opened and checked against its directory and witness.
struct Opened {
    db: sled::Db,
    head: Head,
    /// The format version key as found (`None` in a new store).
    format: Option<String>,
}

/// Checks the directory ([`dir::inspect`]), opens sled on it and checks what sled holds: the
/// format version, that the chain head is not before the one the witness names, that every page
/// reads, and with `check_chain` that no audit record is missing. `Ok(None)` when there is no
/// store and `create` is false. A panic inside sled is an error.
fn open_checked(
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
fn sled_error(path: &Path, e: sled::Error) -> StoreError {
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

/// The writes of a transaction handed to [`Store::start_commit`].
struct Pending {
    /// The chain head the transaction was begun on.
    base: Head,
    head: Head,
    puts: Writes,
    audit: Vec<(u64, Vec<u8>)>,
}

/// One atomic `apply_batch` of `w` plus the head, then flush and (when configured)
/// `fdatasync`. Runs on a blocking thread.
fn write_durably(inner: &Inner, w: &Pending) -> Result<(), StoreError> {
    let at = lock(&inner.head).clone();
    if at != w.base {
        return Err(StoreError::OutOfOrder {
            prepared_on: w.base.seq,
            at: at.seq,
        });
    }
    {
        let mut held = lock(&inner.hold);
        if *held {
            inner.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while *held {
                held = inner
                    .hold_released
                    .wait(held)
                    .unwrap_or_else(|e| e.into_inner());
            }
            inner.held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    if inner
        .fail_next_write
        .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        return Err(StoreError::Io(sled::Error::Io(std::io::Error::other(
            "injected write failure (test hook)",
        ))));
    }
    let mut batch = sled::Batch::default();
    let mut chunk: Option<(u64, Vec<u8>)> = None;
    for (seq, bytes) in &w.audit {
        match &mut chunk {
            Some((_, c)) if c.len() + 1 + bytes.len() <= AUDIT_CHUNK_BYTES => {
                c.push(b'\n');
                c.extend_from_slice(bytes);
            }
            _ => {
                if let Some((first, c)) = chunk.take() {
                    batch.insert(audit_key(first), &*codec::pack(&c));
                }
                let mut c = Vec::with_capacity(AUDIT_CHUNK_BYTES.max(bytes.len()));
                c.extend_from_slice(bytes);
                chunk = Some((*seq, c));
            }
        }
    }
    if let Some((first, c)) = chunk {
        batch.insert(audit_key(first), &*codec::pack(&c));
    }
    for (k, v) in &w.puts {
        match v {
            Some(v) => batch.insert(k.as_slice(), &*codec::pack(v)),
            None => batch.remove(k.as_slice()),
        }
    }
    batch.insert(KEY_HEAD, encode(&w.head)?);
    inner.db.apply_batch(batch)?;
    inner.db.flush()?;
    if let Some(f) = &inner.data_file {
        f.sync_data().map_err(StoreError::Fsync)?;
    }
    Ok(())
}

/// A commit under way (see [`Store::start_commit`]); resolves to its outcome. Dropping it does
/// not cancel the write.
pub struct InFlight {
    /// `None` when there was nothing to write (or the store had already failed).
    writes: Option<Arc<Pending>>,
    rx: tokio::sync::oneshot::Receiver<Result<Committed, StoreError>>,
    store: Store,
}

impl InFlight {
    /// The outcome, if the commit has already resolved (without waiting).
    pub fn try_result(&mut self) -> Option<Result<Committed, StoreError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.store
                    .inner
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Some(Err(StoreError::FailedClosed))
            }
        }
    }
}

impl std::future::Future for InFlight {
    type Output = Result<Committed, StoreError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                // The writing thread died without an answer (a panic inside sled): what is on
                // disk is unknown, so the store fails closed.
                self.store
                    .inner
                    .failed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(StoreError::FailedClosed)
            })
        })
    }
}

/// Pending writes by key: `None` deletes.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A set of writes plus the audit records that explain them, committed together.
/// Reads through a `Txn` see its own uncommitted writes first, then those of the commit in flight
/// it was begun on (if any), then sled.
pub struct Txn {
    /// The chain head this transaction was begun on (checked when it is written).
    base: Head,
    head: Head,
    puts: Writes,
    audit: Vec<(u64, Vec<u8>)>,
    /// What each write replaced in `puts` (none = the key was not written yet), newest last:
    /// rolling back to a savepoint undoes only the writes made after it, so a savepoint per
    /// event costs O(1) instead of a copy of every write in the batch so far.
    #[allow(clippy::type_complexity)]
    undo: Vec<(Vec<u8>, Option<Option<Vec<u8>>>)>,
    /// The writes of the commit in flight underneath this transaction, read before the store.
    below: Option<Arc<Pending>>,
}

impl Txn {
    /// Reads `key`, seeing this transaction's writes first, then those of the commit in flight
    /// it was begun on, then sled.
    pub fn get(&self, store: &Store, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.puts.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.below.as_ref().and_then(|b| b.puts.get(key)) {
            return Ok(v.clone());
        }
        store.get(key)
    }

    pub fn get_json<T: DeserializeOwned>(
        &self,
        store: &Store,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.get(store, key)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn put_json<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = encode(value)?;
        self.write(key, Some(bytes));
        Ok(())
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let before = self.puts.insert(key.clone(), value);
        self.undo.push((key, before));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.write(key, None);
    }

    /// Appends an audit record; returns its sequence number. `data` is serialized straight into
    /// the record (no intermediate `serde_json::Value`); a value that cannot be serialized is an
    /// error and nothing is appended.
    pub fn audit<D: Serialize>(
        &mut self,
        kind: AuditKind,
        links: Links,
        at: DateTime<Utc>,
        data: D,
    ) -> Result<u64, StoreError> {
        let seq = self.head.seq + 1;
        let body = AuditBodyOut {
            seq,
            prev: &self.head.hash,
            at,
            kind: kind.as_str(),
            case_id: links.case_id,
            alert_id: links.alert_id,
            action_id: links.action_id,
            data,
        };
        let body_bytes = encode(&body)?;
        let hash = hex::encode(Sha256::digest(&body_bytes));
        let mut bytes = Vec::with_capacity(hash.len() + 1 + body_bytes.len());
        bytes.extend_from_slice(hash.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&body_bytes);
        self.audit.push((seq, bytes));
        self.head = Head { seq, hash };
        Ok(seq)
    }

    /// The chain head as this transaction leaves it: its last audit record, or the head it was
    /// begun on.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Savepoint for rolling back one event's writes inside a batch.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            head: self.head.clone(),
            undo_len: self.undo.len(),
            audit_len: self.audit.len(),
        }
    }

    pub fn rollback_to(&mut self, sp: Savepoint) {
        self.head = sp.head;
        while self.undo.len() > sp.undo_len {
            let Some((key, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => {
                    self.puts.insert(key, v);
                }
                None => {
                    self.puts.remove(&key);
                }
            }
        }
        self.audit.truncate(sp.audit_len);
    }
}

/// See [`Txn::savepoint`].
pub struct Savepoint {
    head: Head,
    undo_len: usize,
    audit_len: usize,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Decodes one stored state value (what [`Store::get_json`] does with the bytes under `key`,
/// packed or not). Public for the fuzz target `store_records`.
pub fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    let v = unpack_value(key, v)?;
    serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).to_string(),
        reason: e.to_string(),
    })
}

/// The value stored under `key` as it was written: unpacked when sled holds it packed (see
/// `codec`). Public for the tests that tamper with a store through sled directly.
pub fn unpack_value<'a>(key: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
    codec::unpack(stored).map_err(|reason| StoreError::Corrupt {
        key: match seq_of_key(key) {
            Some(seq) => format!("a/{seq}"),
            None => String::from_utf8_lossy(key).into_owned(),
        },
        reason,
    })
}

/// `value` as this build stores it (packed when long enough: see `codec`). Public for the tests
/// that tamper with a store through sled directly.
pub fn pack_value(value: &[u8]) -> Vec<u8> {
    codec::pack(value).into_owned()
}

/// The `(hash, body)` byte pairs of a stored audit chunk, in order (no parsing, no checks).
/// `Err` names what is malformed.
fn chunk_parts(v: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), &'static str>> {
    let mut lines = v.split(|b| *b == b'\n');
    std::iter::from_fn(move || {
        let hash = lines.next()?;
        Some(match lines.next() {
            Some(body) => Ok((hash, body)),
            None => Err("no hash separator"),
        })
    })
}

/// Parses the records of a stored audit chunk (no chain checks; see [`verify`]). Errors name
/// the record by its position: the chunk's key plus its index.
fn parse_chunk<'a>(
    key: &[u8],
    v: &'a [u8],
) -> Result<impl Iterator<Item = Result<AuditRecord, StoreError>> + 'a, StoreError> {
    let first = seq_of_key(key).ok_or_else(|| StoreError::Corrupt {
        key: "a/?".into(),
        reason: "malformed audit key".into(),
    })?;
    Ok(chunk_parts(v).enumerate().map(move |(i, part)| {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: format!("a/{}", first + i as u64),
            reason: reason.to_string(),
        };
        let (hash, body) = part.map_err(corrupt)?;
        let hash = std::str::from_utf8(hash)
            .map_err(|_| corrupt("hash is not utf-8"))?
            .to_string();
        let body: AuditBody = serde_json::from_slice(body).map_err(|e| corrupt(&e.to_string()))?;
        Ok(AuditRecord { hash, body })
    }))
}

/// Decodes every record of the audit chunk stored under `key`, packed or not (what
/// [`Store::audit_records`] and [`export`] read; no chain checks). Public for the fuzz target
/// `store_records`.
pub fn decode_audit_chunk(key: &[u8], v: &[u8]) -> Result<Vec<AuditRecord>, StoreError> {
    let v = unpack_value(key, v)?;
    parse_chunk(key, &v)?.collect()
}

fn seq_of_key(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(AUDIT_PREFIX)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the head it guards
    // is replaced whole, so the value is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Savepoint,
        Rollback,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u8..6).prop_map(Op::Delete),
            Just(Op::Savepoint),
            Just(Op::Rollback),
        ]
    }

    /// Runs `open` until sled has let go of the directory's file lock: after the last handle is
    /// dropped, sled releases it from its own flusher thread, a moment later.
    fn once_unlocked<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match open() {
                Ok(v) => return v,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The kinds of the audit records from `from` on, in chain order.
    fn kinds_from(store: &Store, from: u64) -> Vec<String> {
        store
            .audit_records(from, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.body.kind)
            .collect()
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    /// What `Txn::audit` writes is byte for byte what serializing the readable `AuditBody`
    /// gives, with and without links, so records written either way read and hash the same.
    #[test]
    fn an_audit_record_is_written_as_its_body_serializes() {
        for links in [
            Links::default(),
            Links {
                case_id: Some("c1".into()),
                alert_id: Some("a1".into()),
                action_id: Some("x1".into()),
            },
        ] {
            let mut txn = Store::open(
                tempfile::tempdir().unwrap().path(),
                &StoreOptions::default(),
            )
            .unwrap()
            .begin();
            let data = serde_json::json!({"b": [1, "two"], "a": {"z": null, "y": 1.5}});
            txn.audit(AuditKind::Vote, links.clone(), at(), &data)
                .unwrap();
            let (_, bytes) = &txn.audit[0];
            let body = AuditBody {
                seq: 1,
                prev: GENESIS_HASH.into(),
                at: at(),
                kind: "vote".into(),
                case_id: links.case_id,
                alert_id: links.alert_id,
                action_id: links.action_id,
                data,
            };
            let expected = serde_json::to_vec(&body).unwrap();
            let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
            assert_eq!(&bytes[nl + 1..], expected.as_slice());
            assert_eq!(
                std::str::from_utf8(&bytes[..nl]).unwrap(),
                hex::encode(Sha256::digest(&expected))
            );
        }
    }

    /// Records are stored in chunks of about `AUDIT_CHUNK_BYTES` (one commit's many records in
    /// few keys) and read back one by one from any sequence number, across chunks and commits.
    #[tokio::test]
    async fn audit_records_are_chunked_and_read_from_any_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let filler = "x".repeat(AUDIT_CHUNK_BYTES / 8);
        for n in [40u64, 3, 1] {
            let mut t = store.begin();
            for i in 0..n {
                t.audit(
                    AuditKind::Vote,
                    Links::default(),
                    at(),
                    serde_json::json!({"i": i, "f": filler}),
                )
                .unwrap();
            }
            store.commit(t).await.unwrap();
        }
        let keys = store.inner.db.scan_prefix(AUDIT_PREFIX).count();
        assert!((3..44 / 3).contains(&keys), "{keys} keys for 44 records");
        for from in 1..=46u64 {
            let got: Vec<u64> = store
                .audit_records(from, 5)
                .unwrap()
                .iter()
                .map(|r| r.body.seq)
                .collect();
            let want: Vec<u64> = (from..(from + 5).min(45)).collect();
            assert_eq!(got, want, "from {from}");
        }
        drop(store);
        assert_eq!(once_unlocked(|| verify(dir.path())).records, 44);
    }

    /// A version-3 store (nothing packed) reads as it did; what this build writes on top of it
    /// is packed when long, reads back the same, and the whole chain verifies.
    #[tokio::test]
    async fn a_version_3_store_reads_unpacked_and_continues_packed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let long = serde_json::json!({"note": "x".repeat(400), "n": 1});
        let mut t = store.begin();
        for i in 0..5 {
            t.audit(AuditKind::Retry, Links::default(), at(), &long)
                .unwrap();
            t.put_json(format!("zz/{i}").into_bytes(), &long).unwrap();
        }
        // Written as a version-3 build did: unpacked.
        let mut chunk = Vec::new();
        for (i, (_, bytes)) in t.audit.iter().enumerate() {
            if i > 0 {
                chunk.push(b'\n');
            }
            chunk.extend_from_slice(bytes);
        }
        let db = &store.inner.db;
        db.insert(audit_key(1), chunk).unwrap();
        for (k, v) in &t.puts {
            db.insert(k.as_slice(), v.clone().unwrap()).unwrap();
        }
        db.insert(KEY_HEAD, encode(&t.head).unwrap()).unwrap();
        db.insert(KEY_FORMAT, b"3").unwrap();
        store.flush().unwrap();
        drop((t, store));

        let store = once_unlocked(|| Store::open(dir.path(), &StoreOptions::default()));
        assert_eq!(
            store.get_json::<serde_json::Value>(b"zz/0").unwrap(),
            Some(long.clone())
        );
        let mut t = store.begin();
        t.audit(AuditKind::Reconciled, Links::default(), at(), &long)
            .unwrap();
        t.put_json(b"zz/new".to_vec(), &long).unwrap();
        store.commit(t).await.unwrap();
        let stored = store.inner.db.get(b"zz/new").unwrap().unwrap();
        assert!(codec::is_packed(&stored), "a long value is stored packed");
        assert!(stored.len() < 200, "{} bytes", stored.len());
        assert!(codec::is_packed(
            &store.inner.db.get(audit_key(6)).unwrap().unwrap()
        ));
        assert!(!codec::is_packed(
            &store.inner.db.get(audit_key(1)).unwrap().unwrap()
        ));
        assert_eq!(
            store.get_json::<serde_json::Value>(b"zz/new").unwrap(),
            Some(long)
        );
        let recs = store.audit_records(1, 10).unwrap();
        assert_eq!(recs.len(), 6);
        assert_eq!(recs[5].body.kind, "reconciled");
        drop(store);
        assert_eq!(once_unlocked(|| verify(dir.path())).records, 6);
    }

    /// A version-1 store (one record per key) is read, marked the current version so an older
    /// build refuses it, and new chunks continue its chain.
    #[tokio::test]
    async fn a_version_1_store_is_read_and_continued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut t = store.begin();
        for i in 0..5 {
            t.audit(
                AuditKind::Retry,
                Links::default(),
                at(),
                serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        for (seq, bytes) in &t.audit {
            store
                .inner
                .db
                .insert(audit_key(*seq), bytes.as_slice())
                .unwrap();
        }
        store
            .inner
            .db
            .insert(KEY_HEAD, encode(&t.head).unwrap())
            .unwrap();
        store.inner.db.insert(KEY_FORMAT, b"1").unwrap();
        store.inner.db.flush().unwrap();
        drop(store);

        let store = once_unlocked(|| Store::open(dir.path(), &StoreOptions::default()));
        assert_eq!(
            store.get(KEY_FORMAT).unwrap(),
            Some(FORMAT_VERSION.to_string().into_bytes())
        );
        assert_eq!(store.head().seq, 5);
        let mut t = store.begin();
        for i in 0..5 {
            t.audit(
                AuditKind::Reconciled,
                Links::default(),
                at(),
                serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        store.commit(t).await.unwrap();
        assert_eq!(
            kinds_from(&store, 3),
            [
                "retry",
                "retry",
                "retry",
                "reconciled",
                "reconciled",
                "reconciled",
                "reconciled",
                "reconciled"
            ]
        );
        drop(store);
        assert_eq!(once_unlocked(|| verify(dir.path())).records, 10);
    }

    /// `[store] compression` applies to a new store only: sled refuses to change the setting of
    /// an existing database, so a store opens as it was created, continues and verifies.
    #[tokio::test]
    async fn a_store_keeps_the_compression_it_was_created_with() {
        let conf = |p: &Path| {
            String::from_utf8_lossy(&std::fs::read(p.join("conf")).unwrap()).into_owned()
        };
        let with = |compression| StoreOptions {
            compression,
            ..StoreOptions::default()
        };
        for created in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            for (round, asked) in [created, !created, created].into_iter().enumerate() {
                let store = once_unlocked(|| Store::open(dir.path(), &with(asked)));
                let mut t = store.begin();
                t.audit(
                    AuditKind::Retry,
                    Links::default(),
                    at(),
                    serde_json::json!({"round": round}),
                )
                .unwrap();
                store.commit(t).await.unwrap();
                assert_eq!(store.head().seq, round as u64 + 1);
                drop(store);
                assert!(
                    conf(dir.path()).contains(&format!("use_compression: {created}")),
                    "created {created}, opened with {asked}"
                );
            }
            assert_eq!(once_unlocked(|| verify(dir.path())).records, 3);
        }
    }

    /// A transaction begun on a commit in flight reads that commit's writes (puts and deletes)
    /// and chains its audit records after it; committed in turn, the chain verifies.
    #[tokio::test]
    async fn a_transaction_on_a_commit_in_flight_reads_its_writes_and_chains_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut t0 = store.begin();
        t0.put(b"x/gone".to_vec(), b"old".to_vec());
        t0.audit(
            AuditKind::AlertReceived,
            Links::default(),
            at(),
            serde_json::json!({}),
        )
        .unwrap();
        store.commit(t0).await.unwrap();

        let mut t1 = store.begin();
        t1.put(b"x/new".to_vec(), b"one".to_vec());
        t1.delete(b"x/gone".to_vec());
        t1.audit(
            AuditKind::CaseTransition,
            Links::default(),
            at(),
            serde_json::json!({}),
        )
        .unwrap();
        let inflight = store.start_commit(t1);
        let mut t2 = store.begin_after(Some(&inflight));
        assert_eq!(t2.get(&store, b"x/new").unwrap(), Some(b"one".to_vec()));
        assert_eq!(t2.get(&store, b"x/gone").unwrap(), None);
        t2.put(b"x/new".to_vec(), b"two".to_vec());
        let seq = t2
            .audit(
                AuditKind::Vote,
                Links::default(),
                at(),
                serde_json::json!({}),
            )
            .unwrap();
        assert_eq!(seq, 3);
        let first = inflight.await.unwrap();
        assert_eq!(first.head.seq, 2);
        let second = store.commit(t2).await.unwrap();
        assert_eq!(second.head.seq, 3);
        assert_eq!(store.head(), second.head);
        assert_eq!(store.get(b"x/new").unwrap(), Some(b"two".to_vec()));
        assert_eq!(store.get(b"x/gone").unwrap(), None);
        let chain = store.audit_records(1, 10).unwrap();
        assert_eq!(
            kinds_from(&store, 1),
            ["alert_received", "case_transition", "vote"]
        );
        assert_eq!(chain[2].body.prev, chain[1].hash);
        drop(store);
        assert_eq!(once_unlocked(|| verify(dir.path())).records, 3);
    }

    /// If the commit underneath fails while the next transaction is being prepared on its
    /// writes, the store is failed closed and that transaction is refused as well: nothing that
    /// read unwritten state becomes durable.
    #[tokio::test]
    async fn a_transaction_on_a_commit_that_fails_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.fail_next_write_for_tests();
        let mut t1 = store.begin();
        t1.put(b"x/a".to_vec(), b"1".to_vec());
        t1.audit(
            AuditKind::AlertReceived,
            Links::default(),
            at(),
            serde_json::json!({}),
        )
        .unwrap();
        let inflight = store.start_commit(t1);
        let mut t2 = store.begin_after(Some(&inflight));
        assert_eq!(t2.get(&store, b"x/a").unwrap(), Some(b"1".to_vec()));
        t2.put(b"x/b".to_vec(), b"2".to_vec());
        assert!(matches!(inflight.await, Err(StoreError::Io(_))));
        assert!(store.is_failed());
        assert!(matches!(
            store.commit(t2).await,
            Err(StoreError::FailedClosed)
        ));
        assert_eq!(store.get(b"x/a").unwrap(), None);
        assert_eq!(store.get(b"x/b").unwrap(), None);
        assert_eq!(store.head().seq, 0);
        assert!(store.audit_records(1, 10).unwrap().is_empty());
    }

    /// A transaction committed on top of a chain head that is no longer the store's (its
    /// predecessor was not finished first, or another commit came in between) is refused and
    /// the store fails closed, instead of overwriting audit records.
    #[tokio::test]
    async fn a_commit_out_of_order_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut t1 = store.begin();
        let mut t2 = store.begin();
        t1.audit(
            AuditKind::DryRun,
            Links::default(),
            at(),
            serde_json::json!({}),
        )
        .unwrap();
        t2.audit(
            AuditKind::CaseSummary,
            Links::default(),
            at(),
            serde_json::json!({}),
        )
        .unwrap();
        store.commit(t1).await.unwrap();
        assert!(matches!(
            store.commit(t2).await,
            Err(StoreError::OutOfOrder {
                prepared_on: 0,
                at: 1
            })
        ));
        assert!(store.is_failed());
        assert_eq!(kinds_from(&store, 1), ["dry_run"]);
    }

    /// [`Store::open`] once sled has let go of the directory's lock (see [`once_unlocked`]),
    /// returning what it answered then.
    fn open_when_unlocked(path: &Path) -> Result<Store, StoreError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(path, &StoreOptions::default()) {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    /// A store in `path` with three audit records, flushed (as at shutdown) and closed.
    async fn a_store_with_records(path: &Path) {
        let store = Store::open(path, &StoreOptions::default()).unwrap();
        let mut t = store.begin();
        for i in 0..3 {
            t.audit(
                AuditKind::Vote,
                Links::default(),
                at(),
                serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        store.commit(t).await.unwrap();
        store.flush().unwrap();
    }

    /// The reason of a `Damaged` error for `path`; panics on anything else.
    fn damage_reason<T>(path: &Path, r: Result<T, StoreError>) -> String {
        match r {
            Err(StoreError::Damaged { path: p, reason }) => {
                assert_eq!(p, path);
                let shown = StoreError::Damaged {
                    path: p,
                    reason: reason.clone(),
                }
                .to_string();
                assert!(
                    shown.starts_with(&format!("data directory {} is damaged", path.display())),
                    "{shown}"
                );
                reason
            }
            Err(e) => panic!("expected damage, got: {e}"),
            Ok(_) => panic!("expected damage, the store opened"),
        }
    }

    /// Deleting one file of a store that has committed records is refused, by the daemon's
    /// open and by `verify`, naming the file, instead of sled starting over (`db`), rewriting
    /// its settings (`conf`) or the store passing as one from before the witness existed.
    #[tokio::test]
    async fn a_store_missing_a_file_is_refused() {
        for (file, says) in [
            ("db", "db is missing"),
            ("conf", "conf is missing"),
            (WITNESS, "cordon.head is missing"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            a_store_with_records(dir.path()).await;
            std::fs::remove_file(dir.path().join(file)).unwrap();
            let reason = damage_reason(dir.path(), open_when_unlocked(dir.path()));
            assert!(reason.contains(says), "{file}: {reason}");
            match verify(dir.path()) {
                Err(VerifyError::Store(e)) => {
                    assert!(damage_reason(dir.path(), Err::<(), _>(e)).contains(says))
                }
                r => panic!("{file}: verify gave {r:?}"),
            }
        }
    }

    /// A store whose chain head is before the one its witness names (sled recovered a cut
    /// `db` to an earlier state) is refused: data was lost.
    #[tokio::test]
    async fn a_store_behind_its_witness_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        a_store_with_records(dir.path()).await;
        let w = dir.path().join(WITNESS);
        let mut witness: dir::Witness =
            serde_json::from_slice(&std::fs::read(&w).unwrap()).unwrap();
        assert_eq!(witness.head.seq, 3);
        witness.head.seq = 4;
        std::fs::write(&w, serde_json::to_vec(&witness).unwrap()).unwrap();
        let reason = damage_reason(dir.path(), open_when_unlocked(dir.path()));
        assert!(reason.contains("data was lost"), "{reason}");
        witness.head.seq = 2;
        std::fs::write(&w, serde_json::to_vec(&witness).unwrap()).unwrap();
        let reason = damage_reason(dir.path(), open_when_unlocked(dir.path()));
        assert!(reason.contains("record 2 has a different hash"), "{reason}");
    }

    /// Directories that are not cordon's are refused, not initialised: a file named `db`, a
    /// database another program made with sled, a file in place of the directory. An empty
    /// directory is a new store.
    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lone = dir.path().join("lone-db");
        std::fs::create_dir(&lone).unwrap();
        std::fs::write(lone.join("db"), b"not a database").unwrap();
        assert!(damage_reason(&lone, open_when_unlocked(&lone)).contains("conf is missing"));

        let other = dir.path().join("other-sled");
        let db = sled::open(&other).unwrap();
        db.insert(b"users/1", b"alice").unwrap();
        db.flush().unwrap();
        drop(db);
        let reason = damage_reason(&other, open_when_unlocked(&other));
        assert!(reason.contains("not a cordon store"), "{reason}");
        assert!(matches!(verify(&other), Err(VerifyError::Store(_))));

        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(damage_reason(&file, open_when_unlocked(&file)).contains("not a directory"));

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(verify(&empty), Err(VerifyError::Missing(_))));
        let store = open_when_unlocked(&empty).unwrap();
        assert_eq!(store.head(), Head::genesis());
        assert!(empty.join(WITNESS).exists());
    }

    /// A panic inside a guarded sled call becomes `Damaged` with its message.
    #[test]
    fn a_panic_in_a_guarded_call_is_an_error() {
        let path = Path::new("/nowhere/data");
        let r: Result<(), StoreError> =
            dir::guarded(path, "reading", || panic!("index out of bounds: boom"));
        let reason = damage_reason(path, r);
        assert!(
            reason.contains("failed while reading: index out of bounds: boom"),
            "{reason}"
        );
    }

    /// Typed audit data (fields not in alphabetical order, nested maps, options) is written
    /// exactly as the record it reads back as would serialize: the `Value` the reader holds
    /// keeps the writer's key order.
    #[test]
    fn typed_audit_data_reads_back_to_the_same_bytes() {
        #[derive(Serialize)]
        struct Typed {
            zeta: u32,
            alpha: Vec<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            none: Option<u8>,
            nested: BTreeMap<&'static str, serde_json::Value>,
        }
        let typed = Typed {
            zeta: 7,
            alpha: vec!["b", "a"],
            none: None,
            nested: BTreeMap::from([("y", serde_json::json!({"k2": 1, "k1": [true]}))]),
        };
        let mut txn = Store::open(
            tempfile::tempdir().unwrap().path(),
            &StoreOptions::default(),
        )
        .unwrap()
        .begin();
        txn.audit(AuditKind::Vote, Links::default(), at(), &typed)
            .unwrap();
        let (_, bytes) = &txn.audit[0];
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        let read: AuditBody = serde_json::from_slice(&bytes[nl + 1..]).unwrap();
        assert_eq!(serde_json::to_vec(&read).unwrap(), &bytes[nl + 1..]);
    }

    proptest! {
        /// Rolling back to a savepoint leaves exactly the writes made before it, as a full copy
        /// taken at the savepoint would (the undo log is equivalent to the copy it replaced).
        #[test]
        fn rollback_restores_the_writes_before_the_savepoint(ops in proptest::collection::vec(op(), 0..60)) {
            let mut txn = Txn {
                base: Head { seq: 0, hash: GENESIS_HASH.into() },
                head: Head { seq: 0, hash: GENESIS_HASH.into() },
                puts: BTreeMap::new(),
                audit: Vec::new(),
                undo: Vec::new(),
                below: None,
            };
            let mut saved: Vec<(Savepoint, Writes)> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => txn.put(vec![k], vec![v]),
                    Op::Delete(k) => txn.delete(vec![k]),
                    Op::Savepoint => saved.push((txn.savepoint(), txn.puts.clone())),
                    Op::Rollback => {
                        if let Some((sp, copy)) = saved.pop() {
                            txn.rollback_to(sp);
                            prop_assert_eq!(&txn.puts, &copy);
                        }
                    }
                }
            }
        }
    }
}
