//! Live restore end to end on the built-in gateway: gateways outlive a `kill -9` of reef and keep
//! serving; the next `reef up` adopts exactly the ones its ledger proves are its own (same pid,
//! same start time, same spec), restarts the ones whose spec changed, stops the ones no longer
//! wanted, leaves unrelated processes alone, and distrusts a corrupt ledger. `reef down` stops a
//! topology through its running reef, or from the ledger when no reef runs.
//!
//! Every test runs in its own temporary HOME (so its own state dir, ledger, logs and control
//! socket) with base ports of its own (see [`Footprint`]). Nothing sleeps for a fixed time where
//! a condition can be awaited: conditions are polled every 50 ms with a 30 s deadline, and a
//! failure shows the last status seen. Nothing is left running, even on a panic: every `reef up`
//! is held by an [`Up`] guard (SIGTERM, SIGKILL after 15 s), and the [`Sandbox`] finally runs
//! `reef down SCRIPT` (which stops the ledger's gateways after a reef was killed) and, as a last
//! resort, SIGKILLs the process group of every gateway the test saw, if that gateway (same pid,
//! same start time) still runs.

mod common;

use std::collections::BTreeSet;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use common::{
    DEADLINE, Footprint, POLL, PortRange, Proc, Run, instance, instances, pid, pid_in,
    port_is_free, restarts, row, state,
};

/// reef status's exit code when no reef runs the topology.
const EXIT_NOT_RUNNING: i32 = 4;
/// What reef's status says of a gateway it took over, while it is not ready yet.
const ADOPTED_NOTE: &str = "adopted from a previous reef";

/// Base ports come from 10000..18000 in steps of 200 (one footprint of 111 ports with room to
/// spare). Other test binaries use other ranges. The range stays below Linux's ephemeral ports
/// (32768-60999 by default): a client connection's port lingers in TIME-WAIT for a minute after
/// it closes and blocks a gateway from binding it, which on a busy host (thousands of health
/// probes a minute) left a gateway `blocked` for the whole deadline.
const PORTS: PortRange = PortRange::new(10_000, 18_000, 200);

fn claim() -> Footprint {
    Footprint::claim_in(&PORTS)
}

// ---------------------------------------------------------------------------------------------
// Processes on the host, by pid and start time (as reef identifies them).

/// The fields of `/proc/PID/stat` after the command name: state is `[0]`, pgrp `[2]`, start
/// time in ticks `[19]`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// The start time of a live (non-zombie) process, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A process the test knows by pid and start time: a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Known {
    pid: u32,
    ticks: u64,
}

impl Known {
    /// The live process `pid`; panics if there is none.
    fn of(pid: u32, what: &str) -> Known {
        let ticks = start_ticks(pid).unwrap_or_else(|| panic!("{what} (pid {pid}) is not alive"));
        Known { pid, ticks }
    }

    /// Whether it still runs (a zombie does not).
    fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.ticks)
    }

    /// Whether it still runs and leads its own process group.
    fn leads_its_group(&self) -> bool {
        self.alive()
            && stat_fields(self.pid).and_then(|f| f.get(2).and_then(|g| g.parse::<u32>().ok()))
                == Some(self.pid)
    }

    fn raw(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid).expect("pids fit in i32"))
    }

    /// SIGKILL to its process group (a gateway leads its own), only if it is still that process.
    fn kill_group(&self) {
        if self.leads_its_group() {
            let _ = killpg(self.raw(), Signal::SIGKILL);
        }
    }

    fn wait_dead(&self, what: &str) {
        poll(&format!("{what} (pid {}) to end", self.pid), || {
            if self.alive() {
                Err(format!("pid {} is still alive", self.pid))
            } else {
                Ok(())
            }
        });
    }
}

