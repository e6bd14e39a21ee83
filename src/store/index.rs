//! Series index: (name, sorted labels) → series id, and label postings for matchers, in memory
//! with every string interned once. Persisted by the series catalog ([`super::catalog`]); the
//! index is rebuilt from it at start (series counts are bounded by `limits.max_series`, so it
//! fits).
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;

/// The label that carries the metric name in matchers.
pub const NAME_LABEL: &str = "__name__";

#[derive(Debug, Clone)]
pub struct SeriesMeta {
    pub id: u64,
    pub name: String,
    /// Sorted by label name; unique names.
    pub labels: Vec<(String, String)>,
    pub kind: i32,
}

impl SeriesMeta {
    pub fn label(&self, name: &str) -> Option<&str> {
        if name == NAME_LABEL {
            return Some(&self.name);
        }
        self.labels.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok().map(|i| self.labels[i].1.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Neq,
    Re,
    Nre,
}

/// A label matcher with Prometheus semantics: a missing label matches as the empty string;
/// regexes are anchored at both ends.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, regex::Error> {
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(Regex::new(&format!("^(?:{value})$"))?),
            _ => None,
        };
        Ok(Matcher { name: name.to_string(), op, value: value.to_string(), re })
    }

    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Neq => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::Nre => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// Fx-style hasher (a rotate, xor and multiply per word): the index and the heads are keyed by
/// u64 ids and hashed label sets on every series of every batch, where SipHash showed up as a
/// tenth of the committer's time. Keys are not attacker-chosen hash-flooding targets here: ids
/// are ours and label hashes are compared in full.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b) ^ (rest.len() as u64) << 56);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(FX_K);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
pub type FxSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// The check hash's key: random, one per process (so that hashes made on the handlers'
/// threads, [`series_hashes`], match those of every index).
fn check_key() -> &'static std::hash::RandomState {
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new)
}

/// Two independent hashes of (name, sorted labels): FxHash for the map, SipHash with this
/// process's random key as the check. A lookup whose both match takes the id without comparing
/// the strings (which would cost a cache miss per label on every series of every batch): a false
/// match needs 128 bits to collide, and the keyed half cannot be aimed at from outside.
pub fn series_hashes<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> (u64, u64) {
    key_hashes(check_key(), name, labels)
}

fn key_hashes<'a>(
    check: &std::hash::RandomState,
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> (u64, u64) {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = FxHasher::default();
    let mut c = check.build_hasher();
    name.hash(&mut h);
    name.hash(&mut c);
    for (k, v) in labels {
        k.hash(&mut h);
        v.hash(&mut h);
        k.hash(&mut c);
        v.hash(&mut c);
    }
    (h.finish(), c.finish())
}

/// In [`Index::by_hash`], the id that marks a hash that more than one series has (see
/// [`Index::shared`]). No series is given id 0; one with it is kept in `shared`.
const SHARED: u64 = 0;

/// The index's strings (metric names, label names and values), each held once: series share
/// most of theirs, and a `String` per label costs a heap block of at least 32 bytes besides
/// its 24 (100,000 series of three labels held 38 MB of them).
#[derive(Default)]
struct Strings {
    all: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32, std::hash::BuildHasherDefault<FxHasher>>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let a: Arc<str> = s.into();
        let i = u32::try_from(self.all.len()).expect("fewer than 2^32 distinct strings");
        self.all.push(a.clone());
        self.ids.insert(a, i);
        i
    }

    fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn get(&self, i: u32) -> &str {
        &self.all[i as usize]
    }
}

/// A series as the index holds it: its strings interned, its labels in [`Pairs`]. 16 bytes.
struct Stored {
    name: u32,
    kind: i32,
    labels: Span,
}

/// Where a series' label pairs are in [`Pairs`]; `len` [`u16::MAX`]: the whole page.
#[derive(Clone, Copy)]
struct Span {
    page: u32,
    at: u16,
    len: u16,
}

/// Pairs per page of [`Pairs`].
const PAGE: usize = 1 << 16;

/// Every series' (name, value) label pairs, interned and sorted by name as
/// [`SeriesMeta::labels`], one series after another in pages of [`PAGE`] pairs (512 KiB):
/// a boxed slice per series cost a heap block of 32 bytes or more besides the 16 of its
/// pointer. A series never spans two pages; one with [`u16::MAX`] labels or more (far past any
/// sensible `limits.max_labels`) has a page of its own.
#[derive(Default)]
struct Pairs {
    pages: Vec<Vec<(u32, u32)>>,
}

