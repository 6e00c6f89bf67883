//! Helpers shared by the end-to-end test binaries (`tests/up.rs`, `tests/gateway.rs`,
//! `tests/restore.rs`, `tests/reload.rs`, `tests/hooks.rs`): port footprints claimed with file
//! locks, processes whose output goes to files and that end when dropped, a sandbox with a temp
//! HOME that runs `reef` in a clean environment, the [`Up`] guard around a background `reef up`
//! with status polling, and small readers of `reef status --json`.
//!
//! Each binary uses a part of it, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(50);
/// How long a condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Environment variables that would leak the developer's setup into a test.
pub const SCRUBBED_VARS: &[&str] = &[
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "OPENCLAW_HOME",
    "OPENCLAW_PROFILE",
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_GATEWAY_PORT",
    "REEF_SCRIPT",
    "REEF_DEBOUNCE_MS",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------------
// Ports: one footprint per claim, never shared with a parallel test or test binary.

/// The ports a footprint spans: `[base, base + FOOTPRINT - 1]`.
const FOOTPRINT: u32 = 111;

/// Where a test binary's base ports come from: `slots` bases, `step` apart, from `first`. Each
/// binary has a range of its own; the claim files also keep binaries that share one apart.
pub struct PortRange {
    first: u32,
    step: u32,
    slots: u32,
}

impl PortRange {
    /// Bases `from`, `from + step`, ... below `to`.
    pub const fn new(from: u32, to: u32, step: u32) -> PortRange {
        PortRange {
            first: from,
            step,
            slots: (to - from) / step,
        }
    }

    /// Odd bases `from + 1`, `from + 1 + step`, ... (`step` even) whose whole footprint lies
    /// below `to`: the gateway and browser-control ports are then odd too, which Linux's
    /// `connect()` (even ports first since 4.6) picks last for outgoing connections.
    pub const fn odd(from: u32, to: u32, step: u32) -> PortRange {
        PortRange {
            first: from + 1,
            step,
            slots: (to - from - FOOTPRINT) / step,
        }
    }
}

static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);

/// A base port claimed for one test, with its footprint `[base, base+110]`. The claim is a
/// flock on a file named after the port in a shared temp directory, so test binaries running
/// at the same time skip each other's ports; the kernel drops it when the claim is dropped or
/// the process ends.
pub struct Footprint {
    pub base: u16,
    _claim: Flock<File>,
}

impl Footprint {
    /// Claims the next free footprint in `range`. Each process starts at its own offset (from
    /// its pid), and a port whose gateway or browser-control port is in use is skipped.
    pub fn claim_in(range: &PortRange) -> Footprint {
        let dir = std::env::temp_dir().join("reef-tests-ports");
        std::fs::create_dir_all(&dir).expect("the port claim directory can be created");
        let offset = std::process::id().wrapping_mul(17) % range.slots;
        for _ in 0..range.slots * 2 {
            let slot = (offset + NEXT_SLOT.fetch_add(1, Ordering::Relaxed)) % range.slots;
            let base = u16::try_from(range.first + slot * range.step).expect("ports fit in u16");
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("{base}.lock")))
                .expect("a port claim file can be opened");
            let Ok(claim) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if port_is_free(base) && port_is_free(base + 2) {
                return Footprint {
                    base,
                    _claim: claim,
                };
            }
        }
        let last = range.first + (range.slots - 1) * range.step;
        panic!("no free footprint with a base in {}..={last}", range.first);
    }

    /// `N` footprints in `range`.
    pub fn claim_n<const N: usize>(range: &PortRange) -> [Footprint; N] {
        std::array::from_fn(|_| Footprint::claim_in(range))
    }

    pub fn browser_control(&self) -> u16 {
        self.base + 2
    }

    /// The ports a gateway listens on: the gateway port and browser control.
    pub fn listening(&self) -> [u16; 2] {
        [self.base, self.browser_control()]
    }
}

pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Processes started by the tests.

static NEXT_OUTPUT: AtomicU32 = AtomicU32::new(0);

/// A process a test started, its stdout and stderr captured in files (never a pipe nobody
/// reads). Dropping it ends it: SIGTERM, then SIGKILL after [`STOP_GRACE`].
pub struct Proc {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `command`, its outputs in `outputs/N-LABEL.stdout` and `.stderr`.
    pub fn spawn(mut command: Command, outputs: &Path, label: &str) -> Proc {
        let n = NEXT_OUTPUT.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{n}-{}", label.replace(' ', "-"));
        let stdout = outputs.join(format!("{stem}.stdout"));
        let stderr = outputs.join(format!("{stem}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {label}: {err}"));
        Proc {
            child,
            label: label.to_owned(),
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pids fit in i32"));
        kill(pid, signal)
            .unwrap_or_else(|err| panic!("cannot send {signal} to {}: {err}", self.label));
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait works");
        }
        self.status
    }

