//! Log messages as templates and the values in them (the messages of a group of log records in
//! column layout 3, [`super::columns`]). A service logs from a few dozen format strings; what
//! varies from one message to the next is mostly the numbers and ids it prints. Through zstd
//! as one plane, each message costs a match or two for its template and its digits as
//! literals, framed by that match: in `cargo bench --bench events_disk -- --logs` the messages
//! took 8.0 bytes a record where their templates and values carry about 2.8 bytes of
//! information; kept as below, 3.2.
//!
//! Here a message is split into its *template* (its text with every value replaced by a
//! marker) and its values; the group keeps its distinct templates once, a template number per
//! record, and for each template each value position as a column of its own (all of one
//! template's values at one position are alike: a GPU number, a latency, a prefix id).
//!
//! What counts as a value:
//! - a run of decimal digits that no ASCII letter or digit precedes (`gpu 3`, `200us`,
//!   `tenant-12`; not `v1`, `p95`), of at most 19 digits, as its number; one with leading
//!   zeros keeps its width in the template (`007`);
//! - a word (a maximal run of ASCII letters and digits) of 4 to 32 hex digits with at least one
//!   digit and letters of one case (`3fa2b1c0`, the groups of a UUID), or of 4 to 32 hex
//!   digits of one case after `0x` (`0x7f3a00`, `0xDEADBEEF`), as its bytes.
//!
//! Every message reads back byte for byte. Template markers are bytes 1 to 5 (1: a number; 2
//! and its width: a zero-padded number; 3 or 4 and a length: lower- or upper-case hex; 5: the
//! next byte is text), so a message holding those bytes escapes them. A group whose messages
//! share few templates (more than one a [`SPARSE`] records) keeps them as one plane instead,
//! as layouts 1 and 2 do.
//!
//! Layout: `0` and the messages as strings ([`put_strings`]), or `1`, the templates as strings,
//! the column of template numbers, then per template, per value in it, its column
//! ([`put_col`]) or, for hex, the plane of its bytes (the length's half, rounded up, a value).
use super::columns::{bad, col, col_below, plane, put_col, put_plane, put_strings, LazyStrings};
use super::index::FxMap;
use super::keys::{DecodeError, Reader};

const PLAIN: u8 = 0;
const TEMPLATED: u8 = 1;

const NUMBER: u8 = 1;
const PADDED: u8 = 2;
const HEX_LOWER: u8 = 3;
const HEX_UPPER: u8 = 4;
const ESCAPE: u8 = 5;

/// The most digits a number may have: 19 are below 2^64.
const MAX_DIGITS: usize = 19;
const HEX_MIN: usize = 4;
const HEX_MAX: usize = 32;

/// A group keeps templates only while it has at most one a `SPARSE` records: messages that
/// are nearly all different (free text, stack traces) cost less as one plane than as one
/// template each with a column per value.
const SPARSE: usize = 4;

/// A value taken out of a message.
enum Value {
    Number(u64),
    /// Up to 16 bytes, the first `.1` of them used.
    Hex([u8; 16], usize),
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// `w` as a hex value (upper case?), when it is one ([`Value`]); after `0x` (`prefixed`) it
/// needs no digit and no letter.
fn hex_word(w: &[u8], prefixed: bool) -> Option<(bool, Value)> {
    if !(HEX_MIN..=HEX_MAX).contains(&w.len()) {
        return None;
    }
    let (mut digit, mut lower, mut upper) = (false, false, false);
    for &c in w {
        match c {
            b'0'..=b'9' => digit = true,
            b'a'..=b'f' => lower = true,
            b'A'..=b'F' => upper = true,
            _ => return None,
        }
    }
    if lower && upper || !prefixed && !(digit && (lower || upper)) {
        return None;
    }
    // Nibbles right-aligned in the bytes: the last digit is the low half of the last byte.
    let used = w.len().div_ceil(2);
    let mut bytes = [0u8; 16];
    for (k, &c) in w.iter().rev().enumerate() {
        bytes[used - 1 - k / 2] |= nibble(c) << (4 * (k % 2));
    }
    Some((upper, Value::Hex(bytes, used)))
}

/// Byte classes for [`split`]: other bytes, marker bytes (escaped in templates), `a`-`f`,
/// `A`-`F`, other ASCII letters and digits (a bit each, so that a word's classes can be or-ed).
const OTHER: u8 = 0;
const MARKER: u8 = 1;
const HEX_LC: u8 = 2;
const HEX_UC: u8 = 4;
const LETTER: u8 = 8;
const DIGIT: u8 = 16;
const CLASS: [u8; 256] = {
    let mut c = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        c[b] = match b as u8 {
            NUMBER..=ESCAPE => MARKER,
            b'a'..=b'f' => HEX_LC,
            b'A'..=b'F' => HEX_UC,
            b'g'..=b'z' | b'G'..=b'Z' => LETTER,
            b'0'..=b'9' => DIGIT,
            _ => OTHER,
        };
        b += 1;
    }
    c
};
const WORD: u8 = HEX_LC | HEX_UC | LETTER | DIGIT;

