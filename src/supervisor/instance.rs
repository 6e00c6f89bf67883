//! One task per instance: spawn, probe, restart, stop.
//!
//! The task owns its child process and is driven by messages ([`Command`]) from a cheap,
//! cloneable [`InstanceHandle`]; it publishes its [`InstanceStatus`] on a watch channel and bumps
//! a topology-wide counter on every change, which dependents and the progress display await.
//!
//! The loop: wait until wanted, wait for dependencies to be ready, check that the ports are free
//! (else `blocked`, retried), spawn into a new session (so its own process group) with output
//! straight to the log file, probe readiness then liveness (checking the JSON body), and on exit
//! apply the restart policy with backoff. Exit 78 is a configuration error: no restart until a
//! manual restart. A stop is the configured signal to the whole group, then SIGKILL after the
//! stop timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};

use super::automation::{self, Event, ToLua};
use super::backoff;
use super::launch::{self, describe_exit, group_alive, signal_group};
use super::ledger::{Entry, Ledger};
use super::probe::{self, Expect};
use super::status::{InstanceStatus, PortSummary, State, unix_now};
use crate::hostports;
use crate::process::{self, ExitWatch};
use crate::topology::{Instance, RestartPolicy};

/// How often readiness is polled while a gateway starts: soon after the spawn (the built-in
/// gateway is ready in milliseconds), then backing off to every 100 ms (the real one takes ~10 s).
const STARTUP_POLL_FIRST: Duration = Duration::from_millis(10);
const STARTUP_POLL_MAX: Duration = Duration::from_millis(100);
/// How often a blocked instance checks its ports again.
const BLOCKED_RETRY: Duration = Duration::from_secs(2);
/// Consecutive liveness failures that make reef restart a gateway.
const LIVENESS_FAILURES: u32 = 3;
/// Exit code meaning "configuration problem" for OpenClaw and the built-in gateway.
pub const EXIT_CONFIG: i32 = 78;

type Reply = oneshot::Sender<Result<String, String>>;

/// What a handle can ask of an instance task.
#[derive(Debug)]
pub enum Command {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    /// Stop the gateway and end the task.
    Shutdown(oneshot::Sender<()>),
    /// A reload changed the spec: restart with the new one.
    Replace(Box<Respec>),
    /// A reload changed only live fields: apply them without a restart.
    Update(Box<Respec>),
}

/// A new spec for an instance, with the status channels of its (new) dependencies.
#[derive(Debug)]
pub struct Respec {
    pub instance: Instance,
    pub dependencies: Vec<watch::Receiver<InstanceStatus>>,
    pub done: oneshot::Sender<()>,
}

/// A cheap handle to one instance task.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    pub name: String,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<InstanceStatus>,
}

impl InstanceHandle {
    pub fn status(&self) -> InstanceStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.status.clone()
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> Command) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| format!("instance `{}` is shutting down", self.name))?;
        answer
            .await
            .unwrap_or_else(|_| Err(format!("instance `{}` is shutting down", self.name)))
    }

    pub async fn start(&self) -> Result<String, String> {
        self.ask(Command::Start).await
    }

    pub async fn stop(&self) -> Result<String, String> {
        self.ask(Command::Stop).await
    }

    pub async fn restart(&self) -> Result<String, String> {
        self.ask(Command::Restart).await
    }

    /// Gives the instance a new spec. With `restart`, a running gateway is restarted on it;
    /// without, only live fields changed. Returns once the instance took it.
    pub async fn respec(
        &self,
        instance: Instance,
        dependencies: Vec<watch::Receiver<InstanceStatus>>,
        restart: bool,
    ) {
        let (done, taken) = oneshot::channel();
        let respec = Box::new(Respec {
            instance,
            dependencies,
            done,
        });
        let command = if restart {
            Command::Replace(respec)
        } else {
            Command::Update(respec)
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

/// What every instance task shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// The binary that runs `reef gateway` for the builtin runtime.
    pub reef_binary: PathBuf,
    /// reef's own environment, filtered per launch.
    pub inherited_env: Arc<BTreeMap<String, String>>,
    /// Bumped on every status change of any instance.
    pub changed: Arc<watch::Sender<u64>>,
    /// Every gateway process this reef runs, mirrored to disk.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Events for the script's hooks (the Lua thread).
    pub hooks: std::sync::mpsc::Sender<ToLua>,
}

/// A gateway a previous reef started and this one takes over.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub pid: u32,
    pub start_ticks: u64,
    /// When the previous reef spawned it, as its ledger says.
    pub started_at: f64,
}

