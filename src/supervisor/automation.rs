//! The keeper of the hook host: the child process that runs the script's hooks and timers
//! ([`crate::hookhost`]), fed with events and obeyed for actions.
//!
//! Everything reaches the keeper by message ([`ToHooks`]): hook events from the colony, the
//! sources of the next good script after each reload (the old hooks stay until then), shutdown.
//! The host says when Lua runs (busy) and when it is done (idle); a host busy past a hook's
//! budget plus a second, or one that exits, is killed and started again from the last good
//! script (its timers start over), and the restart is logged and shown in `reef status`. A host
//! that keeps failing is restarted after a growing pause (1 s doubling to 30 s). Supervision
//! never waits for the host: events are queued for it (at most [`QUEUE`], then dropped with a
//! warning), and its actions are carried out like `reef start/stop/restart`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::colony::Colony;
use super::status::{InstanceStatus, unix_now};
use crate::evaluator::Sources;
use crate::hookhost::{FromHost, ToHost};
use crate::lua::Limits;
use crate::lua::automation::HOOK_LIMITS;

/// Events waiting for the host, at most.
pub const QUEUE: usize = 1024;
/// How long past a hook's time budget a busy host is given before it is killed.
pub const GRACE: Duration = Duration::from_secs(1);

/// Messages to the keeper.
pub enum ToHooks {
    Event(Box<Event>),
    /// A reload succeeded: run this script's hooks from now on (`None`: it declares none).
    Replace(Option<Script>),
    Shutdown,
}

/// A good script with hooks or timers, as the host runs it.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    pub sources: Sources,
    pub hooks: usize,
    pub timers: usize,
}

/// The hook host, as `reef status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct HookHostStatus {
    /// The host's pid while it runs.
    pub pid: Option<u32>,
    pub hooks: usize,
    pub timers: usize,
    /// Times the host was killed or died and was started again.
    pub restarts: u32,
    /// Why it was last restarted, and when (Unix seconds).
    pub last_restart: Option<String>,
    pub last_restart_at: Option<f64>,
}

/// What a hook receives, as a Lua table.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub name: Option<String>,
    pub profile: Option<String>,
    pub pid: Option<u32>,
    pub ports: Option<super::status::PortSummary>,
    pub state: Option<String>,
    pub restarts: Option<u32>,
    pub started_at: Option<f64>,
    pub time: f64,
    /// For `exit`: the exit code, or the signal that ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Why, in words (an exit's description, a probe failure, a blocked port's holder).
    pub reason: Option<String>,
    /// For `reload`: what it changed.
    pub diff: Option<super::DiffNames>,
}

impl Event {
    /// An instance event, described by its current status.
    pub fn of(event: &'static str, status: &InstanceStatus, reason: Option<String>) -> Event {
        Event {
            event,
            name: Some(status.name.clone()),
            profile: Some(status.profile.clone()),
            pid: status.pid,
            ports: Some(status.ports),
            state: Some(status.state.to_string()),
            restarts: Some(status.restarts),
            started_at: status.started_at,
            time: unix_now(),
            code: None,
            signal: None,
            reason,
            diff: None,
        }
    }

    /// A reload that failed: the running topology is unchanged; `reason` says why.
    pub fn reload_failed(message: String) -> Event {
        Event {
            event: "reload-failed",
            reason: Some(message),
            diff: None,
            ..Event::reload(super::DiffNames::default())
        }
    }

    pub fn reload(diff: super::DiffNames) -> Event {
        Event {
            event: "reload",
            name: None,
            profile: None,
            pid: None,
            ports: None,
            state: None,
            restarts: None,
            started_at: None,
            time: unix_now(),
            code: None,
            signal: None,
            reason: None,
            diff: Some(diff),
        }
    }