/// Polls `check` every [`POLL`] until it succeeds; panics with its last complaint after
/// [`DEADLINE`].
fn poll<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check() {
            Ok(value) => return value,
            Err(complaint) if Instant::now() >= deadline => {
                panic!("timed out after {DEADLINE:?} waiting for {what}: {complaint}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn wait_ports_free(footprint: &Footprint) {
    for port in footprint.listening() {
        poll(&format!("port {port} to be free"), || {
            port_is_free(port)
                .then_some(())
                .ok_or_else(|| format!("port {port} is taken"))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// `GET http://127.0.0.1:PORT/PATH`: the status code and body (4xx/5xx are answers too).
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .map_err(|err| format!("GET :{port}{path}: {err}"))?;
    let code = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| format!("GET :{port}{path}: reading the body: {err}"))?;
    Ok((code, body))
}

/// Whether the gateway on `port` answers its liveness probe: 200 and `"ok":true`.
fn healthz(port: u16) -> Result<(), String> {
    let (code, body) = get(port, "/healthz")?;
    let json: Value = serde_json::from_str(&body).map_err(|err| {
        format!("GET :{port}/healthz answered {code} with no JSON ({err}): {body}")
    })?;
    if code == 200 && json["ok"] == true {
        Ok(())
    } else {
        Err(format!("GET :{port}/healthz answered {code}: {body}"))
    }
}

/// Probes `/healthz` on some ports over and over in a thread, noting every failure: for
/// asserting that no gateway was ever down.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u32, Vec<String>)>>,
}

impl HealthWatch {
    fn start(ports: &[u16]) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let ports = ports.to_vec();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            let mut failures = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for &port in &ports {
                    if let Err(err) = healthz(port) {
                        failures.push(err);
                    }
                }
                rounds += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (rounds, failures)
        });
        HealthWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing; returns how many rounds ran and every failure seen.
    fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the health watch does not panic")
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `sleep 300` leading its own process group: an unrelated live process whose pid a ledger
/// entry can point at. Were reef to signal it (or its group), it would die.
fn unrelated_sleeper(outputs: &Path) -> (Proc, Known) {
    let mut command = Command::new("sleep");
    command.arg("300").process_group(0);
    let sleeper = Proc::spawn(command, outputs, "sleep");
    let known = Known::of(sleeper.pid(), "the sleep");
    (sleeper, known)
}

fn assert_still_running(proc: &mut Proc, known: Known, what: &str) {
    assert!(
        proc.try_status().is_none() && known.alive(),
        "{what} (pid {}) was signalled: {:?}",
        known.pid,
        proc.try_status()
    );
}

// ---------------------------------------------------------------------------------------------
// Topologies.

/// `reef.gateway { profile = NAME, port = PORT, EXTRA }`.
fn gateway(name: &str, footprint: &Footprint, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "reef.gateway {{ profile = {name:?}, port = {}{extra} }}\n",
        footprint.base
    )
}

fn topology(gateways: &[String]) -> String {
    format!("local reef = require \"reef\"\n{}", gateways.concat())
}

/// The main + rescue pair, rescue depending on main.
fn pair(main: &Footprint, rescue: &Footprint) -> String {
    topology(&[
        gateway("main", main, ""),
        gateway("rescue", rescue, "depends_on = \"main\""),
    ])
}

// ---------------------------------------------------------------------------------------------
// A test's sandbox: a `tests/common` sandbox (temp HOME, script, outputs) that also remembers
// every gateway it saw.

struct Sandbox {
    inner: common::Sandbox,
    /// Every gateway process seen in a status or ledger: the last-resort cleanup kills these.
    gateways: Mutex<BTreeSet<Known>>,
}

impl Deref for Sandbox {
    type Target = common::Sandbox;

    fn deref(&self) -> &common::Sandbox {
        &self.inner
    }
}

impl Sandbox {
    fn new(script: &str) -> Sandbox {
        Sandbox {
            inner: common::Sandbox::new(script),
            gateways: Mutex::new(BTreeSet::new()),
        }
    }

    /// Replaces the topology script (as a user would while reef is away).
    fn rewrite(&self, script: &str) {
        self.edit_script(script);
    }

    /// `reef up SCRIPT` in the background.
    fn up(&self) -> Up {
        Up {
            proc: Proc::spawn(
                self.command(&["up", self.script()]),
                &self.outputs,
                "reef up",
            ),
        }
    }

    /// `reef status --json SCRIPT`: the status, or the failed run.
    fn status(&self) -> Result<Value, Run> {
        let run = self.run(&["status", "--json", self.script()]);
        if run.code != 0 {
            return Err(run);
        }
        let status: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("`reef status --json` printed no JSON ({err}):\n{run}"));
        for instance in instances(&status) {
            if let Some(pid) = pid_in(instance) {
                self.remember(pid);
            }
        }
        Ok(status)
    }

    /// Polls the status of the running reef `up` until `done` holds; returns that status.
    /// Panics with the last status (or error) when reef exits or the deadline passes.
    fn wait_for(&self, up: &mut Up, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = String::from("(no status yet)");
        loop {
            if let Some(status) = up.proc.try_status() {
                panic!(
                    "reef up exited ({status}) while waiting for {what}; last status:\n{last}{}",
                    up.proc.output()
                );
            }
            match self.status() {
                Ok(status) => {
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
                    up.proc.output()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every named instance is ready.
    fn wait_ready(&self, up: &mut Up, names: &[&str]) -> Value {
        self.wait_for(up, &format!("{names:?} to be ready"), |status| {
            names.iter().all(|name| state(status, name) == "ready")
        })
    }

    /// Notes a gateway process for the last-resort cleanup.
    fn remember(&self, pid: u32) {
        if let Some(ticks) = start_ticks(pid) {
            self.gateways
                .lock()
                .expect("the gateway set is not poisoned")
                .insert(Known { pid, ticks });
        }
    }

    /// The topology's state directory (created by the first `reef up`).
    fn state_dir(&self) -> PathBuf {
        let reef = self.home.join(".local/state/reef");
        let dirs: Vec<PathBuf> = std::fs::read_dir(&reef)
            .unwrap_or_else(|err| panic!("no state dir {}: {err}", reef.display()))
            .map(|entry| entry.expect("a dir entry").path())
            .collect();
        assert_eq!(dirs.len(), 1, "one topology, one state dir: {dirs:?}");
        dirs.into_iter().next().expect("one dir")
    }

    fn ledger_path(&self) -> PathBuf {
        self.state_dir().join("ledger.json")
    }

    /// The ledger as JSON; every gateway it lists is remembered for the cleanup.
    fn ledger(&self) -> Value {
        let path = self.ledger_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let ledger: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("the ledger is not JSON ({err}):\n{text}"));
        for entry in entries(&ledger) {
            self.remember(entry_pid(entry));
        }
        ledger
    }

    fn write_ledger(&self, text: &str) {
        std::fs::write(self.ledger_path(), text).expect("the ledger is written");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stops, from the ledger, whatever a killed reef left (after the `Up` guards, which are
        // dropped before the sandbox, stopped any running reef).
        let mut down = Proc::spawn(
            self.command(&["down", self.script()]),
            &self.outputs,
            "reef down (cleanup)",
        );
        down.end_within(DEADLINE);
        let gateways = self
            .gateways
            .lock()
            .map(|set| set.clone())
            .unwrap_or_default();
        for gateway in &gateways {
            gateway.kill_group();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while gateways.iter().any(Known::alive) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}

/// A running `reef up`; dropping it stops reef (SIGTERM, SIGKILL after 15 s).
struct Up {
    proc: Proc,
}

impl Up {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `kill -9` of reef; returns once it is dead.
    fn kill_9(mut self) {
        self.proc.signal(Signal::SIGKILL);
        let status = self.proc.wait();
        assert!(status.code().is_none(), "reef was killed, yet {status}");
    }

    /// SIGTERM to reef; returns its exit code.
    fn terminate(&mut self) -> i32 {
        self.proc.terminate_code()
    }

    fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

// ---------------------------------------------------------------------------------------------
// Reading statuses and ledgers (see also `tests/common`).

fn adopted(status: &Value, name: &str) -> bool {
    instance(status, name)["adopted"]
        .as_bool()
        .unwrap_or_else(|| panic!("`{name}` has no `adopted`: {status:#}"))
}

fn started_at(status: &Value, name: &str) -> f64 {
    instance(status, name)["started_at"]
        .as_f64()
        .unwrap_or_else(|| panic!("`{name}` has no `started_at`: {status:#}"))
}

/// Whether `name` is ready and was taken over from a previous reef.
fn ready_and_adopted(status: &Value, name: &str) -> bool {
    state(status, name) == "ready" && adopted(status, name)
}

/// Whether `name` is ready in a process that is not `old`.
fn ready_anew(status: &Value, name: &str, old: u32) -> bool {
    state(status, name) == "ready" && pid_in(instance(status, name)) != Some(old)
}

fn entries(ledger: &Value) -> &Vec<Value> {
    ledger["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("a ledger has `entries`: {ledger:#}"))
}

fn entry_pid(entry: &Value) -> u32 {
    entry["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("a ledger entry has a pid: {entry:#}"))
}

/// The ledger's entries as (name, pid), sorted.
fn ledger_pids(ledger: &Value) -> Vec<(String, u32)> {
    let mut pids: Vec<(String, u32)> = entries(ledger)
        .iter()
        .map(|entry| {
            (
                entry["name"]
                    .as_str()
                    .expect("entries have names")
                    .to_owned(),
                entry_pid(entry),
            )
        })
        .collect();
    pids.sort();
    pids
}

/// Starts the pair main + rescue, waits until both are ready, and kills reef with SIGKILL.
/// Returns the gateways (by name) as they ran and the last status of the killed reef.
fn pair_left_behind(sandbox: &Sandbox) -> (Known, Known, Value) {
    let mut first = sandbox.up();
    let status = sandbox.wait_ready(&mut first, &["main", "rescue"]);
    let main = Known::of(pid(&status, "main"), "main");
    let rescue = Known::of(pid(&status, "rescue"), "rescue");
    first.kill_9();
    (main, rescue, status)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn gateways_outlive_a_killed_reef_and_the_next_reef_adopts_and_supervises_them() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let mut first = sandbox.up();
    let before = sandbox.wait_ready(&mut first, &["main", "rescue"]);
    let main = Known::of(pid(&before, "main"), "main");
    let rescue = Known::of(pid(&before, "rescue"), "rescue");
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![("main".into(), main.pid), ("rescue".into(), rescue.pid)],
        "the ledger lists both gateways"
    );

    // From here on, every gateway is probed every 20 ms: none may ever be down.
    let watch = HealthWatch::start(&[main_ports.base, rescue_ports.base]);
    first.kill_9();
    for (gateway, footprint) in [(main, &main_ports), (rescue, &rescue_ports)] {
        assert!(gateway.alive(), "pid {} died with reef", gateway.pid);
        healthz(footprint.base).expect("a gateway answers after reef was killed");
    }
    assert!(
        sandbox.ledger_path().exists(),
        "a killed reef leaves its ledger"
    );

    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "both gateways adopted and ready", |s| {
        ready_and_adopted(s, "main") && ready_and_adopted(s, "rescue")
    });
    let (rounds, failures) = watch.finish();
    assert!(rounds > 0, "the health watch ran");
    assert!(
        failures.is_empty(),
        "a gateway was down while reef was killed and restarted: {failures:#?}"
    );
    let second_started = after["started_at"].as_f64().expect("reef's start time");
    for (name, gateway) in [("main", main), ("rescue", rescue)] {
        assert_eq!(pid(&after, name), gateway.pid, "`{name}` keeps its pid");
        assert!(gateway.alive(), "`{name}` is the very same process");
        assert_eq!(restarts(&after, name), 0, "`{name}` was not restarted");
        let original = started_at(&before, name);
        let adopted_at = started_at(&after, name);
        assert!(
            (adopted_at - original).abs() <= 0.05 && adopted_at < second_started,
            "`{name}` started at {original} under the first reef, but the second reef (started \
             at {second_started}) shows {adopted_at} ({:+.3} s)",
            adopted_at - original
        );
    }
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![("main".into(), main.pid), ("rescue".into(), rescue.pid)],
        "the new reef's ledger lists the adopted gateways"
    );

    // An adopted gateway is supervised: a crash is noticed (within a second, says the README;
    // 2 s leaves room for the status poll on a loaded host) and it comes back.
    kill(main.raw(), Signal::SIGKILL).expect("the adopted main can be killed");
    let killed = Instant::now();
    sandbox.wait_for(
        &mut second,
        "the crash of adopted main to be noticed",
        |s| !(state(s, "main") == "ready" && pid_in(instance(s, "main")) == Some(main.pid)),
    );
    let noticed_after = killed.elapsed();
    assert!(
        noticed_after < Duration::from_secs(2),
        "the exit of an adopted gateway was noticed only after {noticed_after:?}"
    );
    let restarted = sandbox.wait_for(&mut second, "main to be ready again", |s| {
        ready_anew(s, "main", main.pid)
    });
    let new_main = Known::of(pid(&restarted, "main"), "the restarted main");
    assert_eq!(restarts(&restarted, "main"), 1);
    assert!(
        !adopted(&restarted, "main"),
        "a restarted gateway is reef's own"
    );
    assert_eq!(pid(&restarted, "rescue"), rescue.pid, "rescue is untouched");
    assert!(ready_and_adopted(&restarted, "rescue"));
    healthz(main_ports.base).expect("the restarted main answers");
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![("main".into(), new_main.pid), ("rescue".into(), rescue.pid)],
        "the ledger follows the restart"
    );

    // A clean stop of reef still stops every gateway, adopted or not.
    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    for gateway in [main, new_main, rescue] {
        gateway.wait_dead("a gateway after SIGTERM to reef");
    }
    wait_ports_free(&main_ports);
    wait_ports_free(&rescue_ports);
    assert!(
        !sandbox.ledger_path().exists(),
        "a clean stop removes the ledger"
    );
}

/// The pair is left behind by a killed reef, the script is changed by `edit`, and a new reef
/// comes up: `changed` is restarted (its old process stopped first), the other one adopted.
fn only_the_changed_gateway_restarts(
    edit: impl FnOnce(&Footprint, &Footprint) -> String,
    changed: &str,
    moved_to: Option<&Footprint>,
) {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (main, rescue, _) = pair_left_behind(&sandbox);
    sandbox.rewrite(&edit(&main_ports, &rescue_ports));
    let (old, kept, kept_name) = if changed == "main" {
        (main, rescue, "rescue")
    } else {
        (rescue, main, "main")
    };

    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "the changed gateway to be ready anew", |s| {
        ready_anew(s, changed, old.pid) && ready_and_adopted(s, kept_name)
    });
    old.wait_dead("the gateway whose spec changed");
    assert!(
        !adopted(&after, changed),
        "`{changed}` changed: started, not adopted"
    );
    assert_ne!(pid(&after, changed), old.pid);
    assert_eq!(pid(&after, kept_name), kept.pid, "`{kept_name}` is kept");
    assert!(kept.alive());
    assert_eq!(restarts(&after, kept_name), 0);
    let stderr = second.stderr();
    assert!(
        stderr.contains("changed its spec while reef was away"),
        "reef says why it restarts `{changed}`:\n{stderr}"
    );
    if let Some(footprint) = moved_to {
        assert_eq!(
            instance(&after, changed)["ports"]["gateway"],
            json!(footprint.base)
        );
        healthz(footprint.base).expect("the moved gateway answers on its new port");
    }
    let new = Known::of(pid(&after, changed), "the restarted gateway");
    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    new.wait_dead("the restarted gateway");
    kept.wait_dead("the adopted gateway");
}

#[test]
fn an_env_change_while_reef_was_away_restarts_only_that_gateway() {
    only_the_changed_gateway_restarts(
        |main, rescue| {
            topology(&[
                gateway("main", main, ""),
                gateway(
                    "rescue",
                    rescue,
                    "depends_on = \"main\", env = { REEF_TEST_FLAVOUR = \"salty\" }",
                ),
            ])
        },
        "rescue",
        None,
    );
}

#[test]
fn a_port_change_while_reef_was_away_restarts_only_that_gateway() {
    let moved = claim();
    only_the_changed_gateway_restarts(
        |_, rescue| {
            topology(&[
                gateway("main", &moved, ""),
                gateway("rescue", rescue, "depends_on = \"main\""),
            ])
        },
        "main",
        Some(&moved),
    );
}

#[test]
fn an_instance_removed_while_reef_was_away_is_stopped_and_the_rest_adopted() {
    let ports = [claim(), claim(), claim()];
    let three = topology(&[
        gateway("alpha", &ports[0], ""),
        gateway("beta", &ports[1], ""),
        gateway("gamma", &ports[2], ""),
    ]);
    let sandbox = Sandbox::new(&three);
    let mut first = sandbox.up();
    let before = sandbox.wait_ready(&mut first, &["alpha", "beta", "gamma"]);
    let [alpha, beta, gamma] =
        ["alpha", "beta", "gamma"].map(|name| Known::of(pid(&before, name), name));
    first.kill_9();

    sandbox.rewrite(&topology(&[
        gateway("alpha", &ports[0], ""),
        gateway("beta", &ports[1], ""),
    ]));
    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "alpha and beta adopted", |s| {
        ready_and_adopted(s, "alpha") && ready_and_adopted(s, "beta")
    });
    gamma.wait_dead("the gateway no longer in the topology");
    wait_ports_free(&ports[2]);
    assert_eq!(instances(&after).len(), 2);
    assert_eq!(pid(&after, "alpha"), alpha.pid);
    assert_eq!(pid(&after, "beta"), beta.pid);
    assert!(alpha.alive() && beta.alive());
    let stderr = second.stderr();
    assert!(
        stderr.contains("is no longer in the topology"),
        "reef says why it stops gamma:\n{stderr}"
    );
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![("alpha".into(), alpha.pid), ("beta".into(), beta.pid)],
        "the ledger no longer lists gamma"
    );
    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    alpha.wait_dead("alpha");
    beta.wait_dead("beta");
}

#[test]
fn an_instance_disabled_while_reef_was_away_is_stopped_and_the_rest_adopted() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (main, rescue, _) = pair_left_behind(&sandbox);
    sandbox.rewrite(&topology(&[
        gateway("main", &main_ports, ""),
        gateway("rescue", &rescue_ports, "enabled = false"),
    ]));
    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "main adopted, rescue stopped", |s| {
        ready_and_adopted(s, "main") && state(s, "rescue") == "stopped"
    });
    rescue.wait_dead("the disabled gateway");
    wait_ports_free(&rescue_ports);
    assert_eq!(pid(&after, "main"), main.pid);
    assert!(pid_in(instance(&after, "rescue")).is_none());
    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    main.wait_dead("main");
}

#[test]
fn a_ledger_entry_pointing_at_an_unrelated_process_is_left_alone() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (mut sleeper, sleep) = unrelated_sleeper(&sandbox.outputs);
    let (main, rescue, _) = pair_left_behind(&sandbox);

    // rescue dies while reef is away, and its pid number now belongs to another process (the
    // sleep, with another start time). A stale entry for an instance no longer declared points
    // at the sleep too: trusting either would signal it.
    rescue.kill_group();
    rescue.wait_dead("rescue, killed by the test");
    wait_ports_free(&rescue_ports);
    let mut ledger = sandbox.ledger();
    let impostor_ticks = sleep.ticks + 1;
    let mut ghost = Value::Null;
    for entry in ledger["entries"].as_array_mut().expect("entries") {
        if entry["name"] == "rescue" {
            entry["pid"] = json!(sleep.pid);
            entry["start_ticks"] = json!(impostor_ticks);
            ghost = entry.clone();
        }
    }
    ghost["name"] = json!("ghost");
    ghost["spec_hash"] = json!("0123456789abcdef");
    ledger["entries"]
        .as_array_mut()
        .expect("entries")
        .push(ghost);
    sandbox.write_ledger(&serde_json::to_string_pretty(&ledger).expect("JSON prints"));

    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "main adopted and rescue started", |s| {
        ready_and_adopted(s, "main") && ready_anew(s, "rescue", sleep.pid)
    });
    assert_still_running(&mut sleeper, sleep, "the unrelated sleep");
    assert_eq!(pid(&after, "main"), main.pid);
    let new_rescue = pid(&after, "rescue");
    assert_ne!(new_rescue, rescue.pid);
    assert!(!adopted(&after, "rescue"), "rescue was started fresh");
    assert_eq!(restarts(&after, "rescue"), 0);
    healthz(rescue_ports.base).expect("the new rescue answers");
    let stderr = second.stderr();
    for name in ["rescue", "ghost"] {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains("left alone") && line.contains(name)),
            "reef says it leaves `{name}`'s pid alone:\n{stderr}"
        );
    }
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![("main".into(), main.pid), ("rescue".into(), new_rescue)],
        "the stale entries are gone from the ledger"
    );

    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    main.wait_dead("main");
    assert_still_running(&mut sleeper, sleep, "the unrelated sleep");
    sleeper.end();
}