/// A running gateway: our child, or an adopted process we can only watch.
enum Process {
    Child(Child),
    Adopted { pid: u32, watch: ExitWatch },
}

impl Process {
    fn pid(&self) -> Option<u32> {
        match self {
            Process::Child(child) => child.id(),
            Process::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// Waits for the exit. An adopted process's status cannot be known (it is not our child).
    async fn wait(&mut self) -> Option<ExitStatus> {
        match self {
            Process::Child(child) => child.wait().await.ok(),
            Process::Adopted { watch, .. } => {
                watch.exited().await;
                None
            }
        }
    }
}

/// Signal, grace period, SIGKILL; then whatever is left of the group. Returns the exit status
/// when it can be known.
async fn stop_group(
    process: &mut Process,
    signal: Signal,
    timeout: Duration,
    name: &str,
) -> Option<ExitStatus> {
    let pid = process.pid()?;
    signal_group(pid, signal);
    let status = match tokio::time::timeout(timeout, process.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                instance = name,
                pid,
                "did not stop within {:.1} s of {signal}; sending SIGKILL",
                timeout.as_secs_f64()
            );
            signal_group(pid, Signal::SIGKILL);
            process.wait().await
        }
    };
    reap_group(pid, timeout.min(Duration::from_secs(5))).await;
    status
}

