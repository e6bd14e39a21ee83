//! Alerting: Prometheus rule files evaluated through the PromQL engine.
//!
//! # Layout
//! - [`rules`]: rule files read and checked (`rules check`), globs, duplicate lint;
//! - [`template`]: Go-template expansion of labels and annotations (`humanize`, `printf`...);
//! - [`eval`]: one evaluation of a group at a time (states, `ALERTS`, staleness), over a
//!   [`eval::Storage`] that is the daemon's store or memory;
//! - [`unittest`]: `rules test`, promtool's unit-test format over an in-memory store.
pub mod eval;
pub mod rules;
pub mod template;
pub mod unittest;