#[test]
fn down_without_a_running_reef_stops_exactly_the_ledgers_gateways() {
    let (main_ports, rescue_ports, foreign_ports) = (claim(), claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));

    // A gateway outside the topology, in a process group of its own, with its own state dir.
    let mut foreign_command =
        sandbox.command(&["gateway", "--port", &foreign_ports.base.to_string()]);
    foreign_command
        .env(
            "OPENCLAW_STATE_DIR",
            sandbox.tmp.path().join("foreign-state"),
        )
        .process_group(0);
    let mut foreign = Proc::spawn(foreign_command, &sandbox.outputs, "foreign gateway");
    let foreign_known = Known::of(foreign.pid(), "the foreign gateway");
    poll("the foreign gateway to answer", || {
        healthz(foreign_ports.base)
    });

    let (main, rescue, _) = pair_left_behind(&sandbox);
    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(down.code, 0, "{down}");
    let lines: BTreeSet<&str> = down.stdout.lines().collect();
    let main_line = format!("main: stopped pid {}", main.pid);
    let rescue_line = format!("rescue: stopped pid {}", rescue.pid);
    assert_eq!(
        lines,
        BTreeSet::from([main_line.as_str(), rescue_line.as_str()]),
        "one line per gateway:\n{down}"
    );
    assert_eq!(down.stdout.lines().count(), 2, "{down}");
    for gateway in [main, rescue] {
        assert!(
            !gateway.alive(),
            "`reef down` returns once pid {} is gone",
            gateway.pid
        );
    }
    wait_ports_free(&main_ports);
    wait_ports_free(&rescue_ports);
    assert!(!sandbox.ledger_path().exists(), "the ledger is removed");
    assert_still_running(&mut foreign, foreign_known, "the foreign gateway");
    healthz(foreign_ports.base).expect("the foreign gateway still answers");

    let again = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("nothing to stop"), "{again}");
    assert_still_running(&mut foreign, foreign_known, "the foreign gateway");
    assert_eq!(foreign.terminate_code(), 0, "{}", foreign.output());
}