    /// The hook event for a supervisor event, if hooks can subscribe to it.
    pub fn from_supervisor(event: &super::events::Event) -> Option<Event> {
        use super::events::EventKind;
        let name = event.kind.hook_name()?;
        if let EventKind::ReloadApplied { diff } = &event.kind {
            return Some(Event::reload(diff.clone()));
        }
        if let EventKind::ReloadFailed { message } = &event.kind {
            let mut failed = Event::reload_failed(message.clone());
            failed.time = event.time;
            return Some(failed);
        }
        let status = event.status.as_ref()?;
        let mut pid = status.pid;
        let (reason, code, signal) = match &event.kind {
            EventKind::Unhealthy { reason } => (Some(reason.clone()), None, None),
            EventKind::Blocked { holder } => (Some(holder.clone()), None, None),
            EventKind::Degraded {
                reason,
                message,
                advice,
                ..
            } => (Some(format!("{reason}: {message}; {advice}")), None, None),
            EventKind::Recovered { reason } => (Some(format!("{reason} is over")), None, None),
            EventKind::Backoff { delay, reason } => (
                Some(format!("{reason}; restarting in {delay:.2} s")),
                None,
                None,
            ),
            EventKind::Stopped { reason } => (reason.clone(), None, None),
            EventKind::ConfigError { message } => (Some(message.clone()), None, None),
            EventKind::Exited {
                pid: ended,
                code,
                signal,
                description,
                reason,
            } => {
                pid = *ended;
                (
                    Some(reason.clone().unwrap_or_else(|| description.clone())),
                    *code,
                    *signal,
                )
            }
            _ => (None, None, None),
        };
        let mut hook_event = Event::of(name, status, reason);
        hook_event.time = event.time;
        hook_event.pid = pid;
        hook_event.code = code;
        hook_event.signal = signal;
        Some(hook_event)
    }

    pub fn message(self) -> ToHooks {
        ToHooks::Event(Box::new(self))
    }
}

/// Starts the keeper; it runs `script`'s hooks (if any) until [`ToHooks::Shutdown`].
pub fn start(
    script: Option<Script>,
    inbox: mpsc::UnboundedReceiver<ToHooks>,
    colony: Colony,
    status: watch::Sender<HookHostStatus>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(Keeper::new(script, colony, status).run(inbox))
}

/// Sends to the keeper; a stopped keeper is not an error worth more than a trace.
pub fn send(outbox: &mpsc::UnboundedSender<ToHooks>, message: ToHooks) {
    if outbox.send(message).is_err() {
        tracing::debug!("the hook keeper is gone; message dropped");
    }
}

/// One running hook host.
struct Running {
    child: tokio::process::Child,
    pid: u32,
    /// Lines for its stdin, written by a task of their own (a stuck host blocks only that).
    outbox: mpsc::Sender<ToHost>,
    replies: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Since when the host has been running Lua (or has had a message to answer), for what.
    busy: Option<(Instant, String)>,
}

