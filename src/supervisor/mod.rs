//! `reef up`: supervising a topology's gateways in the foreground.
//!
//! [`run`] first reads the previous reef's [`ledger`] and adopts every gateway it can prove is
//! its own (same pid and start time, same spec), stopping leftovers whose spec changed. Then one
//! task per instance ([`instance`]) waits for its dependencies to be ready, spawns (or keeps the
//! adopted process), probes and restarts. Around them:
//! - a control server ([`crate::control`]) answers `reef status|start|stop|restart|reload|diff|down`;
//! - a reload task owns the file watcher: each change (debounced), SIGHUP or `reef reload`
//!   evaluates the script in a fresh VM and applies the [`crate::reconcile`] diff, restarting
//!   only changed instances;
//! - a thread ([`automation`]) owns the script's Lua VM and runs its hooks and timers;
//! - log rotation and, on a terminal, a progress line.
//!
//! SIGINT, SIGTERM or `reef down` stops every gateway in reverse dependency order and returns.
//! Gateways run in their own sessions with output straight to their log files, so they outlive a
//! crashed reef and the next one adopts them.

pub mod automation;
pub mod backoff;
pub mod instance;
pub mod launch;
pub mod ledger;
pub mod logs;
pub mod probe;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};

use crate::layout::TopologyDirs;
use crate::lua::automation::Automaton;
use crate::lua::{Host, Limits};
use crate::plan::{self, Plan};
use crate::reconcile::{self, Diff};
use crate::topology::Instance;
use crate::watch::ScriptWatcher;
use automation::ToLua;
use instance::{Adoption, Context, InstanceHandle};
use ledger::Ledger;
use status::{ReloadError, State, TopologyStatus, unix_now};

/// The running topology: its instances and their specs, the reload state, and what it takes
/// to start new instances. Shared by the control server, the reload task and `run`.
pub struct Registry {
    pub script: PathBuf,
    pub started_at: f64,
    running: RwLock<Running>,
    reload_state: Mutex<ReloadState>,
    context: Context,
    dirs: TopologyDirs,
    reload_requests: mpsc::Sender<ReloadRequest>,
    /// Set by `reef down`: the gateways are stopped, `reef up` should return.
    pub down_requested: tokio::sync::Notify,
}

/// The instances as applied, in declaration order (handles and specs side by side).
struct Running {
    handles: Vec<InstanceHandle>,
    specs: Vec<Instance>,
}

struct ReloadState {
    generation: u64,
    evaluations: u64,
    loaded_at: f64,
    error: Option<ReloadError>,
}

/// A reload asked for over the control socket: apply it, or only tell what it would do.
pub struct ReloadRequest {
    /// Another script to compare against (for `reef diff`); the topology's own by default.
    pub script: Option<PathBuf>,
    pub apply: bool,
    pub reply: oneshot::Sender<Result<DiffNames, String>>,
}

impl Registry {
    pub fn handles(&self) -> Vec<InstanceHandle> {
        self.running.read().expect("registry lock").handles.clone()
    }

    fn specs(&self) -> Vec<Instance> {
        self.running.read().expect("registry lock").specs.clone()
    }

    pub fn snapshot(&self) -> TopologyStatus {
        let reload = self.reload_state.lock().expect("reload lock");
        TopologyStatus {
            format: crate::render::JSON_FORMAT,
            script: self.script.clone(),
            pid: std::process::id(),
            started_at: self.started_at,
            generation: reload.generation,
            evaluations: reload.evaluations,
            loaded_at: reload.loaded_at,
            reload_error: reload.error.clone(),
            instances: self.handles().iter().map(InstanceHandle::status).collect(),
        }
    }

    pub fn handle(&self, name: &str) -> Result<InstanceHandle, String> {
        let handles = self.handles();
        handles
            .iter()
            .find(|handle| handle.name == name)
            .cloned()
            .ok_or_else(|| {
                crate::suggest::no_such_instance(name, handles.iter().map(|h| h.name.as_str()))
            })
    }

