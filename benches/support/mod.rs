//! Shared by the benchmarks: the release daemon as a child process, samplers off so that only
//! the benchmark's data is measured; the `../shared/bench` data set and its CSV reader.
#![allow(dead_code)]
use modelwatch::pb;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Daemons started by this process: a benchmark that panics (an assertion, a refused call)
/// SIGKILLs them on its way out instead of leaving them running on the machine.
static DAEMONS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn kill_on_panic(pid: u32) {
    let mut pids = DAEMONS.lock().unwrap_or_else(|e| e.into_inner());
    if pids.is_empty() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            for &pid in DAEMONS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                // Only if that pid is still one of ours (a stopped daemon's pid may be reused).
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains("modelwatch") {
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }));
    }
    pids.push(pid);
}

/// Starts `modelwatch serve` on a loopback port 0 over `dir` with extra `MODELWATCH__*`
/// settings; returns the child and its `http://` address.
pub fn start_daemon(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let (child, grpc, _) = start_daemon_http(dir, env);
    (child, grpc)
}

/// As [`start_daemon`], also returning the HTTP (Prometheus API) address, `host:port`.
pub fn start_daemon_http(dir: &Path, env: &[(&str, &str)]) -> (Child, String, String) {
    // `MODELWATCH_BENCH_WRAP="heaptrack -o /tmp/mw"` (or `perf record -g -o ...`) runs the
    // daemon under a profiler: the wrapper's words come first, then the daemon's command line.
    let wrap: Vec<String> =
        std::env::var("MODELWATCH_BENCH_WRAP").unwrap_or_default().split_whitespace().map(String::from).collect();
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(env!("CARGO_BIN_EXE_modelwatch"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_modelwatch")),
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("MODELWATCH_LOG", "warn")
        .env("MODELWATCH__SAMPLING__HOST_INTERVAL", "0s")
        .env("MODELWATCH__SAMPLING__SELF_INTERVAL", "0s")
        .env("MODELWATCH__SAMPLING__GPU", "off")
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning modelwatch");
    kill_on_panic(child.id());
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (mut l1, mut l2) = (String::new(), String::new());
    // A wrapper may print lines of its own first.
    while !l1.starts_with("listening on ") {
        l1.clear();
        assert!(out.read_line(&mut l1).expect("a line") > 0, "the daemon's stdout ended before `listening on`");
    }
    out.read_line(&mut l2).expect("second line");
    let grpc = l1.trim().strip_prefix("listening on ").expect("a `listening on` line").to_string();
    let http = l2.trim().strip_prefix("http listening on ").expect("an `http listening on` line").to_string();
    (child, format!("http://{grpc}"), http)
}

pub fn dataset(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/bench-data/dataset.csv");
    if !out.exists() {
        let gen = root.join("../shared/bench/gen_dataset.py");
        assert!(gen.exists(), "no --csv given and {} is missing", gen.display());
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        eprintln!("generating {} ...", out.display());
        let st =
            Command::new("python3").arg(&gen).arg("--csv").arg(&out).arg("--om").arg("/dev/null").status().unwrap();
        assert!(st.success(), "gen_dataset.py failed");
    }
    out
}

pub type SeriesData = (String, Vec<pb::Label>, Vec<i64>, Vec<f64>);

pub fn load(path: &Path) -> Vec<SeriesData> {
    let f = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    let mut order: Vec<SeriesData> = Vec::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in f.lines().skip(1) {
        let line = line.unwrap();
        let mut p = line.split(',');
        let (name, labels, ts, val) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        let key = (name.to_string(), labels.to_string());
        let i = *index.entry(key).or_insert_with(|| {
            let lbls = labels
                .split(';')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    pb::Label { name: k.into(), value: v.into() }
                })
                .collect();
            order.push((name.to_string(), lbls, Vec::new(), Vec::new()));
            order.len() - 1
        });
        order[i].2.push(ts.parse().unwrap());
        order[i].3.push(val.parse().unwrap());
    }
    order
}

/// User plus system CPU seconds of process `pid` so far (from `/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Peak resident memory (VmHWM) of process `pid`, bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Apparent bytes of the files under `p`, folders walked.
pub fn du(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        du(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
