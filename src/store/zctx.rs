//! zstd through one context per thread. A context made per call cost more than the work on
//! small buffers: each new zstd context asks the CPU for its features (`cpuid`, twice), and on
//! a virtual machine each `cpuid` traps to the hypervisor (4.7 µs each on the project's
//! machines, against about 0.1 µs on bare metal). sled's compression makes a context per log
//! message, which is why new databases leave sled's log plain ([`super::recover`]) and compress
//! their large values here instead.
use super::keys::{put_varint, DecodeError, Reader};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

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

/// What [`plain`] keeps at most, in bytes (plain and stored forms counted); past it, it
/// starts again empty. A day's packs of four groups of busy buckets come to about 25 MB.
const CACHE_BYTES: usize = 48 << 20;

#[derive(Default)]
struct Cache {
    /// By the stored form's crc32: (stored form, plain form), compared whole on a hit.
    map: HashMap<u32, Vec<(sled::IVec, sled::IVec)>>,
    bytes: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The plain form of a value [`wrap`] stored, through a cache of the values read lately. sled
/// caches the stored (compressed) values, and queries read the same aggregate packs again and
/// again: without it, a day's latency quantiles took 5 times as long (each read decompressing
/// about 25 MB of parts). The cache is keyed by content, so a value rewritten is a new entry and
/// never a stale one.
pub fn plain(stored: &sled::IVec, max: usize, what: &'static str) -> Result<sled::IVec, DecodeError> {
    let h = crc32fast::hash(stored);
    {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.as_ref().and_then(|c| c.map.get(&h)).and_then(|v| v.iter().find(|(s, _)| s == stored));
        if let Some((_, p)) = hit {
            return Ok(p.clone());
        }
    }
    let p: sled::IVec = unwrap(stored, max, what)?.into();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let c = cache.get_or_insert_with(Cache::default);
    let cost = p.len() + stored.len();
    if c.bytes + cost > CACHE_BYTES {
        *c = Cache::default();
    }
    let same = c.map.entry(h).or_default();
    if !same.iter().any(|(s, _)| s == stored) {
        same.push((stored.clone(), p.clone()));
        c.bytes += cost;
    }
    Ok(p)
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

    #[test]
    fn the_cache_answers_by_content() {
        let a: Vec<u8> = (0..5_000u32).flat_map(|i| (i % 13).to_le_bytes()).collect();
        let b: Vec<u8> = (0..5_000u32).flat_map(|i| (i % 17).to_le_bytes()).collect();
        let (wa, wb) = (super::wrap(9, &a, 3).unwrap(), super::wrap(9, &b, 3).unwrap());
        for _ in 0..2 {
            assert_eq!(&super::plain(&wa.clone().into(), a.len(), "test").unwrap()[..], &a[..]);
            assert_eq!(&super::plain(&wb.clone().into(), b.len(), "test").unwrap()[..], &b[..]);
        }
        let cut = wa[..wa.len() - 1].to_vec();
        assert!(super::plain(&cut.into(), a.len(), "test").is_err(), "damage is not hidden by the cache");
    }
}