impl Pairs {
    fn push(&mut self, labels: &[(u32, u32)]) -> Span {
        let n = labels.len();
        if n >= usize::from(u16::MAX) {
            self.pages.push(labels.to_vec());
            return Span { page: self.page_number(), at: 0, len: u16::MAX };
        }
        if self.pages.last().is_none_or(|p| p.len() + n > PAGE) {
            self.pages.push(Vec::new());
        }
        let page = self.pages.last_mut().expect("pushed above");
        if page.len() + n > page.capacity() {
            // Powers of two up to PAGE: amortized, and never past a page.
            let want = (page.len() + n).next_power_of_two().clamp(64, PAGE);
            page.reserve_exact(want - page.len());
        }
        let at = u16::try_from(page.len()).expect("below PAGE");
        page.extend_from_slice(labels);
        Span { page: self.page_number(), at, len: n as u16 }
    }

    fn page_number(&self) -> u32 {
        u32::try_from(self.pages.len() - 1).expect("fewer than 2^32 pages")
    }

    fn get(&self, s: Span) -> &[(u32, u32)] {
        let page = &self.pages[s.page as usize];
        match s.len {
            u16::MAX => page,
            len => &page[usize::from(s.at)..usize::from(s.at) + usize::from(len)],
        }
    }
}

/// The index takes about 150 bytes a series (100,000 series of three labels, two of them
/// shared: 15 MB), most of it in the two maps by id and by hash; both keep their values flat
/// (24 bytes a bucket) and postings hold 32-bit ids.
#[derive(Default)]
pub struct Index {
    /// Map hash of (name, sorted labels) → (id, check hash) of the series with it; id
    /// [`SHARED`] when several series have the hash (then they are in `shared`).
    by_hash: FxMap<u64, (u64, u64)>,
    /// (id, check hash) of the series whose map hash others have too: rare (64 bits collide).
    shared: FxMap<u64, Vec<(u64, u64)>>,
    series: FxMap<u64, Stored>,
    pairs: Pairs,
    strings: Strings,
    /// Label name → label value → ids (the name under [`NAME_LABEL`]): 32-bit, so half the
    /// bytes. Ids are given out one by one and never taken back, so a daemon would need more
    /// than 2^32 series in memory to pass them; a series whose id does not fit is in `wide`.
    postings: FxMap<u32, FxMap<u32, Vec<u32>>>,
    /// Series with ids past `u32::MAX`: in no posting list, and so a candidate of every
    /// selection (which checks each candidate against every matcher).
    wide: Vec<u64>,
    /// Series per `service` label value (the empty string for none).
    per_service: FxMap<u32, usize>,
    next_id: u64,
}

impl Index {
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The id of the series with this name and these labels (sorted by name).
    pub fn lookup(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.lookup_hashed(series_hashes(name, labels.iter().copied()))
    }

    /// The id of the series with these [`series_hashes`].
    pub fn lookup_hashed(&self, (h, c): (u64, u64)) -> Option<u64> {
        match *self.by_hash.get(&h)? {
            (SHARED, _) => self.shared.get(&h)?.iter().find(|(_, check)| *check == c).map(|(id, _)| *id),
            (id, check) => (check == c).then_some(id),
        }
    }

    pub fn service_count(&self, service: &str) -> usize {
        self.strings.id(service).and_then(|s| self.per_service.get(&s)).copied().unwrap_or(0)
    }

    /// Adds a series; `labels` sorted by name, unique names.
    pub fn insert(&mut self, id: u64, name: &str, labels: &[(String, String)], kind: i32) {
        self.next_id = self.next_id.max(id);
        let (h, c) = series_hashes(name, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Vacant(e) if id != SHARED => {
                e.insert((id, c));
            }
            // A hash taken, or an id 0 (none is given out; one from elsewhere still works).
            entry => {
                let slot = entry.or_insert((SHARED, 0));
                let shared = self.shared.entry(h).or_default();
                if slot.0 != SHARED {
                    shared.push(*slot);
                    *slot = (SHARED, 0);
                }
                shared.push((id, c));
            }
        }
        let name = self.strings.intern(name);
        let labels: Vec<(u32, u32)> =
            labels.iter().map(|(k, v)| (self.strings.intern(k), self.strings.intern(v))).collect();
        let service_key = self.strings.intern("service");
        let service = labels.iter().find(|(k, _)| *k == service_key).map(|(_, v)| *v);
        let service = service.unwrap_or_else(|| self.strings.intern(""));
        *self.per_service.entry(service).or_default() += 1;
        let name_key = self.strings.intern(NAME_LABEL);
        match u32::try_from(id) {
            Ok(narrow) => {
                for (k, v) in std::iter::once((name_key, name)).chain(labels.iter().copied()) {
                    self.postings.entry(k).or_default().entry(v).or_default().push(narrow);
                }
            }
            Err(_) => self.wide.push(id),
        }
        let labels = self.pairs.push(&labels);
        self.series.insert(id, Stored { name, kind, labels });
    }

