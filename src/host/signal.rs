//! Signals that reach only what reef can prove is its own.
//!
//! A single process is signalled through a pidfd: reef opens it *first*, then checks pid, start
//! time and markers, then signals through it. The pidfd pins the process it was opened for, so
//! if that process exits and its pid is reused between the check and the signal, the signal
//! fails instead of hitting the newcomer. A process group is signalled with `killpg`: reef
//! created the group for a child it still holds, so the group id cannot have been reused.
//!
//! The public API takes nix's [`Signal`], as the rest of reef does.

use std::io;

pub use nix::sys::signal::Signal;

use super::identity;

/// Sends `signal` to `pid` if it is provably the process reef started for `topology` that
/// began at `start_ticks` (see [`super::markers::is_ours`]). `Ok(false)` when it is gone or not
/// ours; nothing is signalled then.
///
/// Kernels before 5.3 (or a seccomp profile) may lack pidfds; then the proof is checked just
/// before `kill(2)`, leaving the microseconds between the two open to pid reuse. Without
/// `/proc` nothing can be proven: `Unsupported`.
pub fn signal_process_if_ours(
    pid: u32,
    start_ticks: u64,
    topology: &str,
    signal: Signal,
) -> io::Result<bool> {
    match Proven::prove(pid, start_ticks, topology, None)? {
        Some(process) => process.send(signal),
        None => Ok(false),
    }
}

/// A process proven to be reef's, held (on Linux) by a pidfd, so that every signal sent through
/// it reaches that process or nothing.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // never proven there
pub(super) struct Proven {
    pub(super) pid: u32,
    pub(super) start_ticks: u64,
    #[cfg(target_os = "linux")]
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Proven {
    /// Opens `pid`, then checks that it is ours (with spawn nonce `spawn`, when given).
    /// `Ok(None)` when it is gone or not ours.
    #[cfg(target_os = "linux")]
    pub(super) fn prove(
        pid: u32,
        start_ticks: u64,
        topology: &str,
        spawn: Option<&str>,
    ) -> io::Result<Option<Proven>> {
        use rustix::io::Errno;
        let Some(target) = super::rustix_pid(pid) else {
            return Ok(None);
        };
        let pidfd = match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty())
        {
            Ok(fd) => Some(fd),
            Err(Errno::SRCH | Errno::INVAL) => return Ok(None),
            // No pidfds here: fall back to checking right before kill(2).
            Err(Errno::NOSYS | Errno::PERM) => None,
            Err(err) => return Err(err.into()),
        };
        // Checked after the pidfd is open: what passes now is what the pidfd holds.
        if !super::markers::is_ours(pid, start_ticks, topology, spawn) {
            return Ok(None);
        }
        Ok(Some(Proven {
            pid,
            start_ticks,
            pidfd,
        }))
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn prove(
        pid: u32,
        start_ticks: u64,
        topology: &str,
        spawn: Option<&str>,
    ) -> io::Result<Option<Proven>> {
        let _ = (pid, start_ticks, topology, spawn);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "proving a process is reef's needs Linux's /proc",
        ))
    }

    /// Sends `signal`; `Ok(false)` if the process has already exited.
    pub(super) fn send(&self, signal: Signal) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        {
            let signal = to_rustix(signal)?;
            let sent = match &self.pidfd {
                Some(pidfd) => rustix::process::pidfd_send_signal(pidfd, signal),
                None => match super::rustix_pid(self.pid) {
                    Some(pid) => rustix::process::kill_process(pid, signal),
                    None => return Ok(false),
                },
            };
            match sent {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::SRCH) => Ok(false),
                Err(err) => Err(err.into()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = signal;
            Ok(false)
        }
    }

    /// Whether the process still runs (a zombie does not).
    pub(super) fn is_alive(&self) -> bool {
        identity::is_same_process(self.pid, self.start_ticks)
    }
}

/// nix's signal as rustix names it. Real-time signals have no name in rustix: `InvalidInput`.
fn to_rustix(signal: Signal) -> io::Result<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(signal as i32).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{signal} cannot be sent here"),
        )
    })
}

/// Sends `signal` to process group `pgid`. A group that is already gone is fine. Group 0 (the
/// caller's), 1 and reef's own group are refused: stopping a gateway must never hit reef.
pub fn signal_group(pgid: u32, signal: Signal) {
    let Some(group) = foreign_group(pgid) else {
        tracing::warn!(pgid, %signal, "refused to signal reef's own or no process group");
        return;
    };
    let Ok(signal) = to_rustix(signal) else {
        tracing::warn!(pgid, %signal, "a signal rustix cannot send");
        return;
    };
    let _ = rustix::process::kill_process_group(group, signal);
}

