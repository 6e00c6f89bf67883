//! The colony: the one task that owns the running topology.
//!
//! It holds the instances (their handles and specs, in declaration order), the generation and
//! the last reload error; nobody else changes them. Everything else reaches it by message
//! through a cheap [`Colony`] client: reloads (file changes, SIGHUP, `reef reload|diff`) and
//! `reef down`. What others only read (the instances' handles, the reload state) it publishes
//! as an immutable [`View`] on a watch channel, so `reef status`, hooks and verbs on one
//! instance never wait for a reload being applied.
//!
//! A reload is evaluated on the blocking pool and applied by a task of its own, while the
//! colony keeps answering; instances the reload adds are registered with the colony as they
//! start, so a shutdown in the middle of a reload stops them too.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::automation::{self, ToHooks};
use super::events::{Event, EventKind};
use super::machine::Machine;
use super::real::RealHost;
use super::runner::{self, InstanceHandle, Shared};
use super::status::{InstanceStatus, ReloadError, TopologyStatus, unix_now};
use super::{DiffNames, dependency_first, stop_order, subscriptions};
use crate::layout::TopologyDirs;
use crate::lua::Limits;
use crate::reconcile::{self, Diff};
use crate::topology::Instance;
use crate::watch::ScriptWatcher;

/// What readers see of the colony: replaced whole on every change.
#[derive(Debug, Clone)]
pub struct View {
    pub script: PathBuf,
    pub started_at: f64,
    pub generation: u64,
    pub evaluations: u64,
    pub reload_failures: u64,
    pub loaded_at: f64,
    pub reload_error: Option<ReloadError>,
    pub handles: Vec<InstanceHandle>,
}

enum Request {
    Reload(ReloadJob),
    Down(DownReply),
}

struct ReloadJob {
    /// Another script to compare against (for `reef diff`); the topology's own by default.
    script: Option<PathBuf>,
    apply: bool,
    reply: Option<oneshot::Sender<Result<DiffNames, String>>>,
}

/// The answer to `reef down`, sent once every gateway is stopped: how many there were, and a
/// sender the requester drops (or fires) once it has passed the answer on, so that reef does
/// not exit before its client heard back.
pub type DownReply = oneshot::Sender<(usize, oneshot::Sender<()>)>;

/// A cheap client of the colony.
#[derive(Clone)]
pub struct Colony {
    requests: mpsc::Sender<Request>,
    view: watch::Receiver<Arc<View>>,
    events: broadcast::Sender<Event>,
    hook_status: watch::Receiver<automation::HookHostStatus>,
    usage: Arc<std::sync::Mutex<crate::host::usage::UsageCache>>,
}

impl Colony {
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn handles(&self) -> Vec<InstanceHandle> {
        self.view().handles.clone()
    }

    /// The topology's status, with each gateway's CPU share since the last snapshot.
    pub async fn snapshot(&self) -> TopologyStatus {
        self.status_off_runtime(true).await
    }

    /// [`Colony::snapshot`] without CPU shares: for scrapers, which read the CPU time and must
    /// not shorten the interval `reef status` measures shares over.
    pub async fn sample(&self) -> TopologyStatus {
        self.status_off_runtime(false).await
    }

    /// Reading the gateways' processes takes a while with thousands of them: it runs on the
    /// blocking pool, never on the thread that drives the gateways.
    async fn status_off_runtime(&self, share: bool) -> TopologyStatus {
        let colony = self.clone();
        match tokio::task::spawn_blocking(move || colony.status(share)).await {
            Ok(status) => status,
            Err(_) => self.status(share),
        }
    }

    fn status(&self, share: bool) -> TopologyStatus {
        let view = self.view();
        TopologyStatus {
            format: crate::render::JSON_FORMAT,
            script: view.script.clone(),
            pid: std::process::id(),
            started_at: view.started_at,
            generation: view.generation,
            evaluations: view.evaluations,
            reload_failures: view.reload_failures,
            loaded_at: view.loaded_at,
            reload_error: view.reload_error.clone(),
            instances: self.with_usage(
                view.handles.iter().map(InstanceHandle::status).collect(),
                share,
            ),
            hooks: {
                let hooks = self.hook_status.borrow();
                (hooks.hooks + hooks.timers > 0 || hooks.restarts > 0).then(|| hooks.clone())
            },
        }
    }

