//! Alerting: Prometheus rule files evaluated through the PromQL engine.
//!
//! # Layout
//! - [`rules`]: rule files read and checked (`rules check`), globs, duplicate lint;
//! - [`template`]: Go-template expansion of labels and annotations (`humanize`, `printf`...);
//! - [`eval`]: one evaluation of a group at a time (states, `ALERTS`, staleness), over a
//!   [`eval::Storage`] that is the daemon's store or memory;
//! - [`history`]: when each alert was pending and firing, read back from `ALERTS`;
//! - [`manager`]: the daemon's rule set: reloads, schedules, states saved across restarts;
//! - [`run`]: the daemon's evaluation loop (results committed, alerts to `notify`);
//! - [`unittest`]: `rules test`, promtool's unit-test format over an in-memory store.
pub mod eval;
pub mod history;
pub mod manager;
pub mod rules;
pub mod run;
pub mod template;
pub mod unittest;
