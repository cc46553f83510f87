//! The embedded store: the only module that touches sled.
//!
//! Owns: the on-disk format (one sled tree, key prefixes below, a format-version key), the
//! append-only, hash-chained audit log, durable commits (atomic batch + flush + optional
//! `fdatasync`), and offline verification/export of the chain.
//!
//! Key layout (all in one tree so a commit is one atomic `apply_batch`):
//! - `m/format_version`, `m/head`: metadata; the head is the last audit sequence and its hash.
//! - `a/<seq u64 big-endian>`: audit records, `<sha256 hex>\n<body json>` where the body holds
//!   `seq` and `prev` (the previous record's hash), so editing, deleting or reordering a record
//!   breaks the chain.
//! - any other prefix: state owned by the engine (alerts, cases, actions), written only through a
//!   [`Txn`] together with the audit records that explain it.
//!
//! There is one writer (the engine task); readers (HTTP/gRPC queries) read committed state.

mod verify;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

pub use verify::{ExportError, VerifyError, VerifyReport, export, verify};

/// The on-disk format version this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

const KEY_FORMAT: &[u8] = b"m/format_version";
const KEY_HEAD: &[u8] = b"m/head";
const AUDIT_PREFIX: &[u8] = b"a/";
/// Hash that the first record links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Key of audit record `seq` (public so tamper tests can address a record).
pub fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = AUDIT_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store {path} has format version {found}, this build reads version {FORMAT_VERSION}")]
    FormatVersion { path: PathBuf, found: String },
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
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page cache size.
    pub cache_capacity_bytes: u64,
    /// After each commit's flush, `fdatasync` the data file too (survives power loss, not just
    /// a process kill).
    pub sync_data: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 32 << 20,
            sync_data: true,
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
    /// Committed head. Only advanced after a successful durable commit.
    head: Mutex<Head>,
    failed: std::sync::atomic::AtomicBool,
}

/// Result of a durable commit.
#[derive(Debug, Clone)]
pub struct Committed {
    pub head: Head,
    pub records: usize,
    pub elapsed: Duration,
}

impl Store {
    /// Opens (or creates) the store at `path`. Fails closed with a clear message on a format
    /// mismatch or a corrupt database, never by panicking.
    pub fn open(path: &Path, opts: &StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: sled::Error::Io(e),
        })?;
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_capacity_bytes)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        match db.get(KEY_FORMAT)? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).to_string();
                if found != FORMAT_VERSION.to_string() {
                    return Err(StoreError::FormatVersion {
                        path: path.to_path_buf(),
                        found,
                    });
                }
            }
            None => {
                db.insert(KEY_FORMAT, FORMAT_VERSION.to_string().as_bytes())?;
                db.flush()?;
            }
        }
        let head = match db.get(KEY_HEAD)? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: "m/head".into(),
                reason: e.to_string(),
            })?,
            None => Head::genesis(),
        };
        let data_file = if opts.sync_data {
            Some(File::open(path.join("db")).map_err(StoreError::Fsync)?)
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                data_file,
                head: Mutex::new(head),
                failed: std::sync::atomic::AtomicBool::new(false),
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
        Txn {
            head: self.head(),
            puts: BTreeMap::new(),
            audit: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// Reads committed state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.db.get(key)?.map(|v| v.to_vec()))
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
        if self.inner.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::FailedClosed);
        }
        let started = Instant::now();
        let records = txn.audit.len();
        let new_head = txn.head.clone();
        if txn.puts.is_empty() && txn.audit.is_empty() {
            return Ok(Committed {
                head: new_head,
                records,
                elapsed: started.elapsed(),
            });
        }
        let mut batch = sled::Batch::default();
        for (seq, bytes) in txn.audit {
            batch.insert(audit_key(seq), bytes);
        }
        for (k, v) in txn.puts {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(KEY_HEAD, encode(&new_head)?);
        let result = async {
            self.inner.db.apply_batch(batch)?;
            self.inner.db.flush_async().await?;
            if let Some(f) = &self.inner.data_file {
                f.sync_data().map_err(StoreError::Fsync)?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = result {
            self.inner
                .failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        *lock(&self.inner.head) = new_head.clone();
        Ok(Committed {
            head: new_head,
            records,
            elapsed: started.elapsed(),
        })
    }

    /// Flushes everything to disk (shutdown path).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        if let Some(f) = &self.inner.data_file {
            f.sync_data().map_err(StoreError::Fsync)?;
        }
        Ok(())
    }

    /// Reads audit records `from..` (inclusive) in chain order, at most `limit`.
    pub fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.db.range(audit_key(from)..) {
            let (k, v) = item?;
            if !k.starts_with(AUDIT_PREFIX) {
                break;
            }
            out.push(parse_audit(&k, &v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// True after a failed write: the store refuses commits until restart.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Test hook: makes the next commits fail as a broken disk would.
    #[doc(hidden)]
    pub fn fail_for_tests(&self) {
        self.inner
            .failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A set of writes plus the audit records that explain them, committed together.
/// Reads through a `Txn` see its own uncommitted writes first.
/// Pending writes by key: `None` deletes.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub struct Txn {
    head: Head,
    puts: Writes,
    audit: Vec<(u64, Vec<u8>)>,
    /// What each write replaced in `puts` (none = the key was not written yet), newest last:
    /// rolling back to a savepoint undoes only the writes made after it, so a savepoint per
    /// event costs O(1) instead of a copy of every write in the batch so far.
    #[allow(clippy::type_complexity)]
    undo: Vec<(Vec<u8>, Option<Option<Vec<u8>>>)>,
}

impl Txn {
    /// Reads `key`, seeing this transaction's writes first, then committed state.
    pub fn get(&self, store: &Store, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.puts.get(key) {
            Some(v) => Ok(v.clone()),
            None => store.get(key),
        }
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

    /// Appends an audit record; returns its sequence number.
    pub fn audit(
        &mut self,
        kind: &str,
        links: Links,
        at: DateTime<Utc>,
        data: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let body = AuditBody {
            seq: self.head.seq + 1,
            prev: self.head.hash.clone(),
            at,
            kind: kind.to_string(),
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
        self.audit.push((body.seq, bytes));
        self.head = Head {
            seq: body.seq,
            hash,
        };
        Ok(body.seq)
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

fn decode<T: DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).to_string(),
        reason: e.to_string(),
    })
}

/// Splits and parses a stored audit record (no chain checks; see [`verify`]).
fn parse_audit(key: &[u8], v: &[u8]) -> Result<AuditRecord, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: format!(
            "a/{}",
            seq_of_key(key).map_or("?".into(), |s| s.to_string())
        ),
        reason: reason.to_string(),
    };
    let nl = v
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("no hash separator"))?;
    let hash = std::str::from_utf8(&v[..nl])
        .map_err(|_| corrupt("hash is not utf-8"))?
        .to_string();
    let body: AuditBody =
        serde_json::from_slice(&v[nl + 1..]).map_err(|e| corrupt(&e.to_string()))?;
    Ok(AuditRecord { hash, body })
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

    proptest! {
        /// Rolling back to a savepoint leaves exactly the writes made before it, as a full copy
        /// taken at the savepoint would (the undo log is equivalent to the copy it replaced).
        #[test]
        fn rollback_restores_the_writes_before_the_savepoint(ops in proptest::collection::vec(op(), 0..60)) {
            let mut txn = Txn {
                head: Head { seq: 0, hash: GENESIS_HASH.into() },
                puts: BTreeMap::new(),
                audit: Vec::new(),
                undo: Vec::new(),
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
