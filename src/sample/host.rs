//! Host sampler (sysinfo): CPU total and per core, load average, memory and swap, disk space
//! per mount and disk I/O, network I/O per interface, and per registered model-service process
//! CPU %, RSS and threads. Runs on the blocking pool (sysinfo reads /proc).
use super::{round3, thread_cpu_seconds, SeriesSet, Sink};
use std::collections::BTreeSet;
use std::time::Duration;
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio_util::sync::CancellationToken;

pub struct HostSampler {
    sys: System,
    disks: Disks,
    networks: Networks,
    ticks: u64,
    cpu_seconds: f64,
}

impl Default for HostSampler {
    fn default() -> Self {
        HostSampler {
            sys: System::new(),
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            ticks: 0,
            cpu_seconds: 0.0,
        }
    }
}

/// (pid, service, instance) of the processes model services registered.
pub type Registered = Vec<(u32, String, String)>;

impl HostSampler {
    /// One reading of everything, stamped `ts`.
    pub fn sample(&mut self, ts: i64, registered: &Registered) -> SeriesSet {
        let cpu0 = thread_cpu_seconds();
        let mut s = SeriesSet::new(ts);
        self.sys.refresh_cpu_usage();
        // CPU usage is a difference between two refreshes: the first tick has none.
        if self.ticks > 0 {
            s.gauge(
                "host_cpu_utilization_percent",
                &[("cpu", "total")],
                round3(f64::from(self.sys.global_cpu_usage())),
            );
            for (i, c) in self.sys.cpus().iter().enumerate() {
                s.gauge("host_cpu_utilization_percent", &[("cpu", &i.to_string())], round3(f64::from(c.cpu_usage())));
            }
        }
        let load = System::load_average();
        s.gauge("host_load1", &[], round3(load.one));
        s.gauge("host_load5", &[], round3(load.five));
        s.gauge("host_load15", &[], round3(load.fifteen));
        self.sys.refresh_memory();
        s.gauge("host_memory_total_bytes", &[], self.sys.total_memory() as f64);
        s.gauge("host_memory_used_bytes", &[], self.sys.used_memory() as f64);
        s.gauge("host_memory_available_bytes", &[], self.sys.available_memory() as f64);
        s.gauge("host_swap_total_bytes", &[], self.sys.total_swap() as f64);
        s.gauge("host_swap_used_bytes", &[], self.sys.used_swap() as f64);

        self.disks.refresh(true);
        let mut devices = BTreeSet::new();
        for d in self.disks.list() {
            let mount = d.mount_point().to_string_lossy();
            let device = d.name().to_string_lossy();
            let labels = [("mount", mount.as_ref()), ("device", device.as_ref())];
            s.gauge("host_disk_total_bytes", &labels, d.total_space() as f64);
            s.gauge("host_disk_available_bytes", &labels, d.available_space() as f64);
            // A device mounted twice reports its I/O twice: count it once.
            if devices.insert(device.to_string()) {
                let u = d.usage();
                s.counter("host_disk_read_bytes_total", &[("device", &device)], u.total_read_bytes as f64);
                s.counter("host_disk_written_bytes_total", &[("device", &device)], u.total_written_bytes as f64);
            }
        }
        self.networks.refresh(true);
        for (name, n) in self.networks.iter() {
            s.counter("host_network_received_bytes_total", &[("interface", name)], n.total_received() as f64);
            s.counter("host_network_transmitted_bytes_total", &[("interface", name)], n.total_transmitted() as f64);
        }

        if !registered.is_empty() {
            let pids: Vec<Pid> = registered.iter().map(|(p, _, _)| Pid::from_u32(*p)).collect();
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().with_tasks();
            self.sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
            for (pid, service, instance) in registered {
                let Some(p) = self.sys.process(Pid::from_u32(*pid)) else { continue };
                let pid_s = pid.to_string();
                let labels = [("service", service.as_str()), ("instance", instance.as_str()), ("pid", pid_s.as_str())];
                if self.ticks > 0 {
                    s.gauge("process_cpu_percent", &labels, round3(f64::from(p.cpu_usage())));
                }
                s.gauge("process_resident_memory_bytes", &labels, p.memory() as f64);
                if let Some(tasks) = p.tasks() {
                    s.gauge("process_threads", &labels, tasks.len() as f64);
                }
            }
        }
        self.ticks += 1;
        self.cpu_seconds += thread_cpu_seconds() - cpu0;
        s.counter("modelwatch_sampler_cpu_seconds_total", &[("sampler", "host")], round3(self.cpu_seconds));
        s
    }
}

/// Samples every `interval` until the token fires.
pub async fn run(sink: Sink, interval: Duration, shutdown: CancellationToken) {
    sink.set_status("host", format!("sampling every {}", humantime::format_duration(interval)));
    let mut sampler = Some(HostSampler::default());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let registered: Registered = sink
            .ctx()
            .registry
            .clients()
            .into_iter()
            .filter(|c| c.info.pid != 0)
            .map(|c| (c.info.pid, c.info.service, c.info.instance))
            .collect();
        let Some(mut h) = sampler.take() else { break };
        let now = sink.ctx().clock.now_ms();
        let res = tokio::task::spawn_blocking(move || {
            let set = h.sample(now, &registered);
            (h, set)
        })
        .await;
        match res {
            Ok((h, set)) => {
                sampler = Some(h);
                sink.metrics("host", set).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "host sampler failed; host sampling stops");
                sink.set_status("host", format!("stopped: {e}"));
                break;
            }
        }
    }
}
