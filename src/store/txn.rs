//! A transaction: the writes and audit records of one batch, read through before they commit.
//!
//! Owns: reads and prefix scans that see the transaction's own writes, then those of the commit
//! in flight it was begun on, then sled; appending hash-chained audit records; savepoints for
//! undoing one event's writes inside a batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{AuditBodyOut, Head, Links, Pending, Store, StoreError, decode, encode};
use crate::audit::AuditKind;

/// Pending writes by key: `None` deletes.
pub(super) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A set of writes plus the audit records that explain them, committed together.
/// Reads through a `Txn` see its own uncommitted writes first, then those of the commit in flight
/// it was begun on (if any), then sled.
pub struct Txn {
    /// The chain head this transaction was begun on (checked when it is written).
    pub(super) base: Head,
    pub(super) head: Head,
    pub(super) puts: Writes,
    pub(super) audit: Vec<(u64, Vec<u8>)>,
    /// What each write replaced in `puts` (none = the key was not written yet), newest last:
    /// rolling back to a savepoint undoes only the writes made after it, so a savepoint per
    /// event costs O(1) instead of a copy of every write in the batch so far.
    #[allow(clippy::type_complexity)]
    pub(super) undo: Vec<(Vec<u8>, Option<Option<Vec<u8>>>)>,
    /// The writes of the commit in flight underneath this transaction, read before the store.
    pub(super) below: Option<Arc<Pending>>,
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

    /// Every key under `prefix` as this transaction sees it, in order: sled's, then the writes
    /// of the commit in flight it was begun on, then its own (a put adds a key, a delete hides
    /// one). A scan of the store alone would miss what this batch, or the one being written,
    /// has just indexed.
    pub fn keys_under(&self, store: &Store, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            store.keys_while(prefix, |_| true)?.into_iter().collect();
        let layers = self.below.iter().map(|b| &b.puts).chain([&self.puts]);
        for writes in layers {
            let under = writes
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix));
            for (k, v) in under {
                if v.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().collect())
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
