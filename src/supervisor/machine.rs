//! The life of one instance, written down as a state machine.
//!
//! [`Machine::step`] is the only place where an instance changes state: it takes one [`Input`]
//! (a command, a probe result, an exit, a timer) and returns the [`Effect`]s to carry out
//! (check ports, spawn, probe, signal, set the timer, publish an event, answer a command). It
//! does no I/O and reads no clock: the runner ([`super::runner`]) passes the time in and
//! carries the effects out, so every case is unit-tested without a process.
//!
//! ```text
//!            start                ports free            spawned           ready probe ok
//!  stopped ────────► waiting ───────────────► launching ───────► starting ─────────────► ready
//!     ▲                 ▲  ▲ ports taken          │ spawn failed    │ not ready in time  │ ▲ liveness
//!     │                 │  └──── blocked ◄────────┘                 │                    ▼ │ fails / ok
//!     │                 │ timer                                     │ exit         unhealthy
//!     │            backoff ◄──── exit (policy: restart) ◄───────────┴──────────────────┘
//!     │                                                       stop │
//!     └──────────────── stopping (signal, timer, SIGKILL) ◄────────┘
//! ```
//! One timer slot serves every phase: the next probe while running, the kill deadline while
//! stopping, the end of a backoff, the next port check while blocked. A command never cuts a
//! backoff short unless it asks for a start now (`restart`, or a new spec).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::backoff;
use super::events::EventKind;
use super::probe::Expect;
use super::status::{InstanceStatus, PortSummary, State};
use crate::topology::{Instance, RestartPolicy};

/// How often readiness is polled while a gateway starts: soon after the spawn (the built-in
/// gateway is ready in milliseconds), then backing off to every 100 ms (the real one takes ~10 s).
pub const STARTUP_POLL_FIRST: Duration = Duration::from_millis(10);
pub const STARTUP_POLL_MAX: Duration = Duration::from_millis(100);
/// How often a blocked instance checks its ports again.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(2);
/// Consecutive liveness failures that make reef restart a gateway.
pub const LIVENESS_FAILURES: u32 = 3;
/// After a second Ctrl-C, how long a stopping gateway has before SIGKILL.
pub const HURRY_GRACE: Duration = Duration::from_secs(1);
/// Exit code meaning "configuration problem" for OpenClaw and the built-in gateway.
pub const EXIT_CONFIG: i32 = 78;

/// How a process ended, as the runner observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// "exit code 1", "signal 9 (SIGKILL)", or why it is unknown (an adopted process).
    pub description: String,
}

/// Everything that can happen to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start,
    Stop,
    Restart,
    /// A reload gave a new spec: `restart` when what runs changed, else only live fields.
    Respec {
        instance: Box<Instance>,
        restart: bool,
    },
    /// Stop the gateway and end the task.
    Shutdown,
    /// A second Ctrl-C: a stop in progress gets SIGKILL soon.
    Hurry,
    /// While waiting: the dependencies still pending (none: all are ready).
    Dependencies(Vec<String>),
    PortsChecked(Result<(), String>),
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        message: String,
        /// Retrying cannot help (no such program).
        lasting: bool,
    },
    ProbeDone(Result<(), String>),
    /// The running gateway's own state changed (`None`: no longer degraded).
    Degraded(Option<super::degraded::Degraded>),
    Exited(Exit),
    /// The timer set by the last [`Effect::Timer`] fired.
    Timer,
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    CheckPorts,
    /// Record the intent in the ledger, then start the gateway; answer with `Spawned` or
    /// `SpawnFailed`.
    Spawn,
    Probe {
        path: String,
        expect: Expect,
        timeout: Duration,
    },
    /// SIGCONT (a stopped process must be able to act on it), then `signal`, to the group.
    Signal(Signal),
    /// SIGKILL to the group.
    Kill,
    /// After the process exited: end what is left of its group and its escaped descendants.
    Reap,
    /// Arm the one timer (`None` disarms it).
    Timer(Option<Instant>),
    Publish(EventKind),
    /// Answer the command being handled now.
    Reply(Result<String, String>),
    /// Answer the command being handled once the current stop is over.
    ReplyWhenStopped,
    /// Answer every deferred command.
    Settle(Result<String, String>),
    /// The task ends (after a shutdown).
    Finish,
}

