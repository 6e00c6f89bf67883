//! The real [`Host`]: gateways as processes on this machine.
//!
//! A spawn records its intent in the ledger (durably) before the fork, then starts the gateway
//! in a session of its own with an environment built from scratch plus the marker variables
//! (topology, instance, spawn nonce) that its descendants inherit, and output straight to its
//! log file. Signals go to the whole process group, SIGCONT first; after an exit, what is left of
//! the group and every escaped descendant carrying the spawn's nonce is ended. Blocking work
//! (port checks, `/proc` walks, file opens) runs on the blocking pool, never on the runtime
//! thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::ledger::{Entry, LedgerHandle};
use super::logs;
use super::machine::{Exit, parse_signal};
use super::probe::{self, Expect};
use super::runner::{Host, Process, SpawnError};
use super::status::{InstanceStatus, unix_now};
use crate::host::{exit_watch::ExitWatch, identity, markers, reaper, signal};
use crate::topology::Instance;

/// The longest reef waits for the rest of a group after its leader exited.
const REAP_GRACE_MAX: Duration = Duration::from_secs(5);

/// Spawns, signals and probes real gateways for one topology.
pub struct RealHost {
    /// The binary that runs `reef gateway` for the builtin runtime.
    pub reef_binary: PathBuf,
    /// reef's own environment, filtered per launch.
    pub inherited_env: Arc<BTreeMap<String, String>>,
    /// The topology id carried in every process's marker.
    pub topology: String,
    pub ledger: LedgerHandle,
    /// Per instance, the nonce reserved for its next spawn: on disk already (or soon: the
    /// receiver answers once it is), so a restart forks without waiting for an fsync.
    pub reservations: std::sync::Mutex<std::collections::HashMap<String, Reservation>>,
}

/// A spawn nonce recorded in the ledger ahead of its spawn.
pub struct Reservation {
    pub spawn: String,
    /// `None` when known to be on disk.
    pub durable: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
}

impl RealHost {
    pub fn new(
        reef_binary: PathBuf,
        inherited_env: BTreeMap<String, String>,
        topology: String,
        ledger: LedgerHandle,
    ) -> RealHost {
        RealHost {
            reef_binary,
            inherited_env: Arc::new(inherited_env),
            topology,
            ledger,
            reservations: std::sync::Mutex::default(),
        }
    }

    fn reserve(&self, name: &str, reservation: Reservation) {
        self.reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), reservation);
    }

    /// Records the intent to spawn `instance` (a nonce already on disk, or a durable write
    /// now) and returns the nonce to spawn with.
    async fn intend(
        &self,
        instance: &Instance,
        status: &InstanceStatus,
    ) -> Result<String, SpawnError> {
        let reserved = self
            .reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&instance.name);
        let reserved = match reserved {
            Some(Reservation {
                spawn,
                durable: None,
            }) => Some(spawn),
            Some(Reservation {
                spawn,
                durable: Some(written),
            }) => matches!(written.await, Ok(Ok(()))).then_some(spawn),
            None => None,
        };
        let next = markers::new_spawn_nonce();
        match reserved {
            Some(spawn) => {
                // This nonce is on disk as the entry's next spawn; the new reservation is
                // written in the background and awaited by the spawn after this one.
                let entry = entry_for(instance, status, spawn.clone(), Some(next.clone()));
                let durable = self.ledger.put_durable(entry);
                self.reserve(
                    &instance.name,
                    Reservation {
                        spawn: next,
                        durable: Some(durable),
                    },
                );
                Ok(spawn)
            }
            None => {
                let spawn = markers::new_spawn_nonce();
                let entry = entry_for(instance, status, spawn.clone(), Some(next.clone()));
                self.ledger.intend(entry).await.map_err(|err| {
                    SpawnError::from(format!(
                        "{err}; not starting a gateway reef could not find again"
                    ))
                })?;
                self.reserve(
                    &instance.name,
                    Reservation {
                        spawn: next,
                        durable: None,
                    },
                );
                Ok(spawn)
            }
        }
    }

    /// Takes over a gateway found alive (pid, start time and marker proven).
    pub fn adopt(
        &self,
        instance: &Instance,
        entry: &Entry,
        pid: u32,
        start_ticks: u64,
    ) -> Result<RealProcess, String> {
        let watch = ExitWatch::open(pid).map_err(|err| format!("cannot watch pid {pid}: {err}"))?;
        // Checked after the pidfd is open: the pid cannot be reused from here on.
        if !markers::is_ours(pid, start_ticks, &self.topology, Some(&entry.spawn)) {
            return Err(format!("pid {pid} is no longer the gateway"));
        }
        let mut kept = entry.clone();
        kept.pid = Some(pid);
        kept.start_ticks = Some(start_ticks);
        if let Some(next) = &entry.next_spawn {
            self.reserve(
                &entry.name,
                Reservation {
                    spawn: next.clone(),
                    durable: None,
                },
            );
        }
        self.ledger.put(kept);
        Ok(RealProcess {
            name: entry.name.clone(),
            pid,
            start_ticks: Some(start_ticks),
            spawn: entry.spawn.clone(),
            topology: self.topology.clone(),
            ledger: self.ledger.clone(),
            reap_grace: reap_grace(entry.stop_timeout),
            probe_host: match super::launch::read_config(instance, &self.inherited_env) {
                Some(Ok(settings)) => settings.probe_host(),
                _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            },
            log_watch: super::degraded::LogWatch::adopted(&entry.log, &instance.profile),
            kind: Kind::Adopted(watch),
        })
    }
}

