//! GPU sampling behind [`GpuSource`]: [`super::nvml::NvmlSource`] on real hardware,
//! [`FakeGpu`] (scripted readings, vanishing GPUs, failing calls, XID events) for machines
//! without one. The sampler turns readings into series, attributes per-process GPU memory to
//! the model service that registered the pid, and records hardware faults (XID errors, changes
//! in ECC counts and in throttle reasons) as events: an error/warn log record (logger `gpu`,
//! fields gpu, uuid, kind, xid, pid) plus a counter, so an alert can fire on "XID 79 now".
//!
//! Source calls block (NVML does I/O to the driver): they run on the blocking pool under
//! `sampling.gpu_timeout`. A call still stuck from an earlier tick makes later ticks skip,
//! not pile up.
use super::{thread_cpu_seconds, SeriesSet, Sink};
use crate::pb;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GpuError(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
}

/// One tick's cheap readings of one GPU; `None` where the GPU or driver does not say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    pub utilization_percent: Option<u32>,
    pub memory_utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
    pub power_limit_milliwatts: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    pub fan_percent: Option<u32>,
    pub pcie_tx_kib_per_s: Option<u32>,
    pub pcie_rx_kib_per_s: Option<u32>,
    /// NVML clock-throttle reason bits.
    pub throttle_reasons: Option<u64>,
    pub ecc_corrected_total: Option<u64>,
    pub ecc_uncorrected_total: Option<u64>,
    pub retired_pages_single_bit: Option<u64>,
    pub retired_pages_double_bit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuProcess {
    pub pid: u32,
    pub memory_bytes: Option<u64>,
    pub sm_utilization_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct XidEvent {
    pub gpu: u32,
    pub xid: u64,
    pub pid: Option<u32>,
}

/// The hardware edge. Implementations block; the sampler calls them off the runtime.
pub trait GpuSource: Send {
    /// Driver and devices; an error means GPU sampling is off (no driver, no GPU).
    fn init(&mut self) -> Result<(String, Vec<DeviceInfo>), GpuError>;
    fn read(&mut self, gpu: u32) -> Result<GpuReading, GpuError>;
    /// Processes using the GPU (a costlier call, made on a slower schedule).
    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, GpuError>;
    /// XID errors since the last call (never blocks).
    fn xid_events(&mut self) -> Result<Vec<XidEvent>, GpuError>;
}

pub type GpuSourceRef = Arc<Mutex<Box<dyn GpuSource>>>;

/// Throttle reasons that mean the GPU is held back (not idle, not an application setting).
const THROTTLE_NAMES: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];
const BENIGN_THROTTLE: u64 = 0x1 | 0x2 | 0x100;