impl Running {
    fn spawn(script: &Script) -> std::io::Result<Running> {
        let mut command = std::process::Command::new(crate::evaluator::reef_binary());
        command
            .arg(crate::hookhost::CHILD_VERB)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        crate::host::end_with_parent(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = crate::host::reaper::spawn_tracked(|| command.spawn(), |child| child.id())?;
        let pid = child.id().unwrap_or_default();
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (outbox, mut lines) = mpsc::channel::<ToHost>(QUEUE);
        tokio::spawn(async move {
            while let Some(message) = lines.recv().await {
                let mut line = serde_json::to_vec(&message).expect("messages serialize");
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(relay_log(stderr));
        let limits = Limits::default();
        let start = ToHost::Start {
            script: script.path.clone(),
            sources: script.sources.clone(),
            memory: limits.memory,
            instructions: limits.instructions,
            time_ms: u64::try_from(limits.time.as_millis()).unwrap_or(u64::MAX),
        };
        outbox
            .try_send(start)
            .expect("a new queue has room for the first message");
        Ok(Running {
            child,
            pid,
            outbox,
            replies: BufReader::new(stdout).lines(),
            busy: Some((Instant::now(), "evaluating the script".to_owned())),
        })
    }

    /// Queues a message for the host. From then on it must answer within a hook's budget plus
    /// [`GRACE`] (it says busy when it starts on the message), or it is taken for stuck.
    fn deliver(&mut self, message: ToHost, what: &str) {
        if self.busy.is_none() {
            self.busy = Some((Instant::now(), what.to_owned()));
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbox.try_send(message) {
            tracing::warn!(
                "the hook host is {QUEUE} messages behind; an event for the hooks was dropped"
            );
        }
    }

    /// Kills the host (and so the programs its hooks run: they die with it).
    async fn end(mut self) -> String {
        let _ = self.child.start_kill();
        let status = self.child.wait().await;
        crate::host::reaper::untrack(self.pid);
        match status {
            Ok(status) => super::real::describe_exit(status),
            Err(err) => format!("unknown exit ({err})"),
        }
    }
}

/// The hook host's stderr (what hooks log and print) into reef's log.
async fn relay_log(stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (level, text) = split_level(&line);
        match level {
            "ERROR" => tracing::error!("hooks: {text}"),
            "WARN" => tracing::warn!("hooks: {text}"),
            "DEBUG" | "TRACE" => tracing::debug!("hooks: {text}"),
            _ => tracing::info!("hooks: {text}"),
        }
    }
}

/// A log line of the host ("<time> LEVEL message"): its level and message. Other lines (a
/// hook's `print`) are info.
fn split_level(line: &str) -> (&str, &str) {
    let Some((_time, rest)) = line.trim().split_once(char::is_whitespace) else {
        return ("INFO", line);
    };
    let rest = rest.trim_start();
    match rest.split_once(char::is_whitespace) {
        Some((level, text)) if matches!(level, "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE") => {
            (level, text.trim_start())
        }
        _ => ("INFO", line),
    }
}

struct Keeper {
    script: Option<Script>,
    colony: Colony,
    status: watch::Sender<HookHostStatus>,
    host: Option<Running>,
    /// When to start a host again (after a failure, with a pause).
    start_at: Option<Instant>,
    /// Failures in a row, each within a minute of the last start.
    failures: u32,
    started_at: Instant,
}

impl Keeper {
    fn new(
        script: Option<Script>,
        colony: Colony,
        status: watch::Sender<HookHostStatus>,
    ) -> Keeper {
        let start_at = script.as_ref().map(|_| Instant::now());
        Keeper {
            script,
            colony,
            status,
            host: None,
            start_at,
            failures: 0,
            started_at: Instant::now(),
        }
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ToHooks>) {
        loop {
            self.start_if_due();
            let busy_deadline = self
                .host
                .as_ref()
                .and_then(|host| host.busy.as_ref())
                .map(|(since, _)| *since + HOOK_LIMITS.time + GRACE);
            let start_at = self.start_at.filter(|_| self.host.is_none());
            tokio::select! {
                message = inbox.recv() => match message {
                    Some(ToHooks::Event(event)) => {
                        if let Some(host) = &mut self.host {
                            let what = format!("the {} event", event.event);
                            let event = serde_json::to_value(&event).expect("events serialize");
                            host.deliver(ToHost::Event { event }, &what);
                        }
                    }
                    Some(ToHooks::Replace(next)) => {
                        if let Some(host) = self.host.take() {
                            host.end().await;
                        }
                        self.start_at = next.as_ref().map(|_| Instant::now());
                        self.failures = 0;
                        self.status.send_modify(|status| {
                            status.pid = None;
                            status.hooks = next.as_ref().map_or(0, |s| s.hooks);
                            status.timers = next.as_ref().map_or(0, |s| s.timers);
                        });
                        self.script = next;
                    }
                    Some(ToHooks::Shutdown) | None => {
                        if let Some(host) = self.host.take() {
                            host.end().await;
                        }
                        return;
                    }
                },
                reply = async { self.host.as_mut().expect("guarded").replies.next_line().await }, if self.host.is_some() => {
                    match reply {
                        Ok(Some(line)) => self.on_reply(&line).await,
                        Ok(None) | Err(_) => self.restart("the hook host exited").await,
                    }
                }
                () = sleep_until(busy_deadline), if busy_deadline.is_some() => {
                    let what = self.host.as_ref().and_then(|h| h.busy.as_ref()).map(|(_, what)| what.clone()).unwrap_or_default();
                    let reason = format!(
                        "the hook host was busy with {what} for more than {:.0} s without answering (stuck where the budget cannot stop it, or stopped); it was killed",
                        (HOOK_LIMITS.time + GRACE).as_secs_f64()
                    );
                    self.restart(&reason).await;
                }
                () = sleep_until(start_at), if start_at.is_some() => {}
            }
        }
    }

    fn start_if_due(&mut self) {
        let due = self.start_at.is_some_and(|at| at <= Instant::now());
        let (true, None, Some(script)) = (due, &self.host, &self.script) else {
            return;
        };
        self.start_at = None;
        match Running::spawn(script) {
            Ok(host) => {
                let pid = host.pid;
                self.host = Some(host);
                self.started_at = Instant::now();
                self.status.send_modify(|status| status.pid = Some(pid));
            }
            Err(err) => {
                tracing::error!("cannot start the hook host: {err}; hooks are off");
                self.pause_after_failure();
            }
        }
    }

    fn pause_after_failure(&mut self) {
        if self.started_at.elapsed() > Duration::from_secs(60) {
            self.failures = 0;
        }
        let pause = match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 1).min(5)).min(Duration::from_secs(30)),
        };
        self.failures += 1;
        self.start_at = Some(Instant::now() + pause);
    }

    /// Kills the host and starts it again from the last good script.
    async fn restart(&mut self, reason: &str) {
        let Some(host) = self.host.take() else {
            return;
        };
        let how = host.end().await;
        self.pause_after_failure();
        let pause = self
            .start_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        tracing::error!(
            "{reason} ({how}); restarting it from the last good script{}; its timers start over",
            if pause.is_zero() {
                String::new()
            } else {
                format!(" in {:.0} s", pause.as_secs_f64())
            }
        );
        self.status.send_modify(|status| {
            status.pid = None;
            status.restarts += 1;
            status.last_restart = Some(format!("{reason} ({how})"));
            status.last_restart_at = Some(unix_now());
        });
    }

    async fn on_reply(&mut self, line: &str) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let message = match serde_json::from_str::<FromHost>(line) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!("the hook host said something unreadable ({err}): {line}");
                return;
            }
        };
        match message {
            FromHost::Ready { hooks, timers } => {
                host.busy = None;
                tracing::info!("hooks armed: {hooks} hook(s), {timers} timer(s)");
            }
            FromHost::Failed { error } => {
                tracing::error!(
                    "the hook host cannot run the script: {error}; hooks are off until the next good reload"
                );
                if let Some(host) = self.host.take() {
                    host.end().await;
                }
                self.start_at = None;
            }
            FromHost::Busy { what } => host.busy = Some((Instant::now(), what)),
            FromHost::Idle => host.busy = None,
            FromHost::StatusRequest => {
                let status = serde_json::to_value(self.colony.snapshot().await).unwrap_or_default();
                host.deliver(ToHost::Status { status }, "reef.status()");
            }
            FromHost::Act { verb, name } => self.act(&verb, &name),
        }
    }

    /// A hook's `reef.start/stop/restart`, carried out like the CLI verbs.
    fn act(&self, verb: &str, name: &str) {
        let handle = match self.colony.handle(name) {
            Ok(handle) => handle,
            Err(err) => {
                tracing::warn!("a hook's {verb} failed: {err}");
                return;
            }
        };
        tracing::info!(instance = %name, "a hook asks to {verb} it");
        let verb = verb.to_owned();
        tokio::spawn(async move {
            let outcome = match verb.as_str() {
                "start" => handle.start().await,
                "stop" => handle.stop().await,
                _ => handle.restart().await,
            };
            if let Err(err) = outcome {
                tracing::warn!("a hook's {verb} failed: {err}");
            }
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
