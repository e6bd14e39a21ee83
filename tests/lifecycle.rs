//! SIGTERM: health turns NOT_SERVING, open streams end, the store flushes, exit 0; config
//! errors stop the daemon with the offending key named.
mod common;
use common::*;
use modelwatch::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let channel = tonic::transport::Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch =
        health.watch(HealthCheckRequest { service: "modelwatch.v1.Ingest".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

    // a client holding a stream open, one batch acked
    let mut ing = d.ingest().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = ing.stream_metrics(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let now = now_ms();
    tx.send(pb::MetricBatch {
        client_id: "c".into(),
        seq: 1,
        service: "s".into(),
        series: vec![series("held_open", &[], vec![now], vec![7.0])],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().accepted, 1);

    let pid = d.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let next = watch.message().await;
    assert!(
        matches!(next, Ok(Some(ref m)) if m.status == ServingStatus::NotServing as i32) || next.is_err(),
        "{next:?}"
    );
    // the open stream is ended by the daemon, not left hanging
    let end = acks.message().await;
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    drop(tx);
    let (status, err) = d.stop();
    assert!(status.success(), "exit {status:?}: {err}");

    let d = Daemon::start(dir.path(), &[]);
    let mut q = d.query().await;
    let r = q
        .list_series(pb::ListSeriesRequest { selector: "held_open".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series.len(), 1);
    d.stop_ok();
}

#[test]
fn bad_config_stops_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let Err((status, err)) = Daemon::try_start(dir.path(), &[("MODELWATCH__LIMITS__MAX_LABLES", "3")]) else {
        panic!("started")
    };
    assert!(!status.unwrap().success());
    assert!(err.contains("max_lables"), "{err}");
    let Err((_, err)) = Daemon::try_start(dir.path(), &[("MODELWATCH__LOG__FORMAT", "xml")]) else { panic!("started") };
    assert!(err.contains("log.format"), "{err}");
}

/// `server.worker_nice` lowers the async runtime's threads only: the committer, which acks,
/// keeps 0 (a thread started from a lowered one could not get back to it), and the query
/// threads stay at 10.
#[cfg(target_os = "linux")]
#[test]
fn runtime_threads_run_at_worker_nice_and_the_committer_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[("MODELWATCH__SERVER__WORKER_NICE", "7")]);
    let pid = d.child.id();
    let mut seen: Vec<(String, i64)> = Vec::new();
    // The main thread first: its task id is the pid.
    let mut tasks: Vec<_> =
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().map(|t| t.unwrap().path()).collect();
    tasks.sort_by_key(|t| t.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()) != Some(pid));
    for task in tasks {
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default().trim().to_string();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // Fields after the name, which ends at the last ')': state is field 3, nice field 19.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let Some(nice) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) else { continue };
        seen.push((comm, nice));
    }
    let nice_of = |name: &str| seen.iter().filter(|(c, _)| c.starts_with(name)).map(|(_, n)| *n).collect::<Vec<_>>();
    // The main thread has the niceness the test runs at (0 unless it was started niced).
    let base = seen[0].1;
    assert!(seen.iter().any(|(c, _)| c == "modelwatch"), "{seen:?}");
    assert_eq!(nice_of("modelwatch-comm"), vec![base], "{seen:?}");
    let workers = nice_of("tokio-rt-worker");
    assert!(!workers.is_empty() && workers.iter().all(|&n| n == base.max(7)), "{seen:?}");
    let queries = nice_of("modelwatch-quer");
    assert!(!queries.is_empty() && queries.iter().all(|&n| n == base.max(10)), "{seen:?}");
    let Err((_, err)) = Daemon::try_start(dir.path(), &[("MODELWATCH__SERVER__WORKER_NICE", "20")]) else {
        panic!("started with worker_nice 20")
    };
    assert!(err.contains("server.worker_nice") && err.contains("19"), "{err}");
    d.stop_ok();
}

#[test]
fn help_explains_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch")).args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--data-dir", "--listen", "Port 0", "MODELWATCH__SECTION__KEY"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

/// A listener the network can reach is refused (naming the key, the address and the way out)
/// until `--insecure` accepts it; loopback needs nothing.
#[test]
fn a_non_loopback_listener_needs_insecure() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"));
        c.args(["serve", "--data-dir"]).arg(dir.path()).args(extra);
        c.env("MODELWATCH__SAMPLING__HOST_INTERVAL", "0s").env("MODELWATCH__SAMPLING__GPU", "off");
        c
    };
    for (args, key) in [
        (["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"], "server.listen"),
        (["--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0"], "server.http_listen"),
    ] {
        let out = serve(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        for want in [key, "0.0.0.0:0", "not a loopback address", "--insecure"] {
            assert!(err.contains(want), "{want} missing from: {err}");
        }
        // Nothing was opened: the refusal comes before the store.
        assert!(!dir.path().join("wal").exists());
    }
    let mut child = serve(&["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0", "--insecure"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Authenticated callers (tokens) make a reachable listener acceptable; without TLS the
    // daemon warns that the tokens cross the network in clear text.
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "").unwrap();
    let mut child = serve(&["--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"])
        .env("MODELWATCH__SERVER__TOKENS_FILE", &tokens)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without TLS") && err.contains("clear text"), "{err}");
}