    /// Asks the reload task to evaluate (and with `apply`, apply) a script now.
    pub async fn request_reload(
        &self,
        script: Option<PathBuf>,
        apply: bool,
    ) -> Result<DiffNames, String> {
        let (reply, answer) = oneshot::channel();
        self.reload_requests
            .send(ReloadRequest {
                script,
                apply,
                reply,
            })
            .await
            .map_err(|_| "reef is shutting down".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("reef is shutting down".to_owned()))
    }

    /// Stops every instance, dependents before their dependencies, each batch in parallel.
    pub async fn shutdown(&self) {
        let (handles, specs) = {
            let running = self.running.read().expect("registry lock");
            (running.handles.clone(), running.specs.clone())
        };
        stop_handles(
            &handles,
            &specs,
            handles.iter().map(|h| h.name.clone()).collect(),
        )
        .await;
    }

    /// Evaluates `script` in a fresh VM and diffs it against what runs; with `apply`, carries
    /// the diff out. A failed evaluation changes nothing that runs. Returns the files read.
    async fn reload(
        &self,
        script: &Path,
        apply: bool,
    ) -> (Result<DiffNames, String>, Vec<PathBuf>) {
        let planned = {
            let script = script.to_path_buf();
            let host = match Host::from_process() {
                Ok(host) => host,
                Err(err) => return (Err(err.to_string()), Vec::new()),
            };
            tokio::task::spawn_blocking(move || {
                plan::plan_keeping_vm(&script, &host, Limits::default())
            })
            .await
        };
        self.reload_state.lock().expect("reload lock").evaluations += 1;
        let Ok((planned, automaton)) = planned else {
            return (Err("the evaluation panicked".into()), Vec::new());
        };
        let files = planned.files;
        let empty_file = std::fs::metadata(script).is_ok_and(|meta| meta.len() == 0);
        let outcome = match planned.result {
            Err(err) => Err(err.to_string()),
            // An editor that truncates before writing can be caught mid-save: an empty file
            // would stop every gateway. A topology without gateways must say so in Lua.
            Ok(plan)
                if empty_file && plan.topology.instances.is_empty() && !self.specs().is_empty() =>
            {
                Err(format!(
                    "{} is empty (a save in progress?); keeping the running topology. To stop every gateway, \
                 leave a comment in the script, or use `reef down`",
                    script.display()
                ))
            }
            Ok(plan) if !plan.is_valid() => Err(format!(
                "the new topology has {} violation(s), e.g. {}; run `reef plan {}`",
                plan.report.violations.len(),
                plan.report.violations[0].message,
                script.display()
            )),
            Ok(plan) => Ok(plan),
        };
        let plan = match outcome {
            Ok(plan) => plan,
            Err(message) => {
                if apply {
                    tracing::error!("reload failed, the running topology is unchanged: {message}");
                    self.reload_state.lock().expect("reload lock").error = Some(ReloadError {
                        message: message.clone(),
                        at: unix_now(),
                    });
                }
                return (Err(message), files);
            }
        };
        let diff = reconcile::diff(&self.specs(), &plan.topology.instances);
        let names = DiffNames::of(&diff);
        if apply {
            tracing::info!("reloading {}: {}", script.display(), diff.summary());
            self.apply(diff, plan.topology.instances).await;
            {
                let mut state = self.reload_state.lock().expect("reload lock");
                state.generation += 1;
                state.loaded_at = unix_now();
                state.error = None;
            }
            // The new script's hooks take over; the reload event is theirs to see.
            if let Some(automaton) = automaton {
                automation::send(&self.context.hooks, ToLua::Replace(Box::new(automaton)));
            }
            automation::send(
                &self.context.hooks,
                automation::Event::reload(names.clone()).message(),
            );
        }
        (Ok(names), files)
    }