#[test]
fn down_with_a_running_reef_ends_it_and_every_gateway_adopted_or_not() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (main, rescue, _) = pair_left_behind(&sandbox);
    // rescue is restarted (changed spec), main adopted: down stops both kinds.
    sandbox.rewrite(&topology(&[
        gateway("main", &main_ports, ""),
        gateway(
            "rescue",
            &rescue_ports,
            "depends_on = \"main\", args = { \"--startup-delay\", \"0.1\" }",
        ),
    ]));
    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "main adopted, rescue started", |s| {
        ready_and_adopted(s, "main") && ready_anew(s, "rescue", rescue.pid)
    });
    let new_rescue = Known::of(pid(&after, "rescue"), "the new rescue");

    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(down.code, 0, "{down}");
    assert!(down.stdout.contains("stopped 2 gateway(s)"), "{down}");
    assert_eq!(second.proc.exit_code(), 0, "{}", second.proc.output());
    for gateway in [main, rescue, new_rescue] {
        gateway.wait_dead("a gateway after `reef down`");
    }
    wait_ports_free(&main_ports);
    wait_ports_free(&rescue_ports);
    assert!(!sandbox.ledger_path().exists(), "the ledger is removed");
    let status = sandbox.run(&["status", "--json", sandbox.script()]);
    assert_eq!(
        status.code, EXIT_NOT_RUNNING,
        "no reef runs any more: {status}"
    );
    let json: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["serving"], serde_json::json!([]), "{status}");
}

