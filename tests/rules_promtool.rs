//! `modelwatch rules check` and `modelwatch rules test` on Prometheus' own files
//! (`../shared/conformance/promtool-rules`), each file also through Debian's `promtool` in the
//! same test, so that the two tools are seen to agree: the good files pass, the bad ones fail,
//! each for its own reason.
//!
//! Where they differ, the reason is asserted: Debian's promtool is 2.42, older than
//! `unittest.yml`, whose native-histogram cases (`histogram:` in `exp_samples`) it cannot read;
//! modelwatch skips those cases (native histograms are not in its engine) and runs the rest.
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/promtool-rules");
    if d.is_dir() {
        return Some(d);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("../shared/conformance/promtool-rules is missing: required in CI");
    }
    eprintln!("SKIPPED: ../shared/conformance/promtool-rules is missing");
    None
}

fn promtool_present() -> bool {
    let ok = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("promtool is required in CI (.ci/run installs Debian's prometheus)");
        }
        eprintln!("SKIPPED the promtool half: promtool is not installed (apt install prometheus)");
    }
    ok
}

/// Runs a tool in the conformance folder: (exit code, stdout + stderr).
fn run(d: &Path, prog: &str, args: &[&str]) -> (i32, String) {
    let o = Command::new(prog).args(args).current_dir(d).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), s)
}

fn mw(d: &Path, args: &[&str]) -> (i32, String) {
    run(d, env!("CARGO_BIN_EXE_modelwatch"), args)
}