    /// `instances` with the CPU and memory of each running gateway's session (one walk of
    /// `/proc` for all of them), and with `share` the CPU share since the last look.
    fn with_usage(&self, mut instances: Vec<InstanceStatus>, share: bool) -> Vec<InstanceStatus> {
        use crate::host::usage;
        let leaders: Vec<u32> = instances.iter().filter_map(|i| i.pid).collect();
        let unix_now = crate::host::identity::unix_now();
        let mut cache = self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sampled_at, sampled) = cache.sample(&leaders);
        for instance in &mut instances {
            let Some(used) = instance.pid.and_then(|pid| sampled.get(&pid)) else {
                continue;
            };
            if used.processes == 0 {
                continue;
            }
            let pid = instance.pid.expect("has usage");
            let uptime = instance.started_at.map_or(0.0, |at| unix_now - at);
            if share {
                instance.cpu_percent =
                    Some(cache.meter.percent(pid, used.cpu_ticks, uptime, sampled_at));
            }
            instance.cpu_seconds = Some(used.cpu_ticks as f64 / usage::ticks_per_second());
            instance.rss_bytes = Some(used.rss_bytes);
        }
        if share {
            cache.meter.keep_only(&leaders);
        }
        instances
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

    /// Evaluates (and with `apply`, applies) a script now.
    pub async fn reload(&self, script: Option<PathBuf>, apply: bool) -> Result<DiffNames, String> {
        let (reply, answer) = oneshot::channel();
        let job = ReloadJob {
            script,
            apply,
            reply: Some(reply),
        };
        self.requests
            .send(Request::Reload(job))
            .await
            .map_err(|_| "reef is shutting down".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("reef is shutting down".to_owned()))
    }

