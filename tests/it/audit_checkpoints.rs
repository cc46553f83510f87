//! Signed audit checkpoints: the daemon signs the chain head at shutdown (and periodically) into
//! a directory outside the store, announcing each checkpoint in the chain; a tail rewritten or
//! cut together with `m/head` and `cordon.head` passes a bare `cordon audit verify`, and fails
//! `audit verify --checkpoints DIR --public-key FILE`, which names the checkpoint. Also: an
//! untampered store passes, another key or a malformed file fails naming the file, and
//! `audit keygen` makes a key the daemon takes.

use std::path::{Path, PathBuf};

use cordon::checkpoint::{RECORD_KIND, Signer};
use cordon::config::CheckpointsConfig;
use cordon::secret::SecretRef;
use cordon::store::{Head, WITNESS, audit_key};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support;
use crate::support::{cordon, run, text};

const ORIGIN: &str = "soc.example/cordon";

/// A store written by the real daemon with checkpoints on, stopped cleanly.
struct Signed {
    _keys: tempfile::TempDir,
    _workspace: tempfile::TempDir,
    data: PathBuf,
    checkpoints: PathBuf,
    public_key: PathBuf,
    /// The chain head's seq after the shutdown.
    n: u64,
}

/// Writes a new key pair into `dir`: `signing.pem` (private) and `public.pem`.
fn key_pair(dir: &Path) -> (PathBuf, PathBuf, Signer) {
    let s = Signer::generate(ORIGIN).unwrap();
    let (private, public) = (dir.join("signing.pem"), dir.join("public.pem"));
    std::fs::write(&private, s.private_pem().unwrap()).unwrap();
    std::fs::write(&public, s.public().pem().unwrap()).unwrap();
    (private, public, s)
}

fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".checkpoint"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn name_of(seq: u64) -> String {
    format!("{seq:020}.checkpoint")
}

async fn signed(interval_secs: u64) -> Signed {
    let keys = tempfile::tempdir().unwrap();
    let (private, public_key, signer) = key_pair(keys.path());
    let checkpoints = keys.path().join("checkpoints");
    let cp_dir = checkpoints.clone();
    let mut d = support::start_with(move |c, _| {
        c.audit.checkpoints = Some(CheckpointsConfig {
            dir: cp_dir,
            signing_key: SecretRef::File(private),
            origin: ORIGIN.into(),
            interval_secs,
        });
    })
    .await;
    for (format, file) in [
        ("splunk", "splunk.json"),
        ("elastic", "elastic.json"),
        ("cordon", "cordon.json"),
    ] {
        d.ingest_fixture(format, file).await;
    }
    assert!(d.head() >= 6, "need at least 6 audit records");
    let data = d.config.data_dir.clone();
    // Stop the daemon but keep the workspace (TestDaemon::stop would delete it).
    let code = d.running.take().unwrap().shutdown().await;
    assert_eq!(code, 0);

    // The shutdown checkpoint signs the final head, which is its own announcement.
    let records = export(&data);
    let n = records.len() as u64;
    let last = &records[n as usize - 1];
    assert_eq!(last["kind"], RECORD_KIND.as_str(), "{last}");
    assert_eq!(last["data"]["origin"], ORIGIN, "{last}");
    assert_eq!(
        last["data"]["key"].as_str(),
        Some(signer.public().fingerprint().as_str()),
        "{last}"
    );
    let files = checkpoint_files(&checkpoints);
    assert_eq!(files.last(), Some(&name_of(n)), "{files:?}");
    let text = std::fs::read_to_string(checkpoints.join(name_of(n))).unwrap();
    assert!(
        text.starts_with(&format!(
            "{ORIGIN}\n{n}\n{}\n",
            last["hash"].as_str().unwrap()
        )),
        "{text}"
    );
    // The key never reaches the audit store.
    let pem = signer.private_pem().unwrap();
    let secret_line = pem.lines().nth(1).unwrap();
    assert!(
        !records.iter().any(|r| r.to_string().contains(secret_line)),
        "the signing key is in the audit store"
    );
    Signed {
        _keys: keys,
        _workspace: d.dir,
        data,
        checkpoints,
        public_key,
        n,
    }
}

/// Every audit record, as `cordon audit export` writes them.
fn export(data: &Path) -> Vec<Value> {
    crate::support::audit_export(&["--data-dir".as_ref(), data.as_os_str()])
}

/// `cordon audit verify` on `data`, with `--checkpoints` and `--public-key` when given.
fn verify(data: &Path, with: Option<(&Path, &Path)>) -> (Option<i32>, String, String) {
    // sled lets go of the directory lock from its flusher thread a moment after the tampering
    // handle is dropped: run verify once that has happened.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = cordon();
        c.args(["audit", "verify", "--data-dir"]).arg(data);
        if let Some((dir, key)) = with {
            c.arg("--checkpoints").arg(dir).arg("--public-key").arg(key);
        }
        let out = run(c);
        let stderr = text(&out.stderr);
        if stderr.contains("could not acquire lock") && std::time::Instant::now() < deadline {
            continue;
        }
        return (out.status.code(), text(&out.stdout), stderr);
    }
}

