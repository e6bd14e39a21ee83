//! A metric batch as the handlers and the committer hold it: every name, label name and label
//! value in one text buffer (a string equal to the one at the same place in the series before
//! is stored once), the series and labels as spans into it, and the samples of all series in
//! two arrays.
//!
//! prost's form of the same batch costs about 580 bytes and eight allocations for a series of
//! one sample (ten times its wire size): four services sending 25,000 series each at once held
//! 58 MB, most of a daemon's resident memory at 100,000 series. This form costs about 100 bytes
//! a series and five allocations a batch. It reads and writes the `MetricBatch` protobuf
//! itself ([`prost::Message`]), so the gRPC handler decodes into it directly and the WAL record
//! is the same protobuf as before, read by either form.
use crate::pb;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;
use std::ops::Range;

/// A range of `text`, `labels`, `ts` or `vals`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.at as usize..self.at as usize + self.len as usize
    }
}

/// One series: its name, labels (a range of `labels`), kind and samples.
#[derive(Clone, Copy, Debug, Default)]
struct Rec {
    name: Span,
    labels: Span,
    kind: i32,
    ts: Span,
    vals: Span,
}

#[derive(Clone, Debug, Default)]
pub struct SeriesBatch {
    client_id: String,
    seq: u64,
    /// Added as label `service` to a series that has none.
    service: String,
    backfill: bool,
    text: String,
    recs: Vec<Rec>,
    /// (name, value) spans of `text`.
    labels: Vec<(Span, Span)>,
    ts: Vec<i64>,
    vals: Vec<f64>,
    /// The message this batch was decoded from, while the batch still says what it says: the
    /// ingest streams keep it ([`SeriesBatch::keep_wire`]) so that a batch that validation left
    /// as it came becomes its WAL record without being encoded again. Every change made through
    /// a method drops it (the batch's fields are read through methods only).
    wire: Option<prost::bytes::Bytes>,
}

/// One series of a [`SeriesBatch`].
#[derive(Clone, Copy)]
pub struct SeriesRef<'a> {
    b: &'a SeriesBatch,
    r: &'a Rec,
}

impl<'a> SeriesRef<'a> {
    pub fn name(&self) -> &'a str {
        self.b.str(self.r.name)
    }

    pub fn kind(&self) -> i32 {
        self.r.kind
    }

    pub fn label_count(&self) -> usize {
        self.r.labels.len as usize
    }

    /// (name, value) of each label, in the order sent.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone + 'a {
        let b = self.b;
        b.labels[self.r.labels.range()].iter().map(move |&(n, v)| (b.str(n), b.str(v)))
    }

    pub fn timestamps(&self) -> &'a [i64] {
        &self.b.ts[self.r.ts.range()]
    }

    pub fn values(&self) -> &'a [f64] {
        &self.b.vals[self.r.vals.range()]
    }

    pub fn to_pb(&self) -> pb::Series {
        pb::Series {
            name: self.name().into(),
            labels: self.labels().map(|(n, v)| pb::Label { name: n.into(), value: v.into() }).collect(),
            kind: self.kind(),
            timestamps_ms: self.timestamps().to_vec(),
            values: self.values().to_vec(),
        }
    }
}

/// prost 0.14 offers a hand-written [`prost::Message`] no other way to make its error; the
/// constructor is marked for removal in a later breaking release (the lock file pins 0.14).
#[allow(deprecated)]
fn error(what: &'static str) -> DecodeError {
    DecodeError::new(what)
}

fn too_big() -> DecodeError {
    error("metric batch over 4 GiB of names, labels or samples")
}

fn span(at: usize, end: usize) -> Result<Span, DecodeError> {
    let at = u32::try_from(at).map_err(|_| too_big())?;
    let end = u32::try_from(end).map_err(|_| too_big())?;
    Ok(Span { at, len: end - at })
}

/// The next length-delimited field's bytes.
fn take<'s>(s: &mut &'s [u8]) -> Result<&'s [u8], DecodeError> {
    let len = encoding::decode_varint(s)?;
    if len > s.len() as u64 {
        return Err(error("buffer underflow"));
    }
    let (a, rest) = s.split_at(len as usize);
    *s = rest;
    Ok(a)
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        encoding::key_len(tag) + encoding::encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encoding::encode_key(tag, WireType::LengthDelimited, buf);
        encoding::encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

