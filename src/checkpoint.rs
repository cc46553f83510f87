//! Signed audit checkpoints: an Ed25519 signature over the audit chain's head, kept outside the
//! data directory, so a tail rewritten or cut together with `m/head` (which a chain check alone
//! cannot see: the head lives in the same store) is caught by `cordon audit verify --checkpoints`.
//!
//! Owns: the checkpoint file format, its signing and verification, the key files, writing
//! checkpoint files, the periodic task and the shutdown checkpoint, and checking a chain against
//! checkpoints. Reading the chain goes through `store`; the audit record that announces a
//! checkpoint is written by the engine ([`crate::engine::EngineHandle::checkpoint`]).
//!
//! The format is a C2SP *signed note* (<https://c2sp.org/signed-note>) whose text follows the
//! shape of a transparency-log checkpoint (<https://c2sp.org/tlog-checkpoint>), adapted to a hash
//! chain:
//!
//! ```text
//! soc.example.org/cordon            <- origin: the configured log name
//! 1234                              <- seq of the head record
//! 9f86d081884c7d65...               <- its hash, 64 hex digits, as `audit export` prints it
//! time 2026-12-05T05:00:00Z         <- when it was signed
//!
//! — soc.example.org/cordon Base64(key id ‖ signature)
//! ```
//!
//! The signature is Ed25519 over the text up to and including the newline before the blank
//! line; the key id is the first 4 bytes of SHA-256(origin ‖ `\n` ‖ 0x01 ‖ public key), as the
//! signed-note spec defines it (the format Go's `golang.org/x/mod/sumdb/note` implements);
//! `openssl pkeyutl -verify -rawin` checks the signature given the text and the 64 bytes after
//! the key id.
//! Keys are PEM: the private key PKCS#8 (`openssl genpkey -algorithm ed25519`), the public key
//! SubjectPublicKeyInfo (`openssl pkey -pubout`). A key's fingerprint is `sha256:` and the hex
//! SHA-256 of its public key's DER encoding.
//!
//! A checkpoint signs the record that announces it: the engine appends an `audit_checkpoint`
//! record (origin, key fingerprint, the previous checkpoint's seq and hash), and once that is
//! durable the head it ends at, that record, is signed and written to `<seq, 20 digits>.checkpoint`
//! (temporary file, fsync, linked into place without replacing a file, directory fsync). So
//! the chain shows where every checkpoint was taken (a record cannot hold its own hash; the
//! checkpoint of seq N is the record at N), the newest checkpoint covers its own announcement,
//! and an idle daemon takes no new checkpoints. At shutdown, once the engine has stopped, the
//! announcement is committed directly, the store flushed, and the final head signed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::engine::{Clock, EngineHandle};
use crate::secret::SecretRef;
use crate::store::{Head, Links, Store, StoreError};

/// Kind of the audit record that announces a checkpoint.
pub const RECORD_KIND: crate::audit::AuditKind = crate::audit::AuditKind::AuditCheckpoint;
/// Extension of checkpoint files.
pub const EXTENSION: &str = "checkpoint";
/// Largest checkpoint file read (they are a few hundred bytes).
const MAX_FILE_BYTES: u64 = 64 << 10;
/// Signed-note signature type of Ed25519.
const ALG_ED25519: u8 = 0x01;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error(
        "not signed by this public key (key {key_id}); it carries signatures by key(s) {found}"
    )]
    OtherKey { key_id: String, found: String },
    #[error("the signature by key {0} does not verify: the checkpoint was altered or forged")]
    BadSignature(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Io(String),
}

/// A key that signs checkpoints, and the log name (origin) it signs for. Never printed.
pub struct Signer {
    key: SigningKey,
    origin: String,
    public: PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signer({}, {}, **REDACTED**)",
            self.origin,
            self.public.fingerprint()
        )
    }
}

