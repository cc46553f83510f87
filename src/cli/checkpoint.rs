//! `cordon audit verify --checkpoints` and `cordon audit keygen`: signed checkpoints from the
//! command line.
//!
//! Owns: checking every checkpoint file against the public key and the chain it pins, and
//! writing a new signing key (private and public halves).

use std::path::Path;

use super::*;

/// `audit verify --checkpoints DIR --public-key FILE`: the chain check, then every checkpoint
/// must verify with the key and match the chain (its seq present, with the hash it signed).
pub(super) fn verify_checkpoints(data_dir: &Path, dir: &Path, key: &Path) -> i32 {
    use crate::checkpoint::{self, PublicKey};
    let key = match PublicKey::read(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cannot verify: {e}");
            return 1;
        }
    };
    let files = match checkpoint::read_dir(dir, &key) {
        Ok(f) if f.is_empty() => {
            eprintln!(
                "cannot verify: no checkpoints (*.checkpoint) in {}",
                dir.display()
            );
            return 1;
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot verify: {e}");
            return 1;
        }
    };
    let seqs = checkpoint::pinned_seqs(files.iter().filter_map(|(_, r)| r.as_ref().ok()));
    let (report, hashes) = match crate::store::verify_pinned(data_dir, &seqs)
        .map_err(|e| verify_in_use(data_dir, e))
    {
        Ok(r) => r,
        Err(e) => return verify_failed(data_dir, &e),
    };
    let mut failed = 0;
    for (name, r) in &files {
        let problem = match r {
            Ok(cp) => checkpoint::check(cp, report.head.seq, report.base.as_ref(), &hashes).err(),
            Err(e) => Some(e.to_string()),
        };
        if let Some(p) = problem {
            failed += 1;
            eprintln!("checkpoint {}: {p}", dir.join(name).display());
        }
    }
    if failed > 0 {
        eprintln!(
            "audit chain in data directory {} does not match its checkpoints: {failed} of {} failed",
            data_dir.display(),
            files.len()
        );
        return 1;
    }
    println!(
        "ok: {} audit records, chain head {} at seq {}; {} checkpoint(s) verified, the newest at seq {}",
        report.records,
        report.head.hash,
        report.head.seq,
        files.len(),
        seqs.last().copied().unwrap_or(0)
    );
    0
}

/// `audit keygen`: a new checkpoint signing key.
pub(super) fn keygen(out: &Path, public_out: Option<&Path>) -> i32 {
    use std::io::Write;
    let signer = match crate::checkpoint::Signer::generate("cordon") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot create a key: {e}");
            return 1;
        }
    };
    let (private, public) = match (signer.private_pem(), signer.public().pem()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot encode the key: {e}");
            return 1;
        }
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts
        .open(out)
        .and_then(|mut f| f.write_all(private.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        eprintln!("cannot write the private key to {}: {e}", out.display());
        return 1;
    }
    match public_out {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &public) {
                eprintln!("cannot write the public key to {}: {e}", p.display());
                return 1;
            }
        }
        None => print!("{public}"),
    }
    eprintln!(
        "wrote the private key to {}; public key fingerprint {}",
        out.display(),
        signer.public().fingerprint()
    );
    0
}