fn reap_grace(stop_timeout: f64) -> Duration {
    Duration::try_from_secs_f64(stop_timeout)
        .unwrap_or(REAP_GRACE_MAX)
        .min(REAP_GRACE_MAX)
}

/// The ledger entry for a spawn of `instance`.
pub fn entry_for(
    instance: &Instance,
    status: &InstanceStatus,
    spawn: String,
    next_spawn: Option<String>,
) -> Entry {
    Entry {
        name: instance.name.clone(),
        spawn,
        next_spawn,
        pid: None,
        ended: false,
        start_ticks: None,
        started_at: unix_now(),
        spec_hash: instance.spec_hash(),
        depends_on: instance.depends_on.clone(),
        stop_signal: instance.stop.signal.clone(),
        stop_timeout: instance.stop.timeout,
        restarts: status.restarts,
        last_exit: status.last_exit.clone(),
        ports: status.ports,
        log: status.log.clone(),
    }
}

impl Host for RealHost {
    type Process = RealProcess;

    fn retire(&self, instance: &str) {
        self.reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(instance);
        self.ledger.retire(instance);
    }

    async fn check_ports(&self, instance: &Instance) -> Result<(), String> {
        let footprint = instance.footprint().expect("validated");
        let ports = [footprint.gateway, footprint.browser_control];
        let taken = tokio::task::spawn_blocking(move || crate::hostports::first_taken(&ports))
            .await
            .unwrap_or(None);
        match taken {
            Some(holder) => Err(holder.to_string()),
            None => Ok(()),
        }
    }

    async fn spawn(
        &self,
        instance: &Instance,
        status: &InstanceStatus,
    ) -> Result<RealProcess, SpawnError> {
        // Write-ahead: a crash after the fork leaves a ledger that names this spawn's nonce.
        let spawn = self.intend(instance, status).await?;
        let marker = markers::Markers {
            topology: self.topology.clone(),
            instance: instance.name.clone(),
            spawn: spawn.clone(),
        };
        // Preparing and forking block (the fork waits for the child's exec): on the blocking
        // pool, several gateways start at once and the runtime thread never waits.
        let started = {
            let instance = instance.clone();
            let log = status.log.clone();
            let reef_binary = self.reef_binary.clone();
            let inherited = self.inherited_env.clone();
            tokio::task::spawn_blocking(move || {
                let prepared = prepare(&instance, &log, &reef_binary, &inherited)?;
                let probe_host = prepared.probe_host;
                let log_watch =
                    super::degraded::LogWatch::from(&log, &instance.profile, prepared.log_start);
                fork(prepared, &marker).map(|(child, pid, start_ticks)| {
                    (child, pid, start_ticks, (probe_host, log_watch))
                })
            })
            .await
            .map_err(|_| SpawnError::from("starting the gateway panicked".to_owned()))
        };
        let (child, pid, start_ticks, (probe_host, log_watch)) =
            match started.and_then(|started| started) {
                Ok(started) => started,
                Err(err) => {
                    self.ledger.ended(&instance.name, &spawn);
                    return Err(err);
                }
            };
        self.ledger.record(&instance.name, &spawn, pid, start_ticks);
        Ok(RealProcess {
            name: instance.name.clone(),
            pid,
            start_ticks,
            spawn,
            topology: self.topology.clone(),
            ledger: self.ledger.clone(),
            reap_grace: reap_grace(instance.stop.timeout),
            probe_host,
            log_watch,
            kind: Kind::Child(child),
        })
    }
}

