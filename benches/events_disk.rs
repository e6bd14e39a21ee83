//! Bytes on disk per inference event, against the same events written as JSON lines and
//! compressed with `zstd -3`, in one run (a benchmark, not a test):
//!
//!     cargo bench --bench events_disk -- [--events N] [--logs]
//!
//! With `--logs`, the same for N log records shaped like a model service's: three services,
//! levels mostly info, messages from a dozen templates with numbers, ids and paths in them, a
//! random request id on four in five, an error type on errors, a logger and two fields.
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

/// Where `n` records at about 2 a millisecond start so as to end now (the daemon's age limits
/// take them).
fn first_ts(n: u64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now - n as i64 / 2 - 60_000
}

fn events(n: u64) -> Vec<pb::InferenceEvent> {
    let services = ["chat-api", "embed-api", "vision-api"];
    let models = ["llama-3-8b", "llama-3-70b", "bge-large", "clip-vit"];
    let endpoints = ["/v1/chat/completions", "/v1/embeddings", "/v1/images"];
    let errors = ["timeout", "oom", "invalid_input"];
    let regions = ["us-east-1", "eu-west-1", "ap-south-1"];
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    let mut ts = first_ts(n);
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

fn logs(n: u64) -> Vec<pb::LogRecord> {
    let services = ["chat-api", "embed-api", "vision-api"];
    let loggers = ["server", "batcher", "cache", "scheduler"];
    let models = ["llama-3-8b", "llama-3-70b", "bge-large", "clip-vit"];
    let errors = ["timeout", "oom", "invalid_input"];
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ts = first_ts(n);
    (0..n)
        .map(|_| {
            ts += r.below(2) as i64;
            let m = r.below(4) as usize;
            let roll = r.below(100);
            let (level, error_type, message) = match roll {
                0..=2 => (
                    pb::Level::Error,
                    errors[r.below(3) as usize].to_string(),
                    format!(
                        "inference failed on gpu {}: {} after {} ms",
                        r.below(8),
                        errors[r.below(3) as usize],
                        r.below(30_000)
                    ),
                ),
                3..=12 => (
                    pb::Level::Warn,
                    String::new(),
                    match r.below(3) {
                        0 => {
                            format!("slow request: {} ms in queue, {} ms total", r.below(2_000), 1_000 + r.below(9_000))
                        }
                        1 => format!(
                            "kv cache at {}% on gpu {}, evicting {} blocks",
                            80 + r.below(20),
                            r.below(8),
                            r.below(512)
                        ),
                        _ => format!("retrying upstream /v1/embeddings (attempt {} of 3)", 1 + r.below(3)),
                    },
                ),
                _ => (
                    pb::Level::Info,
                    String::new(),
                    match r.below(6) {
                        0 => format!(
                            "request served in {} ms, {} prompt tokens, {} completion tokens",
                            r.below(5_000),
                            r.below(2_000),
                            r.below(500)
                        ),
                        1 => format!("batch of {} scheduled on gpu {}", 1 + r.below(32), r.below(8)),
                        2 => format!("cache hit for prefix {:08x} ({} tokens)", r.next() as u32, r.below(4_000)),
                        3 => format!("loaded adapter tenant-{} in {} ms", r.below(40), r.below(800)),
                        4 => format!("GET /v1/models/{} 200 {}us", models[m], r.below(900)),
                        _ => format!("queue depth {} (p95 wait {} ms)", r.below(64), r.below(400)),
                    },
                ),
            };
            pb::LogRecord {
                timestamp_ms: ts,
                level: level as i32,
                message,
                service: services[m.min(2)].into(),
                request_id: if r.below(5) == 0 { String::new() } else { format!("{:016x}{:016x}", r.next(), r.next()) },
                error_type,
                fields: [
                    ("model".to_string(), models[m].to_string()),
                    ("tenant".to_string(), format!("tenant-{}", r.below(40))),
                ]
                .into_iter()
                .collect(),
                logger: loggers[r.below(4) as usize].into(),
            }
        })
        .collect()
}

/// One log record as a JSON object, as [`json`] makes an event's.
fn log_json(l: &pb::LogRecord) -> serde_json::Value {
    let level = pb::Level::try_from(l.level).map_or("LEVEL_UNSPECIFIED", |v| v.as_str_name());
    let mut o = serde_json::json!({
        "timestampMs": l.timestamp_ms.to_string(),
        "level": level,
        "message": l.message,
        "service": l.service,
        "logger": l.logger,
        "fields": l.fields,
    });
    if !l.request_id.is_empty() {
        o["requestId"] = l.request_id.clone().into();
    }
    if !l.error_type.is_empty() {
        o["errorType"] = l.error_type.clone().into();
    }
    o
}

/// What the bench stores: events or log records.
enum Records {
    Events(Vec<pb::InferenceEvent>),
    Logs(Vec<pb::LogRecord>),
}

impl Records {
    fn len(&self) -> usize {
        match self {
            Records::Events(v) => v.len(),
            Records::Logs(v) => v.len(),
        }
    }

    fn json_lines(&self) -> Vec<u8> {
        let mut lines = Vec::new();
        let mut put = |v: serde_json::Value| {
            serde_json::to_writer(&mut lines, &v).unwrap();
            lines.push(b'\n');
        };
        match self {
            Records::Events(v) => v.iter().for_each(|e| put(json(e))),
            Records::Logs(v) => v.iter().for_each(|l| put(log_json(l))),
        }
        lines
    }

    fn push(&self, client: &Client) {
        match self {
            Records::Events(v) => v.iter().for_each(|e| client.event(e.clone())),
            Records::Logs(v) => v.iter().for_each(|l| client.log_record(l.clone())),
        }
    }
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

/// Starts a daemon on `dir`, stores `recs` through the Rust client, stops it cleanly; returns the
/// folder's bytes.
fn store(dir: &Path, recs: Option<&Records>) -> u64 {
    let (mut child, url) = support::start_daemon(dir, &[]);
    if let Some(recs) = recs {
        let mut cfg = Config::new(&url, "bench");
        cfg.queue_capacity = recs.len() + 1;
        cfg.batch_size = 5_000;
        let client = Client::start(cfg);
        recs.push(&client);
        assert!(client.flush(Duration::from_secs(600)), "flush: {:?}", client.stats());
        let s = client.stats();
        assert!(s.dropped == 0 && s.rejected == 0 && s.acked == recs.len() as u64, "{s:?}");
        client.close(Duration::from_secs(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    support::du(dir)
}

fn main() {
    let mut n: u64 = 1_000_000;
    let mut log_records = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--events" {
            n = args.next().and_then(|v| v.parse().ok()).expect("--events N");
        }
        log_records |= a == "--logs";
    }
    let (recs, what) =
        if log_records { (Records::Logs(logs(n)), "record") } else { (Records::Events(events(n)), "event") };
    // JSON lines through zstd -3.
    let lines = recs.json_lines();
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
    let empty = store(&work.path().join("empty"), None);
    let full = store(&work.path().join("full"), Some(&recs));
    let mw = full.saturating_sub(empty);
    let parts: Vec<(String, u64)> = std::fs::read_dir(work.path().join("full"))
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), du_any(&e.path())))
        .filter(|(_, b)| *b > 0)
        .collect();
    let per = |b: u64| b as f64 / n as f64;
    println!("{n} {what}s");
    println!("| form | bytes | bytes/{what} | / JSON+zstd |");
    println!("|---|---|---|---|");
    println!("| JSON lines | {json_bytes} | {:.1} | |", per(json_bytes as u64));
    println!("| JSON lines, zstd -3 | {zstd_bytes} | {:.1} | 1.00 |", per(zstd_bytes as u64));
    println!(
        "| modelwatch data folder, growth over an empty one ({full} - {empty}) | {mw} | {:.1} | {:.3} |",
        per(mw),
        mw as f64 / zstd_bytes as f64
    );
    for (name, b) in &parts {
        println!("  {name}: {b} bytes ({:.1}/{what})", per(*b));
    }
    let json = serde_json::json!({
        "parts": parts.iter().map(|(n, b)| (n.clone(), serde_json::Value::from(*b))).collect::<serde_json::Map<_, _>>(),
        "kind": if log_records { "logs" } else { "events" },
        "records": n,
        "json_bytes": json_bytes,
        "json_zstd3_bytes": zstd_bytes,
        "modelwatch_bytes": mw,
        "modelwatch_empty_folder_bytes": empty,
        "ratio_to_json_zstd3": mw as f64 / zstd_bytes as f64,
    });
    let file = if log_records { "target/bench-logs-disk.json" } else { "target/bench-events-disk.json" };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("written to {}", path.display());
}
