//! `modelwatch rules check FILE...` and `modelwatch rules test FILE...`: the daemon's rule
//! loader and engine run locally on files, with `promtool check rules` / `promtool test rules`'
//! output and exit codes (0: all good; 1: a file failed).
use crate::alert::{rules, unittest};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Checks rule files; returns the report and whether every file passed.
pub fn check(files: &[PathBuf]) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    for f in files {
        let _ = writeln!(out, "Checking {}", f.display());
        match rules::load_file(f) {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                let _ = writeln!(out, "  SUCCESS: {n} rules found");
                let dups = rules::duplicates(&groups);
                if !dups.is_empty() {
                    // A lint, not a failure (promtool's exit code is 0 as well).
                    let _ = writeln!(out, "  WARNING: {} duplicate rule(s) found.", dups.len());
                    for (name, ls) in dups {
                        let l: Vec<String> = ls.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                        let _ = writeln!(out, "  Metric: {name}\n  Label(s): {}", l.join(", "));
                    }
                    let _ = writeln!(out, "  Might cause inconsistency while recording expressions");
                }
            }
            Err(errs) => {
                ok = false;
                let _ = writeln!(out, "  FAILED:");
                for e in errs {
                    let _ = writeln!(out, "{e}");
                }
            }
        }
        out.push('\n');
    }
    (out, ok)
}

/// Runs rule unit-test files; returns the report and whether every file passed.
pub fn test(files: &[PathBuf]) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {}", f.display());
        let rep = unittest::run_file(f);
        for s in &rep.skipped {
            let _ = writeln!(out, "  SKIPPED: {s} (native histograms are not supported)");
        }
        if rep.passed() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            ok = false;
            let _ = writeln!(out, "  FAILED:");
            for e in &rep.errors {
                let _ = writeln!(out, "{e}\n");
            }
        }
        out.push('\n');
    }
    (out, ok)
}