    /// Stops every gateway and ends `reef up`; answers with how many there were, once all
    /// are stopped.
    pub async fn down(&self) -> Result<(usize, oneshot::Sender<()>), String> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Down(reply))
            .await
            .map_err(|_| "reef is already shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "reef is already shutting down".to_owned())
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// One instance as the colony holds it.
#[derive(Clone)]
pub struct Member {
    pub handle: InstanceHandle,
    pub spec: Instance,
}

/// What the colony task needs to start.
pub struct Parts {
    pub script: PathBuf,
    pub members: Vec<Member>,
    pub host: Arc<RealHost>,
    pub shared: Shared,
    pub dirs: TopologyDirs,
    pub hooks: mpsc::UnboundedSender<ToHooks>,
    pub hook_status: watch::Receiver<automation::HookHostStatus>,
    pub watcher: ScriptWatcher,
    pub file_changes: mpsc::Receiver<()>,
    /// The sources the hook host runs (none without hooks or timers).
    pub hook_sources: Option<crate::lua::Sources>,
}

/// The owner's state.
pub struct Owner {
    parts: Parts,
    started_at: f64,
    generation: u64,
    evaluations: u64,
    /// Reloads that failed (the running topology stayed).
    reload_failures: u64,
    loaded_at: f64,
    reload_error: Option<ReloadError>,
    view: watch::Sender<Arc<View>>,
    requests: mpsc::Receiver<Request>,
    down: Vec<DownReply>,
    /// What the hook host runs now: a reload that changes neither it nor a gateway changes
    /// nothing.
    hook_sources: Option<crate::lua::Sources>,
}

type Evaluated = crate::evaluator::Outcome;

impl Owner {
    pub fn new(parts: Parts) -> (Owner, Colony) {
        let now = unix_now();
        let (requests_tx, requests) = mpsc::channel(16);
        let events = parts.shared.events.clone();
        let hook_status = parts.hook_status.clone();
        let view = View {
            script: parts.script.clone(),
            started_at: now,
            generation: 1,
            evaluations: 0,
            reload_failures: 0,
            loaded_at: now,
            reload_error: None,
            handles: parts.members.iter().map(|m| m.handle.clone()).collect(),
        };
        let (view_tx, view_rx) = watch::channel(Arc::new(view));
        let hook_sources = parts.hook_sources.clone();
        let owner = Owner {
            hook_sources,
            parts,
            started_at: now,
            generation: 1,
            evaluations: 0,
            reload_failures: 0,
            loaded_at: now,
            reload_error: None,
            view: view_tx,
            requests,
            down: Vec::new(),
        };
        let colony = Colony {
            requests: requests_tx,
            view: view_rx,
            events,
            hook_status,
            usage: Arc::default(),
        };
        (owner, colony)
    }

    fn publish(&self) {
        self.view.send_replace(Arc::new(View {
            script: self.parts.script.clone(),
            started_at: self.started_at,
            generation: self.generation,
            evaluations: self.evaluations,
            reload_failures: self.reload_failures,
            loaded_at: self.loaded_at,
            reload_error: self.reload_error.clone(),
            handles: self
                .parts
                .members
                .iter()
                .map(|m| m.handle.clone())
                .collect(),
        }));
    }

    /// Serves reloads until `shutdown` is cancelled (or `reef down` asks), then returns the
    /// members to stop. A reload being applied is abandoned: the instances it already started
    /// are in the list.
    pub async fn run(
        mut self,
        shutdown: tokio_util::sync::CancellationToken,
        mut hangup: Option<tokio::signal::unix::Signal>,
    ) -> (Vec<Member>, Vec<DownReply>, Self) {
        let mut queued: VecDeque<ReloadJob> = VecDeque::new();
        let mut evaluating: Option<(JoinHandle<Evaluated>, ReloadJob, PathBuf)> = None;
        let mut applying: Option<(JoinHandle<Vec<Member>>, ReloadJob, DiffNames)> = None;
        let (added_tx, mut added) = mpsc::unbounded_channel::<Member>();
        let mut rotation = tokio::time::interval(super::logs::CHECK_EVERY);
        rotation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rotating: Option<JoinHandle<()>> = None;
        let mut log_watch = super::logs::LogWatch::new(self.parts.dirs.logs.clone());
        let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .inspect_err(|err| {
                tracing::warn!("cannot watch SIGCHLD ({err}); orphans are reaped on stops only")
            })
            .ok();
        loop {
            let automatic = |script: Option<PathBuf>| ReloadJob {
                script,
                apply: true,
                reply: None,
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(request) = self.requests.recv() => match request {
                    Request::Reload(job) => queued.push_back(job),
                    Request::Down(reply) => {
                        self.down.push(reply);
                        shutdown.cancel();
                        break;
                    }
                },
                Some(()) = self.parts.file_changes.recv() => {
                    // One pending automatic reload covers any number of changes.
                    if !queued.iter().any(|job| job.reply.is_none()) {
                        queued.push_back(automatic(None));
                    }
                }
                Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    queued.push_back(automatic(None));
                }
                Some(member) = added.recv() => {
                    self.parts.members.push(member);
                }
                evaluated = async { (&mut evaluating.as_mut().expect("guarded").0).await }, if evaluating.is_some() => {
                    let (_, job, script) = evaluating.take().expect("guarded");
                    self.evaluations += 1;
                    super::release_free_memory();
                    match evaluated {
                        Ok(evaluated) => {
                            if let Some(next) = self.evaluated(evaluated, job, &script, &added_tx) {
                                applying = Some(next);
                            }
                        }
                        Err(_) => {
                            self.fail(job, "the evaluation panicked".into());
                        }
                    }
                    self.publish();
                }
                applied = async { (&mut applying.as_mut().expect("guarded").0).await }, if applying.is_some() => {
                    let (_, job, names) = applying.take().expect("guarded");
                    while added.try_recv().is_ok() {}
                    match applied {
                        Ok(members) => self.parts.members = members,
                        Err(err) => tracing::error!("applying the reload failed: {err}"),
                    }
                    self.applied(job, names);
                }
                _ = rotation.tick() => {
                    if rotating.as_ref().is_none_or(JoinHandle::is_finished) {
                        let (members, dirs) = (&self.parts.members, &self.parts.dirs);
                        let due = log_watch.due(|| members.iter().map(|m| dirs.log(&m.handle.name)).collect());
                        if !due.is_empty() {
                            rotating = Some(tokio::task::spawn_blocking(move || super::logs::rotate_all(&due)));
                        }
                    }
                }
                Some(()) = async { children.as_mut()?.recv().await }, if children.is_some() => {
                    tokio::task::spawn_blocking(crate::host::reaper::reap_orphans);
                }
            }
            if evaluating.is_none()
                && applying.is_none()
                && let Some(job) = queued.pop_front()
            {
                evaluating = Some(self.evaluate(job));
            }
        }
        if let Some((task, job, _)) = applying.take() {
            task.abort();
            let _ = task.await;
            if let Some(reply) = job.reply {
                let _ = reply.send(Err("reef is shutting down".into()));
            }
        }
        while let Ok(member) = added.try_recv() {
            if !self
                .parts
                .members
                .iter()
                .any(|m| m.handle.name == member.handle.name)
            {
                self.parts.members.push(member);
            }
        }
        for job in queued {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err("reef is shutting down".into()));
            }
        }
        let members = self.parts.members.clone();
        let down = std::mem::take(&mut self.down);
        (members, down, self)
    }

    /// Answers requests that arrive while everything is being stopped.
    pub async fn refuse_while_stopping(&mut self, down: &mut Vec<DownReply>) {
        while let Some(request) = self.requests.recv().await {
            match request {
                Request::Reload(job) => {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err("reef is shutting down".into()));
                    }
                }
                Request::Down(reply) => down.push(reply),
            }
        }
    }

    fn evaluate(&self, job: ReloadJob) -> (JoinHandle<Evaluated>, ReloadJob, PathBuf) {
        let script = job
            .script
            .clone()
            .unwrap_or_else(|| self.parts.script.clone());
        let evaluated = script.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut request = crate::evaluator::Request::new(&evaluated, Limits::default());
            request.keep_sources = true;
            crate::evaluator::evaluate(request)
        });
        (task, job, script)
    }

    /// A finished evaluation: a diff to apply (returned as the applying task), or an answer.
    fn evaluated(
        &mut self,
        outcome: Evaluated,
        job: ReloadJob,
        script: &std::path::Path,
        added: &mpsc::UnboundedSender<Member>,
    ) -> Option<(JoinHandle<Vec<Member>>, ReloadJob, DiffNames)> {
        let crate::evaluator::Outcome {
            planned,
            hooks,
            timers,
            sources,
        } = outcome;
        let own_script = job.script.is_none();
        if job.apply
            && own_script
            && !planned.files.is_empty()
            && let Err(err) = self.parts.watcher.watch(&planned.files)
        {
            tracing::warn!("{err:#}");
        }
        let specs: Vec<Instance> = self.parts.members.iter().map(|m| m.spec.clone()).collect();
        let empty_file = std::fs::metadata(script).is_ok_and(|meta| meta.len() == 0);
        let plan = match planned.result {
            Err(err) => return self.fail(job, err.to_string()),
            // An editor that truncates before writing can be caught mid-save: an empty file
            // would stop every gateway. A topology without gateways must say so in Lua.
            Ok(plan) if empty_file && plan.topology.instances.is_empty() && !specs.is_empty() => {
                let message = format!(
                    "{} is empty (a save in progress?); keeping the running topology. To stop every gateway, \
                     leave a comment in the script, or use `reef down`",
                    script.display()
                );
                return self.fail(job, message);
            }
            Ok(plan) if !plan.is_valid() => {
                let message = format!(
                    "the new topology has {} violation(s), e.g. {}; run `reef plan {}`",
                    plan.report.violation_count(),
                    plan.report.violations[0].message,
                    script.display()
                );
                return self.fail(job, message);
            }
            Ok(plan) => plan,
        };
        let diff = reconcile::diff(&specs, &plan.topology.instances);
        let names = DiffNames::of(&diff);
        if !job.apply {
            if let Some(reply) = job.reply {
                let _ = reply.send(Ok(names));
            }
            return None;
        }
        let hook_sources = (hooks + timers > 0).then(|| sources.unwrap_or_default());
        if diff.is_empty() && hook_sources == self.hook_sources {
            // Nothing to apply: the generation stays, and a failed reload before is over.
            tracing::info!("reloaded {}: nothing changed", script.display());
            if self.reload_error.take().is_some() {
                self.publish();
            }
            if let Some(reply) = job.reply {
                let _ = reply.send(Ok(names));
            }
            return None;
        }
        tracing::info!("reloading {}: {}", script.display(), diff.summary());
        self.hook_sources = hook_sources.clone();
        // The new script's hooks take over; the reload event is theirs to see.
        let hooks_script = hook_sources.map(|sources| automation::Script {
            path: script.to_path_buf(),
            sources,
            hooks,
            timers,
        });
        automation::send(&self.parts.hooks, ToHooks::Replace(hooks_script));
        let task = tokio::spawn(apply(
            diff,
            plan.topology.instances,
            self.parts.members.clone(),
            self.parts.host.clone(),
            self.parts.shared.clone(),
            self.parts.dirs.clone(),
            added.clone(),
        ));
        Some((task, job, names))
    }

    fn fail(
        &mut self,
        job: ReloadJob,
        message: String,
    ) -> Option<(JoinHandle<Vec<Member>>, ReloadJob, DiffNames)> {
        if job.apply {
            tracing::error!("reload failed, the running topology is unchanged: {message}");
            self.reload_failures += 1;
            self.reload_error = Some(ReloadError {
                message: message.clone(),
                at: unix_now(),
            });
            let _ = self.parts.shared.events.send(Event {
                time: unix_now(),
                status: None,
                kind: EventKind::ReloadFailed {
                    message: message.clone(),
                },
            });
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(Err(message));
        }
        None
    }

    fn applied(&mut self, job: ReloadJob, names: DiffNames) {
        self.generation += 1;
        self.loaded_at = unix_now();
        self.reload_error = None;
        self.publish();
        let _ = self.parts.shared.events.send(Event {
            time: unix_now(),
            status: None,
            kind: EventKind::ReloadApplied {
                diff: names.clone(),
            },
        });
        if let Some(reply) = job.reply {
            let _ = reply.send(Ok(names));
        }
    }
}

