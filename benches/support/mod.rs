//! Shared by the benchmarks: the release daemon as a child process, samplers off so that only
//! the benchmark's data is measured.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `modelwatch serve` on a loopback port 0 over `dir` with extra `MODELWATCH__*`
/// settings; returns the child and its `http://` address.
pub fn start_daemon(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("MODELWATCH_LOG", "warn")
        .env("MODELWATCH__SAMPLING__HOST_INTERVAL", "0s")
        .env("MODELWATCH__SAMPLING__GPU", "off")
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning modelwatch");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("reading its first line");
    let addr = line.trim().strip_prefix("listening on ").expect("a `listening on` line").to_string();
    (child, format!("http://{addr}"))
}
