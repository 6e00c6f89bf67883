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

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getsid};
use serde_json::Value;

use common::*;

/// Exit codes (see `reef --help`).
const EXIT_VIOLATIONS: i32 = 1;
const EXIT_SCRIPT_ERROR: i32 = 2;
const EXIT_FAILURE: i32 = 3;
const EXIT_NOT_RUNNING: i32 = 4;

/// This binary's base ports: 20000..32000 (below Linux's ephemeral range) in steps of 200, which
/// hold one footprint (111 ports) with room to spare. `tests/gateway.rs` shares the range; the
/// claim files keep the two apart.
const PORTS: PortRange = PortRange::new(20_000, 32_000, 200);

fn claim() -> Footprint {
    Footprint::claim_in(&PORTS)
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
// A test's sandbox (see `tests/common`).

impl Sandbox {
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
}

fn assert_ports_free(footprint: &Footprint) {
    for port in [footprint.base, footprint.browser_control()] {
        assert!(port_is_free(port), "port {port} is still taken");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Up, status, clean stop.

fn up_then_stop_with(signal: Signal) {
    let (main, rescue) = (claim(), claim());
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
        after.code, EXIT_NOT_RUNNING,
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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
    let (main, rescue) = (claim(), claim());
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

#[test]
fn logs_without_a_name_interleave_every_gateway_prefixed() {
    let (main, rescue) = (claim(), claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let first = pid(&ready, "main");

    // The script alone: never taken for an instance's name.
    let logs = sandbox.run(&["logs", sandbox.script(), "-n", "1"]);
    assert_eq!(logs.code, 0, "{logs}");
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].starts_with("main   | ") && lines[0].contains("listening on"),
        "{logs}"
    );
    assert!(
        lines[1].starts_with("rescue | ") && lines[1].contains("listening on"),
        "{logs}"
    );

    let follow = Proc::spawn(
        sandbox.command(&["logs", sandbox.script(), "-f", "-n", "1"]),
        &sandbox.outputs,
        "reef logs -f",
    );
    // The last lines first; following starts right after they are printed.
    let deadline = Instant::now() + DEADLINE;
    while follow.stdout().lines().count() < 2 {
        assert!(Instant::now() < deadline, "no tail{}", follow.output());
        std::thread::sleep(POLL);
    }
    let restart = sandbox.run(&["restart", "main", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    up.wait_until("main to be ready with a new pid", |status| {
        state(status, "main") == "ready" && pid(status, "main") != first
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = follow.stdout();
        let marked = out
            .lines()
            .any(|line| line.starts_with("main   | --- reef: starting"));
        // The built-in gateway's lines carry no time: they get the one reef read them at.
        let timed = out.lines().any(|line| {
            line.starts_with("main   | ") && line.contains("~ reef gateway: listening on")
        });
        if marked && timed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`reef logs -f` did not print main's restart{}",
            follow.output()
        );
        std::thread::sleep(POLL);
    }
    drop(follow);
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

/// `reef status --watch` follows reef's events: with an interval of an hour, only a state
/// change can bring the next table.
#[test]
fn status_watch_redraws_when_a_state_changes() {
    let (main, rescue) = (claim(), claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    up.wait_all_ready();
    let watch = Proc::spawn(
        sandbox.command(&["status", "--watch", "--interval", "3600", sandbox.script()]),
        &sandbox.outputs,
        "reef status --watch",
    );
    let tables = |text: &str| text.matches("NAME").count();
    let deadline = Instant::now() + DEADLINE;
    while tables(&watch.stdout()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no first table{}",
            watch.output()
        );
        std::thread::sleep(POLL);
    }
    let stop = sandbox.run(&["stop", "rescue", sandbox.script()]);
    assert_eq!(stop.code, 0, "{stop}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = watch.stdout();
        let last = text.rsplit("NAME").next().unwrap_or_default();
        if last
            .lines()
            .any(|l| l.contains("rescue") && l.contains("stopped"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stop was not redrawn{}",
            watch.output()
        );
        std::thread::sleep(POLL);
    }
    drop(watch);
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn events_stream_what_happens_from_the_moment_a_client_attaches() {
    let (main, rescue) = (claim(), claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let first = pid(&ready, "main");
    let json = Proc::spawn(
        sandbox.command(&["events", "--json", sandbox.script()]),
        &sandbox.outputs,
        "reef events --json",
    );
    let text = Proc::spawn(
        sandbox.command(&["events", sandbox.script()]),
        &sandbox.outputs,
        "reef events",
    );
    let deadline = Instant::now() + DEADLINE;
    while !(json.stderr().contains("streaming the events") && text.stderr().contains("streaming")) {
        assert!(
            Instant::now() < deadline,
            "not attached{}{}",
            json.output(),
            text.output()
        );
        std::thread::sleep(POLL);
    }
    let restart = sandbox.run(&["restart", "main", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    let deadline = Instant::now() + DEADLINE;
    let lines = loop {
        let lines: Vec<serde_json::Value> = json
            .stdout()
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect();
        if lines
            .iter()
            .any(|e| e["kind"] == "ready" && e["instance"] == "main")
        {
            break lines;
        }
        assert!(Instant::now() < deadline, "no ready event{}", json.output());
        std::thread::sleep(POLL);
    };
    let kinds: Vec<&str> = lines
        .iter()
        .filter(|e| e["instance"] == "main")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["stopped", "spawned", "ready"], "{lines:#?}");
    assert!(
        lines.iter().all(|e| e["format"] == 1 && e["time"].is_f64()),
        "{lines:#?}"
    );
    let spawned = lines.iter().find(|e| e["kind"] == "spawned").unwrap();
    assert_ne!(spawned["pid"], first);
    let deadline = Instant::now() + DEADLINE;
    while !text
        .stdout()
        .lines()
        .any(|l| l.contains(" main ") && l.contains(" ready "))
    {
        assert!(Instant::now() < deadline, "no ready line{}", text.output());
        std::thread::sleep(POLL);
    }
    drop((json, text));
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn ls_lists_running_topologies_and_those_serving_without_reef() {
    let (main, rescue) = (claim(), claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up();
    up.wait_all_ready();
    let script = std::fs::canonicalize(sandbox.script()).unwrap();
    let ls = sandbox.run(&["ls"]);
    assert_eq!(ls.code, 0, "{ls}");
    assert!(
        ls.stdout.contains(&format!(
            "{}  reef pid {}: 2 ready",
            script.display(),
            up.proc.pid()
        )),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&sandbox.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["topologies"][0]["states"]["ready"], 2, "{json:#}");
    // Where there is no ./reef.lua, the only running topology is the one meant.
    let elsewhere = reef(&["status"], &sandbox.home, &sandbox.home)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(elsewhere.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "using {}, the only topology running",
            script.display()
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&elsewhere.stdout).contains("main"));

    up.proc.signal(Signal::SIGKILL);
    up.proc.wait();
    let ls = sandbox.run(&["ls"]);
    assert!(
        ls.stdout.contains("no reef: 2 gateways still serving"),
        "{ls}"
    );
    assert_eq!(sandbox.run(&["down", sandbox.script()]).code, 0);
    let ls = sandbox.run(&["ls"]);
    assert!(
        ls.stdout.contains("no topology of yours is running"),
        "{ls}"
    );
}

#[test]
fn up_with_logs_streams_every_gateways_output_in_the_foreground() {
    let (main, rescue) = (claim(), claim());
    let sandbox = Sandbox::pair(&main, &rescue, &[]);
    let mut up = sandbox.up_with(&["--logs"]);
    up.wait_all_ready();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = up.proc.stdout();
        let seen = |name: &str| {
            out.lines()
                .any(|line| line.starts_with(name) && line.contains("listening on"))
        };
        if seen("main   | ") && seen("rescue | ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gateway output{}",
            up.proc.output()
        );
        std::thread::sleep(POLL);
    }
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
    for (args, code) in [
        (vec!["status", sandbox.script()], EXIT_NOT_RUNNING),
        (vec!["stop", "main", sandbox.script()], EXIT_FAILURE),
    ] {
        let run = sandbox.run(&args);
        assert_eq!(run.code, code, "reef {args:?}: {run}");
        assert!(
            run.stderr.contains("no reef is running"),
            "reef {args:?}: {run}"
        );
    }
    let run = sandbox.run(&["status", "--json", sandbox.script()]);
    assert_eq!(run.code, EXIT_NOT_RUNNING, "{run}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["running"], false, "{run}");
    assert_eq!(json["serving"], serde_json::json!([]), "{run}");
}

#[test]
fn status_without_reef_shows_the_gateways_still_serving() {
    let a = claim();
    let sandbox = Sandbox::new(&topology(&[Gateway {
        name: "main",
        port: a.base,
        depends_on: None,
        args: &[],
    }]));
    let mut up = sandbox.up();
    let status = up.wait_all_ready();
    let gateway = pid(&status, "main");
    up.proc.signal(Signal::SIGKILL);
    up.proc.wait();
    let run = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(run.code, EXIT_NOT_RUNNING, "{run}");
    assert!(
        run.stdout.contains("1 gateway it started is still serving")
            && run.stdout.contains(&format!("main  pid {gateway}")),
        "{run}"
    );
    let run = sandbox.run(&["status", "--json", sandbox.script()]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["serving"][0]["pid"], gateway, "{run}");
    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(down.code, 0, "{down}");
}

// ---------------------------------------------------------------------------------------------
// 9. Dependency order.

#[test]
fn a_dependent_starts_only_after_its_dependency_is_ready() {
    let (main, rescue) = (claim(), claim());
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
    let main = claim();
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
    let main = claim();
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
    let main = claim();
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
        "exit code 0",
        "a stopped gateway is continued before SIGTERM, so it shuts down cleanly: {replaced:#}"
    );
    assert_gone(hung, "the hung gateway");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn restart_policies_never_and_on_failure_leave_an_ended_gateway_down() {
    let (never, on_failure) = (claim(), claim());
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

/// A gateway whose leader ignores SIGTERM: a shell that traps it, starts the real gateway and
/// then never ends on its own.
fn stubborn_gateway(name: &str, port: u16, stop_timeout: u32) -> String {
    let shell = format!(
        "trap '' TERM; {} gateway --port {port} & while :; do sleep 1; done",
        env!("CARGO_BIN_EXE_reef")
    );
    format!(
        "reef.gateway {{ profile = \"{name}\", port = {port}, command = {{ \"sh\", \"-c\", {} }},\n\
         \x20 stop = {{ timeout = {stop_timeout} }} }}\n",
        lua_string(&shell)
    )
}

#[test]
fn a_second_sigterm_hurries_the_stop_and_a_third_exits_at_once() {
    let (first, second) = (claim(), claim());
    let topology = |stop_timeout| {
        format!(
            "local reef = require \"reef\"\n{}{}",
            stubborn_gateway("main", first.base, stop_timeout),
            stubborn_gateway("rescue", second.base, stop_timeout)
        )
    };
    let sandbox = Sandbox::new(&topology(60));
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let main = pid(&ready, "main");

    // One SIGTERM: reef waits for the gateways' 60 s stop timeout.
    up.proc.signal(Signal::SIGTERM);
    up.wait_until("main stopping", |s| state(s, "main") == "stopping");
    // A second one: SIGKILL after a short grace, so reef ends within seconds, not a minute.
    let hurried = Instant::now();
    up.proc.signal(Signal::SIGTERM);
    assert_eq!(up.proc.exit_code_within(Duration::from_secs(20)), 0);
    assert!(
        hurried.elapsed() < Duration::from_secs(15),
        "a second SIGTERM hurries the stop: {:?}",
        hurried.elapsed()
    );
    assert_gone(main, "the stubborn gateway after a hurried stop");
    assert!(
        up.proc.stderr().contains("again: stopping now"),
        "{}",
        up.proc.output()
    );
    drop(up);

    // A third signal exits at once (130), leaving what still runs to the next reef or
    // `reef down`, which finds it by ledger and marker.
    sandbox.edit_script(&topology(2));
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let (main, rescue) = (pid(&ready, "main"), pid(&ready, "rescue"));
    for _ in 0..2 {
        up.proc.signal(Signal::SIGTERM);
        up.wait_until("stopping", |s| state(s, "main") == "stopping");
    }
    let third = Instant::now();
    up.proc.signal(Signal::SIGTERM);
    assert_eq!(up.proc.exit_code_within(Duration::from_secs(10)), 130);
    assert!(
        third.elapsed() < Duration::from_secs(2),
        "{:?}",
        third.elapsed()
    );
    let down = sandbox.run(&["down", sandbox.script()]);
    assert_eq!(down.code, 0, "{down}");
    // reef is gone, so they are no child of this test's reef: whoever adopted them reaps them
    // (or, in a container whose init does not, leaves a zombie).
    for (name, pid) in [("main", main), ("rescue", rescue)] {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "{name} (pid {pid}) still runs after `reef down`:\n{down}"
        );
    }
}
