//! Wiring: opens the store, starts the committer and the background tasks, serves gRPC
//! (ingest, query, health, reflection) until the shutdown token fires, then drains: health goes
//! NOT_SERVING, streams end, the committer makes its final checkpoint, all within
//! `server.shutdown_timeout`.
use crate::api::{AdminApi, AlertsApi, Ctx, IngestApi, QueryApi};
use crate::clock::ClockRef;
use crate::config::Config;
use crate::ingest::{Registry, Validator};
use crate::pb;
use crate::sample::gpu::{self, GpuConfig, GpuSource};
use crate::sample::nvml::NvmlSource;
use crate::sample::{host, Sink};
use crate::server::auth::Auth;
use crate::server::listen::{self, Alpn, HttpIncoming};
use crate::server::tls::{Tls, TlsFiles};
use crate::server::{http_auth, GrpcAuthLayer};
use crate::store::commit::{CommitConfig, Committer};
use crate::store::{Store, StoreError, StoreOptions};
use crate::telemetry::Rates;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Serve(String),
    #[error("{0}")]
    Config(String),
    #[error("shutdown did not finish within server.shutdown_timeout ({0:?})")]
    ShutdownTimeout(Duration),
}

/// Hardware sources the daemon samples; `None` picks the real one (NVML) per config. Tests on
/// machines without a GPU pass a [`crate::sample::gpu::FakeGpu`].
#[derive(Default)]
pub struct Sources {
    pub gpu: Option<Box<dyn GpuSource>>,
    /// The clock; `None` is the system's.
    pub clock: Option<ClockRef>,
}

/// The addresses the daemon listens on, once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// Runs the daemon until `shutdown` is cancelled. `on_listening` gets the bound addresses (the
/// binary prints them; tests read them).
pub async fn run(cfg: Config, shutdown: CancellationToken, on_listening: impl FnOnce(Bound)) -> Result<(), AppError> {
    run_with(cfg, Sources::default(), shutdown, on_listening).await
}

