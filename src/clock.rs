//! Time, injected: the daemon reads the wall clock through a [`Clock`] so that tests drive
//! time-dependent logic (expiry, alert durations) with a [`ManualClock`] instead of sleeping.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub type ClockRef = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        wall_ms()
    }
}

/// The wall clock read directly, for the few places that have no [`Clock`] at hand (a WAL
/// replay stamping what it restores).
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock read from a file holding Unix milliseconds, for tests that drive a daemon
/// process's time from outside (alert durations across a `kill -9`). Set by the environment
/// variable `MODELWATCH_CLOCK_FILE`; never by configuration. Falls back to the wall clock
/// while the file is unreadable.
#[derive(Debug)]
pub struct FileClock(pub std::path::PathBuf);

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(wall_ms)
    }
}

/// The daemon's clock: the wall clock, or a [`FileClock`] under `MODELWATCH_CLOCK_FILE`.
pub fn from_env() -> ClockRef {
    match std::env::var_os("MODELWATCH_CLOCK_FILE") {
        Some(p) => {
            tracing::warn!(path = ?p, "the clock is read from MODELWATCH_CLOCK_FILE (a testing aid)");
            Arc::new(FileClock(p.into()))
        }
        None => system(),
    }
}

pub fn system() -> ClockRef {
    Arc::new(SystemClock)
}
