//! Times, ranges and steps: RFC 3339 timestamps with any offset, human durations, the range a
//! request covers, each checked against the bounds that keep a query's cost finite.
use super::{invalid, QueryError};
use crate::pb;
use std::time::Duration;

pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// Longest duration a query accepts (a range, a step): past it, milliseconds would wrap.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, QueryError> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| invalid(field, format!("{s:?} is not a duration like \"30s\", \"5m\" or \"1h\": {e}")))?;
    if d > MAX_DURATION {
        return Err(invalid(field, format!("{s:?} is longer than 100 years")));
    }
    Ok(d)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2026-11-23T10:00:00Z`, `2026-11-23T11:00:00.250+01:00`; a
/// space for the `T` is accepted) into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i.min(start + 3)];
        ms = digits.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')) * 10i64.pow(3 - digits.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// A time as RFC 3339 (any offset) or Unix seconds (`1700000000.5`, as Prometheus' API takes).
pub fn parse_time(field: &'static str, s: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e13 {
            return Ok((secs * 1000.0).round() as i64);
        }
    }
    parse_rfc3339(s).ok_or_else(|| {
        invalid(
            field,
            format!(
                "{s:?} is neither an RFC 3339 timestamp like \"2026-11-23T10:00:00Z\" or \"2026-11-23T11:00:00+01:00\" nor Unix seconds"
            ),
        )
    })
}

/// Milliseconds since the epoch as a `google.protobuf.Timestamp` (grpcurl shows RFC 3339).
pub fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 })
}

/// Milliseconds as a `google.protobuf.Duration` (grpcurl shows `"300s"`).
pub fn duration(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 })
}

pub fn fmt_ms(ms: i64) -> String {
    crate::ingest::validate::fmt_ts(ms)
}

/// (start, end) in ms, inclusive. `last` wins; else `start`/`end`; else the last hour.
pub fn parse_range(r: Option<&pb::TimeRange>, now: i64) -> Result<(i64, i64), QueryError> {
    let r = r.cloned().unwrap_or_default();
    if !r.last.is_empty() {
        if !r.start.is_empty() {
            return Err(invalid("range", "give either `last` or `start`/`end`, not both"));
        }
        let d = parse_duration("range.last", &r.last)?;
        return Ok((now - d.as_millis() as i64, now));
    }
    let end = if r.end.is_empty() { now } else { parse_time("range.end", &r.end)? };
    let start =
        if r.start.is_empty() { end - DEFAULT_RANGE.as_millis() as i64 } else { parse_time("range.start", &r.start)? };
    if start > end {
        return Err(invalid("range", format!("start {} is after end {}", r.start, fmt_ms(end))));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_any_offset() {
        let z = parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(z, 1_795_428_000_000);
        assert_eq!(parse_rfc3339("2026-11-23T11:00:00+01:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-23T04:30:00-05:30"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-23 10:00:00.25Z"), Some(z + 250));
        assert_eq!(parse_rfc3339("2026-11-23T10:00:00.123456789Z"), Some(z + 123));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        for bad in [
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T10:00:00",
            "2026-11-23T10:00:00+1:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
