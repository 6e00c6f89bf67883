//! One task per instance: it feeds its [`Machine`] inputs (commands, exits, probe results,
//! timers, dependency changes) and carries out the effects, through a [`Host`].
//!
//! The task owns its process, its probe in flight and its one timer; everything else reaches it
//! by message through a cheap [`InstanceHandle`]. Its status is published on a watch channel,
//! its transitions as typed events on the colony's bus. [`Host`] is the seam for tests: the
//! real one ([`super::host::RealHost`]) spawns, signals and probes real processes; a fake one
//! drives the same task in paused time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{Bus, Event};
use super::machine::{Effect, Exit, Input, Machine};
use super::probe::Expect;
use super::status::{InstanceStatus, State, unix_now};
use crate::topology::Instance;

type Reply = oneshot::Sender<Result<String, String>>;

/// Why a gateway could not be spawned; `lasting` when retrying cannot help (no such program).
#[derive(Debug, Clone)]
pub struct SpawnError {
    pub message: String,
    pub lasting: bool,
}

impl From<String> for SpawnError {
    fn from(message: String) -> SpawnError {
        SpawnError {
            message,
            lasting: false,
        }
    }
}

/// A process the task supervises: one it spawned or one it adopted.
pub trait Process: Send + 'static {
    fn pid(&self) -> u32;
    /// Resolves when the process has exited (cancel-safe).
    fn wait(&mut self) -> impl Future<Output = Exit> + Send;
    /// SIGCONT, then `signal`, to the process group.
    fn signal(&mut self, signal: Signal);
    /// SIGKILL to the process group.
    fn kill(&mut self);
    /// GETs `path` on `port` and checks the JSON body for `expect`'s field. The future owns what
    /// it needs (a probe outlives a borrow of the process).
    fn probe(
        &mut self,
        port: u16,
        path: String,
        expect: Expect,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static;
    /// After the exit: end what is left of the group and of its escaped descendants, and
    /// record the end in the ledger.
    fn reap(self) -> impl Future<Output = ()> + Send;
    /// Whether the gateway's own degraded state changed since the last look (`Some(None)`:
    /// it recovered). Looked at after every probe; cheap and bounded.
    fn degraded(&mut self) -> Option<Option<super::degraded::Degraded>> {
        None
    }
}

/// What an instance task needs from the host.
pub trait Host: Send + Sync + 'static {
    type Process: Process;
    /// The instance is down for good (stopped, disabled, exited by its policy, shut down): it
    /// no longer needs to be found again.
    fn retire(&self, instance: &str);
    /// Whether the ports the instance binds are free (else who holds one).
    fn check_ports(&self, instance: &Instance) -> impl Future<Output = Result<(), String>> + Send;
    /// Records the intent, then starts the gateway.
    fn spawn(
        &self,
        instance: &Instance,
        status: &InstanceStatus,
    ) -> impl Future<Output = Result<Self::Process, SpawnError>> + Send;
}

/// A running gateway this task takes over (live restore), with what the ledger kept of it.
pub struct Adoption<P> {
    pub process: P,
    pub started_at: f64,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// What a handle can ask of an instance task.
#[derive(Debug)]
pub enum Command {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    /// A reload gave a new spec (`restart` when what runs changed) and new dependencies.
    Respec {
        instance: Box<Instance>,
        restart: bool,
        dependencies: Vec<watch::Receiver<InstanceStatus>>,
        done: oneshot::Sender<()>,
    },
    /// Stop the gateway and end the task.
    Shutdown(oneshot::Sender<()>),
}

/// A cheap handle to one instance task.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    pub name: String,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<InstanceStatus>,
    last_probe: Arc<LastProbe>,
}

/// How long the last probe took: kept beside the status, not in it, so that a probe that
/// changes nothing else wakes no one.
#[derive(Debug, Default)]
struct LastProbe {
    /// Microseconds plus one; 0 while no probe of the current process has finished.
    micros: std::sync::atomic::AtomicU64,
}

impl LastProbe {
    fn record(&self, took: Option<Duration>) {
        let value = took.map_or(0, |took| {
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX - 1) + 1
        });
        self.micros
            .store(value, std::sync::atomic::Ordering::Relaxed);
    }

    fn seconds(&self) -> Option<f64> {
        match self.micros.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            plus_one => Some((plus_one - 1) as f64 / 1e6),
        }
    }
}

impl InstanceHandle {
    pub fn status(&self) -> InstanceStatus {
        let mut status = self.status.borrow().clone();
        if status.pid.is_some() {
            status.probe_seconds = self.last_probe.seconds();
        }
        status
    }