fn delimited_len(tag: u32, len: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(len as u64) + len
}

impl SeriesBatch {
    fn str(&self, s: Span) -> &str {
        &self.text[s.range()]
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    pub fn get(&self, i: usize) -> SeriesRef<'_> {
        SeriesRef { b: self, r: &self.recs[i] }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = SeriesRef<'_>> {
        self.recs.iter().map(move |r| SeriesRef { b: self, r })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Added as label `service` to a series that has none.
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn backfill(&self) -> bool {
        self.backfill
    }

    /// Keeps `wire`, the message this batch was just decoded from, to serve as its protobuf
    /// ([`SeriesBatch::protobuf`]) until the batch changes.
    pub fn keep_wire(&mut self, wire: prost::bytes::Bytes) {
        self.wire = Some(wire);
    }

    /// Drops the message kept by [`SeriesBatch::keep_wire`] (once the WAL record is made).
    pub fn drop_wire(&mut self) {
        self.wire = None;
    }

    /// The batch's protobuf: the message it was decoded from while it is kept and the batch is
    /// unchanged (decoding it gives this batch again, whatever encoder wrote it), else
    /// [`SeriesBatch::to_protobuf`].
    pub fn protobuf(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.wire {
            Some(w) => std::borrow::Cow::Borrowed(&w[..]),
            None => std::borrow::Cow::Owned(self.to_protobuf()),
        }
    }

    /// The length of [`SeriesBatch::protobuf`], without encoding.
    pub fn protobuf_len(&self) -> usize {
        self.wire.as_ref().map_or_else(|| prost::Message::encoded_len(self), |w| w.len())
    }

    /// Series `i`'s timestamps and values, to change in place.
    pub fn samples_mut(&mut self, i: usize) -> (&mut [i64], &mut [f64]) {
        self.wire = None;
        let r = self.recs[i];
        (&mut self.ts[r.ts.range()], &mut self.vals[r.vals.range()])
    }

    /// Keeps the first `n` timestamps and values of series `i`.
    pub fn truncate_samples(&mut self, i: usize, n: usize) {
        let r = &mut self.recs[i];
        if (n as u32) < r.ts.len.max(r.vals.len) {
            self.wire = None;
        }
        r.ts.len = r.ts.len.min(n as u32);
        r.vals.len = r.vals.len.min(n as u32);
    }

    /// Keeps the series for which `keep(index)` is true, in order (their text and samples stay
    /// in the buffers until the batch is dropped).
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let (before, mut i) = (self.recs.len(), 0);
        self.recs.retain(|_| {
            i += 1;
            keep(i - 1)
        });
        if self.recs.len() != before {
            self.wire = None;
        }
    }

    /// Keeps the series that have samples left.
    pub fn retain_with_samples(&mut self) {
        let before = self.recs.len();
        self.recs.retain(|r| r.ts.len > 0);
        if self.recs.len() != before {
            self.wire = None;
        }
    }

    pub fn clear_series(&mut self) {
        self.wire = None;
        self.recs.clear();
    }

    /// Appends a text span: the one at `prev` when it holds the same string.
    fn intern(&mut self, bytes: &[u8], prev: Option<Span>) -> Result<Span, DecodeError> {
        if let Some(p) = prev {
            if self.text.as_bytes().get(p.range()) == Some(bytes) {
                return Ok(p);
            }
        }
        let s = std::str::from_utf8(bytes).map_err(|_| error("invalid string value: data is not UTF-8 encoded"))?;
        self.append(s)
    }

    /// [`SeriesBatch::intern`] of a string already checked.
    fn intern_str(&mut self, s: &str, prev: Option<Span>) -> Result<Span, DecodeError> {
        match prev {
            Some(p) if self.text.get(p.range()) == Some(s) => Ok(p),
            _ => self.append(s),
        }
    }

    fn append(&mut self, s: &str) -> Result<Span, DecodeError> {
        let at = self.text.len();
        self.text.push_str(s);
        span(at, self.text.len())
    }

