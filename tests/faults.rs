//! Faults end to end: reef killed with SIGKILL at arbitrary instants (during start-up, right
//! after a script save that triggers a reload), a gateway command whose helper escapes its
//! process group, a gateway flooding its log, a SIGSTOPped gateway, the logs or state dir
//! deleted under a running reef, a forged ledger, and `reef down` without a reef.
//!
//! The oracle is the host itself: every process reef starts carries the marker variables
//! `REEF_TOPOLOGY` (the topology id, the name of its state dir), `REEF_INSTANCE` and `REEF_SPAWN`,
//! inherited by its descendants, and the kernel keeps them readable in `/proc/PID/environ`. So a
//! test can list *every* process of its topology, whether reef still knows it or not: a gateway
//! is one that leads its own session (pid == sid), anything else marked is a helper or a stray.
//!
//! Like the other end-to-end tests, each test has its own temporary HOME (so its own state dir,
//! ledger, logs and socket) and base ports of its own (see [`Footprint`]); conditions are polled
//! every 50 ms with a 30 s deadline. The only fixed sleeps are the random instants at which reef
//! is killed (test 1) and the flood's sampling period (test 3). Nothing is left behind, even on a panic: every `reef up` is held by an
//! `Up` guard, and the [`Cleanup`] guard runs `reef down` and then SIGKILLs, by pid, whatever
//! still carries the test's topology marker (only descendants of what the test started can).

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use common::{
    DEADLINE, Footprint, POLL, PortRange, Proc, Sandbox, Up, all_ready, gateway_port, instance,
    instances, lua_string, names, pid, pid_in, state,
};

/// This binary's base ports: 61000..65300 in steps of 150, above Linux's ephemeral range
/// (32768-60999 by default) so that no outgoing connection lingering in TIME-WAIT holds one, and
/// apart from every other test binary's range.
const PORTS: PortRange = PortRange::new(61_000, 65_300, 150);

fn claim() -> Footprint {
    Footprint::claim_in(&PORTS)
}

/// reef's own binary (what runs the built-in gateway inside the command gateways below).
const REEF: &str = env!("CARGO_BIN_EXE_reef");

/// The log rotation's bound: each file holds at most this much (`logs::ROTATE_AT`).
const ROTATE_AT: u64 = 10 << 20;
/// What a rotated copy may hold beyond it: what came during the copy (`copy_slack` in
/// `src/supervisor/logs.rs`).
const COPY_SLACK: u64 = ROTATE_AT / 16;

// ---------------------------------------------------------------------------------------------
// The host as the tests see it: processes by their marker variables.

/// A live process carrying a topology's markers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marked {
    pid: u32,
    ticks: u64,
    pgid: u32,
    sid: u32,
    comm: String,
    instance: String,
    spawn: String,
}

impl Marked {
    /// Whether it leads its own session: what reef spawned for a gateway (or a helper that
    /// called `setsid`).
    fn leads_session(&self) -> bool {
        self.pid == self.sid
    }
}

/// `/proc/PID/stat`: the command name and the fields after it (state is `[0]`, pgrp `[2]`,
/// session `[3]`, start time in ticks `[19]`, i.e. field 22 of the whole line).
fn stat_of(pid: u32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields = stat[close + 1..]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Some((comm, fields))
}

/// The start time of a live (non-zombie) process, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let (_, fields) = stat_of(pid)?;
    if matches!(fields.first().map(String::as_str), Some("Z" | "X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The single-letter state of a process (`S`, `R`, `T`...), if it exists.
fn process_state(pid: u32) -> Option<String> {
    stat_of(pid).and_then(|(_, fields)| fields.into_iter().next())
}

/// The variables a process was started with; `None` if it is gone or not ours to read.
fn environ_of(pid: u32) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        bytes
            .split(|b| *b == 0)
            .filter_map(|var| {
                let text = String::from_utf8_lossy(var);
                let (key, value) = text.split_once('=')?;
                Some((key.to_owned(), value.to_owned()))
            })
            .collect(),
    )
}

/// Every live process (zombies left out) whose environment says `REEF_TOPOLOGY=topology`, sorted
/// by pid. The test process itself carries no markers.
fn marked(topology: &str) -> Vec<Marked> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Marked> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let env = environ_of(pid)?;
            if env.get("REEF_TOPOLOGY").map(String::as_str) != Some(topology) {
                return None;
            }
            let (comm, fields) = stat_of(pid)?;
            if matches!(fields.first().map(String::as_str), Some("Z" | "X")) {
                return None;
            }
            Some(Marked {
                pid,
                ticks: fields.get(19)?.parse().ok()?,
                pgid: fields.get(2)?.parse().ok()?,
                sid: fields.get(3)?.parse().ok()?,
                comm,
                instance: env.get("REEF_INSTANCE").cloned().unwrap_or_default(),
                spawn: env.get("REEF_SPAWN").cloned().unwrap_or_default(),
            })
        })
        .collect();
    found.sort_by_key(|m| m.pid);
    found
}

/// The marked processes that lead their own session, by instance name (several per name if
/// there are several).
fn leaders(marked: &[Marked]) -> BTreeMap<String, Vec<u32>> {
    let mut leaders: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for process in marked.iter().filter(|m| m.leads_session()) {
        leaders
            .entry(process.instance.clone())
            .or_default()
            .push(process.pid);
    }
    leaders
}

