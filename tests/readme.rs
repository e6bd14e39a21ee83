//! The README's walk-through, run as written: every `grpcurl` command in its `sh` blocks, in
//! order, against the real daemon (the address swapped for the test daemon's), each answer
//! checked for what the README says it shows. A README example that breaks fails here.
mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn grpcurl() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/grpcurl");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("grpcurl")).find(|p| p.exists()))
}

/// The commands of the README's `sh` blocks, in order.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh && line.starts_with("grpcurl ") {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn every_readme_command_works_as_written() {
    let Some(bin) = grpcurl() else {
        assert!(std::env::var_os("CI").is_none(), "grpcurl is required in CI (make test installs it into .venv)");
        println!(
            "SKIPPED every_readme_command_works_as_written: grpcurl not found; `make test` installs it into .venv"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let cmds = readme_commands();
    assert!(cmds.len() >= 9, "the walk-through lost its commands: {cmds:?}");
    // What each answer must show (by RPC, in walk-through order), or the error it must be.
    let mut pushes = 0;
    for cmd in &cmds {
        assert!(cmd.contains("127.0.0.1:7070"), "{cmd}");
        let line = cmd.replacen("grpcurl", &bin.display().to_string(), 1).replace("127.0.0.1:7070", &d.addr);
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let rpc = cmd.rsplit(' ').next().unwrap();
        let want: &[&str] = match rpc {
            "modelwatch.v1.Ingest/Push" => {
                pushes += 1;
                if pushes == 1 {
                    &["\"accepted\": \"1\""]
                } else {
                    &["Code: InvalidArgument", "google.rpc.BadRequest", "events.events[0].timestamp_ms", "1 stored"]
                }
            }
            "modelwatch.v1.Query/ListSeries" => &["queue_depth", "card-detector"],
            "modelwatch.v1.Query/QueryRange" => {
                &["queue_depth", "\"value\": 3", "\"step\": \"300s\"", "\"time\": \"20"]
            }
            "modelwatch.v1.Query/Eval" => {
                &["\"resultType\": \"vector\"", "\"model\": \"card-detector\"", "\"value\": 3"]
            }
            "modelwatch.v1.Query/InferenceStats" => &["\"model_version\": \"v2\"", "\"count\": \"1\""],
            "modelwatch.v1.Query/SearchLogs" => &["slow card", "LEVEL_WARN"],
            "modelwatch.v1.Query/GetRequest" => &["card-detector", "slow card"],
            "modelwatch.v1.Query/Status" => &["\"samples\": \"1\"", "\"events\": \"1\""],
            "grpc.health.v1.Health/Check" => &["SERVING"],
            other => panic!("the README runs {other}: add what its answer must show"),
        };
        let expect_ok = !(rpc == "modelwatch.v1.Ingest/Push" && pushes > 1);
        assert_eq!(out.status.success(), expect_ok, "{cmd}\n{text}");
        for w in want {
            assert!(text.contains(w), "{cmd}\nshould show {w:?}:\n{text}");
        }
    }
    d.stop_ok();
}