/// Starts the prepared gateway in a session of its own, with its markers. Blocking.
fn fork(
    prepared: Prepared,
    marker: &markers::Markers,
) -> Result<(tokio::process::Child, u32, Option<u64>), SpawnError> {
    let Prepared {
        launch,
        probe_host: _,
        log_start: _,
        stdout,
        stderr,
    } = prepared;
    let mut command = tokio::process::Command::new(&launch.argv[0]);
    command
        .args(&launch.argv[1..])
        .env_clear()
        .envs(&launch.env)
        .envs(marker.vars())
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
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
    let child = reaper::spawn_tracked(|| command.spawn(), |child| child.id()).map_err(|err| {
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
    let pid = child.id().unwrap_or_default();
    // Read right away: the child cannot have been reaped yet.
    let start_ticks = identity::start_time(pid);
    Ok((child, pid, start_ticks))
}

struct Prepared {
    launch: super::launch::Launch,
    probe_host: std::net::IpAddr,
    /// The log's length once reef's start marker is in: the gateway's own lines follow.
    log_start: u64,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

/// The instance's config, with its `gateway.port` brought in line with the plan first (for the
/// real and the built-in gateway): the previous process has exited, so the gateway's own
/// config watcher never races the edit. An edit reef cannot make safely refuses the start
/// (lasting): a gateway the CLI cannot find is not started.
fn config_in_line(
    instance: &Instance,
    inherited: &BTreeMap<String, String>,
) -> Result<Option<super::launch::Config>, SpawnError> {
    use crate::topology::Runtime;
    let config = super::launch::read_config(instance, inherited);
    if instance.runtime == Runtime::Command {
        return Ok(config);
    }
    if let Some(owner) = crate::gateway::live_owner(&instance.state_dir) {
        // Another gateway runs on this state dir (its own service, say): editing its config
        // would move it; this start will be refused by the gateway itself (exit 78).
        tracing::warn!(
            instance = %instance.name,
            "pid {owner} holds the state dir {}; reef leaves its config alone",
            instance.state_dir.display()
        );
        return Ok(config);
    }
    let env = super::launch::environment(instance, inherited);
    match crate::gateway_config::keep_port(
        &instance.config_path,
        instance.port,
        config.as_ref(),
        &env,
    ) {
        Ok(None) => Ok(config),
        Ok(Some(edit)) => {
            tracing::info!(
                instance = %instance.name,
                "set gateway.port {} in {} (was {}) so that `openclaw --profile {}` finds the gateway; the old file is kept as {}",
                instance.port,
                edit.file.display(),
                edit.previous.map(|v| v.to_string()).unwrap_or_else(|| "unset".into()),
                instance.profile,
                edit.backup.display()
            );
            Ok(super::launch::read_config(instance, inherited))
        }
        Err(err) => Err(SpawnError {
            message: format!(
                "not started: its config's gateway.port differs from the plan's {} and {err}",
                instance.port
            ),
            lasting: true,
        }),
    }
}

/// The blocking part of a spawn: the state dir, the config, the log.
fn prepare(
    instance: &Instance,
    log: &std::path::Path,
    reef_binary: &std::path::Path,
    inherited: &BTreeMap<String, String>,
) -> Result<Prepared, SpawnError> {
    if !instance.state_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
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
    let config = config_in_line(instance, inherited)?;
    let probe_host = match &config {
        Some(Ok(settings)) => settings.probe_host(),
        _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let launch = super::launch::launch(instance, reef_binary, inherited, config.as_ref());
    for added in super::launch::added_flags(config.as_ref()) {
        if instance.runtime == crate::topology::Runtime::Openclaw {
            tracing::info!(instance = %instance.name, "adding {}: {}", added.flag.join(" "), added.reason);
        }
    }
    if let Some(Err(err)) = &config {
        tracing::warn!(instance = %instance.name, "cannot resolve the config, so reef adds no flag for it: {err}");
    }
    let mut stdout = logs::open_for_gateway(log).map_err(|err| SpawnError {
        message: format!("cannot open log {}: {err}", log.display()),
        lasting: err.kind() != std::io::ErrorKind::NotFound,
    })?;
    {
        use std::io::Write;
        let _ = writeln!(
            stdout,
            "--- reef: starting {} at {} ---",
            shlex::try_join(launch.argv.iter().map(String::as_str)).unwrap_or_default(),
            crate::logview::local_datetime()
        );
    }
    let log_start = stdout.metadata().map(|meta| meta.len()).unwrap_or(0);
    let stderr = stdout
        .try_clone()
        .map_err(|err| format!("cannot share log {}: {err}", log.display()))?;
    Ok(Prepared {
        launch,
        probe_host,
        log_start,
        stdout,
        stderr,
    })
}

/// A gateway process: our child, or an adopted one we can only watch.
pub struct RealProcess {
    name: String,
    pid: u32,
    start_ticks: Option<u64>,
    spawn: String,
    topology: String,
    ledger: LedgerHandle,
    reap_grace: Duration,
    /// Where the probes reach it: loopback, or the one address its config binds.
    probe_host: std::net::IpAddr,
    /// Its log, read for the degraded states it reports itself.
    log_watch: super::degraded::LogWatch,
    kind: Kind,
}

enum Kind {
    Child(tokio::process::Child),
    Adopted(ExitWatch),
}

impl RealProcess {
    /// The spawn nonce in the process's marker.
    pub fn spawn(&self) -> &str {
        &self.spawn
    }

    /// Signals the group, unless the process is provably no longer ours.
    fn signal_group(&self, signal: Signal) {
        let ours = match (&self.kind, self.start_ticks) {
            // Our unreaped child: its pid cannot have been reused.
            (Kind::Child(_), _) => true,
            (Kind::Adopted(_), Some(ticks)) => {
                markers::is_ours(self.pid, ticks, &self.topology, Some(&self.spawn))
            }
            (Kind::Adopted(_), None) => false,
        };
        if ours {
            signal::continue_and_signal_group(self.pid, signal);
        }
    }
}

impl Process for RealProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> Exit {
        match &mut self.kind {
            Kind::Child(child) => {
                let status = child.wait().await;
                reaper::untrack(self.pid);
                match status {
                    Ok(status) => exit_of(status),
                    Err(err) => Exit {
                        code: None,
                        signal: None,
                        description: format!("exit status unknown ({err})"),
                    },
                }
            }
            Kind::Adopted(watch) => {
                watch.exited().await;
                Exit {
                    code: None,
                    signal: None,
                    description: "exit status unknown, adopted from a previous reef".into(),
                }
            }
        }
    }

    fn signal(&mut self, signal: Signal) {
        self.signal_group(signal);
    }

    fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
    }

    // Not an `async fn`: the probe must not borrow the process (it is polled beside it).
    #[allow(clippy::manual_async_fn)]
    fn probe(
        &mut self,
        port: u16,
        path: String,
        expect: Expect,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let host = self.probe_host;
        async move { probe::probe(host, port, &path, expect, timeout).await }
    }

    fn degraded(&mut self) -> Option<Option<super::degraded::Degraded>> {
        self.log_watch.look()
    }

    async fn reap(self) {
        // An adopted gateway's descendants that left its group went to init, not to this reef:
        // only a walk of the process table finds them.
        let adopted = matches!(self.kind, Kind::Adopted(_));
        let RealProcess {
            name,
            pid,
            spawn,
            topology,
            ledger,
            reap_grace,
            ..
        } = self;
        let ended = spawn.clone();
        let _ = tokio::task::spawn_blocking(move || {
            end_spawn(pid, &topology, &ended, reap_grace, adopted);
        })
        .await;
        ledger.ended(&name, &spawn);
    }
}

/// Ends what a spawn left after its leader exited: the rest of its process group (workers,
/// helpers, so nothing keeps the instance's ports) and every descendant that left the group.
/// Each is signalled only once proven to be of this spawn (pid, start time, marker, through a
/// pidfd): the group's id may belong to another process by now. The whole process table is
/// walked only when something may be left (`look_everywhere`, a live group, or a process of
/// the spawn that came home to reef as the subreaper). Blocking.
pub fn end_spawn(pgid: u32, topology: &str, spawn: &str, grace: Duration, look_everywhere: bool) {
    if look_everywhere || signal::group_alive(pgid) || reaper::has_escaped(topology, spawn) {
        reaper::sweep(topology, Some(spawn), &[], Signal::SIGTERM, grace);
    }
}

pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit {
        code: status.code(),
        signal: status.signal(),
        description: describe_exit(status),
    }
}

/// "exit code 1", "signal 9 (SIGKILL)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("signal {signal} ({name})"),
            Err(_) => format!("signal {signal}"),
        },
        _ => "unknown exit".into(),
    }
}

/// The stop signal named in a ledger entry.
pub fn stop_signal_of(entry: &Entry) -> Signal {
    parse_signal(&entry.stop_signal)
}