/// What to do once a stop is over.
#[derive(Debug, Clone, PartialEq)]
enum AfterStop {
    /// Stay down, in this state, with this message.
    Rest(State, Option<String>),
    /// Start again at once.
    Start,
    /// reef ended it for a reason (not ready, failing liveness): the restart policy decides.
    Fail {
        reason: String,
        healthy_for: Option<Duration>,
    },
    /// End the task.
    Finish,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not wanted (stopped, disabled, exited for good, config error): see the status.
    Idle,
    /// Wanted; waiting for dependencies to be ready.
    Waiting,
    /// Ports being checked, then the spawn.
    Launching,
    Blocked,
    Running(Run),
    Stopping {
        kill_at: Instant,
        killed: bool,
        then: AfterStop,
    },
    Backoff,
}

#[derive(Debug, Clone, PartialEq)]
struct Run {
    since: Instant,
    ready_at: Option<Instant>,
    liveness_failures: u32,
    probing: bool,
    startup_poll: Duration,
}

/// One instance's state and the rules that move it.
pub struct Machine {
    instance: Instance,
    phase: Phase,
    /// Failures since the last healthy period: the backoff exponent.
    failures: u32,
    started_once: bool,
    /// A second Ctrl-C came: every stop gets [`HURRY_GRACE`] at most.
    hurried: bool,
    status: InstanceStatus,
    /// A number in `[0, 1)` for the backoff jitter (fixed in tests).
    jitter: Box<dyn FnMut() -> f64 + Send>,
}

impl Machine {
    /// A machine for `instance`, stopped. Feed it [`Input::Start`] (the runner does for an
    /// enabled instance) or [`Machine::adopt`] a running process.
    pub fn new(instance: Instance, log: std::path::PathBuf, unix_now: f64) -> Machine {
        let status = InstanceStatus {
            name: instance.name.clone(),
            profile: instance.profile.clone(),
            state: State::Stopped,
            pid: None,
            healthy: None,
            ready: false,
            adopted: false,
            restarts: 0,
            started_at: None,
            since: unix_now,
            ports: ports_of(&instance),
            last_exit: None,
            message: (!instance.enabled).then(|| "disabled in the topology".to_owned()),
            degraded: None,
            cpu_percent: None,
            cpu_seconds: None,
            rss_bytes: None,
            probe_seconds: None,
            log,
        };
        Machine {
            instance,
            phase: Phase::Idle,
            failures: 0,
            started_once: false,
            hurried: false,
            status,
            jitter: Box::new(backoff::jitter_unit),
        }
    }

    /// Uses `jitter` instead of randomness for backoff delays.
    pub fn with_jitter(mut self, jitter: impl FnMut() -> f64 + Send + 'static) -> Machine {
        self.jitter = Box::new(jitter);
        self
    }

