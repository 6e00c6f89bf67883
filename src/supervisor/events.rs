//! Typed supervisor events, published on one broadcast channel.
//!
//! Every transition of an instance that someone may react to (spawned, ready, unhealthy,
//! healthy, exited, blocked, backoff, stopped, adopted, config error) and every reload outcome
//! is an [`Event`]. Hooks, the progress line and `reef status --watch`-style consumers subscribe
//! instead of polling shared state; a slow consumer lags (and is told how many it missed), it
//! never slows supervision down.

use serde::Serialize;
use tokio::sync::broadcast;

use super::DiffNames;
use super::status::InstanceStatus;

/// How many events a consumer may fall behind before it starts missing some. Every slot is
/// allocated up front, so this is memory: the consumers (hooks, progress) drain at once.
pub const CAPACITY: usize = 1024;

/// The publishing side, shared by every instance task and the colony.
pub type Bus = broadcast::Sender<Event>;

pub fn bus() -> Bus {
    broadcast::channel(CAPACITY).0
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventKind {
    /// A gateway process was started.
    Spawned { pid: u32 },
    /// A gateway left by a previous reef was taken over.
    Adopted { pid: u32 },
    /// The readiness probe passed, `after` seconds after the spawn.
    Ready { pid: u32, after: f64 },
    /// A liveness probe failed.
    Unhealthy { reason: String },
    /// Liveness passes again.
    Healthy,
    /// The process ended: on its own (`reason` None) or because reef ended it (`reason` says
    /// why: not ready in time, failing liveness). Also sent when a spawn fails.
    Exited {
        /// The process that ended (none when the spawn failed).
        pid: Option<u32>,
        code: Option<i32>,
        signal: Option<i32>,
        description: String,
        reason: Option<String>,
    },
    /// A port it needs is held by another process.
    Blocked { holder: String },
    /// Waiting `delay` seconds before the next start.
    Backoff { delay: f64, reason: String },
    /// Stopped on request, for a reload, or for shutdown.
    Stopped { reason: Option<String> },
    /// Exit 78: the gateway says its configuration is wrong. No restart until a change.
    ConfigError { message: String },
    /// A reload was applied.
    ReloadApplied { diff: DiffNames },
    /// A reload failed; the running topology is unchanged.
    ReloadFailed { message: String },
    /// The running gateway reported a degraded state of its own (restart-loop breaker tripped,
    /// a stability bundle written): it answers probes but does not do all its work.
    Degraded {
        reason: String,
        message: String,
        advice: String,
        bundle: Option<std::path::PathBuf>,
    },
    /// The degraded state is over (the breaker recovered).
    Recovered { reason: String },
}

impl EventKind {
    /// The hook event this maps to (`reef.on(NAME, ...)`), if any.
    pub fn hook_name(&self) -> Option<&'static str> {
        Some(match self {
            EventKind::Ready { .. } => "ready",
            EventKind::Unhealthy { .. } => "unhealthy",
            EventKind::Healthy => "healthy",
            EventKind::Exited { .. } => "exit",
            EventKind::Blocked { .. } => "blocked",
            EventKind::Degraded { .. } => "degraded",
            EventKind::Recovered { .. } => "recovered",
            EventKind::Spawned { .. } => "spawned",
            EventKind::Adopted { .. } => "adopted",
            EventKind::Backoff { .. } => "backoff",
            EventKind::Stopped { .. } => "stopped",
            EventKind::ConfigError { .. } => "config-error",
            EventKind::ReloadApplied { .. } => "reload",
            EventKind::ReloadFailed { .. } => "reload-failed",
        })
    }
}

/// One event: when, which instance (with its status right after the transition), what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The instance's status after the transition; `None` for topology-wide events.
    pub status: Option<Box<InstanceStatus>>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    pub fn instance(&self) -> Option<&str> {
        self.status.as_ref().map(|status| status.name.as_str())
    }
}