pub fn throttle_names(bits: u64) -> String {
    let names: Vec<&str> = THROTTLE_NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[derive(Debug, Clone)]
pub struct GpuConfig {
    pub interval: Duration,
    pub process_every: u32,
    pub timeout: Duration,
}

/// What one tick read, gathered on the blocking pool.
struct Tick {
    readings: Vec<(DeviceInfo, Result<GpuReading, GpuError>)>,
    processes: Vec<(u32, Result<Vec<GpuProcess>, GpuError>)>,
    xids: Result<Vec<XidEvent>, GpuError>,
    cpu_seconds: f64,
}

/// Turns ticks into series and fault events; keeps what it needs to see changes.
pub struct GpuSampler {
    devices: Vec<DeviceInfo>,
    prev: HashMap<u32, GpuReading>,
    xid_counts: BTreeMap<(u32, u64), u64>,
    throttled_seconds: HashMap<u32, f64>,
    interval: Duration,
    cpu_seconds: f64,
    /// Last log time per problem, so a GPU that stays gone logs once a minute, not per tick.
    logged: HashMap<String, Instant>,
}

fn gpu_labels(d: &DeviceInfo) -> [(&'static str, String); 3] {
    [("gpu", d.index.to_string()), ("uuid", d.uuid.clone()), ("model_name", d.name.clone())]
}

impl GpuSampler {
    pub fn new(devices: Vec<DeviceInfo>, interval: Duration) -> GpuSampler {
        GpuSampler {
            devices,
            prev: HashMap::new(),
            xid_counts: BTreeMap::new(),
            throttled_seconds: HashMap::new(),
            interval,
            cpu_seconds: 0.0,
            logged: HashMap::new(),
        }
    }

    fn log_limited(&mut self, key: String, f: impl FnOnce()) {
        let now = Instant::now();
        if self.logged.get(&key).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.logged.insert(key, now);
            f();
        }
    }

    /// Series and events of one tick. `owners` maps pids to (service, models) of registered
    /// model services.
    fn convert(
        &mut self,
        ts: i64,
        tick: Tick,
        owners: &HashMap<u32, (String, String)>,
    ) -> (SeriesSet, Vec<pb::LogRecord>) {
        let mut s = SeriesSet::new(ts);
        let mut events = Vec::new();
        let fault = |level: pb::Level, msg: String, fields: Vec<(&str, String)>| pb::LogRecord {
            timestamp_ms: ts,
            level: level as i32,
            message: msg,
            logger: "gpu".into(),
            error_type: fields.iter().find(|(k, _)| *k == "kind").map(|(_, v)| v.clone()).unwrap_or_default(),
            fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        };
        for (dev, reading) in tick.readings {
            let l = gpu_labels(&dev);
            let lr: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = match reading {
                Ok(r) => r,
                Err(e) => {
                    s.gauge("gpu_up", &lr, 0.0);
                    let gpu = dev.index;
                    self.log_limited(
                        format!("read {gpu}"),
                        || tracing::warn!(gpu, error = %e, "GPU reading failed; retrying every tick"),
                    );
                    continue;
                }
            };
            s.gauge("gpu_up", &lr, 1.0);
            let mut g = |name: &str, v: Option<f64>| {
                if let Some(v) = v {
                    s.gauge(name, &lr, v);
                }
            };
            g("gpu_utilization_percent", r.utilization_percent.map(f64::from));
            g("gpu_memory_utilization_percent", r.memory_utilization_percent.map(f64::from));
            g("gpu_memory_used_bytes", r.memory_used_bytes.map(|v| v as f64));
            g("gpu_memory_total_bytes", r.memory_total_bytes.map(|v| v as f64));
            g("gpu_temperature_celsius", r.temperature_celsius.map(f64::from));
            g("gpu_power_watts", r.power_milliwatts.map(|v| f64::from(v) / 1000.0));
            g("gpu_power_limit_watts", r.power_limit_milliwatts.map(|v| f64::from(v) / 1000.0));
            g("gpu_sm_clock_mhz", r.sm_clock_mhz.map(f64::from));
            g("gpu_memory_clock_mhz", r.memory_clock_mhz.map(f64::from));
            g("gpu_fan_percent", r.fan_percent.map(f64::from));
            g("gpu_pcie_tx_bytes_per_second", r.pcie_tx_kib_per_s.map(|v| f64::from(v) * 1024.0));
            g("gpu_pcie_rx_bytes_per_second", r.pcie_rx_kib_per_s.map(|v| f64::from(v) * 1024.0));
            g("gpu_throttle_reasons", r.throttle_reasons.map(|v| v as f64));
            let prev = self.prev.get(&dev.index).cloned();
            if let Some(bits) = r.throttle_reasons {
                let held = bits & !BENIGN_THROTTLE != 0;
                s.gauge("gpu_throttled", &lr, if held { 1.0 } else { 0.0 });
                let secs = self.throttled_seconds.entry(dev.index).or_default();
                if held {
                    *secs += self.interval.as_secs_f64();
                }
                s.counter("gpu_throttled_seconds_total", &lr, *secs);
                let before = prev.as_ref().and_then(|p| p.throttle_reasons).unwrap_or(0);
                if (before & !BENIGN_THROTTLE) != (bits & !BENIGN_THROTTLE) {
                    let (now_n, was_n) = (throttle_names(bits), throttle_names(before));
                    let level = if held { pb::Level::Warn } else { pb::Level::Info };
                    let msg = format!("GPU {} throttle reasons changed: {was_n} -> {now_n}", dev.index);
                    events.push(fault(
                        level,
                        msg,
                        vec![
                            ("gpu", dev.index.to_string()),
                            ("uuid", dev.uuid.clone()),
                            ("kind", "throttle".into()),
                            ("reasons", now_n),
                        ],
                    ));
                }
            }
            for (kind, now_v, prev_v, level) in [
                (
                    "corrected",
                    r.ecc_corrected_total,
                    prev.as_ref().and_then(|p| p.ecc_corrected_total),
                    pb::Level::Warn,
                ),
                (
                    "uncorrected",
                    r.ecc_uncorrected_total,
                    prev.as_ref().and_then(|p| p.ecc_uncorrected_total),
                    pb::Level::Error,
                ),
            ] {
                let Some(n) = now_v else { continue };
                let lk: Vec<(&str, &str)> = lr.iter().copied().chain([("type", kind)]).collect();
                s.counter("gpu_ecc_errors_total", &lk, n as f64);
                if let Some(p) = prev_v.filter(|p| n > *p) {
                    let msg = format!("GPU {} {kind} ECC errors: +{} (volatile total {n})", dev.index, n - p);
                    events.push(fault(
                        level,
                        msg,
                        vec![
                            ("gpu", dev.index.to_string()),
                            ("uuid", dev.uuid.clone()),
                            ("kind", format!("ecc_{kind}")),
                            ("delta", (n - p).to_string()),
                        ],
                    ));
                }
            }
            for (cause, v) in [("single_bit", r.retired_pages_single_bit), ("double_bit", r.retired_pages_double_bit)] {
                if let Some(n) = v {
                    let lk: Vec<(&str, &str)> = lr.iter().copied().chain([("cause", cause)]).collect();
                    s.gauge("gpu_retired_pages", &lk, n as f64);
                }
            }
            self.prev.insert(dev.index, r);
        }
        for (gpu, procs) in tick.processes {
            let Some(dev) = self.devices.iter().find(|d| d.index == gpu).cloned() else { continue };
            match procs {
                Ok(procs) => {
                    for p in procs {
                        let pid = p.pid.to_string();
                        let (service, models) = owners.get(&p.pid).cloned().unwrap_or_default();
                        let idx = dev.index.to_string();
                        let labels = [
                            ("gpu", idx.as_str()),
                            ("uuid", dev.uuid.as_str()),
                            ("pid", pid.as_str()),
                            ("service", service.as_str()),
                            ("model", models.as_str()),
                        ];
                        if let Some(m) = p.memory_bytes {
                            s.gauge("gpu_process_memory_bytes", &labels, m as f64);
                        }
                        if let Some(u) = p.sm_utilization_percent {
                            s.gauge("gpu_process_utilization_percent", &labels, f64::from(u));
                        }
                    }
                }
                Err(e) => self
                    .log_limited(format!("procs {gpu}"), || tracing::warn!(gpu, error = %e, "GPU process list failed")),
            }
        }
        let mut first_seen = Vec::new();
        match tick.xids {
            Ok(xids) => {
                for x in xids {
                    let n = self.xid_counts.entry((x.gpu, x.xid)).or_default();
                    if *n == 0 {
                        // A counter starts from zero: `increase` then counts the first XID.
                        first_seen.push((x.gpu, x.xid));
                    }
                    *n += 1;
                    let dev = self.devices.iter().find(|d| d.index == x.gpu).cloned();
                    let uuid = dev.as_ref().map(|d| d.uuid.clone()).unwrap_or_default();
                    let (gpu, xid) = (x.gpu.to_string(), x.xid.to_string());
                    let pid = x.pid.map(|p| p.to_string()).unwrap_or_default();
                    let service = x.pid.and_then(|p| owners.get(&p)).map(|o| o.0.clone()).unwrap_or_default();
                    let msg = format!(
                        "GPU {gpu} XID {xid}{}",
                        if pid.is_empty() { String::new() } else { format!(" (pid {pid})") }
                    );
                    let mut fields =
                        vec![("gpu", gpu), ("uuid", uuid), ("kind", "xid".into()), ("xid", xid), ("pid", pid)];
                    if !service.is_empty() {
                        fields.push(("service", service));
                    }
                    events.push(fault(pb::Level::Error, msg, fields));
                }
            }
            Err(e) => self.log_limited("xid".into(), || tracing::warn!(error = %e, "reading GPU XID events failed")),
        }
        // Every XID counter seen so far, each tick, as counters are.
        for ((gpu, xid), n) in &self.xid_counts {
            let uuid = self.devices.iter().find(|d| d.index == *gpu).map(|d| d.uuid.clone()).unwrap_or_default();
            let (g, x) = (gpu.to_string(), xid.to_string());
            s.counter("gpu_xid_errors_total", &[("gpu", &g), ("uuid", &uuid), ("xid", &x)], *n as f64);
            if first_seen.contains(&(*gpu, *xid)) {
                if let Some(last) = s.series.last_mut() {
                    last.timestamps_ms.insert(0, ts - 1);
                    last.values.insert(0, 0.0);
                }
            }
        }
        self.cpu_seconds += tick.cpu_seconds;
        s.counter("modelwatch_sampler_cpu_seconds_total", &[("sampler", "gpu")], super::round3(self.cpu_seconds));
        (s, events)
    }
}

/// Starts GPU sampling: initializes the source (one clear line and a Status entry when there
/// is no driver or no GPU), then samples until the token fires.
pub async fn run(sink: Sink, source: Box<dyn GpuSource>, cfg: GpuConfig, shutdown: CancellationToken) {
    let source: GpuSourceRef = Arc::new(Mutex::new(source));
    let src = source.clone();
    let init = tokio::time::timeout(cfg.timeout, tokio::task::spawn_blocking(move || lock(&src).init())).await;
    let (driver, devices) = match init {
        Ok(Ok(Ok((driver, devices)))) if !devices.is_empty() => (driver, devices),
        Ok(Ok(Ok(_))) => return off(&sink, "no GPU found".into()),
        Ok(Ok(Err(e))) => return off(&sink, e.0),
        Ok(Err(e)) => return off(&sink, format!("GPU source panicked: {e}")),
        Err(_) => return off(&sink, format!("GPU source did not answer within {:?}", cfg.timeout)),
    };
    let names: Vec<String> = devices.iter().map(|d| format!("{} {}", d.index, d.name)).collect();
    tracing::info!(%driver, gpus = ?names, "GPU sampling on");
    sink.set_status(
        "gpu",
        format!("sampling {} GPU(s) every {} ({driver})", devices.len(), humantime::format_duration(cfg.interval)),
    );
    let mut sampler = GpuSampler::new(devices.clone(), cfg.interval);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    let mut recent_costs: VecDeque<f64> = VecDeque::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let with_procs = n.is_multiple_of(u64::from(cfg.process_every.max(1)));
        n += 1;
        let src = source.clone();
        let devs = devices.clone();
        let job = tokio::task::spawn_blocking(move || {
            // A call stuck since an earlier tick holds the lock: skip rather than queue up.
            let Ok(mut s) = src.try_lock() else { return None };
            let cpu0 = thread_cpu_seconds();
            let readings = devs.iter().map(|d| (d.clone(), s.read(d.index))).collect();
            let processes =
                if with_procs { devs.iter().map(|d| (d.index, s.processes(d.index))).collect() } else { Vec::new() };
            let xids = s.xid_events();
            Some(Tick { readings, processes, xids, cpu_seconds: thread_cpu_seconds() - cpu0 })
        });
        let tick_data = match tokio::time::timeout(cfg.timeout, job).await {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => {
                sampler.log_limited("busy".into(), || {
                    tracing::warn!("an earlier GPU call is still running; skipping ticks")
                });
                continue;
            }
            Ok(Err(e)) => {
                sampler.log_limited("panic".into(), || tracing::error!(error = %e, "GPU source panicked"));
                continue;
            }
            Err(_) => {
                sampler.log_limited("timeout".into(), || tracing::warn!(timeout = ?cfg.timeout, "GPU calls timed out"));
                continue;
            }
        };
        recent_costs.push_back(tick_data.cpu_seconds);
        if recent_costs.len() > 60 {
            recent_costs.pop_front();
        }
        let owners: HashMap<u32, (String, String)> = sink
            .ctx()
            .registry
            .clients()
            .into_iter()
            .filter(|c| c.info.pid != 0)
            .map(|c| {
                let models: Vec<String> = c.info.models.iter().map(|m| m.name.clone()).collect();
                (c.info.pid, (c.info.service, models.join(",")))
            })
            .collect();
        let (set, events) = sampler.convert(sink.ctx().clock.now_ms(), tick_data, &owners);
        sink.metrics("gpu", set).await;
        sink.logs(events).await;
    }
}

