//! `reef up`: supervising a topology's gateways in the foreground.
//!
//! The pieces, each with one job:
//! - [`machine`]: one instance's life as a state machine, a pure function from (state, input)
//!   to (state, effects);
//! - [`runner`]: one task per instance that feeds its machine and carries out the effects
//!   through a [`runner::Host`] ([`real`] on this machine; a fake one in tests);
//! - [`colony`]: the one task that owns the running topology and applies reloads; everyone
//!   else sends it messages or reads the view it publishes;
//! - [`events`]: every transition as a typed event on one broadcast channel, consumed by the
//!   hooks ([`automation`]), the progress line and status readers;
//! - [`ledger`] and [`takeover`]: write-ahead identity. The ledger records a spawn's intent
//!   before the fork; every process carries marker variables (topology, instance, spawn nonce)
//!   that its descendants inherit; reef is a child subreaper while it runs. A crash at any
//!   instant leaves every process findable, and nothing is signalled unless proven ours.
//!
//! [`run`] installs its signal handlers first, then adopts what the previous reef left (same
//! spec) and ends the rest, then starts one task per instance in dependency order. SIGINT,
//! SIGTERM or `reef down` stops every gateway, dependents first; a second SIGINT/SIGTERM
//! hurries the stops (SIGKILL after [`machine::HURRY_GRACE`]); a third exits at once, leaving
//! the gateways to be adopted by the next reef.

pub mod automation;
pub mod backoff;
pub mod colony;
pub mod degraded;
pub mod events;
pub mod launch;
pub mod ledger;
pub mod logs;
pub mod machine;
pub mod probe;
pub mod real;
pub mod runner;
pub mod status;
pub mod takeover;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::layout::TopologyDirs;
use crate::plan::Plan;
use crate::reconcile::Diff;
use crate::topology::Instance;
use crate::watch::ScriptWatcher;
use automation::ToHooks;
use colony::{Colony, Member, Owner, Parts};
use ledger::LedgerHandle;

use real::RealHost;
use runner::{InstanceHandle, Shared};
use status::State;

/// Gives the memory an evaluation freed back to the system: a Lua VM allocates megabytes that
/// the allocator would otherwise keep in `reef up`'s heap for good.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
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
#[derive(Debug)]
pub struct UpOptions {
    /// Quiet time after the last file event before a reload.
    pub debounce: Duration,
    /// Reload when the script's files change (`--no-watch` turns it off).
    pub watch: bool,
    /// Where to serve Prometheus metrics (`--metrics`), already bound.
    pub metrics: Option<std::net::TcpListener>,
}

