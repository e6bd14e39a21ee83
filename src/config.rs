//! Configuration: one [`Config`] with defaults for everything, so `modelwatch serve` needs no
//! file. Sources apply in order: built-in defaults, the TOML file, environment overrides
//! (`MODELWATCH__SECTION__KEY=value`, value parsed as a TOML literal, else taken as a string),
//! then command-line flags; [`Config::validate`] runs last and names the offending key.
//! Unknown keys are errors everywhere (`deny_unknown_fields`).
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole daemon configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: Limits,
    pub retention: Retention,
    pub sampling: SamplingConfig,
    pub query: QueryConfig,
    pub alerting: AlertingConfig,
    pub report: ReportConfig,
    pub fleet: FleetConfig,
    pub log: LogConfig,
}

/// Handing the host's data to fleet-wide engines (`[fleet]`): remote-write out, `/federate`,
/// the OTLP receiver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Labels added to every series that `/federate` serves and remote-write sends, where the
    /// series has no label of that name (Prometheus' `global.external_labels`), e.g.
    /// `{ host = "gpu-07" }`.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Prometheus remote-write endpoints, each fed from what the daemon has made durable.
    pub remote_write: Vec<RemoteWriteConfig>,
}

/// One remote-write endpoint (`[[fleet.remote_write]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// Names the endpoint in metrics and its cursor file (`export/<name>.cursor`); defaults
    /// to the URL's host and port. Renaming an endpoint starts it again from `backfill`.
    pub name: String,
    /// `http(s)://host:port/api/v1/write` (Prometheus with `--web.enable-remote-write-receiver`,
    /// VictoriaMetrics, Mimir, Thanos receive).
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; `bearer_token_file` is re-read on each request.
    pub bearer_token: String,
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers (`X-Scope-OrgID` for Mimir, say).
    pub headers: std::collections::BTreeMap<String, String>,
    /// A CA certificate (PEM) to verify the receiver with, beside the system's web roots.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for receivers that ask for one.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Labels added for this endpoint, on top of `fleet.external_labels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Relabeling before sending, in order (Prometheus' `write_relabel_configs`).
    pub relabel: Vec<RelabelConfig>,
    /// Most samples in one request.
    pub batch_samples: usize,
    /// Senders working in parallel, each on its share of the series (a series always goes
    /// through the same one, so its samples arrive in order).
    pub shards: usize,
    /// Longest one request may take.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// How often a sender that has caught up looks for new samples.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Backoff after a failed request (5xx, 429, no answer): doubles from `min_backoff` to
    /// `max_backoff`, with up to 50% random jitter; a 429's `Retry-After` is honoured.
    #[serde(with = "humantime_serde_compat")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    /// Also send the derived inference and log series (`modelwatch_inference_*`,
    /// `modelwatch_log_records_total`).
    pub derived: bool,
    /// A derived series' 10-second bucket is sent once it ended this long ago, so that events
    /// stamped slightly in the past still count in it.
    #[serde(with = "humantime_serde_compat")]
    pub derived_delay: Duration,
    /// How far back a new endpoint starts (`"1h"`); empty: everything the daemon holds.
    pub backfill: String,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            name: String::new(),
            url: String::new(),
            bearer_token: String::new(),
            bearer_token_file: None,
            headers: Default::default(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            external_labels: Default::default(),
            relabel: Vec::new(),
            batch_samples: 5000,
            shards: 2,
            timeout: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            derived: true,
            derived_delay: Duration::from_secs(30),
            backfill: String::new(),
        }
    }
}

impl RemoteWriteConfig {
    /// The endpoint's name: `name`, else the URL's host and port.
    pub fn endpoint_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// `backfill` in milliseconds; `None`: everything.
    pub fn backfill_ms(&self) -> Option<i64> {
        if self.backfill.is_empty() {
            return None;
        }
        humantime::parse_duration(&self.backfill).ok().map(|d| d.as_millis() as i64)
    }
}

/// One relabeling step, as Prometheus' `relabel_config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    /// `replace` (the default), `keep`, `drop`, `labeldrop`, `labelkeep`, `labelmap`.
    pub action: String,
    /// For `keep` and `drop`: a series selector (`'{__name__=~"gpu_.*", service="ocr"}'`)
    /// instead of `source_labels` and `regex`.
    #[serde(rename = "match")]
    pub matches: String,
    pub source_labels: Vec<String>,
    pub separator: String,
    /// Anchored at both ends, as in Prometheus.
    pub regex: String,
    pub target_label: String,
    /// `$1`, `${name}` refer to the regex's groups.
    pub replacement: String,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            action: "replace".into(),
            matches: String::new(),
            source_labels: Vec::new(),
            separator: ";".into(),
            regex: "(.*)".into(),
            target_label: String::new(),
            replacement: "$1".into(),
        }
    }
}