/// Carries out a diff: stop the removed (dependents first), stop the changed (dependents
/// first), start the added (registered with the colony as each starts), give the changed their
/// new spec (dependencies first; each starts once its dependencies are ready again), update the
/// live ones. Unchanged instances are not touched. Returns the members in the new order.
async fn apply(
    diff: Diff,
    next: Vec<Instance>,
    mut members: Vec<Member>,
    host: Arc<RealHost>,
    shared: Shared,
    dirs: TopologyDirs,
    added: mpsc::UnboundedSender<Member>,
) -> Vec<Member> {
    stop_members(&members, diff.removed.clone()).await;
    members.retain(|m| !diff.removed.contains(&m.handle.name));

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
        if let Some(member) = members.iter().find(|m| &m.handle.name == name) {
            let _ = member.handle.stop().await;
        }
    }

    for instance in dependency_first(&diff.added) {
        let member = start_member(instance, &members, &host, &shared, &dirs, None);
        let _ = added.send(member.clone());
        members.push(member);
    }

    for name in restart_order.iter().rev() {
        let instance = diff
            .changed
            .iter()
            .find(|i| &i.name == name)
            .expect("from the diff");
        let handles: Vec<InstanceHandle> = members.iter().map(|m| m.handle.clone()).collect();
        if let Some(member) = members.iter_mut().find(|m| &m.handle.name == name) {
            member
                .handle
                .respec(instance.clone(), subscriptions(&handles, instance), true)
                .await;
            member.spec = instance.clone();
        }
    }
    for instance in &diff.live {
        let handles: Vec<InstanceHandle> = members.iter().map(|m| m.handle.clone()).collect();
        if let Some(member) = members.iter_mut().find(|m| m.handle.name == instance.name) {
            member
                .handle
                .respec(instance.clone(), subscriptions(&handles, instance), false)
                .await;
            member.spec = instance.clone();
        }
    }
    members.sort_by_key(|m| next.iter().position(|i| i.name == m.handle.name));
    members
}

