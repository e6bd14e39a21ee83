//! Bytes on disk per inference event, against the same events written as JSON lines and
//! compressed with `zstd -3`, in one run (a benchmark, not a test):
//!
//!     cargo bench --bench events_disk -- [--events N]
//!
//! The events are deterministic and shaped like a model service's: 3 services, 4 models with 2
//! versions, 3 endpoints, a random 128-bit request id each (hex, as most services log them),
//! log-normal-ish latencies with stage splits, token and byte counts, 2% errors of three types,
//! two labels, timestamps at about 2,000/s with millisecond jitter, ending now. A release daemon stores
//! them through the Rust client (acked after fsync), stops cleanly (final checkpoint, WAL
//! emptied), and its data folder is measured against the same procedure with no events, so
//! the figure is the events' own cost. Apparent file sizes, everything in the folder counted.
mod support;

use modelwatch_client::{pb, Client, Config};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Roughly normal (the sum of four uniforms), mean 0, sd 1.
    fn normal(&mut self) -> f64 {
        let u: f64 = (0..4).map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64).sum();
        (u - 2.0) / (1.0f64 / 3.0).sqrt()
    }
}

fn events(n: u64) -> Vec<pb::InferenceEvent> {
    let services = ["chat-api", "embed-api", "vision-api"];
    let models = ["llama-3-8b", "llama-3-70b", "bge-large", "clip-vit"];
    let endpoints = ["/v1/chat/completions", "/v1/embeddings", "/v1/images"];
    let errors = ["timeout", "oom", "invalid_input"];
    let regions = ["us-east-1", "eu-west-1", "ap-south-1"];
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    // Ending now, so that the daemon's age limits take them (about 2 a millisecond).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut ts = now - n as i64 / 2 - 60_000;
    (0..n)
        .map(|_| {
            ts += r.below(2) as i64;
            let m = r.below(4) as usize;
            let err = r.below(50) == 0;
            let latency_us = ((10.5 + 0.6 * r.normal() + m as f64 * 0.3).exp()) as u64;
            let queue = latency_us / (5 + r.below(20));
            let pre = latency_us / (10 + r.below(40));
            let post = latency_us / (20 + r.below(60));
            let prompt = 50 + r.below(2000) as u32;
            let completion = if m < 2 { 10 + r.below(500) as u32 } else { 0 };
            pb::InferenceEvent {
                timestamp_ms: ts,
                service: services[m.min(2)].into(),
                model: models[m].into(),
                model_version: format!("2024-0{}", 1 + r.below(2)),
                endpoint: endpoints[m.min(2)].into(),
                request_id: format!("{:016x}{:016x}", r.next(), r.next()),
                status: if err { pb::Status::Error } else { pb::Status::Ok } as i32,
                error_type: if err { errors[r.below(3) as usize].into() } else { String::new() },
                latency_us,
                stages: Some(pb::Stages {
                    queue_us: queue,
                    preprocess_us: pre,
                    inference_us: latency_us - queue - pre - post,
                    postprocess_us: post,
                    ..Default::default()
                }),
                input_bytes: u64::from(prompt) * 4 + r.below(64),
                output_bytes: u64::from(completion) * 4 + r.below(64),
                prompt_tokens: prompt,
                completion_tokens: completion,
                batch_size: 1 + r.below(8) as u32,
                gpu: 1 + r.below(8) as u32,
                labels: [
                    ("region".to_string(), regions[r.below(3) as usize].to_string()),
                    ("tenant".to_string(), format!("tenant-{}", r.below(40))),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect()
}

/// One event as a JSON object: the proto3 JSON mapping's field names, zero values left out,
/// as a service would log it.
fn json(e: &pb::InferenceEvent) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        o.insert(k.to_string(), v);
    };
    put("timestampMs", e.timestamp_ms.to_string().into());
    put("service", e.service.clone().into());
    put("model", e.model.clone().into());
    put("modelVersion", e.model_version.clone().into());
    put("endpoint", e.endpoint.clone().into());
    put("requestId", e.request_id.clone().into());
    put("status", if e.status == pb::Status::Error as i32 { "STATUS_ERROR" } else { "STATUS_OK" }.into());
    if !e.error_type.is_empty() {
        put("errorType", e.error_type.clone().into());
    }
    put("latencyUs", e.latency_us.to_string().into());
    if let Some(s) = &e.stages {
        put(
            "stages",
            serde_json::json!({
                "queueUs": s.queue_us.to_string(),
                "preprocessUs": s.preprocess_us.to_string(),
                "inferenceUs": s.inference_us.to_string(),
                "postprocessUs": s.postprocess_us.to_string(),
            }),
        );
    }
    put("inputBytes", e.input_bytes.to_string().into());
    put("outputBytes", e.output_bytes.to_string().into());
    put("promptTokens", e.prompt_tokens.into());
    if e.completion_tokens > 0 {
        put("completionTokens", e.completion_tokens.into());
    }
    put("batchSize", e.batch_size.into());
    put("gpu", e.gpu.into());
    put("labels", serde_json::to_value(&e.labels).unwrap());
    serde_json::Value::Object(o)
}

/// A file's or a folder's bytes.
fn du_any(p: &Path) -> u64 {
    if p.is_dir() {
        support::du(p)
    } else {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }
}

/// Starts a daemon on `dir`, stores `evs` through the Rust client, stops it cleanly; returns the
/// folder's bytes.
fn store(dir: &Path, evs: &[pb::InferenceEvent]) -> u64 {
    let (mut child, url) = support::start_daemon(dir, &[]);
    if !evs.is_empty() {
        let mut cfg = Config::new(&url, "bench");
        cfg.queue_capacity = evs.len() + 1;
        cfg.batch_size = 5_000;
        let client = Client::start(cfg);
        for e in evs {
            client.event(e.clone());
        }
        assert!(client.flush(Duration::from_secs(600)), "flush: {:?}", client.stats());
        let s = client.stats();
        assert!(s.dropped == 0 && s.rejected == 0 && s.acked == evs.len() as u64, "{s:?}");
        client.close(Duration::from_secs(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    support::du(dir)
}

fn main() {
    let mut n: u64 = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--events" {
            n = args.next().and_then(|v| v.parse().ok()).expect("--events N");
        }
    }
    let evs = events(n);
    // JSON lines through zstd -3.
    let mut lines = Vec::new();
    for e in &evs {
        serde_json::to_writer(&mut lines, &json(e)).unwrap();
        lines.push(b'\n');
    }
    let mut z = Command::new("zstd")
        .args(["-3", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd (Debian package zstd) must be installed for this benchmark");
    let mut stdin = z.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&lines).map(|_| lines.len()));
    let out = z.wait_with_output().unwrap();
    let json_bytes = feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    let zstd_bytes = out.stdout.len();

    let work = tempfile::tempdir().unwrap();
    let empty = store(&work.path().join("empty"), &[]);
    let full = store(&work.path().join("full"), &evs);
    let mw = full.saturating_sub(empty);
    let parts: Vec<(String, u64)> = std::fs::read_dir(work.path().join("full"))
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), du_any(&e.path())))
        .filter(|(_, b)| *b > 0)
        .collect();
    let per = |b: u64| b as f64 / n as f64;
    println!("{n} events");
    println!("| form | bytes | bytes/event | / JSON+zstd |");
    println!("|---|---|---|---|");
    println!("| JSON lines | {json_bytes} | {:.1} | |", per(json_bytes as u64));
    println!("| JSON lines, zstd -3 | {zstd_bytes} | {:.1} | 1.00 |", per(zstd_bytes as u64));
    println!(
        "| modelwatch data folder, growth over an empty one ({full} - {empty}) | {mw} | {:.1} | {:.2} |",
        per(mw),
        mw as f64 / zstd_bytes as f64
    );
    for (name, b) in &parts {
        println!("  {name}: {b} bytes ({:.1}/event)", per(*b));
    }
    let json = serde_json::json!({
        "parts": parts.iter().map(|(n, b)| (n.clone(), serde_json::Value::from(*b))).collect::<serde_json::Map<_, _>>(),
        "events": n,
        "json_bytes": json_bytes,
        "json_zstd3_bytes": zstd_bytes,
        "modelwatch_bytes": mw,
        "modelwatch_empty_folder_bytes": empty,
        "ratio_to_json_zstd3": mw as f64 / zstd_bytes as f64,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-events-disk.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("written to {}", path.display());
}
