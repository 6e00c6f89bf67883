//! reef as a child subreaper: what escapes a process group still comes home.
//!
//! A gateway's helper that calls `setsid` or double-forks leaves its process group, and when its
//! parent exits it is reparented, normally to init, out of reef's sight. While `reef up` runs,
//! reef is a child subreaper ([`become_subreaper`]), so such orphans reparent to reef instead;
//! their markers ([`super::markers`]) say whose they are, [`sweep`] ends them, and
//! [`reap_orphans`] collects their exit statuses so they do not linger as zombies.
//!
//! Reaping by pid must never take the exit status of a child someone in reef is waiting for
//! (a gateway's `Child`, a hook's program): that owner would get `ECHILD` instead. So every
//! child reef spawns goes through [`spawn_tracked`], and [`reap_orphans`] leaves tracked pids
//! alone; both hold one lock, so a child cannot exit and be reaped between its spawn and its
//! registration.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::markers::{MarkedProcess, find_marked};
use super::signal::Proven;

/// How often [`sweep`] looks whether what it signalled has ended.
const SWEEP_POLL: Duration = Duration::from_millis(20);
/// How long [`sweep`] waits for SIGKILL to take effect before it gives up on a process (one in
/// uninterruptible sleep, say) and says so in the log.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// Makes reef the child subreaper of everything it starts, for as long as it runs: orphaned
/// descendants reparent to reef rather than to init. `Unsupported` outside Linux.
pub fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
        SUBREAPER.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a child subreaper needs Linux",
        ))
    }
}

/// Whether this process became a child subreaper.
static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Pids of reef's children that some part of reef waits for itself.
static TRACKED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn tracked() -> MutexGuard<'static, BTreeSet<u32>> {
    // The set stays consistent whatever panicked while holding it.
    TRACKED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held shared by spawns from their fork to their registration, and exclusively by
/// [`reap_orphans`]: several children can be started at once (a fork waits for the child's
/// exec), and none is reaped before it is registered.
static SPAWNING: RwLock<()> = RwLock::new(());

/// Runs `spawn` (a `Command::spawn`, std or tokio) and records the child's pid, read by
/// `pid_of`, as one that its owner waits for: [`reap_orphans`] will not touch it. Call
/// [`untrack`] once the owner has reaped it (not before: the exit status would be up for grabs).
///
/// `spawn` runs under a shared lock that [`reap_orphans`] takes exclusively: it must not call
/// back into this module. Spawns on several threads run at once.
pub fn spawn_tracked<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid_of: impl FnOnce(&T) -> Option<u32>,
) -> io::Result<T> {
    let _spawning = SPAWNING.read().unwrap_or_else(PoisonError::into_inner);
    let spawned = spawn()?;
    if let Some(pid) = pid_of(&spawned) {
        tracked().insert(pid);
    }
    Ok(spawned)
}

/// Forgets a child recorded by [`spawn_tracked`], after its owner has reaped it.
pub fn untrack(pid: u32) {
    tracked().remove(&pid);
}

/// Forgets a child recorded by [`spawn_tracked`] when dropped: hold it for as long as the owner
/// may still wait for the child (it is reaped by then, or abandoned to [`reap_orphans`]).
pub struct Untrack(pub u32);

impl Drop for Untrack {
    fn drop(&mut self) {
        untrack(self.0);
    }
}

/// Whether `pid` is in the registry (for tests elsewhere in reef).
#[cfg(test)]
pub(crate) fn is_tracked(pid: u32) -> bool {
    tracked().contains(&pid)
}

/// Reaps every child of reef that has exited and that nobody tracks (orphans reparented to
/// reef as subreaper); returns their pids. Tracked children are never waited for here, so their
/// owners keep their exit statuses. Finds nothing outside Linux.
pub fn reap_orphans() -> Vec<u32> {
    let _no_spawn = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    let tracked = tracked().clone();
    children_of_reef()
        .into_iter()
        .filter(|pid| !tracked.contains(pid))
        .filter(|&pid| reap_if_exited(pid))
        .collect()
}

/// `waitpid(pid, WNOHANG)`: whether `pid` had exited and is now reaped.
fn reap_if_exited(pid: u32) -> bool {
    let Some(child) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::waitpid(Some(child), rustix::process::WaitOptions::NOHANG),
        Ok(Some(_))
    )
}