/// A copy of `src` whose audit records are one per key (as format version 1 stored them), then
/// changed by `f` through sled directly; `f` returns the new chain head, which `m/head` and the
/// witness file are set to, so the bare chain check cannot tell.
fn rewritten(src: &Path, f: impl FnOnce(&sled::Db) -> Head) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    support::copy_dir(src, dst.path());
    let db = cordon::store::sled_config(dst.path()).open().unwrap();
    let chunks: Vec<(u64, Vec<u8>)> = db
        .scan_prefix(b"a/")
        .map(|item| {
            let (k, v) = item.unwrap();
            let v = cordon::store::unpack_value(&k, &v).unwrap().into_owned();
            (u64::from_be_bytes(k[2..].try_into().unwrap()), v)
        })
        .collect();
    for (first, v) in chunks {
        db.remove(audit_key(first)).unwrap();
        let lines: Vec<&[u8]> = v.split(|b| *b == b'\n').collect();
        for (i, pair) in lines.chunks(2).enumerate() {
            db.insert(audit_key(first + i as u64), pair.join(&b'\n'))
                .unwrap();
        }
    }
    let head = f(&db);
    db.insert(b"m/head", serde_json::to_vec(&head).unwrap())
        .unwrap();
    db.flush().unwrap();
    drop(db);
    let w = dst.path().join(WITNESS);
    let mut witness: Value = serde_json::from_slice(&std::fs::read(&w).unwrap()).unwrap();
    witness["head"] = serde_json::to_value(&head).unwrap();
    std::fs::write(&w, serde_json::to_vec(&witness).unwrap()).unwrap();
    dst
}

/// `(hash, body)` of stored record `seq`.
fn record(db: &sled::Db, seq: u64) -> (String, Value) {
    let v = db.get(audit_key(seq)).unwrap().unwrap();
    let nl = v.iter().position(|b| *b == b'\n').unwrap();
    (
        String::from_utf8(v[..nl].to_vec()).unwrap(),
        serde_json::from_slice(&v[nl + 1..]).unwrap(),
    )
}

/// Rewrites records `from..=to`: the first one's `kind` is changed, and each is re-hashed and
/// re-linked to the one before, as an attacker with write access to the store would.
fn rechain(db: &sled::Db, from: u64, to: u64) -> Head {
    let mut prev = record(db, from - 1).0;
    for seq in from..=to {
        let (_, mut body) = record(db, seq);
        if seq == from {
            body["kind"] = Value::String("nothing_happened".into());
        }
        body["prev"] = Value::String(prev.clone());
        let bytes = serde_json::to_vec(&body).unwrap();
        let hash = hex::encode(Sha256::digest(&bytes));
        db.insert(audit_key(seq), [hash.as_bytes(), b"\n", &bytes].concat())
            .unwrap();
        prev = hash;
    }
    Head {
        seq: to,
        hash: prev,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_rewritten_tail_passes_the_chain_check_and_fails_the_checkpoints() {
    let s = signed(3600).await;
    let with = Some((s.checkpoints.as_path(), s.public_key.as_path()));

    let (code, stdout, stderr) = verify(&s.data, with);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "checkpoint(s) verified, the newest at seq {}",
            s.n
        )),
        "{stdout}"
    );

    // The last three records (the final one is the shutdown checkpoint's announcement).
    let copy = rewritten(&s.data, |db| rechain(db, s.n - 2, s.n));
    let (code, stdout, stderr) = verify(copy.path(), None);
    assert_eq!(
        code,
        Some(0),
        "the rewrite is not consistent: {stdout}{stderr}"
    );
    let (code, stdout, stderr) = verify(copy.path(), with);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let file = s.checkpoints.join(name_of(s.n));
    assert!(
        stderr.contains(&format!("checkpoint {}: ", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("were rewritten"), "{stderr}");
    assert!(
        stderr.contains("does not match its checkpoints"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_cut_tail_fails_the_checkpoints() {
    let s = signed(3600).await;
    let with = Some((s.checkpoints.as_path(), s.public_key.as_path()));
    let copy = rewritten(&s.data, |db| {
        for seq in s.n - 1..=s.n {
            db.remove(audit_key(seq)).unwrap().unwrap();
        }
        Head {
            seq: s.n - 2,
            hash: record(db, s.n - 2).0,
        }
    });
    let (code, stdout, stderr) = verify(copy.path(), None);
    assert_eq!(code, Some(0), "the cut is not consistent: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("ok: {} audit records", s.n - 2)),
        "{stdout}"
    );
    let (code, stdout, stderr) = verify(copy.path(), with);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "checkpoint {}: it signs seq {}, but the chain ends at seq {}",
            s.checkpoints.join(name_of(s.n)).display(),
            s.n,
            s.n - 2
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_or_a_malformed_file_fails_naming_the_file() {
    let s = signed(3600).await;
    let other = tempfile::tempdir().unwrap();
    let (_, other_public, _) = key_pair(other.path());
    let (code, stdout, stderr) = verify(&s.data, Some((&s.checkpoints, &other_public)));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "checkpoint {}: not signed by this public key",
            s.checkpoints.join(name_of(s.n)).display()
        )),
        "{stderr}"
    );

    // A signature that does not verify: one digit of the signed hash changed.
    let edited = s.checkpoints.join(name_of(s.n));
    let text = std::fs::read_to_string(&edited).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let hash = lines[2];
    let flipped = format!(
        "{}{}",
        if hash.starts_with('0') { "1" } else { "0" },
        &hash[1..]
    );
    std::fs::write(&edited, text.replacen(hash, &flipped, 1)).unwrap();
    std::fs::write(s.checkpoints.join(name_of(1)), "not a checkpoint\n").unwrap();
    let (code, stdout, stderr) = verify(&s.data, Some((&s.checkpoints, &s.public_key)));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "checkpoint {}: the signature by key",
            edited.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "checkpoint {}: malformed checkpoint",
            s.checkpoints.join(name_of(1)).display()
        )),
        "{stderr}"
    );

    // No checkpoints at all is not a pass.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = verify(&s.data, Some((empty.path(), &s.public_key)));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no checkpoints"), "{stderr}");
}