/// SIGINT and SIGTERM, counted: the first stops everything, the second hurries, the third
/// exits. Installed before anything is spawned.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Supervises `plan` until SIGINT, SIGTERM or `reef down`, reloading it whenever one of its
/// files changes (or on SIGHUP / `reef reload`), then stops everything.
pub async fn run(
    plan: Plan,
    dirs: TopologyDirs,
    inherited_env: BTreeMap<String, String>,
    options: UpOptions,
    hooks_script: Option<automation::Script>,
) -> Result<()> {
    let mut signals = StopSignals::install()?;
    release_free_memory();
    let hangup = signal(SignalKind::hangup())
        .inspect_err(|err| {
            tracing::warn!("cannot watch SIGHUP ({err}); `reef reload` and file changes still work")
        })
        .ok();
    let topology = dirs.topology_id().to_owned();
    crate::host::markers::set_topology(&topology);
    if cfg!(not(target_os = "linux")) {
        tracing::warn!(
            "live restore needs Linux: on this system reef supervises, but cannot prove which \
             processes a crashed reef left; they are not adopted or stopped by the next reef \
             (stop them by hand, or use `reef install` to let the service manager own them)"
        );
    }
    if let Err(err) = crate::host::reaper::become_subreaper() {
        tracing::warn!(
            "cannot become a child subreaper ({err}); descendants that leave their group are still found by marker"
        );
    }
    let shutdown = CancellationToken::new();
    let ledger = LedgerHandle::start(dirs.ledger.clone(), plan.topology.script.clone())
        .context("cannot start the thread that writes the ledger")?;
    let host = Arc::new(RealHost::new(
        std::env::current_exe().context("cannot find reef's own binary")?,
        inherited_env,
        topology.clone(),
        ledger.clone(),
    ));

    // What the previous reef left: adopt the same specs, end everything else.
    let take_over = takeover::take_over(&plan, &dirs, &host);
    tokio::pin!(take_over);
    let mut signalled = 0;
    let mut early: Option<&'static str> = None;
    let mut adoptions = loop {
        tokio::select! {
            adoptions = &mut take_over => break adoptions,
            which = signals.next() => {
                signalled += 1;
                if signalled >= 3 {
                    tracing::warn!("{which} again: exiting now; `reef down` stops what is left");
                    std::process::exit(130);
                }
                tracing::info!("{which}: stopping once the previous reef's gateways are dealt with");
                early = Some(which);
            }
        }
    };

    let shared = Shared {
        events: events::bus(),
        changed: Arc::new(watch::channel(0u64).0),
        hurry: CancellationToken::new(),
    };
    if let Some(which) = early {
        // Stopped before anything started: nothing is spawned, and the gateways just adopted
        // are stopped like any others (a clean stop stops all).
        if signalled >= 2 {
            shared.hurry.cancel();
        }
        let adopted: Vec<Member> = plan
            .topology
            .instances
            .iter()
            .filter_map(|instance| {
                let adoption = adoptions.remove(&instance.name)?;
                Some(colony::start_member(
                    instance,
                    &[],
                    &host,
                    &shared,
                    &dirs,
                    Some(adoption),
                ))
            })
            .collect();
        stop_escalating(
            &adopted,
            &mut signals,
            &mut signalled,
            &shared,
            std::future::pending(),
        )
        .await;
        tokio::task::spawn_blocking(move || ledger.flush())
            .await
            .context("the ledger's writer failed")?;
        tracing::info!("{which}: stopped before any gateway was started");
        return Ok(());
    }
    let mut members: Vec<Member> = Vec::new();
    let instances: Vec<Instance> = plan.topology.instances.clone();
    for instance in dependency_first(&instances) {
        let adoption = adoptions.remove(&instance.name);
        let member = colony::start_member(instance, &members, &host, &shared, &dirs, adoption);
        members.push(member);
    }
    // Back to declaration order for status and control.
    members.sort_by_key(|m| instances.iter().position(|i| i.name == m.handle.name));

    let (hooks, hook_inbox) = mpsc::unbounded_channel();
    let (hook_status, hook_status_rx) = tokio::sync::watch::channel(automation::HookHostStatus {
        hooks: hooks_script.as_ref().map_or(0, |s| s.hooks),
        timers: hooks_script.as_ref().map_or(0, |s| s.timers),
        ..automation::HookHostStatus::default()
    });
    let (file_events, raw_events) = mpsc::channel(1);
    let mut watcher = if options.watch {
        ScriptWatcher::new(file_events)?
    } else {
        ScriptWatcher::paused(file_events)?
    };
    watcher.watch(&plan.topology.files)?;
    let (debounced_tx, debounced) = mpsc::channel(1);
    let debouncer = tokio::spawn(crate::watch::debounce(
        raw_events,
        options.debounce,
        debounced_tx,
    ));
    let (owner, colony) = Owner::new(Parts {
        script: plan.topology.script.clone(),
        members,
        host: host.clone(),
        shared: shared.clone(),
        dirs: dirs.clone(),
        hooks: hooks.clone(),
        hook_status: hook_status_rx,
        watcher,
        file_changes: debounced,
        hook_sources: hooks_script.as_ref().map(|script| script.sources.clone()),
    });

    let forwarder = tokio::spawn(forward_to_hooks(colony.events(), hooks.clone()));
    let keeper = automation::start(hooks_script, hook_inbox, colony.clone(), hook_status);

    let listener = crate::control::bind(&dirs.socket)?;
    let server = tokio::spawn(crate::control::serve(
        listener,
        dirs.socket.clone(),
        colony.clone(),
    ));
    let metrics = options
        .metrics
        .map(|listener| tokio::spawn(crate::metrics::serve(listener, colony.clone())));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(colony.clone(), shared.changed.subscribe())));

    let owner_shutdown = shutdown.clone();
    let mut owner_task = tokio::spawn(owner.run(owner_shutdown, hangup));
    let which = tokio::select! {
        which = signals.next() => { signalled += 1; which }
        () = shutdown.cancelled() => "reef down",
    };
    shutdown.cancel();
    let (members, mut down, mut owner) = loop {
        tokio::select! {
            finished = &mut owner_task => break finished.context("the colony task failed")?,
            which = signals.next() => {
                signalled += 1;
                escalate(signalled, which, &shared);
            }
        }
    };
    if let Some(progress) = progress {
        progress.abort();
        crate::progress::finish();
    }
    debouncer.abort();
    tracing::info!("{which}: stopping all gateways");
    // Hooks see no events from a deliberate stop of everything.
    forwarder.abort();
    automation::send(&hooks, ToHooks::Shutdown);
    let _ = keeper.await;
    stop_escalating(
        &members,
        &mut signals,
        &mut signalled,
        &shared,
        owner.refuse_while_stopping(&mut down),
    )
    .await;
    tokio::task::spawn_blocking(move || ledger.flush())
        .await
        .context("the ledger's writer failed")?;
    server.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let _ = std::fs::remove_file(&dirs.socket);
    for reply in down {
        let (written, answered) = tokio::sync::oneshot::channel();
        if reply.send((members.len(), written)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), answered).await;
        }
    }
    tracing::info!("all gateways stopped");
    Ok(())
}