impl Signer {
    /// Reads the PKCS#8 PEM private key a secret reference names. The error never repeats the
    /// key.
    pub fn from_ref(r: &SecretRef, origin: &str) -> Result<Signer, CheckpointError> {
        if matches!(r, SecretRef::Sha256(_)) {
            return Err(CheckpointError::Key(
                "a signing key must be an env or file reference, not sha256".into(),
            ));
        }
        let pem = r
            .resolve()
            .map_err(|e| CheckpointError::Key(e.to_string()))?;
        Signer::from_pem(pem.expose(), origin).map_err(|e| {
            CheckpointError::Key(format!(
                "{} does not hold an Ed25519 private key in PKCS#8 PEM: {e}",
                r.describe()
            ))
        })
    }

    fn from_pem(pem: &str, origin: &str) -> Result<Signer, CheckpointError> {
        // The error type of `pkcs8` says only what was wrong with the encoding, never the key.
        let key = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|e| CheckpointError::Key(e.to_string()))?;
        Ok(Signer::new(key, origin))
    }

    fn new(key: SigningKey, origin: &str) -> Signer {
        let public = PublicKey(key.verifying_key());
        Signer {
            key,
            origin: origin.to_string(),
            public,
        }
    }

    /// A new key from the operating system's random source.
    pub fn generate(origin: &str) -> Result<Signer, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Key(e.to_string()))?;
        let s = Signer::new(SigningKey::from_bytes(&seed), origin);
        seed.fill(0);
        Ok(s)
    }

    /// The private key as PKCS#8 PEM (for `cordon audit keygen` only).
    pub fn private_pem(&self) -> Result<String, CheckpointError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| CheckpointError::Key(e.to_string()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The file text of a signed checkpoint.
    pub fn sign(&self, cp: &Checkpoint) -> String {
        let text = cp.text();
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.public.key_id(&cp.origin).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "{text}\n\u{2014} {} {}\n",
            cp.origin,
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }
}

/// A public key that verifies checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<PublicKey, CheckpointError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|e| CheckpointError::Key(format!("not an Ed25519 public key in PEM: {e}")))
    }

    pub fn read(path: &Path) -> Result<PublicKey, CheckpointError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CheckpointError::Key(format!("cannot read {}: {e}", path.display())))?;
        PublicKey::from_pem(&text)
            .map_err(|e| CheckpointError::Key(format!("{}: {e}", path.display())))
    }

    pub fn pem(&self) -> Result<String, CheckpointError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| CheckpointError::Key(e.to_string()))
    }

    /// `sha256:` and the hex SHA-256 of the DER SubjectPublicKeyInfo (`openssl pkey -pubin
    /// -outform DER | sha256sum`).
    pub fn fingerprint(&self) -> String {
        let der = self
            .0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(der)))
    }

    /// The signed-note key id of this key under `name`.
    fn key_id(&self, name: &str) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([b'\n', ALG_ED25519]);
        h.update(self.0.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }
}

/// What a checkpoint states: the head of the log named `origin` at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub seq: u64,
    /// The head record's hash (hex).
    pub hash: String,
    pub time: DateTime<Utc>,
}

impl Checkpoint {
    /// The signed text.
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.seq,
            self.hash,
            self.time.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// `<seq, 20 digits>.checkpoint`: names sort by seq.
    pub fn file_name(&self) -> String {
        file_name(self.seq)
    }