/// Reports (`[report]`): what they may read beyond their PromQL, and the figures capacity
/// advice is measured against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Stored events and log records one report reads, newest first, for label
    /// distributions and examples (its PromQL figures are bounded by `[query]`).
    pub max_scan: u64,
    /// The latency objective capacity advice checks p95 against, unless a request names one.
    #[serde(with = "humantime_serde_compat")]
    pub slo_p95: Duration,
    /// The utilization (0–1, of the busiest of GPU and CPU) replicas are sized for.
    pub target_utilization: f64,
    /// Above this utilization (0–1) a service should scale up; below `scale_down_utilization`
    /// (with latency well inside the objective and no rising trend) it may scale down.
    pub scale_up_utilization: f64,
    pub scale_down_utilization: f64,
    /// Hourly prices for the cost estimate: one GPU, one CPU core, one GiB of memory.
    pub price_gpu_hour: f64,
    pub price_cpu_core_hour: f64,
    pub price_memory_gib_hour: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            max_scan: 1_000_000,
            slo_p95: Duration::from_millis(500),
            target_utilization: 0.6,
            scale_up_utilization: 0.8,
            scale_down_utilization: 0.3,
            price_gpu_hour: 2.0,
            price_cpu_core_hour: 0.04,
            price_memory_gib_hour: 0.005,
        }
    }
}

/// Alert and recording rules, evaluated in the daemon (`[alerting]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Prometheus rule files (globs, relative to the working folder). Reloaded when a file
    /// changes, on SIGHUP and by `Alerts/ReloadRules`; a refused file keeps the rules in force.
    pub rule_files: Vec<String>,
    /// How often each group is evaluated unless it sets `interval` (Prometheus'
    /// `evaluation_interval`).
    #[serde(with = "humantime_serde_compat")]
    pub evaluation_interval: Duration,
    /// Labels templates see as `$externalLabels` and notifications carry.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// `$externalURL` in templates; the `externalURL` of webhook payloads.
    pub external_url: String,
    /// An Alertmanager-format file (`route`, `receivers` with `webhook_configs`) saying where
    /// notifications go; empty: nowhere but the Alertmanagers below.
    pub notify_config: String,
    /// Alertmanagers (`http://host:9093`) that get every firing and resolved alert
    /// (`POST /api/v2/alerts`), resent while firing, for fleet-wide grouping and silences.
    pub alertmanagers: Vec<String>,
    /// Longest a notification's HTTP request or SMTP session may take.
    #[serde(with = "humantime_serde_compat")]
    pub notify_timeout: Duration,
    /// Silences in force (pending or active) at once; more are refused.
    pub max_silences: usize,
    /// Matchers one silence may have.
    pub max_silence_matchers: usize,
    /// Bytes of one silence's author, comment and matchers together.
    pub max_silence_bytes: usize,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            rule_files: Vec::new(),
            evaluation_interval: Duration::from_secs(15),
            external_labels: Default::default(),
            external_url: String::new(),
            notify_config: String::new(),
            alertmanagers: Vec::new(),
            notify_timeout: Duration::from_secs(10),
            max_silences: 1000,
            max_silence_matchers: 32,
            max_silence_bytes: 8192,
        }
    }
}

/// What one query may cost; a query past a limit fails with RESOURCE_EXHAUSTED (or
/// DEADLINE_EXCEEDED for the time) naming the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Series one selector may match (also ListSeries' largest `limit`).
    pub max_series: usize,
    /// Samples, log records or aggregate buckets one query may read, together with the values
    /// a PromQL evaluation works out from them (one per series and step).
    pub max_samples: u64,
    /// Points (or steps) one answer may hold.
    pub max_points: u64,
    /// Wall time one query may run.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Queries running at once, each on its own thread below ingest's CPU priority (nice +10);
    /// up to 16 per thread wait, more are refused.
    pub max_concurrent: usize,
    /// PromQL: how far back a selector looks for a series' newest sample (Prometheus'
    /// `--query.lookback-delta`).
    #[serde(with = "humantime_serde_compat")]
    pub lookback_delta: Duration,
    /// PromQL: the step of a subquery written without one (`x[1h:]`).
    #[serde(with = "humantime_serde_compat")]
    pub subquery_step: Duration,
}

