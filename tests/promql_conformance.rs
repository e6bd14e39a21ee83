//! Prometheus' own PromQL test scripts (`../shared/conformance/promql/*.test`, see the README
//! there), run through the engine: every `eval` of every file, reported as a table of passed,
//! failed and skipped cases per file. Cases that do not pass are listed in
//! `tests/promql_conformance.expected` with the reason; a case failing that is not listed, or a
//! listed case that now passes, fails the test (so the list stays true).
use modelwatch::promql::script::{run, Outcome};
use modelwatch::promql::Opts;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn conformance_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/promql");
    d.is_dir().then_some(d)
}

#[test]
fn prometheus_promql_test_scripts() {
    let Some(dir) = conformance_dir() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("../shared/conformance/promql is missing: the conformance scripts are required in CI");
        }
        eprintln!("SKIPPED: ../shared/conformance/promql not found");
        return;
    };
    // "file:line" → reason, for the cases known not to pass.
    let known_text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/promql_conformance.expected"))
            .unwrap_or_default();
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for l in known_text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (k, why) = l.split_once(' ').unwrap_or((l, ""));
        known.insert(k.to_string(), why.trim().to_string());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut table = String::from(
        "| file | cases | passed | skipped (native histograms) | left out (listed) |\n|---|---|---|---|---|\n",
    );
    let mut problems = Vec::new();
    let (mut tp, mut tn, mut ts, mut tk) = (0, 0, 0, 0);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let cases = run(&std::fs::read_to_string(f).unwrap(), &Opts::default());
        let (mut p, mut s, mut k) = (0, 0, 0);
        for c in &cases {
            let key = format!("{name}:{}", c.line);
            match &c.outcome {
                Outcome::Pass => {
                    p += 1;
                    if known.contains_key(&key) {
                        problems.push(format!(
                            "{key} passes now: remove it from tests/promql_conformance.expected ({})",
                            c.query
                        ));
                    }
                }
                Outcome::Skip(_) => s += 1,
                Outcome::Fail(why) => {
                    if known.contains_key(&key) {
                        k += 1;
                    } else {
                        problems.push(format!("{key} {} -- {why}", c.query));
                    }
                }
            }
        }
        table.push_str(&format!("| {name} | {} | {p} | {s} | {k} |\n", cases.len()));
        tn += cases.len();
        tp += p;
        ts += s;
        tk += k;
    }
    table.push_str(&format!("| all | {tn} | {tp} | {ts} | {tk} |\n"));
    eprintln!("{table}");
    if let Ok(out) = std::env::var("CONFORMANCE_TABLE") {
        std::fs::write(out, &table).unwrap();
    }
    assert!(problems.is_empty(), "{} conformance cases changed:\n{}", problems.len(), problems.join("\n"));
}
