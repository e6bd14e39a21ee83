//! # modelwatch
//!
//! A per-host telemetry daemon for machines that serve ML models. Model services push metrics,
//! structured logs and inference events over gRPC streams; the daemon stores them durably in an
//! embedded time-series store on sled and answers query RPCs.
//!
//! # Layout
//! - [`config`]: the one `Config` (defaults, TOML file, `MODELWATCH__*` environment, validation).
//! - [`api`]: tonic services, thin adapters from gRPC to the domain handles; error → status.
//! - [`ingest`]: stateless validation against the limits, the committer thread (group commit:
//!   apply, WAL append, one fsync, then acks), and the registry of connected services.
//! - [`store`]: sled trees plus our write-ahead log: series index, chunked samples, inference
//!   aggregates (HDR histograms per bucket), raw events, logs, checkpoints, retention.
//!   `store::keys` holds every key layout; `store::chunk` the sample compression.
//! - [`query`]: range and selector parsing and the computations behind the query RPCs.
//! - [`report`]: reports over stored series and events (the GPU report).
//! - [`sample`]: host (sysinfo) and GPU (NVML behind `GpuSource`) samplers; their readings
//!   enter through the same validation and committer as client data.
//! - [`telemetry`]: the daemon's own figures (ingest rates).
//! - [`shutdown`]: SIGTERM/SIGINT → the cancellation token every task holds.
//! - [`app`]: wires the above and runs until shutdown.
//!
//! Data flow: client → `api` (decode) → `ingest::Validator` (limits; rejected items named) →
//! `ingest::Committer` (apply to `store`, WAL append, fsync, ack) → `store` (heads → chunks,
//! aggregates → sled at checkpoints) ← `query` ← `api` ← grpcurl / CLI / clients.

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod ingest;
pub mod query;
pub mod report;
pub mod sample;
pub mod shutdown;
pub mod state;
pub mod store;
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

    /// Encoded descriptor set of our proto, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/modelwatch_descriptor.bin"));
}
