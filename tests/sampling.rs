//! Host sampling for real (this machine's values, through the daemon binary), and the GPU path
//! through a scripted FakeGpu in an in-process daemon: series, attribution by pid, XID, ECC and
//! throttle events, a GPU that vanishes and comes back, and the GpuReport RPC.
mod common;
use common::*;
use modelwatch::pb;
use modelwatch::sample::gpu::{DeviceInfo, FakeGpu, FakeTick, GpuError, GpuProcess, XidEvent};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` until it returns Some, for at most 30 s (a bound, not a speed assertion).
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn values(
    q: &mut pb::query_client::QueryClient<tonic::transport::Channel>,
    selector: &str,
) -> Vec<(BTreeMap<String, String>, Vec<f64>)> {
    let req = pb::QueryRangeRequest {
        selector: selector.into(),
        range: range_last("10m"),
        step: "100ms".into(),
        aggregation: pb::Aggregation::Last as i32,
        ..Default::default()
    };
    let r = q.query_range(req).await.unwrap().into_inner();
    r.series.into_iter().map(|s| (s.labels.into_iter().collect(), s.points.iter().map(|p| p.value).collect())).collect()
}

fn meminfo_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 =
        text.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_of_this_machine_are_stored_and_sane() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[("MODELWATCH__SAMPLING__HOST_INTERVAL", "200ms")]);
    let mut ing = d.ingest().await;
    let me = std::process::id();
    ing.register(pb::RegisterRequest {
        service: "sampled-svc".into(),
        instance: "i1".into(),
        pid: me,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut q = d.query().await;

    let total = eventually("host_memory_total_bytes", || {
        let mut q = q.clone();
        async move {
            values(&mut q, "host_memory_total_bytes").await.into_iter().next().and_then(|(_, v)| v.last().copied())
        }
    })
    .await;
    assert_eq!(total, meminfo_total_bytes(), "sysinfo reads /proc/meminfo");
    let used = values(&mut q, "host_memory_used_bytes").await[0].1[0];
    assert!(used > 0.0 && used < total, "used {used} of {total}");

    let cpu = eventually("host_cpu_utilization_percent", || {
        let mut q = q.clone();
        async move {
            let v = values(&mut q, r#"host_cpu_utilization_percent{cpu="total"}"#).await;
            v.into_iter().next().map(|(_, v)| v)
        }
    })
    .await;
    assert!(cpu.iter().all(|c| (0.0..=100.0).contains(c)), "{cpu:?}");
    let per_core = values(&mut q, r#"host_cpu_utilization_percent{cpu!="total"}"#).await;
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(per_core.len() >= cores.min(1), "per-core series: {}", per_core.len());

    let load = values(&mut q, "host_load1").await;
    assert!(load[0].1[0] >= 0.0);
    let disks = values(&mut q, "host_disk_total_bytes").await;
    assert!(disks.iter().any(|(l, v)| !l["mount"].is_empty() && v[0] > 0.0), "{disks:?}");
    let net = values(&mut q, "host_network_received_bytes_total").await;
    assert!(net.iter().any(|(l, _)| l["interface"] == "lo"), "{:?}", net.iter().map(|n| &n.0).collect::<Vec<_>>());

    // the registered process: this test binary
    let rss = eventually("process_resident_memory_bytes", || {
        let mut q = q.clone();
        async move { values(&mut q, r#"process_resident_memory_bytes{service="sampled-svc"}"#).await.into_iter().next() }
    })
    .await;
    assert_eq!(rss.0["pid"], me.to_string());
    assert!(rss.1[0] > 1e6, "rss {}", rss.1[0]);
    let threads = values(&mut q, r#"process_threads{service="sampled-svc"}"#).await;
    assert!(threads[0].1[0] >= 2.0, "this test runs several threads: {threads:?}");

    let cost = values(&mut q, r#"modelwatch_sampler_cpu_seconds_total{sampler="host"}"#).await;
    assert!(!cost.is_empty());
    let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(st.samplers["host"].starts_with("sampling every 200ms"), "{:?}", st.samplers);
    let gpu = &st.samplers["gpu"];
    assert!(gpu.starts_with("off: ") || gpu.starts_with("sampling"), "{gpu}");
    d.stop_ok();
}

fn devices() -> Vec<DeviceInfo> {
    (0..2).map(|i| DeviceInfo { index: i, uuid: format!("GPU-fake-{i}"), name: "Fake H100".into() }).collect()
}

async fn start_in_process(dir: &std::path::Path, gpu: FakeGpu) -> InProcess {
    InProcess::start(dir, gpu, |cfg| {
        cfg.sampling.gpu_interval = Duration::from_millis(50);
        cfg.sampling.gpu_process_every = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpus_are_sampled_attributed_and_faults_recorded() {
    const OWNER: u32 = 4242;
    const STRANGER: u32 = 99_999;
    let mut t1 = FakeTick::default();
    t1.readings.insert(0, Ok(fake_reading(10, 20)));
    t1.readings.insert(1, Ok(fake_reading(50, 40)));
    let mut t2 = FakeTick::default();
    let mut r0 = fake_reading(30, 30);
    r0.throttle_reasons = Some(0x8 | 0x40); // hw slowdown, hw thermal
    r0.ecc_uncorrected_total = Some(2);
    t2.readings.insert(0, Ok(r0.clone()));
    t2.readings.insert(1, Ok(fake_reading(60, 40)));
    t2.processes.insert(
        0,
        vec![
            GpuProcess { pid: OWNER, memory_bytes: Some(1 << 30), sm_utilization_percent: Some(25) },
            GpuProcess { pid: STRANGER, memory_bytes: Some(2 << 30), sm_utilization_percent: None },
        ],
    );
    t2.xids.push(XidEvent { gpu: 1, xid: 79, pid: Some(OWNER) });
    // GPU 1 falls off the bus, then a read of GPU 0 fails too, then both are back
    let mut t3 = FakeTick::default();
    t3.readings.insert(0, Ok(r0.clone()));
    t3.readings.insert(1, Err(GpuError("GPU is lost".into())));
    let mut t4 = FakeTick::default();
    t4.readings.insert(0, Err(GpuError("Unknown error".into())));
    t4.readings.insert(1, Err(GpuError("GPU is lost".into())));
    let mut t5 = FakeTick::default();
    let mut r5 = fake_reading(20, 25);
    r5.ecc_uncorrected_total = Some(2);
    t5.readings.insert(0, Ok(r5));
    t5.readings.insert(1, Ok(fake_reading(55, 40)));
    t5.processes = t2.processes.clone();

    let dir = tempfile::tempdir().unwrap();
    let gpu = FakeGpu::new(Ok(devices()), vec![t1.clone(), t1, t2, t3, t4, t5]);
    let daemon = start_in_process(dir.path(), gpu).await;
    let url = format!("http://{}", daemon.addr);
    let mut ing = pb::ingest_client::IngestClient::connect(url.clone()).await.unwrap();
    ing.register(pb::RegisterRequest {
        service: "ocr".into(),
        pid: OWNER,
        models: vec![pb::ModelRef { name: "mgeo".into(), version: "3".into() }],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut q = pb::query_client::QueryClient::connect(url).await.unwrap();

    // the XID arrives with tick 2; by tick 5 GPU 1 is back
    let xid_log = eventually("the XID event", || {
        let mut q = q.clone();
        async move {
            let r = q
                .search_logs(pb::SearchLogsRequest {
                    range: range_last("10m"),
                    contains: "XID 79".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            r.records.into_iter().next()
        }
    })
    .await;
    assert_eq!(xid_log.level, pb::Level::Error as i32);
    assert_eq!(xid_log.logger, "gpu");
    assert_eq!(xid_log.fields["xid"], "79");
    assert_eq!(xid_log.fields["gpu"], "1");
    assert_eq!(xid_log.fields["pid"], OWNER.to_string());
    assert_eq!(xid_log.fields["service"], "ocr", "the XID is attributed to the service that owns the pid");
    eventually("GPU 1 back after vanishing", || {
        let mut q = q.clone();
        async move {
            let v = values(&mut q, r#"gpu_up{gpu="1"}"#).await;
            let ups = v.into_iter().next()?.1;
            let gone = ups.iter().position(|u| *u == 0.0)?;
            ups[gone..].contains(&1.0).then_some(())
        }
    })
    .await;

    let util0 = values(&mut q, r#"gpu_utilization_percent{gpu="0"}"#).await;
    assert_eq!(util0.len(), 1);
    assert_eq!(util0[0].0["uuid"], "GPU-fake-0");
    assert_eq!(util0[0].0["model_name"], "Fake H100");
    assert_eq!(util0[0].0["service"], "modelwatch");
    for want in [10.0, 30.0, 20.0] {
        assert!(util0[0].1.contains(&want), "{want} missing from {:?}", util0[0].1);
    }
    let power = values(&mut q, r#"gpu_power_watts{gpu="0"}"#).await;
    assert!(power[0].1.contains(&110.0), "{:?}", power[0].1);
    assert!(values(&mut q, "gpu_fan_percent").await.is_empty(), "a reading the GPU lacks is absent, not 0");

    // Registration races the first process lists; the later ticks carry the attribution.
    eventually("the owner's attributed GPU memory", || {
        let mut q = q.clone();
        async move { values(&mut q, r#"gpu_process_memory_bytes{service="ocr"}"#).await.into_iter().next() }
    })
    .await;
    let procs = values(&mut q, "gpu_process_memory_bytes").await;
    let owner =
        procs.iter().find(|(l, _)| l["pid"] == OWNER.to_string() && l.get("service").is_some()).expect("owner process");
    assert_eq!((owner.0["service"].as_str(), owner.0["model"].as_str()), ("ocr", "mgeo"));
    assert_eq!(owner.1[0], (1u64 << 30) as f64);
    let stranger = procs.iter().find(|(l, _)| l["pid"] == STRANGER.to_string()).expect("unregistered process");
    assert_eq!(stranger.0.get("service").map(String::as_str).unwrap_or(""), "", "labelled by pid only");

    let xids = values(&mut q, r#"gpu_xid_errors_total{xid="79"}"#).await;
    assert_eq!(xids[0].0["gpu"], "1");
    assert_eq!(xids[0].1.iter().copied().fold(0.0, f64::max), 1.0);
    let faults = q
        .search_logs(pb::SearchLogsRequest {
            range: range_last("10m"),
            service: "modelwatch".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> =
        faults.records.iter().map(|r| r.fields.get("kind").map(String::as_str).unwrap_or("")).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ecc_uncorrected").count(),
        1,
        "an ECC change is one event, not a sticky state: {kinds:?}"
    );
    assert!(kinds.contains(&"throttle"), "{kinds:?}");
    let ecc =
        faults.records.iter().find(|r| r.fields.get("kind").map(String::as_str) == Some("ecc_uncorrected")).unwrap();
    assert_eq!(ecc.fields["delta"], "2");
    let throttle =
        faults.records.iter().rev().find(|r| r.fields.get("kind").map(String::as_str) == Some("throttle")).unwrap();
    assert!(
        throttle.message.contains("hw_slowdown") && throttle.message.contains("hw_thermal_slowdown"),
        "{}",
        throttle.message
    );

    let rep = q
        .gpu_report(pb::GpuReportRequest { range: range_last("10m"), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rep.gpus.len(), 2);
    let g0 = &rep.gpus[0];
    assert_eq!((g0.gpu.as_str(), g0.uuid.as_str()), ("0", "GPU-fake-0"));
    assert_eq!(g0.utilization_max_percent, 30.0);
    assert_eq!(g0.memory_peak_bytes, (30u64 << 30) as f64);
    assert_eq!(g0.memory_total_bytes, (80u64 << 30) as f64);
    assert_eq!(g0.temperature_max_celsius, 70.0);
    assert_eq!(g0.ecc_uncorrected_errors, 2);
    assert!(g0.throttled_seconds > 0.0, "throttled while hw_slowdown was set");
    assert!(g0.up_ratio < 1.0, "one failed read");
    let g1 = &rep.gpus[1];
    assert_eq!(g1.xid_errors, 1);
    assert_eq!(g1.faults[0].xid, "79");
    assert!(g1.up_ratio < 1.0);
    let p = rep.processes.iter().find(|p| p.pid == OWNER).unwrap();
    assert_eq!(
        (p.service.as_str(), p.model.as_str(), p.memory_peak_bytes, p.utilization_max_percent),
        ("ocr", "mgeo", (1u64 << 30) as f64, 25.0)
    );
    assert_eq!(rep.services.len(), 1);
    assert_eq!((rep.services[0].service.as_str(), rep.services[0].memory_peak_bytes), ("ocr", (1u64 << 30) as f64));
    let only1 =
        q.gpu_report(pb::GpuReportRequest { range: range_last("10m"), gpu: "1".into() }).await.unwrap().into_inner();
    assert_eq!(only1.gpus.len(), 1);

    let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(st.samplers["gpu"].starts_with("sampling 2 GPU(s)"), "{:?}", st.samplers);
    daemon.token.cancel();
    daemon.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_driver_turns_gpu_sampling_off_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let gpu = FakeGpu::new(Err(GpuError("no NVIDIA driver (libnvidia-ml.so could not be loaded)".into())), vec![]);
    let daemon = start_in_process(dir.path(), gpu).await;
    let mut q = pb::query_client::QueryClient::connect(format!("http://{}", daemon.addr)).await.unwrap();
    let st = eventually("the GPU sampler's status", || {
        let mut q = q.clone();
        async move {
            let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
            st.samplers.get("gpu").cloned()
        }
    })
    .await;
    assert_eq!(st, "off: no NVIDIA driver (libnvidia-ml.so could not be loaded)");
    // the daemon carries on
    let r = q.list_series(pb::ListSeriesRequest::default()).await;
    assert!(r.is_ok());
    daemon.token.cancel();
    daemon.task.await.unwrap().unwrap();
}