/// With a short interval a checkpoint is taken while the daemon runs, announced in the chain
/// first; a key from `cordon audit keygen` is what the daemon signs with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_taken_while_running_with_a_keygen_key() {
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("signing.pem");
    let public = keys.path().join("public.pem");
    let mut c = cordon();
    c.args(["audit", "keygen", "--out"])
        .arg(&private)
        .arg("--public-out")
        .arg(&public);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("fingerprint sha256:"));
    // It never replaces a key.
    let mut c = cordon();
    c.args(["audit", "keygen", "--out"]).arg(&private);
    assert_eq!(run(c).status.code(), Some(1));

    let checkpoints = keys.path().join("checkpoints");
    let cp_dir = checkpoints.clone();
    let mut d = support::start_with(move |c, _| {
        c.audit.checkpoints = Some(CheckpointsConfig {
            dir: cp_dir,
            signing_key: SecretRef::File(private),
            origin: ORIGIN.into(),
            interval_secs: 1,
        });
    })
    .await;
    d.ingest_fixture("cordon", "cordon.json").await;
    let first = support::eventually(30, || {
        let files = checkpoint_files(&checkpoints);
        async move { files.first().cloned() }
    })
    .await;
    let seq: u64 = first.trim_end_matches(".checkpoint").parse().unwrap();
    let records = d.audit();
    let announced = &records[seq as usize - 1];
    assert_eq!(announced.body.kind, RECORD_KIND.as_str());
    assert_eq!(announced.body.seq, seq);
    let text_of = std::fs::read_to_string(checkpoints.join(&first)).unwrap();
    assert!(
        text_of.starts_with(&format!("{ORIGIN}\n{seq}\n{}\n", announced.hash)),
        "{text_of}"
    );
    let code = d.running.take().unwrap().shutdown().await;
    assert_eq!(code, 0);
    let (code, stdout, stderr) = verify(&d.config.data_dir, Some((&checkpoints, &public)));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

/// A checkpoint directory inside the data directory, or a signing key that is not one, is a
/// config problem (exit 64 from `cordon check`), and the problem never repeats the key.
#[test]
fn bad_checkpoint_settings_are_config_problems() {
    let (dir, _) = support::workspace();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ncanary-not-a-key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = dir.path().join("cordon.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\npolicies_dir = {:?}\nplaybooks_dir = {:?}\nconnectors_dir = {:?}\n[audit.checkpoints]\ndir = {:?}\nsigning_key = {{ file = {:?} }}\norigin = \"{ORIGIN}\"\n",
            dir.path().join("data"),
            dir.path().join("policies"),
            dir.path().join("playbooks"),
            dir.path().join("connectors"),
            dir.path().join("data/checkpoints"),
            key,
        ),
    )
    .unwrap();
    let mut c = cordon();
    c.args(["check", "--config"]).arg(&config);
    let out = run(c);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("audit.checkpoints.dir"), "{stderr}");
    assert!(stderr.contains("audit.checkpoints.signing_key"), "{stderr}");
    assert!(!stderr.contains("canary"), "{stderr}");
}