impl QueryConfig {
    pub fn promql(&self) -> crate::promql::Opts {
        crate::promql::Opts {
            lookback_ms: self.lookback_delta.as_millis() as i64,
            subquery_step_ms: self.subquery_step.as_millis() as i64,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_series: 10_000,
            max_samples: 50_000_000,
            max_points: 1_000_000,
            timeout: Duration::from_secs(30),
            max_concurrent: 2,
            lookback_delta: Duration::from_secs(300),
            subquery_step: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC listener; port 0 picks a free port (printed as `listening on ADDR`).
    pub listen: SocketAddr,
    /// Address of the HTTP listener (the Prometheus query API under `/api/v1/`, for Grafana
    /// and curl); loopback by default; port 0 picks a free port (printed as
    /// `http listening on ADDR`).
    pub http_listen: SocketAddr,
    /// Graceful shutdown deadline: streams drain and the store flushes within it.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_timeout: Duration,
    /// Listen on a non-loopback address without authentication (no `tokens_file`, no
    /// `tls_client_ca_file`): anyone who reaches the port could push as any service and read
    /// everything. Off by default: the daemon then refuses such an address, saying why
    /// (`serve --insecure`).
    pub insecure: bool,
    /// PEM certificate chain for TLS on both TCP listeners (with `tls_key_file`); reloaded when
    /// the file changes. TLS 1.2 and 1.3.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, TLS clients must present a certificate it signed
    /// (mutual TLS), on both TCP listeners.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Bearer tokens, one `[[token]]` per client with `name`, `sha256` (hex SHA-256 of the
    /// token; `modelwatch token new` makes both), `role` (ingest, query, admin) and, for
    /// ingest, optional `services`. Set: every call but health checks needs a token (or comes
    /// over the local socket). Reloaded when the file changes.
    pub tokens_file: Option<PathBuf>,
    /// A Unix socket for the services on this host (e.g. `/run/modelwatch/ingest.sock`),
    /// serving the same gRPC API; the peer's pid, uid and gid are known there.
    pub unix_socket: Option<PathBuf>,
    /// The socket file's mode, octal.
    pub unix_socket_mode: String,
    /// The socket file's group (name or number); unset: the daemon's.
    pub unix_socket_group: Option<String>,
    /// What a local-socket client without a token may do (roles: ingest, query, admin). With
    /// no `tokens_file` every caller may do everything anyway.
    pub unix_socket_roles: Vec<String>,
    /// How often the tokens and TLS files are checked for changes (SIGHUP also reloads them).
    #[serde(with = "humantime_serde_compat")]
    pub reload_interval: Duration,
    /// One more gRPC listener, for OpenTelemetry exporters that expect the OTLP port
    /// (`127.0.0.1:4317`). It serves the same services as `server.listen` (the OTLP receiver is
    /// on every gRPC listener), with the same TLS and tokens.
    pub otlp_listen: Option<SocketAddr>,
    /// Niceness (0-19) of the threads that serve gRPC and HTTP and validate batches: the
    /// committer, which makes batches durable and acks them one group at a time, keeps 0, so
    /// that when the cores are busy a group does not wait behind the next batches' decoding
    /// (on 2 cores at half the maximum rate, ack p99 29.7-33.5 ms against 34.7-45.8 at 0, three
    /// runs each). Background work (checkpoints, merges, queries on their own threads) runs at
    /// 10. Linux only.
    pub worker_nice: i32,
}

/// The highest niceness there is (`server.worker_nice`).
pub const MAX_NICE: i32 = 19;

impl ServerConfig {
    /// Callers are authenticated (tokens, or client certificates).
    pub fn authenticates(&self) -> bool {
        self.tokens_file.is_some() || self.tls_client_ca_file.is_some()
    }

    /// Refuses a listener that the network can reach without authentication unless `insecure`
    /// accepts that. `Ok` carries warnings: tokens that would cross the network in clear text.
    pub fn check_exposure(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        let otlp = self.otlp_listen.map(|a| ("server.otlp_listen", a));
        for (key, addr) in
            [("server.listen", self.listen), ("server.http_listen", self.http_listen)].into_iter().chain(otlp)
        {
            if addr.ip().is_loopback() {
                continue;
            }
            if !self.authenticates() && !self.insecure {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{addr} is not a loopback address, and no caller is authenticated (neither \
                         server.tokens_file nor server.tls_client_ca_file is set): anyone who reaches it \
                         could push as any service and read everything. Listen on 127.0.0.1 (or ::1), set \
                         up tokens or client certificates, or accept that with `serve --insecure` \
                         (server.insecure = true)"
                    ),
                });
            }
            if self.tokens_file.is_some() && self.tls_cert_file.is_none() {
                warnings.push(format!(
                    "{key} = {addr} is reachable from the network without TLS: bearer tokens cross it in \
                     clear text (set server.tls_cert_file and server.tls_key_file)"
                ));
            }
        }
        Ok(warnings)
    }

    /// `unix_socket_mode` as a number.
    pub fn unix_mode(&self) -> Result<u32, ConfigError> {
        let t = self.unix_socket_mode.trim_start_matches("0o");
        u32::from_str_radix(t, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| ConfigError::Invalid {
            key: "server.unix_socket_mode",
            message: format!("{:?} is not an octal file mode such as \"0660\"", self.unix_socket_mode),
        })
    }

    /// `unix_socket_roles`, parsed.
    pub fn unix_roles(&self) -> Result<Vec<crate::server::auth::Role>, ConfigError> {
        self.unix_socket_roles
            .iter()
            .map(|r| {
                crate::server::auth::Role::parse(r).ok_or_else(|| ConfigError::Invalid {
                    key: "server.unix_socket_roles",
                    message: format!("{r:?} is not one of ingest, query, admin"),
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return invalid("server.tls_key_file", "is required with server.tls_cert_file"),
            (None, Some(_)) => return invalid("server.tls_cert_file", "is required with server.tls_key_file"),
            _ => {}
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return invalid("server.tls_client_ca_file", "needs TLS: set server.tls_cert_file and server.tls_key_file");
        }
        if self.reload_interval.is_zero() {
            return invalid("server.reload_interval", "must be above 0s");
        }
        if !(0..=MAX_NICE).contains(&self.worker_nice) {
            return Err(ConfigError::Invalid {
                key: "server.worker_nice",
                message: format!("must be between 0 and {MAX_NICE} (is {})", self.worker_nice),
            });
        }
        self.unix_mode()?;
        self.unix_roles()?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Folder holding the sled database and the write-ahead log.
    pub data_dir: PathBuf,
    /// Samples per series after which the in-memory head is cut into a chunk.
    pub chunk_samples: usize,
    /// A head older than this (by its first sample's arrival) is cut even if not full.
    #[serde(with = "humantime_serde_compat")]
    pub max_head_age: Duration,
    /// How often the store checkpoints: aggregates and due chunks go to sled, sled is flushed
    /// and write-ahead-log segments that are no longer needed are deleted.
    #[serde(with = "humantime_serde_compat")]
    pub checkpoint_interval: Duration,
    /// A checkpoint also starts once this many bytes of WAL records were written since the last
    /// one, each counted at its decoded size (records are stored compressed): restart replays
    /// at most about twice this.
    pub checkpoint_wal_bytes: u64,
    /// A checkpoint also starts once the inference aggregates held in memory (one per group and
    /// bucket that had events since the last one, a few hundred bytes each) are this many: a
    /// backfill spreads its events over many buckets.
    pub checkpoint_buckets: u64,
    /// Width of the inference-event aggregation buckets (HDR histograms, counts).
    #[serde(with = "humantime_serde_compat")]
    pub event_bucket: Duration,
    /// Block-file size (chunk payloads) before a new file is started.
    pub block_file_bytes: u64,
    /// Write-ahead-log segment size before a new file is started.
    pub wal_segment_bytes: u64,
    /// Most ingest requests one group commit (one fsync) covers.
    pub max_group_commit: usize,
    /// Bounded queue between the gRPC handlers and the committer; handlers wait when it is full
    /// (back-pressure reaches clients through their unacked window).
    pub commit_queue: usize,
    /// Free space the data folder's file system must keep: below it new data is refused with
    /// RESOURCE_EXHAUSTED (naming the path and the free space) while checkpoints still use the
    /// reserve; ingest resumes by itself once space is freed.
    pub min_free_bytes: u64,
}

/// Input limits; a violation is rejected per item with INVALID_ARGUMENT or RESOURCE_EXHAUSTED
/// naming the field, the limit and the value, while the valid items beside it are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest gRPC message accepted (bytes).
    pub max_message_bytes: usize,
    /// Labels per series (metric series, inference-event labels and log fields alike).
    pub max_labels: usize,
    pub max_label_name_len: usize,
    pub max_label_value_len: usize,
    /// Length of a metric name, model, version, endpoint or service name.
    pub max_name_len: usize,
    /// Length of a log message.
    pub max_log_message_len: usize,
    /// Distinct series one service may create.
    pub max_series_per_service: usize,
    /// Distinct series in the whole daemon (a client names its own service, so the per-service
    /// limit alone does not bound memory).
    pub max_series: usize,
    /// Largest stored form (WAL record) of one batch; validation adds the service and a
    /// timestamp to each log record and event, so it can exceed the message size.
    pub max_batch_bytes: usize,
    /// Largest inference latency or stage time accepted.
    #[serde(with = "humantime_serde_compat")]
    pub max_latency: Duration,
    /// A client not seen for this long is forgotten: its registry entry and de-duplication
    /// state expire (a resend after that is stored again).
    #[serde(with = "humantime_serde_compat")]
    pub client_ttl: Duration,
    /// Oldest timestamp accepted, relative to now.
    #[serde(with = "humantime_serde_compat")]
    pub max_age: Duration,
    /// Oldest timestamp accepted in batches marked `backfill`.
    #[serde(with = "humantime_serde_compat")]
    pub backfill_max_age: Duration,
    /// How far into the future a timestamp may be.
    #[serde(with = "humantime_serde_compat")]
    pub max_future: Duration,
    /// Accept NaN and infinite sample values.
    pub allow_non_finite: bool,
    /// Resident memory (bytes) above which ingest is refused with RESOURCE_EXHAUSTED and a
    /// retry delay, while the daemon cuts its in-memory heads into chunks to make room;
    /// nothing acked is dropped. 0: no limit.
    pub memory_limit: u64,
    /// Ingest is accepted again once resident memory is below this fraction of memory_limit.
    pub memory_resume: f64,
    /// The retry delay a memory refusal carries (`google.rpc.RetryInfo`).
    #[serde(with = "humantime_serde_compat")]
    pub memory_retry_after: Duration,
    /// Bytes of received ingest messages (their encoded size) that may wait for their fsync at
    /// once, over every stream and call; past it the daemon stops reading until acks free
    /// room (HTTP/2 flow control holds the senders back). A message larger than this waits
    /// for all of it.
    pub ingest_inflight_bytes: u64,
    /// Ingest streams one client (client id, else service) may hold open at once; 0: no limit.
    pub max_streams_per_client: u32,
    /// Batches per second one client may send (a bucket of one second's worth); past it a
    /// batch is refused with RESOURCE_EXHAUSTED and the delay until the next; 0: no limit.
    pub max_batch_rate_per_client: f64,
}

/// How long each kind of data is kept; enforced in the background.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    #[serde(with = "humantime_serde_compat")]
    pub metrics: Duration,
    /// Inference aggregates (histograms and counts per bucket).
    #[serde(with = "humantime_serde_compat")]
    pub inference_stats: Duration,
    /// Raw inference events (request-id look-ups).
    #[serde(with = "humantime_serde_compat")]
    pub inference_events: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub logs: Duration,
    /// How often retention runs.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
}

/// Host and GPU samplers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Host sampling interval; "0s" turns host sampling off.
    #[serde(with = "humantime_serde_compat")]
    pub host_interval: Duration,
    /// How often the daemon stores its own figures (those of `/metrics`) as series; "0s" turns
    /// that off.
    #[serde(with = "humantime_serde_compat")]
    pub self_interval: Duration,
    /// "auto" (NVML when an NVIDIA driver is present) or "off".
    pub gpu: String,
    /// GPU sampling interval (cheap calls every tick).
    #[serde(with = "humantime_serde_compat")]
    pub gpu_interval: Duration,
    /// Per-process GPU lists every this many GPU ticks.
    pub gpu_process_every: u32,
    /// Longest a tick's NVML calls may take before the tick is given up.
    #[serde(with = "humantime_serde_compat")]
    pub gpu_timeout: Duration,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            host_interval: Duration::from_secs(10),
            self_interval: Duration::from_secs(10),
            gpu: "auto".into(),
            gpu_interval: Duration::from_secs(5),
            gpu_process_every: 6,
            gpu_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "modelwatch=debug"; `MODELWATCH_LOG` overrides it.
    pub level: String,
    /// "human" or "json".
    pub format: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7070".parse().expect("static address"),
            http_listen: "127.0.0.1:7071".parse().expect("static address"),
            insecure: false,
            shutdown_timeout: Duration::from_secs(10),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tokens_file: None,
            unix_socket: None,
            unix_socket_mode: "0660".into(),
            unix_socket_group: None,
            unix_socket_roles: vec!["ingest".into()],
            reload_interval: Duration::from_secs(2),
            otlp_listen: None,
            worker_nice: 5,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("modelwatch-data"),
            chunk_samples: 4096,
            max_head_age: Duration::from_secs(2 * 3600),
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_wal_bytes: 256 << 20,
            checkpoint_buckets: 200_000,
            event_bucket: Duration::from_secs(10),
            block_file_bytes: 256 << 20,
            wal_segment_bytes: 64 << 20,
            max_group_commit: 256,
            commit_queue: 1024,
            min_free_bytes: 256 << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 << 20,
            memory_limit: 1 << 30,
            memory_resume: 0.9,
            memory_retry_after: Duration::from_secs(1),
            ingest_inflight_bytes: 4 << 20,
            max_streams_per_client: 64,
            max_batch_rate_per_client: 5000.0,
            max_labels: 32,
            max_label_name_len: 128,
            max_label_value_len: 1024,
            max_name_len: 256,
            max_log_message_len: 64 << 10,
            max_series_per_service: 100_000,
            max_series: 1_000_000,
            max_batch_bytes: 64 << 20,
            max_latency: Duration::from_secs(3600),
            client_ttl: Duration::from_secs(7 * 86400),
            max_age: Duration::from_secs(3600),
            backfill_max_age: Duration::from_secs(30 * 86400),
            max_future: Duration::from_secs(600),
            allow_non_finite: false,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            metrics: Duration::from_secs(30 * 86400),
            inference_stats: Duration::from_secs(90 * 86400),
            inference_events: Duration::from_secs(7 * 86400),
            logs: Duration::from_secs(14 * 86400),
            interval: Duration::from_secs(300),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "human".into() }
    }
}

