//! Waiting for the exit of a process that is not reef's child (an adopted gateway, found in the
//! ledger after a restart of reef): nobody will hand reef its exit status, so reef watches.
//!
//! A pidfd turns readable when its process exits, and tokio's reactor waits on it like on a
//! socket: no thread, no polling. Where pidfds are missing (Linux before 5.3, a seccomp profile
//! that forbids them) the process's identity is polled instead.

use std::time::Duration;

/// How often a process without a pidfd is checked.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Waits for one process to exit.
pub struct ExitWatch {
    how: Watching,
}

enum Watching {
    #[cfg(target_os = "linux")]
    Pidfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    /// No pidfd: pid + start time, checked every [`POLL_EVERY`].
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Polling { pid: u32, start_ticks: u64 },
}

impl ExitWatch {
    /// Watches `pid`. Fails if the process is already gone, and (outside Linux) always, with
    /// `Unsupported`. Call it inside a tokio runtime: the pidfd joins its reactor.
    pub fn open(pid: u32) -> std::io::Result<ExitWatch> {
        #[cfg(target_os = "linux")]
        {
            use rustix::io::Errno;
            let gone = || std::io::Error::from(Errno::SRCH);
            let target = super::rustix_pid(pid).ok_or_else(gone)?;
            match rustix::process::pidfd_open(target, rustix::process::PidfdFlags::empty()) {
                Ok(fd) => {
                    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open for as
                    // long as it is registered (tokio's safe constructor is deprecated).
                    let fd = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(
                            fd,
                            tokio::io::Interest::READABLE,
                        )
                    }?;
                    Ok(ExitWatch {
                        how: Watching::Pidfd(fd),
                    })
                }
                Err(Errno::NOSYS | Errno::PERM) => {
                    let start_ticks = super::identity::start_time(pid).ok_or_else(gone)?;
                    Ok(ExitWatch {
                        how: Watching::Polling { pid, start_ticks },
                    })
                }
                Err(err) => Err(err.into()),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pid;
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "watching a process that is not our child needs Linux",
            ))
        }
    }

    /// Resolves once the process has exited (a zombie counts as exited).
    pub async fn exited(&self) {
        match &self.how {
            // Readable from the exit on, for good: no readiness to clear.
            #[cfg(target_os = "linux")]
            Watching::Pidfd(fd) => {
                let _ = fd.readable().await;
            }
            Watching::Polling { pid, start_ticks } => {
                while super::identity::is_same_process(*pid, *start_ticks) {
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::host::testing::{PATIENCE, Spawned};

    #[tokio::test(flavor = "current_thread")]
    async fn fires_when_the_process_ends_and_not_before() {
        let mut child = Spawned::new(Command::new("sleep").arg("30"));
        let watch = ExitWatch::open(child.pid()).unwrap();
        // A negative check can only be bounded: the watch stays pending while the process runs.
        let early = tokio::time::timeout(Duration::from_millis(50), watch.exited()).await;
        assert!(early.is_err(), "fired while the process runs");
        let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        tokio::time::timeout(PATIENCE, watch.exited())
            .await
            .expect("the exit is seen");
        child.reap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_gone_process_cannot_be_watched() {
        let mut child = Spawned::new(&mut Command::new("true"));
        let pid = child.pid();
        child.reap();
        assert!(ExitWatch::open(pid).is_err() || pid_reused(pid));
        assert!(ExitWatch::open(0).is_err());
    }

    /// Whether some newcomer took `pid` (then opening it rightly succeeds).
    fn pid_reused(pid: u32) -> bool {
        crate::host::identity::start_time(pid).is_some()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polling_fires_when_the_process_ends() {
        let mut child = Spawned::new(Command::new("sleep").arg("30"));
        let watch = ExitWatch {
            how: Watching::Polling {
                pid: child.pid(),
                start_ticks: crate::host::identity::start_time(child.pid()).unwrap(),
            },
        };
        let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        tokio::time::timeout(PATIENCE, watch.exited())
            .await
            .expect("the exit is seen by polling");
        child.reap();
    }
}
