//! `modelwatch top`: a live view of a running daemon, like `nvidia-smi` and `top` for model
//! services. Per service: instances, throughput, error rate and p95 over the last minute; per
//! GPU: utilization, memory, temperature, power and the processes on it; firing alerts; the
//! daemon's ingest rates. Every figure is a PromQL query through `Query/Eval` (the same
//! engine as the reports and dashboards). Refreshes every `--interval` (1 s); `q` (or Ctrl-C)
//! quits. `--once` prints one frame without terminal control, for scripts.
use super::conn::Conn as Channel;
use crate::pb::{self, alerts_client::AlertsClient, query_client::QueryClient};
use crate::report::render::{bytes, ms, pct, rate, span};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

pub struct Args {
    pub addr: String,
    pub interval: Duration,
    pub once: bool,
}

type Labels = HashMap<String, String>;

async fn vector(q: &mut QueryClient<Channel>, expr: &str) -> Result<Vec<(Labels, f64)>, String> {
    let r = q
        .eval(pb::EvalRequest { query: expr.into(), time: String::new() })
        .await
        .map_err(|s| format!("{expr}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(r.series.into_iter().filter_map(|s| s.points.last().map(|p| (s.labels, p.value))).collect())
}

fn by<'a>(rows: &'a [(Labels, f64)], key: &str) -> BTreeMap<&'a str, f64> {
    rows.iter().map(|(l, v)| (l.get(key).map_or("", String::as_str), *v)).collect()
}

/// The per-service figures.
const REQS: &str = "sum by (service) (rate(modelwatch_inference_requests_total[1m]))";
const ERRS: &str = "sum by (service) (rate(modelwatch_inference_requests_total{status!=\"ok\"}[1m])) \
                    / sum by (service) (rate(modelwatch_inference_requests_total[1m]))";
const P95: &str =
    "histogram_quantile(0.95, sum by (service, le) (rate(modelwatch_inference_latency_seconds_bucket[1m])))";

