//! `reef up` end to end on the built-in gateway: start-up in dependency order, `reef status`,
//! crash recovery, exit 78 not looped, a foreign listener (`blocked`), one reef per topology,
//! start/stop/restart, logs, and a clean stop on SIGTERM/SIGINT (dependents first). Also the
//! stop timeout's SIGKILL, probes that check the body, liveness failures, restart policies,
//! and `reef setup`.
//!
//! Every test runs in its own temporary HOME (so its own state dirs, logs and control socket)
//! with base ports of its own (see [`Footprint`]), writes its topology there, and runs `reef up`
//! in the background under an [`Up`] guard that stops it (SIGTERM, then SIGKILL after 15 s) even
//! when the test panics. Nothing sleeps for a fixed time where a state can be awaited: tests poll
//! `reef status --json` every 50 ms with a 30 s deadline and panic with the last status.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getsid};
use serde_json::Value;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);
/// How long a condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Exit codes (see `reef --help`).
const EXIT_VIOLATIONS: i32 = 1;
const EXIT_SCRIPT_ERROR: i32 = 2;
const EXIT_FAILURE: i32 = 3;

/// Environment variables that would leak the developer's setup into a test.
const SCRUBBED_VARS: &[&str] = &[
    "XDG_RUNTIME_DIR",
    "XDG_STATE_HOME",
    "OPENCLAW_HOME",
    "OPENCLAW_PROFILE",
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_GATEWAY_PORT",
    "REEF_SCRIPT",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------------
// Ports: one footprint per claim, never shared with a parallel test or test binary.

/// Base ports are handed out from `PORTS_FROM..PORTS_TO` (below Linux's ephemeral range) in
/// steps of `PORT_STEP`, which holds one footprint (111 ports) with room to spare.
const PORTS_FROM: u32 = 20_000;
const PORTS_TO: u32 = 32_000;
const PORT_STEP: u32 = 200;
const PORT_SLOTS: u32 = (PORTS_TO - PORTS_FROM) / PORT_STEP;

static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);

/// A base port claimed for one test, with its footprint `[base, base+110]`. The claim is a
/// flock on a file named after the port in a shared temp directory, so test binaries running
/// at the same time (this one, `tests/gateway.rs`, another checkout's) skip each other's
/// ports; the kernel drops it when the claim is dropped or the process ends.
struct Footprint {
    base: u16,
    _claim: Flock<File>,
}

