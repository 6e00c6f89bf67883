//! `reef up`: supervising a topology's gateways in the foreground.
//!
//! [`run`] starts one task per instance ([`instance`]); each waits for its dependencies to be
//! ready before spawning. A control server answers `reef status|start|stop|restart` on the
//! topology's Unix socket. SIGINT or SIGTERM stops every gateway in reverse dependency order
//! (dependents first) and returns.
//!
//! Gateways run in their own sessions with output straight to their log files, so nothing ties
//! them to reef's terminal or pipes; the log files are rotated here by copy-and-truncate, which
//! never blocks a writer.

pub mod backoff;
pub mod instance;
pub mod launch;
pub mod ledger;
pub mod logs;
pub mod probe;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::layout::TopologyDirs;
use crate::plan::Plan;
use crate::topology::Instance;
use instance::{Adoption, Context, InstanceHandle};
use ledger::Ledger;
use status::{State, TopologyStatus, unix_now};

/// The running topology as the control server sees it.
#[derive(Debug)]
pub struct Registry {
    pub script: PathBuf,
    pub started_at: f64,
    /// In declaration order.
    pub handles: Vec<InstanceHandle>,
    /// Each instance's dependencies, by name.
    pub depends_on: HashMap<String, Vec<String>>,
    /// Set by `reef down`: the gateways are stopped, `reef up` should return.
    pub down_requested: tokio::sync::Notify,
}

impl Registry {
    pub fn snapshot(&self) -> TopologyStatus {
        TopologyStatus {
            format: crate::render::JSON_FORMAT,
            script: self.script.clone(),
            pid: std::process::id(),
            started_at: self.started_at,
            instances: self.handles.iter().map(InstanceHandle::status).collect(),
        }
    }

    pub fn handle(&self, name: &str) -> Result<&InstanceHandle, String> {
        self.handles
            .iter()
            .find(|handle| handle.name == name)
            .ok_or_else(|| {
                crate::suggest::no_such_instance(name, self.handles.iter().map(|h| h.name.as_str()))
            })
    }

    /// Stops every instance, dependents before their dependencies, each batch in parallel.
    pub async fn shutdown(&self) {
        for batch in stop_order(
            &self.depends_on,
            self.handles.iter().map(|h| h.name.as_str()),
        ) {
            let mut stops = tokio::task::JoinSet::new();
            for handle in self.handles.iter().filter(|h| batch.contains(&h.name)) {
                let handle = handle.clone();
                stops.spawn(async move { handle.shutdown().await });
            }
            while stops.join_next().await.is_some() {}
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

/// Supervises `plan` until SIGINT or SIGTERM, then stops everything.
pub async fn run(
    plan: Plan,
    dirs: TopologyDirs,
    inherited_env: BTreeMap<String, String>,
) -> Result<()> {
    let reef_binary = std::env::current_exe().context("cannot find reef's own binary")?;
    let (changed, _) = watch::channel(0u64);
    let mut adoptions = take_over_leftovers(&plan, &dirs).await;
    let context = Context {
        reef_binary,
        inherited_env: Arc::new(inherited_env),
        changed: Arc::new(changed),
        ledger: Arc::new(Mutex::new(Ledger::new(
            dirs.ledger.clone(),
            plan.topology.script.clone(),
        ))),
    };

    let mut handles: Vec<InstanceHandle> = Vec::new();
    let instances: Vec<Instance> = plan.topology.instances.clone();
    for instance in dependency_first(&instances) {
        let dependencies = instance
            .depends_on
            .iter()
            .filter_map(|name| handles.iter().find(|h| &h.name == name))
            .map(InstanceHandle::subscribe)
            .collect();
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

    let registry = Arc::new(Registry {
        script: plan.topology.script.clone(),
        started_at: unix_now(),
        depends_on: instances
            .iter()
            .map(|i| (i.name.clone(), i.depends_on.clone()))
            .collect(),
        handles,
        down_requested: tokio::sync::Notify::new(),
    });

    let listener = crate::control::bind(&dirs.socket)?;
    let server = tokio::spawn(crate::control::serve(listener, registry.clone()));
    let rotation = tokio::spawn(logs::rotate_forever(
        registry.handles.iter().map(|h| h.status().log).collect(),
    ));
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
    }
    tracing::info!("{which}: stopping all gateways");
    registry.shutdown().await;
    server.abort();
    rotation.abort();
    let _ = std::fs::remove_file(&dirs.socket);
    tracing::info!("all gateways stopped");
    Ok(())
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
    let started = Instant::now();
    loop {
        let statuses: Vec<_> = registry
            .handles
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