    /// Carries out a diff: stop the removed (dependents first), start the added, restart the
    /// changed (dependents first; each restarts once its dependencies are ready again), update
    /// the live ones. Unchanged instances are not touched.
    async fn apply(&self, diff: Diff, next: Vec<Instance>) {
        let (handles, specs) = {
            let running = self.running.read().expect("registry lock");
            (running.handles.clone(), running.specs.clone())
        };
        stop_handles(&handles, &specs, diff.removed.clone()).await;
        {
            let mut running = self.running.write().expect("registry lock");
            running
                .handles
                .retain(|handle| !diff.removed.contains(&handle.name));
            running
                .specs
                .retain(|spec| !diff.removed.contains(&spec.name));
        }

        // Changed instances stop first, dependents before their dependencies, so that neither
        // they nor added instances that depend on them start against an old process.
        let restart_order: Vec<String> = stop_order(
            &next
                .iter()
                .map(|i| (i.name.clone(), i.depends_on.clone()))
                .collect(),
            diff.changed.iter().map(|i| i.name.as_str()),
        )
        .into_iter()
        .flatten()
        .collect();
        for name in &restart_order {
            if let Some(handle) = handles.iter().find(|h| &h.name == name) {
                let _ = handle.stop().await;
            }
        }

        for instance in dependency_first(&diff.added) {
            let dependencies = subscriptions(&self.handles(), instance);
            let log = self.dirs.log(&instance.name);
            let handle = instance::spawn(
                instance.clone(),
                log,
                self.context.clone(),
                dependencies,
                None,
            );
            // Registered at once: a shutdown in the middle of this reload stops it too.
            let mut running = self.running.write().expect("registry lock");
            running.handles.push(handle);
            running.specs.push(instance.clone());
        }

        // New specs in dependency order: each dependent starts once its dependency is ready.
        for name in restart_order.iter().rev() {
            let instance = diff
                .changed
                .iter()
                .find(|i| &i.name == name)
                .expect("from the diff");
            let handles = self.handles();
            if let Some(handle) = handles.iter().find(|h| &h.name == name) {
                handle
                    .respec(instance.clone(), subscriptions(&handles, instance), true)
                    .await;
            }
        }
        for instance in &diff.live {
            let handles = self.handles();
            if let Some(handle) = handles.iter().find(|h| h.name == instance.name) {
                handle
                    .respec(instance.clone(), subscriptions(&handles, instance), false)
                    .await;
            }
        }
        let mut running = self.running.write().expect("registry lock");
        running
            .handles
            .sort_by_key(|handle| next.iter().position(|i| i.name == handle.name));
        running.specs = next;
    }
}

/// Stops the named instances, dependents before their dependencies, each batch in parallel.
async fn stop_handles(handles: &[InstanceHandle], specs: &[Instance], names: Vec<String>) {
    let depends_on: HashMap<String, Vec<String>> = specs
        .iter()
        .map(|i| (i.name.clone(), i.depends_on.clone()))
        .collect();
    for batch in stop_order(&depends_on, names.iter().map(String::as_str)) {
        let mut stops = tokio::task::JoinSet::new();
        for handle in handles.iter().filter(|h| batch.contains(&h.name)) {
            let handle = handle.clone();
            stops.spawn(async move { handle.shutdown().await });
        }
        while stops.join_next().await.is_some() {}
    }
}

/// The status channels of `instance`'s dependencies among `handles`.
fn subscriptions(
    handles: &[InstanceHandle],
    instance: &Instance,
) -> Vec<watch::Receiver<status::InstanceStatus>> {
    instance
        .depends_on
        .iter()
        .filter_map(|name| handles.iter().find(|h| &h.name == name))
        .map(InstanceHandle::subscribe)
        .collect()
}

/// A diff by instance names, as `reef diff` and `reef reload` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffNames {
    pub summary: String,
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub restart: Vec<String>,
    pub update_live: Vec<String>,
    pub unchanged: Vec<String>,
}