/// Appends `m`'s template to `template` and its values to `values`, a word (a maximal run of
/// ASCII letters and digits) or a byte of something else at a time; the text between values
/// is copied in one piece.
fn split(m: &[u8], template: &mut Vec<u8>, values: &mut Vec<Value>) {
    // Up to where `m` is in `template`.
    let mut copied = 0;
    let mut i = 0;
    while i < m.len() {
        let c = CLASS[usize::from(m[i])];
        if c & WORD == 0 {
            if c == MARKER {
                template.extend_from_slice(&m[copied..i]);
                template.push(ESCAPE);
                copied = i;
            }
            i += 1;
            continue;
        }
        let start = i;
        let mut classes = 0;
        while let Some(&b) = m.get(i) {
            let c = CLASS[usize::from(b)];
            if c & WORD == 0 {
                break;
            }
            classes |= c;
            i += 1;
        }
        // Every value has a digit (`0x` one too).
        if classes & DIGIT == 0 {
            continue;
        }
        let w = &m[start..i];
        let hex = if classes & LETTER == 0 {
            hex_word(w, false).map(|h| (0, h))
        } else if w.len() > 2 && w[0] == b'0' && (w[1] | 0x20) == b'x' {
            // `0x` stays text.
            hex_word(&w[2..], true).map(|h| (2, h))
        } else {
            None
        };
        if let Some((prefix, (upper, v))) = hex {
            template.extend_from_slice(&m[copied..start + prefix]);
            template.push(if upper { HEX_UPPER } else { HEX_LOWER });
            template.push((w.len() - prefix) as u8);
            values.push(v);
            copied = i;
            continue;
        }
        // Digits that start a word are a number; the rest of the word (from its first letter)
        // is text, digits after a letter included.
        let n = w.iter().position(|c| !c.is_ascii_digit()).unwrap_or(w.len());
        if n == 0 || n > MAX_DIGITS {
            continue;
        }
        template.extend_from_slice(&m[copied..start]);
        if w[0] == b'0' && n > 1 {
            template.push(PADDED);
            template.push(n as u8);
        } else {
            template.push(NUMBER);
        }
        values.push(Value::Number(w[..n].iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'))));
        copied = start + n;
    }
    template.extend_from_slice(&m[copied..]);
}

/// One value position of a template, as the encoder gathers it.
#[derive(Default)]
struct Position {
    hex: bool,
    numbers: Vec<u64>,
    bytes: Vec<u8>,
}

/// `messages` in the layout of the module documentation, appended to `out`.
pub fn put(out: &mut Vec<u8>, messages: &[&str]) {
    let n = messages.len();
    let mut ids: FxMap<Box<[u8]>, usize> = FxMap::default();
    let mut templates: Vec<(Box<[u8]>, Vec<Position>)> = Vec::new();
    let mut of = Vec::with_capacity(n);
    let (mut template, mut values) = (Vec::new(), Vec::new());
    for m in messages {
        template.clear();
        values.clear();
        split(m.as_bytes(), &mut template, &mut values);
        let t = match ids.get(&template[..]) {
            Some(&t) => t,
            None => {
                if (templates.len() + 1) * SPARSE > n {
                    out.push(PLAIN);
                    put_strings(out, messages);
                    return;
                }
                let positions = values
                    .iter()
                    .map(|v| Position { hex: matches!(v, Value::Hex(..)), ..Default::default() })
                    .collect();
                ids.insert(template.clone().into_boxed_slice(), templates.len());
                templates.push((template.clone().into_boxed_slice(), positions));
                templates.len() - 1
            }
        };
        of.push(t as u64);
        // A template fixes its values' kinds and hex lengths: the same template, the same shape.
        for (p, v) in templates[t].1.iter_mut().zip(&values) {
            match v {
                Value::Number(x) => p.numbers.push(*x),
                Value::Hex(b, used) => p.bytes.extend_from_slice(&b[..*used]),
            }
        }
    }
    out.push(TEMPLATED);
    put_strings(out, &templates.iter().map(|(t, _)| &t[..]).collect::<Vec<_>>());
    put_col(out, &of);
    for (_, positions) in &templates {
        for p in positions {
            if p.hex {
                put_plane(out, &p.bytes);
            } else {
                put_col(out, &p.numbers);
            }
        }
    }
}

/// A piece of a template read back: text (a range of the template's text) or a value.
enum Piece {
    Text(usize, usize),
    Number,
    Padded(usize),
    Hex { len: usize, upper: bool },
}

/// A value position's column.
enum Column {
    Numbers(Vec<u64>),
    Hex(Vec<u8>),
}

pub struct Template {
    text: Vec<u8>,
    pieces: Vec<Piece>,
    columns: Vec<Column>,
    /// The next record's row in the columns.
    at: usize,
}

/// `t` (a stored template) as its text without markers and its pieces.
fn parse(t: &[u8]) -> Result<(Vec<u8>, Vec<Piece>), DecodeError> {
    let (mut text, mut pieces) = (Vec::with_capacity(t.len()), Vec::new());
    let mut from = 0;
    let mut i = 0;
    let arg = |i: usize| t.get(i + 1).map(|&b| usize::from(b)).ok_or_else(|| bad("a template that ends in a marker"));
    while i < t.len() {
        let value = match t[i] {
            NUMBER => Some((Piece::Number, 1)),
            PADDED => {
                let w = arg(i)?;
                if !(2..=MAX_DIGITS).contains(&w) {
                    return Err(bad(format!("a number {w} digits wide in a template")));
                }
                Some((Piece::Padded(w), 2))
            }
            m @ (HEX_LOWER | HEX_UPPER) => {
                let len = arg(i)?;
                if !(HEX_MIN..=HEX_MAX).contains(&len) {
                    return Err(bad(format!("a hex value {len} digits long in a template")));
                }
                Some((Piece::Hex { len, upper: m == HEX_UPPER }, 2))
            }
            ESCAPE => {
                text.push(arg(i)? as u8);
                i += 2;
                None
            }
            b => {
                text.push(b);
                i += 1;
                None
            }
        };
        if let Some((piece, skip)) = value {
            if text.len() > from {
                pieces.push(Piece::Text(from, text.len()));
            }
            from = text.len();
            pieces.push(piece);
            i += skip;
        }
    }
    if text.len() > from {
        pieces.push(Piece::Text(from, text.len()));
    }
    Ok((text, pieces))
}

/// A group's messages, read: built into `String`s only for the records asked for.
pub enum Messages {
    Plain(LazyStrings),
    Templated { templates: Vec<Template>, of: Vec<usize> },
}

impl Messages {
    pub fn read(r: &mut Reader, n: usize) -> Result<Messages, DecodeError> {
        match r.byte()? {
            PLAIN => {
                let m = LazyStrings::read(r, super::wal::MAX_RECORD)?;
                if m.len() != n {
                    return Err(r.err(&format!("{} messages for {n} records", m.len())));
                }
                Ok(Messages::Plain(m))
            }
            TEMPLATED => {
                let stored = LazyStrings::read(r, super::wal::MAX_RECORD)?;
                if stored.len() > n {
                    return Err(r.err(&format!("{} templates for {n} records", stored.len())));
                }
                let of = col_below(r, n, stored.len(), "template")?;
                let mut uses = vec![0usize; stored.len()];
                for &t in &of {
                    uses[t] += 1;
                }
                let mut templates = Vec::with_capacity(stored.len());
                for (t, &rows) in uses.iter().enumerate() {
                    let (text, pieces) = parse(stored.bytes(t))?;
                    let mut columns = Vec::new();
                    for p in &pieces {
                        match p {
                            Piece::Text(..) => {}
                            Piece::Number | Piece::Padded(_) => columns.push(Column::Numbers(col(r, rows)?)),
                            Piece::Hex { len, .. } => columns.push(Column::Hex(plane(r, rows * len.div_ceil(2))?)),
                        }
                    }
                    templates.push(Template { text, pieces, columns, at: 0 });
                }
                Ok(Messages::Templated { templates, of })
            }
            f => Err(r.err(&format!("unknown message form {f}"))),
        }
    }

    /// Record `k`'s message when `kept`; every record passes, in order, kept or not.
    pub fn next(&mut self, k: usize, kept: bool) -> Result<Option<String>, DecodeError> {
        match self {
            Messages::Plain(m) => kept.then(|| m.get(k)).transpose(),
            Messages::Templated { templates, of } => {
                let t = of.get(k).and_then(|&t| templates.get_mut(t)).ok_or_else(|| bad(format!("no message {k}")))?;
                let row = t.at;
                t.at += 1;
                kept.then(|| t.render(row)).transpose()
            }
        }
    }
}

impl Template {
    fn render(&self, row: usize) -> Result<String, DecodeError> {
        use std::io::Write;
        let missing = || bad(format!("no value {row} in a template's column"));
        let mut s = Vec::with_capacity(self.text.len() + 8 * self.columns.len());
        let mut columns = self.columns.iter();
        for p in &self.pieces {
            let c = match p {
                Piece::Text(a, b) => {
                    s.extend_from_slice(&self.text[*a..*b]);
                    continue;
                }
                _ => columns.next().ok_or_else(missing)?,
            };
            match (p, c) {
                (Piece::Number, Column::Numbers(v)) => {
                    let _ = write!(s, "{}", v.get(row).ok_or_else(missing)?);
                }
                (Piece::Padded(w), Column::Numbers(v)) => {
                    let _ = write!(s, "{:0w$}", v.get(row).ok_or_else(missing)?, w = *w);
                }
                (Piece::Hex { len, upper }, Column::Hex(bytes)) => {
                    let used = len.div_ceil(2);
                    let b = bytes.get(row * used..(row + 1) * used).ok_or_else(missing)?;
                    let digits: &[u8; 16] = if *upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
                    for k in (0..*len).rev() {
                        s.push(digits[usize::from((b[used - 1 - k / 2] >> (4 * (k % 2))) & 15)]);
                    }
                }
                _ => return Err(bad("a template whose values and columns differ")),
            }
        }
        String::from_utf8(s).map_err(|_| bad("a message that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(messages: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, messages);
        let mut r = Reader::new(&out, "messages");
        let mut m = Messages::read(&mut r, messages.len()).unwrap();
        assert!(r.done());
        for (k, want) in messages.iter().enumerate() {
            // Every other one skipped: cursors move either way.
            let got = m.next(k, k % 2 == 0).unwrap();
            assert_eq!(got.as_deref(), (k % 2 == 0).then_some(*want));
        }
        out
    }

    fn template_of(m: &str) -> (Vec<u8>, usize) {
        let (mut t, mut v) = (Vec::new(), Vec::new());
        split(m.as_bytes(), &mut t, &mut v);
        (t, v.len())
    }

    #[test]
    fn numbers_and_ids_are_values_and_the_rest_is_the_template() {
        let (t, n) = template_of("batch of 12 scheduled on gpu 3");
        assert_eq!((t, n), (b"batch of \x01 scheduled on gpu \x01".to_vec(), 2));
        // After a letter, digits are text; a unit after the number is text.
        let (t, n) = template_of("p95 wait 200us on v1");
        assert_eq!((t, n), (b"p95 wait \x01us on v1".to_vec(), 1));
        let (t, n) = template_of("cache hit for prefix 3fa2b1c0, id 0042, DEADBEEF1 and dead at 0xdead00 0X1234");
        let want = b"cache hit for prefix \x03\x08, id \x02\x04, \x04\x09 and dead at 0x\x03\x06 0X\x03\x04";
        assert_eq!((t, n), (want.to_vec(), 5));
        // A UUID is five hex words, a 20-digit number is text, a marker byte is escaped.
        let (t, n) = template_of("req 123e4567-e89b-12d3-a456-426614174000: 12345678901234567890 \x01");
        assert_eq!(
            (t, n),
            (b"req \x03\x08-\x03\x04-\x03\x04-\x03\x04-\x01: 12345678901234567890 \x05\x01".to_vec(), 5)
        );
    }

    #[test]
    fn messages_from_a_few_templates_read_back_and_take_less_than_their_plane() {
        let msgs: Vec<String> = (0..5000u64)
            .map(|i| {
                let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
                match i % 4 {
                    0 => format!("request served in {} ms, {} tokens", x % 5000, x % 700),
                    1 => format!("cache hit for prefix {:08x} ({} tokens)", x as u32, x % 4000),
                    2 => format!("loaded adapter tenant-{} in {} ms", x % 40, x % 800),
                    _ => format!("queue depth {} (p95 wait {:03} ms) \u{e9}\x02", x % 64, x % 400),
                }
            })
            .collect();
        let refs: Vec<&str> = msgs.iter().map(|s| s.as_str()).collect();
        let templated = roundtrip(&refs);
        assert_eq!(templated[0], TEMPLATED);
        let mut plain = Vec::new();
        put_strings(&mut plain, &refs);
        assert!(
            templated.len() * 3 < plain.len() * 2,
            "{} bytes templated, {} as a plane",
            templated.len(),
            plain.len()
        );
    }

    #[test]
    fn messages_that_share_few_templates_stay_one_plane() {
        let msgs: Vec<String> = (0..100).map(|i| format!("free text {}", "x".repeat(i))).collect();
        let refs: Vec<&str> = msgs.iter().map(|s| s.as_str()).collect();
        assert_eq!(roundtrip(&refs)[0], PLAIN);
        assert_eq!(roundtrip(&[])[0], TEMPLATED);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let msgs: Vec<String> = (0..64).map(|i| format!("gpu {} at {:x}ab12 of {:04}", i % 8, i * 977, i)).collect();
        let refs: Vec<&str> = msgs.iter().map(|s| s.as_str()).collect();
        let good = roundtrip(&refs);
        for at in 0..good.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let mut r = Reader::new(&bad, "messages");
                if let Ok(mut m) = Messages::read(&mut r, refs.len()) {
                    for k in 0..refs.len() + 1 {
                        let _ = m.next(k, true);
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_messages_read_back_exactly(
            msgs in proptest::collection::vec(
                prop_oneof![
                    "[a-z ]{0,6}[0-9]{1,22}[a-zA-Z:-]{0,3}[0-9a-fA-F]{0,34}[ -]{0,2}[0-9]{0,3}",
                    "\\PC{0,12}",
                    "[\\x00-\\x07 0a]{0,8}",
                ],
                0..40,
            ),
            repeat in 1usize..8,
        ) {
            // Repeated, so that some groups keep templates and some stay one plane.
            let all: Vec<&str> = msgs.iter().flat_map(|m| std::iter::repeat_n(m.as_str(), repeat)).collect();
            roundtrip(&all);
        }
    }
}
