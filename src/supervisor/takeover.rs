//! Finding a topology's processes after its reef is gone: by ledger and by marker.
//!
//! A gateway counts as found only when a live process has the pid and start time the ledger
//! recorded and carries the topology's marker with that spawn's nonce. A spawn whose pid never
//! reached the ledger (reef killed between the fork and the `record`) is not adopted; its
//! processes are found by their marker and ended, and the gateway starts afresh. A descendant
//! that left the group is never taken for its gateway. Everything
//! else that carries the topology's marker (descendants that escaped their group, `reef.exec`
//! children, gateways of spawns the ledger never recorded) is a leftover: `reef up` and
//! `reef down` end it. Nothing without the marker is ever signalled, so a forged or stale
//! ledger cannot make reef touch another process. [`find`], [`stop`] and
//! [`down_without_reef`] block; [`take_over`] (the start of `reef up`) runs them on the blocking
//! pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::ledger::{self, Entry};
use super::real::{RealHost, RealProcess, end_spawn, stop_signal_of};
use super::runner::Adoption;
use crate::host::{identity, markers, reaper, signal};
use crate::layout::TopologyDirs;
use crate::plan::Plan;

/// A live gateway of the topology, proven by its marker.
#[derive(Debug, Clone)]
pub struct Found {
    pub entry: Entry,
    pub pid: u32,
    pub start_ticks: u64,
}

/// What is left of a topology on the host.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub gateways: Vec<Found>,
    /// Ledger entries with no live process behind them (gone, or never spawned).
    pub gone: Vec<Entry>,
    /// Why the ledger could not be used, if it could not (its gateways are then found, and
    /// ended, by marker alone).
    pub ledger_error: Option<String>,
    /// Whether other processes carry the topology's marker (descendants, unrecorded spawns):
    /// only then is a sweep needed.
    pub strays: bool,
}

/// Reads the ledger and matches it against the processes carrying `topology`'s marker.
pub fn find(ledger_path: &Path, topology: &str) -> Leftovers {
    let mut leftovers = Leftovers::default();
    let entries = match ledger::read(ledger_path) {
        Ok(entries) => entries,
        Err(err) => {
            let kept = ledger_path.with_extension("json.corrupt");
            if matches!(err, ledger::LedgerError::Corrupt { .. })
                && std::fs::rename(ledger_path, &kept).is_ok()
            {
                leftovers.ledger_error = Some(format!("{err}; kept it as {}", kept.display()));
            } else {
                leftovers.ledger_error = Some(err.to_string());
            }
            Vec::new()
        }
    };
    let marked = markers::find_marked(topology);
    for entry in entries {
        // Only the process the ledger recorded is the gateway (pid, start time and the spawn's
        // marker). A spawn whose pid never reached the ledger (reef died within milliseconds of
        // the fork) is not adopted: its processes carry the marker, so they are ended with the
        // other strays and the gateway starts afresh; a helper that left the group can then
        // never pass for a gateway that died meanwhile.
        let leader = match (entry.pid, entry.start_ticks) {
            (Some(pid), Some(ticks)) if !entry.ended => marked.iter().find(|process| {
                !entry.spawn.is_empty()
                    && process.markers.spawn == entry.spawn
                    && process.markers.instance == entry.name
                    && process.pid == pid
                    && process.start_ticks == ticks
            }),
            _ => None,
        };
        match leader {
            Some(process) => leftovers.gateways.push(Found {
                pid: process.pid,
                start_ticks: process.start_ticks,
                entry,
            }),
            None => leftovers.gone.push(entry),
        }
    }
    leftovers.strays = marked.iter().any(|process| {
        !leftovers
            .gateways
            .iter()
            .any(|found| found.pid == process.pid)
    });
    leftovers
}

/// Stops a found gateway that will not be adopted: its stop signal to the group (SIGCONT
/// first), SIGKILL after its stop timeout, then the rest of its group and every process of its
/// spawn. Returns how long it took.
pub fn stop(found: &Found, topology: &str) -> Duration {
    let started = Instant::now();
    let timeout =
        Duration::try_from_secs_f64(found.entry.stop_timeout).unwrap_or(Duration::from_secs(10));
    let proven = || {
        markers::is_ours(
            found.pid,
            found.start_ticks,
            topology,
            Some(&found.entry.spawn),
        )
    };
    if proven() {
        signal::continue_and_signal_group(found.pid, stop_signal_of(&found.entry));
        let deadline = started + timeout;
        while identity::is_same_process(found.pid, found.start_ticks) && Instant::now() < deadline {
            reaper::reap_orphans();
            std::thread::sleep(Duration::from_millis(20));
        }
        if proven() {
            tracing::warn!(
                instance = %found.entry.name,
                pid = found.pid,
                "did not stop within {:.1} s; sending SIGKILL",
                timeout.as_secs_f64()
            );
            signal::signal_group(found.pid, Signal::SIGKILL);
        }
    }
    let grace = timeout.min(Duration::from_secs(5));
    end_spawn(found.pid, topology, &found.entry.spawn, grace, true);
    started.elapsed()
}

/// Ends every process of `topology` except those of the spawns in `keep` (adopted gateways and
/// their descendants). Returns the pids ended.
pub fn sweep_except(topology: &str, keep: &[String]) -> Vec<u32> {
    reaper::sweep(
        topology,
        None,
        keep,
        Signal::SIGTERM,
        Duration::from_secs(5),
    )
}