impl Footprint {
    /// Claims the next free footprint. Each process starts at its own offset (from its pid),
    /// and a port whose gateway or browser-control port is in use is skipped.
    fn claim() -> Footprint {
        let dir = std::env::temp_dir().join("reef-tests-ports");
        std::fs::create_dir_all(&dir).expect("the port claim directory can be created");
        let offset = std::process::id().wrapping_mul(17) % PORT_SLOTS;
        for _ in 0..PORT_SLOTS * 2 {
            let slot = (offset + NEXT_SLOT.fetch_add(1, Ordering::Relaxed)) % PORT_SLOTS;
            let base = u16::try_from(PORTS_FROM + slot * PORT_STEP).expect("ports fit in u16");
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
        panic!("no free footprint in {PORTS_FROM}..{PORTS_TO}");
    }

    fn browser_control(&self) -> u16 {
        self.base + 2
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Processes started by the tests.

static NEXT_OUTPUT: AtomicU32 = AtomicU32::new(0);

/// A process a test started, its stdout and stderr captured in files (never a pipe nobody
/// reads). Dropping it ends it: SIGTERM, then SIGKILL after [`STOP_GRACE`].
struct Proc {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(mut command: Command, outputs: &Path, label: &str) -> Proc {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pids fit in i32"));
        kill(pid, signal)
            .unwrap_or_else(|err| panic!("cannot send {signal} to {}: {err}", self.label));
    }

    /// The exit status, if the process has ended.
    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait works");
        }
        self.status
    }

    /// Waits up to `limit` for the process to end.
    fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    /// Waits up to [`DEADLINE`] for the exit code; panics if it does not end or dies of a signal.
    fn exit_code(&mut self) -> i32 {
        match self.wait_within(DEADLINE) {
            Some(status) => status.code().unwrap_or_else(|| {
                panic!(
                    "{} died of a signal ({status}){}",
                    self.label,
                    self.output()
                )
            }),
            None => panic!(
                "{} did not exit within {DEADLINE:?}{}",
                self.label,
                self.output()
            ),
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, for failure messages.
    fn output(&self) -> String {
        format!(
            "\n--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.label,
            self.stdout(),
            self.label,
            self.stderr()
        )
    }

    /// Ends the process if it still runs; false if it had to be killed.
    fn end(&mut self) -> bool {
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
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
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

// ---------------------------------------------------------------------------------------------
// Topologies.

/// One `reef.gateway { ... }` of a generated topology (its profile is its name).
struct Gateway<'a> {
    name: &'a str,
    port: u16,
    depends_on: Option<&'a str>,
    args: &'a [&'a str],
}

/// A Lua string literal for ASCII `text` (Rust's escapes of `"` and `\` are Lua's too).
fn lua_string(text: &str) -> String {
    format!("{text:?}")
}

fn topology(gateways: &[Gateway<'_>]) -> String {
    let mut script = String::from("local reef = require \"reef\"\n");
    for gateway in gateways {
        let mut fields = vec![
            format!("profile = {}", lua_string(gateway.name)),
            format!("port = {}", gateway.port),
        ];
        if let Some(dependency) = gateway.depends_on {
            fields.push(format!("depends_on = {{ {} }}", lua_string(dependency)));
        }
        if !gateway.args.is_empty() {
            let args: Vec<String> = gateway.args.iter().map(|a| lua_string(a)).collect();
            fields.push(format!("args = {{ {} }}", args.join(", ")));
        }
        script.push_str(&format!("reef.gateway {{ {} }}\n", fields.join(", ")));
    }
    script
}

// ---------------------------------------------------------------------------------------------
// A test's sandbox: temp HOME, script, ports.

struct Sandbox {
    /// Holds everything; removed on drop (after the guards that use it).
    tmp: tempfile::TempDir,
    home: PathBuf,
    script: PathBuf,
    outputs: PathBuf,
}

impl Sandbox {
    /// A sandbox whose topology is `script` (written as `reef.lua` beside HOME).
    fn new(script: &str) -> Sandbox {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let home = tmp.path().join("home");
        let outputs = tmp.path().join("outputs");
        std::fs::create_dir(&home).expect("home");
        std::fs::create_dir(&outputs).expect("outputs dir");
        let path = tmp.path().join("reef.lua");
        std::fs::write(&path, script).expect("the script is written");
        Sandbox {
            tmp,
            home,
            script: path,
            outputs,
        }
    }

    /// The main + rescue pair on the given footprints, rescue depending on main, main with
    /// `main_args`.
    fn pair(main: &Footprint, rescue: &Footprint, main_args: &[&str]) -> Sandbox {
        Sandbox::new(&topology(&[
            Gateway {
                name: "main",
                port: main.base,
                depends_on: None,
                args: main_args,
            },
            Gateway {
                name: "rescue",
                port: rescue.base,
                depends_on: Some("main"),
                args: &[],
            },
        ]))
    }

    fn script(&self) -> &str {
        self.script.to_str().expect("temp paths are UTF-8")
    }

    /// `reef ARGS` in this sandbox's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reef"));
        command
            .args(args)
            .current_dir(self.tmp.path())
            .env("HOME", &self.home)
            .env("NO_COLOR", "1");
        for var in SCRUBBED_VARS {
            command.env_remove(var);
        }
        command
    }

    /// Runs `reef ARGS` to completion (within [`DEADLINE`]).
    fn run(&self, args: &[&str]) -> Run {
        let label = format!("reef {}", args.first().copied().unwrap_or_default());
        let mut proc = Proc::spawn(self.command(args), &self.outputs, &label);
        let code = proc.exit_code();
        Run {
            code,
            stdout: proc.stdout(),
            stderr: proc.stderr(),
        }
    }

    /// `reef up SCRIPT` in the background.
    fn up(&self) -> Up<'_> {
        Up {
            proc: Proc::spawn(
                self.command(&["up", self.script()]),
                &self.outputs,
                "reef up",
            ),
            sandbox: self,
            gateways: BTreeSet::new(),
        }
    }

    /// `reef status --json SCRIPT`: the status, or the failed run.
    fn status(&self) -> Result<Value, Run> {
        let run = self.run(&["status", "--json", self.script()]);
        if run.code != 0 {
            return Err(run);
        }
        Ok(serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("`reef status --json` printed no JSON ({err}):\n{run}")))
    }

    /// The config file of a profile, as OpenClaw places it.
    fn config_path(&self, profile: &str) -> PathBuf {
        self.home
            .join(format!(".openclaw-{profile}"))
            .join("openclaw.json")
    }
}

/// A running `reef up`; dropping it stops reef (SIGTERM, SIGKILL after 15 s). Should reef have
/// to be killed, the gateways it started (their pids as seen in its status; each leads its own
/// process group) are killed too, so no test leaves processes behind.
struct Up<'a> {
    proc: Proc,
    sandbox: &'a Sandbox,
    gateways: BTreeSet<u32>,
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
    /// Polls `reef status --json` until `done` holds for it; returns that status. Panics with
    /// the last status (or error) when reef exits or the deadline passes. `check` runs on every
    /// status seen, for what must hold throughout.
    fn wait_until_checking(
        &mut self,
        what: &str,
        mut check: impl FnMut(&Value),
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = String::from("(no status yet)");
        loop {
            if let Some(status) = self.proc.try_status() {
                panic!(
                    "reef up exited ({status}) while waiting for {what}; last status:\n{last}{}",
                    self.proc.output()
                );
            }
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
                    "timed out after {DEADLINE:?} waiting for {what}; last status:\n{last}{}",
                    self.proc.output()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn wait_until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_until_checking(what, |_| {}, done)
    }

    /// Waits until every instance is ready.
    fn wait_all_ready(&mut self) -> Value {
        self.wait_until("every instance to be ready", |status| {
            instances(status).iter().all(|i| i["state"] == "ready")
        })
    }

    /// Keeps polling until `seconds` have passed since `since` (a status timestamp), running
    /// `check` on every status: for asserting that nothing happens.
    fn observe_for(&mut self, seconds: f64, since: f64, check: impl FnMut(&Value)) -> Value {
        self.wait_until_checking(
            &format!("{seconds} s to pass while observing"),
            check,
            |_| unix_now() >= since + seconds,
        )
    }

    /// Sends `signal` to reef and returns its exit code (within [`DEADLINE`]).
    fn stop_with(&mut self, signal: Signal) -> i32 {
        self.proc.signal(signal);
        self.proc.exit_code()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading statuses.

fn instances(status: &Value) -> &Vec<Value> {
    status["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("a status has `instances`: {status:#}"))
}

fn instance<'a>(status: &'a Value, name: &str) -> &'a Value {
    instances(status)
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no instance `{name}` in {status:#}"))
}

fn state<'a>(status: &'a Value, name: &str) -> &'a str {
    instance(status, name)["state"]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` has a state: {status:#}"))
}

fn pid_in(instance: &Value) -> Option<u32> {
    instance["pid"].as_u64().map(|pid| pid as u32)
}

fn pid(status: &Value, name: &str) -> u32 {
    pid_in(instance(status, name)).unwrap_or_else(|| panic!("`{name}` has no pid: {status:#}"))
}

fn number(status: &Value, name: &str, field: &str) -> f64 {
    instance(status, name)[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{name}` has no number `{field}`: {status:#}"))
}

fn restarts(status: &Value, name: &str) -> u64 {
    instance(status, name)["restarts"]
        .as_u64()
        .unwrap_or_else(|| panic!("`{name}` has no `restarts`: {status:#}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Whether a process with this pid exists (zombies included).
fn process_exists(pid: u32) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), None).is_ok()
}

fn assert_gone(pid: u32, what: &str) {
    assert!(!process_exists(pid), "{what} (pid {pid}) is still alive");
}

fn assert_ports_free(footprint: &Footprint) {
    for port in [footprint.base, footprint.browser_control()] {
        assert!(port_is_free(port), "port {port} is still taken");
    }
}

/// The cells of the row of a human table whose first cell is `name`.
fn row(table: &str, name: &str) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// 1. Up, status, clean stop.

fn up_then_stop_with(signal: Signal) {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    assert_eq!(status["pid"], up.proc.pid(), "status names reef's pid");
    let main_pid = pid(&status, "main");
    let rescue_pid = pid(&status, "rescue");
    assert_ne!(main_pid, rescue_pid);
    for name in ["main", "rescue"] {
        let instance = instance(&status, name);
        assert_eq!(instance["ready"], true, "{status:#}");
        assert_eq!(instance["healthy"], true, "{status:#}");
        assert_eq!(instance["restarts"], 0, "{status:#}");
    }
    assert_eq!(instance(&status, "main")["ports"]["gateway"], main.base);
    assert_eq!(
        instance(&status, "rescue")["ports"]["browser_control"],
        rescue.browser_control()
    );

    // Each gateway leads its own session, so a terminal's Ctrl-C never reaches it directly.
    for gateway in [main_pid, rescue_pid] {
        let pid = Pid::from_raw(gateway as i32);
        assert_eq!(getsid(Some(pid)).expect("getsid"), pid, "gateway {gateway}");
    }

    let human = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(human.code, 0, "{human}");
    for (name, pid) in [("main", main_pid), ("rescue", rescue_pid)] {
        let cells = row(&human.stdout, name);
        assert_eq!(cells[1], "ready", "{human}");
        assert_eq!(cells[2], pid.to_string(), "{human}");
    }

    let code = up.stop_with(signal);
    assert_eq!(code, 0, "reef up exits 0 on {signal}{}", up.proc.output());
    // Dependents stop first: rescue (which depends on main) before main, as reef logs it.
    let log = up.proc.stderr();
    let stopped = |name: &str| {
        log.lines()
            .position(|line| line.contains("stopped") && line.contains(&format!("instance={name}")))
            .unwrap_or_else(|| panic!("reef logged no stop of `{name}`:\n{log}"))
    };
    assert!(
        stopped("rescue") < stopped("main"),
        "rescue must stop before main:\n{log}"
    );
    assert_gone(main_pid, "main's gateway");
    assert_gone(rescue_pid, "rescue's gateway");
    assert_ports_free(&main);
    assert_ports_free(&rescue);
    let after = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(
        after.code, EXIT_FAILURE,
        "no reef runs after a stop: {after}"
    );
}

#[test]
fn up_brings_both_gateways_to_ready_and_sigterm_stops_them_all() {
    up_then_stop_with(Signal::SIGTERM);
}

#[test]
fn sigint_stops_reef_and_every_gateway_cleanly() {
    up_then_stop_with(Signal::SIGINT);
}

// ---------------------------------------------------------------------------------------------
// 2. A crashed gateway comes back.

#[test]
fn a_killed_gateway_comes_back_ready_with_a_new_pid() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let old_main = pid(&before, "main");
    let rescue_pid = pid(&before, "rescue");

    kill(Pid::from_raw(old_main as i32), Signal::SIGKILL).expect("main's gateway can be killed");
    let after = up.wait_until_checking(
        "main to be ready again with a new pid",
        |status| {
            assert_eq!(
                instance(status, "rescue")["pid"],
                rescue_pid,
                "rescue keeps its pid while main restarts: {status:#}"
            );
        },
        |status| state(status, "main") == "ready" && pid(status, "main") != old_main,
    );
    assert_eq!(restarts(&after, "main"), 1, "{after:#}");
    assert_eq!(
        instance(&after, "main")["last_exit"],
        "signal 9 (SIGKILL)",
        "{after:#}"
    );
    assert_eq!(state(&after, "rescue"), "ready");
    assert_eq!(restarts(&after, "rescue"), 0, "{after:#}");
    assert_gone(old_main, "the killed gateway");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 3. Exit 78 is not looped.

#[test]
fn a_config_error_is_not_restarted_until_reef_restart() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let config = sandbox.config_path("rescue");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "{ gateway: ").unwrap();

    let mut up = sandbox.up();
    let failed = up.wait_until("main ready and rescue in config-error", |status| {
        state(status, "main") == "ready" && state(status, "rescue") == "config-error"
    });
    let main_pid = pid(&failed, "main");
    let rescue = instance(&failed, "rescue");
    assert_eq!(rescue["restarts"], 0, "{failed:#}");
    assert_eq!(rescue["pid"], Value::Null, "{failed:#}");
    assert_eq!(rescue["ready"], false, "{failed:#}");
    assert_eq!(rescue["last_exit"], "exit code 78", "{failed:#}");
    let message = rescue["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("reef restart rescue"),
        "the message says how to recover: {failed:#}"
    );

    // Nothing happens on its own: no restart, main undisturbed.
    let since = number(&failed, "rescue", "since");
    up.observe_for(1.0, since, |status| {
        assert_eq!(state(status, "rescue"), "config-error", "{status:#}");
        assert_eq!(
            restarts(status, "rescue"),
            0,
            "exit 78 was retried: {status:#}"
        );
        assert_eq!(state(status, "main"), "ready", "{status:#}");
        assert_eq!(pid(status, "main"), main_pid, "{status:#}");
    });

    std::fs::write(&config, "{}").unwrap();
    let restart = sandbox.run(&["restart", "rescue", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    let fixed = up.wait_until_checking(
        "rescue to be ready after the fix",
        |status| assert_eq!(pid(status, "main"), main_pid, "{status:#}"),
        |status| state(status, "rescue") == "ready",
    );
    assert_eq!(state(&fixed, "main"), "ready");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 4. A foreign listener blocks one instance, not the others.

#[test]
fn a_foreign_listener_blocks_only_its_instance_until_it_goes() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, rescue.base)).expect("bind");

    let mut up = sandbox.up();
    let blocked = up.wait_until("main ready and rescue blocked", |status| {
        state(status, "main") == "ready" && state(status, "rescue") == "blocked"
    });
    let main_pid = pid(&blocked, "main");
    let rescue_status = instance(&blocked, "rescue");
    assert_eq!(rescue_status["pid"], Value::Null, "{blocked:#}");
    let message = rescue_status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("port {}", rescue.base))
            && message.contains(&format!("pid {}", std::process::id())),
        "the message names the port and this test's pid {}: {blocked:#}",
        std::process::id()
    );
    let me = std::env::current_exe().expect("the test binary's path");
    assert!(
        message.contains(me.to_str().expect("UTF-8 path")),
        "the message names the holder's command {}: {blocked:#}",
        me.display()
    );

    drop(listener);
    let ready = up.wait_until_checking(
        "rescue to be ready once the port is free",
        |status| assert_eq!(pid(status, "main"), main_pid, "{status:#}"),
        |status| state(status, "rescue") == "ready",
    );
    assert_eq!(restarts(&ready, "rescue"), 0, "{ready:#}");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 5. One reef per topology.