#[test]
fn a_corrupt_ledger_is_reported_kept_aside_and_never_trusted() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (mut sleeper, sleep) = unrelated_sleeper(&sandbox.outputs);
    let (main, rescue, _) = pair_left_behind(&sandbox);

    // The gateways are gone; the ledger now lists, first, a live process (the sleep, with its
    // true start time) under a name no longer declared, then is cut short. Trusting what can
    // be read of it would stop the sleep.
    for gateway in [main, rescue] {
        gateway.kill_group();
        gateway.wait_dead("a gateway killed by the test");
    }
    wait_ports_free(&main_ports);
    wait_ports_free(&rescue_ports);
    let mut ledger = sandbox.ledger();
    let mut ghost = entries(&ledger)[0].clone();
    ghost["name"] = json!("ghost");
    ghost["pid"] = json!(sleep.pid);
    ghost["start_ticks"] = json!(sleep.ticks);
    ledger["entries"]
        .as_array_mut()
        .expect("entries")
        .insert(0, ghost);
    let text = serde_json::to_string_pretty(&ledger).expect("JSON prints");
    let truncated = &text[..text.len() - 60];
    sandbox.write_ledger(truncated);

    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "both gateways started fresh", |s| {
        ready_anew(s, "main", main.pid) && ready_anew(s, "rescue", rescue.pid)
    });
    let stderr = second.stderr();
    assert!(
        stderr.contains("corrupt"),
        "reef reports the corrupt ledger:\n{stderr}"
    );
    let kept = sandbox.state_dir().join("ledger.json.corrupt");
    assert_eq!(
        std::fs::read_to_string(&kept).expect("the corrupt ledger is kept aside"),
        truncated,
        "the corrupt ledger is kept as it was"
    );
    assert_still_running(&mut sleeper, sleep, "the process the corrupt ledger listed");
    for name in ["main", "rescue"] {
        assert!(!adopted(&after, name), "`{name}` was started, not adopted");
        assert_eq!(restarts(&after, name), 0);
    }
    let new_main = Known::of(pid(&after, "main"), "the new main");
    let new_rescue = Known::of(pid(&after, "rescue"), "the new rescue");
    assert_eq!(
        ledger_pids(&sandbox.ledger()),
        vec![
            ("main".into(), new_main.pid),
            ("rescue".into(), new_rescue.pid)
        ],
        "a fresh ledger replaces the corrupt one"
    );

    // `reef down` without a reef cannot read a corrupt ledger, but the markers in the
    // gateways' environment still prove which processes are the topology's: it stops those,
    // and only those.
    second.kill_9();
    sandbox.write_ledger("{\"format\": 1, \"script\": \"reef.lua\", \"entries\": [{\"na");
    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(down.code, 0, "{down}");
    assert!(down.stdout.contains("corrupt"), "{down}");
    assert!(down.stdout.contains("stopping by marker only"), "{down}");
    for gateway in [new_main, new_rescue] {
        gateway.wait_dead("a gateway of the topology after `reef down`");
    }
    assert_still_running(&mut sleeper, sleep, "the unrelated sleep");
    sleeper.end();
}