    pub fn status(&self) -> &InstanceStatus {
        &self.status
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The restart count a spawn now would give (what the ledger records with it).
    pub fn restarts_after_spawn(&self) -> u32 {
        self.status.restarts + u32::from(self.started_once)
    }

    /// Whether the instance waits for its dependencies (the runner then reports them).
    pub fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// Whether the instance is down and will stay down until a command or a new spec.
    pub fn is_at_rest(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Whether a process runs (the runner then watches it for an exit).
    pub fn has_process(&self) -> bool {
        matches!(self.phase, Phase::Running(_) | Phase::Stopping { .. })
    }

    /// Takes over a running process a previous reef started. `restarts` and `last_exit` come
    /// from the ledger, so they survive the handover.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        pid: u32,
        started_at: f64,
        restarts: u32,
        last_exit: Option<String>,
        now: Instant,
        unix_now: f64,
    ) -> Vec<Effect> {
        self.started_once = true;
        self.status.restarts = restarts;
        self.status.last_exit = last_exit;
        self.phase = Phase::Running(Run {
            since: now,
            ready_at: None,
            liveness_failures: 0,
            probing: false,
            startup_poll: STARTUP_POLL_FIRST,
        });
        self.show(State::Starting, unix_now, |status| {
            status.pid = Some(pid);
            status.started_at = Some(started_at);
            status.adopted = true;
            status.message = Some("adopted from a previous reef".into());
        });
        vec![
            Effect::Publish(EventKind::Adopted { pid }),
            Effect::Timer(Some(now + STARTUP_POLL_FIRST)),
        ]
    }

    /// Moves the machine by one input; `now` is the monotonic clock, `unix_now` the wall clock
    /// (for the status).
    pub fn step(&mut self, input: Input, now: Instant, unix_now: f64) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.on_start(&mut out, unix_now),
            Input::Stop => self.on_stop(&mut out, now, unix_now),
            Input::Restart => self.on_restart(&mut out, now, unix_now),
            Input::Respec { instance, restart } => {
                self.on_respec(*instance, restart, &mut out, now, unix_now)
            }
            Input::Shutdown => self.on_shutdown(&mut out, now, unix_now),
            Input::Hurry => {
                // Stops from now on get the short grace too (dependencies stop after their
                // dependents, so most have not begun yet).
                self.hurried = true;
                if let Phase::Stopping {
                    kill_at, killed, ..
                } = &mut self.phase
                    && !*killed
                {
                    *kill_at = (*kill_at).min(now + HURRY_GRACE);
                    out.push(Effect::Timer(Some(*kill_at)));
                }
            }
            Input::Dependencies(pending) => {
                if self.phase != Phase::Waiting {
                } else if pending.is_empty() {
                    self.phase = Phase::Launching;
                    out.push(Effect::CheckPorts);
                } else {
                    let message = format!("waiting for {} to be ready", pending.join(", "));
                    if self.status.message.as_deref() != Some(&message) {
                        self.show(State::Waiting, unix_now, |s| s.message = Some(message));
                    }
                }
            }
            Input::PortsChecked(result) => {
                if self.phase != Phase::Launching {
                } else if let Err(holder) = result {
                    let newly = self.status.state != State::Blocked;
                    self.phase = Phase::Blocked;
                    let message = format!("{holder}; retrying");
                    self.show(State::Blocked, unix_now, |s| s.message = Some(message));
                    if newly {
                        out.push(Effect::Publish(EventKind::Blocked { holder }));
                    }
                    out.push(Effect::Timer(Some(now + BLOCKED_RETRY)));
                } else {
                    out.push(Effect::Spawn);
                }
            }
            Input::Spawned { pid } => {
                if self.phase == Phase::Launching {
                    self.on_spawned(pid, &mut out, now, unix_now);
                }
            }
            Input::SpawnFailed { message, lasting } => {
                if self.phase != Phase::Launching {
                } else if lasting {
                    out.push(Effect::Publish(exited_without_process(&message)));
                    self.rest(State::Exited, Some(message), unix_now);
                } else {
                    // Out of processes, files or memory: worth another try, after a backoff.
                    self.after_failure(message, None, &mut out, now, unix_now);
                }
            }
            Input::ProbeDone(result) => self.on_probe(result, &mut out, now, unix_now),
            Input::Degraded(degraded) => self.on_degraded(degraded, &mut out),
            Input::Exited(exit) => self.on_exit(exit, &mut out, now, unix_now),
            Input::Timer => self.on_timer(&mut out, now, unix_now),
        }
        out
    }

    fn on_start(&mut self, out: &mut Vec<Effect>, unix_now: f64) {
        let answer = match &self.phase {
            Phase::Idle => {
                self.failures = 0;
                self.wait(out, unix_now);
                "starting".to_owned()
            }
            Phase::Waiting | Phase::Launching | Phase::Blocked => "already starting".into(),
            Phase::Backoff => format!(
                "already restarting ({}); `reef restart {}` starts it now",
                self.status.message.as_deref().unwrap_or("after a backoff"),
                self.instance.name
            ),
            Phase::Running(_) => "already running".into(),
            Phase::Stopping { then, .. } => {
                if *then == AfterStop::Finish {
                    out.push(Effect::Reply(Err("reef is shutting down".into())));
                    return;
                }
                self.set_after_stop(AfterStop::Start);
                "starting once the current stop is over".into()
            }
        };
        out.push(Effect::Reply(Ok(answer)));
    }

    fn on_stop(&mut self, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        let rest = AfterStop::Rest(State::Stopped, Some("stopped by request".into()));
        match &self.phase {
            Phase::Idle => {
                if self.status.state != State::Stopped {
                    self.rest(State::Stopped, Some("stopped by request".into()), unix_now);
                }
                out.push(Effect::Reply(Ok("stopped".into())));
            }
            Phase::Waiting | Phase::Launching | Phase::Blocked | Phase::Backoff => {
                out.push(Effect::Timer(None));
                self.rest(State::Stopped, Some("stopped by request".into()), unix_now);
                out.push(Effect::Publish(EventKind::Stopped {
                    reason: Some("stopped by request".into()),
                }));
                out.push(Effect::Reply(Ok("stopped".into())));
            }
            Phase::Running(_) => {
                self.begin_stop(rest, out, now, unix_now);
                out.push(Effect::ReplyWhenStopped);
            }
            Phase::Stopping { then, .. } => {
                if *then != AfterStop::Finish {
                    self.set_after_stop(rest);
                }
                out.push(Effect::ReplyWhenStopped);
            }
        }
    }

    fn on_restart(&mut self, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        self.failures = 0;
        match &self.phase {
            Phase::Idle | Phase::Waiting | Phase::Blocked | Phase::Backoff => {
                out.push(Effect::Timer(None));
                self.wait(out, unix_now);
                out.push(Effect::Reply(Ok("starting".into())));
            }
            Phase::Launching => out.push(Effect::Reply(Ok("already starting".into()))),
            Phase::Running(_) => {
                self.begin_stop(AfterStop::Start, out, now, unix_now);
                out.push(Effect::ReplyWhenStopped);
            }
            Phase::Stopping { then, .. } => {
                if *then == AfterStop::Finish {
                    out.push(Effect::Reply(Err("reef is shutting down".into())));
                } else {
                    self.set_after_stop(AfterStop::Start);
                    out.push(Effect::ReplyWhenStopped);
                }
            }
        }
    }

    fn on_respec(
        &mut self,
        instance: Instance,
        restart: bool,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        let was_enabled = self.instance.enabled;
        self.status.profile = instance.profile.clone();
        self.status.ports = ports_of(&instance);
        self.instance = instance;
        let enabled = self.instance.enabled;
        let disabled = || AfterStop::Rest(State::Stopped, Some("disabled in the topology".into()));
        if restart {
            // A new spec is a fresh start: a config error or a blocked port may be gone.
            self.failures = 0;
            let then = if enabled {
                AfterStop::Start
            } else {
                disabled()
            };
            match &self.phase {
                Phase::Running(_) => self.begin_stop(then, out, now, unix_now),
                Phase::Stopping { then: current, .. } => {
                    if *current != AfterStop::Finish {
                        self.set_after_stop(then);
                    }
                }
                _ if enabled => {
                    out.push(Effect::Timer(None));
                    self.wait(out, unix_now);
                }
                _ => {
                    out.push(Effect::Timer(None));
                    self.rest(
                        State::Stopped,
                        Some("disabled in the topology".into()),
                        unix_now,
                    );
                }
            }
        } else if was_enabled && !enabled {
            match &self.phase {
                Phase::Running(_) => self.begin_stop(disabled(), out, now, unix_now),
                Phase::Stopping { then, .. } => {
                    if *then != AfterStop::Finish {
                        self.set_after_stop(disabled());
                    }
                }
                _ => {
                    out.push(Effect::Timer(None));
                    self.rest(
                        State::Stopped,
                        Some("disabled in the topology".into()),
                        unix_now,
                    );
                }
            }
        } else if !was_enabled && enabled && self.phase == Phase::Idle {
            self.failures = 0;
            self.wait(out, unix_now);
        }
        // Live fields (policy, probes, stop settings) apply from the next use: a backoff keeps
        // its timer, a running gateway its process.
    }

    fn on_shutdown(&mut self, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        match &self.phase {
            Phase::Running(_) => self.begin_stop(AfterStop::Finish, out, now, unix_now),
            Phase::Stopping { .. } => self.set_after_stop(AfterStop::Finish),
            _ => {
                out.push(Effect::Timer(None));
                if self.status.state != State::Stopped {
                    self.rest(State::Stopped, None, unix_now);
                }
                out.push(Effect::Finish);
            }
        }
    }

    fn on_spawned(&mut self, pid: u32, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        let restarted = self.started_once;
        self.started_once = true;
        self.phase = Phase::Running(Run {
            since: now,
            ready_at: None,
            liveness_failures: 0,
            probing: false,
            startup_poll: STARTUP_POLL_FIRST,
        });
        self.show(State::Starting, unix_now, |status| {
            if restarted {
                status.restarts += 1;
            }
            status.pid = Some(pid);
            status.started_at = Some(unix_now);
            status.adopted = false;
            status.message = None;
            status.degraded = None;
        });
        out.push(Effect::Publish(EventKind::Spawned { pid }));
        out.push(Effect::Timer(Some(now + STARTUP_POLL_FIRST)));
    }

    /// The gateway's own state: a note on the running instance and an event, never a restart
    /// (restarting a gateway whose breaker tripped would only count one more unclean boot).
    fn on_degraded(&mut self, degraded: Option<super::degraded::Degraded>, out: &mut Vec<Effect>) {
        if !matches!(self.phase, Phase::Running(_)) || self.status.degraded == degraded {
            return;
        }
        let previous = self.status.degraded.take();
        let previous_note = previous.as_ref().map(super::degraded::Degraded::note);
        if self.status.message.is_none() || self.status.message == previous_note {
            self.status.message = degraded.as_ref().map(super::degraded::Degraded::note);
        }
        self.status.degraded = degraded.clone();
        match (degraded, previous) {
            (Some(now), _) => out.push(Effect::Publish(EventKind::Degraded {
                reason: now.reason,
                message: now.message,
                advice: now.advice,
                bundle: now.bundle,
            })),
            (None, Some(before)) => out.push(Effect::Publish(EventKind::Recovered {
                reason: before.reason,
            })),
            (None, None) => {}
        }
    }

    fn on_timer(&mut self, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        match &mut self.phase {
            Phase::Running(run) if !run.probing => {
                run.probing = true;
                let health = &self.instance.health;
                let (path, expect) = if run.ready_at.is_none() {
                    (health.readiness_path.clone(), Expect::Ready)
                } else {
                    (health.liveness_path.clone(), Expect::Live)
                };
                out.push(Effect::Probe {
                    path,
                    expect,
                    timeout: seconds(health.timeout),
                });
            }
            Phase::Stopping { killed, .. } if !*killed => {
                *killed = true;
                out.push(Effect::Kill);
            }
            Phase::Blocked | Phase::Backoff => self.wait(out, unix_now),
            _ => {}
        }
        let _ = now;
    }

    fn on_probe(
        &mut self,
        result: Result<(), String>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        let Phase::Running(run) = &mut self.phase else {
            return; // a probe that finished after the process was stopped
        };
        run.probing = false;
        let interval = seconds(self.instance.health.interval);
        match (run.ready_at, result) {
            (None, Ok(())) => {
                run.ready_at = Some(now);
                let after = now.duration_since(run.since).as_secs_f64();
                out.push(Effect::Timer(Some(now + interval)));
                self.show(State::Ready, unix_now, |status| {
                    status.ready = true;
                    status.healthy = Some(true);
                    status.message = None;
                });
                out.push(Effect::Publish(EventKind::Ready {
                    pid: self.status.pid.unwrap_or_default(),
                    after,
                }));
            }
            (None, Err(error)) => {
                let start_period = seconds(self.instance.health.start_period);
                if now.duration_since(run.since) > start_period {
                    let reason = format!(
                        "not ready within its start period of {:.0} s ({error})",
                        start_period.as_secs_f64()
                    );
                    self.begin_stop(
                        AfterStop::Fail {
                            reason,
                            healthy_for: None,
                        },
                        out,
                        now,
                        unix_now,
                    );
                } else {
                    run.startup_poll = (run.startup_poll * 2).min(STARTUP_POLL_MAX);
                    out.push(Effect::Timer(Some(now + run.startup_poll)));
                }
            }
            (Some(_), Ok(())) => {
                run.liveness_failures = 0;
                out.push(Effect::Timer(Some(now + interval)));
                if self.status.state == State::Unhealthy {
                    self.show(State::Ready, unix_now, |status| {
                        status.ready = true;
                        status.healthy = Some(true);
                        status.message = None;
                    });
                    out.push(Effect::Publish(EventKind::Healthy));
                }
            }
            (Some(ready_at), Err(error)) => {
                run.liveness_failures += 1;
                let failures = run.liveness_failures;
                let newly = self.status.state != State::Unhealthy;
                let message = error.clone();
                self.show(State::Unhealthy, unix_now, |status| {
                    status.ready = false;
                    status.healthy = Some(false);
                    status.message = Some(message);
                });
                if newly {
                    out.push(Effect::Publish(EventKind::Unhealthy {
                        reason: error.clone(),
                    }));
                }
                if failures >= LIVENESS_FAILURES {
                    let reason =
                        format!("failed {LIVENESS_FAILURES} liveness probes in a row ({error})");
                    self.begin_stop(
                        AfterStop::Fail {
                            reason,
                            healthy_for: Some(now.duration_since(ready_at)),
                        },
                        out,
                        now,
                        unix_now,
                    );
                } else {
                    out.push(Effect::Timer(Some(now + interval)));
                }
            }
        }
    }

    fn on_exit(&mut self, exit: Exit, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        let pid = self.status.pid;
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Running(run) => {
                out.push(Effect::Timer(None));
                out.push(Effect::Reap);
                let healthy_for = run.ready_at.map(|at| now.duration_since(at));
                self.after_exit(pid, exit, healthy_for, out, now, unix_now);
            }
            Phase::Stopping { then, .. } => {
                out.push(Effect::Timer(None));
                out.push(Effect::Reap);
                self.status.last_exit = Some(exit.description.clone());
                match then {
                    AfterStop::Rest(state, message) => {
                        let reason = message.clone();
                        self.rest(state, message, unix_now);
                        out.push(Effect::Publish(EventKind::Stopped { reason }));
                        out.push(Effect::Settle(Ok(format!(
                            "stopped ({})",
                            exit.description
                        ))));
                    }
                    AfterStop::Start => {
                        out.push(Effect::Publish(EventKind::Stopped {
                            reason: Some("restarting".into()),
                        }));
                        self.wait(out, unix_now);
                        out.push(Effect::Settle(Ok("restarting".into())));
                    }
                    AfterStop::Fail {
                        reason,
                        healthy_for,
                    } => {
                        out.push(Effect::Settle(Ok(format!(
                            "stopped ({})",
                            exit.description
                        ))));
                        self.after_failure_of(pid, exit, reason, healthy_for, out, now, unix_now);
                    }
                    AfterStop::Finish => {
                        self.rest(State::Stopped, None, unix_now);
                        out.push(Effect::Publish(EventKind::Stopped { reason: None }));
                        out.push(Effect::Settle(Ok(format!(
                            "stopped ({})",
                            exit.description
                        ))));
                        out.push(Effect::Finish);
                    }
                }
            }
            other => self.phase = other, // an exit we already handled
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn after_exit(
        &mut self,
        pid: Option<u32>,
        exit: Exit,
        healthy_for: Option<Duration>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        self.status.last_exit = Some(exit.description.clone());
        out.push(Effect::Publish(EventKind::Exited {
            pid,
            code: exit.code,
            signal: exit.signal,
            description: exit.description.clone(),
            reason: None,
        }));
        if exit.code == Some(EXIT_CONFIG) {
            let name = &self.instance.name;
            let message = format!(
                "exited {EXIT_CONFIG}: configuration error; see `reef logs {name}`, fix it, then `reef restart {name}`"
            );
            out.push(Effect::Publish(EventKind::ConfigError {
                message: message.clone(),
            }));
            self.rest(State::ConfigError, Some(message), unix_now);
            return;
        }
        let restart = match self.instance.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit.code != Some(0),
            RestartPolicy::Never => false,
        };
        if !restart {
            let message = format!("{}; not restarted (restart policy)", exit.description);
            self.rest(State::Exited, Some(message), unix_now);
            return;
        }
        let why = format!("gateway ended: {}", exit.description);
        self.back_off(why, healthy_for, out, now, unix_now);
    }

    #[allow(clippy::too_many_arguments)]
    fn after_failure_of(
        &mut self,
        pid: Option<u32>,
        exit: Exit,
        reason: String,
        healthy_for: Option<Duration>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        out.push(Effect::Publish(EventKind::Exited {
            pid,
            code: exit.code,
            signal: exit.signal,
            description: exit.description,
            reason: Some(reason.clone()),
        }));
        self.restart_or_rest(reason, healthy_for, out, now, unix_now);
    }

    fn after_failure(
        &mut self,
        reason: String,
        healthy_for: Option<Duration>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        out.push(Effect::Publish(exited_without_process(&reason)));
        self.restart_or_rest(reason, healthy_for, out, now, unix_now);
    }

    fn restart_or_rest(
        &mut self,
        reason: String,
        healthy_for: Option<Duration>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        if self.instance.restart.policy == RestartPolicy::Never {
            let message = format!("{reason}; not restarted (restart policy)");
            self.rest(State::Exited, Some(message), unix_now);
        } else {
            self.back_off(reason, healthy_for, out, now, unix_now);
        }
    }

    fn back_off(
        &mut self,
        why: String,
        healthy_for: Option<Duration>,
        out: &mut Vec<Effect>,
        now: Instant,
        unix_now: f64,
    ) {
        let policy = &self.instance.restart.backoff;
        if healthy_for.is_some_and(|healthy| healthy.as_secs_f64() >= policy.reset_after) {
            self.failures = 0;
        }
        let delay = backoff::delay(policy, self.failures, (self.jitter)());
        self.failures = self.failures.saturating_add(1);
        if delay.is_zero() {
            self.wait(out, unix_now);
            return;
        }
        self.phase = Phase::Backoff;
        let message = format!("{why}; restarting in {:.1} s", delay.as_secs_f64());
        self.show(State::Backoff, unix_now, |status| {
            status.message = Some(message);
        });
        out.push(Effect::Publish(EventKind::Backoff {
            delay: delay.as_secs_f64(),
            reason: why,
        }));
        out.push(Effect::Timer(Some(now + delay)));
    }

    fn begin_stop(&mut self, then: AfterStop, out: &mut Vec<Effect>, now: Instant, unix_now: f64) {
        let mut kill_at = now + seconds(self.instance.stop.timeout);
        if self.hurried {
            kill_at = kill_at.min(now + HURRY_GRACE);
        }
        self.phase = Phase::Stopping {
            kill_at,
            killed: false,
            then,
        };
        self.show(State::Stopping, unix_now, |status| {
            status.ready = false;
        });
        out.push(Effect::Signal(parse_signal(&self.instance.stop.signal)));
        out.push(Effect::Timer(Some(kill_at)));
    }

    fn set_after_stop(&mut self, next: AfterStop) {
        if let Phase::Stopping { then, .. } = &mut self.phase {
            *then = next;
        }
    }

    /// Wanted: wait for dependencies (the runner reports them at once).
    fn wait(&mut self, _out: &mut [Effect], unix_now: f64) {
        self.phase = Phase::Waiting;
        self.show(State::Waiting, unix_now, |status| status.message = None);
    }

    /// Not wanted: no process, no timer.
    fn rest(&mut self, state: State, message: Option<String>, unix_now: f64) {
        self.phase = Phase::Idle;
        self.show(state, unix_now, |status| status.message = message);
    }

    fn show(&mut self, state: State, unix_now: f64, edit: impl FnOnce(&mut InstanceStatus)) {
        let status = &mut self.status;
        if status.state != state {
            status.since = unix_now;
        }
        status.state = state;
        if !state.is_running() {
            status.adopted = false;
            status.pid = None;
            status.ready = false;
            status.healthy = None;
            status.started_at = None;
            status.degraded = None;
        }
        edit(status);
        // A running gateway's own degraded state is its note unless something says more.
        if status.message.is_none()
            && let Some(degraded) = &status.degraded
        {
            status.message = Some(degraded.note());
        }
    }
}

fn exited_without_process(reason: &str) -> EventKind {
    EventKind::Exited {
        pid: None,
        code: None,
        signal: None,
        description: "not started".into(),
        reason: Some(reason.to_owned()),
    }
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX / 4)
}

/// Parses a signal name as written in a topology (`SIGTERM`).
pub fn parse_signal(name: &str) -> Signal {
    name.parse().unwrap_or(Signal::SIGTERM)
}

pub fn ports_of(instance: &Instance) -> PortSummary {
    let footprint = instance
        .footprint()
        .expect("validated plans have fitting footprints");
    PortSummary {
        gateway: footprint.gateway,
        browser_control: footprint.browser_control,
        cdp_first: footprint.cdp.first,
        cdp_last: footprint.cdp.last,
    }
}