/// `storage.chunk_samples` at most (see where it is checked).
const MAX_CHUNK_SAMPLES: usize = 1 << 20;

/// Longest duration any key accepts.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// Prefix of environment overrides: `MODELWATCH__LIMITS__MAX_LABELS=64`.
pub const ENV_PREFIX: &str = "MODELWATCH__";

impl Config {
    /// Defaults, then `file` if given, then the process environment's overrides.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?
            }
            None => String::new(),
        };
        let origin = file.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        Self::from_sources(&text, &origin, std::env::vars())
    }

    /// Parses TOML `text`, applies `env` overrides, validates.
    pub fn from_sources(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.into(), message: e.to_string() })?;
        let parse = |t: &toml::Table| Config::deserialize(toml::Value::Table(t.clone()));
        // The file alone first, so that its errors name it and the environment's name the
        // variable.
        parse(&table)
            .map_err(|e| ConfigError::Parse { origin: origin.into(), message: e.to_string().trim().to_string() })?;
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (key, raw) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                if let Some(hint) = single_underscore_hint(&key) {
                    return Err(ConfigError::Parse {
                        origin: format!("environment {key}"),
                        message: format!("overrides take two underscores between parts: {hint}"),
                    });
                }
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let value = parse_env_value(&raw);
            let origin = || format!("environment {key}");
            set_path(&mut table, &parts, value).map_err(|message| ConfigError::Parse { origin: origin(), message })?;
            parse(&table)
                .map_err(|e| ConfigError::Parse { origin: origin(), message: e.to_string().trim().to_string() })?;
        }
        let cfg = parse(&table)
            .map_err(|e| ConfigError::Parse { origin: origin.into(), message: e.to_string().trim().to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot: sizes, ranges, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn nonzero(key: &'static str, v: u64) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid { key, message: "must be greater than 0".into() });
            }
            Ok(())
        }
        self.server.validate()?;
        let l = &self.limits;
        if !(l.memory_resume > 0.0 && l.memory_resume < 1.0) {
            return Err(ConfigError::Invalid {
                key: "limits.memory_resume",
                message: format!("{} is not a fraction between 0 and 1 (exclusive)", l.memory_resume),
            });
        }
        if !(l.max_batch_rate_per_client >= 0.0 && l.max_batch_rate_per_client.is_finite()) {
            return Err(ConfigError::Invalid {
                key: "limits.max_batch_rate_per_client",
                message: format!("{} is not a rate of 0 (no limit) or more", l.max_batch_rate_per_client),
            });
        }
        if l.memory_limit > 0 && l.memory_retry_after.is_zero() {
            return Err(ConfigError::Invalid { key: "limits.memory_retry_after", message: "must be above 0s".into() });
        }
        let s = &self.storage;
        nonzero("storage.chunk_samples", s.chunk_samples as u64)?;
        if s.chunk_samples > MAX_CHUNK_SAMPLES {
            // A query that touches a chunk decodes it whole: this bounds that cost (and a
            // head's memory between cuts): 2^20 samples are 16 MiB decoded.
            return Err(ConfigError::Invalid {
                key: "storage.chunk_samples",
                message: format!("must be at most {MAX_CHUNK_SAMPLES} (is {})", s.chunk_samples),
            });
        }
        nonzero("storage.max_group_commit", s.max_group_commit as u64)?;
        nonzero("storage.commit_queue", s.commit_queue as u64)?;
        nonzero("storage.event_bucket", s.event_bucket.as_millis() as u64)?;
        nonzero("storage.checkpoint_interval", s.checkpoint_interval.as_millis() as u64)?;
        nonzero("storage.checkpoint_buckets", s.checkpoint_buckets)?;
        if s.block_file_bytes < 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "storage.block_file_bytes",
                message: "must be at least 1 MiB".into(),
            });
        }
        if s.checkpoint_wal_bytes < 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "storage.checkpoint_wal_bytes",
                message: "must be at least 1 MiB".into(),
            });
        }
        if s.wal_segment_bytes < 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "storage.wal_segment_bytes",
                message: "must be at least 1 MiB".into(),
            });
        }
        if !s.event_bucket.as_millis().is_multiple_of(1000) {
            return Err(ConfigError::Invalid { key: "storage.event_bucket", message: "must be whole seconds".into() });
        }
        nonzero("storage.max_head_age", s.max_head_age.as_millis() as u64)?;
        let l = &self.limits;
        nonzero("limits.max_message_bytes", l.max_message_bytes as u64)?;
        nonzero("limits.ingest_inflight_bytes", l.ingest_inflight_bytes)?;
        nonzero("limits.max_series", l.max_series as u64)?;
        nonzero("limits.max_latency", l.max_latency.as_micros() as u64)?;
        nonzero("limits.client_ttl", l.client_ttl.as_millis() as u64)?;
        nonzero("alerting.evaluation_interval", self.alerting.evaluation_interval.as_millis() as u64)?;
        self.validate_fleet()?;
        nonzero("alerting.notify_timeout", self.alerting.notify_timeout.as_millis() as u64)?;
        let rp = &self.report;
        nonzero("report.slo_p95", rp.slo_p95.as_millis() as u64)?;
        for (key, v) in [
            ("report.target_utilization", rp.target_utilization),
            ("report.scale_up_utilization", rp.scale_up_utilization),
            ("report.scale_down_utilization", rp.scale_down_utilization),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::Invalid { key, message: format!("must be above 0 and at most 1, not {v}") });
            }
        }
        for (key, v) in [
            ("report.price_gpu_hour", rp.price_gpu_hour),
            ("report.price_cpu_core_hour", rp.price_cpu_core_hour),
            ("report.price_memory_gib_hour", rp.price_memory_gib_hour),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Invalid { key, message: format!("must be a price of 0 or more, not {v}") });
            }
        }
        if l.max_batch_bytes < 1 << 20 || l.max_batch_bytes >= crate::store::wal::MAX_RECORD {
            return Err(ConfigError::Invalid {
                key: "limits.max_batch_bytes",
                message: format!("must be between 1 MiB and {} bytes", crate::store::wal::MAX_RECORD - 1),
            });
        }
        // Durations become millisecond offsets from now: past ~292 million years they wrap, and
        // a wrapped retention deletes everything. A century is more than any of them needs.
        let r = &self.retention;
        for (key, d) in [
            ("retention.metrics", r.metrics),
            ("retention.inference_stats", r.inference_stats),
            ("retention.inference_events", r.inference_events),
            ("retention.logs", r.logs),
            ("retention.interval", r.interval),
            ("limits.max_age", l.max_age),
            ("limits.backfill_max_age", l.backfill_max_age),
            ("limits.max_future", l.max_future),
            ("limits.max_latency", l.max_latency),
            ("limits.client_ttl", l.client_ttl),
            ("storage.max_head_age", s.max_head_age),
            ("storage.checkpoint_interval", s.checkpoint_interval),
            ("storage.event_bucket", s.event_bucket),
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            ("sampling.host_interval", self.sampling.host_interval),
            ("sampling.self_interval", self.sampling.self_interval),
            ("sampling.gpu_interval", self.sampling.gpu_interval),
            ("sampling.gpu_timeout", self.sampling.gpu_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{} is longer than 100 years", humantime::format_duration(d)),
                });
            }
        }
        // A zero interval would spin a loop.
        nonzero("retention.interval", r.interval.as_millis() as u64)?;
        nonzero("server.shutdown_timeout", self.server.shutdown_timeout.as_millis() as u64)?;
        let q = &self.query;
        nonzero("query.max_series", q.max_series as u64)?;
        nonzero("query.max_samples", q.max_samples)?;
        nonzero("query.max_points", q.max_points)?;
        nonzero("query.timeout", q.timeout.as_millis() as u64)?;
        nonzero("query.max_concurrent", q.max_concurrent as u64)?;
        nonzero("query.lookback_delta", q.lookback_delta.as_millis() as u64)?;
        nonzero("query.subquery_step", q.subquery_step.as_millis() as u64)?;
        if q.timeout > MAX_DURATION {
            return Err(ConfigError::Invalid { key: "query.timeout", message: "is longer than 100 years".into() });
        }
        nonzero("limits.max_label_name_len", l.max_label_name_len as u64)?;
        nonzero("limits.max_name_len", l.max_name_len as u64)?;
        if l.backfill_max_age < l.max_age {
            return Err(ConfigError::Invalid {
                key: "limits.backfill_max_age",
                message: "must be at least limits.max_age".into(),
            });
        }
        if !matches!(self.sampling.gpu.as_str(), "auto" | "off") {
            return Err(ConfigError::Invalid {
                key: "sampling.gpu",
                message: format!("must be \"auto\" or \"off\", not {:?}", self.sampling.gpu),
            });
        }
        nonzero("sampling.gpu_interval", self.sampling.gpu_interval.as_millis() as u64)?;
        nonzero("sampling.gpu_timeout", self.sampling.gpu_timeout.as_millis() as u64)?;
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!("must be \"human\" or \"json\", not {:?}", self.log.format),
            });
        }
        Ok(())
    }
}

