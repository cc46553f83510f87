//! `cordon audit verify` catches every kind of tampering with the hash-chained audit store
//! (edit, edit + re-hash, delete, reorder, truncate) and names the first bad seq; an untampered
//! store verifies; `cordon audit export` writes the chain as JSON lines.

use std::path::{Path, PathBuf};

use cordon::store::{GENESIS_HASH, audit_key, pack_value, unpack_value};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support;
use crate::support::{cordon, run, text};

/// A store with audit records written by the real daemon, stopped cleanly.
struct Populated {
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// Number of audit records (the chain head's seq).
    n: u64,
}

async fn populated() -> Populated {
    let mut d = support::start().await;
    for (format, file) in [
        ("splunk", "splunk.json"),
        ("elastic", "elastic.json"),
        ("sentinel", "sentinel.json"),
        ("ocsf", "ocsf.json"),
        ("cordon", "cordon.json"),
    ] {
        d.ingest_fixture(format, file).await;
    }
    let n = d.head();
    assert!(n >= 9, "need at least 9 audit records, have {n}");
    let data = d.config.data_dir.clone();
    // Stop the daemon but keep the temp dir (TestDaemon::stop would delete it).
    let code = d.running.take().unwrap().shutdown().await;
    assert_eq!(code, 0);
    Populated {
        _dir: d.dir,
        data,
        n,
    }
}

/// A copy of `src` tampered with by `f` through sled directly, after its audit chunks were
/// split into one record per key (the layout format version 1 wrote, which the current build
/// still reads), so `f` can address each record by its own key.
fn tampered(src: &Path, f: impl FnOnce(&sled::Db)) -> tempfile::TempDir {
    tampered_in_chunks(src, |db| {
        for (first, records) in chunks(db) {
            db.remove(audit_key(first)).unwrap();
            for (i, r) in records.into_iter().enumerate() {
                db.insert(audit_key(first + i as u64), r).unwrap();
            }
        }
        f(db)
    })
}

/// A copy of `src` tampered with by `f` through sled directly, in the layout the daemon wrote.
fn tampered_in_chunks(src: &Path, f: impl FnOnce(&sled::Db)) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    support::copy_dir(src, dst.path());
    let db = cordon::store::sled_config(dst.path()).open().unwrap();
    f(&db);
    db.flush().unwrap();
    drop(db);
    dst
}

/// Every audit chunk as its first seq and its records (`<hash>\n<body>` each), unpacked.
fn chunks(db: &sled::Db) -> Vec<(u64, Vec<Vec<u8>>)> {
    db.scan_prefix(b"a/")
        .map(|item| {
            let (k, v) = item.unwrap();
            let first = u64::from_be_bytes(k[2..].try_into().unwrap());
            let v = unpack_value(&k, &v).unwrap();
            let lines: Vec<&[u8]> = v.split(|b| *b == b'\n').collect();
            let records = lines.chunks(2).map(|p| p.join(&b'\n')).collect();
            (first, records)
        })
        .collect()
}

/// The first chunk holding at least three records.
fn a_chunk_of_three(db: &sled::Db) -> (u64, Vec<Vec<u8>>) {
    chunks(db)
        .into_iter()
        .find(|(_, r)| r.len() >= 3)
        .expect("the daemon stores a commit's records in chunks")
}

fn get(db: &sled::Db, seq: u64) -> Vec<u8> {
    let v = db
        .get(audit_key(seq))
        .unwrap()
        .unwrap_or_else(|| panic!("no audit record {seq}"));
    unpack_value(&audit_key(seq), &v).unwrap().into_owned()
}

/// `(hash line, body)` of a stored record.
fn split(v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nl = v.iter().position(|b| *b == b'\n').unwrap();
    (v[..nl].to_vec(), v[nl + 1..].to_vec())
}