fn lock(s: &Mutex<Box<dyn GpuSource>>) -> std::sync::MutexGuard<'_, Box<dyn GpuSource>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn off(sink: &Sink, why: String) {
    tracing::info!(reason = %why, "GPU sampling off; host sampling carries on");
    sink.set_status("gpu", format!("off: {why}"));
}

// ---- fake ---------------------------------------------------------------------------------

/// One scripted tick of a [`FakeGpu`].
#[derive(Debug, Clone, Default)]
pub struct FakeTick {
    /// Per GPU index: a reading, or an error (the GPU vanished, a call failed).
    pub readings: BTreeMap<u32, Result<GpuReading, GpuError>>,
    pub processes: BTreeMap<u32, Vec<GpuProcess>>,
    pub xids: Vec<XidEvent>,
}

/// Scripted GPUs for machines without one: each sampler tick takes the next [`FakeTick`]; the
/// last one repeats (without its XID events).
pub struct FakeGpu {
    pub devices: Result<Vec<DeviceInfo>, GpuError>,
    pub script: VecDeque<FakeTick>,
    current: Option<FakeTick>,
    ticks: u64,
}

impl FakeGpu {
    pub fn new(devices: Result<Vec<DeviceInfo>, GpuError>, script: Vec<FakeTick>) -> FakeGpu {
        FakeGpu { devices, script: script.into(), current: None, ticks: 0 }
    }