    /// Parses a checkpoint file and verifies its signature by `key`.
    pub fn open(file: &str, key: &PublicKey) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_string());
        let Some((text, sigs)) = file.split_once("\n\n") else {
            return Err(bad("no blank line before the signatures"));
        };
        let text = format!("{text}\n");
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("control characters in the text"));
        }
        let lines: Vec<&str> = text.lines().collect();
        let [origin, seq, hash, time] = lines[..] else {
            return Err(bad(&format!(
                "the text has {} lines, a checkpoint has 4 (origin, seq, hash, time)",
                lines.len()
            )));
        };
        if !valid_origin(origin) {
            return Err(bad("the origin is empty or has spaces or '+'"));
        }
        let seq = match seq.parse::<u64>() {
            Ok(n) if n > 0 && n.to_string() == seq => n,
            _ => {
                return Err(bad(
                    "the second line is not a seq (a positive decimal number)",
                ));
            }
        };
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                "the third line is not a hash (64 lowercase hex digits)",
            ));
        }
        let time = time
            .strip_prefix("time ")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .ok_or_else(|| bad("the fourth line is not `time <RFC 3339>`"))?
            .with_timezone(&Utc);
        let cp = Checkpoint {
            origin: origin.to_string(),
            seq,
            hash: hash.to_string(),
            time,
        };
        let want = key.key_id(origin);
        let mut found = Vec::new();
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(bad("a signature line does not start with '\u{2014} '"));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(bad("a signature line is not `\u{2014} <name> <signature>`"));
            };
            let blob = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("a signature is not base64"))?;
            if blob.len() < 4 {
                return Err(bad("a signature is too short"));
            }
            let id = hex::encode(&blob[..4]);
            if name != origin || blob[..4] != want {
                found.push(format!("{name}+{id}"));
                continue;
            }
            let sig = <[u8; 64]>::try_from(&blob[4..])
                .map(|b| ed25519_dalek::Signature::from_bytes(&b))
                .map_err(|_| bad("an Ed25519 signature is not 64 bytes"))?;
            return key
                .0
                .verify_strict(text.as_bytes(), &sig)
                .map(|()| cp)
                .map_err(|_| CheckpointError::BadSignature(format!("{name}+{id}")));
        }
        if found.is_empty() {
            return Err(bad("no signature lines"));
        }
        Err(CheckpointError::OtherKey {
            key_id: format!("{origin}+{}", hex::encode(want)),
            found: found.join(", "),
        })
    }
}

/// A log name: what the signed-note spec allows in a key name (non-empty, no spaces, no '+').
pub fn valid_origin(origin: &str) -> bool {
    !origin.is_empty()
        && origin.len() <= 256
        && origin
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.{EXTENSION}")
}

/// What the audit record announcing a checkpoint holds (never the key).
#[derive(Debug, Clone, Serialize)]
pub struct Announcement {
    pub origin: String,
    /// The signing key's fingerprint (see [`PublicKey::fingerprint`]).
    pub key: String,
    /// The checkpoint before this one, if this daemon knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Head>,
}

/// Writes checkpoints into one directory and remembers the last head it signed.
pub struct Writer {
    signer: Signer,
    dir: PathBuf,
    clock: Clock,
    last: Mutex<Option<Head>>,
}