/// Starts the task of `instance`, subscribed to its dependencies among `members` (started
/// before it), taking over `adoption` if there is one.
pub fn start_member(
    instance: &Instance,
    members: &[Member],
    host: &Arc<RealHost>,
    shared: &Shared,
    dirs: &TopologyDirs,
    adoption: Option<runner::Adoption<super::real::RealProcess>>,
) -> Member {
    let handles: Vec<InstanceHandle> = members.iter().map(|m| m.handle.clone()).collect();
    let machine = Machine::new(instance.clone(), dirs.log(&instance.name), unix_now());
    let handle = runner::spawn(
        machine,
        host.clone(),
        shared.clone(),
        subscriptions(&handles, instance),
        adoption,
    );
    Member {
        handle,
        spec: instance.clone(),
    }
}

/// Stops the named members, dependents before their dependencies, each batch in parallel, and
/// ends their tasks.
pub async fn stop_members(members: &[Member], names: Vec<String>) {
    let depends_on = members
        .iter()
        .map(|m| (m.spec.name.clone(), m.spec.depends_on.clone()))
        .collect();
    for batch in stop_order(&depends_on, names.iter().map(String::as_str)) {
        let mut stops = tokio::task::JoinSet::new();
        for member in members.iter().filter(|m| batch.contains(&m.handle.name)) {
            let handle = member.handle.clone();
            stops.spawn(async move { handle.shutdown().await });
        }
        while stops.join_next().await.is_some() {}
    }
}