    fn advance(&mut self) {
        if let Some(next) = self.script.pop_front() {
            self.current = Some(next);
        } else if let Some(c) = self.current.as_mut() {
            c.xids.clear();
        }
        self.ticks += 1;
    }
}

impl GpuSource for FakeGpu {
    fn init(&mut self) -> Result<(String, Vec<DeviceInfo>), GpuError> {
        self.devices.clone().map(|d| ("fake driver".to_string(), d))
    }

    fn read(&mut self, gpu: u32) -> Result<GpuReading, GpuError> {
        // The first GPU read of a tick moves the script on.
        if gpu == self.devices.as_ref().ok().and_then(|d| d.first()).map_or(0, |d| d.index) {
            self.advance();
        }
        match self.current.as_ref().and_then(|t| t.readings.get(&gpu)) {
            Some(r) => r.clone(),
            None => Err(GpuError(format!("GPU {gpu} not in the script"))),
        }
    }

    fn processes(&mut self, gpu: u32) -> Result<Vec<GpuProcess>, GpuError> {
        Ok(self.current.as_ref().and_then(|t| t.processes.get(&gpu).cloned()).unwrap_or_default())
    }

    fn xid_events(&mut self) -> Result<Vec<XidEvent>, GpuError> {
        Ok(self.current.as_mut().map(|t| std::mem::take(&mut t.xids)).unwrap_or_default())
    }
}