/// [`run`] with explicit hardware sources.
pub async fn run_with(
    cfg: Config,
    sources: Sources,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(Bound),
) -> Result<(), AppError> {
    for w in cfg.server.check_exposure()? {
        tracing::warn!("{w}");
    }
    let auth = Arc::new(
        Auth::open(cfg.server.tokens_file.as_deref(), &cfg.server.unix_roles()?)
            .map_err(|e| AppError::Config(format!("server.tokens_file: {e}")))?,
    );
    let tls = match (&cfg.server.tls_cert_file, &cfg.server.tls_key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(
            Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.server.tls_client_ca_file.clone(),
            })
            .map_err(AppError::Config)?,
        )),
        _ => None,
    };
    let opts =
        StoreOptions { storage: cfg.storage.clone(), limits: cfg.limits.clone(), retention: cfg.retention.clone() };
    let (store, wal) = tokio::task::spawn_blocking(move || Store::open(opts))
        .await
        .map_err(|e| AppError::Serve(format!("store open task: {e}")))??;
    let (committer, commit_thread) =
        Committer::spawn(store.clone(), wal, CommitConfig::new(&cfg.storage), tokio::runtime::Handle::current());

    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| AppError::Listen { addr: cfg.server.listen, source })?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen { addr: cfg.server.listen, source })?;
    let http_listener = tokio::net::TcpListener::bind(cfg.server.http_listen)
        .await
        .map_err(|source| AppError::Listen { addr: cfg.server.http_listen, source })?;
    let http_addr =
        http_listener.local_addr().map_err(|source| AppError::Listen { addr: cfg.server.http_listen, source })?;
    let otlp_listener = match cfg.server.otlp_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|source| AppError::Listen { addr: a, source })?),
        None => None,
    };
    let unix_listener = match &cfg.server.unix_socket {
        Some(path) => Some(
            crate::server::bind_unix(path, cfg.server.unix_mode()?, cfg.server.unix_socket_group.as_deref())
                .map_err(AppError::Config)?,
        ),
        None => None,
    };

    let clock = sources.clock.clone().unwrap_or_else(crate::clock::from_env);
    let env = crate::alert::eval::Env {
        opts: cfg.query.promql(),
        external_labels: cfg.alerting.external_labels.clone(),
        external_url: cfg.alerting.external_url.clone(),
    };
    let (alerting, data_dir, now) = (cfg.alerting.clone(), cfg.storage.data_dir.clone(), clock.now_ms());
    let alerts =
        tokio::task::spawn_blocking(move || crate::alert::manager::Manager::new(&alerting, &data_dir, env, now))
            .await
            .map_err(|e| AppError::Serve(format!("rule loading task: {e}")))?;
    let routes = crate::notify::route::Config::load(&cfg.alerting.notify_config)
        .map_err(|e| AppError::Config(format!("alerting.notify_config: {e}")))?;
    for n in &routes.notes {
        tracing::warn!(note = %n, "alerting.notify_config");
    }
    let notifier = Arc::new(
        crate::notify::Notifier::open(routes, &cfg.alerting, &cfg.storage.data_dir.join("notify"))
            .map_err(AppError::Config)?,
    );
    crate::telemetry::T.models.set_cap(cfg.limits.max_series);
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        committer,
        validator: Validator::new(cfg.limits.clone()),
        limits: cfg.limits.clone(),
        query: cfg.query.clone(),
        report: cfg.report.clone(),
        query_pool: crate::query::pool::QueryPool::new(cfg.query.max_concurrent),
        clock,
        registry: Arc::new(Registry::default()),
        rates: Arc::new(Rates::default()),
        started: SystemTime::now(),
        started_at: Instant::now(),
        shutdown: shutdown.clone(),
        max_message_bytes: cfg.limits.max_message_bytes,
        open_streams: Arc::new(AtomicUsize::new(0)),
        samplers: Arc::new(Mutex::new(Default::default())),
        latest_samples: Mutex::new(BTreeMap::new()),
        alerts: Arc::new(alerts),
        notifier: notifier.clone(),
        admission: Arc::new(crate::server::admission::Admission::new(&cfg.limits)),
        client_limits: Arc::new(crate::ingest::limiter::ClientLimits::new(
            cfg.limits.max_streams_per_client,
            cfg.limits.max_batch_rate_per_client,
        )),
        external_labels: cfg.fleet.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    });
    crate::server::admission::spawn(ctx.admission.clone(), ctx.committer.clone(), shutdown.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::ingest_server::IngestServer<IngestApi>>().await;
    health.set_serving::<pb::query_server::QueryServer<QueryApi>>().await;
    health.set_serving::<pb::alerts_server::AlertsServer<AlertsApi>>().await;
    health.set_serving::<pb::admin_server::AdminServer<AdminApi>>().await;
    fn reflection() -> tonic_reflection::server::Builder<'static> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each version lists the other too, so `grpcurl list` (v1alpha) shows both.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    }
    let reflection_v1 = reflection().build_v1().map_err(|e| AppError::Serve(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| AppError::Serve(format!("reflection: {e}")))?;

    let limit = cfg.limits.max_message_bytes;
    let ingest = crate::api::streams::IngestService::new(ctx.clone(), limit);
    let query = pb::query_server::QueryServer::new(QueryApi(ctx.clone())).max_decoding_message_size(limit);
    let alerts_api = pb::alerts_server::AlertsServer::new(AlertsApi(ctx.clone())).max_decoding_message_size(limit);
    let admin_api = pb::admin_server::AdminServer::new(AdminApi(ctx.clone()));
    let otlp = crate::api::otlp::OtlpApi(ctx.clone());
    use pb::opentelemetry::proto::collector as otel;
    let otlp_metrics = otel::metrics::v1::metrics_service_server::MetricsServiceServer::new(otlp.clone())
        .max_decoding_message_size(limit);
    let otlp_logs =
        otel::logs::v1::logs_service_server::LogsServiceServer::new(otlp.clone()).max_decoding_message_size(limit);
    let otlp_traces =
        otel::trace::v1::trace_service_server::TraceServiceServer::new(otlp).max_decoding_message_size(limit);
    let client = reqwest::Client::builder()
        .timeout(cfg.alerting.notify_timeout)
        .build()
        .map_err(|e| AppError::Config(format!("HTTP client for notifications: {e}")))?;
    let sender = Arc::new(crate::notify::receiver::Sender {
        config: notifier.config.clone(),
        client,
        timeout: cfg.alerting.notify_timeout,
    });
    tokio::spawn(notifier.queue_handle().run(sender, ctx.clock.clone(), shutdown.clone()));
    tokio::spawn(crate::alert::run::run(ctx.clone(), ctx.alerts.clone(), notifier.clone(), shutdown.clone()));

    background(&ctx, &cfg, shutdown.clone());
    crate::export::start(&ctx, &cfg, &shutdown).map_err(AppError::Config)?;
    samplers(&ctx, &cfg, sources, shutdown.clone());

    let stop = shutdown.clone();
    let health_stop = health.clone();
    // Connections from every gRPC listener (TCP or TLS, the local socket) meet in one channel.
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
    listen::accept_tcp(listener, tls.clone().map(|t| (t, Alpn::Grpc)), grpc_tx.clone());
    if let Some(l) = otlp_listener {
        if let Ok(a) = l.local_addr() {
            tracing::info!(addr = %a, "OTLP/gRPC listening");
        }
        listen::accept_tcp(l, tls.clone().map(|t| (t, Alpn::Grpc)), grpc_tx.clone());
    }
    if let Some(l) = unix_listener {
        listen::accept_unix(l, grpc_tx.clone());
    }
    drop(grpc_tx);
    let (http_tx, http_rx) = tokio::sync::mpsc::channel(64);
    listen::accept_tcp(http_listener, tls.clone().map(|t| (t, Alpn::Http)), http_tx);
    crate::server::spawn_reloader(auth.clone(), tls, cfg.server.reload_interval, shutdown.clone());
    let incoming =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(grpc_rx), Ok::<_, std::io::Error>);

    let server = tonic::transport::Server::builder()
        .layer(GrpcAuthLayer(auth.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest)
        .add_service(query)
        .add_service(alerts_api)
        .add_service(admin_api)
        .add_service(otlp_metrics)
        .add_service(otlp_logs)
        .add_service(otlp_traces)
        .serve_with_incoming_shutdown(incoming, async move {
            stop.cancelled().await;
            health_stop.set_not_serving::<pb::ingest_server::IngestServer<IngestApi>>().await;
            health_stop.set_not_serving::<pb::query_server::QueryServer<QueryApi>>().await;
            health_stop.set_not_serving::<pb::alerts_server::AlertsServer<AlertsApi>>().await;
            health_stop.set_not_serving::<pb::admin_server::AdminServer<AdminApi>>().await;
        });
    let mut server = tokio::spawn(server);
    let http_stop = shutdown.clone();
    let router = crate::http::router(ctx.clone()).layer(axum::middleware::from_fn_with_state(auth, http_auth));
    let http = axum::serve(HttpIncoming { rx: http_rx, local: http_addr }, router)
        .with_graceful_shutdown(async move { http_stop.cancelled().await });
    let http_task = tokio::spawn(async move {
        if let Err(e) = http.await {
            tracing::error!(error = %e, "the HTTP listener failed");
        }
    });
    tracing::info!(%addr, %http_addr, data_dir = %cfg.storage.data_dir.display(), "modelwatch serving");
    on_listening(Bound { grpc: addr, http: http_addr });

    let deadline = cfg.server.shutdown_timeout;
    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = shutdown.cancelled() => None,
    };
    shutdown.cancel();
    crate::systemd::notify("STOPPING=1");
    let started = Instant::now();
    let served = match served {
        Some(r) => r,
        None => {
            // Ingest streams end on the token (each finishes sending its acks); other calls
            // (a health Watch, say) may never end, so once the ingest streams are gone the
            // server gets a short grace period, then is stopped.
            let open = ctx.open_streams.clone();
            let drained = async {
                while open.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            tokio::select! {
                r = &mut server => r,
                _ = tokio::time::timeout(deadline, drained) => {
                    if open.load(Ordering::SeqCst) > 0 {
                        tracing::warn!("ingest streams did not drain in time; closing them");
                    }
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    // Queries in flight over HTTP finish (their handlers hold the context) before the store
    // closes; a stuck one is cut at the deadline.
    let _ = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), http_task).await;
    ctx.committer.close().await;
    drop(ctx);
    let left = deadline.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
    let joined = tokio::time::timeout(left, tokio::task::spawn_blocking(move || commit_thread.join())).await;
    match joined {
        Ok(Ok(Ok(r))) => r?,
        Ok(_) => return Err(AppError::Serve("the committer thread panicked".into())),
        Err(_) => return Err(AppError::ShutdownTimeout(deadline)),
    }
    if let Some(p) = &cfg.server.unix_socket {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "shut down");
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AppError::Serve(e.to_string())),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(AppError::Serve(e.to_string())),
    }
}

/// `modelwatch recover`: opens the store keeping every readable WAL record and skipping
/// damaged stretches, then makes a final checkpoint so that the folder opens cleanly.
pub fn recover(cfg: &Config) -> Result<crate::store::OpenReport, AppError> {
    let opts =
        StoreOptions { storage: cfg.storage.clone(), limits: cfg.limits.clone(), retention: cfg.retention.clone() };
    let (store, mut wal, rep) = Store::open_with(opts, true)?;
    store.checkpoint(&mut wal, true)?;
    Ok(rep)
}

fn samplers(ctx: &Arc<Ctx>, cfg: &Config, sources: Sources, shutdown: CancellationToken) {
    let sink = Sink::new(ctx.clone());
    let sc = &cfg.sampling;
    if sc.self_interval.is_zero() {
        sink.set_status("self", "off: sampling.self_interval = 0s".into());
    } else {
        sink.set_status("self", format!("storing the daemon's own figures every {:?}", sc.self_interval));
        tokio::spawn(crate::sample::own::run(sink.clone(), sc.self_interval, shutdown.clone()));
    }
    if sc.host_interval.is_zero() {
        sink.set_status("host", "off: sampling.host_interval = 0s".into());
    } else {
        tokio::spawn(host::run(sink.clone(), sc.host_interval, shutdown.clone()));
    }
    let source: Option<Box<dyn GpuSource>> = match (sources.gpu, sc.gpu.as_str()) {
        (Some(s), _) => Some(s),
        (None, "off") => None,
        (None, _) => Some(Box::new(NvmlSource::new())),
    };
    match source {
        Some(src) => {
            let gc =
                GpuConfig { interval: sc.gpu_interval, process_every: sc.gpu_process_every, timeout: sc.gpu_timeout };
            tokio::spawn(gpu::run(sink, src, gc, shutdown));
        }
        None => sink.set_status("gpu", "off: sampling.gpu = \"off\"".into()),
    }
}

/// Retention and the rate ticker; both stop with the token.
fn background(ctx: &Arc<Ctx>, cfg: &Config, shutdown: CancellationToken) {
    let store = ctx.store.clone();
    let interval = cfg.retention.interval;
    let stop = shutdown.clone();
    let (clock, registry, ttl) = (ctx.clock.clone(), ctx.registry.clone(), cfg.limits.client_ttl);
    let limits = ctx.client_limits.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = clock.now_ms();
            let before = now.saturating_sub(ttl.as_millis() as i64);
            let (gone, forgotten) = (registry.expire(before), store.expire_clients(before));
            limits.expire(Instant::now());
            if gone + forgotten > 0 {
                tracing::info!(registry = gone, dedup = forgotten, "forgot clients not seen within limits.client_ttl");
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.enforce_retention(now)).await {
                Ok(Ok(rep)) => tracing::debug!(?rep, "retention"),
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    });
    let store = ctx.store.clone();
    let rates = ctx.rates.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => rates.tick(&store),
            }
        }
    });
}