    /// Waits up to `limit` for the process to end.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to [`DEADLINE`] for the end; panics if it does not come.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(DEADLINE).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {DEADLINE:?}{}",
                self.label,
                self.output()
            )
        })
    }

    /// The exit code within `limit`; panics if it does not end or dies of a signal.
    pub fn exit_code_within(&mut self, limit: Duration) -> i32 {
        match self.wait_within(limit) {
            Some(status) => status.code().unwrap_or_else(|| {
                panic!(
                    "{} died of a signal ({status}){}",
                    self.label,
                    self.output()
                )
            }),
            None => panic!(
                "{} did not exit within {limit:?}{}",
                self.label,
                self.output()
            ),
        }
    }

    /// Waits up to [`DEADLINE`] for the exit code; panics if it does not end or dies of a signal.
    pub fn exit_code(&mut self) -> i32 {
        self.exit_code_within(DEADLINE)
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate_code(&mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        self.exit_code()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "\n--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.label,
            self.stdout(),
            self.label,
            self.stderr()
        )
    }

    /// Lets the process run up to `limit`, then kills it; never panics.
    pub fn end_within(&mut self, limit: Duration) {
        if self.wait_within(limit).is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Ends the process if it still runs; false if it had to be killed.
    pub fn end(&mut self) -> bool {
        if self.try_status().is_some() {
            return true;
        }
        if let Ok(pid) = i32::try_from(self.pid()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if self.wait_within(STOP_GRACE).is_some() {
            return true;
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.end();
    }
}

/// The finished run of a one-shot command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `reef ARGS` in a clean environment: `dir` as the working directory, `home` as HOME, no
/// colours, none of [`SCRUBBED_VARS`].
pub fn reef(args: &[&str], dir: &Path, home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reef"));
    command
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("NO_COLOR", "1");
    for var in SCRUBBED_VARS {
        command.env_remove(var);
    }
    command
}

// ---------------------------------------------------------------------------------------------
// Topologies.

/// A Lua string literal for ASCII `text` (Rust's escapes of `"` and `\` are Lua's too).
pub fn lua_string(text: &str) -> String {
    format!("{text:?}")
}

/// One `reef.gateway { ... }` line: profile `name`, `port` (a number or a Lua expression) and
/// `extra` fields (Lua, may be empty).
pub fn gateway(name: &str, port: impl std::fmt::Display, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "reef.gateway {{ profile = {}, port = {port}{extra} }}\n",
        lua_string(name)
    )
}

// ---------------------------------------------------------------------------------------------
// A test's sandbox: temp HOME, script, outputs.

pub struct Sandbox {
    /// Holds everything; removed on drop (after the guards that use it).
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    /// `reef.lua` beside HOME.
    pub script: PathBuf,
    /// Where the outputs of the processes a test starts go.
    pub outputs: PathBuf,
    /// `events.log`, where hooks may note what they saw (see `tests/hooks.rs`).
    pub events: PathBuf,
}

impl Sandbox {
    /// A sandbox with no script yet.
    pub fn empty() -> Sandbox {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let home = tmp.path().join("home");
        let outputs = tmp.path().join("outputs");
        std::fs::create_dir(&home).expect("home");
        std::fs::create_dir(&outputs).expect("outputs dir");
        let script = tmp.path().join("reef.lua");
        let events = tmp.path().join("events.log");
        Sandbox {
            tmp,
            home,
            script,
            outputs,
            events,
        }
    }

    /// A sandbox whose topology is `script` (written as `reef.lua` beside HOME).
    pub fn new(script: &str) -> Sandbox {
        let sandbox = Sandbox::empty();
        std::fs::write(&sandbox.script, script).expect("the script is written");
        sandbox
    }

    pub fn script(&self) -> &str {
        self.script.to_str().expect("temp paths are UTF-8")
    }

    /// A file in the sandbox, beside the script (e.g. `lib/ports.lua`).
    pub fn path(&self, relative: &str) -> PathBuf {
        self.tmp.path().join(relative)
    }

    /// The sandbox directory, symlinks resolved (what `pwd` prints inside it).
    pub fn dir(&self) -> PathBuf {
        self.tmp
            .path()
            .canonicalize()
            .expect("the temp dir resolves")
    }

    /// Saves `text` as the file at `relative` the plain way: one overwrite in place.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the module directory can be created");
        }
        std::fs::write(&path, text)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    }

    /// Overwrites the script in place.
    pub fn edit_script(&self, text: &str) {
        self.write("reef.lua", text);
    }

    /// Saves the script whole, the way many editors do: write `reef.lua.tmp` in the same
    /// directory, then rename it over the script (so a reload never reads half of it).
    pub fn rename_save_script(&self, text: &str) {
        let temp = self.path("reef.lua.tmp");
        std::fs::write(&temp, text).expect("the temp file is written");
        std::fs::rename(&temp, &self.script).expect("the temp file is renamed over the script");
    }

    /// The complete lines written to the events file so far (a line still being written is
    /// left out).
    pub fn events(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.events).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| line.trim_end_matches('\n').to_owned())
            .collect()
    }

    /// `reef ARGS` in this sandbox's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        reef(args, self.tmp.path(), &self.home)
    }

    /// Runs `reef ARGS` to completion (within [`DEADLINE`]).
    pub fn run(&self, args: &[&str]) -> Run {
        let label = format!("reef {}", args.first().copied().unwrap_or_default());
        let mut proc = Proc::spawn(self.command(args), &self.outputs, &label);
        let code = proc.exit_code();
        Run {
            code,
            stdout: proc.stdout(),
            stderr: proc.stderr(),
        }
    }

    /// Runs `reef ARGS SCRIPT` and expects exit 0.
    pub fn run_ok(&self, args: &[&str]) -> Run {
        let mut full = args.to_vec();
        full.push(self.script());
        let run = self.run(&full);
        assert_eq!(run.code, 0, "`reef {}` failed:\n{run}", args.join(" "));
        run
    }

    /// `reef up SCRIPT` in the background.
    pub fn up(&self) -> Up<'_> {
        self.up_with(&[])
    }

    /// `reef up OPTIONS SCRIPT` in the background.
    pub fn up_with(&self, options: &[&str]) -> Up<'_> {
        let mut args = vec!["up"];
        args.extend_from_slice(options);
        args.push(self.script());
        Up {
            proc: Proc::spawn(self.command(&args), &self.outputs, "reef up"),
            sandbox: self,
            gateways: BTreeSet::new(),
        }
    }

    /// `reef status --json SCRIPT`: the status, or the failed run.
    pub fn status(&self) -> Result<Value, Run> {
        let run = self.run(&["status", "--json", self.script()]);
        if run.code != 0 {
            return Err(run);
        }
        Ok(serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("`reef status --json` printed no JSON ({err}):\n{run}")))
    }

    /// The config file of a profile, as OpenClaw places it.
    pub fn config_path(&self, profile: &str) -> PathBuf {
        self.home
            .join(format!(".openclaw-{profile}"))
            .join("openclaw.json")
    }
}

