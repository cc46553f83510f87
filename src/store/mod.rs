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
//! the store's writing thread (`commit`). Readers (HTTP/gRPC queries) read applied state.

mod archive;
mod codec;
mod commit;
mod dir;
mod open;
mod policysets;
mod txn;
mod verify;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use archive::{
    ARCHIVE_FORMAT, ArchiveError, ArchiveFileError, ArchiveHeader, ArchiveReport, Base, HeldBack,
    genesis, read_archive,
};
pub use commit::{InFlight, Stages};
use commit::{Pending, write_durably};
pub use dir::WITNESS;
use open::{open_checked, sled_error};
pub use policysets::policy_set_key;
pub use txn::{Savepoint, Txn};
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
    /// `nice` of the store's writing thread (0: the process's); see [`crate::nice`].
    pub writer_nice: i32,
    /// Commits run on the store's own writing thread (see `commit`); when false, on the tokio
    /// runtime's blocking pool, whose work a paused test clock waits for (a test that drives
    /// time by hand would otherwise see the clock jump while a commit is on disk).
    pub own_writer: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 32 << 20,
            sync_data: true,
            compression: false,
            writer_nice: 0,
            own_writer: true,
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
    /// Hands commits to the writing thread, started with the first commit (see `commit`).
    writer: Mutex<Option<std::sync::mpsc::Sender<commit::Job>>>,
    /// `nice` the writing thread asks for ([`StoreOptions::writer_nice`]).
    writer_nice: i32,
    /// [`StoreOptions::own_writer`].
    own_writer: bool,
}

/// Result of a durable commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub head: Head,
    pub records: usize,
    pub elapsed: Duration,
    /// Where the time went on the writing thread (all zero when there was nothing to write).
    pub stages: Stages,
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
                writer: Mutex::new(None),
                writer_nice: opts.writer_nice,
                own_writer: opts.own_writer,
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

    /// Starts the durable write of `txn` on the store's writing thread and returns at once; the
    /// returned [`InFlight`] resolves as [`Store::commit`] would. Meanwhile the caller may
    /// prepare the next transaction on top of it ([`Store::begin_after`]) but must not start its
    /// commit before this one has resolved: commits are applied in the order they are started,
    /// and a transaction read through this one's writes must not become durable without them.
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
                stages: Stages::default(),
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
        let pending = writes.clone();
        let inner = self.inner.clone();
        let job: commit::Job = Box::new(move || {
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_durably(&inner, &pending)
            }))
            .unwrap_or_else(|_| Err(StoreError::Aborted("the writing thread panicked".into())));
            let outcome = match written {
                Ok(stages) => {
                    *lock(&inner.head) = pending.head.clone();
                    inner
                        .durable_commits
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Committed {
                        head: pending.head.clone(),
                        records,
                        elapsed: started.elapsed(),
                        stages,
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
        if let Err(e) = commit::to_writer(&self.inner, job) {
            // The commit never started: nothing was written, and nothing more will be.
            self.inner
                .failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::error!(error = %e, "the store's writing thread is not running; the store fails closed");
        }
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

    /// Test hook: durable writes wait (on the writing thread, before anything reaches sled)
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
mod tests;