impl Writer {
    /// Creates `dir` if needed; the newest checkpoint in it that this key signed counts as the
    /// last one (so a restart with nothing new takes no checkpoint).
    pub fn new(signer: Signer, dir: PathBuf, clock: Clock) -> Result<Writer, CheckpointError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| CheckpointError::Io(format!("cannot create {}: {e}", dir.display())))?;
        // Newest first, reading only as far as the first one this key signed for this log.
        let last = checkpoint_names(&dir)
            .map_err(CheckpointError::Io)?
            .iter()
            .rev()
            .find_map(|name| {
                read_named(&dir, name, &signer.public)
                    .ok()
                    .filter(|c| c.origin == signer.origin)
            })
            .map(|c| Head {
                seq: c.seq,
                hash: c.hash,
            });
        Ok(Writer {
            signer,
            dir,
            clock,
            last: Mutex::new(last),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key that verifies this writer's checkpoints.
    pub fn public(&self) -> &PublicKey {
        &self.signer.public
    }

    /// At start: whether the store still holds the newest checkpoint this key signed. When it
    /// does not (a restored backup, or a rewritten or cut tail), says why; that checkpoint then
    /// no longer counts as the previous one.
    pub fn check_store(&self, store: &Store) -> Result<(), String> {
        let Some(last) = self.last() else {
            return Ok(());
        };
        // A checkpoint of an archived record: the base (the last archived record) is checked
        // against it, or the archive holds it.
        let base = store
            .base()
            .map_err(|e| format!("cannot read the chain's base: {e}"))?;
        let hash = match base {
            Some(b) if last.seq < b.seq => return Ok(()),
            Some(b) if last.seq == b.seq => Some(b.hash),
            _ => match store.audit_records(last.seq, 1) {
                Ok(r) => r
                    .into_iter()
                    .next()
                    .filter(|r| r.body.seq == last.seq)
                    .map(|r| r.hash),
                Err(e) => return Err(format!("cannot read audit record {}: {e}", last.seq)),
            },
        };
        let found = hash.map(|h| (last.seq, h));
        let r = matches_store(&last, store.head().seq, found.as_ref());
        if r.is_err() {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        r
    }

    fn last(&self) -> Option<Head> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A checkpoint is due when the chain has grown since the last one.
    pub fn due(&self, head: &Head) -> bool {
        head.seq > 0 && self.last().as_ref() != Some(head)
    }

    /// The record announcing the next checkpoint.
    pub fn announcement(&self) -> Announcement {
        Announcement {
            origin: self.signer.origin.clone(),
            key: self.signer.public.fingerprint(),
            previous: self.last(),
        }
    }

    /// Signs `head` (which must be durable) and writes its file; returns the file's path.
    pub fn write(&self, head: &Head) -> Result<PathBuf, CheckpointError> {
        let cp = Checkpoint {
            origin: self.signer.origin.clone(),
            seq: head.seq,
            hash: head.hash.clone(),
            time: (self.clock)(),
        };
        let path = self.dir.join(cp.file_name());
        write_new(&self.dir, &cp.file_name(), self.signer.sign(&cp).as_bytes())
            .map_err(|e| CheckpointError::Io(format!("cannot write {}: {e}", path.display())))?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(head.clone());
        Ok(path)
    }

    /// The shutdown checkpoint's announcement, committed directly: only once the engine has
    /// stopped (no other writer is left). Returns the head to sign after the final flush, or
    /// `None` when the chain has not grown since the last checkpoint.
    pub async fn announce_final(&self, store: &Store) -> Result<Option<Head>, StoreError> {
        if !self.due(&store.head()) {
            return Ok(None);
        }
        let mut txn = store.begin();
        txn.audit(
            RECORD_KIND,
            Links::default(),
            (self.clock)(),
            self.announcement(),
        )?;
        Ok(Some(store.commit(txn).await?.head))
    }
}

/// Writes `name` in `dir` atomically without replacing an existing file: a temporary file,
/// synced, hard-linked into place, removed, and the directory synced.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, dir.join(name));
    let _ = std::fs::remove_file(&tmp);
    linked?;
    std::fs::File::open(dir)?.sync_all()
}

/// The periodic checkpoints: every `every`, if the chain has grown, the engine records the
/// announcement and the head it ends at is signed. Stops when `token` is cancelled (the
/// shutdown checkpoint is [`Writer::announce_final`] + [`Writer::write`]).
pub async fn run(
    writer: Arc<Writer>,
    store: Store,
    engine: EngineHandle,
    every: Duration,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !writer.due(&store.head()) {
            continue;
        }
        let head = match engine.checkpoint(writer.announcement()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "The audit checkpoint could not be recorded; the next interval tries again.");
                continue;
            }
        };
        let w = writer.clone();
        match tokio::task::spawn_blocking(move || w.write(&head)).await {
            Ok(Ok(path)) => {
                tracing::info!(file = %path.display(), "Audit checkpoint written.")
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "The audit checkpoint could not be written; the next interval tries again.")
            }
            Err(e) => {
                tracing::error!(error = %e, "The audit checkpoint writer stopped unexpectedly.")
            }
        }
    }
}