/// Ends what is left of a process group after its leader exited (workers, helpers), so
/// nothing keeps the instance's ports.
async fn reap_group(pid: u32, grace: Duration) {
    if !group_alive(pid) {
        return;
    }
    signal_group(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while group_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if group_alive(pid) {
        signal_group(pid, Signal::SIGKILL);
    }
}

/// Stops a gateway left by a previous reef that this one will not adopt. Only call this for a
/// ledger entry that is proven alive.
pub async fn stop_leftover(entry: &Entry, signal: Signal, timeout: Duration) -> Result<(), String> {
    let watch = ExitWatch::open(entry.pid)
        .map_err(|err| format!("cannot watch pid {}: {err}", entry.pid))?;
    if !entry.is_alive() {
        return Ok(());
    }
    let mut process = Process::Adopted {
        pid: entry.pid,
        watch,
    };
    stop_group(&mut process, signal, timeout, &entry.name).await;
    Ok(())
}

/// Starts the task for `instance`; it starts the gateway at once if the instance is enabled,
/// after `dependencies` are ready.
pub fn spawn(
    instance: Instance,
    log: PathBuf,
    context: Context,
    dependencies: Vec<watch::Receiver<InstanceStatus>>,
    adoption: Option<Adoption>,
) -> InstanceHandle {
    let footprint = instance
        .footprint()
        .expect("validated plans have fitting footprints");
    let initial = InstanceStatus {
        name: instance.name.clone(),
        profile: instance.profile.clone(),
        state: if instance.enabled {
            State::Waiting
        } else {
            State::Stopped
        },
        pid: None,
        healthy: None,
        ready: false,
        adopted: false,
        restarts: 0,
        started_at: None,
        since: unix_now(),
        ports: PortSummary {
            gateway: footprint.gateway,
            browser_control: footprint.browser_control,
            cdp_first: footprint.cdp.first,
            cdp_last: footprint.cdp.last,
        },
        last_exit: None,
        message: (!instance.enabled).then(|| "disabled in the topology".to_owned()),
        log: log.clone(),
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let runner = Runner {
        want_running: instance.enabled,
        instance,
        log,
        context,
        status: status_tx,
        commands: commands_rx,
        dependencies,
        failures: 0,
        started_once: false,
        adoption,
        spawned_at: 0.0,
    };
    let name = runner.instance.name.clone();
    tokio::spawn(runner.run());
    InstanceHandle {
        name,
        commands: commands_tx,
        status: status_rx,
    }
}

struct Runner {
    instance: Instance,
    log: PathBuf,
    context: Context,
    status: watch::Sender<InstanceStatus>,
    commands: mpsc::Receiver<Command>,
    dependencies: Vec<watch::Receiver<InstanceStatus>>,
    want_running: bool,
    /// Failures since the last healthy period: the backoff exponent.
    failures: u32,
    started_once: bool,
    /// A running gateway to take over instead of starting one.
    adoption: Option<Adoption>,
    /// When the last process was spawned (seconds since the Unix epoch).
    spawned_at: f64,
}

/// Why a gateway could not be spawned; `lasting` when retrying cannot help (no such program).
struct SpawnError {
    message: String,
    lasting: bool,
}

impl From<String> for SpawnError {
    fn from(message: String) -> SpawnError {
        SpawnError {
            message,
            lasting: false,
        }
    }
}

/// Whether the task goes on.
enum Flow {
    Continue,
    Exit,
}

/// How a supervised process ended.
enum Outcome {
    /// Shut down: end the task.
    Exit,
    /// Stopped on request.
    Stopped,
    /// Restart at once (a manual restart).
    RestartNow,
    /// The process exited on its own.
    Exited {
        status: Option<ExitStatus>,
        healthy_for: Option<Duration>,
    },
    /// reef killed it: not ready in time, or failing liveness.
    Killed {
        reason: String,
        healthy_for: Option<Duration>,
    },
}

impl Runner {
    async fn run(mut self) {
        if let Some(adoption) = self.adoption.take() {
            match self.adopt(&adoption) {
                Ok(process) => {
                    if let Flow::Exit = self.supervise_and_follow_up(process, true).await {
                        return;
                    }
                }
                Err(message) => {
                    tracing::warn!(instance = %self.instance.name, "not adopted: {message}");
                }
            }
        }
        loop {
            if !self.want_running {
                let Some(command) = self.commands.recv().await else {
                    return;
                };
                if let Flow::Exit = self.idle_command(command) {
                    return;
                }
                continue;
            }
            if let Flow::Exit = self.wait_for_dependencies().await {
                return;
            }
            if !self.want_running {
                continue;
            }
            let footprint = self.instance.footprint().expect("validated");
            if let Some(holder) =
                hostports::first_taken(&[footprint.gateway, footprint.browser_control])
            {
                let newly = self.status.borrow().state != State::Blocked;
                self.set_state(State::Blocked, Some(format!("{holder}; retrying")));
                if newly {
                    self.emit_now("blocked", Some(holder.to_string()));
                }
                tracing::warn!(instance = %self.instance.name, "blocked: {holder}");
                if let Some(command) = self.pause(BLOCKED_RETRY).await
                    && let Flow::Exit = self.idle_command(command)
                {
                    return;
                }
                continue;
            }
            let process = match self.spawn_child() {
                Ok(child) => Process::Child(child),
                Err(SpawnError {
                    message,
                    lasting: true,
                }) => {
                    tracing::error!(instance = %self.instance.name, "{message}");
                    self.want_running = false;
                    self.set_state(State::Exited, Some(message));
                    continue;
                }
                // Out of processes, files or memory: worth another try, after a backoff.
                Err(SpawnError {
                    message,
                    lasting: false,
                }) => {
                    if let Flow::Exit = self.after_failure(message, None).await {
                        return;
                    }
                    continue;
                }
            };
            let flow = self.supervise_and_follow_up(process, false).await;
            if let Flow::Exit = flow {
                return;
            }
        }
    }

    /// Supervises one process to its end, then applies the restart policy.
    async fn supervise_and_follow_up(&mut self, process: Process, adopted: bool) -> Flow {
        match self.supervise(process, adopted).await {
            Outcome::Exit => Flow::Exit,
            Outcome::Stopped | Outcome::RestartNow => Flow::Continue,
            Outcome::Exited {
                status,
                healthy_for,
            } => self.after_exit(status, healthy_for).await,
            Outcome::Killed {
                reason,
                healthy_for,
            } => self.after_failure(reason, healthy_for).await,
        }
    }

    /// Takes over a gateway a previous reef started, if it is still that process.
    fn adopt(&mut self, adoption: &Adoption) -> Result<Process, String> {
        let watch = ExitWatch::open(adoption.pid)
            .map_err(|err| format!("cannot watch pid {}: {err}", adoption.pid))?;
        if !process::is_same_process(adoption.pid, adoption.start_ticks) {
            return Err(format!("pid {} is no longer the gateway", adoption.pid));
        }
        self.spawned_at = if adoption.started_at > 0.0 {
            adoption.started_at
        } else {
            process::start_time_unix(adoption.start_ticks).unwrap_or_else(unix_now)
        };
        self.record_in_ledger(adoption.pid, adoption.start_ticks);
        self.started_once = true;
        tracing::info!(instance = %self.name(), pid = adoption.pid, "adopted");
        Ok(Process::Adopted {
            pid: adoption.pid,
            watch,
        })
    }

    fn record_in_ledger(&self, pid: u32, start_ticks: u64) {
        let entry = Entry {
            name: self.instance.name.clone(),
            pid,
            start_ticks,
            started_at: self.spawned_at,
            spec_hash: self.instance.spec_hash(),
            ports: self.status.borrow().ports,
            log: self.log.clone(),
        };
        let result = self
            .context
            .ledger
            .lock()
            .expect("ledger lock")
            .record(entry);
        if let Err(err) = result {
            tracing::error!(instance = %self.name(), "{err}; a crash of reef now would orphan this gateway");
        }
    }

    fn forget_in_ledger(&self, pid: u32) {
        let result = self
            .context
            .ledger
            .lock()
            .expect("ledger lock")
            .forget(&self.instance.name, pid);
        if let Err(err) = result {
            tracing::error!(instance = %self.name(), "{err}");
        }
    }

    /// Tells the script's hooks what happened to this instance.
    fn emit(&self, event: Event) {
        automation::send(&self.context.hooks, event.message());
    }

    fn emit_now(&self, kind: &'static str, reason: Option<String>) {
        let event = Event::of(kind, &self.status.borrow(), reason);
        self.emit(event);
    }

    fn name(&self) -> &str {
        &self.instance.name
    }

    fn update(&self, edit: impl FnOnce(&mut InstanceStatus)) {
        self.status.send_modify(edit);
        self.context
            .changed
            .send_modify(|generation| *generation += 1);
    }

    fn set_state(&self, state: State, message: Option<String>) {
        self.update(|status| {
            if status.state != state {
                status.since = unix_now();
            }
            status.state = state;
            status.message = message;
            if !state.is_running() {
                status.adopted = false;
                status.pid = None;
                status.ready = false;
                status.healthy = None;
                status.started_at = None;
            }
        });
    }

    /// Handles a command while no process runs.
    fn idle_command(&mut self, command: Command) -> Flow {
        match command {
            Command::Start(reply) => {
                let answer = if self.want_running {
                    "already starting".to_owned()
                } else {
                    "starting".to_owned()
                };
                self.want_running = true;
                let _ = reply.send(Ok(answer));
            }
            Command::Restart(reply) => {
                self.want_running = true;
                self.failures = 0;
                let _ = reply.send(Ok("starting".to_owned()));
            }
            Command::Stop(reply) => {
                self.want_running = false;
                self.set_state(State::Stopped, Some("stopped by request".into()));
                let _ = reply.send(Ok("stopped".to_owned()));
            }
            Command::Shutdown(done) => {
                self.want_running = false;
                self.set_state(State::Stopped, None);
                let _ = done.send(());
                return Flow::Exit;
            }
            Command::Replace(respec) => {
                let Respec {
                    instance,
                    dependencies,
                    done,
                } = *respec;
                // A new spec is a fresh start: a config error or a blocked port may be gone.
                self.failures = 0;
                self.take_spec(instance, dependencies);
                self.want_running = self.instance.enabled;
                if !self.want_running {
                    self.set_state(State::Stopped, Some("disabled in the topology".into()));
                }
                let _ = done.send(());
            }
            Command::Update(respec) => {
                let Respec {
                    instance,
                    dependencies,
                    done,
                } = *respec;
                let was_enabled = self.instance.enabled;
                self.take_spec(instance, dependencies);
                if was_enabled != self.instance.enabled {
                    self.want_running = self.instance.enabled;
                    if !self.want_running {
                        self.set_state(State::Stopped, Some("disabled in the topology".into()));
                    }
                }
                let _ = done.send(());
            }
        }
        Flow::Continue
    }

    /// Adopts a new spec: the task's instance, dependencies and the ports it shows.
    fn take_spec(
        &mut self,
        instance: Instance,
        dependencies: Vec<watch::Receiver<InstanceStatus>>,
    ) {
        let footprint = instance
            .footprint()
            .expect("validated plans have fitting footprints");
        self.update(|status| {
            status.profile = instance.profile.clone();
            status.ports = PortSummary {
                gateway: footprint.gateway,
                browser_control: footprint.browser_control,
                cdp_first: footprint.cdp.first,
                cdp_last: footprint.cdp.last,
            };
        });
        self.instance = instance;
        self.dependencies = dependencies;
    }

    /// Sleeps for `duration` unless a command arrives first.
    async fn pause(&mut self, duration: Duration) -> Option<Command> {
        tokio::select! {
            _ = tokio::time::sleep(duration) => None,
            command = self.commands.recv() => Some(command.unwrap_or_else(|| {
                let (done, _) = oneshot::channel();
                Command::Shutdown(done)
            })),
        }
    }

    async fn wait_for_dependencies(&mut self) -> Flow {
        let mut changed = self.context.changed.subscribe();
        loop {
            let waiting: Vec<String> = self
                .dependencies
                .iter()
                .map(|dependency| dependency.borrow().clone())
                .filter(|status| status.state != State::Ready)
                .map(|status| status.name)
                .collect();
            if waiting.is_empty() {
                return Flow::Continue;
            }
            let message = format!("waiting for {} to be ready", waiting.join(", "));
            if self.status.borrow().message.as_deref() != Some(message.as_str()) {
                self.set_state(State::Waiting, Some(message));
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return Flow::Exit },
                command = self.commands.recv() => {
                    let Some(command) = command else { return Flow::Exit };
                    if let Flow::Exit = self.idle_command(command) {
                        return Flow::Exit;
                    }
                    if !self.want_running {
                        return Flow::Continue;
                    }
                }
            }
        }
    }

    fn spawn_child(&mut self) -> Result<Child, SpawnError> {
        let instance = &self.instance;
        if !instance.state_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&instance.state_dir)
                .map_err(|err| {
                    format!(
                        "cannot create state dir {}: {err}",
                        instance.state_dir.display()
                    )
                })?;
        }
        let config = std::fs::read_to_string(&instance.config_path)
            .ok()
            .and_then(|text| json5::from_str::<serde_json::Value>(&text).ok());
        let launch = launch::launch(
            instance,
            &self.context.reef_binary,
            &self.context.inherited_env,
            config.as_ref(),
        );
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(|err| format!("cannot open log {}: {err}", self.log.display()))?;
        {
            use std::io::Write;
            let _ = writeln!(
                log,
                "--- reef: starting {} at {} ---",
                shlex::try_join(launch.argv.iter().map(String::as_str)).unwrap_or_default(),
                unix_now()
            );
        }
        let stderr = log
            .try_clone()
            .map_err(|err| format!("cannot share log {}: {err}", self.log.display()))?;
        let mut command = tokio::process::Command::new(&launch.argv[0]);
        command
            .args(&launch.argv[1..])
            .env_clear()
            .envs(&launch.env)
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        self.spawned_at = unix_now();
        let child = command.spawn().map_err(|err| {
            let lasting = matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            );
            let hint = if err.kind() == std::io::ErrorKind::NotFound {
                "; install it or set `command` in the topology"
            } else {
                ""
            };
            SpawnError {
                message: format!("cannot start `{}`: {err}{hint}", launch.argv[0]),
                lasting,
            }
        })?;
        if self.started_once {
            self.update(|status| status.restarts += 1);
        }
        self.started_once = true;
        if let Some(pid) = child.id() {
            self.record_in_ledger(pid, process::start_time(pid).unwrap_or_default());
        }
        Ok(child)
    }

    async fn supervise(&mut self, mut child: Process, adopted: bool) -> Outcome {
        let pid = child.pid().unwrap_or_default();
        let spawned = Instant::now();
        // Timed just before the spawn (for an adopted gateway: by the reef that spawned it).
        let started_at = Some(self.spawned_at);
        self.update(|status| {
            status.state = State::Starting;
            status.since = unix_now();
            status.pid = Some(pid);
            status.started_at = started_at;
            status.adopted = adopted;
            status.ready = false;
            status.healthy = None;
            status.message = adopted.then(|| "adopted from a previous reef".to_owned());
        });
        if !adopted {
            tracing::info!(instance = %self.name(), pid, "started");
        }

        let port = self.instance.footprint().expect("validated").gateway;
        let prober = Arc::new(tokio::sync::Mutex::new(probe::Prober::new(port)));
        let start_period = Duration::from_secs_f64(self.instance.health.start_period);
        let mut ready_at: Option<Instant> = None;
        let mut liveness_failures = 0;
        let mut startup_poll = STARTUP_POLL_FIRST;
        let mut next_probe = tokio::time::Instant::now() + startup_poll;
        type Probe = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
        let mut probing: Option<Probe> = None;

        loop {
            // Probe settings are live: a reload may change them while the gateway runs.
            let health = self.instance.health.clone();
            let interval = Duration::from_secs_f64(health.interval);
            let timeout = Duration::from_secs_f64(health.timeout);
            tokio::select! {
                status = child.wait() => {
                    reap_group(pid, Duration::from_secs_f64(self.instance.stop.timeout.min(5.0))).await;
                    self.forget_in_ledger(pid);
                    return Outcome::Exited {
                        status,
                        healthy_for: ready_at.map(|at| at.elapsed()),
                    };
                }
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown(_)) => {
                        self.stop_child(&mut child).await;
                        self.set_state(State::Stopped, None);
                        if let Some(Command::Shutdown(done)) = command {
                            let _ = done.send(());
                        }
                        return Outcome::Exit;
                    }
                    Some(Command::Stop(reply)) => {
                        let ended = self.stop_child(&mut child).await;
                        self.want_running = false;
                        self.set_state(State::Stopped, Some("stopped by request".into()));
                        let _ = reply.send(Ok(format!("stopped ({ended})")));
                        return Outcome::Stopped;
                    }
                    Some(Command::Restart(reply)) => {
                        self.stop_child(&mut child).await;
                        self.want_running = true;
                        self.failures = 0;
                        let _ = reply.send(Ok("restarting".into()));
                        return Outcome::RestartNow;
                    }
                    Some(Command::Start(reply)) => {
                        let _ = reply.send(Ok("already running".into()));
                    }
                    Some(Command::Replace(respec)) => {
                        let Respec { instance, dependencies, done } = *respec;
                        self.stop_child(&mut child).await;
                        self.failures = 0;
                        self.take_spec(instance, dependencies);
                        self.want_running = self.instance.enabled;
                        let _ = done.send(());
                        if !self.want_running {
                            self.set_state(State::Stopped, Some("disabled in the topology".into()));
                            return Outcome::Stopped;
                        }
                        tracing::info!(instance = %self.name(), "restarting with its new spec");
                        return Outcome::RestartNow;
                    }
                    Some(Command::Update(respec)) => {
                        let Respec { instance, dependencies, done } = *respec;
                        self.take_spec(instance, dependencies);
                        if !self.instance.enabled {
                            self.stop_child(&mut child).await;
                            self.want_running = false;
                            self.set_state(State::Stopped, Some("disabled in the topology".into()));
                            let _ = done.send(());
                            return Outcome::Stopped;
                        }
                        let _ = done.send(());
                    }
                },
                _ = tokio::time::sleep_until(next_probe), if probing.is_none() => {
                    let (path, expect) = if ready_at.is_none() {
                        (health.readiness_path.clone(), Expect::Ready)
                    } else {
                        (health.liveness_path.clone(), Expect::Live)
                    };
                    let prober = prober.clone();
                    probing = Some(Box::pin(async move {
                        prober.lock().await.probe(&path, expect, timeout).await
                    }));
                }
                result = async { probing.as_mut().expect("guarded").await }, if probing.is_some() => {
                    probing = None;
                    let now = tokio::time::Instant::now();
                    match (ready_at, result) {
                        (None, Ok(())) => {
                            ready_at = Some(Instant::now());
                            next_probe = now + interval;
                            self.update(|status| {
                                status.state = State::Ready;
                                status.since = unix_now();
                                status.ready = true;
                                status.healthy = Some(true);
                                status.message = None;
                            });
                            tracing::info!(
                                instance = %self.name(),
                                pid,
                                "ready after {:.2} s",
                                spawned.elapsed().as_secs_f64()
                            );
                            self.emit_now("ready", None);
                        }
                        (None, Err(error)) => {
                            if spawned.elapsed() > start_period {
                                self.stop_child(&mut child).await;
                                return Outcome::Killed {
                                    reason: format!(
                                        "not ready within its start period of {:.0} s ({error})",
                                        start_period.as_secs_f64()
                                    ),
                                    healthy_for: None,
                                };
                            }
                            startup_poll = (startup_poll * 2).min(STARTUP_POLL_MAX);
                            next_probe = now + startup_poll;
                        }
                        (Some(_), Ok(())) => {
                            liveness_failures = 0;
                            next_probe = now + interval;
                            let recovered = self.status.borrow().state == State::Unhealthy;
                            if recovered {
                                tracing::info!(instance = %self.name(), "healthy again");
                            }
                            self.update(|status| {
                                if status.state == State::Unhealthy {
                                    status.state = State::Ready;
                                    status.ready = true;
                                    status.since = unix_now();
                                }
                                status.healthy = Some(true);
                                status.message = None;
                            });
                            if recovered {
                                self.emit_now("healthy", None);
                            }
                        }
                        (Some(at), Err(error)) => {
                            liveness_failures += 1;
                            next_probe = now + interval;
                            let newly = self.status.borrow().state != State::Unhealthy;
                            tracing::warn!(instance = %self.name(), "liveness probe failed: {error}");
                            self.update(|status| {
                                if status.state != State::Unhealthy {
                                    status.since = unix_now();
                                }
                                status.state = State::Unhealthy;
                                status.ready = false;
                                status.healthy = Some(false);
                                status.message = Some(error.clone());
                            });
                            if newly {
                                self.emit_now("unhealthy", Some(error.clone()));
                            }
                            if liveness_failures >= LIVENESS_FAILURES {
                                self.stop_child(&mut child).await;
                                return Outcome::Killed {
                                    reason: format!("failed {LIVENESS_FAILURES} liveness probes in a row ({error})"),
                                    healthy_for: Some(at.elapsed()),
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Stops the process (signal, grace, SIGKILL, the rest of the group). Returns how it ended.
    async fn stop_child(&mut self, child: &mut Process) -> String {
        let Some(pid) = child.pid() else {
            return "already exited".into();
        };
        self.update(|status| {
            status.state = State::Stopping;
            status.ready = false;
            status.since = unix_now();
        });
        let signal = launch::parse_signal(&self.instance.stop.signal);
        let timeout = Duration::from_secs_f64(self.instance.stop.timeout);
        let status = stop_group(child, signal, timeout, &self.instance.name).await;
        self.forget_in_ledger(pid);
        let ended = status.map(describe_exit).unwrap_or_else(|| "ended".into());
        tracing::info!(instance = %self.name(), pid, "stopped: {ended}");
        self.update(|s| s.last_exit = Some(ended.clone()));
        ended
    }

    async fn after_exit(
        &mut self,
        status: Option<ExitStatus>,
        healthy_for: Option<Duration>,
    ) -> Flow {
        let ended = status
            .map(describe_exit)
            .unwrap_or_else(|| "exit status unknown, adopted from a previous reef".into());
        self.update(|s| s.last_exit = Some(ended.clone()));
        let code = status.and_then(|s| s.code());
        {
            use std::os::unix::process::ExitStatusExt;
            let mut event = Event::of("exit", &self.status.borrow(), Some(ended.clone()));
            event.code = code;
            event.signal = status.and_then(|s| s.signal());
            self.emit(event);
        }
        if code == Some(EXIT_CONFIG) {
            self.want_running = false;
            let message = format!(
                "exited {EXIT_CONFIG}: configuration error; see `reef logs {}`, fix it, then `reef restart {}`",
                self.name(),
                self.name()
            );
            tracing::error!(instance = %self.name(), "{message}");
            self.set_state(State::ConfigError, Some(message));
            return Flow::Continue;
        }
        let restart = match self.instance.restart.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != Some(0),
            RestartPolicy::Never => false,
        };
        if !restart {
            self.want_running = false;
            tracing::info!(instance = %self.name(), "exited ({ended}); restart policy says no restart");
            self.set_state(
                State::Exited,
                Some(format!("{ended}; not restarted (restart policy)")),
            );
            return Flow::Continue;
        }
        self.backoff(format!("gateway ended: {ended}"), healthy_for)
            .await
    }

    async fn after_failure(&mut self, reason: String, healthy_for: Option<Duration>) -> Flow {
        tracing::warn!(instance = %self.name(), "{reason}");
        self.emit_now("exit", Some(reason.clone()));
        if self.instance.restart.policy == RestartPolicy::Never {
            self.want_running = false;
            self.set_state(
                State::Exited,
                Some(format!("{reason}; not restarted (restart policy)")),
            );
            return Flow::Continue;
        }
        self.backoff(reason, healthy_for).await
    }

    async fn backoff(&mut self, why: String, healthy_for: Option<Duration>) -> Flow {
        let backoff = self.instance.restart.backoff.clone();
        if healthy_for.is_some_and(|healthy| healthy.as_secs_f64() >= backoff.reset_after) {
            self.failures = 0;
        }
        let delay = backoff::delay(&backoff, self.failures, backoff::jitter_unit());
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(
            instance = %self.name(),
            "{why}; restarting in {:.2} s",
            delay.as_secs_f64()
        );
        self.set_state(
            State::Backoff,
            Some(format!("{why}; restarting in {:.1} s", delay.as_secs_f64())),
        );
        match self.pause(delay).await {
            Some(command) => self.idle_command(command),
            None => Flow::Continue,
        }
    }
}
