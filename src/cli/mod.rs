//! Command-line clients of the daemon's own APIs (as promtool and amtool are of
//! Prometheus'): each talks to a running daemon over gRPC, through [`conn`] (token and TLS
//! from the environment).
pub mod alerts;
pub mod conn;
pub mod loadgen;
pub mod query;
pub mod report;
pub mod rules;
pub mod top;