/// Stops every member, dependents first, while counting further SIGINT/SIGTERMs (see
/// [`escalate`]) and running `meanwhile` (answering requests that arrive during the stop).
async fn stop_escalating(
    members: &[Member],
    signals: &mut StopSignals,
    signalled: &mut u32,
    shared: &Shared,
    meanwhile: impl std::future::Future<Output = ()>,
) {
    let names = members.iter().map(|m| m.handle.name.clone()).collect();
    let stopping = colony::stop_members(members, names);
    tokio::pin!(stopping);
    tokio::pin!(meanwhile);
    let mut meanwhile_done = false;
    loop {
        tokio::select! {
            () = &mut stopping => return,
            which = signals.next() => {
                *signalled += 1;
                escalate(*signalled, which, shared);
            }
            () = &mut meanwhile, if !meanwhile_done => meanwhile_done = true,
        }
    }
}

/// A second SIGINT/SIGTERM hurries the stops; a third exits now (the ledger and the markers
/// let the next reef find every gateway).
fn escalate(count: u32, which: &str, shared: &Shared) {
    if count >= 3 {
        tracing::warn!(
            "{which} again: exiting now; gateways still running are adopted or stopped by the next `reef up` / `reef down`"
        );
        std::process::exit(130);
    }
    tracing::warn!(
        "{which} again: stopping now (SIGKILL after {:.0} s); once more to exit at once",
        machine::HURRY_GRACE.as_secs_f64()
    );
    shared.hurry.cancel();
}

/// Instance events, as the script's hooks see them.
async fn forward_to_hooks(
    mut events: tokio::sync::broadcast::Receiver<events::Event>,
    hooks: mpsc::UnboundedSender<ToHooks>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Some(message) = automation::Event::from_supervisor(&event) {
                    automation::send(&hooks, message.message());
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!("hooks fell {missed} event(s) behind; those were not delivered")
            }
            Err(RecvError::Closed) => return,
        }
    }
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
async fn show_progress(colony: Colony, mut changed: watch::Receiver<u64>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    crate::progress::show(bar.clone());
    let started = Instant::now();
    loop {
        let statuses: Vec<_> = colony
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

#[cfg(test)]
mod machine_tests;
