//! # modelwatch
//!
//! A per-host telemetry daemon for machines that serve ML models. Model services push metrics,
//! structured logs and inference events over gRPC streams; the daemon stores them durably in an
//! embedded time-series store on sled and answers query RPCs.
//!
//! # Layout
//! - [`config`]: the one `Config` (defaults, TOML file, `MODELWATCH__*` environment, validation).
//! - [`clock`]: the injected wall clock (a manual one in tests).
//! - [`state`]: the daemon's shared handles (`Ctx`): store, committer, validator, registry.
//! - [`api`]: tonic services, thin adapters from gRPC to the domain handles; error → status
//!   (`google.rpc.Status` details for rejected input).
//! - [`server`]: the network edge: listeners (TCP, TLS with reloading certificates, the local
//!   Unix socket with its peer's credentials) and authentication (bearer tokens with roles and
//!   service limits); `api` and `http` get the caller's principal.
//! - [`http`]: the HTTP listener: Prometheus' query API (`/api/v1/...`) for Grafana and curl;
//!   error → Prometheus' error JSON.
//! - [`promql`]: the PromQL engine over the store (and over memory, for conformance and rule
//!   tests), with inference events and logs as derived series; every query language answer
//!   (HTTP, `Query/Eval`, `modelwatch query`) is computed there.
//! - [`ingest`]: gRPC-free validation against the limits (`validate`), the WAL record's
//!   encoding and the batch-size bound (`prepare`), and the registry of connected services.
//! - [`store`]: the durable part: WAL, the committer thread (group commit, acks after fsync,
//!   disk reserve), replay and recovery, memtable and chunks, checkpoints, reads from
//!   snapshots, retention; sled holds indexes and small values, block files the payloads.
//!   `store::keys` holds every key layout; `store::chunk` the sample compression.
//! - [`query`]: the query RPCs' answers over the store (`Eval`/`EvalRange` through `promql`), each on a `Budget` (`[query]`);
//!   selectors (`query::selector`) and times and ranges (`query::plan`).
//! - [`report`]: reports (service, errors, GPU, capacity, compare), computed through `promql`
//!   plus bounded reads of stored events and logs for examples and label distributions.
//! - [`sample`]: host (sysinfo) and GPU (NVML behind `GpuSource`) samplers; their readings
//!   enter through the same validation and committer as client data.
//! - [`telemetry`]: the daemon's own figures (ingest rates).
//! - [`shutdown`]: SIGTERM/SIGINT → the cancellation token every task holds.
//! - [`systemd`]: `READY=1` / `STOPPING=1` to the service manager (`Type=notify`).
//! - [`cli`]: command-line clients of the daemon's APIs (`modelwatch query`).
//! - [`app`]: wires the above and runs until shutdown; `app::recover` for `modelwatch recover`.
//!
//! Data flow: client → `api` (decode; metric batches straight into `store::SeriesBatch`) →
//! `ingest` (limits; rejected items named; WAL record encoded) → `store::commit::Committer`
//! (apply to memory, WAL append, fsync, ack) → `store` (heads → chunks, aggregates → sled at
//! checkpoints) ← `query` ← `api` ← grpcurl / CLI / clients. Dependencies point down: `api` → `ingest`, `query` → `store`; the store knows no
//! gRPC service.

pub mod alert;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod export;
pub mod http;
pub mod ingest;
pub mod notify;
pub mod promql;
pub mod query;
pub mod report;
pub mod sample;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod systemd;
pub mod telemetry;

/// Generated protobuf and gRPC code for `proto/modelwatch/v1/modelwatch.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("modelwatch.v1");

    /// The standard gRPC error model (`google.rpc.Status`, `google.rpc.BadRequest`), attached
    /// to errors as details.
    pub mod rpc {
        #![allow(clippy::all)]
        tonic::include_proto!("google.rpc");
    }

    /// The OTLP services and messages that the receiver decodes (`proto/opentelemetry/`).
    pub mod opentelemetry {
        pub mod proto {
            pub mod common {
                pub mod v1 {
                    #![allow(clippy::all)]
                    tonic::include_proto!("opentelemetry.proto.common.v1");
                }
            }
            pub mod collector {
                pub mod metrics {
                    pub mod v1 {
                        #![allow(clippy::all)]
                        tonic::include_proto!("opentelemetry.proto.collector.metrics.v1");
                    }
                }
                pub mod logs {
                    pub mod v1 {
                        #![allow(clippy::all)]
                        tonic::include_proto!("opentelemetry.proto.collector.logs.v1");
                    }
                }
                pub mod trace {
                    pub mod v1 {
                        #![allow(clippy::all)]
                        tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                    }
                }
            }
        }
    }

    /// Encoded descriptor set of our proto, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/modelwatch_descriptor.bin"));
}

/// The message a panic carried: its `String` or `&str` payload (None for any other), for the
/// places that catch one and report it.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> Option<String> {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
}