#[test]
fn a_second_reef_up_on_the_same_script_refuses() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let before = up.wait_all_ready();

    let second = sandbox.run(&["up", sandbox.script()]);
    assert_eq!(second.code, EXIT_FAILURE, "{second}");
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&up.proc.pid().to_string()),
        "the refusal names the running reef (pid {}): {second}",
        up.proc.pid()
    );

    // The first one is undisturbed, its control socket included.
    let after = up.wait_all_ready();
    for name in ["main", "rescue"] {
        assert_eq!(pid(&after, name), pid(&before, name), "{after:#}");
    }
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 6. stop, start, restart.

#[test]
fn stop_start_and_restart_one_instance() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let main_pid = pid(&ready, "main");
    let first = pid(&ready, "rescue");
    let main_unchanged = |status: &Value| assert_eq!(pid(status, "main"), main_pid, "{status:#}");

    let stop = sandbox.run(&["stop", "rescue", sandbox.script()]);
    assert_eq!(stop.code, 0, "{stop}");
    assert!(stop.stdout.starts_with("rescue: stopped"), "{stop}");
    let stopped = up.wait_until("rescue to be stopped", |status| {
        state(status, "rescue") == "stopped"
    });
    assert_eq!(
        instance(&stopped, "rescue")["pid"],
        Value::Null,
        "{stopped:#}"
    );
    assert_gone(first, "the stopped gateway");
    assert_ports_free(&rescue);
    up.observe_for(1.0, number(&stopped, "rescue", "since"), |status| {
        assert_eq!(
            state(status, "rescue"),
            "stopped",
            "a stop is kept: {status:#}"
        );
        main_unchanged(status);
    });
    let again = sandbox.run(&["stop", "rescue", sandbox.script()]);
    assert_eq!(
        again.code, 0,
        "stopping a stopped instance is fine: {again}"
    );
    let running = sandbox.run(&["start", "main", sandbox.script()]);
    assert_eq!(running.code, 0, "{running}");
    assert!(running.stdout.contains("already running"), "{running}");

    let start = sandbox.run(&["start", "rescue", sandbox.script()]);
    assert_eq!(start.code, 0, "{start}");
    let started = up.wait_until_checking("rescue to be ready again", main_unchanged, |status| {
        state(status, "rescue") == "ready"
    });
    let second = pid(&started, "rescue");
    assert_ne!(second, first);

    let restart = sandbox.run(&["restart", "rescue", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    let restarted = up.wait_until_checking(
        "rescue to be ready with a new pid after a restart",
        main_unchanged,
        |status| state(status, "rescue") == "ready" && pid(status, "rescue") != second,
    );
    assert_gone(second, "the restarted gateway's old process");
    assert_eq!(state(&restarted, "main"), "ready");

    for verb in ["start", "stop", "restart"] {
        let unknown = sandbox.run(&[verb, "rescu", sandbox.script()]);
        assert_eq!(unknown.code, EXIT_FAILURE, "{unknown}");
        assert!(
            unknown.stderr.contains("did you mean `rescue`"),
            "`reef {verb}` of a typo suggests the name: {unknown}"
        );
    }
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 7. Logs.

#[test]
fn logs_show_the_reef_marker_and_the_gateways_own_output() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    up.wait_all_ready();

    let logs = sandbox.run(&["logs", "main", sandbox.script(), "-n", "2"]);
    assert_eq!(logs.code, 0, "{logs}");
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].starts_with("--- reef: starting ") && lines[0].contains("gateway --port"),
        "{logs}"
    );
    assert!(
        lines[1].contains(&format!("listening on ws://127.0.0.1:{}", main.base)),
        "{logs}"
    );

    let unknown = sandbox.run(&["logs", "mian", sandbox.script()]);
    assert_eq!(unknown.code, EXIT_FAILURE, "{unknown}");
    assert!(unknown.stderr.contains("did you mean `main`"), "{unknown}");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn logs_follow_prints_what_a_restarted_gateway_writes() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let first = pid(&ready, "rescue");

    let follow = Proc::spawn(
        sandbox.command(&["logs", "rescue", sandbox.script(), "-f", "-n", "1"]),
        &sandbox.outputs,
        "reef logs -f",
    );
    // The last line first; following starts right after it is printed.
    let deadline = Instant::now() + DEADLINE;
    while !follow.stdout().contains("listening on") {
        assert!(Instant::now() < deadline, "no tail{}", follow.output());
        std::thread::sleep(POLL);
    }
    assert!(!follow.stdout().contains("--- reef"), "{}", follow.output());

    let restart = sandbox.run(&["restart", "rescue", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    up.wait_until("rescue to be ready with a new pid", |status| {
        state(status, "rescue") == "ready" && pid(status, "rescue") != first
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = follow.stdout();
        if out.contains("reef gateway: stopping")
            && out.contains("--- reef: starting")
            && out.matches("listening on").count() == 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`reef logs -f` did not print the restart{}",
            follow.output()
        );
        std::thread::sleep(POLL);
    }
    drop(follow);
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 8. Clients without a reef.

#[test]
fn clients_say_when_no_reef_is_running() {
    let sandbox = Sandbox::new(&topology(&[Gateway {
        name: "main",
        port: 18789,
        depends_on: None,
        args: &[],
    }]));
    for args in [
        vec!["status", sandbox.script()],
        vec!["status", "--json", sandbox.script()],
        vec!["stop", "main", sandbox.script()],
    ] {
        let run = sandbox.run(&args);
        assert_eq!(run.code, EXIT_FAILURE, "reef {args:?}: {run}");
        assert!(
            run.stderr.contains("no reef is running"),
            "reef {args:?}: {run}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Dependency order.

#[test]
fn a_dependent_starts_only_after_its_dependency_is_ready() {
    let (main, rescue) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::pair(&main, &rescue, &["--startup-delay", "1"]);
    let launched = unix_now();
    let mut up = sandbox.up();
    let status = up.wait_until_checking(
        "both ready",
        |status| {
            if instance(status, "rescue")["pid"] != Value::Null {
                assert_eq!(
                    state(status, "main"),
                    "ready",
                    "rescue runs before main is ready: {status:#}"
                );
            }
        },
        |status| instances(status).iter().all(|i| i["state"] == "ready"),
    );
    let main_ready = number(&status, "main", "since");
    let rescue_started = number(&status, "rescue", "started_at");
    assert!(
        main_ready >= launched + 1.0,
        "main was ready at {main_ready}, less than its 1 s start-up delay after reef up was \
         launched at {launched}: {status:#}"
    );
    assert!(
        rescue_started >= main_ready,
        "rescue started at {rescue_started}, before main was ready at {main_ready}: {status:#}"
    );
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

// ---------------------------------------------------------------------------------------------
// 10. Bad topologies start nothing.

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/up/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn up_refuses_a_topology_with_violations_and_starts_nothing() {
    let sandbox = Sandbox::new("");
    let run = sandbox.run(&["up", &fixture("overlap.lua")]);
    assert_eq!(run.code, EXIT_VIOLATIONS, "{run}");
    assert!(run.stderr.contains("footprints of `main`"), "{run}");
    assert!(run.stderr.contains("no gateway was started"), "{run}");
    let left: Vec<_> = std::fs::read_dir(&sandbox.home).unwrap().collect();
    assert!(left.is_empty(), "reef up created {left:?} in HOME");
}

#[test]
fn up_reports_a_script_error_and_starts_nothing() {
    let sandbox = Sandbox::new("");
    let run = sandbox.run(&["up", &fixture("syntax_error.lua")]);
    assert_eq!(run.code, EXIT_SCRIPT_ERROR, "{run}");
    assert!(run.stderr.contains("syntax_error.lua:4"), "{run}");
    let left: Vec<_> = std::fs::read_dir(&sandbox.home).unwrap().collect();
    assert!(left.is_empty(), "reef up created {left:?} in HOME");
}

// ---------------------------------------------------------------------------------------------
// 11. reef setup.

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn setup_writes_private_minimal_configs_once() {
    let sandbox = Sandbox::new(&topology(&[
        Gateway {
            name: "main",
            port: 18789,
            depends_on: None,
            args: &[],
        },
        Gateway {
            name: "rescue",
            port: 19789,
            depends_on: Some("main"),
            args: &[],
        },
    ]));
    let first = sandbox.run(&["setup", sandbox.script()]);
    assert_eq!(first.code, 0, "{first}");

    let mut written = Vec::new();
    for (profile, port) in [("main", 18789), ("rescue", 19789)] {
        let state_dir = sandbox.home.join(format!(".openclaw-{profile}"));
        let config = sandbox.config_path(profile);
        assert_eq!(mode(&state_dir), 0o700, "{}", state_dir.display());
        assert_eq!(mode(&config), 0o600, "{}", config.display());
        let text = std::fs::read(&config).unwrap();
        let json: Value = serde_json::from_slice(&text).expect("the config is JSON");
        assert_eq!(json["gateway"]["port"], port, "{json:#}");
        assert_eq!(json["gateway"]["mode"], "local", "{json:#}");
        let token = json["gateway"]["auth"]["token"]
            .as_str()
            .unwrap_or_default();
        assert!(token.len() >= 16, "a token is pinned: {json:#}");
        written.push((config, text));
    }
    let (main_text, rescue_text) = (&written[0].1, &written[1].1);
    assert_ne!(main_text, rescue_text, "each instance gets its own token");

    let second = sandbox.run(&["setup", sandbox.script()]);
    assert_eq!(second.code, 0, "{second}");
    assert!(second.stdout.contains("kept the existing"), "{second}");
    for (config, text) in &written {
        assert_eq!(
            &std::fs::read(config).unwrap(),
            text,
            "{} was rewritten",
            config.display()
        );
        assert_eq!(mode(config), 0o600);
    }
}

// ---------------------------------------------------------------------------------------------
// 12. Stop timeouts, probes and restart policies.

#[test]
fn a_gateway_that_ignores_sigterm_is_killed_after_its_stop_timeout() {
    let main = Footprint::claim();
    // A process group whose leader ignores SIGTERM: the gateway inside exits on the group's
    // SIGTERM, the shell (and its `sleep`s, which inherit the ignored signal) stay.
    let shell = format!(
        "trap '' TERM INT; {} gateway --port {}; while :; do sleep 0.1; done",
        env!("CARGO_BIN_EXE_reef"),
        main.base
    );
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {}, command = {{ \"sh\", \"-c\", {} }},\n\
         \x20 stop = {{ timeout = 1 }} }}\n",
        main.base,
        lua_string(&shell)
    ));
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let leader = pid(&status, "main");

    let asked = Instant::now();
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "reef waited less than the stop timeout ({:?}){}",
        asked.elapsed(),
        up.proc.output()
    );
    assert!(
        up.proc.stderr().contains("SIGKILL"),
        "reef says it escalated to SIGKILL{}",
        up.proc.output()
    );
    assert_gone(leader, "the gateway's process group leader");
    // The `sleep`s were orphaned by the SIGKILL: they are dead but may linger as zombies until
    // the host's init reaps them, so the group's end is awaited.
    let deadline = Instant::now() + DEADLINE;
    while killpg(Pid::from_raw(leader as i32), None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gateway's process group {leader} survived"
        );
        std::thread::sleep(POLL);
    }
    assert_ports_free(&main);
}

#[test]
fn readiness_needs_a_json_body_not_just_a_200() {
    let main = Footprint::claim();
    // `/no-such-probe` answers 200 with an HTML page, like the real gateway's Control UI.
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {},\n\
         \x20 health = {{ readiness_path = \"/no-such-probe\", start_period = 60 }} }}\n",
        main.base
    ));
    let mut up = sandbox.up();
    let starting = up.wait_until("main to be starting", |status| {
        state(status, "main") == "starting"
    });
    let started_at = number(&starting, "main", "started_at");
    let gateway = pid(&starting, "main");
    // The probe runs every 100 ms: a second of 200 answers must not make it ready.
    up.observe_for(1.0, started_at, |status| {
        assert_eq!(state(status, "main"), "starting", "{status:#}");
        assert_eq!(instance(status, "main")["ready"], false, "{status:#}");
        assert_eq!(pid(status, "main"), gateway, "{status:#}");
    });
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
    assert_gone(gateway, "main's gateway");
}

#[test]
fn a_hung_gateway_fails_liveness_and_is_replaced() {
    let main = Footprint::claim();
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {},\n\
         \x20 health = {{ interval = 0.2, timeout = 0.2 }}, stop = {{ timeout = 1 }} }}\n",
        main.base
    ));
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let hung = pid(&ready, "main");
    kill(Pid::from_raw(hung as i32), Signal::SIGSTOP).expect("the gateway can be stopped");

    let unhealthy = up.wait_until("main to be unhealthy", |status| {
        state(status, "main") == "unhealthy"
    });
    assert_eq!(
        instance(&unhealthy, "main")["healthy"],
        false,
        "{unhealthy:#}"
    );
    assert_eq!(pid(&unhealthy, "main"), hung, "{unhealthy:#}");

    let replaced = up.wait_until("main to be ready with a new pid", |status| {
        state(status, "main") == "ready" && pid(status, "main") != hung
    });
    assert_eq!(restarts(&replaced, "main"), 1, "{replaced:#}");
    assert_eq!(
        instance(&replaced, "main")["last_exit"],
        "signal 9 (SIGKILL)",
        "a stopped process ignores SIGTERM until killed: {replaced:#}"
    );
    assert_gone(hung, "the hung gateway");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn restart_policies_never_and_on_failure_leave_an_ended_gateway_down() {
    let (never, on_failure) = (Footprint::claim(), Footprint::claim());
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"never\", port = {}, restart = {{ policy = \"never\" }} }}\n\
         reef.gateway {{ profile = \"onfail\", port = {}, restart = {{ policy = \"on-failure\" }} }}\n",
        never.base, on_failure.base
    ));
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let (crashed, ended) = (pid(&ready, "never"), pid(&ready, "onfail"));

    // Killed: a failure, but policy "never". Terminated cleanly (exit 0): no failure.
    kill(Pid::from_raw(crashed as i32), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(ended as i32), Signal::SIGTERM).unwrap();
    let down = up.wait_until("both to have exited", |status| {
        state(status, "never") == "exited" && state(status, "onfail") == "exited"
    });
    for (name, last_exit) in [("never", "signal 9 (SIGKILL)"), ("onfail", "exit code 0")] {
        let instance = instance(&down, name);
        assert_eq!(instance["last_exit"], last_exit, "{down:#}");
        assert_eq!(instance["pid"], Value::Null, "{down:#}");
        assert_eq!(instance["restarts"], 0, "{down:#}");
        let message = instance["message"].as_str().unwrap_or_default();
        assert!(message.contains("restart policy"), "{down:#}");
    }
    up.observe_for(1.0, number(&down, "never", "since"), |status| {
        assert_eq!(state(status, "never"), "exited", "{status:#}");
        assert_eq!(state(status, "onfail"), "exited", "{status:#}");
    });

    let start = sandbox.run(&["start", "never", sandbox.script()]);
    assert_eq!(start.code, 0, "{start}");
    up.wait_until("`never` to be ready after a manual start", |status| {
        state(status, "never") == "ready"
    });
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}