/// The `alertname: X, time: T` and `expr: "E", time: T` headers of a failing unit test.
fn failure_heads(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("alertname:") || l.starts_with("expr:") || l.starts_with("rule:"))
        .map(|l| l.split(", err:").next().unwrap().trim_end_matches(',').trim().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn rules_check_agrees_with_promtool() {
    let Some(d) = dir() else { return };
    let prom = promtool_present();
    // (file, passes, what the failure or the report must say)
    let cases: &[(&str, bool, &str)] = &[
        ("rules.yml", true, "SUCCESS: 5 rules found"),
        ("rules-bad.yml", false, "group \"alerts\", rule 1, \"InstanceDown\": annotation \"summary\": template: __alert_InstanceDown:1: undefined variable \"$label\""),
        ("rules_duplicates.yml", true, "1 duplicate rule(s) found"),
        ("bad-rules-syntax.yml", false, "7:15: group \"bad-syntax\", rule 1, \"x\": could not parse expression"),
        ("bad-rules-error.yml", true, "SUCCESS: 1 rules found"),
        ("at-modifier.yml", true, "SUCCESS: 1 rules found"),
        ("negative-offset.yml", true, "SUCCESS: 1 rules found"),
    ];
    for (file, passes, says) in cases {
        let (code, out) = mw(&d, &["rules", "check", file]);
        assert_eq!(code == 0, *passes, "modelwatch rules check {file}:\n{out}");
        assert!(out.contains(says), "modelwatch rules check {file} should say {says:?}:\n{out}");
        if prom {
            let (pcode, pout) = run(&d, "promtool", &["check", "rules", file]);
            assert_eq!(pcode, code, "exit codes differ on {file}:\npromtool:\n{pout}\nmodelwatch:\n{out}");
            // The same reason, in both tools' words.
            if !passes {
                let key = says.split(": ").next().unwrap();
                assert!(pout.contains(key), "promtool on {file} should name {key:?}:\n{pout}");
            }
        }
        eprintln!("check {file}: {}", if *passes { "passes" } else { "fails" });
    }
}

#[test]
fn rules_test_agrees_with_promtool() {
    let Some(d) = dir() else { return };
    let prom = promtool_present();
    let cases: &[(&str, bool, &str)] = &[
        ("unittest.yml", true, "SUCCESS"),
        ("failing.yml", false, "alertname: InstanceDown, time: 5m"),
        ("bad-input-series.yml", false, "up{job=\"prometheus\", instance=\"localhost:9090\""),
        ("bad-promql.yml", false, "many-to-many matching not allowed"),
        (
            "bad-rules-error-test.yml",
            false,
            "rule: joined, time: 0s, err: found duplicate series for the match group {a=\"1\"}",
        ),
        ("bad-rules-syntax-test.yml", false, "7:15: group \"bad-syntax\", rule 1, \"x\": could not parse expression"),
        ("at-modifier-test.yml", true, "SUCCESS"),
        ("negative-offset-test.yml", true, "SUCCESS"),
        ("long-period.yml", true, "SUCCESS"),
    ];
    for (file, passes, says) in cases {
        let (code, out) = mw(&d, &["rules", "test", file]);
        assert_eq!(code == 0, *passes, "modelwatch rules test {file}:\n{out}");
        assert!(out.contains(says), "modelwatch rules test {file} should say {says:?}:\n{out}");
        if *file == "unittest.yml" {
            // Every native-histogram case is named as skipped; nothing else is.
            assert_eq!(out.matches("SKIPPED:").count(), 6, "{out}");
            assert!(out.lines().filter(|l| l.contains("SKIPPED")).all(|l| l.contains("histogram")), "{out}");
        }
        if !prom {
            continue;
        }
        let (pcode, pout) = run(&d, "promtool", &["test", "rules", file]);
        let old_promtool = pout.contains("field histogram not found");
        if *file == "unittest.yml" && old_promtool {
            // Debian's promtool 2.42 predates native histograms in unit tests; with them taken
            // out, the rest of the file is run by promtool below and must pass there too.
            assert_ne!(pcode, 0);
            let tmp = tempfile::tempdir().unwrap();
            strip_histograms(&d, tmp.path());
            let (scode, sout) = run(tmp.path(), "promtool", &["test", "rules", "unittest.yml"]);
            // 2.42's windows and lookback are closed on the left, Prometheus 3's (which the file
            // is written for, and modelwatch follows) open: exactly the four cases with a
            // sample on a window's start differ, each by that one sample.
            assert_ne!(scode, 0);
            assert_eq!(
                failure_heads(&sout),
                [
                    "expr: \"count_over_time(fixed_data[1h])\", time: 1h",
                    "expr: \"job:test:count_over_time1m\", time: 1m",
                    "expr: \"job:test:count_over_time1m\", time: 2m",
                    "expr: \"timestamp(test_missing)\", time: 5m",
                ],
                "promtool 2.42 on unittest.yml without its native-histogram cases:\n{sout}"
            );
            continue;
        }
        assert_eq!(pcode, code, "exit codes differ on {file}:\npromtool:\n{pout}\nmodelwatch:\n{out}");
        if *file == "failing.yml" || *file == "bad-rules-error-test.yml" {
            // Each failure, by what failed and when, is the same in both.
            assert_eq!(failure_heads(&out), failure_heads(&pout), "promtool:\n{pout}\nmodelwatch:\n{out}");
        }
        if *file == "bad-promql.yml" {
            assert!(pout.contains("many-to-many matching not allowed"), "{pout}");
        }
    }
}

/// `unittest.yml` without its native-histogram input series and expression tests, written to
/// `to` with the rule file it names, for the older promtool.
fn strip_histograms(d: &Path, to: &Path) {
    std::fs::copy(d.join("rules.yml"), to.join("rules.yml")).unwrap();
    let src = std::fs::read_to_string(d.join("unittest.yml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&src).unwrap();
    for tg in doc["tests"].as_sequence_mut().unwrap() {
        if let Some(s) = tg.get_mut("input_series").and_then(|v| v.as_sequence_mut()) {
            s.retain(|x| !x["values"].as_str().is_some_and(|v| v.contains("{{")));
        }
        if let Some(s) = tg.get_mut("promql_expr_test").and_then(|v| v.as_sequence_mut()) {
            s.retain(|x| {
                !x["exp_samples"].as_sequence().is_some_and(|ss| ss.iter().any(|e| e.get("histogram").is_some()))
            });
        }
    }
    std::fs::write(to.join("unittest.yml"), serde_yaml::to_string(&doc).unwrap()).unwrap();
}

/// The shipped rules (`deploy/rules/model-serving.yml`) and their unit tests pass both tools.
#[test]
fn shipped_rules_pass_both_tools() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules");
    let prom = promtool_present();
    let (code, out) = mw(&d, &["rules", "check", "model-serving.yml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    let (code, out) = mw(&d, &["rules", "test", "model-serving.test.yml"]);
    assert_eq!(code, 0, "{out}");
    if prom {
        let (code, out) = run(&d, "promtool", &["check", "rules", "model-serving.yml"]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = run(&d, "promtool", &["test", "rules", "model-serving.test.yml"]);
        assert_eq!(code, 0, "{out}");
    }
}
