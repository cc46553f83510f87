//! How a value is laid out in sled: as written, or packed into one zstd frame.
//!
//! Owns the choice of which values are packed, the dictionaries they are packed with, and the
//! bounded unpacking of what is read back. Audit chunks and the engine's records are JSON with
//! the same field names over and over; one zstd frame per value keeps a store about a third of
//! its size. It is done per value, once, on the thread that writes the commit (not per sled page,
//! as sled's own `compression` does on every page rewrite), so it costs little CPU, and every
//! reader sees the bytes as written: what the audit chain hashes is the record as written, never
//! its packed form.
//!
//! A packed value is `c1`, the dictionary's version, then a zstd frame (level [`LEVEL`], with
//! its content size and a checksum, so a damaged frame is refused instead of unpacking to other
//! bytes) compressed with that dictionary. A dictionary is raw content: the skeletons of
//! cordon's own records (field names, its enum words, no values), so a short record such as an
//! action (~1.5 KiB) does not spend its frame spelling out field names. A dictionary is never
//! changed once released (a test pins its hash): a new one gets the next version, and every
//! version stays readable.
//!
//! The two forms cannot be confused: `c1` never occurs in UTF-8, and every value earlier builds
//! wrote is UTF-8 (JSON, audit chunks, ids); a value to store that starts with `c1` is always
//! packed. Values written before format version 4 are never packed and read unchanged.

use std::borrow::Cow;
use std::cell::RefCell;

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

/// First byte of a packed value (not UTF-8 anywhere in a string).
const PACKED: u8 = 0xc1;

/// The dictionary values are packed with now, and its version byte.
const DICTIONARY_VERSION: u8 = 1;

/// Dictionary version 1. Frozen: see the module doc.
const DICTIONARY_V1: &[u8] = include_bytes!("codec-dictionary-v1.jsonl");

/// Values shorter than this are stored as they are (a frame's header and checksum would eat
/// most of what short JSON saves).
pub(crate) const PACK_AT: usize = 128;

/// zstd level: the fastest. The level barely moves the size of these records (levels 1 to 6
/// differ by ~2 %); the dictionary and the chunk size do.
const LEVEL: i32 = 1;

/// The largest value unpacked: a frame declaring more is refused as damaged instead of being
/// allocated (what the daemon writes is bounded by its request limits, far below this).
pub(crate) const MAX_UNPACKED: u64 = 64 << 20;

thread_local! {
    static COMPRESSOR: RefCell<Option<CCtx<'static>>> = RefCell::new(compressor());
    static DECOMPRESSOR: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// A compression context at [`LEVEL`] with the current dictionary loaded, whose frames carry
/// their size and a checksum; `None` if zstd refused a setting (values are then stored as
/// they are).
fn compressor() -> Option<CCtx<'static>> {
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(LEVEL)).ok()?;
    c.set_parameter(CParameter::ChecksumFlag(true)).ok()?;
    c.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
    c.load_dictionary(DICTIONARY_V1).ok()?;
    Some(c)
}

fn dictionary(version: u8) -> Option<&'static [u8]> {
    match version {
        1 => Some(DICTIONARY_V1),
        _ => None,
    }
}

/// The bytes to store for `v`: packed when `v` is long enough and packing makes it smaller,
/// else `v` itself. A `v` that itself starts like a packed value is always packed, so every
/// byte string reads back as written.
pub(crate) fn pack(v: &[u8]) -> Cow<'_, [u8]> {
    let must = is_packed(v);
    if v.len() < PACK_AT && !must {
        return Cow::Borrowed(v);
    }
    let mut p = Vec::with_capacity(2 + zstd_safe::compress_bound(v.len()));
    p.extend_from_slice(&[PACKED, DICTIONARY_VERSION]);
    let mut frame = Vec::with_capacity(zstd_safe::compress_bound(v.len()));
    let packed = COMPRESSOR.with(|c| match c.borrow_mut().as_mut() {
        Some(c) => c.compress2(&mut frame, v).is_ok(),
        None => false,
    });
    let sized = zstd_safe::get_frame_content_size(&frame) == v.len() as u64;
    if packed && sized && (must || 2 + frame.len() < v.len()) {
        p.extend_from_slice(&frame);
        return Cow::Owned(p);
    }
    if must {
        // Only a value that is not UTF-8 can get here, and only if zstd failed on a buffer of
        // its own bound: stored as a frame of one raw block instead, which needs no zstd call.
        return Cow::Owned(raw_frame(v));
    }
    Cow::Borrowed(v)
}