/// `pgid` as a group reef may signal: neither 0 (the caller's group), 1, nor reef's own.
fn foreign_group(pgid: u32) -> Option<rustix::process::Pid> {
    let group = i32::try_from(pgid)
        .ok()
        .filter(|&raw| raw > 1)
        .and_then(rustix::process::Pid::from_raw)?;
    (group != rustix::process::getpgrp()).then_some(group)
}

/// Sends SIGCONT, then `signal`, to process group `pgid`. A stopped process keeps a SIGTERM
/// pending until it is continued; without SIGCONT a SIGSTOPped gateway would sit out the whole
/// stop timeout before its SIGKILL.
pub fn continue_and_signal_group(pgid: u32, signal: Signal) {
    signal_group(pgid, Signal::SIGCONT);
    if signal != Signal::SIGCONT {
        signal_group(pgid, signal);
    }
}

/// Whether any process of group `pgid` still runs (zombies do not count).
pub fn group_alive(pgid: u32) -> bool {
    let reachable = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|group| rustix::process::test_kill_process_group(group).is_ok());
    reachable && identity::group_has_live_members(pgid)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    use super::*;
    use crate::host::identity::start_time;
    use crate::host::markers::{Markers, new_spawn_nonce};
    use crate::host::testing::{Spawned, wait_until};

    fn marked_sleep(topology: &str) -> Spawned {
        let markers = Markers {
            topology: topology.into(),
            instance: "gw".into(),
            spawn: new_spawn_nonce(),
        };
        Spawned::new(
            Command::new("sleep")
                .arg("30")
                .envs(markers.vars())
                .process_group(0),
        )
    }

    #[test]
    fn a_proven_process_is_signalled() {
        let topology = format!("test-{}", new_spawn_nonce());
        let mut child = marked_sleep(&topology);
        let ticks = start_time(child.pid()).unwrap();
        assert!(signal_process_if_ours(child.pid(), ticks, &topology, Signal::SIGTERM).unwrap());
        assert_eq!(child.reap().signal(), Some(Signal::SIGTERM as i32));
        assert!(!signal_process_if_ours(child.pid(), ticks, &topology, Signal::SIGTERM).unwrap());
    }

    #[test]
    fn a_forged_identity_is_refused_and_not_signalled() {
        let topology = format!("test-{}", new_spawn_nonce());
        let mut marked = marked_sleep(&topology);
        let ticks = start_time(marked.pid()).unwrap();
        let mut unmarked = Spawned::new(Command::new("sleep").arg("30"));
        let unmarked_ticks = start_time(unmarked.pid()).unwrap();

        let refused = [
            (marked.pid(), ticks + 1, topology.as_str()),
            (marked.pid(), ticks.wrapping_sub(1), topology.as_str()),
            (marked.pid(), ticks, "another-topology"),
            (unmarked.pid(), unmarked_ticks, topology.as_str()),
            (0, 0, topology.as_str()),
        ];
        for (pid, ticks, topology) in refused {
            assert!(
                !signal_process_if_ours(pid, ticks, topology, Signal::SIGKILL).unwrap(),
                "pid {pid}, ticks {ticks}, topology {topology}"
            );
        }
        // Had a SIGKILL gone out above, it would have decided how they end: once sent, a
        // SIGKILL takes precedence over any later signal.
        assert!(signal_process_if_ours(marked.pid(), ticks, &topology, Signal::SIGTERM).unwrap());
        assert_eq!(marked.reap().signal(), Some(Signal::SIGTERM as i32));
        let unmarked_pid = nix::unistd::Pid::from_raw(unmarked.pid() as i32);
        nix::sys::signal::kill(unmarked_pid, Signal::SIGTERM).unwrap();
        assert_eq!(unmarked.reap().signal(), Some(Signal::SIGTERM as i32));
    }

    #[test]
    fn a_stopped_group_is_continued_and_ended() {
        let mut child = Spawned::new(Command::new("sleep").arg("30").process_group(0));
        let pgid = child.pid();
        assert!(group_alive(pgid));
        signal_group(pgid, Signal::SIGSTOP);
        wait_until("the group is stopped", || {
            procfs::process::Process::new(pgid as i32)
                .and_then(|p| p.stat())
                .is_ok_and(|s| s.state == 'T')
        });
        continue_and_signal_group(pgid, Signal::SIGTERM);
        assert_eq!(child.reap().signal(), Some(Signal::SIGTERM as i32));
        assert!(!group_alive(pgid));
    }

    #[test]
    fn reef_own_group_is_never_signalled() {
        let own = rustix::process::getpgrp().as_raw_pid() as u32;
        assert_eq!(foreign_group(own), None);
        assert_eq!(foreign_group(0), None);
        assert_eq!(foreign_group(1), None);
        assert_eq!(foreign_group(u32::MAX), None);
        assert!(group_alive(own));
    }
}