/// Signs `head` at `time` (an archive's end, `cordon audit archive`) and writes its file into
/// `dir` too, unless a checkpoint of that seq is there already; returns the signed text.
pub fn sign_into(
    signer: &Signer,
    dir: &Path,
    head: &Head,
    time: DateTime<Utc>,
) -> Result<String, CheckpointError> {
    let cp = Checkpoint {
        origin: signer.origin.clone(),
        seq: head.seq,
        hash: head.hash.clone(),
        time,
    };
    let text = signer.sign(&cp);
    std::fs::create_dir_all(dir)
        .map_err(|e| CheckpointError::Io(format!("cannot create {}: {e}", dir.display())))?;
    match write_new(dir, &cp.file_name(), text.as_bytes()) {
        Ok(()) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(text),
        Err(e) => Err(CheckpointError::Io(format!(
            "cannot write {}: {e}",
            dir.join(cp.file_name()).display()
        ))),
    }
}

/// The checkpoint files in `dir` (`*.checkpoint`), in seq order, each parsed and verified by
/// `key`, or what is wrong with it. A file named for another seq than it holds is malformed.
#[allow(clippy::type_complexity)]
pub fn read_dir(
    dir: &Path,
    key: &PublicKey,
) -> Result<Vec<(String, Result<Checkpoint, CheckpointError>)>, String> {
    Ok(checkpoint_names(dir)?
        .into_iter()
        .map(|name| {
            let r = read_named(dir, &name, key);
            (name, r)
        })
        .collect())
}

/// The names of the checkpoint files in `dir`, sorted (by seq); temporary files are skipped.
fn checkpoint_names(dir: &Path) -> Result<Vec<String>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && Path::new(&name).extension().is_some_and(|x| x == EXTENSION) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads and verifies checkpoint file `name`, which must be named for the seq it holds.
fn read_named(dir: &Path, name: &str, key: &PublicKey) -> Result<Checkpoint, CheckpointError> {
    let cp = read_one(&dir.join(name), key)?;
    if cp.file_name() == name {
        Ok(cp)
    } else {
        Err(CheckpointError::Malformed(format!(
            "it holds seq {}, its name should be {}",
            cp.seq,
            cp.file_name()
        )))
    }
}

fn read_one(path: &Path, key: &PublicKey) -> Result<Checkpoint, CheckpointError> {
    let f = std::fs::File::open(path).map_err(|e| CheckpointError::Io(e.to_string()))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE_BYTES + 1), &mut bytes)
        .map_err(|e| CheckpointError::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CheckpointError::Malformed("larger than 64 KiB".into()));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| CheckpointError::Malformed("not UTF-8 text".into()))?;
    Checkpoint::open(&text, key)
}

/// The seqs the checkpoints that verified pin (for [`crate::store::verify_pinned`]).
pub fn pinned_seqs<'a>(cps: impl IntoIterator<Item = &'a Checkpoint>) -> BTreeSet<u64> {
    cps.into_iter().map(|c| c.seq).collect()
}

/// Checks one verified checkpoint against a chain that verified with `records` records and
/// holds `hashes` (seq → hash) at the pinned seqs. `Err` says why the chain disagrees.
///
/// After an archive the chain kept starts after `base`: a checkpoint of the base must sign its
/// hash; one of an earlier record is the archive's to prove (`audit verify --archive`).
pub fn check(
    cp: &Checkpoint,
    records: u64,
    base: Option<&Head>,
    hashes: &BTreeMap<u64, String>,
) -> Result<(), String> {
    if let Some(b) = base
        && cp.seq <= b.seq
    {
        return if cp.seq < b.seq || cp.hash == b.hash {
            Ok(())
        } else {
            Err(format!(
                "it signs hash {} at seq {}, the archived base has {}: the chain was rewritten",
                cp.hash, cp.seq, b.hash
            ))
        };
    }
    if cp.seq > records {
        return Err(format!(
            "it signs seq {}, but the chain ends at seq {records}: records were removed from the tail",
            cp.seq
        ));
    }
    match hashes.get(&cp.seq) {
        Some(h) if *h == cp.hash => Ok(()),
        Some(h) => Err(format!(
            "it signs hash {} at seq {}, the chain has {h}: records up to {} were rewritten",
            cp.hash, cp.seq, cp.seq
        )),
        None => Err(format!("record {} was not read", cp.seq)),
    }
}