    pub fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.status.clone()
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> Command) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let gone = || format!("instance `{}` is shutting down", self.name);
        self.commands.send(make(reply)).await.map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    pub async fn start(&self) -> Result<String, String> {
        self.ask(Command::Start).await
    }

    /// Stops the gateway; answers once it is down.
    pub async fn stop(&self) -> Result<String, String> {
        self.ask(Command::Stop).await
    }

    pub async fn restart(&self) -> Result<String, String> {
        self.ask(Command::Restart).await
    }

    /// Gives the instance a new spec; returns once the task took it.
    pub async fn respec(
        &self,
        instance: Instance,
        dependencies: Vec<watch::Receiver<InstanceStatus>>,
        restart: bool,
    ) {
        let (done, taken) = oneshot::channel();
        let command = Command::Respec {
            instance: Box::new(instance),
            restart,
            dependencies,
            done,
        };
        if self.commands.send(command).await.is_ok() {
            let _ = taken.await;
        }
    }

    /// Stops the gateway and ends the task; returns once both are done.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// What every instance task shares with the colony.
#[derive(Clone)]
pub struct Shared {
    /// Typed events, for hooks, progress and status consumers.
    pub events: Bus,
    /// Bumped on every status change of any instance (dependents and progress wait on it).
    pub changed: Arc<watch::Sender<u64>>,
    /// Cancelled by a second Ctrl-C: stops in progress get SIGKILL soon.
    pub hurry: CancellationToken,
}

/// Starts the task for `machine`'s instance. An enabled instance starts at once (after its
/// `dependencies` are ready), or takes over `adoption`.
pub fn spawn<H: Host>(
    machine: Machine,
    host: Arc<H>,
    shared: Shared,
    dependencies: Vec<watch::Receiver<InstanceStatus>>,
    adoption: Option<Adoption<H::Process>>,
) -> InstanceHandle {
    let (status_tx, status_rx) = watch::channel(machine.status().clone());
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let name = machine.instance().name.clone();
    let last_probe = Arc::new(LastProbe::default());
    let runner = Runner {
        last_probe: last_probe.clone(),
        changes: shared.changed.subscribe(),
        machine,
        host,
        shared,
        commands: commands_rx,
        dependencies,
        status: status_tx,
        process: None,
        exited: false,
        probe: None,
        timer: None,
        hurried: false,
        replying: None,
        deferred: Vec::new(),
        finish: Vec::new(),
        finished: false,
        retired: true,
        pending: None,
    };
    tokio::spawn(runner.run(adoption));
    InstanceHandle {
        name,
        commands: commands_tx,
        status: status_rx,
        last_probe,
    }
}

/// A probe under way: its result, and how long it took.
type ProbeFuture = Pin<Box<dyn Future<Output = (Result<(), String>, Duration)> + Send>>;

struct Runner<H: Host> {
    machine: Machine,
    host: Arc<H>,
    shared: Shared,
    changes: watch::Receiver<u64>,
    commands: mpsc::Receiver<Command>,
    dependencies: Vec<watch::Receiver<InstanceStatus>>,
    status: watch::Sender<InstanceStatus>,
    process: Option<H::Process>,
    /// The process exited; its exit was handed to the machine, the reap is pending.
    exited: bool,
    probe: Option<ProbeFuture>,
    last_probe: Arc<LastProbe>,
    timer: Option<Instant>,
    hurried: bool,
    /// The reply of the command being handled.
    replying: Option<Reply>,
    /// Replies due once the current stop is over.
    deferred: Vec<Reply>,
    finish: Vec<oneshot::Sender<()>>,
    finished: bool,
    /// Whether the host was told the instance is down for good (since its last spawn).
    retired: bool,
    /// An input learnt along with another one, handed to the machine next.
    pending: Option<Input>,
}

impl<H: Host> Runner<H> {
    async fn run(mut self, adoption: Option<Adoption<H::Process>>) {
        let now = Instant::now();
        let effects = match adoption {
            Some(adoption) => {
                self.retired = false;
                let pid = adoption.process.pid();
                self.process = Some(adoption.process);
                self.machine.adopt(
                    pid,
                    adoption.started_at,
                    adoption.restarts,
                    adoption.last_exit,
                    now,
                    unix_now(),
                )
            }
            None if self.machine.instance().enabled => {
                self.machine.step(Input::Start, now, unix_now())
            }
            None => Vec::new(),
        };
        self.carry_out(effects).await;
        while !self.finished {
            let input = match self.pending.take() {
                Some(input) => input,
                None => self.next_input().await,
            };
            let effects = self.machine.step(input, Instant::now(), unix_now());
            self.carry_out(effects).await;
        }
    }