impl DiffNames {
    fn of(diff: &Diff) -> DiffNames {
        let names = |instances: &[Instance]| instances.iter().map(|i| i.name.clone()).collect();
        DiffNames {
            summary: diff.summary(),
            start: names(&diff.added),
            stop: diff.removed.clone(),
            restart: names(&diff.changed),
            update_live: names(&diff.live),
            unchanged: diff.unchanged.clone(),
        }
    }
}

/// Batches of instance names to stop, in order: an instance is stopped only after every
/// instance that depends on it. (Validated plans have no cycles; any left over go last.)
pub fn stop_order<'a>(
    depends_on: &HashMap<String, Vec<String>>,
    names: impl Iterator<Item = &'a str>,
) -> Vec<Vec<String>> {
    let mut remaining: Vec<String> = names.map(str::to_owned).collect();
    let mut batches = Vec::new();
    while !remaining.is_empty() {
        let batch: Vec<String> = remaining
            .iter()
            .filter(|name| {
                !remaining.iter().any(|other| {
                    depends_on
                        .get(other)
                        .is_some_and(|deps| deps.iter().any(|d| d == *name))
                })
            })
            .cloned()
            .collect();
        if batch.is_empty() {
            batches.push(std::mem::take(&mut remaining));
            break;
        }
        remaining.retain(|name| !batch.contains(name));
        batches.push(batch);
    }
    batches
}

/// Options of `reef up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Quiet time after the last file event before a reload.
    pub debounce: Duration,
}

/// Supervises `plan` until SIGINT, SIGTERM or `reef down`, reloading it whenever one of its
/// files changes (or on SIGHUP / `reef reload`), then stops everything.
pub async fn run(
    plan: Plan,
    dirs: TopologyDirs,
    inherited_env: BTreeMap<String, String>,
    options: UpOptions,
    automaton: Option<Automaton>,
) -> Result<()> {
    let (hooks, hook_inbox) = std::sync::mpsc::channel();
    let reef_binary = std::env::current_exe().context("cannot find reef's own binary")?;
    let (changed, _) = watch::channel(0u64);
    let mut adoptions = take_over_leftovers(&plan, &dirs).await;
    let context = Context {
        reef_binary,
        inherited_env: Arc::new(inherited_env),
        changed: Arc::new(changed),
        ledger: Arc::new(Mutex::new(
            Ledger::in_background(dirs.ledger.clone(), plan.topology.script.clone())
                .context("cannot start the thread that writes the ledger")?,
        )),
        hooks,
    };

    let mut handles: Vec<InstanceHandle> = Vec::new();
    let instances: Vec<Instance> = plan.topology.instances.clone();
    for instance in dependency_first(&instances) {
        let dependencies = subscriptions(&handles, instance);
        let log = dirs.log(&instance.name);
        handles.push(instance::spawn(
            instance.clone(),
            log,
            context.clone(),
            dependencies,
            adoptions.remove(&instance.name),
        ));
    }
    // Back to declaration order for status and control.
    handles.sort_by_key(|handle| instances.iter().position(|i| i.name == handle.name));

    let (reload_requests, reload_inbox) = mpsc::channel(4);
    let registry = Arc::new(Registry {
        script: plan.topology.script.clone(),
        started_at: unix_now(),
        running: RwLock::new(Running {
            handles,
            specs: instances,
        }),
        reload_state: Mutex::new(ReloadState {
            generation: 1,
            evaluations: 0,
            loaded_at: unix_now(),
            error: None,
        }),
        context: context.clone(),
        dirs: dirs.clone(),
        reload_requests,
        down_requested: tokio::sync::Notify::new(),
    });

    let (file_events, raw_events) = mpsc::channel(1);
    let mut watcher = ScriptWatcher::new(file_events)?;
    watcher.watch(&plan.topology.files)?;
    let (debounced_tx, debounced) = mpsc::channel(1);
    let debouncer = tokio::spawn(crate::watch::debounce(
        raw_events,
        options.debounce,
        debounced_tx,
    ));
    let reloader = tokio::spawn(reload_forever(
        registry.clone(),
        watcher,
        debounced,
        reload_inbox,
    ));

    if let Some(automaton) = automaton {
        automation::start(
            automaton,
            hook_inbox,
            registry.clone(),
            tokio::runtime::Handle::current(),
        )
        .context("cannot start the thread that runs the script's hooks")?;
    }

    let listener = crate::control::bind(&dirs.socket)?;
    let server = tokio::spawn(crate::control::serve(listener, registry.clone()));
    let rotation = tokio::spawn(logs::rotate_forever(registry.clone()));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(registry.clone(), context.changed.subscribe())));

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        _ = registry.down_requested.notified() => "reef down",
    };
    if let Some(progress) = progress {
        progress.abort();
        crate::progress::finish();
    }
    reloader.abort();
    debouncer.abort();
    tracing::info!("{which}: stopping all gateways");
    // Hooks see no events from a deliberate stop of everything.
    automation::send(&context.hooks, ToLua::Shutdown);
    registry.shutdown().await;
    server.abort();
    rotation.abort();
    let _ = std::fs::remove_file(&dirs.socket);
    context.ledger.lock().expect("ledger lock").flush();
    tracing::info!("all gateways stopped");
    Ok(())
}

