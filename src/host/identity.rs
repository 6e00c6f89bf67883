//! Who a process is: its pid *and* its start time.
//!
//! Pids are reused, so a recorded pid alone may name a stranger after a restart of reef. The
//! start time (field 22 of `/proc/PID/stat`, clock ticks since boot) cannot be shared by the
//! old process and a newcomer with its pid, so pid + start time names one process for good.
//! Zombies count as gone: they hold no ports and no signal reaches them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A process's start time in clock ticks since boot, if it exists (zombies included: they still
/// have one). `None` on systems without `/proc`.
pub fn start_time(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        Some(super::proc_handle(pid)?.stat().ok()?.starttime)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Whether `pid` is alive, not a zombie, and the process that started at `start_ticks`. Always
/// `false` without `/proc`: nothing can be proven there.
pub fn is_same_process(pid: u32, start_ticks: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        super::proc_handle(pid)
            .and_then(|process| process.stat().ok())
            .is_some_and(|stat| stat.starttime == start_ticks && is_running(stat.state))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, start_ticks);
        false
    }
}

/// A `/proc/PID/stat` state of a process that still runs: not a zombie (`Z`), not dead (`X`).
#[cfg(target_os = "linux")]
pub(super) fn is_running(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// When a process started, in seconds since the Unix epoch, from its start ticks (for status
/// and the ledger). `None` without `/proc`.
pub fn start_time_unix(ticks: u64) -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let boot = procfs::boot_time_secs().ok()?;
        let hz = procfs::ticks_per_second();
        (hz > 0).then(|| boot as f64 + ticks as f64 / hz as f64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ticks;
        None
    }
}

/// Whether any live (non-zombie) process belongs to process group `pgid`. A zombie leader whose
/// parent has not reaped it yet holds no ports and cannot be signalled away, so it does not
/// count. Without `/proc` zombies cannot be told apart: any member that `kill(-pgid, 0)` reaches
/// counts.
pub fn group_has_live_members(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // Group 0 is the kernel threads', not a group reef could have made.
        let Some(pgid) = i32::try_from(pgid).ok().filter(|&pgid| pgid > 0) else {
            return false;
        };
        let Ok(processes) = procfs::process::all_processes() else {
            return false;
        };
        processes
            .flatten()
            .filter_map(|process| process.stat().ok())
            .any(|stat| stat.pgrp == pgid && is_running(stat.state))
    }
    #[cfg(not(target_os = "linux"))]
    {
        i32::try_from(pgid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|group| rustix::process::test_kill_process_group(group).is_ok())
    }
}

/// Now, in seconds since the Unix epoch (the unit of [`start_time_unix`]).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::host::testing::{Spawned, wait_until};

    #[test]
    fn our_own_process_is_recognised_by_its_start_time() {
        let me = std::process::id();
        let ticks = start_time(me).expect("our own start time");
        assert!(is_same_process(me, ticks));
        assert!(!is_same_process(me, ticks + 1), "a forged start time");
        let started = start_time_unix(ticks).expect("boot time");
        let now = unix_now();
        assert!(started <= now + 1.0 && started > now - 3600.0 * 24.0 * 365.0);
    }

    #[test]
    fn pid_zero_and_absurd_pids_are_nobody() {
        assert_eq!(start_time(0), None);
        assert_eq!(start_time(u32::MAX), None);
        assert!(!is_same_process(0, 0));
        assert!(!group_has_live_members(0));
        assert!(!group_has_live_members(u32::MAX));
    }

    #[test]
    fn a_zombie_is_not_the_same_process_and_its_group_has_no_live_member() {
        let mut child = Spawned::new(std::process::Command::new("true").process_group(0));
        let pid = child.pid();
        let ticks = start_time(pid).expect("a child just spawned has a start time");
        // `true` exits at once; unreaped, it stays a zombie with its start time.
        wait_until("`true` is a zombie", || !is_same_process(pid, ticks));
        assert_eq!(
            start_time(pid),
            Some(ticks),
            "a zombie keeps its start time"
        );
        assert!(!group_has_live_members(pid));
        child.reap();
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn a_group_with_a_running_member_is_live() {
        let mut child = Spawned::new(
            std::process::Command::new("sleep")
                .arg("30")
                .process_group(0),
        );
        assert!(group_has_live_members(child.pid()));
        child.kill_and_reap();
        assert!(!group_has_live_members(child.pid()));
    }

    use std::os::unix::process::CommandExt;
}