/// `MODELWATCH_LIMITS_MAX_LABELS` looks like an override with single underscores: the
/// spelling it was meant to have. Other `MODELWATCH_` variables (`MODELWATCH_LOG`) are left
/// alone.
fn single_underscore_hint(key: &str) -> Option<String> {
    let rest = key.strip_prefix("MODELWATCH_")?.to_ascii_lowercase();
    const SECTIONS: [&str; 7] = ["server", "storage", "limits", "retention", "sampling", "query", "log"];
    let section = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_")))?;
    let field = &rest[section.len() + 1..];
    Some(format!("MODELWATCH__{}__{}", section.to_ascii_uppercase(), field.to_ascii_uppercase()))
}

fn parse_env_value(raw: &str) -> toml::Value {
    // A TOML literal when it is one (numbers, booleans, quoted strings), else the raw string,
    // so `MODELWATCH__SERVER__LISTEN=127.0.0.1:0` needs no quotes.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> Result<(), String> {
    match parts {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table.entry(head.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("`{head}` is not a section")),
            }
        }
    }
}

/// Durations in config are human strings ("10s", "30d", "2h 30m").
impl Config {
    fn validate_fleet(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { key: "fleet.remote_write", message });
        let mut names = std::collections::BTreeSet::new();
        for (i, rw) in self.fleet.remote_write.iter().enumerate() {
            let at = format!("[{i}] ({})", rw.endpoint_name());
            if !(rw.url.starts_with("http://") || rw.url.starts_with("https://")) {
                return invalid(format!("{at}: url {:?} is not an http:// or https:// URL", rw.url));
            }
            if !names.insert(rw.endpoint_name()) {
                return invalid(format!("{at}: two endpoints are named {:?}; give each a name", rw.endpoint_name()));
            }
            let name = rw.endpoint_name();
            if name.chars().any(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(c))) {
                return invalid(format!("{at}: name {name:?} may hold only letters, digits and - _ . :"));
            }
            if rw.batch_samples == 0 || rw.shards == 0 || rw.shards > 64 {
                return invalid(format!(
                    "{at}: batch_samples ({}) must be above 0 and shards ({}) between 1 and 64",
                    rw.batch_samples, rw.shards
                ));
            }
            if rw.interval.is_zero()
                || rw.timeout.is_zero()
                || rw.min_backoff.is_zero()
                || rw.max_backoff < rw.min_backoff
            {
                return invalid(format!(
                    "{at}: interval, timeout and min_backoff must be above 0s, and max_backoff at least min_backoff"
                ));
            }
            if !rw.backfill.is_empty() && rw.backfill_ms().is_none() {
                return invalid(format!("{at}: backfill {:?} is not a duration (\"1h\") or empty", rw.backfill));
            }
            if rw.tls_cert_file.is_some() != rw.tls_key_file.is_some() {
                return invalid(format!("{at}: tls_cert_file and tls_key_file go together"));
            }
            if let Err(e) = crate::export::relabel::Relabeler::new(&rw.relabel) {
                return invalid(format!("{at}: {e}"));
            }
        }
        Ok(())
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        let c = Config::from_sources("", "t", no_env()).unwrap();
        assert_eq!(c.server.listen.port(), 7070);
    }

    #[test]
    fn the_fleet_examples_parse_and_validate() {
        for (name, text) in [
            ("remote-write.toml", include_str!("../deploy/fleet/remote-write.toml")),
            ("alerting.toml", include_str!("../deploy/fleet/alerting.toml")),
            ("otlp.toml", include_str!("../deploy/fleet/otlp.toml")),
        ] {
            let c = Config::from_sources(text, name, no_env()).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let c = Config::from_sources(include_str!("../deploy/fleet/remote-write.toml"), "rw", no_env()).unwrap();
        let rw = &c.fleet.remote_write[0];
        assert_eq!((rw.endpoint_name(), rw.relabel.len(), rw.backfill_ms()), ("central".into(), 2, Some(86_400_000)));
    }

    #[test]
    fn remote_write_mistakes_name_the_endpoint() {
        let bad = |t: &str| {
            Config::from_sources(t, "t", no_env()).and_then(|c| c.validate().map(|_| c)).err().unwrap().to_string()
        };
        let e = bad("[[fleet.remote_write]]\nurl = \"vm:8428\"\n");
        assert!(e.contains("fleet.remote_write") && e.contains("not an http"), "{e}");
        let e = bad("[[fleet.remote_write]]\nurl = \"http://a/w\"\n[[fleet.remote_write]]\nurl = \"http://a/x\"\n");
        assert!(e.contains("two endpoints are named \"a\""), "{e}");
        let e = bad(
            "[[fleet.remote_write]]\nurl = \"http://a/w\"\nrelabel = [{action = \"keep\", match = \"rate(x[1m])\"}]\n",
        );
        assert!(e.contains("relabel[0].match"), "{e}");
        let e = bad("[[fleet.remote_write]]\nurl = \"http://a/w\"\nbackfill = \"soon\"\n");
        assert!(e.contains("backfill"), "{e}");
    }

    #[test]
    fn example_config_in_deploy_parses() {
        let text = include_str!("../deploy/modelwatch.toml");
        let c = Config::from_sources(text, "deploy/modelwatch.toml", no_env()).unwrap();
        assert_eq!(c.limits.max_labels, 32);
        assert_eq!(c.retention.logs, Duration::from_secs(14 * 86400));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_sources("[limits]\nmax_lables = 3\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("max_lables"), "{err}");
        let err = Config::from_sources("[nope]\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            ("MODELWATCH__LIMITS__MAX_LABELS".to_string(), "7".to_string()),
            ("MODELWATCH__SERVER__LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("MODELWATCH__RETENTION__LOGS".to_string(), "3d".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::from_sources("[limits]\nmax_labels = 5\n", "t", env).unwrap();
        assert_eq!(c.limits.max_labels, 7);
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.retention.logs, Duration::from_secs(3 * 86400));
        let bad = vec![("MODELWATCH__LIMITS__MAX_LABLES".to_string(), "7".to_string())];
        let err = Config::from_sources("", "t", bad).unwrap_err().to_string();
        assert!(err.contains("max_lables"), "{err}");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let bad = vec![("MODELWATCH__LIMITS__MAX_LABEL".to_string(), "64".to_string())];
        let err = Config::from_sources("", "defaults", bad).unwrap_err().to_string();
        assert!(err.contains("environment MODELWATCH__LIMITS__MAX_LABEL"), "{err}");
        assert!(err.contains("max_label"), "{err}");
        let single = vec![("MODELWATCH_LIMITS_MAX_LABELS".to_string(), "64".to_string())];
        let err = Config::from_sources("", "defaults", single).unwrap_err().to_string();
        assert!(err.contains("MODELWATCH__LIMITS__MAX_LABELS"), "{err}");
        let unrelated = vec![
            ("MODELWATCH_LOG".to_string(), "debug".to_string()),
            ("MODELWATCH_TEST_SEED".to_string(), "1".to_string()),
        ];
        Config::from_sources("", "defaults", unrelated).unwrap();
    }

    #[test]
    fn durations_that_wrap_or_spin_are_refused() {
        let err =
            Config::from_sources("[retention]\nmetrics = \"300000000y\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("retention.metrics") && err.contains("100 years"), "{err}");
        let err = Config::from_sources("[retention]\ninterval = \"0s\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("retention.interval"), "{err}");
        let err =
            Config::from_sources("[storage]\ncheckpoint_interval = \"0s\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("storage.checkpoint_interval"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err = Config::from_sources("[log]\nformat = \"xml\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("log.format"), "{err}");
        let err = Config::from_sources("[storage]\nchunk_samples = 0\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("storage.chunk_samples"), "{err}");
        let err = Config::from_sources("[storage]\nchunk_samples = 2000000\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("storage.chunk_samples") && err.contains("1048576") && err.contains("2000000"), "{err}");
        let err = Config::from_sources("[retention]\nlogs = \"soon\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
        for nice in ["-1", "20"] {
            let err = Config::from_sources(&format!("[server]\nworker_nice = {nice}\n"), "t", no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.worker_nice") && err.contains("19") && err.contains(nice), "{err}");
        }
        assert_eq!(Config::from_sources("[server]\nworker_nice = 0\n", "t", no_env()).unwrap().server.worker_nice, 0);
    }
}
