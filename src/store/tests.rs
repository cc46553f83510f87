//! Unit tests of the store: chunks, commits, damage, formats, tamper hooks.

use super::*;
use crate::audit::AuditKind;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use txn::Writes;

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
    let conf =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p.join("conf")).unwrap()).into_owned();
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

/// A prefix scan through a transaction sees what it will commit on: sled's keys, the puts and
/// deletes of the commit in flight underneath (held before it reaches sled), then its own; keys
/// outside the prefix never show.
#[tokio::test]
async fn keys_under_a_prefix_are_read_through_the_transaction_and_the_commit_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let mut t0 = store.begin();
    for k in ["ib/a", "ib/b", "ib/c", "ic/other"] {
        t0.put(k.as_bytes().to_vec(), Vec::new());
    }
    store.commit(t0).await.unwrap();

    let hold = store.hold_writes_for_tests();
    let mut t1 = store.begin();
    t1.put(b"ib/d".to_vec(), Vec::new());
    t1.delete(b"ib/a".to_vec());
    t1.put(b"ia/outside".to_vec(), Vec::new());
    let inflight = store.start_commit(t1);
    let mut t2 = store.begin_after(Some(&inflight));
    t2.put(b"ib/e".to_vec(), Vec::new());
    t2.delete(b"ib/b".to_vec());
    t2.put(b"ib/a".to_vec(), Vec::new());
    t2.delete(b"ib/zz-never-there".to_vec());
    let names = |keys: Vec<Vec<u8>>| -> Vec<String> {
        keys.into_iter()
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    };
    // The commit in flight has not reached sled: the store alone still shows the old keys.
    assert_eq!(
        names(store.keys_while(b"ib/", |_| true).unwrap()),
        ["ib/a", "ib/b", "ib/c"]
    );
    assert_eq!(
        names(t2.keys_under(&store, b"ib/").unwrap()),
        ["ib/a", "ib/c", "ib/d", "ib/e"]
    );
    assert_eq!(
        names(t2.keys_under(&store, b"ix/").unwrap()),
        Vec::<String>::new()
    );
    drop(hold);
    inflight.await.unwrap();
    store.commit(t2).await.unwrap();
    assert_eq!(
        names(store.keys_while(b"ib/", |_| true).unwrap()),
        ["ib/a", "ib/c", "ib/d", "ib/e"]
    );
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
    let mut witness: dir::Witness = serde_json::from_slice(&std::fs::read(&w).unwrap()).unwrap();
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

/// Commits run on the store's own writing thread (`cordon-store-writer`) at the `nice` it was
/// opened with, and that thread ends once the last handle to the store is gone: no thread is
/// left behind per store opened.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn commits_run_on_a_writing_thread_that_ends_with_the_store() {
    // Above the process's value, so always granted; no other test asks for it.
    let nice = (crate::nice::current_thread().unwrap() + 7).min(19);
    let writers = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                let v: i32 = stat[stat.rfind(')')? + 1..]
                    .split_whitespace()
                    .nth(16)?
                    .parse()
                    .ok()?;
                (comm.trim() == "cordon-store-wr" && v == nice).then_some(())
            })
            .count()
    };
    assert_eq!(writers(), 0);
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        writer_nice: nice,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &opts).unwrap();
    assert_eq!(writers(), 0, "started before the first commit");
    for i in 0..3 {
        let mut t = store.begin();
        t.put_json(format!("zz/{i}").into_bytes(), &i).unwrap();
        t.audit(AuditKind::Retry, Links::default(), at(), i)
            .unwrap();
        store.commit(t).await.unwrap();
        assert_eq!(writers(), 1, "one writing thread per store");
    }
    assert_eq!(store.get_json::<i32>(b"zz/2").unwrap(), Some(2));
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while writers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the writing thread outlived its store"
        );
        tokio::task::yield_now().await;
    }
    // The directory is free again, and what was committed is there.
    let store = once_unlocked(|| Store::open(dir.path(), &StoreOptions::default()));
    assert_eq!(store.get_json::<i32>(b"zz/2").unwrap(), Some(2));
    assert_eq!(store.head().seq, 3);
}
