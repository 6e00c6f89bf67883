//! Processes on the host that reef did not necessarily start: identity by start time, and
//! waiting for exit through a pidfd.
//!
//! A pid alone proves nothing after a restart of reef: pids are reused. A process is the one
//! reef started only if its pid is alive *and* its start time (field 22 of `/proc/PID/stat`,
//! in clock ticks since boot) matches what reef recorded.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;

/// A process's start time in clock ticks since boot, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: field 22 is the 20th of these.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `ticks`.
pub fn is_same_process(pid: u32, ticks: u64) -> bool {
    start_time(pid) == Some(ticks) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat[stat.rfind(')')? + 1..].to_owned();
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Whether any live (non-zombie) process belongs to process group `pgid`. A zombie leader whose
/// parent has not reaped it yet holds no ports and cannot be signalled away, so it does not count.
pub fn group_has_live_members(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        group == Some(pgid) && state != Some("Z")
    })
}

/// When a process started, in seconds since the Unix epoch, from its start ticks.
pub fn start_time_unix(ticks: u64) -> Option<f64> {
    let boot = boot_time()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot as f64 + ticks as f64 / hz as f64)
}

fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Waits for the exit of a process that is not our child (an adopted gateway): through a pidfd
/// (Linux 5.3 or newer), else by polling its identity.
pub struct ExitWatch {
    how: Watching,
}

enum Watching {
    Pidfd(AsyncFd<OwnedFd>),
    /// No pidfd (Linux before 5.3, or a seccomp profile that forbids it): poll the process's
    /// identity instead.
    Polling {
        pid: u32,
        start_ticks: u64,
    },
}

/// How often a polled process is checked.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl ExitWatch {
    /// Watches `pid`; fails only if the process is already gone.
    pub fn open(pid: u32) -> std::io::Result<ExitWatch> {
        match open_pidfd(pid) {
            Ok(fd) => Ok(ExitWatch {
                how: Watching::Pidfd(fd),
            }),
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Err(err),
            Err(_) => {
                let start_ticks = start_time(pid)
                    .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESRCH))?;
                Ok(ExitWatch {
                    how: Watching::Polling { pid, start_ticks },
                })
            }
        }
    }

    /// Resolves once the process has exited.
    pub async fn exited(&self) {
        match &self.how {
            // A pidfd turns readable when the process exits, and stays so.
            Watching::Pidfd(fd) => {
                let _ = fd.readable().await;
            }
            Watching::Polling { pid, start_ticks } => {
                while is_same_process(*pid, *start_ticks) {
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
        }
    }
}

fn open_pidfd(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    let raw_pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open for its whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|err| std::io::Error::other(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn our_own_process_is_recognised_by_its_start_time() {
        let me = std::process::id();
        let ticks = start_time(me).unwrap();
        assert!(is_same_process(me, ticks));
        assert!(!is_same_process(me, ticks + 1));
        let started = start_time_unix(ticks).unwrap();
        assert!(started <= unix_now() && started > unix_now() - 3600.0 * 24.0 * 365.0);
    }

    #[test]
    fn our_own_group_has_a_live_member() {
        let group = nix::unistd::getpgrp().as_raw() as u32;
        assert!(group_has_live_members(group));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn exit_watch_fires_when_a_process_ends() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let watch = ExitWatch::open(child.id()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), watch.exited())
            .await
            .expect("the exit is seen");
        child.wait().unwrap();
    }
}
