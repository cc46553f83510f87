//! Policy sets in the store, and reading a stopped daemon's store.
//!
//! Owns: the `ps/<hash>` key of a policy set kept content-addressed (written once, by the
//! engine, in the commit that first puts it in force or first decides with it), and opening a
//! store read-only for `cordon replay`, `explain` and `simulate`. sled has no read-only mode and
//! locks its directory (one process at a time), so a running daemon's store cannot be opened a
//! second time: that is reported as [`StoreError::InUse`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{Inner, Store, StoreError, open_checked};

const POLICY_SET_PREFIX: &str = "ps/";

/// Key of the policy set whose hash is `hash`.
pub fn policy_set_key(hash: &str) -> Vec<u8> {
    format!("{POLICY_SET_PREFIX}{hash}").into_bytes()
}

impl Store {
    /// Opens an existing store for reading, checked as the daemon checks it (every page read,
    /// the audit records from 1 to the head without a gap). Nothing is written: not the format
    /// key, not the witness, and every commit on the handle is refused (it is failed closed).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let opened = match open_checked(path, 64 << 20, false, true, false) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    reason: "it holds no store".into(),
                });
            }
            Err(StoreError::Open { source, .. })
                if source.to_string().contains("could not acquire lock") =>
            {
                return Err(StoreError::InUse {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db: opened.db,
                path: path.to_path_buf(),
                data_file: None,
                snapshot_lsn: None,
                head: Mutex::new(opened.head),
                failed: std::sync::atomic::AtomicBool::new(true),
                fail_next_write: std::sync::atomic::AtomicBool::new(false),
                durable_commits: std::sync::atomic::AtomicU64::new(0),
                hold: Mutex::new(false),
                hold_released: std::sync::Condvar::new(),
                held: std::sync::atomic::AtomicUsize::new(0),
                writer: Mutex::new(None),
                writer_nice: 0,
                own_writer: true,
            }),
        })
    }

    /// [`Store::open`] for a command that appends to a stopped daemon's store (`simulate`):
    /// a directory in use is [`StoreError::InUse`], a missing one is not created.
    pub fn open_existing_for_append(
        path: &Path,
        opts: &super::StoreOptions,
    ) -> Result<Store, StoreError> {
        if !path.join("db").exists() {
            return Err(StoreError::Damaged {
                path: path.to_path_buf(),
                reason: "it holds no store".into(),
            });
        }
        match Store::open(path, opts) {
            Err(StoreError::Open { source, .. })
                if source.to_string().contains("could not acquire lock") =>
            {
                Err(StoreError::InUse {
                    path: path.to_path_buf(),
                })
            }
            r => r,
        }
    }
}
