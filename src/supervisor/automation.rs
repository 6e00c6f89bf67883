//! The thread that owns the running script's Lua VM and runs its hooks and timers.
//!
//! Everything reaches it by message ([`ToLua`]): instance events from the instance tasks, a
//! new VM after each successful reload (the old hooks stay until then), shutdown. Hooks run
//! here one at a time, so a slow hook or a `reef.exec` delays other hooks, never supervision.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::colony::Colony;
use super::status::{InstanceStatus, unix_now};
use crate::lua::automation::{Action, Attachment, Automaton};

/// Messages to the Lua thread.
pub enum ToLua {
    Event(serde_json::Value),
    /// A reload succeeded: run this script's hooks from now on.
    Replace(Box<Automaton>),
    Shutdown,
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
        let status = event.status.as_ref()?;
        let mut pid = status.pid;
        let (reason, code, signal) = match &event.kind {
            EventKind::Unhealthy { reason } => (Some(reason.clone()), None, None),
            EventKind::Blocked { holder } => (Some(holder.clone()), None, None),
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

    pub fn message(&self) -> ToLua {
        ToLua::Event(serde_json::to_value(self).expect("events serialize"))
    }
}

/// Starts the Lua thread with the script's first VM.
pub fn start(
    automaton: Automaton,
    inbox: Receiver<ToLua>,
    colony: Colony,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reef-lua".into())
        .spawn(move || run(automaton, inbox, colony, runtime))
}

fn attach(automaton: &mut Automaton, colony: &Colony, runtime: &tokio::runtime::Handle) {
    let acting = colony.clone();
    let runtime = runtime.clone();
    let reading = colony.clone();
    automaton.attach(Attachment {
        act: Box::new(move |action| {
            let (name, verb) = match &action {
                Action::Start(name) => (name, "start"),
                Action::Stop(name) => (name, "stop"),
                Action::Restart(name) => (name, "restart"),
            };
            let handle = acting.handle(name)?;
            tracing::info!(instance = %name, "a hook asks to {verb} it");
            runtime.spawn(async move {
                let outcome = match action {
                    Action::Start(_) => handle.start().await,
                    Action::Stop(_) => handle.stop().await,
                    Action::Restart(_) => handle.restart().await,
                };
                if let Err(err) = outcome {
                    tracing::warn!("a hook's {verb} failed: {err}");
                }
            });
            Ok(())
        }),
        status: Box::new(move || serde_json::to_value(reading.snapshot()).unwrap_or_default()),
    });
}

fn run(
    mut automaton: Automaton,
    inbox: Receiver<ToLua>,
    colony: Colony,
    runtime: tokio::runtime::Handle,
) {
    attach(&mut automaton, &colony, &runtime);
    loop {
        let wait = automaton
            .next_due()
            .map(|due| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match inbox.recv_timeout(wait) {
            Ok(ToLua::Event(event)) => automaton.dispatch(&event),
            Ok(ToLua::Replace(next)) => {
                automaton = *next;
                attach(&mut automaton, &colony, &runtime);
                tracing::info!(
                    "hooks replaced: {} hook(s), {} timer(s)",
                    automaton.hook_count(),
                    automaton.timer_count()
                );
            }
            Ok(ToLua::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        automaton.run_due_timers();
    }
}

/// Sends to the Lua thread; a stopped thread is not an error worth more than a trace.
pub fn send(outbox: &Sender<ToLua>, message: ToLua) {
    if outbox.send(message).is_err() {
        tracing::debug!("the Lua thread is gone; event dropped");
    }
}