    /// Decodes one `Series` message and appends it.
    fn push_encoded(&mut self, mut s: &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
        let prev = self.recs.last().copied();
        let prev_label = |k: usize| prev.filter(|p| k < p.labels.len as usize).map(|p| p.labels.at as usize + k);
        let (l0, t0, v0) = (self.labels.len(), self.ts.len(), self.vals.len());
        let mut rec = Rec::default();
        while !s.is_empty() {
            let (tag, wt) = encoding::decode_key(&mut s)?;
            match tag {
                1 => {
                    encoding::check_wire_type(WireType::LengthDelimited, wt)?;
                    let bytes = take(&mut s)?;
                    rec.name = self.intern(bytes, prev.map(|p| p.name))?;
                }
                2 => {
                    encoding::check_wire_type(WireType::LengthDelimited, wt)?;
                    let mut m = take(&mut s)?;
                    let like = prev_label(self.labels.len() - l0).map(|k| self.labels[k]);
                    let (mut name, mut value) = (Span::default(), Span::default());
                    while !m.is_empty() {
                        let (tag, wt) = encoding::decode_key(&mut m)?;
                        match tag {
                            1 | 2 => {
                                encoding::check_wire_type(WireType::LengthDelimited, wt)?;
                                let bytes = take(&mut m)?;
                                if tag == 1 {
                                    name = self.intern(bytes, like.map(|l| l.0))?;
                                } else {
                                    value = self.intern(bytes, like.map(|l| l.1))?;
                                }
                            }
                            _ => encoding::skip_field(wt, tag, &mut m, ctx.clone())?,
                        }
                    }
                    self.labels.push((name, value));
                }
                3 => {
                    encoding::check_wire_type(WireType::Varint, wt)?;
                    rec.kind = encoding::decode_varint(&mut s)? as i32;
                }
                // Packed as sent; one element per field also reads (protobuf's rule).
                4 => match wt {
                    WireType::LengthDelimited => {
                        let mut m = take(&mut s)?;
                        while !m.is_empty() {
                            self.ts.push(encoding::decode_varint(&mut m)? as i64);
                        }
                    }
                    _ => {
                        encoding::check_wire_type(WireType::Varint, wt)?;
                        self.ts.push(encoding::decode_varint(&mut s)? as i64);
                    }
                },
                5 => match wt {
                    WireType::LengthDelimited => {
                        let m = take(&mut s)?;
                        if m.len() % 8 != 0 {
                            return Err(error("packed doubles of a length not a multiple of 8"));
                        }
                        self.vals.extend(m.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))));
                    }
                    _ => {
                        encoding::check_wire_type(WireType::SixtyFourBit, wt)?;
                        if s.len() < 8 {
                            return Err(error("buffer underflow"));
                        }
                        self.vals.push(s.get_f64_le());
                    }
                },
                _ => encoding::skip_field(wt, tag, &mut s, ctx.clone())?,
            }
        }
        rec.labels = span(l0, self.labels.len())?;
        rec.ts = span(t0, self.ts.len())?;
        rec.vals = span(v0, self.vals.len())?;
        self.recs.push(rec);
        Ok(())
    }

    /// After the first series: room for as many more of its shape as the rest of the message
    /// could hold, so that the buffers are not copied as they double (bounded by the bytes
    /// left, as prost's own vectors are).
    fn reserve_like_first(&mut self, first_len: usize, left: usize) {
        let r = self.recs[0];
        let more = (left / (first_len + 2)).min(left / 8);
        self.recs.reserve(more);
        self.labels.reserve((more * r.labels.len as usize).min(left / 2));
        self.ts.reserve((more * r.ts.len as usize).min(left));
        self.vals.reserve((more * r.vals.len as usize).min(left / 8));
        self.text.reserve((more * 8).min(left));
    }

    /// Appends a series in prost's form (the daemon's own batches: samplers, rules, OTLP).
    pub fn push(&mut self, s: &pb::Series) {
        self.wire = None;
        let prev = self.recs.last().copied();
        let (l0, t0, v0) = (self.labels.len(), self.ts.len(), self.vals.len());
        let fits = "a batch in memory holds under 4 GiB of strings and samples";
        let name = self.intern_str(&s.name, prev.map(|p| p.name)).expect(fits);
        for (k, l) in s.labels.iter().enumerate() {
            let like = prev.filter(|p| k < p.labels.len as usize).map(|p| self.labels[p.labels.at as usize + k]);
            let n = self.intern_str(&l.name, like.map(|x| x.0)).expect(fits);
            let v = self.intern_str(&l.value, like.map(|x| x.1)).expect(fits);
            self.labels.push((n, v));
        }
        self.ts.extend_from_slice(&s.timestamps_ms);
        self.vals.extend_from_slice(&s.values);
        let rec = Rec {
            name,
            labels: span(l0, self.labels.len()).expect(fits),
            kind: s.kind,
            ts: span(t0, self.ts.len()).expect(fits),
            vals: span(v0, self.vals.len()).expect(fits),
        };
        self.recs.push(rec);
    }

    pub fn to_pb(&self) -> pb::MetricBatch {
        pb::MetricBatch {
            client_id: self.client_id.clone(),
            seq: self.seq,
            service: self.service.clone(),
            series: self.iter().map(|s| s.to_pb()).collect(),
            backfill: self.backfill,
        }
    }

    fn series_len(&self, r: &Rec) -> usize {
        self.measure(r).0
    }

    /// A series' encoded length, and its packed timestamps' (the one loop over its samples
    /// that measuring takes).
    fn measure(&self, r: &Rec) -> (usize, usize) {
        let mut n = str_len(1, self.str(r.name));
        for &(k, v) in &self.labels[r.labels.range()] {
            n += delimited_len(2, str_len(1, self.str(k)) + str_len(2, self.str(v)));
        }
        if r.kind != 0 {
            n += encoding::key_len(3) + encoding::encoded_len_varint(r.kind as i64 as u64);
        }
        let ts: usize = self.ts[r.ts.range()].iter().map(|&t| encoding::encoded_len_varint(t as u64)).sum();
        if r.ts.len > 0 {
            n += delimited_len(4, ts);
        }
        if r.vals.len > 0 {
            n += delimited_len(5, 8 * r.vals.len as usize);
        }
        (n, ts)
    }

    /// The batch's protobuf, the bytes of [`prost::Message::encode_to_vec`], with each series
    /// measured once (prost's way measures every series three times and its timestamps five:
    /// for the whole length, for the room check, for each series' length and its timestamps'),
    /// into a buffer of the exact size. The handlers encode a batch's WAL record so when
    /// validation changed the batch or it came another way than an ingest stream.
    pub fn to_protobuf(&self) -> Vec<u8> {
        let sizes: Vec<(usize, usize)> = self.recs.iter().map(|r| self.measure(r)).collect();
        let mut len = str_len(1, &self.client_id) + str_len(3, &self.service);
        if self.seq != 0 {
            len += encoding::key_len(2) + encoding::encoded_len_varint(self.seq);
        }
        len += sizes.iter().map(|&(n, _)| delimited_len(4, n)).sum::<usize>();
        if self.backfill {
            len += 2;
        }
        let mut buf = Vec::with_capacity(len);
        self.put_fields(sizes.into_iter(), &mut buf);
        debug_assert_eq!(buf.len(), len);
        buf
    }

    /// The batch's fields in order, given each series' [`SeriesBatch::measure`].
    fn put_fields(&self, sizes: impl Iterator<Item = (usize, usize)>, buf: &mut impl BufMut) {
        put_str(1, &self.client_id, buf);
        if self.seq != 0 {
            encoding::uint64::encode(2, &self.seq, buf);
        }
        put_str(3, &self.service, buf);
        for (r, (n, ts)) in self.recs.iter().zip(sizes) {
            encoding::encode_key(4, WireType::LengthDelimited, buf);
            encoding::encode_varint(n as u64, buf);
            self.put_series(r, ts, buf);
        }
        if self.backfill {
            encoding::bool::encode(5, &self.backfill, buf);
        }
    }

    /// One series, given the length of its packed timestamps ([`SeriesBatch::measure`]).
    fn put_series(&self, r: &Rec, ts_len: usize, buf: &mut impl BufMut) {
        put_str(1, self.str(r.name), buf);
        for &(k, v) in &self.labels[r.labels.range()] {
            let (k, v) = (self.str(k), self.str(v));
            encoding::encode_key(2, WireType::LengthDelimited, buf);
            encoding::encode_varint((str_len(1, k) + str_len(2, v)) as u64, buf);
            put_str(1, k, buf);
            put_str(2, v, buf);
        }
        if r.kind != 0 {
            encoding::encode_key(3, WireType::Varint, buf);
            encoding::encode_varint(r.kind as i64 as u64, buf);
        }
        if r.ts.len > 0 {
            let ts = &self.ts[r.ts.range()];
            encoding::encode_key(4, WireType::LengthDelimited, buf);
            encoding::encode_varint(ts_len as u64, buf);
            for &t in ts {
                encoding::encode_varint(t as u64, buf);
            }
        }
        if r.vals.len > 0 {
            encoding::encode_key(5, WireType::LengthDelimited, buf);
            encoding::encode_varint(8 * u64::from(r.vals.len), buf);
            for &v in &self.vals[r.vals.range()] {
                buf.put_f64_le(v);
            }
        }
    }
}