    pub fn contains(&self, id: u64) -> bool {
        self.series.contains_key(&id)
    }

    /// The series' name and labels.
    pub fn get(&self, id: u64) -> Option<SeriesMeta> {
        let s = self.series.get(&id)?;
        let st = |i: u32| self.strings.get(i).to_string();
        Some(SeriesMeta {
            id,
            name: st(s.name),
            labels: self.pairs.get(s.labels).iter().map(|&(k, v)| (st(k), st(v))).collect(),
            kind: s.kind,
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.series.keys().copied()
    }

    /// The value of label `key` (an interned name; `None`: no series has it) of `s`, or "".
    fn value_of(&self, s: &Stored, key: Option<u32>, name_key: Option<u32>) -> &str {
        match key {
            Some(k) if Some(k) == name_key => self.strings.get(s.name),
            Some(k) => {
                self.pairs.get(s.labels).iter().find(|(lk, _)| *lk == k).map_or("", |(_, v)| self.strings.get(*v))
            }
            None => "",
        }
    }

    /// Ids of the series every matcher accepts, ascending.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<u64> {
        // Start from the smallest posting list a matcher pins down (an `=` on a non-empty value,
        // or a regex over one label's values that cannot match ""), then check every matcher.
        let mut best: Option<Vec<u64>> = None;
        for m in matchers {
            if m.matches("") {
                continue;
            }
            let values = self.strings.id(&m.name).and_then(|k| self.postings.get(&k));
            if values.is_none() && self.wide.is_empty() {
                return Vec::new();
            }
            let narrow: Vec<u32> = match (values, m.op) {
                (None, _) => Vec::new(),
                (Some(values), MatchOp::Eq) => {
                    self.strings.id(&m.value).and_then(|v| values.get(&v)).cloned().unwrap_or_default()
                }
                (Some(values), _) => values
                    .iter()
                    .filter(|(v, _)| m.matches(self.strings.get(**v)))
                    .flat_map(|(_, ids)| ids.iter().copied())
                    .collect(),
            };
            let ids: Vec<u64> = narrow.into_iter().map(u64::from).chain(self.wide.iter().copied()).collect();
            if best.as_ref().is_none_or(|b| ids.len() < b.len()) {
                best = Some(ids);
            }
        }
        let candidates: Vec<u64> = best.unwrap_or_else(|| self.series.keys().copied().collect());
        let keys: Vec<Option<u32>> = matchers.iter().map(|m| self.strings.id(&m.name)).collect();
        let name_key = self.strings.id(NAME_LABEL);
        let mut out: Vec<u64> = candidates
            .into_iter()
            .filter(|id| {
                self.series
                    .get(id)
                    .is_some_and(|s| matchers.iter().zip(&keys).all(|(m, k)| m.matches(self.value_of(s, *k, name_key))))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(ix: &mut Index, id: u64, name: &str, labels: &[(&str, &str)]) {
        let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.sort();
        ix.insert(id, name, &labels, 1);
        let got = ix.get(id).unwrap();
        assert_eq!((got.id, got.name.as_str(), &got.labels, got.kind), (id, name, &labels, 1));
    }

    #[test]
    fn matchers_follow_prometheus_semantics() {
        let mut ix = Index::default();
        add(&mut ix, 1, "gpu_util", &[("gpu", "0"), ("host", "a")]);
        add(&mut ix, 2, "gpu_util", &[("gpu", "1"), ("host", "a")]);
        add(&mut ix, 3, "gpu_util", &[("gpu", "10")]);
        add(&mut ix, 4, "latency", &[("model", "m1"), ("host", "b")]);
        let sel = |ms: &[(&str, MatchOp, &str)]| {
            let ms: Vec<Matcher> = ms.iter().map(|(n, o, v)| Matcher::new(n, *o, v).unwrap()).collect();
            ix.select(&ms)
        };
        assert_eq!(sel(&[(NAME_LABEL, MatchOp::Eq, "gpu_util")]), vec![1, 2, 3]);
        assert_eq!(sel(&[(NAME_LABEL, MatchOp::Eq, "gpu_util"), ("gpu", MatchOp::Re, "1.*")]), vec![2, 3]);
        assert_eq!(sel(&[(NAME_LABEL, MatchOp::Eq, "gpu_util"), ("gpu", MatchOp::Nre, "1")]), vec![1, 3]);
        assert_eq!(sel(&[("host", MatchOp::Neq, "a")]), vec![3, 4]);
        // a missing label equals ""
        assert_eq!(sel(&[("host", MatchOp::Eq, "")]), vec![3]);
        assert_eq!(sel(&[("gpu", MatchOp::Re, "1")]), vec![2]);
        assert_eq!(sel(&[("nope", MatchOp::Eq, "x")]), Vec::<u64>::new());
        assert_eq!(sel(&[]), vec![1, 2, 3, 4]);
        assert_eq!(ix.lookup("gpu_util", &[("gpu", "10")]), Some(3));
        assert_eq!(ix.lookup("gpu_util", &[("gpu", "1")]), None);
        assert_eq!(ix.lookup("gpu_util", &[("gpu", "0"), ("host", "a")]), Some(1));
        assert_eq!(ix.service_count(""), 4);
    }

    #[test]
    fn label_pairs_fill_pages_and_a_huge_series_takes_a_page_of_its_own() {
        let mut p = Pairs::default();
        let labels = |i: u32, n: u32| (0..n).map(|k| (k, i * 7 + k)).collect::<Vec<_>>();
        let mut spans: Vec<(u32, u32, Span)> = Vec::new();
        for i in 0..50_000 {
            spans.push((i, 3, p.push(&labels(i, 3))));
            if i == 30_000 {
                spans.push((i, 70_000, p.push(&labels(i, 70_000))));
            }
        }
        spans.push((1, 0, p.push(&[])));
        for &(i, n, s) in &spans {
            assert_eq!(p.get(s), &labels(i, n)[..]);
        }
        assert_eq!(p.pages.len(), 4, "two pages before the huge series, its own, one after");
        assert!(p.pages.iter().all(|page| page.len() == 70_000 || page.capacity() <= PAGE));
    }

    #[test]
    fn series_that_share_a_map_hash_are_told_apart_by_their_check_hash() {
        let mut ix = Index::default();
        add(&mut ix, 1, "a", &[("x", "1")]);
        // Make b's map hash collide with a's: a's bucket moves to b's hash first.
        let (ha, ca) = series_hashes("a", [("x", "1")].into_iter());
        let (hb, cb) = series_hashes("b", [("x", "2")].into_iter());
        let slot = ix.by_hash.remove(&ha).unwrap();
        ix.by_hash.insert(hb, slot);
        add(&mut ix, 2, "b", &[("x", "2")]);
        assert_eq!(ix.by_hash[&hb].0, SHARED);
        assert_eq!(ix.lookup_hashed((hb, cb)), Some(2));
        assert_eq!(ix.lookup_hashed((hb, ca)), Some(1));
        assert_eq!(ix.lookup_hashed((hb, ca ^ 1)), None);
        assert_eq!(ix.lookup("b", &[("x", "2")]), Some(2));
        // Id 0, the marker's value, is found all the same.
        add(&mut ix, 0, "c", &[]);
        assert_eq!(ix.lookup("c", &[]), Some(0));
        assert_eq!(ix.lookup("b", &[("x", "2")]), Some(2));
    }

    #[test]
    fn series_with_ids_past_32_bits_are_selected_too() {
        let mut ix = Index::default();
        let big = (1u64 << 32) + 5;
        add(&mut ix, 1, "gpu_util", &[("gpu", "0")]);
        add(&mut ix, big, "gpu_util", &[("gpu", "1"), ("only", "here")]);
        let sel = |ms: &[(&str, MatchOp, &str)]| {
            let ms: Vec<Matcher> = ms.iter().map(|(n, o, v)| Matcher::new(n, *o, v).unwrap()).collect();
            ix.select(&ms)
        };
        assert_eq!(sel(&[(NAME_LABEL, MatchOp::Eq, "gpu_util")]), vec![1, big]);
        assert_eq!(sel(&[("gpu", MatchOp::Eq, "1")]), vec![big]);
        assert_eq!(sel(&[("gpu", MatchOp::Re, "0|1")]), vec![1, big]);
        assert_eq!(sel(&[("gpu", MatchOp::Eq, "0")]), vec![1]);
        assert_eq!(sel(&[("only", MatchOp::Eq, "here")]), vec![big]);
        assert_eq!(sel(&[("only", MatchOp::Eq, "there")]), Vec::<u64>::new());
        assert_eq!(ix.lookup("gpu_util", &[("gpu", "1"), ("only", "here")]), Some(big));
        assert_eq!(ix.next_id(), big + 1);
    }
}