fn describe(marked: &[Marked]) -> String {
    if marked.is_empty() {
        return "(none)".into();
    }
    marked
        .iter()
        .map(|m| {
            format!(
                "pid {} `{}` instance {} spawn {} pgid {} sid {}",
                m.pid, m.comm, m.instance, m.spawn, m.pgid, m.sid
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn raw(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"))
}

/// Whether the process that started at `ticks` still runs (a zombie does not).
fn alive(pid: u32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

/// Polls `check` every [`POLL`] until it succeeds; panics with its last complaint after `limit`.
fn poll_within<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(complaint) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}:\n{complaint}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn poll<T>(what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    poll_within(DEADLINE, what, check)
}

fn assert_none_marked(topology: &str, what: &str) {
    let left = marked(topology);
    assert!(
        left.is_empty(),
        "{what}: processes of the topology are left:\n{}",
        describe(&left)
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// `GET http://127.0.0.1:PORT/PATH`: status code and body.
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
        .map_err(|err| format!("GET :{port}{path}: {err}"))?;
    Ok((code, body))
}

/// Whether the gateway on `port` is ready: 200 and `"ready":true`.
fn readyz(port: u16) -> Result<(), String> {
    let (code, body) = get(port, "/readyz")?;
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if code == 200 && json["ready"] == true {
        Ok(())
    } else {
        Err(format!("GET :{port}/readyz answered {code}: {body}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The sandbox's topology on disk.

/// `~/.local/state/reef` of the sandbox (XDG_STATE_HOME is scrubbed).
fn state_root(sandbox: &Sandbox) -> PathBuf {
    sandbox.home.join(".local/state/reef")
}

/// The topology's id: the name of its state dir, if a `reef up` created it.
fn try_topology_id(sandbox: &Sandbox) -> Option<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(state_root(sandbox))
        .ok()?
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .collect();
    (dirs.len() == 1).then(|| dirs.pop().expect("one"))
}

/// Ends whatever a test leaves of its topology: `reef down SCRIPT` (through the running reef, or
/// from the ledger and markers), then SIGKILL by pid to every process still carrying the
/// topology's marker (only descendants of what the test started carry it). Dropped after the
/// `Up` guards (declare it before them), before the sandbox.
struct Cleanup<'a> {
    sandbox: &'a Sandbox,
    topology: RefCell<Option<String>>,
}

impl<'a> Cleanup<'a> {
    fn new(sandbox: &'a Sandbox) -> Cleanup<'a> {
        Cleanup {
            sandbox,
            topology: RefCell::new(None),
        }
    }

    /// The topology id (remembered: the state dir may be deleted later).
    fn topology(&self) -> String {
        self.try_topology()
            .expect("a `reef up` created the topology's state dir")
    }

    fn try_topology(&self) -> Option<String> {
        let mut known = self.topology.borrow_mut();
        if known.is_none() {
            *known = try_topology_id(self.sandbox);
        }
        known.clone()
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let topology = self.try_topology();
        let mut down = Proc::spawn(
            self.sandbox.command(&["down", self.sandbox.script()]),
            &self.sandbox.outputs,
            "reef down (cleanup)",
        );
        down.end_within(DEADLINE);
        if let Some(topology) = topology {
            for process in marked(&topology) {
                let _ = kill(raw(process.pid), Signal::SIGKILL);
            }
        }
    }
}

/// `reef up SCRIPT` in the background, not watched by a status poller: the one that gets killed.
fn spawn_up(sandbox: &Sandbox, label: &str) -> Proc {
    Proc::spawn(
        sandbox.command(&["up", sandbox.script()]),
        &sandbox.outputs,
        label,
    )
}

/// SIGKILL to a `reef up`; returns once it is dead.
fn kill_9(proc: &mut Proc) {
    proc.signal(Signal::SIGKILL);
    let status = proc.wait();
    assert!(status.code().is_none(), "reef was killed, yet {status}");
}

/// SIGTERM to a `reef up`: it exits 0, and once it has, no process of `topology` is left (not
/// even a gateway it adopted, which is not its child: reef must wait for those to end too).
/// Zombies do not count: an adopted gateway's parent is init, which reaps it when it likes.
fn stop_up(mut up: Up<'_>, topology: &str) {
    let code = up.stop_with(Signal::SIGTERM);
    assert_eq!(code, 0, "reef up exits 0 on SIGTERM{}", up.proc.output());
    assert_none_marked(topology, "after reef up ended on SIGTERM");
}

/// `reef ARGS SCRIPT`, expecting exit 0.
fn reef_ok(sandbox: &Sandbox, args: &[&str]) -> common::Run {
    sandbox.run_ok(args)
}

/// Waits until `name` is ready in a process other than `old`; returns that status.
fn wait_ready_anew(up: &mut Up<'_>, name: &str, old: u32) -> Value {
    up.wait_until(&format!("`{name}` ready in a new process"), |s| {
        state(s, name) == "ready" && pid_in(instance(s, name)).is_some_and(|p| p != old)
    })
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness for test 1.

/// xorshift64*: the delays of test 1 from a fixed seed (`REEF_FAULTS_SEED` overrides it), so a
/// failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

// ---------------------------------------------------------------------------------------------
// 1. reef killed at random instants.

/// What the script says (test 1): `c`'s port, and whether `b` has a startup delay argument.
#[derive(Debug, Clone, Copy)]
struct Spec {
    c_port: u16,
    b_delayed: bool,
}

fn three(a: u16, b: u16, spec: Spec) -> String {
    let b_args = if spec.b_delayed {
        ", args = { \"--startup-delay\", \"0.05\" }"
    } else {
        ""
    };
    format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"a\", port = {a} }}\n\
         reef.gateway {{ profile = \"b\", port = {b}, depends_on = \"a\"{b_args} }}\n\
         reef.gateway {{ profile = \"c\", port = {} }}\n",
        spec.c_port
    )
}

/// Waits until the running `up` shows exactly a, b and c, all ready on the script's ports, and
/// the host holds exactly one marked process per gateway (each leading its own session, the pid
/// the status shows) and nothing else marked.
fn converged(up: &mut Up<'_>, cleanup: &Cleanup<'_>, ports: [u16; 3], context: &str) {
    let expected: BTreeMap<&str, u16> = [("a", ports[0]), ("b", ports[1]), ("c", ports[2])].into();
    let status = up.wait_until(
        &format!("a, b and c ready on the script's ports ({context})"),
        |s| {
            names(s) == ["a", "b", "c"]
                && all_ready(s)
                && expected
                    .iter()
                    .all(|(name, port)| gateway_port(s, name) == u64::from(*port))
        },
    );
    let topology = cleanup.topology();
    let mut status = status;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = marked(&topology);
        let by_name = leaders(&found);
        let mut complaints = Vec::new();
        for name in expected.keys() {
            let shown = pid(&status, name);
            match by_name.get(*name).map(Vec::as_slice) {
                Some([only]) if *only == shown => {}
                other => complaints.push(format!(
                    "`{name}`: status shows pid {shown}, session leaders on the host: {other:?}"
                )),
            }
        }
        if by_name.len() != expected.len() {
            complaints.push(format!("gateways by name: {by_name:?}"));
        }
        let strays: Vec<&Marked> = found.iter().filter(|m| !m.leads_session()).collect();
        if !strays.is_empty() {
            complaints.push(format!(
                "{} marked process(es) besides the gateways",
                strays.len()
            ));
        }
        if complaints.is_empty() {
            for (name, port) in &expected {
                readyz(*port).unwrap_or_else(|err| panic!("`{name}` ({context}): {err}"));
            }
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{context}: the host does not hold exactly one process per gateway:\n{}\n\
                 --- marked processes:\n{}\n--- status:\n{status:#}{}",
                complaints.join("\n"),
                describe(&found),
                up.context("")
            );
        }
        std::thread::sleep(POLL);
        status = up.wait_until("a status", all_ready);
    }
}

#[test]
fn reef_killed_at_any_instant_of_start_up_or_reload_leaves_exactly_the_scripts_gateways() {
    const ITERATIONS: usize = 36;
    let seed = std::env::var("REEF_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_u64);
    let mut rng = Rng(seed | 1);
    let [pa, pb, pc, pc2] = [claim(), claim(), claim(), claim()];
    let mut spec = Spec {
        c_port: pc.base,
        b_delayed: false,
    };
    let sandbox = Sandbox::new(&three(pa.base, pb.base, spec));
    let cleanup = Cleanup::new(&sandbox);
    let started = Instant::now();
    let mut verifier: Option<Up<'_>> = None;
    let mut log = Vec::new();
    for iteration in 0..ITERATIONS {
        // Every fourth delay is under 50 ms: reef is killed while it evaluates, locks, reads the
        // ledger or forks its first gateway.
        let delay = Duration::from_millis(if iteration % 4 == 0 {
            rng.below(50)
        } else {
            rng.below(300)
        });
        // After the first round, every third is a reload killed midway.
        let reload = iteration % 3 == 2 && verifier.is_some();
        let kind = if reload {
            let mut up = verifier.take().expect("a running reef to reload");
            if iteration % 2 == 0 {
                spec.c_port = if spec.c_port == pc.base {
                    pc2.base
                } else {
                    pc.base
                };
            } else {
                spec.b_delayed = !spec.b_delayed;
            }
            sandbox.rename_save_script(&three(pa.base, pb.base, spec));
            std::thread::sleep(delay);
            kill_9(&mut up.proc);
            format!("reload to {spec:?}")
        } else {
            // The previous reef stopped cleanly (nothing left), or killed (its gateways are
            // left for the victim to adopt while it is killed in turn).
            let previous = match verifier.take() {
                Some(up) if iteration % 2 == 0 => {
                    stop_up(up, &cleanup.topology());
                    "after a clean stop"
                }
                Some(mut up) => {
                    kill_9(&mut up.proc);
                    "over a killed reef's gateways"
                }
                None => "from nothing",
            };
            let mut victim = spawn_up(&sandbox, "reef up (victim)");
            std::thread::sleep(delay);
            kill_9(&mut victim);
            format!("start-up {previous}")
        };
        let left = try_topology_id(&sandbox)
            .map(|topology| marked(&topology))
            .unwrap_or_default();
        let context = format!(
            "iteration {iteration} (seed {seed:#x}): killed {} ms into {kind}; left {:?}",
            delay.as_millis(),
            left.iter()
                .map(|m| format!("{}{}", m.instance, if m.leads_session() { "" } else { "*" }))
                .collect::<Vec<_>>()
        );
        log.push(context.clone());
        let mut up = sandbox.up();
        converged(&mut up, &cleanup, [pa.base, pb.base, spec.c_port], &context);
        verifier = Some(up);
    }
    let mut up = verifier.take().expect("the last reef runs");
    let topology = cleanup.topology();
    let down = reef_ok(&sandbox, &["down"]);
    assert_eq!(up.proc.exit_code(), 0, "{}", up.proc.output());
    assert_none_marked(&topology, &format!("after `reef down`:\n{down}"));
    eprintln!(
        "{ITERATIONS} faults in {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        log.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A helper that escapes its process group.

/// The marked processes other than the gateway `leader`: its escaped helpers.
fn helpers(topology: &str, leader: u32) -> Vec<Marked> {
    marked(topology)
        .into_iter()
        .filter(|m| m.pid != leader)
        .collect()
}

/// Waits until the gateway `leader` of spawn `spawn` has exactly one helper, of its own spawn;
/// checks on the way that there are never more than two (the old one may be on its way out).
fn one_helper(topology: &str, leader: u32, what: &str) -> Marked {
    let spawn = marked(topology)
        .into_iter()
        .find(|m| m.pid == leader)
        .unwrap_or_else(|| panic!("the gateway pid {leader} carries no marker ({what})"))
        .spawn;
    poll(&format!("exactly one escaped helper ({what})"), || {
        let found = helpers(topology, leader);
        assert!(
            found.len() <= 2,
            "escaped helpers pile up ({what}):\n{}",
            describe(&found)
        );
        match found.as_slice() {
            [one] if one.spawn == spawn && one.comm == "sleep" => Ok(one.clone()),
            _ => Err(format!(
                "gateway spawn {spawn}; helpers:\n{}",
                describe(&found)
            )),
        }
    })
}

#[test]
fn helpers_that_escape_their_group_are_ended_with_their_gateway_and_by_down() {
    let main = claim();
    let shell = format!(
        "setsid sleep 1000 & exec {REEF} gateway --port {}",
        main.base
    );
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {}, command = {{ \"sh\", \"-c\", {} }},\n\
         \x20 restart = {{ backoff = {{ initial = 0.1, max = 0.4 }} }} }}\n",
        main.base,
        lua_string(&shell)
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let topology = cleanup.topology();
    let mut gateway = pid(&status, "main");
    let mut helper = one_helper(&topology, gateway, "first start");
    assert!(
        helper.leads_session(),
        "the helper did not get a session of its own (setsid)"
    );

    // Restarts asked for, then crashes: each time the old helper is ended.
    for round in 0..6 {
        let how = if round < 3 {
            let run = reef_ok(&sandbox, &["restart", "main"]);
            format!("`reef restart main` #{round}: {}", run.stdout.trim())
        } else {
            kill(raw(gateway), Signal::SIGKILL).expect("the gateway can be killed");
            format!("kill -9 of the gateway #{round}")
        };
        let status = wait_ready_anew(&mut up, "main", gateway);
        gateway = pid(&status, "main");
        let old = helper;
        helper = one_helper(&topology, gateway, &how);
        assert!(
            !alive(old.pid, old.ticks),
            "the helper of the previous spawn (pid {}) survived {how}",
            old.pid
        );
    }

    // `reef down` through the running reef.
    let down = reef_ok(&sandbox, &["down"]);
    assert_eq!(up.proc.exit_code(), 0, "{}", up.proc.output());
    assert_none_marked(
        &topology,
        &format!("after `reef down` with reef running:\n{down}"),
    );
    drop(up);

    // A reef killed: its successor adopts the gateway and keeps its helper (same spawn)...
    let mut first = sandbox.up();
    let status = first.wait_all_ready();
    let gateway = pid(&status, "main");
    let helper = one_helper(&topology, gateway, "a fresh start");
    kill_9(&mut first.proc);
    drop(first);
    let mut second = sandbox.up();
    let status = second.wait_until("main adopted and ready", |s| {
        state(s, "main") == "ready" && instance(s, "main")["adopted"] == true
    });
    assert_eq!(pid(&status, "main"), gateway, "the gateway is adopted");
    assert_eq!(one_helper(&topology, gateway, "after adoption"), helper);

    // ...and `reef down` without a reef ends the gateway and its escaped helper.
    kill_9(&mut second.proc);
    drop(second);
    let down = reef_ok(&sandbox, &["down"]);
    assert_none_marked(
        &topology,
        &format!("after `reef down` without a running reef:\n{down}"),
    );
}

#[test]
fn an_escaped_helper_is_not_adopted_as_its_dead_gateway() {
    let main = claim();
    let shell = format!(
        "setsid sleep 1000 & exec {REEF} gateway --port {}",
        main.base
    );
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {}, command = {{ \"sh\", \"-c\", {} }} }}\n",
        main.base,
        lua_string(&shell)
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut first = sandbox.up();
    let status = first.wait_all_ready();
    let topology = cleanup.topology();
    let gateway = pid(&status, "main");
    let helper = one_helper(&topology, gateway, "first start");
    assert!(
        helper.leads_session(),
        "the helper did not get a session of its own (setsid)"
    );

    // reef is killed, then its gateway dies while no reef watches: only the helper is left,
    // leading its own session, with the spawn's markers.
    kill_9(&mut first.proc);
    drop(first);
    kill(raw(gateway), Signal::SIGKILL).expect("the gateway can be killed");
    poll("the gateway to end", || {
        if marked(&topology).iter().any(|m| m.pid == gateway) {
            Err(format!("pid {gateway} still runs"))
        } else {
            Ok(())
        }
    });

    // The next reef must see that the gateway is gone, end the helper as a leftover, and start
    // a new gateway; not take the `sleep` for the gateway.
    let mut second = sandbox.up();
    let status = second.wait_until("main ready in a new gateway", |s| {
        state(s, "main") == "ready"
            && pid_in(instance(s, "main")).is_some_and(|p| p != gateway && p != helper.pid)
    });
    assert_ne!(
        instance(&status, "main")["adopted"],
        true,
        "the escaped helper was adopted as the gateway: {status:#}"
    );
    assert!(
        !alive(helper.pid, helper.ticks),
        "the dead gateway's helper (pid {}) was kept",
        helper.pid
    );
    readyz(main.base).expect("the new gateway answers");
    one_helper(&topology, pid(&status, "main"), "the new gateway");
    stop_up(second, &topology);
}

// ---------------------------------------------------------------------------------------------
// 3. A log flood.

/// Bytes a process has written so far (`wchar` of `/proc/PID/io`).
fn written_by(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The sizes of the files of log `name` in `dir`: the live log, its numbered copies and a copy
/// being made (`.NAME.rotating`).
fn log_files(dir: &Path, name: &str) -> BTreeMap<String, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_str()?.to_owned();
            let ours = file.starts_with(name) || file.starts_with(&format!(".{name}"));
            let size = entry.metadata().ok()?.len();
            ours.then_some((file, size))
        })
        .collect()
}

#[test]
fn a_flooded_log_stays_within_its_rotation_bound() {
    const MIB: u64 = 1 << 20;
    let main = claim();
    let shell = format!(
        "yes xxxxxxxxxxxxxxxxxxxxxxxx & exec {REEF} gateway --port {}",
        main.base
    );
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {}, command = {{ \"sh\", \"-c\", {} }} }}\n",
        main.base,
        lua_string(&shell)
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    let log = PathBuf::from(
        instance(&status, "main")["log"]
            .as_str()
            .expect("the status names the log"),
    );
    let dir = log.parent().expect("logs have a directory").to_owned();
    let name = log
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a log name")
        .to_owned();
    let topology = cleanup.topology();
    let yes = poll("the flooding `yes`", || {
        marked(&topology)
            .into_iter()
            .find(|m| m.comm == "yes")
            .ok_or_else(|| describe(&marked(&topology)))
    });

    // Every 200 ms for 4 s: the files against the bound, given what `yes` wrote in the last
    // 1.5 s (one rotation period of output, with room for a late check).
    let window = Duration::from_millis(1500);
    let slack = MIB;
    let mut history: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    let mut rotated = false;
    let mut samples = 0;
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let files = log_files(&dir, &name);
        let now = Instant::now();
        let wrote = written_by(yes.pid).unwrap_or_else(|| {
            panic!(
                "`yes` (pid {}) ended or its /proc/PID/io is unreadable",
                yes.pid
            )
        });
        history.push((now, wrote));
        let before = history
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= window)
            .map_or(0, |(_, bytes)| *bytes);
        let recent = wrote - before;
        let total: u64 = files.values().sum();
        let live = files.get(&name).copied().unwrap_or(0);
        let context = format!(
            "after {:.1} s, `yes` wrote {:.1} MiB in all and {:.1} MiB in the last {window:?}; \
             files: {files:?}",
            started.elapsed().as_secs_f64(),
            wrote as f64 / MIB as f64,
            recent as f64 / MIB as f64
        );
        assert!(
            total <= 3 * ROTATE_AT + 2 * COPY_SLACK + recent + slack,
            "the logs exceed 3 x 10 MiB (and the copies' slack) plus the recent output: {total} \
             bytes; {context}"
        );
        assert!(
            live <= ROTATE_AT + recent + slack,
            "the live log exceeds 10 MiB plus the recent output: {live} bytes; {context}"
        );
        for (file, size) in &files {
            if *file != name {
                assert!(
                    *size <= ROTATE_AT + COPY_SLACK,
                    "the copy {file} holds more than 10 MiB and its slack: {size}; {context}"
                );
            }
        }
        rotated |= files.contains_key(&format!("{name}.1"));
        samples += 1;
        peak = peak.max(total);
        std::thread::sleep(Duration::from_millis(200));
    }
    let wrote = written_by(yes.pid).unwrap_or(0);
    assert!(
        wrote > 3 * ROTATE_AT,
        "`yes` wrote only {wrote} bytes in 4 s: no flood to test the bound with"
    );
    assert!(rotated, "the flooded log was never rotated");
    assert!(samples >= 10, "only {samples} samples in 4 s");
    eprintln!(
        "`yes` wrote {:.0} MiB in {:.1} s; the logs peaked at {:.1} MiB over {samples} samples",
        wrote as f64 / MIB as f64,
        started.elapsed().as_secs_f64(),
        peak as f64 / MIB as f64
    );
    let status = up.status();
    assert_eq!(state(&status, "main"), "ready", "{status:#}");
    assert_eq!(
        pid(&status, "main"),
        gateway,
        "the flood did not restart the gateway"
    );
    stop_up(up, &topology);
}

// ---------------------------------------------------------------------------------------------
// 4. A stopped gateway.

#[test]
fn a_sigstopped_gateway_is_replaced_well_before_its_stop_timeout() {
    let main = claim();
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\n\
         reef.gateway {{ profile = \"main\", port = {}, stop = {{ timeout = 30 }} }}\n",
        main.base
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    let ticks = start_ticks(gateway).expect("the gateway runs");
    stop_and_wait(gateway);

    let asked = Instant::now();
    let restart = reef_ok(&sandbox, &["restart", "main"]);
    wait_ready_anew(&mut up, "main", gateway);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "replacing a SIGSTOPped gateway took {took:?} (its stop timeout is 30 s): reef must \
         SIGCONT it so it acts on SIGTERM\n{restart}{}",
        up.context("")
    );
    assert!(!alive(gateway, ticks), "the stopped gateway still exists");

    // The same without a reef: `reef down` from the ledger wakes it up too.
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    kill_9(&mut up.proc);
    drop(up);
    stop_and_wait(gateway);
    let asked = Instant::now();
    let down = reef_ok(&sandbox, &["down"]);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "`reef down` of a SIGSTOPped gateway took {took:?} (its stop timeout is 30 s)\n{down}"
    );
    assert_none_marked(&cleanup.topology(), &format!("after `reef down`:\n{down}"));
}

/// SIGSTOP to a gateway; returns once it is stopped.
fn stop_and_wait(gateway: u32) {
    kill(raw(gateway), Signal::SIGSTOP).expect("the gateway can be stopped");
    poll("the gateway to be stopped", || {
        match process_state(gateway) {
            Some(s) if s == "T" => Ok(()),
            other => Err(format!("state {other:?}")),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Deleted directories.

/// The `--- reef: starting` lines of a log.
fn starts_in(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("--- reef: starting"))
        .count()
}

#[test]
fn deleted_logs_and_state_dirs_are_recreated_and_the_lock_survives() {
    let main = claim();
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\nreef.gateway {{ profile = \"main\", port = {} }}\n",
        main.base
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let topology = cleanup.topology();
    let state_dir = state_root(&sandbox).join(&topology);
    let log = PathBuf::from(instance(&status, "main")["log"].as_str().expect("a log"));
    assert!(log.starts_with(state_dir.join("logs")), "{}", log.display());
    assert_eq!(starts_in(&log), 1);

    // The logs dir goes, then the gateway crashes: it comes back, logging to a new file.
    let first = pid(&status, "main");
    std::fs::remove_dir_all(state_dir.join("logs")).expect("the logs dir can be deleted");
    kill(raw(first), Signal::SIGKILL).expect("the gateway can be killed");
    let status = wait_ready_anew(&mut up, "main", first);
    let second = pid(&status, "main");
    poll("the new log", || match starts_in(&log) {
        1 => Ok(()),
        n => Err(format!("{} has {n} start lines", log.display())),
    });
    readyz(main.base).expect("the restarted gateway is ready");

    // The whole state dir goes (lock file, ledger, logs, control socket), then the gateway
    // crashes again. reef's socket went with the directory, so the restart is watched on the
    // host: a new marked gateway that answers ready, a new log, a new ledger naming it.
    let second_ticks = start_ticks(second).expect("the second gateway runs");
    std::fs::remove_dir_all(&state_dir).expect("the state dir can be deleted");
    kill(raw(second), Signal::SIGKILL).expect("the gateway can be killed");
    let third = poll("a third gateway, ready", || {
        let found = marked(&topology);
        let leaders = leaders(&found);
        match leaders.get("main").map(Vec::as_slice) {
            Some([gateway]) if *gateway != second => {
                readyz(main.base)?;
                Ok(*gateway)
            }
            other => Err(format!("gateways: {other:?}\n{}", describe(&found))),
        }
    });
    assert!(!alive(second, second_ticks));
    poll("the log, recreated", || match starts_in(&log) {
        1 => Ok(()),
        n => Err(format!("{} has {n} start lines", log.display())),
    });
    let ledger_path = state_dir.join("ledger.json");
    poll("the ledger, recreated, naming the new gateway", || {
        let text = std::fs::read_to_string(&ledger_path).map_err(|e| e.to_string())?;
        let ledger: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let pids: Vec<u64> = ledger["entries"]
            .as_array()
            .map(|entries| entries.iter().filter_map(|e| e["pid"].as_u64()).collect())
            .unwrap_or_default();
        if pids == [u64::from(third)] {
            Ok(())
        } else {
            Err(text)
        }
    });
    up.assert_running("the third gateway", "(not polled)");

    // A second `reef up` of the topology is still refused, and touches nothing.
    let mut intruder = spawn_up(&sandbox, "reef up (second)");
    let code = intruder.exit_code();
    assert_ne!(code, 0, "a second reef up started{}", intruder.output());
    assert!(
        intruder.stderr().contains(&format!(
            "already running this topology (pid {})",
            up.proc.pid()
        )),
        "the second reef up names the running one{}",
        intruder.output()
    );
    up.assert_running("the second reef up to be refused", "(not polled)");
    let found = marked(&topology);
    assert_eq!(
        leaders(&found).get("main").map(Vec::as_slice),
        Some([third].as_slice()),
        "the second reef up touched the gateway:\n{}{}",
        describe(&found),
        intruder.output()
    );
    readyz(main.base).expect("the gateway still answers");
    stop_up(up, &topology);
}

#[test]
fn reef_can_still_be_controlled_after_its_state_dir_is_deleted() {
    let main = claim();
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\nreef.gateway {{ profile = \"main\", port = {} }}\n",
        main.base
    ));
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    let topology = cleanup.topology();
    // The control socket lives in the state dir when XDG_RUNTIME_DIR is unset (the default
    // for a user without a login session: cron, ssh without PAM, containers).
    let state_dir = state_root(&sandbox).join(&topology);
    std::fs::remove_dir_all(&state_dir).expect("the state dir can be deleted");

    // reef recreates what it needs: `reef status` and `reef down` reach it again.
    let status = poll_within(
        Duration::from_secs(10),
        "`reef status` to answer after the state dir was deleted",
        || sandbox.status().map_err(|run| run.to_string()),
    );
    assert_eq!(pid(&status, "main"), gateway, "{status:#}");
    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(
        down.code, 0,
        "`reef down` after the state dir was deleted:\n{down}"
    );
    assert_eq!(up.proc.exit_code(), 0, "{}", up.proc.output());
    assert_none_marked(&topology, "after `reef down`");
}

// ---------------------------------------------------------------------------------------------
// 6. A forged ledger.

/// Processes that a forged ledger names: a plain `sleep` and a shell that notes every signal it
/// gets (and a heartbeat, so the test knows its traps have run). Each leads its own process
/// group, so a `killpg` of its pid would reach it too.
struct Bystanders {
    sleep: Proc,
    sleep_ticks: u64,
    shell: Proc,
    shell_ticks: u64,
    notes: PathBuf,
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        // The shell ignores SIGTERM (it notes it): SIGKILL both, our own children.
        // Only while they are unreaped children: their pids cannot have been reused.
        for proc in [&mut self.sleep, &mut self.shell] {
            if proc.try_status().is_none() {
                let _ = kill(raw(proc.pid()), Signal::SIGKILL);
            }
        }
    }
}

impl Bystanders {
    fn start(sandbox: &Sandbox) -> Bystanders {
        let mut sleep = Command::new("sleep");
        sleep.arg("300").process_group(0);
        let sleep = Proc::spawn(sleep, &sandbox.outputs, "sleep");
        let notes = sandbox.path("bystander.notes");
        let mut shell = Command::new("sh");
        shell
            .args([
                "-c",
                "for s in CONT TERM INT HUP QUIT USR1 USR2 ALRM; do trap \"echo signal $s >> '$1'\" $s; done\n\
                 while :; do echo beat >> \"$1\"; sleep 0.05; done",
                "sh",
            ])
            .arg(&notes)
            .process_group(0);
        let shell = Proc::spawn(shell, &sandbox.outputs, "signal-noting shell");
        let bystanders = Bystanders {
            sleep_ticks: start_ticks(sleep.pid()).expect("the sleep runs"),
            shell_ticks: start_ticks(shell.pid()).expect("the shell runs"),
            sleep,
            shell,
            notes,
        };
        bystanders.beats_after(0);
        bystanders
    }

    fn notes(&self) -> Vec<String> {
        std::fs::read_to_string(&self.notes)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits for two heartbeats past `seen` lines: any trap due has run by then.
    fn beats_after(&self, seen: usize) -> usize {
        poll("the shell's heartbeats", || {
            let notes = self.notes();
            let beats = notes[seen.min(notes.len())..]
                .iter()
                .filter(|line| *line == "beat")
                .count();
            if beats >= 2 {
                Ok(notes.len())
            } else {
                Err(format!(
                    "{beats} beats; the shell is in state {:?}",
                    process_state(self.shell.pid())
                ))
            }
        })
    }

    /// Both still run, unstopped, and the shell noted no signal.
    fn assert_untouched(&mut self, after: &str) {
        let notes = self.notes();
        self.beats_after(notes.len());
        for (proc, ticks, what) in [
            (&mut self.sleep, self.sleep_ticks, "the sleep"),
            (&mut self.shell, self.shell_ticks, "the signal-noting shell"),
        ] {
            assert!(
                proc.try_status().is_none() && alive(proc.pid(), ticks),
                "{what} (pid {}) was killed {after}: {:?}",
                proc.pid(),
                proc.try_status()
            );
            assert_ne!(
                process_state(proc.pid()).as_deref(),
                Some("T"),
                "{what} was stopped {after}"
            );
        }
        let signals: Vec<String> = self
            .notes()
            .into_iter()
            .filter(|line| line.starts_with("signal"))
            .collect();
        assert!(
            signals.is_empty(),
            "the shell the ledger names was signalled {after}: {signals:?}"
        );
    }

    /// Ledger entries naming the bystanders: `main` (a name the script declares, its true spec
    /// hash) at the sleep, `ghost` at the shell, both with their true start times.
    fn forged_entries(&self, template: &Value, spawn: &str) -> Vec<Value> {
        let mut main = template.clone();
        main["pid"] = json!(self.sleep.pid());
        main["start_ticks"] = json!(self.sleep_ticks);
        main["spawn"] = json!(spawn);
        let mut ghost = template.clone();
        ghost["name"] = json!("ghost");
        ghost["pid"] = json!(self.shell.pid());
        ghost["start_ticks"] = json!(self.shell_ticks);
        ghost["spawn"] = json!(spawn);
        ghost["depends_on"] = json!(["main"]);
        vec![main, ghost]
    }
}

fn ledger_of(sandbox: &Sandbox, topology: &str) -> Value {
    let path = state_root(sandbox).join(topology).join("ledger.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("the ledger is not JSON ({err})"))
}

fn write_ledger(sandbox: &Sandbox, topology: &str, ledger: &Value) {
    let path = state_root(sandbox).join(topology).join("ledger.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(ledger).expect("JSON prints"),
    )
    .expect("the ledger is written");
}

#[test]
fn a_forged_ledger_never_gets_an_unrelated_process_signalled() {
    let main = claim();
    let sandbox = Sandbox::new(&format!(
        "local reef = require \"reef\"\nreef.gateway {{ profile = \"main\", port = {} }}\n",
        main.base
    ));
    let mut bystanders = Bystanders::start(&sandbox);
    let cleanup = Cleanup::new(&sandbox);

    // A real ledger, as a template, then a clean stop.
    let mut up = sandbox.up();
    up.wait_all_ready();
    let topology = cleanup.topology();
    let ledger = ledger_of(&sandbox, &topology);
    let template = ledger["entries"][0].clone();
    assert_eq!(template["name"], "main", "{ledger:#}");
    let real_spawn = template["spawn"]
        .as_str()
        .expect("a spawn nonce")
        .to_owned();
    stop_up(up, &topology);
    let forged = |entries: Vec<Value>| {
        let mut forged = ledger.clone();
        forged["entries"] = Value::Array(entries);
        forged
    };

    // Forged entries, reef stopped: `reef up`, then `reef down` through it.
    write_ledger(
        &sandbox,
        &topology,
        &forged(bystanders.forged_entries(&template, "0123456789abcdef")),
    );
    let mut up = sandbox.up();
    let status_after = up.wait_all_ready();
    let gateway = pid(&status_after, "main");
    assert_ne!(gateway, bystanders.sleep.pid());
    assert_ne!(
        instance(&status_after, "main")["adopted"],
        true,
        "{status_after:#}"
    );
    bystanders.assert_untouched("by `reef up` reading a forged ledger");
    let down = reef_ok(&sandbox, &["down"]);
    assert_eq!(up.proc.exit_code(), 0, "{}", up.proc.output());
    drop(up);
    assert_none_marked(&topology, "after `reef down`");
    bystanders.assert_untouched(&format!("by `reef down` with reef running:\n{down}"));

    // Forged entries, no reef: `reef down` from the ledger.
    write_ledger(
        &sandbox,
        &topology,
        &forged(bystanders.forged_entries(&template, "0123456789abcdef")),
    );
    let down = reef_ok(&sandbox, &["down"]);
    bystanders.assert_untouched(&format!("by `reef down` without a reef:\n{down}"));

    // A killed reef's real ledger, its entry moved onto the sleep (the nonce kept), plus the
    // ghost under the same nonce. The recorded pid is not the spawn's process, so nothing is
    // adopted from that entry (a descendant with the nonce is never taken for its gateway): the
    // real gateway is ended as a leftover of the topology and replaced...
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    kill_9(&mut up.proc);
    drop(up);
    let left = ledger_of(&sandbox, &topology);
    let spawn = left["entries"][0]["spawn"]
        .as_str()
        .expect("a spawn nonce")
        .to_owned();
    assert_ne!(spawn, real_spawn, "a new spawn, a new nonce");
    write_ledger(
        &sandbox,
        &topology,
        &forged(bystanders.forged_entries(&template, &spawn)),
    );
    let mut up = sandbox.up();
    let status = up.wait_until("main ready", |s| state(s, "main") == "ready");
    assert_ne!(
        pid(&status, "main"),
        gateway,
        "a forged entry adopts nothing: {status:#}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{gateway}")).exists()
            || std::fs::read_to_string(format!("/proc/{gateway}/stat"))
                .is_ok_and(|stat| stat.contains(") Z ")),
        "the old gateway was ended as a leftover"
    );
    bystanders.assert_untouched("by `reef up` reading a forged ledger");

    // ...and `reef down` without a reef stops it, not the processes the entries name.
    kill_9(&mut up.proc);
    drop(up);
    write_ledger(
        &sandbox,
        &topology,
        &forged(bystanders.forged_entries(&template, &spawn)),
    );
    let down = reef_ok(&sandbox, &["down"]);
    assert_none_marked(
        &topology,
        &format!("after `reef down` without a reef:\n{down}"),
    );
    bystanders.assert_untouched(&format!("by `reef down` without a reef:\n{down}"));
}

// ---------------------------------------------------------------------------------------------
// 7. `reef down` order from the ledger.

#[test]
fn down_without_a_reef_stops_dependents_before_their_dependencies() {
    let ports = [claim(), claim(), claim()];
    let sandbox = Sandbox::empty();
    let notes = sandbox.path("stops.log");
    // Each gateway runs under a shell that, on SIGTERM, notes "stopping NAME", waits for its
    // gateway, takes 300 ms more, and notes "stopped NAME" just before it exits: stopped in
    // order, each "stopped" comes before the next "stopping".
    let gateway = |name: &str, port: u16, depends_on: Option<&str>| {
        let shell = format!(
            "{REEF} gateway --port {port} & gw=$!\n\
             trap 'echo \"stopping {name}\" >> \"$STOP_NOTES\"; kill -TERM $gw 2>/dev/null; wait $gw; \
             sleep 0.3; echo \"stopped {name}\" >> \"$STOP_NOTES\"; exit 0' TERM\n\
             wait $gw\n"
        );
        let depends = depends_on.map_or(String::new(), |d| {
            format!(", depends_on = {}", lua_string(d))
        });
        format!(
            "reef.gateway {{ profile = {}, port = {port}, command = {{ \"sh\", \"-c\", {} }}, \
             env = {{ STOP_NOTES = {} }}{depends} }}\n",
            lua_string(name),
            lua_string(&shell),
            lua_string(notes.to_str().expect("UTF-8 temp paths"))
        )
    };
    // Declared in an order that is neither the stop order nor its reverse.
    let script = format!(
        "local reef = require \"reef\"\n{}{}{}",
        gateway("b", ports[1].base, Some("a")),
        gateway("c", ports[2].base, Some("b")),
        gateway("a", ports[0].base, None),
    );
    sandbox.edit_script(&script);
    let cleanup = Cleanup::new(&sandbox);
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let topology = cleanup.topology();
    let pids: BTreeSet<u32> = instances(&status).iter().filter_map(pid_in).collect();
    assert_eq!(pids.len(), 3);
    kill_9(&mut up.proc);
    drop(up);

    let down = reef_ok(&sandbox, &["down"]);
    assert_none_marked(&topology, &format!("after `reef down`:\n{down}"));
    let lines: Vec<String> = std::fs::read_to_string(&notes)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in the notes: {lines:#?}\n{down}"))
    };
    for (dependent, dependency) in [("c", "b"), ("b", "a")] {
        assert!(
            at(&format!("stopped {dependent}")) < at(&format!("stopping {dependency}")),
            "`{dependency}` was asked to stop before its dependent `{dependent}` had stopped: \
             {lines:#?}\n{down}"
        );
    }
    assert_eq!(lines.len(), 6, "each gateway stopped once: {lines:#?}");
}