/// reef's children: from each thread's `children` list (a child belongs to the thread that
/// forked it, or the one it was reparented to), else by scanning every process's parent.
fn children_of_reef() -> BTreeSet<u32> {
    #[cfg(target_os = "linux")]
    {
        let listed = || -> procfs::ProcResult<BTreeSet<u32>> {
            let mut children = BTreeSet::new();
            for task in procfs::process::Process::myself()?.tasks()? {
                match task?.children() {
                    Ok(pids) => children.extend(pids),
                    // A thread that exited meanwhile; its children moved to another.
                    Err(procfs::ProcError::NotFound(_)) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(children)
        };
        listed().unwrap_or_else(|_| {
            // Kernels built without CONFIG_PROC_CHILDREN.
            let me = std::process::id() as i32;
            procfs::process::all_processes()
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|process| process.stat().ok())
                .filter(|stat| stat.ppid == me)
                .filter_map(|stat| u32::try_from(stat.pid).ok())
                .collect()
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        BTreeSet::new()
    }
}

/// Whether a descendant of spawn `spawn` of `topology` has come home to reef: after a gateway's
/// exit, every subtree it left (helpers that called `setsid`, double forks) is rooted at a child
/// of reef, the subreaper. Looking at reef's few untracked children is far cheaper than a
/// [`sweep`]'s walk of every process, so a gateway that left nothing behind is restarted without
/// one. Always true when reef is no subreaper (orphans went to init: the sweep decides).
pub fn has_escaped(topology: &str, spawn: &str) -> bool {
    if !SUBREAPER.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    let tracked = tracked().clone();
    children_of_reef()
        .into_iter()
        .filter(|pid| !tracked.contains(pid))
        .filter_map(super::markers::markers_of)
        .any(|markers| markers.topology == topology && markers.spawn == spawn)
}

/// Ends the processes marked with `topology`: only those of spawn `spawn` when given, never
/// those whose spawn is in `keep_spawns`. Each, once proven reef's (pid, start time, markers,
/// through a pidfd), gets SIGCONT (a stopped process would not act on `signal`) and `signal`;
/// after `grace`, what still runs gets SIGKILL, as do marked processes that appeared meanwhile
/// (forked by a dying one). Orphans are reaped as they end. Returns the pids it signalled,
/// sorted. Blocks for up to `grace` plus a moment for SIGKILL to land.
pub fn sweep(
    topology: &str,
    spawn: Option<&str>,
    keep_spawns: &[String],
    signal: Signal,
    grace: Duration,
) -> Vec<u32> {
    let wanted = |found: &MarkedProcess| {
        spawn.is_none_or(|nonce| found.markers.spawn == nonce)
            && !keep_spawns.contains(&found.markers.spawn)
    };
    let prove_all = || -> Vec<Proven> {
        find_marked(topology)
            .into_iter()
            .filter(wanted)
            .filter_map(|found| {
                let spawn = Some(found.markers.spawn.as_str());
                Proven::prove(found.pid, found.start_ticks, topology, spawn)
                    .ok()
                    .flatten()
            })
            .collect()
    };
    let mut signalled = BTreeSet::new();
    let mut send = |process: &Proven, signal: Signal| match process.send(signal) {
        Ok(sent) => {
            if sent {
                signalled.insert(process.pid);
            }
        }
        Err(err) => tracing::warn!(pid = process.pid, %signal, "cannot signal: {err}"),
    };

    let mut running = prove_all();
    if running.is_empty() {
        return Vec::new();
    }
    for process in &running {
        send(process, Signal::SIGCONT);
        send(process, signal);
    }
    settle(&mut running, Instant::now() + grace);

    // Newcomers were born marked while the others were ending: no grace for them either.
    let mut latecomers = prove_all();
    latecomers.retain(|late| !running.iter().any(|process| process.pid == late.pid));
    running.extend(latecomers);
    for process in &running {
        send(process, Signal::SIGKILL);
    }
    settle(&mut running, Instant::now() + KILL_SETTLE);
    for process in &running {
        tracing::warn!(
            pid = process.pid,
            topology,
            "still runs after SIGKILL (uninterruptible sleep?)"
        );
    }
    signalled.into_iter().collect()
}

/// Waits until everything in `running` has ended or `deadline` passes, reaping orphans as they
/// end; leaves in `running` what still runs.
fn settle(running: &mut Vec<Proven>, deadline: Instant) {
    loop {
        running.retain(Proven::is_alive);
        // After the look above, so that what it saw end is reaped before returning.
        reap_orphans();
        if running.is_empty() || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(SWEEP_POLL);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    use super::*;
    use crate::host::identity::{is_same_process, start_time};
    use crate::host::markers::{Markers, new_spawn_nonce};
    use crate::host::testing::{Spawned, isolated, read_pid, wait_until};

    fn ppid_of(pid: u32) -> Option<u32> {
        let stat = procfs::process::Process::new(pid as i32)
            .ok()?
            .stat()
            .ok()?;
        u32::try_from(stat.ppid).ok()
    }

    /// Runs `script` (with `$1` a file for pids) tracked, reaps it, and returns the pid it wrote.
    fn run_tracked(script: &str, pid_file: &std::path::Path, markers: Option<&Markers>) -> u32 {
        let mut command = Command::new("sh");
        command
            .args(["-c", script, "sh"])
            .arg(pid_file)
            .process_group(0);
        if let Some(markers) = markers {
            command.envs(markers.vars());
        }
        let mut parent =
            spawn_tracked(|| command.spawn(), |child| Some(child.id())).expect("spawn sh");
        assert!(parent.wait().unwrap().success());
        untrack(parent.id());
        read_pid(pid_file, "sleep")
    }

    #[test]
    fn tracking_is_scoped_to_the_spawn() {
        let spawned: io::Result<u32> = spawn_tracked(|| Ok(4_000_000), |pid| Some(*pid));
        assert!(tracked().contains(&spawned.unwrap()));
        untrack(4_000_000);
        assert!(!tracked().contains(&4_000_000));
        let failed: io::Result<u32> =
            spawn_tracked(|| Err(io::Error::other("no")), |pid| Some(*pid));
        assert!(failed.is_err());
    }

    #[test]
    fn an_escaped_orphan_is_reaped_and_a_tracked_child_is_left_to_its_owner() {
        if !isolated(
            "host::reaper::tests::an_escaped_orphan_is_reaped_and_a_tracked_child_is_left_to_its_owner",
        ) {
            return;
        }
        become_subreaper().unwrap();
        let me = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let escaped = run_tracked(
            r#"setsid sleep 30 & echo $! > "$1"; exit 0"#,
            &dir.path().join("escaped.pid"),
            None,
        );
        wait_until("the orphan reparents to us", || {
            ppid_of(escaped) == Some(me)
        });
        assert!(reap_orphans().is_empty(), "it still runs");

        // A tracked child that has exited stays a zombie for its owner.
        let mut owned = spawn_tracked(
            || Command::new("sh").args(["-c", "exit 7"]).spawn(),
            |child| Some(child.id()),
        )
        .unwrap();
        let owned_ticks = start_time(owned.id()).unwrap();
        wait_until("the tracked child exits", || {
            !is_same_process(owned.id(), owned_ticks)
        });

        // Our child, unreaped: its pid cannot have been reused.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(escaped as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let mut reaped = Vec::new();
        wait_until("the orphan is reaped", || {
            reaped.extend(reap_orphans());
            reaped.contains(&escaped)
        });
        assert_eq!(reaped, [escaped], "only the orphan");
        assert_eq!(owned.wait().unwrap().code(), Some(7), "the owner's status");
        untrack(owned.id());
    }

    #[test]
    fn sweep_ends_escaped_and_stubborn_processes_of_one_spawn_only() {
        if !isolated(
            "host::reaper::tests::sweep_ends_escaped_and_stubborn_processes_of_one_spawn_only",
        ) {
            return;
        }
        become_subreaper().unwrap();
        let topology = format!("test-{}", new_spawn_nonce());
        let markers = |spawn: &str| Markers {
            topology: topology.clone(),
            instance: "gw".into(),
            spawn: spawn.into(),
        };
        let (doomed, kept) = (markers(&new_spawn_nonce()), markers(&new_spawn_nonce()));
        let dir = tempfile::tempdir().unwrap();
        let escape = r#"setsid sleep 30 & echo $! > "$1"; exit 0"#;
        // Ignored signals stay ignored across exec: this sleep shrugs off SIGTERM.
        let stubborn = r#"trap '' TERM; setsid sleep 30 & echo $! > "$1"; exit 0"#;
        let escaped = run_tracked(escape, &dir.path().join("escaped"), Some(&doomed));
        let stubborn = run_tracked(stubborn, &dir.path().join("stubborn"), Some(&doomed));
        let spared = run_tracked(escape, &dir.path().join("spared"), Some(&kept));
        let mut unmarked = Spawned::new(Command::new("sleep").arg("30"));
        let spared_ticks = start_time(spared).unwrap();

        let started = Instant::now();
        let ended = sweep(
            &topology,
            None,
            std::slice::from_ref(&kept.spawn),
            Signal::SIGTERM,
            Duration::from_millis(300),
        );
        let mut expected = vec![escaped, stubborn];
        expected.sort_unstable();
        assert_eq!(ended, expected);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the stubborn one had its grace"
        );
        for pid in [escaped, stubborn] {
            assert_eq!(start_time(pid), None, "{pid} ended and was reaped");
        }
        assert!(
            is_same_process(spared, spared_ticks),
            "a kept spawn runs on"
        );
        assert!(!unmarked.has_exited(), "an unmarked process runs on");

        // Only that spawn, now: the one kept above.
        let ended = sweep(
            &topology,
            Some(&kept.spawn),
            &[],
            Signal::SIGTERM,
            Duration::from_secs(5),
        );
        assert_eq!(ended, [spared]);
        assert_eq!(start_time(spared), None);
        assert_eq!(unmarked.kill_and_reap().signal(), Some(9));
    }
}
