//! What `reef status` shows: each instance's state as plain data, shared by the supervisor and
//! the control clients.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for its dependencies to be ready.
    Waiting,
    /// Spawned, not ready yet.
    Starting,
    Ready,
    /// Running but failing its liveness probe.
    Unhealthy,
    /// Waiting to be restarted.
    Backoff,
    Stopping,
    /// Stopped on request (or never started: disabled).
    Stopped,
    /// Exited 78: its configuration is wrong. Not restarted until its spec changes or a
    /// manual restart.
    ConfigError,
    /// A port it needs is held by another process.
    Blocked,
    /// Exited and its restart policy says no more; or it could not be spawned.
    Exited,
}

impl State {
    /// Every state, in the order of a gateway's life.
    pub const ALL: [State; 10] = [
        State::Waiting,
        State::Starting,
        State::Ready,
        State::Unhealthy,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::ConfigError,
        State::Blocked,
        State::Exited,
    ];

    /// States in which a gateway process exists.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            State::Starting | State::Ready | State::Unhealthy | State::Stopping
        )
    }

    /// States that will not change without a command: the instance is settled.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            State::Ready | State::Stopped | State::ConfigError | State::Exited
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).expect("states serialize");
        f.write_str(text.as_str().expect("states serialize to strings"))
    }
}

/// The ports shown for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSummary {
    pub gateway: u16,
    pub browser_control: u16,
    pub cdp_first: u16,
    pub cdp_last: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub profile: String,
    pub state: State,
    pub pid: Option<u32>,
    /// Liveness: `None` until probed.
    pub healthy: Option<bool>,
    pub ready: bool,
    /// Whether this reef took the process over from a previous one (live restore).
    pub adopted: bool,
    /// Times the gateway was started again after its first start.
    pub restarts: u32,
    /// When the current process started (seconds since the Unix epoch).
    pub started_at: Option<f64>,
    /// When `state` last changed.
    pub since: f64,
    pub ports: PortSummary,
    /// How the last process ended, e.g. "exit code 1" or "signal 9 (SIGKILL)".
    pub last_exit: Option<String>,
    /// Why the instance is in its state (blocked by whom, the error, the next restart).
    pub message: Option<String>,
    /// CPU use of the gateway's whole session (its workers too), 100 = one core: since the
    /// last status request, or on average since it started for the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// CPU time the gateway's session has used, in seconds (its live processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Resident memory of the gateway's whole session, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// How long the last liveness or readiness probe of the running process took, in seconds
    /// (a failed probe counts as long as it ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_seconds: Option<f64>,
    /// A degraded state the running gateway reported itself (its restart-loop breaker, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<super::degraded::Degraded>,
    pub log: PathBuf,
}

/// The whole topology as `reef status --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyStatus {
    pub format: u32,
    pub script: PathBuf,
    /// reef's own pid.
    pub pid: u32,
    pub started_at: f64,
    /// Topology generation: 1 at start, one more per applied reload.
    pub generation: u64,
    /// When the running generation was loaded.
    pub loaded_at: f64,
    /// Script evaluations since start (file changes, SIGHUP, `reef reload`, `reef diff`), failed
    /// ones included: with the debounce, one burst of writes costs one evaluation.
    pub evaluations: u64,
    /// Reloads that failed since start (the running topology stayed as it was each time).
    #[serde(default)]
    pub reload_failures: u64,
    /// The last reload's error, until a reload succeeds.
    pub reload_error: Option<ReloadError>,
    pub instances: Vec<InstanceStatus>,
    /// The hook host, when the script has hooks or timers (or its host was restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<super::automation::HookHostStatus>,
}

/// A reload that failed: the running topology stayed as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadError {
    /// What went wrong, with file and line for script errors.
    pub message: String,
    pub at: f64,
}

pub use crate::host::identity::unix_now;

/// Statuses for tests of what shows them (`reef top`, the metrics).
#[cfg(test)]
pub(crate) mod samples {
    use std::path::PathBuf;

    use super::*;

    /// A ready instance on `port`, as a status shows it.
    pub(crate) fn instance(name: &str, port: u16) -> InstanceStatus {
        InstanceStatus {
            name: name.to_owned(),
            profile: name.to_owned(),
            state: State::Ready,
            pid: Some(u32::from(port) + 10_000),
            healthy: Some(true),
            ready: true,
            adopted: false,
            restarts: 0,
            started_at: Some(1_000.0),
            since: 1_000.0,
            ports: PortSummary {
                gateway: port,
                browser_control: port + 2,
                cdp_first: port + 11,
                cdp_last: port + 110,
            },
            last_exit: None,
            message: None,
            cpu_percent: Some(0.5),
            cpu_seconds: Some(1.0),
            rss_bytes: Some(48 * 1024 * 1024),
            probe_seconds: Some(0.002),
            degraded: None,
            log: PathBuf::from(format!("/state/logs/{name}.log")),
        }
    }

    pub(crate) fn topology(instances: Vec<InstanceStatus>) -> TopologyStatus {
        TopologyStatus {
            format: 1,
            script: PathBuf::from("/srv/bots/reef.lua"),
            pid: 4242,
            started_at: 900.0,
            generation: 1,
            loaded_at: 900.0,
            evaluations: 1,
            reload_failures: 0,
            reload_error: None,
            instances,
            hooks: None,
        }
    }
}
