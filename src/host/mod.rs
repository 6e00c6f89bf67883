//! The host layer: everything reef needs to know and do about processes on this machine, and
//! the only place that knows it runs on Linux.
//!
//! A pid proves nothing on its own: pids are reused, and gateways outlive a crashed reef. So a
//! process is reef's only with three proofs together: its pid, its start time (clock ticks
//! since boot, which a reused pid cannot share) and the marker variables reef put in its
//! environment, which every descendant inherits ([`markers`]). Signals go through a pidfd
//! opened *before* the last check ([`signal`]), so a pid recycled between check and signal is
//! never hit. While `reef up` runs, reef is a child subreaper ([`reaper`]): what escapes a
//! process group (`setsid`, a double fork) reparents to reef, where it can be found and reaped.
//!
//! - [`identity`]: start times, liveness, process groups.
//! - [`markers`]: the marker variables, reading them back, finding marked processes.
//! - [`signal`]: signalling a proven process, or a whole process group.
//! - [`exit_watch`]: waiting (async) for a process that is not our child to exit.
//! - [`reaper`]: subreaper, the registry of children reef waits for itself, orphan reaping and
//!   the sweep that ends marked processes.
//!
//! Everything here reads `/proc` through `procfs` and makes system calls through `rustix`. Every
//! function blocks (run it on a blocking thread) except [`exit_watch::ExitWatch::exited`]. Other
//! Unix systems compile, but their fallbacks find nothing and prove nothing (each says how):
//! reef's guarantees about processes hold on Linux only.

pub mod exit_watch;
pub mod identity;
pub mod markers;
pub mod reaper;
pub mod signal;
pub mod usage;

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod testing;

/// A pid as rustix takes it; `None` for 0 and for values no process can have.
#[cfg(target_os = "linux")]
fn rustix_pid(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// A `/proc/PID` handle. Reads through it concern that very process: once it has exited, they
/// fail instead of describing a newcomer that got the same pid.
#[cfg(target_os = "linux")]
fn proc_handle(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok().filter(|&p| p > 0)?).ok()
}

/// Makes a child get SIGKILL if reef dies while it runs, so no hook program or evaluation
/// outlives a crashed reef. Linux ties this to the *thread* that forks, not to reef as a whole:
/// callers spawn from a thread that lives until this child has ended. Grandchildren do not
/// inherit it (fork clears it); group kills and markers cover them.
#[cfg(target_os = "linux")]
pub fn end_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let reef = rustix::process::getpid();
    let hook = move || -> std::io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        // Had reef died before the line above, no signal would ever come: do not start.
        if rustix::process::getppid() != Some(reef) {
            return Err(rustix::io::Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe calls
    // are allowed: it makes two plain system calls and allocates nothing (an Errno converts to
    // an io::Error without allocating).
    unsafe {
        command.pre_exec(hook);
    }
}

/// Elsewhere nothing ends the child if reef dies.
#[cfg(not(target_os = "linux"))]
pub fn end_with_parent(_command: &mut std::process::Command) {}
