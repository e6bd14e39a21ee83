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
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC listener; port 0 picks a free port (printed as `listening on ADDR`).
    pub listen: SocketAddr,
    /// Graceful shutdown deadline: streams drain and the store flushes within it.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_timeout: Duration,
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
            shutdown_timeout: Duration::from_secs(10),
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
            event_bucket: Duration::from_secs(10),
            block_file_bytes: 256 << 20,
            wal_segment_bytes: 64 << 20,
            max_group_commit: 256,
            commit_queue: 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 << 20,
            max_labels: 32,
            max_label_name_len: 128,
            max_label_value_len: 1024,
            max_name_len: 256,
            max_log_message_len: 64 << 10,
            max_series_per_service: 100_000,
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
        for (key, raw) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            let value = parse_env_value(&raw);
            set_path(&mut table, &parts, value)
                .map_err(|message| ConfigError::Parse { origin: format!("environment {key}"), message })?;
        }
        let cfg: Config = Config::deserialize(toml::Value::Table(table))
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
        let s = &self.storage;
        nonzero("storage.chunk_samples", s.chunk_samples as u64)?;
        nonzero("storage.max_group_commit", s.max_group_commit as u64)?;
        nonzero("storage.commit_queue", s.commit_queue as u64)?;
        nonzero("storage.event_bucket", s.event_bucket.as_millis() as u64)?;
        nonzero("storage.checkpoint_interval", s.checkpoint_interval.as_millis() as u64)?;
        if s.block_file_bytes < 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "storage.block_file_bytes",
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
        let l = &self.limits;
        nonzero("limits.max_message_bytes", l.max_message_bytes as u64)?;
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
    fn invalid_values_name_the_key() {
        let err = Config::from_sources("[log]\nformat = \"xml\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("log.format"), "{err}");
        let err = Config::from_sources("[storage]\nchunk_samples = 0\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("storage.chunk_samples"), "{err}");
        let err = Config::from_sources("[retention]\nlogs = \"soon\"\n", "t", no_env()).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }
}