/// Changes one byte of the body while keeping it valid JSON: the first letter of `kind`
/// becomes upper case.
fn edit_body(body: &mut [u8]) {
    let at = body
        .windows(8)
        .position(|w| w == b"\"kind\":\"")
        .expect("body has a kind")
        + 8;
    assert!(body[at].is_ascii_lowercase());
    body[at] = body[at].to_ascii_uppercase();
}

fn verify(dir: &Path) -> (Option<i32>, String, String) {
    // sled lets go of the directory lock from its flusher thread a moment after the tampering
    // handle is dropped: run verify once that has happened.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = cordon();
        c.args(["audit", "verify", "--data-dir"]).arg(dir);
        let out = run(c);
        let stderr = text(&out.stderr);
        if stderr.contains("could not acquire lock") && std::time::Instant::now() < deadline {
            continue;
        }
        return (out.status.code(), text(&out.stdout), stderr);
    }
}

/// Verify exits 1 and names `seq` as the first bad record; export refuses the store too: it
/// exits 1 naming the same record having written only the records before it, or refuses to
/// open it (74).
fn assert_broken_at(dir: &Path, seq: u64) -> String {
    let (code, stdout, stderr) = verify(dir);
    assert_eq!(
        code,
        Some(1),
        "verify accepted a tampered store: {stdout}{stderr}"
    );
    assert!(
        stderr.contains(&format!("at seq {seq}:")),
        "verify does not name seq {seq}: {stderr}"
    );
    assert!(!stdout.starts_with("ok"), "{stdout}");
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"]).arg(dir);
    let out = run(c);
    let (err, written) = (text(&out.stderr), text(&out.stdout));
    match out.status.code() {
        Some(1) => {
            assert!(
                err.contains(&format!("audit record {seq}:")),
                "export does not name seq {seq}: {err}"
            );
            let last = written.lines().last().map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            });
            assert!(
                last.is_none_or(|l| l < seq),
                "export wrote past the bad record {seq}: {last:?}"
            );
        }
        Some(74) => assert!(written.is_empty(), "{written}"),
        other => panic!("export of a tampered store exited {other:?}: {err}"),
    }
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untampered_copy_verifies() {
    let p = populated().await;
    let copy = tampered(&p.data, |_| {});
    let (code, stdout, stderr) = verify(copy.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("ok: {} audit records, chain head ", p.n)),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with(&format!("at seq {}", p.n)),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_body_is_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        let (hash, mut body) = split(&get(db, 5));
        edit_body(&mut body);
        db.insert(audit_key(5), [hash, b"\n".to_vec(), body].concat())
            .unwrap();
    });
    let stderr = assert_broken_at(copy.path(), 5);
    assert!(stderr.contains("edited"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_and_rehashed_body_is_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        let (_, mut body) = split(&get(db, 5));
        edit_body(&mut body);
        let hash = hex::encode(Sha256::digest(&body)).into_bytes();
        db.insert(audit_key(5), [hash, b"\n".to_vec(), body].concat())
            .unwrap();
    });
    assert_broken_at(copy.path(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_record_is_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        db.remove(audit_key(5)).unwrap().unwrap();
    });
    let stderr = assert_broken_at(copy.path(), 5);
    assert!(stderr.contains("deleted"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_records_are_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        let (four, seven) = (get(db, 4), get(db, 7));
        db.insert(audit_key(4), seven).unwrap();
        db.insert(audit_key(7), four).unwrap();
    });
    let stderr = assert_broken_at(copy.path(), 4);
    assert!(stderr.contains("reordered"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_last_record_is_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        db.remove(audit_key(p.n)).unwrap().unwrap();
    });
    assert_broken_at(copy.path(), p.n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_and_rehashed_last_record_is_named() {
    let p = populated().await;
    let copy = tampered(&p.data, |db| {
        let (_, mut body) = split(&get(db, p.n));
        edit_body(&mut body);
        let hash = hex::encode(Sha256::digest(&body)).into_bytes();
        db.insert(audit_key(p.n), [hash, b"\n".to_vec(), body].concat())
            .unwrap();
    });
    assert_broken_at(copy.path(), p.n);
}

/// Tampering inside a chunk (as the daemon wrote it) is found and named too: an edited record,
/// a record cut out of its chunk, two records swapped within one, and a chunk copied over the
/// records of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_inside_a_chunk_is_named() {
    let p = populated().await;
    let untouched = tampered_in_chunks(&p.data, |_| {});
    let (code, stdout, stderr) = verify(untouched.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let mut first = 0;
    let edited = tampered_in_chunks(&p.data, |db| {
        let (f, mut records) = a_chunk_of_three(db);
        first = f;
        let (hash, mut body) = split(&records[1]);
        edit_body(&mut body);
        records[1] = [hash, b"\n".to_vec(), body].concat();
        db.insert(audit_key(f), pack_value(&records.join(&b'\n')))
            .unwrap();
    });
    let stderr = assert_broken_at(edited.path(), first + 1);
    assert!(stderr.contains("edited"), "{stderr}");

    let cut = tampered_in_chunks(&p.data, |db| {
        let (f, mut records) = a_chunk_of_three(db);
        records.remove(1);
        db.insert(audit_key(f), pack_value(&records.join(&b'\n')))
            .unwrap();
    });
    let stderr = assert_broken_at(cut.path(), first + 1);
    assert!(stderr.contains("deleted"), "{stderr}");

    let swapped = tampered_in_chunks(&p.data, |db| {
        let (f, mut records) = a_chunk_of_three(db);
        records.swap(1, 2);
        db.insert(audit_key(f), pack_value(&records.join(&b'\n')))
            .unwrap();
    });
    let stderr = assert_broken_at(swapped.path(), first + 1);
    assert!(stderr.contains("reordered"), "{stderr}");

    let overlapping = tampered_in_chunks(&p.data, |db| {
        let (f, records) = a_chunk_of_three(db);
        db.insert(audit_key(f + 1), pack_value(&records[1..].join(&b'\n')))
            .unwrap();
    });
    let stderr = assert_broken_at(overlapping.path(), first + 1);
    assert!(stderr.contains("stored twice"), "{stderr}");

    // The daemon packs its chunks (format version 4); one byte changed inside a packed chunk
    // makes it unreadable, named at the chunk's first record.
    let damaged = tampered_in_chunks(&p.data, |db| {
        let (f, _) = a_chunk_of_three(db);
        let mut v = db.get(audit_key(f)).unwrap().unwrap().to_vec();
        assert_eq!(v[0], 0xc1, "a chunk of three is stored packed");
        let last = v.len() - 1;
        v[last] ^= 0xff;
        db.insert(audit_key(f), v).unwrap();
    });
    let stderr = assert_broken_at(damaged.path(), first);
    assert!(stderr.contains("unreadable"), "{stderr}");
}

#[test]
fn verify_of_a_missing_store_fails() {
    let t = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = verify(&t.path().join("nothing-here"));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no store at"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_json_line_per_record_in_chain_order() {
    let p = populated().await;
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("audit.jsonl");
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"])
        .arg(&p.data)
        .arg("-o")
        .arg(&file);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("exported {} audit records", p.n)),
        "{}",
        text(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len() as u64, p.n);
    let mut prev = GENESIS_HASH.to_string();
    for (i, l) in lines.iter().enumerate() {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1));
        assert_eq!(v["seq"], i as u64 + 1, "{l}");
        let hash = v["hash"].as_str().unwrap_or_else(|| panic!("no hash: {l}"));
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{l}"
        );
        assert_eq!(
            v["prev"],
            prev.as_str(),
            "record {} does not link to its predecessor",
            i + 1
        );
        assert!(v["kind"].is_string() && v["at"].is_string(), "{l}");
        prev = hash.to_string();
    }

    // Without -o the same lines go to standard output.
    let mut c = cordon();
    c.args(["audit", "export", "--data-dir"]).arg(&p.data);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), written);
}