impl From<pb::MetricBatch> for SeriesBatch {
    fn from(b: pb::MetricBatch) -> SeriesBatch {
        let mut out = SeriesBatch {
            client_id: b.client_id,
            seq: b.seq,
            service: b.service,
            backfill: b.backfill,
            ..Default::default()
        };
        for s in &b.series {
            out.push(s);
        }
        out
    }
}

/// Equal when the batches hold the same series (however their text is shared).
impl PartialEq for SeriesBatch {
    fn eq(&self, other: &SeriesBatch) -> bool {
        self.to_pb() == other.to_pb()
    }
}

impl prost::Message for SeriesBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.put_fields(self.recs.iter().map(|r| self.measure(r)), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.wire = None;
        match tag {
            1 => encoding::string::merge(wire_type, &mut self.client_id, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.seq, buf, ctx),
            3 => encoding::string::merge(wire_type, &mut self.service, buf, ctx),
            4 => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                let len = encoding::decode_varint(buf)?;
                if len > buf.remaining() as u64 {
                    return Err(error("buffer underflow"));
                }
                let len = len as usize;
                // The gRPC frame and a WAL record are one contiguous buffer: decoded in place.
                if buf.chunk().len() >= len {
                    self.push_encoded(&buf.chunk()[..len], ctx)?;
                    buf.advance(len);
                } else {
                    let bytes = buf.copy_to_bytes(len);
                    self.push_encoded(&bytes, ctx)?;
                }
                if self.recs.len() == 1 {
                    self.reserve_like_first(len, buf.remaining());
                }
                Ok(())
            }
            5 => encoding::bool::merge(wire_type, &mut self.backfill, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut n = str_len(1, &self.client_id) + str_len(3, &self.service);
        if self.seq != 0 {
            n += encoding::key_len(2) + encoding::encoded_len_varint(self.seq);
        }
        n += self.recs.iter().map(|r| delimited_len(4, self.series_len(r))).sum::<usize>();
        if self.backfill {
            n += 2;
        }
        n
    }

    fn clear(&mut self) {
        *self = SeriesBatch::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> pb::MetricBatch {
        let label = |n: &str, v: &str| pb::Label { name: n.into(), value: v.into() };
        pb::MetricBatch {
            client_id: "c1".into(),
            seq: 300,
            service: "svc".into(),
            backfill: true,
            series: vec![
                pb::Series {
                    name: "a_total".into(),
                    labels: vec![label("model", "m1"), label("i", "0")],
                    kind: 1,
                    timestamps_ms: vec![1_700_000_000_000, -5, 0],
                    values: vec![1.5, f64::NAN, -0.0],
                },
                pb::Series {
                    name: "a_total".into(),
                    labels: vec![label("model", "m1"), label("i", "1"), label("", "")],
                    kind: -3,
                    timestamps_ms: vec![7],
                    values: vec![],
                },
                pb::Series::default(),
                pb::Series { name: "ünïcode".into(), values: vec![2.0], ..Default::default() },
            ],
        }
    }

    fn same(a: &pb::MetricBatch, b: &pb::MetricBatch) -> bool {
        // NaN aside, by bits.
        a.encode_to_vec() == b.encode_to_vec()
    }

    #[test]
    fn reads_and_writes_the_protobuf_byte_for_byte() {
        let orig = sample();
        let wire = orig.encode_to_vec();
        let b = SeriesBatch::decode(&wire[..]).unwrap();
        assert_eq!(b.encode_to_vec(), wire);
        assert_eq!(b.to_protobuf(), wire);
        assert_eq!(b.encoded_len(), wire.len());
        assert!(same(&b.to_pb(), &orig));
        assert!(same(&SeriesBatch::from(orig.clone()).to_pb(), &orig));
        // Strings equal to the series before's at the same place are stored once.
        assert_eq!(b.text, "a_totalmodelm1i01ünïcode");
        let s = b.get(1);
        assert_eq!(s.labels().collect::<Vec<_>>(), [("model", "m1"), ("i", "1"), ("", "")]);
        assert_eq!((s.kind(), s.timestamps(), s.values()), (-3, &[7][..], &[][..]));
    }

    #[test]
    fn unpacked_samples_unknown_fields_and_damage() {
        // Series: name "x", an unknown varint field 9, one unpacked timestamp and value.
        let mut series = vec![0x0a, 1, b'x', 0x48, 5, 0x20, 42, 0x29];
        series.extend(2.5f64.to_le_bytes());
        let mut wire = vec![0x22, series.len() as u8];
        wire.extend(&series);
        let b = SeriesBatch::decode(&wire[..]).unwrap();
        let s = b.get(0);
        assert_eq!((s.name(), s.timestamps(), s.values()), ("x", &[42][..], &[2.5][..]));
        // Cut short, not UTF-8, doubles of 7 bytes: errors, never a panic.
        assert!(SeriesBatch::decode(&wire[..wire.len() - 1]).is_err());
        assert!(SeriesBatch::decode(&[0x22, 3, 0x0a, 1, 0xff][..]).is_err());
        assert!(SeriesBatch::decode(&[0x22, 9, 0x2a, 7, 0, 0, 0, 0, 0, 0, 0][..]).is_err());
        for cut in 0..wire.len() {
            let _ = SeriesBatch::decode(&wire[..cut]);
        }
    }

    fn any_batch() -> impl proptest::strategy::Strategy<Value = pb::MetricBatch> {
        use proptest::prelude::*;
        let text = || prop_oneof![Just(String::new()), "[a-c]{1,3}", any::<String>()];
        let label = (text(), text()).prop_map(|(name, value)| pb::Label { name, value });
        let series = (
            text(),
            proptest::collection::vec(label, 0..4),
            prop_oneof![Just(0i32), Just(1), any::<i32>()],
            proptest::collection::vec(any::<i64>(), 0..4),
            proptest::collection::vec(any::<f64>(), 0..4),
        )
            .prop_map(|(name, labels, kind, timestamps_ms, values)| pb::Series {
                name,
                labels,
                kind,
                timestamps_ms,
                values,
            });
        (text(), any::<u64>(), text(), proptest::collection::vec(series, 0..6), any::<bool>()).prop_map(
            |(client_id, seq, service, series, backfill)| pb::MetricBatch { client_id, seq, service, series, backfill },
        )
    }

    proptest::proptest! {
        /// Any batch: the same bytes as prost's, both ways; any damage to them: an error or
        /// the batch prost reads from the same bytes, never a panic.
        #[test]
        fn agrees_with_prost(b in any_batch(), at in 0usize..4096, byte in proptest::prelude::any::<u8>(), cut in 0usize..4096) {
            let wire = b.encode_to_vec();
            let ours = SeriesBatch::decode(&wire[..]).unwrap();
            proptest::prop_assert_eq!(&ours.encode_to_vec(), &wire);
            proptest::prop_assert_eq!(&ours.to_protobuf(), &wire);
            proptest::prop_assert_eq!(ours.encoded_len(), wire.len());
            proptest::prop_assert_eq!(SeriesBatch::from(b.clone()).encode_to_vec(), wire.clone());
            let mut bad = wire.clone();
            if !bad.is_empty() {
                let i = at % bad.len();
                bad[i] ^= byte;
                bad.truncate(bad.len() - cut % bad.len());
            }
            match (SeriesBatch::decode(&bad[..]), pb::MetricBatch::decode(&bad[..])) {
                (Ok(ours), Ok(theirs)) => proptest::prop_assert_eq!(ours.to_pb().encode_to_vec(), theirs.encode_to_vec()),
                (Err(_), Err(_)) => {}
                (ours, theirs) => proptest::prop_assert!(false, "ours {:?}, prost's {:?}", ours.is_ok(), theirs.is_ok()),
            }
        }
    }

    #[test]
    fn samples_change_in_place_and_series_drop() {
        let mut b = SeriesBatch::from(sample());
        let (ts, vals) = b.samples_mut(0);
        ts[2] = 9;
        vals[2] = 4.0;
        b.truncate_samples(0, 1);
        b.retain(|i| i != 2);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(0).timestamps(), &[1_700_000_000_000]);
        assert_eq!(b.get(2).name(), "ünïcode");
        let back = SeriesBatch::decode(&b.encode_to_vec()[..]).unwrap();
        assert_eq!(back, b);
    }
}