/// One screen of text.
pub async fn frame(q: &mut QueryClient<Channel>, a: &mut AlertsClient<Channel>, addr: &str) -> Result<String, String> {
    let st = q.status(pb::StatusRequest {}).await.map_err(|s| format!("Status: {}", s.message()))?.into_inner();
    let mut out = String::new();
    let uptime = st.uptime.as_ref().map_or(0, |d| d.seconds * 1000);
    let now = crate::query::fmt_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
    );
    out.push_str(&format!(
        "modelwatch top  {addr}  {now}  up {}  ingest {} samples  {} events  {} logs   (q quits)\n\n",
        span(uptime),
        rate(st.samples_per_s),
        rate(st.events_per_s),
        rate(st.logs_per_s)
    ));

    // Services: those connected and those with traffic in the last minute.
    let (reqs, errs, p95) = (vector(q, REQS).await?, vector(q, ERRS).await?, vector(q, P95).await?);
    let (reqs, errs, p95) = (by(&reqs, "service"), by(&errs, "service"), by(&p95, "service"));
    let mut instances: BTreeMap<String, usize> = BTreeMap::new();
    for c in &st.services {
        *instances.entry(c.service.clone()).or_default() += 1;
    }
    for s in reqs.keys() {
        instances.entry(s.to_string()).or_default();
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|(s, n)| {
            let r = reqs.get(s.as_str()).copied();
            vec![
                s.clone(),
                n.to_string(),
                r.map_or("-".into(), rate),
                errs.get(s.as_str()).filter(|v| v.is_finite()).map_or("-".into(), |v| pct(*v)),
                p95.get(s.as_str()).filter(|v| v.is_finite()).map_or("-".into(), |v| ms(v * 1000.0)),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no model services connected or sending\n");
    } else {
        out.push_str(&crate::cli::alerts::table(&["SERVICE", "INSTANCES", "REQ/S (1m)", "ERRORS", "P95"], &rows));
    }
    out.push('\n');

    // GPUs, each with its processes.
    let util = vector(q, "gpu_utilization_percent").await?;
    if util.is_empty() {
        out.push_str("no GPU samples in the last 5 minutes\n");
    } else {
        let gpu_of = |rows: Vec<(Labels, f64)>| -> BTreeMap<String, f64> {
            rows.into_iter().map(|(l, v)| (l.get("gpu").cloned().unwrap_or_default(), v)).collect()
        };
        let used = gpu_of(vector(q, "gpu_memory_used_bytes").await?);
        let total = gpu_of(vector(q, "gpu_memory_total_bytes").await?);
        let temp = gpu_of(vector(q, "gpu_temperature_celsius").await?);
        let power = gpu_of(vector(q, "gpu_power_watts").await?);
        let procs = vector(q, "gpu_process_memory_bytes").await?;
        let proc_util = vector(q, "gpu_process_utilization_percent").await?;
        let mut gpus: Vec<(Labels, f64)> = util;
        gpus.sort_by_key(|(l, _)| l.get("gpu").and_then(|g| g.parse::<u32>().ok()).unwrap_or(u32::MAX));
        let mut rows = Vec::new();
        for (l, u) in &gpus {
            let g = l.get("gpu").cloned().unwrap_or_default();
            let mem = match (used.get(&g), total.get(&g)) {
                (Some(u), Some(t)) => format!("{} / {}", bytes(*u), bytes(*t)),
                (Some(u), None) => bytes(*u),
                _ => "-".into(),
            };
            rows.push(vec![
                g.clone(),
                l.get("model_name").cloned().unwrap_or_default(),
                format!("{u:.0}%"),
                mem,
                temp.get(&g).map_or("-".into(), |t| format!("{t:.0} C")),
                power.get(&g).map_or("-".into(), |p| format!("{p:.0} W")),
            ]);
            let mut mine: Vec<&(Labels, f64)> = procs.iter().filter(|(pl, _)| pl.get("gpu") == Some(&g)).collect();
            mine.sort_by(|x, y| y.1.total_cmp(&x.1));
            for (pl, m) in mine {
                let pid = pl.get("pid").cloned().unwrap_or_default();
                let sm = proc_util
                    .iter()
                    .find(|(ul, _)| ul.get("gpu") == Some(&g) && ul.get("pid") == Some(&pid))
                    .map_or(String::new(), |(_, v)| format!("{v:.0}%"));
                let owner = pl.get("service").filter(|s| !s.is_empty()).cloned().unwrap_or_else(|| "?".into());
                rows.push(vec![
                    String::new(),
                    format!("  pid {pid} {owner} {}", pl.get("model").cloned().unwrap_or_default())
                        .trim_end()
                        .to_string(),
                    sm,
                    bytes(*m),
                    String::new(),
                    String::new(),
                ]);
            }
        }
        out.push_str(&crate::cli::alerts::table(&["GPU", "NAME / PROCESS", "UTIL", "MEMORY", "TEMP", "POWER"], &rows));
    }
    out.push('\n');

    // Firing alerts.
    let alerts = a
        .active_alerts(pb::ActiveAlertsRequest { matchers: Vec::new() })
        .await
        .map_err(|s| format!("ActiveAlerts: {}", s.message()))?
        .into_inner()
        .alerts;
    let firing: Vec<Vec<String>> = alerts
        .iter()
        .filter(|x| x.state == "firing")
        .map(|x| {
            let sorted: BTreeMap<&String, &String> = x.labels.iter().filter(|(k, _)| *k != "alertname").collect();
            let labels: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                x.labels.get("alertname").cloned().unwrap_or_default(),
                labels.join(" "),
                crate::report::render::when(&x.fired_at),
                x.annotations.get("summary").cloned().unwrap_or_default(),
            ]
        })
        .collect();
    if firing.is_empty() {
        out.push_str("no alerts firing\n");
    } else {
        out.push_str(&format!("{} alert(s) firing\n", firing.len()));
        out.push_str(&crate::cli::alerts::table(&["ALERT", "LABELS", "SINCE", "SUMMARY"], &firing));
    }
    Ok(out)
}

/// The terminal in raw-ish mode (no echo, no line buffering, keys not turned into signals)
/// while it lives; restored on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            // The alternate screen, cursor hidden.
            print!("\x1b[?1049h\x1b[?25l");
            let _ = std::io::stdout().flush();
            Some(RawTerminal(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

pub async fn run(args: Args) -> Result<String, String> {
    let channel = super::conn::connect(&args.addr).await?;
    let mut q = QueryClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut a = AlertsClient::new(channel);
    if args.once {
        return frame(&mut q, &mut a, &args.addr).await;
    }
    let term = RawTerminal::enter();
    // Keys come from a thread blocked on stdin.
    let (tx, mut keys) = tokio::sync::mpsc::unbounded_channel::<u8>();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        loop {
            // SAFETY: reads one byte into a buffer we own.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
            if n <= 0 || tx.send(b[0]).is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout();
    loop {
        let text = match frame(&mut q, &mut a, &args.addr).await {
            Ok(t) => t,
            Err(e) => format!("modelwatch top  {}: {e}\n\n(retrying; q quits)\n", args.addr),
        };
        // Home, the frame (each line cleared to its end), then the rest of the screen cleared.
        let body: String = text.lines().map(|l| format!("{l}\x1b[K\r\n")).collect();
        let _ = write!(stdout, "\x1b[H{body}\x1b[J");
        let _ = stdout.flush();
        let deadline = tokio::time::sleep(args.interval);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                k = keys.recv() => match k {
                    Some(b'q') | Some(b'Q') | Some(3) => {
                        drop(term);
                        return Ok(String::new());
                    }
                    // stdin closed (not a terminal): keep refreshing until killed.
                    None => {
                        deadline.as_mut().await;
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
}