/// The one task that evaluates scripts while reef runs: on file changes (debounced), SIGHUP
/// and control requests. It owns the watcher, whose set follows the files each evaluation read.
async fn reload_forever(
    registry: Arc<Registry>,
    mut watcher: ScriptWatcher,
    mut file_changes: mpsc::Receiver<()>,
    mut requests: mpsc::Receiver<ReloadRequest>,
) {
    let mut hangup = signal(SignalKind::hangup())
        .inspect_err(|err| {
            tracing::warn!("cannot watch SIGHUP ({err}); `reef reload` and file changes still work")
        })
        .ok();
    loop {
        let (script, apply, reply) = tokio::select! {
            Some(()) = file_changes.recv() => (None, true, None),
            Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => (None, true, None),
            Some(request) = requests.recv() => (request.script, request.apply, Some(request.reply)),
            else => return,
        };
        let own_script = script.is_none();
        let script = script.unwrap_or_else(|| registry.script.clone());
        let (outcome, files) = registry.reload(&script, apply).await;
        if apply
            && own_script
            && !files.is_empty()
            && let Err(err) = watcher.watch(&files)
        {
            tracing::warn!("{err:#}");
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Reads the previous reef's ledger and decides, for each gateway it lists that is provably
/// still that process: adopt it (same spec), or stop it (spec changed, or no longer declared).
/// Entries whose pid is gone or belongs to another process are dropped and never signalled.
async fn take_over_leftovers(plan: &Plan, dirs: &TopologyDirs) -> HashMap<String, Adoption> {
    let entries = match Ledger::read(&dirs.ledger) {
        Ok(entries) => entries,
        Err(err) => {
            tracing::warn!("{err}");
            let kept = dirs.ledger.with_extension("json.corrupt");
            if std::fs::rename(&dirs.ledger, &kept).is_ok() {
                tracing::warn!("kept the unreadable ledger as {}", kept.display());
            }
            return HashMap::new();
        }
    };
    let mut adoptions = HashMap::new();
    for entry in entries {
        if !entry.is_alive() {
            tracing::info!(
                instance = %entry.name,
                pid = entry.pid,
                "ledger: the gateway is gone (or its pid now belongs to another process); left alone"
            );
            continue;
        }
        let instance = plan.topology.instance(&entry.name);
        match instance {
            Some(instance) if instance.enabled && instance.spec_hash() == entry.spec_hash => {
                adoptions.insert(
                    entry.name.clone(),
                    Adoption {
                        pid: entry.pid,
                        start_ticks: entry.start_ticks,
                        started_at: entry.started_at,
                    },
                );
            }
            _ => {
                let why = match instance {
                    Some(instance) if !instance.enabled => "is disabled now",
                    Some(_) => "changed its spec while reef was away",
                    None => "is no longer in the topology",
                };
                tracing::info!(instance = %entry.name, pid = entry.pid, "{why}: stopping the running gateway");
                let (signal, timeout) = instance
                    .map(|i| {
                        (
                            launch::parse_signal(&i.stop.signal),
                            Duration::from_secs_f64(i.stop.timeout),
                        )
                    })
                    .unwrap_or((nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10)));
                if let Err(err) = instance::stop_leftover(&entry, signal, timeout).await {
                    tracing::warn!(instance = %entry.name, "{err}");
                }
            }
        }
    }
    adoptions
}

/// Instances ordered so that each comes after its dependencies (declaration order otherwise).
fn dependency_first(instances: &[Instance]) -> Vec<&Instance> {
    let mut ordered: Vec<&Instance> = Vec::new();
    let mut remaining: Vec<&Instance> = instances.iter().collect();
    while !remaining.is_empty() {
        let ready: Vec<&Instance> = remaining
            .iter()
            .copied()
            .filter(|instance| {
                instance.depends_on.iter().all(|dep| {
                    ordered.iter().any(|o| &o.name == dep)
                        || !instances.iter().any(|i| &i.name == dep)
                })
            })
            .collect();
        if ready.is_empty() {
            ordered.append(&mut remaining);
            break;
        }
        remaining.retain(|instance| !ready.iter().any(|r| r.name == instance.name));
        ordered.extend(ready);
    }
    ordered
}

/// A live line on the terminal while the gateways come up.
async fn show_progress(registry: Arc<Registry>, mut changed: watch::Receiver<u64>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    crate::progress::show(bar.clone());
    let started = Instant::now();
    loop {
        let statuses: Vec<_> = registry
            .handles()
            .iter()
            .map(InstanceHandle::status)
            .collect();
        let wanted: Vec<_> = statuses
            .iter()
            .filter(|s| {
                !(s.state == State::Stopped
                    && s.message.as_deref() == Some("disabled in the topology"))
            })
            .collect();
        let ready = wanted.iter().filter(|s| s.state == State::Ready).count();
        let pending: Vec<String> = wanted
            .iter()
            .filter(|s| s.state != State::Ready)
            .map(|s| format!("{} {}", s.name, s.state))
            .collect();
        if wanted.iter().all(|s| s.state.is_settled()) {
            crate::progress::finish();
            bar.finish_with_message(format!(
                "{ready}/{} gateways ready in {:.1} s{}",
                wanted.len(),
                started.elapsed().as_secs_f64(),
                if pending.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", pending.join(", "))
                }
            ));
            return;
        }
        bar.set_message(format!(
            "{ready}/{} ready · {}",
            wanted.len(),
            pending.join(" · ")
        ));
        if changed.changed().await.is_err() {
            crate::progress::finish();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_stop_first() {
        let depends_on: HashMap<String, Vec<String>> = [
            ("main".to_owned(), vec![]),
            ("rescue".to_owned(), vec!["main".to_owned()]),
            (
                "watcher".to_owned(),
                vec!["rescue".to_owned(), "main".to_owned()],
            ),
            ("solo".to_owned(), vec![]),
        ]
        .into();
        let order = stop_order(
            &depends_on,
            ["main", "rescue", "watcher", "solo"].into_iter(),
        );
        assert_eq!(
            order,
            vec![
                vec!["watcher".to_owned(), "solo".to_owned()],
                vec!["rescue".to_owned()],
                vec!["main".to_owned()]
            ]
        );
    }
}