    /// Waits for whatever happens first.
    async fn next_input(&mut self) -> Input {
        let waiting = self.machine.is_waiting() && !self.dependencies.is_empty();
        let timer = self.timer;
        let Runner {
            commands,
            process,
            exited,
            probe,
            changes,
            shared,
            hurried,
            ..
        } = self;
        let watching_exit = process.is_some() && !*exited;
        let received = tokio::select! {
            command = commands.recv() => Received::Command(command),
            exit = async { process.as_mut().expect("guarded").wait().await }, if watching_exit => {
                Received::Input(Input::Exited(exit))
            }
            result = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                Received::Probe(result)
            }
            () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                Received::Timer
            }
            result = changes.changed(), if waiting => Received::Dependencies(result.is_ok()),
            () = shared.hurry.cancelled(), if !*hurried => Received::Hurry,
        };
        match received {
            Received::Command(command) => self.take_command(command),
            Received::Input(input) => {
                if matches!(input, Input::Exited(_)) {
                    self.exited = true;
                }
                input
            }
            Received::Probe((result, took)) => {
                self.probe = None;
                self.last_probe.record(Some(took));
                if let Some(change) = self.process.as_mut().and_then(|process| process.degraded()) {
                    self.pending = Some(Input::Degraded(change));
                }
                Input::ProbeDone(result)
            }
            Received::Timer => {
                self.timer = None;
                Input::Timer
            }
            Received::Dependencies(true) => Input::Dependencies(self.pending_dependencies()),
            // The colony is gone: nothing can become ready any more.
            Received::Dependencies(false) => Input::Shutdown,
            Received::Hurry => {
                self.hurried = true;
                Input::Hurry
            }
        }
    }

    fn take_command(&mut self, command: Option<Command>) -> Input {
        match command {
            Some(Command::Start(reply)) => {
                self.replying = Some(reply);
                Input::Start
            }
            Some(Command::Stop(reply)) => {
                self.replying = Some(reply);
                Input::Stop
            }
            Some(Command::Restart(reply)) => {
                self.replying = Some(reply);
                Input::Restart
            }
            Some(Command::Respec {
                instance,
                restart,
                dependencies,
                done,
            }) => {
                self.dependencies = dependencies;
                let _ = done.send(());
                Input::Respec { instance, restart }
            }
            Some(Command::Shutdown(done)) => {
                self.finish.push(done);
                Input::Shutdown
            }
            None => Input::Shutdown,
        }
    }

    fn pending_dependencies(&self) -> Vec<String> {
        self.dependencies
            .iter()
            .map(|dependency| dependency.borrow())
            .filter(|status| status.state != State::Ready)
            .map(|status| status.name.clone())
            .collect()
    }

    /// Carries out effects in order; effects that answer at once (port check, spawn) feed the
    /// machine again, as do dependency reports while it waits.
    async fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        loop {
            while let Some(effect) = queue.pop_front() {
                if let Some(input) = self.carry_out_one(effect).await {
                    let more = self.machine.step(input, Instant::now(), unix_now());
                    queue.extend(more);
                }
            }
            self.publish_status();
            if !self.machine.is_waiting() || self.finished {
                break;
            }
            let pending = self.pending_dependencies();
            let ready = pending.is_empty();
            queue.extend(self.machine.step(
                Input::Dependencies(pending),
                Instant::now(),
                unix_now(),
            ));
            if !ready {
                self.publish_status();
                break;
            }
        }
        // A command the machine did not answer (none today) must not hang its caller.
        if let Some(reply) = self.replying.take() {
            let _ = reply.send(Ok("ok".into()));
        }
    }

    async fn carry_out_one(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::CheckPorts => {
                let instance = self.machine.instance().clone();
                Some(Input::PortsChecked(self.host.check_ports(&instance).await))
            }
            Effect::Spawn => {
                let instance = self.machine.instance().clone();
                let mut status = self.machine.status().clone();
                status.restarts = self.machine.restarts_after_spawn();
                match self.host.spawn(&instance, &status).await {
                    Ok(process) => {
                        let pid = process.pid();
                        self.process = Some(process);
                        self.exited = false;
                        self.retired = false;
                        Some(Input::Spawned { pid })
                    }
                    Err(SpawnError { message, lasting }) => {
                        Some(Input::SpawnFailed { message, lasting })
                    }
                }
            }
            Effect::Probe {
                path,
                expect,
                timeout,
            } => {
                let port = self.machine.status().ports.gateway;
                if let Some(process) = self.process.as_mut() {
                    let probe = process.probe(port, path, expect, timeout);
                    self.probe = Some(Box::pin(async move {
                        let sent = Instant::now();
                        let result = probe.await;
                        (result, sent.elapsed())
                    }));
                }
                None
            }
            Effect::Signal(signal) => {
                self.probe = None;
                if let Some(process) = self.process.as_mut() {
                    process.signal(signal);
                }
                None
            }
            Effect::Kill => {
                if let Some(process) = self.process.as_mut() {
                    tracing::warn!(
                        instance = %self.machine.instance().name,
                        pid = process.pid(),
                        "did not stop in time; sending SIGKILL"
                    );
                    process.kill();
                }
                None
            }
            Effect::Reap => {
                self.probe = None;
                self.last_probe.record(None);
                if let Some(process) = self.process.take() {
                    process.reap().await;
                }
                self.exited = false;
                None
            }
            Effect::Timer(at) => {
                self.timer = at;
                None
            }
            Effect::Publish(kind) => {
                self.log(&kind);
                let event = Event {
                    time: unix_now(),
                    status: Some(Box::new(self.machine.status().clone())),
                    kind,
                };
                // No subscriber is fine.
                let _ = self.shared.events.send(event);
                None
            }
            Effect::Reply(answer) => {
                if let Some(reply) = self.replying.take() {
                    let _ = reply.send(answer);
                }
                None
            }
            Effect::ReplyWhenStopped => {
                if let Some(reply) = self.replying.take() {
                    self.deferred.push(reply);
                }
                None
            }
            Effect::Settle(answer) => {
                for reply in self.deferred.drain(..) {
                    let _ = reply.send(answer.clone());
                }
                None
            }
            Effect::Finish => {
                self.finished = true;
                self.publish_status();
                for reply in self.deferred.drain(..) {
                    let _ = reply.send(Err("reef is shutting down".into()));
                }
                for done in self.finish.drain(..) {
                    let _ = done.send(());
                }
                None
            }
        }
    }

    fn publish_status(&mut self) {
        if !self.retired && self.machine.is_at_rest() {
            self.retired = true;
            self.host.retire(&self.machine.instance().name);
        }
        let current = self.machine.status();
        if *self.status.borrow() != *current {
            self.status.send_replace(current.clone());
            self.shared
                .changed
                .send_modify(|generation| *generation += 1);
        }
    }

    fn log(&self, kind: &super::events::EventKind) {
        use super::events::EventKind as Kind;
        let name = &self.machine.instance().name;
        match kind {
            Kind::Spawned { pid } => tracing::info!(instance = %name, pid, "started"),
            Kind::Adopted { pid } => tracing::info!(instance = %name, pid, "adopted"),
            Kind::Ready { pid, after } => {
                tracing::info!(instance = %name, pid, "ready after {after:.2} s")
            }
            Kind::Unhealthy { reason } => {
                tracing::warn!(instance = %name, "liveness probe failed: {reason}")
            }
            Kind::Healthy => tracing::info!(instance = %name, "healthy again"),
            Kind::Exited {
                description,
                reason,
                ..
            } => match reason {
                Some(reason) => tracing::warn!(instance = %name, "{reason} ({description})"),
                None => tracing::info!(instance = %name, "exited: {description}"),
            },
            Kind::Blocked { holder } => tracing::warn!(instance = %name, "blocked: {holder}"),
            Kind::Backoff { delay, reason } => {
                tracing::warn!(instance = %name, "{reason}; restarting in {delay:.2} s")
            }
            Kind::Stopped { reason } => tracing::info!(
                instance = %name,
                "stopped{}",
                reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            Kind::ConfigError { message } => tracing::error!(instance = %name, "{message}"),
            Kind::Degraded {
                message,
                advice,
                bundle,
                ..
            } => tracing::warn!(
                instance = %name,
                "degraded: {message}{}; {advice}",
                bundle
                    .as_ref()
                    .map(|b| format!(" (stability bundle {})", b.display()))
                    .unwrap_or_default()
            ),
            Kind::Recovered { reason } => {
                tracing::info!(instance = %name, "no longer degraded ({reason} is over)")
            }
            Kind::ReloadApplied { .. } | Kind::ReloadFailed { .. } => {}
        }
    }
}

enum Received {
    Command(Option<Command>),
    Input(Input),
    Probe((Result<(), String>, Duration)),
    Timer,
    Dependencies(bool),
    Hurry,
}
