//! Helpers for the host layer's tests: children that cannot outlive their test, and bounded
//! waits for conditions (never a fixed sleep as synchronization).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `condition` every few milliseconds until it holds; panics naming `what` after
/// [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child of the test, killed (by its pid, which it still holds as our unreaped child) and
/// reaped when dropped.
pub struct Spawned {
    child: Child,
    reaped: bool,
}

impl Spawned {
    /// Spawns and waits until the child's exec has finished (see [`wait_exec`]).
    pub fn new(command: &mut Command) -> Spawned {
        let spawned = Spawned {
            child: command.spawn().expect("spawn a test child"),
            reaped: false,
        };
        wait_exec(spawned.pid());
        spawned
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the child's exit.
    pub fn reap(&mut self) -> std::process::ExitStatus {
        self.reaped = true;
        self.child.wait().expect("wait for a test child")
    }

    pub fn kill_and_reap(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.reap()
    }

    /// Whether the child has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        let exited = matches!(self.child.try_wait(), Ok(Some(_)));
        self.reaped |= exited;
        exited
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `pid` has finished its exec (or exited). `spawn` returns as soon as the new
/// program's memory is in place, a moment before the kernel records where its arguments and
/// environment are: until then `/proc/PID/environ` reads as empty.
pub fn wait_exec(pid: u32) {
    wait_until("the child has exec'd", || {
        let Ok(process) = procfs::process::Process::new(pid as i32) else {
            return true;
        };
        let exited = process.stat().is_ok_and(|stat| stat.state == 'Z');
        exited || process.cmdline().is_ok_and(|argv| !argv.is_empty())
    });
}

/// Reads a pid a test child wrote to `path`, waiting until it is there and that process runs
/// `program` (a background job is a forked shell, then `setsid`, before it is `program`).
pub fn read_pid(path: &std::path::Path, program: &str) -> u32 {
    let mut pid = None;
    wait_until("the child wrote a pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .filter(|text| text.ends_with('\n'))
            .and_then(|text| text.trim().parse().ok());
        pid.is_some()
    });
    let pid = pid.expect("checked above");
    wait_until("the process runs its program", || {
        procfs::process::Process::new(pid as i32)
            .and_then(|process| process.stat())
            .is_ok_and(|stat| stat.comm == program)
    });
    wait_exec(pid);
    pid
}

/// Kills a process a test started (its pid read from the test's own file) if it is still
/// the one that started at `start_ticks`; for grandchildren that escaped their group.
pub fn kill_if_same(pid: u32, start_ticks: u64) {
    if super::identity::is_same_process(pid, start_ticks)
        && let Some(pid) = super::rustix_pid(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Runs a test's body in a fresh copy of the test binary, alone, and reports whether the
/// caller *is* that copy. For tests that change the whole process (reef as a subreaper) or reap
/// children they did not spawn, which would steal the exit statuses of the other tests'
/// children if they ran in the shared binary.
///
/// `name` is the test's full path (`host::reaper::tests::...`). In the shared binary this runs
/// the copy, asserts that it passed and returns `false`; in the copy it returns `true`.
pub fn isolated(name: &str) -> bool {
    const VAR: &str = "REEF_HOST_ISOLATED_TEST";
    if std::env::var(VAR).is_ok_and(|running| running == name) {
        return true;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(VAR, name)
        .output()
        .expect("run the isolated test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the isolated run of {name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    false
}
