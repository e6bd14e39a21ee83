//! Receivers for notification tests: an HTTP server on loopback that records every POST
//! (path with query, JSON body) and answers 503 while "down"; and the daemon's clock file.
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook`; other paths on the same port are recorded too.
    pub url: String,
    pub base: String,
    got: Arc<Mutex<Vec<(String, Value, i64)>>>,
    pub refused: Arc<Mutex<usize>>,
    pub down: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let got: Arc<Mutex<Vec<(String, Value, i64)>>> = Default::default();
        let refused: Arc<Mutex<usize>> = Default::default();
        let down = Arc::new(AtomicBool::new(false));
        let (g, r, dn) = (got.clone(), refused.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let (g, r, dn) = (g.clone(), r.clone(), dn.clone());
                std::thread::spawn(move || serve(conn, g, r, dn));
            }
        });
        Receiver { url: format!("{base}/hook"), base, got, refused, down }
    }

    /// Bodies posted to `/hook`.
    pub fn bodies(&self) -> Vec<Value> {
        self.at("/hook")
    }

    /// Bodies posted to `path` (the query string ignored).
    pub fn at(&self, path: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|(p, _)| p.split('?').next() == Some(path)).map(|(_, b)| b).collect()
    }

    /// Every accepted request: path with query, body.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.got.lock().unwrap().iter().map(|(p, b, _)| (p.clone(), b.clone())).collect()
    }

    /// Bodies posted to `path` with when each arrived (Unix ms, this machine's clock).
    pub fn timed(&self, path: &str) -> Vec<(Value, i64)> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|(p, _, _)| p.split('?').next() == Some(path)).map(|(_, b, t)| (b.clone(), *t)).collect()
    }

    /// Waits until `path` holds `n` bodies.
    pub async fn wait(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let b = self.at(path);
            if b.len() >= n {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} notifications arrived at {path}: {:#?}",
                b.len(),
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn serve(
    conn: std::net::TcpStream,
    got: Arc<Mutex<Vec<(String, Value, i64)>>>,
    refused: Arc<Mutex<usize>>,
    down: Arc<AtomicBool>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let status = if down.load(Ordering::SeqCst) {
            *refused.lock().unwrap() += 1;
            "503 Service Unavailable"
        } else {
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            got.lock().unwrap().push((path, serde_json::from_slice(&body).unwrap_or(Value::Null), at));
            "200 OK"
        };
        let _ = write!(w, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
    }
}

/// The daemon's clock (`MODELWATCH_CLOCK_FILE`): milliseconds in a file, replaced atomically.
pub struct Clock(pub PathBuf);

impl Clock {
    pub fn set(&self, ms: i64) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, ms.to_string()).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }
}