/// Batches of names to stop, dependents before their dependencies (from the ledger's own
/// `depends_on`, so no script is needed).
pub fn stop_batches(found: &[Found]) -> Vec<Vec<String>> {
    let depends_on: HashMap<String, Vec<String>> = found
        .iter()
        .map(|f| (f.entry.name.clone(), f.entry.depends_on.clone()))
        .collect();
    super::stop_order(&depends_on, found.iter().map(|f| f.entry.name.as_str()))
}

/// Reads the previous reef's ledger and the processes carrying this topology's marker, and
/// decides for each gateway found: adopt it (same spec, still enabled), or stop it. Then ends
/// every other process of the topology (escaped descendants, unrecorded spawns, old
/// `reef.exec` children). Nothing without the topology's marker is ever signalled.
pub async fn take_over(
    plan: &Plan,
    dirs: &TopologyDirs,
    host: &Arc<RealHost>,
) -> HashMap<String, Adoption<RealProcess>> {
    let ledger_path = dirs.ledger.clone();
    let topology = host.topology.clone();
    let leftovers = tokio::task::spawn_blocking(move || find(&ledger_path, &topology))
        .await
        .unwrap_or_default();
    if let Some(err) = &leftovers.ledger_error {
        tracing::warn!("{err}");
    }
    for entry in &leftovers.gone {
        tracing::info!(
            instance = %entry.name,
            "ledger: the recorded gateway is gone; its pid is left alone (only what carries its marker is ended)"
        );
    }
    let mut adoptions = HashMap::new();
    let mut to_stop = Vec::new();
    for found in leftovers.gateways {
        let instance = plan.topology.instance(&found.entry.name);
        match instance {
            Some(instance) if instance.enabled && instance.spec_hash() == found.entry.spec_hash => {
                match host.adopt(instance, &found.entry, found.pid, found.start_ticks) {
                    Ok(process) => {
                        adoptions.insert(
                            found.entry.name.clone(),
                            Adoption {
                                process,
                                started_at: found.entry.started_at,
                                restarts: found.entry.restarts,
                                last_exit: found.entry.last_exit.clone(),
                            },
                        );
                    }
                    Err(err) => tracing::warn!(instance = %found.entry.name, "not adopted: {err}"),
                }
            }
            _ => {
                let why = match instance {
                    Some(instance) if !instance.enabled => "is disabled now",
                    Some(_) => "changed its spec while reef was away",
                    None => "is no longer in the topology",
                };
                tracing::info!(instance = %found.entry.name, pid = found.pid, "{why}: stopping the running gateway");
                to_stop.push(found);
            }
        }
    }
    let strays = leftovers.strays;
    let topology = host.topology.clone();
    let keep: Vec<String> = adoptions
        .values()
        .map(|adoption: &Adoption<RealProcess>| adoption.process.spawn().to_owned())
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        for batch in stop_batches(&to_stop) {
            std::thread::scope(|scope| {
                for found in to_stop.iter().filter(|f| batch.contains(&f.entry.name)) {
                    let topology = &topology;
                    scope.spawn(move || stop(found, topology));
                }
            });
        }
        // Gateways stopped above took their own spawn's processes with them.
        if !strays {
            return;
        }
        let ended = sweep_except(&topology, &keep);
        if !ended.is_empty() {
            tracing::info!(
                "ended {} leftover process(es) of this topology: {ended:?}",
                ended.len()
            );
        }
    })
    .await;
    adoptions
}

/// `reef down` when no reef runs the topology: stops every gateway the ledger and the markers
/// prove are the topology's, dependents first, then every other process carrying its marker.
/// Returns a line per gateway for the user.
pub fn down_without_reef(dirs: &TopologyDirs) -> Result<Vec<String>, String> {
    let topology = dirs.topology_id().to_owned();
    let leftovers = find(&dirs.ledger, &topology);
    let mut lines = Vec::new();
    if let Some(err) = &leftovers.ledger_error {
        lines.push(format!("warning: {err}; stopping by marker only"));
    }
    for entry in &leftovers.gone {
        lines.push(format!(
            "{}: no recorded gateway process is alive",
            entry.name
        ));
    }
    for batch in stop_batches(&leftovers.gateways) {
        let stopped: Vec<String> = std::thread::scope(|scope| {
            let stops: Vec<_> = leftovers
                .gateways
                .iter()
                .filter(|f| batch.contains(&f.entry.name))
                .map(|found| {
                    let topology = &topology;
                    scope.spawn(move || {
                        let took = stop(found, topology);
                        tracing::info!(instance = %found.entry.name, "stopped in {:.1} s", took.as_secs_f64());
                        format!("{}: stopped pid {}", found.entry.name, found.pid)
                    })
                })
                .collect();
            stops.into_iter().filter_map(|s| s.join().ok()).collect()
        });
        lines.extend(stopped);
    }
    let ended = sweep_except(&topology, &[]);
    if !ended.is_empty() {
        lines.push(format!(
            "ended {} other process(es) of this topology (descendants that left their group)",
            ended.len()
        ));
    }
    match std::fs::remove_file(&dirs.ledger) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {err}", dirs.ledger.display()))
        }
        _ => Ok(lines),
    }
}
