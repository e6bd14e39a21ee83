//! Alert history, read back from the stored `ALERTS` series rather than kept beside them:
//! each series (`alertname`, the alert's labels, `alertstate`) has a sample at every
//! evaluation while the alert is in that state and a staleness marker when it leaves it, so
//! its runs of samples are the periods the alert spent pending and firing.
use crate::promql::{is_stale, Labels, RawSeries, NAME};

/// One stay of an alert in a state.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// The alert's labels: `alertname` and the rest, without `__name__` and `alertstate`.
    pub labels: Labels,
    pub state: String,
    pub start: i64,
    /// `None` while it lasts at the end of what was read.
    pub end: Option<i64>,
}

/// The periods in `series`: a run ends at a staleness marker, or where samples stop for
/// longer than `max_gap` (a daemon that was down: the alert's end is then its last sample).
/// A run whose last sample is within `max_gap` of `end` is still going on.
pub fn periods(series: &[RawSeries], end: i64, max_gap: i64) -> Vec<Period> {
    let mut out = Vec::new();
    for s in series {
        let state = s.labels.iter().find(|(k, _)| k == "alertstate").map(|(_, v)| v.clone()).unwrap_or_default();
        let labels: Labels = s.labels.iter().filter(|(k, _)| k != NAME && k != "alertstate").cloned().collect();
        let mut run: Option<(i64, i64)> = None;
        let close = |out: &mut Vec<Period>, (a, b): (i64, i64), e: Option<i64>| {
            let _ = b;
            out.push(Period { labels: labels.clone(), state: state.clone(), start: a, end: e });
        };
        for (&t, &v) in s.ts.iter().zip(&s.vals) {
            if is_stale(v) {
                if let Some(r) = run.take() {
                    close(&mut out, r, Some(t));
                }
                continue;
            }
            match run {
                Some((a, last)) if t - last <= max_gap => run = Some((a, t)),
                Some(r) => {
                    close(&mut out, r, Some(r.1));
                    run = Some((t, t));
                }
                None => run = Some((t, t)),
            }
        }
        if let Some(r) = run {
            let e = if end - r.1 <= max_gap { None } else { Some(r.1) };
            close(&mut out, r, e);
        }
    }
    out.sort_by(|a, b| b.start.cmp(&a.start).then_with(|| a.labels.cmp(&b.labels)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::STALE_NAN;

    #[test]
    fn runs_end_at_markers_and_gaps() {
        let l = |st: &str| -> Labels {
            vec![(NAME.into(), "ALERTS".into()), ("alertname".into(), "X".into()), ("alertstate".into(), st.into())]
        };
        let stale = f64::from_bits(STALE_NAN);
        let series = vec![
            RawSeries { labels: l("pending"), ts: vec![0, 15, 30, 45], vals: vec![1.0, 1.0, 1.0, stale] },
            RawSeries { labels: l("firing"), ts: vec![45, 60, 500, 515], vals: vec![1.0, 1.0, 1.0, 1.0] },
        ];
        let p = periods(&series, 520, 100);
        let got: Vec<(&str, i64, Option<i64>)> = p.iter().map(|p| (p.state.as_str(), p.start, p.end)).collect();
        assert_eq!(got, [("firing", 500, None), ("firing", 45, Some(60)), ("pending", 0, Some(45))]);
        assert_eq!(p[0].labels, vec![("alertname".to_string(), "X".to_string())]);
    }
}