/// A running `reef up`; dropping it stops reef (SIGTERM, SIGKILL after 15 s). Should reef have
/// to be killed, the gateways it started (their pids as seen in its status; each leads its own
/// process group) are killed too, so no test leaves processes behind.
pub struct Up<'a> {
    pub proc: Proc,
    pub sandbox: &'a Sandbox,
    pub gateways: BTreeSet<u32>,
}

impl Drop for Up<'_> {
    fn drop(&mut self) {
        if !self.proc.end() {
            for &pid in &self.gateways {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Up<'_> {
    /// Everything a failure message needs: the events file (if any), the last status, reef's
    /// output.
    pub fn context(&self, last_status: &str) -> String {
        let events = if self.sandbox.events.exists() {
            format!("\n--- events:\n{}", self.sandbox.events().join("\n"))
        } else {
            String::new()
        };
        format!(
            "{events}\n--- last status:\n{last_status}{}",
            self.proc.output()
        )
    }

    /// Panics if reef up has exited.
    pub fn assert_running(&mut self, what: &str, last_status: &str) {
        if let Some(status) = self.proc.try_status() {
            panic!(
                "reef up exited ({status}) while waiting for {what}{}",
                self.context(last_status)
            );
        }
    }

    /// Polls `reef status --json` until `done` holds for it; returns that status. Panics with
    /// the last status (or error) when reef exits or the deadline passes. `check` runs on every
    /// status seen, for what must hold throughout.
    pub fn wait_until_checking(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Value),
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = String::from("(no status yet)");
        loop {
            self.assert_running(what, &last);
            match self.sandbox.status() {
                Ok(status) => {
                    self.gateways
                        .extend(instances(&status).iter().filter_map(pid_in));
                    check(&status);
                    if done(&status) {
                        return status;
                    }
                    last = serde_json::to_string_pretty(&status).expect("JSON prints");
                }
                Err(run) => last = run.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what}{}",
                    self.context(&last)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn wait_until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_until_checking(what, |_| {}, done)
    }

    /// Polls reef up's own output until `done` holds for it (hooks log there).
    pub fn wait_output(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.proc.output()) {
            self.assert_running(what, "(not polled)");
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what}{}",
                    self.context("(not polled)")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every instance is ready.
    pub fn wait_all_ready(&mut self) -> Value {
        self.wait_until("every instance to be ready", all_ready)
    }

    /// One status now (reef must be running).
    pub fn status(&mut self) -> Value {
        self.wait_until("a status", |_| true)
    }

    /// Keeps polling until `seconds` have passed since `since` (a status timestamp), running
    /// `check` on every status: for asserting that nothing happens.
    pub fn observe_for(&mut self, seconds: f64, since: f64, check: impl FnMut(&Value)) -> Value {
        self.wait_until_checking(
            &format!("{seconds} s to pass while observing"),
            check,
            |_| unix_now() >= since + seconds,
        )
    }

    /// Polls the events file until `done` holds for its lines; returns them.
    pub fn wait_events(&mut self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = self.sandbox.events();
            if done(&lines) {
                return lines;
            }
            self.assert_running(what, "(not polled)");
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what}{}",
                    self.context("(not polled)")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for a line of the events file that starts with `prefix`; returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let lines = self.wait_events(&format!("an event line starting with {prefix:?}"), |l| {
            l.iter().any(|line| line.starts_with(prefix))
        });
        lines
            .into_iter()
            .find(|line| line.starts_with(prefix))
            .expect("found above")
    }

    /// Polls reef up's stderr until `done` holds for it; returns it.
    pub fn wait_stderr(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stderr = self.proc.stderr();
            if done(&stderr) {
                return stderr;
            }
            self.assert_running(what, "(not polled)");
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what} in reef up's log{}",
                    self.context("(not polled)")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Remembers a gateway pid seen elsewhere than in a status (e.g. in an event).
    pub fn track(&mut self, pid: u32) {
        self.gateways.insert(pid);
    }

    /// Sends `signal` to reef and returns its exit code (within [`DEADLINE`]).
    pub fn stop_with(&mut self, signal: Signal) -> i32 {
        self.proc.signal(signal);
        self.proc.exit_code()
    }

    /// Stops reef with SIGTERM, expects exit 0, and checks that every gateway it ever showed
    /// is gone. Returns reef up's whole log.
    pub fn stop(mut self) -> String {
        let code = self.stop_with(Signal::SIGTERM);
        assert_eq!(code, 0, "reef up exits 0 on SIGTERM{}", self.proc.output());
        for &gateway in &self.gateways {
            assert_gone(gateway, "a gateway reef started");
        }
        self.proc.stderr()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading statuses.

pub fn instances(status: &Value) -> &Vec<Value> {
    status["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("a status has `instances`: {status:#}"))
}

pub fn find<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    instances(status).iter().find(|i| i["name"] == name)
}

pub fn instance<'a>(status: &'a Value, name: &str) -> &'a Value {
    find(status, name).unwrap_or_else(|| panic!("no instance `{name}` in {status:#}"))
}

pub fn names(status: &Value) -> Vec<&str> {
    instances(status)
        .iter()
        .map(|i| i["name"].as_str().expect("names are strings"))
        .collect()
}

pub fn state<'a>(status: &'a Value, name: &str) -> &'a str {
    instance(status, name)["state"]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` has a state: {status:#}"))
}

pub fn pid_in(instance: &Value) -> Option<u32> {
    instance["pid"].as_u64().map(|pid| pid as u32)
}

pub fn pid(status: &Value, name: &str) -> u32 {
    pid_in(instance(status, name)).unwrap_or_else(|| panic!("`{name}` has no pid: {status:#}"))
}

pub fn number(status: &Value, name: &str, field: &str) -> f64 {
    instance(status, name)[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{name}` has no number `{field}`: {status:#}"))
}

pub fn restarts(status: &Value, name: &str) -> u64 {
    instance(status, name)["restarts"]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` has no `restarts`: {status:#}"))
}

pub fn gateway_port(status: &Value, name: &str) -> u64 {
    instance(status, name)["ports"]["gateway"]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` has no gateway port: {status:#}"))
}

pub fn generation(status: &Value) -> u64 {
    status["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("a status has a `generation`: {status:#}"))
}

pub fn evaluations(status: &Value) -> u64 {
    status["evaluations"]
        .as_u64()
        .unwrap_or_else(|| panic!("a status has `evaluations`: {status:#}"))
}

/// Every instance is ready.
pub fn all_ready(status: &Value) -> bool {
    instances(status).iter().all(|i| i["state"] == "ready")
}

/// The cells of the row of a human table whose first cell is `name`.
pub fn row(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for `{name}` in:\n{table}"))
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Processes on the host.

/// Whether a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), None).is_ok()
}

pub fn assert_gone(pid: u32, what: &str) {
    assert!(!process_exists(pid), "{what} (pid {pid}) is still alive");
}
