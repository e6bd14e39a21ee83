//! zstd through one context per thread. A context made per call cost more than the work on
//! small buffers: each new zstd context asks the CPU for its features (`cpuid`, twice), and on
//! a virtual machine each `cpuid` traps to the hypervisor (4.7 µs each on the project's
//! machines, against about 0.1 µs on bare metal). sled's compression makes a context per log
//! message, which is why new databases leave sled's log plain ([`super::recover`]) and compress
//! their large values here instead.
use super::keys::{put_varint, DecodeError, Reader};
use std::cell::RefCell;

thread_local! {
    static COMPRESSOR: RefCell<zstd::block::Compressor> = RefCell::new(zstd::block::Compressor::new());
    static DECOMPRESSOR: RefCell<zstd::block::Decompressor> = RefCell::default();
}

/// `bytes` as one zstd frame at `level`.
pub fn compress(bytes: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| c.compress(bytes, level))
}

/// The plain bytes of the frame `z`, which must come to exactly `len` bytes.
pub fn decompress(z: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let plain = DECOMPRESSOR.with_borrow_mut(|d| d.decompress(z, len)).map_err(|e| format!("zstd: {e}"))?;
    if plain.len() != len {
        return Err(format!("{} bytes where {len} were expected", plain.len()));
    }
    Ok(plain)
}

/// `plain` stored as `tag | its length (varint) | its zstd frame` at `level`, where that is
/// shorter; `None` where it is not.
pub fn wrap(tag: u8, plain: &[u8], level: i32) -> Option<Vec<u8>> {
    let z = compress(plain, level).ok()?;
    let mut out = Vec::with_capacity(z.len() + 11);
    out.push(tag);
    put_varint(&mut out, plain.len() as u64);
    if out.len() + z.len() >= plain.len() {
        return None;
    }
    out.extend_from_slice(&z);
    Some(out)
}

/// The plain bytes of a value [`wrap`] stored (its tag checked by the caller), refused where
/// it claims more than `max` bytes (damage must not allocate without bound).
pub fn unwrap(stored: &[u8], max: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(stored.get(1..).unwrap_or_default(), what);
    let len = r.varint()? as usize;
    if len > max {
        return Err(r.err(&format!("claims {len} bytes, over {max}")));
    }
    decompress(&stored[1 + r.pos..], len).map_err(|e| r.err(&e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_round_trip_and_a_wrong_length_is_refused() {
        let plain: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        let z = super::compress(&plain, 3).unwrap();
        assert!(z.len() < plain.len() / 4, "{}", z.len());
        assert_eq!(super::decompress(&z, plain.len()).unwrap(), plain);
        assert!(super::decompress(&z, plain.len() - 1).is_err());
        assert!(super::decompress(&z, plain.len() + 1).is_err());
        assert!(super::decompress(&z[..z.len() / 2], plain.len()).is_err());

        let w = super::wrap(7, &plain, 3).unwrap();
        assert_eq!(w[0], 7);
        assert_eq!(super::unwrap(&w, plain.len(), "test").unwrap(), plain);
        assert!(super::unwrap(&w, plain.len() - 1, "test").is_err(), "over the bound");
        assert!(super::unwrap(&w[..w.len() - 1], plain.len(), "test").is_err());
        assert!(super::unwrap(&[7], 10, "test").is_err());
        assert_eq!(super::wrap(7, &[1, 2, 3], 3), None, "no shorter");
    }
}