/// `v` as a packed value holding a zstd frame of raw blocks (no compression, no dictionary use),
/// which `unpack` reads like any other.
fn raw_frame(v: &[u8]) -> Vec<u8> {
    const BLOCK_MAX: usize = 128 << 10;
    let mut out = vec![PACKED, DICTIONARY_VERSION, 0x28, 0xb5, 0x2f, 0xfd];
    // Frame header descriptor: 8-byte content size, single segment, no checksum, no dict id.
    out.push(0xe0);
    out.extend_from_slice(&(v.len() as u64).to_le_bytes());
    let mut blocks = v.chunks(BLOCK_MAX).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]); // one empty last raw block
    }
    while let Some(b) = blocks.next() {
        let last = blocks.peek().is_none() as u32;
        let header = last | ((b.len() as u32) << 3); // block type 0 = raw
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(b);
    }
    out
}

/// Whether a stored value is packed.
pub(crate) fn is_packed(stored: &[u8]) -> bool {
    stored.first() == Some(&PACKED)
}

/// The value `stored` holds: unpacked when it is packed, else `stored` itself. A packed value
/// with an unknown dictionary, a frame that does not declare its size or declares more than
/// [`MAX_UNPACKED`], a damaged frame or one that does not decode to exactly its size is refused
/// with what is wrong with it.
pub(crate) fn unpack(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    if !is_packed(stored) {
        return Ok(Cow::Borrowed(stored));
    }
    let Some(&version) = stored.get(1) else {
        return Err("a packed value is cut short".into());
    };
    let dict = dictionary(version)
        .ok_or_else(|| format!("a packed value names dictionary {version}, which this build does not have (written by a newer cordon?)"))?;
    let frame = &stored[2..];
    let size = zstd_safe::get_frame_content_size(frame);
    // zstd's "unknown" and "error" answers are the two largest u64 values.
    if size > MAX_UNPACKED {
        return Err(if size >= u64::MAX - 1 {
            "a packed value without a readable size".into()
        } else {
            format!("a packed value declares {size} bytes, more than the {MAX_UNPACKED} read")
        });
    }
    let mut out = Vec::with_capacity(size as usize);
    DECOMPRESSOR
        .with(|d| d.borrow_mut().decompress_using_dict(&mut out, frame, dict))
        .map_err(|code| {
            format!(
                "a packed value does not unpack: {}",
                zstd_safe::get_error_name(code)
            )
        })?;
    if out.len() as u64 != size {
        return Err(format!(
            "a packed value unpacks to {} bytes, not the {size} it declares",
            out.len()
        ));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_released_dictionary_never_changes() {
        // Every store packed with version 1 needs these exact bytes to be read.
        assert_eq!(
            hex::encode(Sha256::digest(DICTIONARY_V1)),
            "d21add99dc2a5c4f34fcc1e30591beef3984569feac1b74f38c5e6c2663a3fb8"
        );
    }

    #[test]
    fn a_short_value_is_stored_as_it_is_and_a_long_one_packed() {
        let short = br#"{"id":"x"}"#;
        assert!(matches!(pack(short), Cow::Borrowed(_)));
        let long = serde_json::to_vec(&serde_json::json!({
            "records": (0..40).map(|i| serde_json::json!({"kind": "policy_decision", "seq": i}))
                .collect::<Vec<_>>()
        }))
        .unwrap();
        let packed = pack(&long);
        assert!(is_packed(&packed));
        assert!(
            packed.len() * 3 < long.len(),
            "{} of {}",
            packed.len(),
            long.len()
        );
        assert_eq!(unpack(&packed).unwrap(), &long[..]);
    }

    #[test]
    fn the_dictionary_packs_a_short_record_smaller_than_zstd_alone() {
        let action = br#"{"action_id":"01M933K8CRWPVCQQZRHBFF415Z","case_id":"01M933K8CRWPVCQQZRHBFF415Y","alert_id":"01M933K8CRWPVCQQZRHBFF415X","playbook":"phishing","step":"block_sender","kind":"block_ioc","connector":"crowdstrike","target":{"kind":"indicator","id":"evil.example"},"parameters":{},"on_failure":"escalate","state":"approved","tier":"auto","determining_policies":["auto-block"],"reasons":["known bad"],"idempotency_key":"4c0225c24275c7efecc346a9ee519a24a21d106ea9b8a8eb48e1f073cda50df7","created_at":"2026-12-05T12:41:51.768670191Z","updated_at":"2026-12-05T12:41:51.768670191Z","requester":"playbook:phishing"}"#;
        let alone = zstd::block::compress(action, LEVEL).unwrap();
        let packed = pack(action);
        assert!(
            packed.len() + 100 < alone.len(),
            "with the dictionary {} bytes, without {}",
            packed.len(),
            alone.len()
        );
        assert_eq!(unpack(&packed).unwrap(), &action[..]);
    }

    #[test]
    fn what_earlier_builds_wrote_is_never_taken_for_a_packed_value() {
        for v in [
            &b"{}"[..],
            b"[1]",
            b"\"s\"",
            b"12",
            b"true",
            b"null",
            b"ab12\n{}",
            b"(x",
        ] {
            assert_eq!(unpack(v).unwrap(), v);
        }
    }

    #[test]
    fn a_damaged_oversized_or_unknown_packed_value_is_refused() {
        let long = vec![b'a'; 10_000];
        let packed = pack(&long).into_owned();
        for i in [2, packed.len() / 2, packed.len() - 1] {
            let mut bad = packed.clone();
            bad[i] ^= 0x55;
            assert!(unpack(&bad).is_err(), "byte {i} changed");
        }
        let mut cut = packed.clone();
        cut.truncate(packed.len() - 3);
        assert!(unpack(&cut).is_err());
        // A frame header declaring 2^40 bytes (single segment, 8-byte size field).
        let mut huge = vec![PACKED, 1, 0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let e = unpack(&huge).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        let mut newer = packed.clone();
        newer[1] = 9;
        assert!(unpack(&newer).unwrap_err().contains("dictionary 9"));
        assert!(unpack(&[PACKED]).is_err());
    }

    #[test]
    fn a_raw_frame_unpacks_to_its_value() {
        for v in [vec![], vec![PACKED, 1, 2], vec![7u8; 300_000]] {
            assert_eq!(unpack(&raw_frame(&v)).unwrap(), &v[..]);
        }
    }

    proptest! {
        #[test]
        fn whatever_is_packed_unpacks_to_itself(v in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let stored = pack(&v);
            prop_assert_eq!(unpack(&stored).unwrap(), &v[..]);
        }

        #[test]
        fn a_value_starting_like_a_packed_one_reads_back_as_written(
            mut v in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            v.insert(0, PACKED);
            let stored = pack(&v);
            prop_assert_eq!(unpack(&stored).unwrap(), &v[..]);
        }

        #[test]
        fn unpacking_arbitrary_bytes_never_panics(mut v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut framed = vec![PACKED, 1, 0x28, 0xb5, 0x2f, 0xfd];
            framed.append(&mut v);
            let _ = unpack(&framed);
        }
    }
}