#[test]
fn status_shows_adopted_instances() {
    let (main_ports, slow_ports) = (claim(), claim());
    // `slow` never passes its readiness probe (the built-in gateway answers unknown paths
    // with a page, not `"ready":true`), so it stays `starting` for its 120 s start period.
    let sandbox = Sandbox::new(&topology(&[
        gateway("main", &main_ports, ""),
        gateway(
            "slow",
            &slow_ports,
            "health = { readiness_path = \"/never\" }",
        ),
    ]));
    let mut first = sandbox.up();
    let before = sandbox.wait_for(&mut first, "main ready, slow starting", |s| {
        state(s, "main") == "ready"
            && state(s, "slow") == "starting"
            && pid_in(instance(s, "slow")).is_some()
    });
    let main = Known::of(pid(&before, "main"), "main");
    let slow = Known::of(pid(&before, "slow"), "slow");
    for name in ["main", "slow"] {
        assert!(!adopted(&before, name), "the first reef started `{name}`");
    }
    first.kill_9();

    let mut second = sandbox.up();
    let after = sandbox.wait_for(&mut second, "both adopted", |s| {
        ready_and_adopted(s, "main") && state(s, "slow") == "starting" && adopted(s, "slow")
    });
    assert_eq!(after["pid"], json!(second.pid()), "the new reef answers");
    let reef_started = after["started_at"].as_f64().expect("reef's start time");
    for (name, gateway) in [("main", main), ("slow", slow)] {
        assert_eq!(pid(&after, name), gateway.pid);
        assert!(
            started_at(&after, name) < reef_started,
            "`{name}` started before this reef: {after:#}"
        );
        assert_eq!(restarts(&after, name), 0);
    }
    assert_eq!(
        instance(&after, "slow")["message"],
        json!(ADOPTED_NOTE),
        "{after:#}"
    );

    let table = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(table.code, 0, "{table}");
    let main_row = row(&table.stdout, "main");
    assert_eq!(
        main_row[1..=5],
        [
            "ready".to_owned(),
            main.pid.to_string(),
            "ok".to_owned(),
            "yes".to_owned(),
            "0".to_owned()
        ]
    );
    let slow_row = row(&table.stdout, "slow");
    assert_eq!(
        slow_row[1..=2],
        ["starting".to_owned(), slow.pid.to_string()]
    );
    let slow_line = table
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("slow "))
        .expect("a row for slow");
    assert!(
        slow_line.trim_end().ends_with(ADOPTED_NOTE),
        "the NOTE column says slow was adopted:\n{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains(&format!("reef pid {}, supervising", second.pid())),
        "{}",
        table.stdout
    );

    // An adopted gateway obeys control commands like any other.
    let stop = sandbox.run(&["stop", "slow", sandbox.script()]);
    assert_eq!(stop.code, 0, "{stop}");
    slow.wait_dead("the adopted slow after `reef stop slow`");
    let stopped = sandbox.wait_for(&mut second, "slow stopped", |s| {
        state(s, "slow") == "stopped"
    });
    assert!(
        !adopted(&stopped, "slow"),
        "a stopped instance is not adopted"
    );
    assert!(ready_and_adopted(&stopped, "main"));

    assert_eq!(second.terminate(), 0, "{}", second.stderr());
    main.wait_dead("main");
}

#[test]
fn the_status_table_marks_ready_adopted_gateways() {
    let (main_ports, rescue_ports) = (claim(), claim());
    let sandbox = Sandbox::new(&pair(&main_ports, &rescue_ports));
    let (main, rescue, _) = pair_left_behind(&sandbox);
    let mut second = sandbox.up();
    sandbox.wait_for(&mut second, "both gateways adopted", |s| {
        ready_and_adopted(s, "main") && ready_and_adopted(s, "rescue")
    });
    let table = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(table.code, 0, "{table}");
    for (name, gateway) in [("main", main), ("rescue", rescue)] {
        let line = table
            .stdout
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for `{name}`:\n{}", table.stdout));
        assert!(
            line.contains(&gateway.pid.to_string()) && line.contains("adopted"),
            "the row of the adopted, ready `{name}` says it was adopted:\n{}",
            table.stdout
        );
    }
    assert_eq!(second.terminate(), 0, "{}", second.stderr());
}