/// Whether a chain whose head is at `head_seq`, and which holds `found` (seq, hash) at the
/// checkpoint's seq if it has that record, still holds checkpoint `last`.
fn matches_store(last: &Head, head_seq: u64, found: Option<&(u64, String)>) -> Result<(), String> {
    if head_seq < last.seq {
        return Err(format!(
            "the audit chain ends at seq {head_seq}, before the newest checkpoint (seq {}): records were removed or an older copy was restored",
            last.seq
        ));
    }
    match found {
        Some((seq, hash)) if *seq == last.seq && *hash == last.hash => Ok(()),
        _ => Err(format!(
            "audit record {} is not the one the newest checkpoint signed: the chain was rewritten or replaced",
            last.seq
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> Signer {
        Signer::new(SigningKey::from_bytes(&[seed; 32]), "soc.example/cordon")
    }

    fn cp() -> Checkpoint {
        Checkpoint {
            origin: "soc.example/cordon".into(),
            seq: 42,
            hash: "ab".repeat(32),
            time: DateTime::parse_from_rfc3339("2026-12-05T05:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_public_key() {
        let s = signer(1);
        let file = s.sign(&cp());
        assert!(
            file.starts_with(&format!(
                "soc.example/cordon\n42\n{}\ntime 2026-12-05T05:00:00Z\n\n\u{2014} soc.example/cordon ",
                "ab".repeat(32)
            )),
            "{file}"
        );
        assert_eq!(Checkpoint::open(&file, s.public()), Ok(cp()));
        assert_eq!(cp().file_name(), "00000000000000000042.checkpoint");
    }

    /// The public key and the private key survive their PEM files, as openssl writes them.
    #[test]
    fn keys_round_trip_through_pem() {
        let s = Signer::generate("o").unwrap();
        let again = Signer::from_pem(&s.private_pem().unwrap(), "o").unwrap();
        assert_eq!(again.public(), s.public());
        let public = PublicKey::from_pem(&s.public().pem().unwrap()).unwrap();
        assert_eq!(&public, s.public());
        assert!(s.public().fingerprint().starts_with("sha256:"));
        assert!(!format!("{s:?}").contains(&s.private_pem().unwrap()[30..60]));
        // An openssl-generated key (`openssl genpkey -algorithm ed25519`), RFC 8410's example.
        let openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        assert!(Signer::from_pem(openssl, "o").is_ok());
    }

    #[test]
    fn a_changed_line_fails_the_signature() {
        let s = signer(1);
        let file = s.sign(&cp());
        for (from, to) in [
            ("\n42\n", "\n43\n"),
            (&"ab".repeat(32)[..], &"ac".repeat(32)[..]),
            ("05:00:00Z", "05:00:01Z"),
        ] {
            let tampered = file.replacen(from, to, 1);
            assert_ne!(tampered, file);
            assert!(
                matches!(
                    Checkpoint::open(&tampered, s.public()),
                    Err(CheckpointError::BadSignature(_))
                ),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn another_key_is_named() {
        let file = signer(1).sign(&cp());
        let err = Checkpoint::open(&file, signer(2).public()).unwrap_err();
        assert!(matches!(err, CheckpointError::OtherKey { .. }), "{err}");
        assert!(
            err.to_string().contains("not signed by this public key"),
            "{err}"
        );
        // Another key that claims this key's id still fails.
        let mut forged = signer(2).sign(&cp());
        let id = |f: &str| f.rsplit(' ').next().unwrap().trim().to_string();
        let (mine, theirs) = (id(&file), id(&forged));
        let mut blob = base64::engine::general_purpose::STANDARD
            .decode(&theirs)
            .unwrap();
        blob[..4].copy_from_slice(&signer(1).public().key_id("soc.example/cordon"));
        forged = forged.replace(
            &theirs,
            &base64::engine::general_purpose::STANDARD.encode(blob),
        );
        assert_ne!(id(&forged), mine);
        assert!(matches!(
            Checkpoint::open(&forged, signer(1).public()),
            Err(CheckpointError::BadSignature(_))
        ));
    }

    #[test]
    fn malformed_files_are_refused() {
        let s = signer(1);
        let good = s.sign(&cp());
        for (bad, says) in [
            ("", "no blank line"),
            ("soc.example/cordon\n42\n", "no blank line"),
            (&good.replacen("\n42\n", "\n042\n", 1)[..], "not a seq"),
            (&good.replacen("\n42\n", "\n0\n", 1)[..], "not a seq"),
            (&good.replacen("ab", "AB", 1)[..], "not a hash"),
            (&good.replacen("time ", "when ", 1)[..], "not `time"),
            (&good.replacen("\n\n", "\nextra\n\n", 1)[..], "has 5 lines"),
            (
                &good.replacen("\u{2014} ", "- ", 1)[..],
                "does not start with",
            ),
            (
                &good.replacen("soc.example/cordon\n", "soc example\n", 1)[..],
                "origin",
            ),
            (
                &format!("{}\n\n", cp().text().trim_end()),
                "no signature lines",
            ),
            (
                &good.replacen(
                    "\u{2014} soc.example/cordon ",
                    "\u{2014} soc.example/cordon !",
                    1,
                )[..],
                "not base64",
            ),
        ] {
            match Checkpoint::open(bad, s.public()) {
                Err(CheckpointError::Malformed(m)) => assert!(m.contains(says), "{says}: {m}"),
                r => panic!("{says}: {r:?}"),
            }
        }
    }

    #[test]
    fn a_chain_is_checked_against_a_checkpoint() {
        let c = cp();
        let hashes = BTreeMap::from([(42, c.hash.clone())]);
        assert_eq!(check(&c, 42, None, &hashes), Ok(()));
        assert_eq!(check(&c, 50, None, &hashes), Ok(()));
        let short = check(&c, 41, None, &BTreeMap::new()).unwrap_err();
        assert!(short.contains("chain ends at seq 41"), "{short}");
        let other = BTreeMap::from([(42, "cd".repeat(32))]);
        let rewritten = check(&c, 42, None, &other).unwrap_err();
        assert!(rewritten.contains("were rewritten"), "{rewritten}");
    }

    #[test]
    fn a_store_that_lost_or_changed_the_newest_checkpoint_is_told_apart() {
        let last = Head {
            seq: 7,
            hash: "ab".repeat(32),
        };
        assert_eq!(matches_store(&last, 9, Some(&(7, "ab".repeat(32)))), Ok(()));
        let behind = matches_store(&last, 6, None).unwrap_err();
        assert!(behind.contains("ends at seq 6, before"), "{behind}");
        let changed = matches_store(&last, 9, Some(&(7, "cd".repeat(32)))).unwrap_err();
        assert!(changed.contains("record 7 is not the one"), "{changed}");
    }

    /// Files are named by seq, never replaced, and only `*.checkpoint` files are read.
    #[test]
    fn writer_names_files_by_seq_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Clock = Arc::new(Utc::now);
        let w = Writer::new(signer(1), dir.path().join("cp"), clock.clone()).unwrap();
        let head = Head {
            seq: 7,
            hash: "ab".repeat(32),
        };
        assert!(w.due(&head));
        let path = w.write(&head).unwrap();
        assert!(!w.due(&head));
        assert_eq!(
            path.file_name().unwrap().to_str(),
            Some("00000000000000000007.checkpoint")
        );
        let other = Head {
            seq: 7,
            hash: "cd".repeat(32),
        };
        assert!(matches!(w.write(&other), Err(CheckpointError::Io(_))));
        std::fs::write(dir.path().join("cp/notes.txt"), "x").unwrap();
        let read = read_dir(&dir.path().join("cp"), signer(1).public()).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].1.as_ref().unwrap().hash, head.hash);
        // A new writer knows the last checkpoint.
        let again = Writer::new(signer(1), dir.path().join("cp"), clock).unwrap();
        assert!(!again.due(&head));
        assert_eq!(again.announcement().previous, Some(head));
    }
}
