//! Automation end to end on the built-in gateway: `reef.on` hooks for every event (`ready`,
//! `exit` with its code or signal, `blocked`, `unhealthy`, `healthy`, `reload` with its diff),
//! name filters, `reef.every`/`reef.after` timers (also scheduled from a hook), `reef.exec`
//! (output, exit code, timeout, env, cwd), hooks that raise or run past their budget, the
//! actions `reef.start/stop/restart`, hooks replaced on reload (and kept when a reload fails),
//! the misuse `reef plan` reports, and the rescue-failover example and `reef.rescue`'s repair
//! hook: main exits 78, the hook repairs and restarts it, the rescue keeps running.
//!
//! Hooks are observed through files: every script starts with a prelude defining
//! `note(text)`, which appends a line to the sandbox's `events.log` with `reef.exec` (so the
//! line is written before the next hook runs). Tests poll that file (and `reef status --json`,
//! and reef up's stderr for its log) every 50 ms with a 30 s deadline, and panic with all three.
//!
//! Every test runs in its own temporary HOME (so its own state dirs, logs and control socket)
//! with base ports of its own (see [`Footprint`]), and runs `reef up` in the background under an
//! [`Up`] guard that stops it (SIGTERM, then SIGKILL after 15 s, then SIGKILL to the gateways
//! it showed) even when the test panics. Nothing sleeps for a fixed time where a state can be
//! awaited; checks that something did *not* happen first wait for a later positive signal.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::*;

/// `reef plan`'s exit code for a script that cannot be evaluated.
const EXIT_SCRIPT_ERROR: i32 = 2;

/// Base ports are handed out from 2000..9900 (this binary's range, below the other test
/// binaries' ranges and far from Linux's ephemeral ports) in steps of 126, which hold one
/// footprint (111 ports) with a little room to spare. Every base port is odd (an odd start, an
/// even step), so the gateway and browser-control ports are odd too.
const PORTS: PortRange = PortRange::odd(2_000, 9_900, 126);

/// `n` footprints.
fn claim<const N: usize>() -> [Footprint; N] {
    Footprint::claim_n(&PORTS)
}

// ---------------------------------------------------------------------------------------------
// Processes and topologies (see also `tests/common`).

fn send_signal(pid: u32, signal: Signal) {
    let raw = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
    kill(raw, signal).unwrap_or_else(|err| panic!("cannot send {signal} to pid {pid}: {err}"));
}

/// Sends SIGCONT to a gateway the test stopped with SIGSTOP when dropped, so a failing test
/// never leaves a frozen process behind.
struct Frozen(u32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        send_signal(pid, Signal::SIGSTOP);
        Frozen(pid)
    }

    /// The process is gone (reef killed it): nothing to continue.
    fn ended(mut self) {
        self.0 = 0;
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if self.0 != 0
            && let Ok(pid) = i32::try_from(self.0)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
}

/// The 1-based number of the first line of `text` that contains `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|line| line.contains(marker))
        .unwrap_or_else(|| panic!("no line contains {marker:?} in:\n{text}"))
        + 1
}

// ---------------------------------------------------------------------------------------------
// A test's sandbox and `reef up` (see `tests/common`), with the hooks' events file.

impl Sandbox {
    /// A sandbox whose script is the prelude followed by `body`.
    fn with(body: &str) -> Sandbox {
        let sandbox = Sandbox::empty();
        sandbox.rename_save_script(&sandbox.hooks_script(body));
        sandbox
    }

    /// The prelude, then `body`. The prelude defines `reef`, `EVENTS` (the events file),
    /// `DIR` (the sandbox), `note(text)` (appends a line to the events file) and `opt(value)`
    /// (`-` for an absent value, else `tostring(value)`; absent event fields are also accepted
    /// as a null userdata, see `absent_event_fields_are_nil`).
    fn hooks_script(&self, body: &str) -> String {
        format!(
            r#"local reef = require "reef"
local EVENTS = {events}
local DIR = {dir}
local function note(text)
  local code, _, err = reef.exec {{ "sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "note", text, EVENTS }}
  if code ~= 0 then reef.log.error("note failed: " .. tostring(err)) end
end
local function opt(value)
  if value == nil or type(value) == "userdata" then return "-" end
  return tostring(value)
end
{body}"#,
            events = lua_string(self.events.to_str().expect("temp paths are UTF-8")),
            dir = lua_string(self.dir().to_str().expect("temp paths are UTF-8")),
        )
    }

    /// Writes an invalid JSON5 config for `profile`: its gateway exits 78 on the next start.
    fn break_config(&self, profile: &str) {
        let path = self.config_path(profile);
        std::fs::create_dir_all(path.parent().expect("a config has a directory"))
            .expect("the state dir can be created");
        std::fs::write(&path, "{ broken").expect("the broken config is written");
    }
}

impl Up<'_> {
    /// Waits until every enabled instance is ready.
    fn wait_enabled_ready(&mut self) -> Value {
        self.wait_until("every instance to be ready", enabled_ready)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading statuses and event lines (see also `tests/common`).

/// Every instance that is meant to run (has a pid or is on its way) is ready; instances that
/// are stopped (e.g. disabled) are left out.
fn enabled_ready(status: &Value) -> bool {
    instances(status)
        .iter()
        .all(|i| i["state"] == "ready" || i["state"] == "stopped")
        && instances(status).iter().any(|i| i["state"] == "ready")
}

/// `name` is ready with a pid other than `old`.
fn ready_with_new_pid(status: &Value, name: &str, old: u32) -> bool {
    find(status, name)
        .is_some_and(|i| i["state"] == "ready" && pid_in(i).is_some_and(|pid| pid != old))
}

/// Whether a process with this pid exists and has not ended: an orphan's zombie lingers until
/// pid 1 reaps it (in some containers, never).
fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Waits (up to [`DEADLINE`]) for a process to be gone.
fn wait_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while process_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still alive after {DEADLINE:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// The lines that start with `prefix`.
fn lines_with<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|line| line.starts_with(prefix))
        .map(String::as_str)
        .collect()
}

/// How many lines start with `prefix`.
fn count(lines: &[String], prefix: &str) -> usize {
    lines_with(lines, prefix).len()
}

/// The fields of a line written as `a|b|c`.
fn fields(line: &str) -> Vec<&str> {
    line.split('|').collect()
}

/// The pids in lines `ready NAME PID` for `name`, in order.
fn ready_pids(lines: &[String], name: &str) -> Vec<u32> {
    lines_with(lines, &format!("ready {name} "))
        .iter()
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|pid| pid.parse().ok())
                .unwrap_or_else(|| panic!("a ready line ends with a pid: {line:?}"))
        })
        .collect()
}

/// Whether `text` names `file:line`.
fn names_file_and_line(text: &str, file: &str, line: usize) -> bool {
    text.contains(&format!("{file}:{line}"))
}

/// The hook every event test uses: `ready NAME PID`.
const READY_NOTE: &str = r#"reef.on("ready", function(e) note("ready " .. e.name .. " " .. opt(e.pid)) end)
"#;

// ---------------------------------------------------------------------------------------------
// 1. Events.

#[test]
fn ready_and_exit_events_carry_the_instance_and_how_it_ended() {
    let [a, b] = claim::<2>();
    let sandbox = Sandbox::with(&format!(
        r#"{}{}
-- Registered first: when the general hook has written b's line, this one has seen b's event.
reef.on("ready", "a", function(e) note("only-a " .. e.name) end)
reef.on("ready", function(e)
  note(table.concat({{ "ready", e.name, opt(e.pid), e.profile, opt(e.ports.gateway),
    opt(e.ports.browser_control), opt(e.ports.cdp_first), opt(e.ports.cdp_last), opt(e.state),
    opt(e.restarts), opt(e.started_at), opt(e.time) }}, "|"))
end)
reef.on("exit", function(e)
  note(table.concat({{ "exit", e.name, opt(e.pid), opt(e.code), opt(e.signal), opt(e.reason) }}, "|"))
end)
"#,
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    ));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let lines = up.wait_events("both ready events", |l| {
        count(l, "ready|a|") == 1 && count(l, "ready|b|") == 1
    });
    for (name, port) in [("a", a.base), ("b", b.base)] {
        let line = lines_with(&lines, &format!("ready|{name}|"))[0];
        let f = fields(line);
        assert_eq!(f[2], pid(&status, name).to_string(), "pid: {line}");
        assert_eq!(f[3], name, "profile: {line}");
        assert_eq!(f[4], port.to_string(), "gateway port: {line}");
        assert_eq!(f[5], (port + 2).to_string(), "browser control: {line}");
        assert_eq!(f[6], (port + 11).to_string(), "first CDP port: {line}");
        assert_eq!(f[7], (port + 110).to_string(), "last CDP port: {line}");
        assert_eq!(f[8], "ready", "state: {line}");
        assert_eq!(f[9], "0", "restarts: {line}");
        let started: f64 = f[10].parse().expect("started_at is a number");
        let time: f64 = f[11].parse().expect("time is a number");
        assert!(
            started > 1.0e9 && started <= time,
            "started_at {started} is a Unix time before the event's time {time}: {line}"
        );
    }

    // kill -9: an exit with signal 9 and no code; a restarts and is ready again.
    let old_a = pid(&status, "a");
    send_signal(old_a, Signal::SIGKILL);
    let exit = up.wait_line("exit|a|");
    let f = fields(&exit);
    assert_eq!(f[2], old_a.to_string(), "the pid that ended: {exit}");
    assert_eq!(f[3], "-", "no exit code for a signal: {exit}");
    assert_eq!(f[4], "9", "signal 9: {exit}");
    assert!(
        f[5].contains("SIGKILL") || f[5].contains("signal 9"),
        "the reason says how it ended: {exit}"
    );
    let lines = up.wait_events("a's second ready event", |l| count(l, "ready|a|") == 2);
    let again = fields(lines_with(&lines, "ready|a|")[1]);
    assert_ne!(again[2], old_a.to_string(), "a new pid: {lines:?}");
    up.track(again[2].parse().expect("a pid"));

    // A broken config: b exits 78, without a signal.
    sandbox.break_config("b");
    sandbox.run_ok(&["restart", "b"]);
    let exit = up.wait_line("exit|b|");
    let f = fields(&exit);
    assert_eq!(f[3], "78", "exit code 78: {exit}");
    assert_eq!(f[4], "-", "no signal for an exit code: {exit}");
    assert!(f[5].contains("78"), "the reason names the code: {exit}");
    up.wait_until("b in config-error", |s| state(s, "b") == "config-error");

    // The filtered hook saw a's two ready events and never b's.
    let lines = sandbox.events();
    assert_eq!(
        lines_with(&lines, "only-a"),
        ["only-a a", "only-a a"],
        "{lines:#?}"
    );

    // Stopping everything is no event for the hooks.
    let exits = count(&lines, "exit|");
    up.stop();
    let lines = sandbox.events();
    assert_eq!(
        count(&lines, "exit|"),
        exits,
        "no exit events from stopping reef: {lines:#?}"
    );
}

/// Fields an event does not carry are nil in Lua (the type stubs declare them optional:
/// `code?: integer`), so `if e.signal then` tells a signal from an exit code.
#[test]
fn absent_event_fields_are_nil() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}
reef.on("ready", function(e)
  note("ready|" .. type(e.code) .. "|" .. type(e.signal) .. "|" .. type(e.reason) .. "|" .. type(e.diff))
end)
reef.on("exit", function(e)
  note("exit|" .. type(e.code) .. "|" .. type(e.signal) .. "|" .. tostring(not e.code))
end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let ready = up.wait_line("ready|");
    send_signal(pid(&status, "a"), Signal::SIGKILL);
    let exit = up.wait_line("exit|");
    assert_eq!(
        ready, "ready|nil|nil|nil|nil",
        "a ready event has no code, signal, reason or diff"
    );
    assert_eq!(
        exit, "exit|nil|number|true",
        "a kill -9 has a signal and no code"
    );
    up.stop();
}

#[test]
fn a_blocked_instance_names_the_holder_then_starts() {
    let [a] = claim::<1>();
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, a.base)).expect("the test binds a's port");
    let sandbox = Sandbox::with(&format!(
        r#"{}{READY_NOTE}
reef.on("blocked", function(e) note(table.concat({{ "blocked", e.name, opt(e.state), opt(e.reason) }}, "|")) end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    let line = up.wait_line("blocked|");
    let f = fields(&line);
    assert_eq!(f[1], "a", "{line}");
    assert_eq!(f[2], "blocked", "{line}");
    let expected = format!("port {} is held by pid {}", a.base, std::process::id());
    assert!(
        f[3].contains(&expected),
        "the reason names the holder ({expected}): {line}"
    );

    drop(holder);
    let lines = up.wait_events("a ready once its port is free", |l| {
        count(l, "ready a ") == 1
    });
    assert_eq!(
        count(&lines, "blocked|"),
        1,
        "blocked is an event once, not per retry: {lines:#?}"
    );
    up.wait_enabled_ready();
    up.stop();
}

#[test]
fn an_unhealthy_gateway_is_reported_then_restarted() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}{READY_NOTE}
reef.on("unhealthy", function(e) note(table.concat({{ "unhealthy", e.name, opt(e.pid), opt(e.state), opt(e.reason) }}, "|")) end)
reef.on("healthy", function(e) note("healthy " .. e.name) end)
reef.on("exit", function(e) note(table.concat({{ "exit", e.name, opt(e.pid), opt(e.reason) }}, "|")) end)
"#,
        gateway(
            "a",
            a.base,
            "health = { interval = 0.2, timeout = 0.2 }, stop = { timeout = 1 }"
        ),
    ));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let old = pid(&status, "a");
    up.wait_line(&format!("ready a {old}"));

    let frozen = Frozen::freeze(old);
    let line = up.wait_line("unhealthy|");
    let f = fields(&line);
    assert_eq!(f[1..4], ["a", &old.to_string(), "unhealthy"], "{line}");
    assert!(!f[4].is_empty() && f[4] != "-", "a reason: {line}");

    // Three failed probes: reef kills it (SIGKILL after the 1 s stop timeout) and restarts it.
    let exit = up.wait_line("exit|");
    assert!(
        exit.contains("liveness"),
        "the exit's reason names the failed liveness probes: {exit}"
    );
    let lines = up.wait_events("a ready again", |l| ready_pids(l, "a").len() == 2);
    let new = ready_pids(&lines, "a")[1];
    assert_ne!(new, old, "{lines:#?}");
    up.track(new);
    wait_gone(old, "the frozen gateway");
    frozen.ended();
    assert_eq!(
        count(&lines, "healthy "),
        0,
        "it never recovered: {lines:#?}"
    );
    up.stop();
}

#[test]
fn a_gateway_that_recovers_is_reported_healthy() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}{READY_NOTE}
reef.on("unhealthy", function(e) note("unhealthy " .. e.name .. " " .. opt(e.pid)) end)
reef.on("healthy", function(e) note(table.concat({{ "healthy", e.name, opt(e.pid), opt(e.state) }}, "|")) end)
reef.on("exit", function(e) note("exit " .. e.name) end)
"#,
        gateway(
            "a",
            a.base,
            "health = { interval = 1, timeout = 0.3 }, stop = { timeout = 1 }"
        ),
    ));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let old = pid(&status, "a");

    // One failed probe, then SIGCONT before the second (a second later).
    let frozen = Frozen::freeze(old);
    up.wait_until("a unhealthy", |s| state(s, "a") == "unhealthy");
    drop(frozen);
    let line = up.wait_line("healthy|");
    assert_eq!(
        line,
        format!("healthy|a|{old}|ready"),
        "healthy again, same pid"
    );
    let lines = sandbox.events();
    assert_eq!(
        lines_with(&lines, "unhealthy "),
        [format!("unhealthy a {old}")]
    );
    assert_eq!(count(&lines, "exit "), 0, "never restarted: {lines:#?}");
    let status = up.wait_until("a ready", |s| state(s, "a") == "ready");
    assert_eq!(pid(&status, "a"), old, "{status:#}");
    up.stop();
}

#[test]
fn a_reload_event_lists_what_changed() {
    let [a, b, b2, c] = claim::<4>();
    let hooks = r#"
reef.on("reload", function(e)
  local d = e.diff
  note(table.concat({ "reload", table.concat(d.restart, ","), table.concat(d.start, ","),
    table.concat(d.stop, ","), table.concat(d.update_live, ","), table.concat(d.unchanged, ","),
    opt(d.summary), opt(e.name) }, "|"))
end)
"#;
    let sandbox = Sandbox::empty();
    let v1 = format!(
        "{}{}{hooks}",
        gateway("a", a.base, ""),
        gateway("b", b.base, "")
    );
    sandbox.rename_save_script(&sandbox.hooks_script(&v1));
    let mut up = sandbox.up();
    up.wait_enabled_ready();

    // b moves, c is added, a stays.
    let v2 = format!(
        "{}{}{}{hooks}",
        gateway("a", a.base, ""),
        gateway("b", b2.base, ""),
        gateway("c", c.base, "")
    );
    sandbox.rename_save_script(&sandbox.hooks_script(&v2));
    let line = up.wait_line("reload|");
    let f = fields(&line);
    assert_eq!(f[1], "b", "restart: {line}");
    assert_eq!(f[2], "c", "start: {line}");
    assert_eq!(f[3], "", "stop: {line}");
    assert_eq!(f[4], "", "update_live: {line}");
    assert_eq!(f[5], "a", "unchanged: {line}");
    assert!(f[6] != "-" && !f[6].is_empty(), "a summary: {line}");
    assert_eq!(f[7], "-", "a reload concerns no instance: {line}");
    up.wait_until("b moved and c started", |s| {
        enabled_ready(s)
            && instance(s, "b")["ports"]["gateway"] == b2.base
            && find(s, "c").is_some()
    });
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. Timers.

#[test]
fn timers_fire_on_schedule_also_when_scheduled_from_a_hook() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}
reef.every(0.1, function() note("tick") end)
reef.after(0.2, function() note("after") end)
reef.on("ready", function(e)
  reef.after(0.1, function() note("later " .. e.name) end)
  reef.every(0.1, function() note("hook-tick") end)
end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    up.wait_events("ticks, the one-shot timer and the hook's timers", |l| {
        count(l, "tick") > 3
            && count(l, "after") == 1
            && count(l, "later a") == 1
            && count(l, "hook-tick") > 3
    });
    // Many more ticks later, the one-shot timers still fired once.
    let lines = up.wait_events("ten more ticks", |l| count(l, "tick") > 13);
    assert_eq!(
        count(&lines, "after"),
        1,
        "reef.after fires once: {lines:#?}"
    );
    assert_eq!(
        count(&lines, "later a"),
        1,
        "reef.after fires once: {lines:#?}"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. reef.exec, reef.status, reef.log.

#[test]
fn exec_returns_code_and_output_and_kills_what_runs_past_its_timeout() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}
local function now_ns()
  local _, out = reef.exec {{ "date", "+%s%N" }}
  return tonumber(out)
end
local function flat(text) return (tostring(text):gsub("\n", "\\n")) end
reef.on("ready", function(e)
  local code, out, err = reef.exec {{ "sh", "-c", "echo out; echo err >&2; exit 3" }}
  note(table.concat({{ "plain", opt(code), flat(out), flat(err) }}, "|"))

  local before = now_ns()
  local code, err, third = reef.exec {{
    "sh", "-c", 'echo $$ > "$1"; exec sleep 5', "sleeper", DIR .. "/sleeper.pid", timeout = 0.3,
  }}
  local took = now_ns() - before
  note(table.concat({{ "timeout", opt(code), opt(err), opt(third), tostring(took) }}, "|"))

  local code, out = reef.exec {{
    "sh", "-c", 'printf "%s|%s" "$REEF_HOOK_TEST" "$(pwd)"', env = {{ REEF_HOOK_TEST = "yes" }}, cwd = DIR,
  }}
  note(table.concat({{ "envcwd", opt(code), out }}, "|"))

  local code, err = reef.exec {{ DIR .. "/no-such-program" }}
  note(table.concat({{ "missing", opt(code), opt(err) }}, "|"))

  for _, gateway in ipairs(reef.status().instances) do
    note(table.concat({{ "status", gateway.name, gateway.state, opt(gateway.pid) }}, "|"))
  end
  reef.log.info("exec checks done for " .. e.name)
end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let lines = up.wait_events("the exec results", |l| count(l, "status|") == 1);

    assert_eq!(lines_with(&lines, "plain|"), ["plain|3|out\\n|err\\n"]);

    let line = lines_with(&lines, "timeout|")[0];
    let f = fields(line);
    assert_eq!(f[1], "-", "no code after a timeout: {line}");
    assert!(
        f[2].contains("timed out"),
        "the error says it timed out: {line}"
    );
    assert_eq!(f[3], "-", "nil, err: {line}");
    let took = Duration::from_nanos(f[4].parse().expect("nanoseconds"));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "the 0.3 s timeout ended `sleep 5` quickly (took {took:?}): {line}"
    );
    let sleeper: u32 = std::fs::read_to_string(sandbox.path("sleeper.pid"))
        .expect("the sleeper wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_gone(sleeper, "the timed-out `sleep 5`");

    let expected = format!("envcwd|0|yes|{}", sandbox.dir().display());
    assert_eq!(lines_with(&lines, "envcwd|"), [expected.as_str()]);

    let line = lines_with(&lines, "missing|")[0];
    assert!(
        line.starts_with("missing|-|cannot run") && line.contains("no-such-program"),
        "a program that cannot start: nil, err: {line}"
    );

    assert_eq!(
        lines_with(&lines, "status|"),
        [format!("status|a|ready|{}", pid(&status, "a"))]
    );
    let script_line = line_of(
        &std::fs::read_to_string(&sandbox.script).unwrap(),
        "reef.log.info",
    );
    let stderr = up.wait_stderr("the hook's log line", |s| {
        s.contains("exec checks done for a")
    });
    let logged = stderr
        .lines()
        .find(|l| l.contains("exec checks done for a"))
        .expect("found above");
    assert!(
        logged.contains("INFO") && names_file_and_line(logged, "reef.lua", script_line),
        "reef.log.info logs at info level with the script's file and line {script_line}: {logged}"
    );
    up.stop();
}

#[test]
fn exec_returns_when_the_program_exits_even_if_it_left_a_background_process() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}
local function now_ns()
  local _, out = reef.exec {{ "date", "+%s%N" }}
  return tonumber(out)
end
reef.on("ready", function(e)
  local before = now_ns()
  -- The background sleep inherits the output pipes: reading to their end would wait 30 s.
  local code, out = reef.exec {{
    "sh", "-c", 'sleep 30 & echo $! > "$1"; echo started', "bg", DIR .. "/bg.pid", timeout = 20,
  }}
  local took = now_ns() - before
  note(table.concat({{ "bg", opt(code), (tostring(out):gsub("\n", "\\n")), tostring(took) }}, "|"))
end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    let line = up.wait_line("bg|");
    let background: u32 = std::fs::read_to_string(sandbox.path("bg.pid"))
        .expect("the background sleep wrote its pid")
        .trim()
        .parse()
        .expect("a pid");
    let f = fields(&line);
    let took = Duration::from_nanos(f[3].parse().expect("nanoseconds"));
    // The group is ended as the program exits; give the kernel a moment to deliver SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_runs(background) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let alive = process_runs(background);
    if alive {
        // Started for this test by reef on the hook's behalf: do not leave it behind.
        let _ = kill(
            Pid::from_raw(i32::try_from(background).expect("pid fits")),
            Signal::SIGKILL,
        );
    }
    assert_eq!(f[1..3], ["0", "started\\n"], "{line}");
    assert!(
        took < Duration::from_secs(3),
        "exec returned when `sh` exited, not when its background child did (took {took:?})"
    );
    assert!(
        !alive,
        "what the program left running in its process group is ended"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. Hooks that raise or run past their budget.

#[test]
fn a_hook_that_raises_is_logged_with_file_and_line_and_the_others_run() {
    let [a] = claim::<1>();
    let body = format!(
        r#"{}
reef.on("ready", function(e) error("boom " .. e.name) end)
reef.on("ready", function(e) note("second " .. e.name .. " " .. opt(e.pid)) end)
reef.after(0.1, function() error("timer boom") end)
reef.on("exit", function(e) note("exit " .. e.name) end)
"#,
        gateway("a", a.base, ""),
    );
    let sandbox = Sandbox::with(&body);
    let text = std::fs::read_to_string(&sandbox.script).expect("the script");
    let hook_line = line_of(&text, "error(\"boom");
    let timer_line = line_of(&text, "error(\"timer boom");
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let old = pid(&status, "a");
    up.wait_line(&format!("second a {old}"));

    let stderr = up.wait_stderr("the failed hooks", |s| {
        s.contains("boom a") && s.contains("timer boom")
    });
    let failed = stderr
        .lines()
        .find(|l| l.contains("boom a"))
        .expect("found above");
    assert!(
        failed.contains("failed") && names_file_and_line(failed, "reef.lua", hook_line),
        "the error names the hook's file and line {hook_line}: {failed}"
    );
    let timer = stderr
        .lines()
        .find(|l| l.contains("timer boom"))
        .expect("found above");
    assert!(
        timer.contains("failed") && names_file_and_line(timer, "reef.lua", timer_line),
        "the timer's error names its file and line {timer_line}: {timer}"
    );

    // Later events still reach every hook, the failing one included.
    send_signal(old, Signal::SIGKILL);
    up.wait_line("exit a");
    let lines = up.wait_events("a's second ready", |l| count(l, "second a ") == 2);
    let new: u32 = lines_with(&lines, "second a ")[1]
        .rsplit(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("a pid");
    up.track(new);
    up.wait_stderr("the failing hook's second failure", |s| {
        s.lines().filter(|l| l.contains("boom a")).count() == 2
    });
    up.stop();
}

#[test]
fn an_endless_hook_is_stopped_and_supervision_goes_on() {
    let [a, b] = claim::<2>();
    let body = format!(
        r#"{}{}
local looped = false
reef.on("ready", "a", function(e)
  if looped then return end
  looped = true
  note("looping")
  while true do end
end)
{READY_NOTE}reef.on("exit", function(e) note("exit " .. e.name) end)
"#,
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    );
    let sandbox = Sandbox::with(&body);
    let text = std::fs::read_to_string(&sandbox.script).expect("the script");
    let hook_line = line_of(&text, "reef.on(\"ready\", \"a\"");
    let mut up = sandbox.up();
    up.wait_line("looping");
    let looping_since = Instant::now();
    // Supervision goes on while the hook loops: status answers, both gateways get ready.
    let status = up.wait_enabled_ready();
    let stderr = up.wait_stderr("the endless hook to be stopped", |s| {
        s.contains("was stopped")
    });
    let stopped_after = looping_since.elapsed();
    assert!(
        stopped_after < Duration::from_secs(8),
        "the hook's budget (5 s) stopped it, after {stopped_after:?}"
    );
    let stopped = stderr
        .lines()
        .find(|l| l.contains("was stopped"))
        .expect("found above");
    assert!(
        names_file_and_line(stopped, "reef.lua", hook_line),
        "the log names the hook's file and line {hook_line}: {stopped}"
    );

    // The events queued meanwhile, and later ones, reach the hooks; the gateways kept their pids.
    let pids = [("a", pid(&status, "a")), ("b", pid(&status, "b"))];
    for (name, pid) in pids {
        up.wait_line(&format!("ready {name} {pid}"));
    }
    let status = up.wait_until("a status", |_| true);
    for (name, old) in pids {
        assert_eq!(pid(&status, name), old, "{name} kept its pid: {status:#}");
        assert_eq!(state(&status, name), "ready", "{status:#}");
    }
    send_signal(pids[1].1, Signal::SIGKILL);
    up.wait_line("exit b");
    let lines = up.wait_events("b ready again", |l| ready_pids(l, "b").len() == 2);
    up.track(ready_pids(&lines, "b")[1]);
    assert_eq!(count(&lines, "looping"), 1, "{lines:#?}");
    up.stop();
}

#[test]
fn a_hook_that_allocates_without_end_is_stopped_and_the_others_run() {
    let [a] = claim::<1>();
    let body = format!(
        r#"{}
reef.on("ready", function(e)
  local grown = {{}}
  for i = 1, 1e9 do grown[i] = ("x"):rep(1 << 20) .. i end
end)
reef.on("ready", function(e) note("second " .. e.name) end)
reef.after(0.1, function()
  reef.after(0.1, function() note("timer after the bomb") end)
end)
"#,
        gateway("a", a.base, ""),
    );
    let sandbox = Sandbox::with(&body);
    let text = std::fs::read_to_string(&sandbox.script).expect("the script");
    let bomb_line = line_of(&text, "grown[i]");
    let mut up = sandbox.up();
    up.wait_enabled_ready();
    let stderr = up.wait_stderr("the memory bomb to be stopped", |s| {
        s.contains("memory limit")
    });
    let stopped = stderr
        .lines()
        .find(|l| l.contains("memory limit"))
        .expect("found above");
    assert!(
        names_file_and_line(stopped, "reef.lua", bomb_line),
        "the log names the line {bomb_line} that allocated: {stopped}"
    );
    up.wait_events("the other hook and a timer", |l| {
        count(l, "second a") == 1 && count(l, "timer after the bomb") == 1
    });
    up.wait_enabled_ready();
    up.stop();
}

#[test]
fn a_hook_waiting_on_a_program_does_not_stall_supervision() {
    let [a, b] = claim::<2>();
    let sandbox = Sandbox::with(&format!(
        r#"{}{}
reef.on("ready", "a", function(e)
  note("sleeping")
  reef.exec {{ "sleep", "4" }}
  note("slept")
end)
reef.on("exit", function(e) note("exit " .. e.name) end)
"#,
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    ));
    let mut up = sandbox.up();
    up.wait_line("sleeping");
    let status = up.wait_enabled_ready();
    let old_b = pid(&status, "b");
    send_signal(old_b, Signal::SIGKILL);
    up.wait_until("b restarted while the hook sleeps", |s| {
        ready_with_new_pid(s, "b", old_b)
    });
    let lines = sandbox.events();
    assert_eq!(
        count(&lines, "slept"),
        0,
        "b was restarted while the hook still waited: {lines:#?}"
    );
    // The waiting hook holds up no other: b's exit reaches its hook before the sleep ends.
    let lines = up.wait_events("b's exit event and the end of the sleep", |l| {
        count(l, "exit b") == 1 && count(l, "slept") == 1
    });
    assert_eq!(lines, ["sleeping", "exit b", "slept"]);
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. Actions.

#[test]
fn hooks_restart_start_and_stop_gateways() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::empty();
    let go = sandbox.path("go");
    let body = format!(
        r#"{}{}{}{READY_NOTE}
-- Acts once the test creates the file GO.
local GO = {go}
reef.every(0.1, function()
  if reef.exec {{ "rm", GO }} ~= 0 then return end
  local restarted = reef.restart("a")
  local started = reef.start("b")
  local stopped = reef.stop("c")
  local unknown, err = reef.restart("nosuch")
  note(table.concat({{ "acted", opt(restarted), opt(started), opt(stopped), opt(unknown), opt(err) }}, "|"))
end)
"#,
        gateway("a", a.base, ""),
        gateway("b", b.base, "enabled = false"),
        gateway("c", c.base, ""),
        go = lua_string(go.to_str().expect("temp paths are UTF-8")),
    );
    sandbox.rename_save_script(&sandbox.hooks_script(&body));
    let mut up = sandbox.up();
    let before = up.wait_until("a and c ready", |s| {
        state(s, "a") == "ready" && state(s, "c") == "ready"
    });
    assert_eq!(state(&before, "b"), "stopped", "b is disabled: {before:#}");
    let (old_a, old_c) = (pid(&before, "a"), pid(&before, "c"));

    std::fs::write(&go, "").expect("the trigger is written");
    let line = up.wait_line("acted|");
    let f = fields(&line);
    assert_eq!(f[1..5], ["true", "true", "true", "-"], "{line}");
    assert!(
        f[5].contains("no instance named `nosuch`"),
        "an unknown name is nil, err: {line}"
    );
    let after = up.wait_until("a restarted, b started, c stopped", |s| {
        ready_with_new_pid(s, "a", old_a) && state(s, "b") == "ready" && state(s, "c") == "stopped"
    });
    assert_eq!(instance(&after, "c")["pid"], Value::Null, "{after:#}");
    wait_gone(old_a, "a's old gateway");
    wait_gone(old_c, "c's gateway");
    let lines = up.wait_events("b's ready event", |l| ready_pids(l, "b").len() == 1);
    assert_eq!(ready_pids(&lines, "b"), [pid(&after, "b")]);
    assert_eq!(ready_pids(&lines, "a").last(), Some(&pid(&after, "a")));
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. Hooks are replaced on reload; a failed reload keeps them.

#[test]
fn hooks_are_replaced_on_reload_and_kept_when_it_fails() {
    let [a, b] = claim::<2>();
    let gateways = format!("{}{}", gateway("a", a.base, ""), gateway("b", b.base, ""));
    let sandbox = Sandbox::empty();
    let v1 = format!(
        r#"{gateways}
reef.on("ready", function(e) note("v1 ready " .. e.name) end)
reef.every(0.1, function() note("v1 tick") end)
"#
    );
    let v2 = format!(
        r#"{gateways}
reef.on("ready", function(e) note("v2 ready " .. e.name) end)
reef.on("reload", function(e) note("v2 reload") end)
"#
    );
    let v3 = format!(
        r#"{gateways}
reef.on("ready", function(e) note("v3 ready " .. e.name) end
"#
    );
    sandbox.rename_save_script(&sandbox.hooks_script(&v1));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    up.wait_events("v1's hooks and timer", |l| {
        count(l, "v1 ready a") == 1 && count(l, "v1 ready b") == 1 && count(l, "v1 tick") > 0
    });

    sandbox.rename_save_script(&sandbox.hooks_script(&v2));
    let lines = up.wait_events("v2's reload hook", |l| count(l, "v2 reload") == 1);
    let v1_lines = count(&lines, "v1 ");

    sandbox.run_ok(&["restart", "a"]);
    let lines = up.wait_events("v2's ready hook for a", |l| count(l, "v2 ready a") == 1);
    assert_eq!(
        count(&lines, "v1 "),
        v1_lines,
        "no v1 hook or timer ran after the reload: {lines:#?}"
    );

    sandbox.rename_save_script(&sandbox.hooks_script(&v3));
    up.wait_until("the reload error", |s| s["reload_error"] != Value::Null);
    let old_b = pid(&status, "b");
    sandbox.run_ok(&["restart", "b"]);
    up.wait_until("b restarted", |s| ready_with_new_pid(s, "b", old_b));
    let lines = up.wait_events("v2's ready hook for b", |l| count(l, "v2 ready b") == 1);
    assert_eq!(count(&lines, "v1 "), v1_lines, "{lines:#?}");
    assert_eq!(count(&lines, "v3 "), 0, "{lines:#?}");
    assert_eq!(
        count(&lines, "v2 reload"),
        1,
        "a failed reload is no reload event: {lines:#?}"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 7. Misuse that `reef plan` reports.

#[test]
fn plan_reports_misused_automation() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "start-at-top.lua",
            "reef.start(\"main\")\n",
            &["reef.start", "call it from a hook"],
        ),
        (
            "status-at-top.lua",
            "reef.status()\n",
            &["reef.status", "call it from a hook"],
        ),
        (
            "unknown-instance.lua",
            "reef.on(\"exit\", \"mian\", function() end)\n",
            &["no instance named `mian`", "did you mean `main`"],
        ),
        (
            "unknown-event.lua",
            "reef.on(\"exitt\", function() end)\n",
            &["unknown event \"exitt\"", "did you mean \"exit\""],
        ),
        (
            "named-reload.lua",
            "reef.on(\"reload\", \"main\", function() end)\n",
            &["reload", "drop the name"],
        ),
        (
            "too-fast.lua",
            "reef.every(0.01, function() end)\n",
            &["reef.every", "0.05"],
        ),
    ];
    let [main] = claim::<1>();
    let sandbox = Sandbox::empty();
    for (file, line, expected) in cases {
        let text = format!(
            "local reef = require \"reef\"\n{}{line}",
            gateway("main", main.base, "")
        );
        std::fs::write(sandbox.path(file), text).expect("the script is written");
        let run = sandbox.run(&["plan", file]);
        assert_eq!(run.code, EXIT_SCRIPT_ERROR, "{file}:\n{run}");
        for needle in *expected {
            assert!(run.stderr.contains(needle), "{file}: {needle:?}:\n{run}");
        }
        assert!(
            names_file_and_line(&run.stderr, file, 3),
            "{file}: the error names line 3:\n{run}"
        );
    }
}

/// The evaluation sandbox runs no program: `reef plan` (like every evaluation: `reef diff`,
/// each reload) must not run what a script's top level passes to `reef.exec`, as it refuses
/// `reef.start` there.
#[test]
fn plan_runs_no_program() {
    let [main] = claim::<1>();
    let sandbox = Sandbox::empty();
    let marker = sandbox.path("ran");
    sandbox.rename_save_script(&format!(
        "local reef = require \"reef\"\n{}reef.exec {{ \"touch\", {} }}\n",
        gateway("main", main.base, ""),
        lua_string(marker.to_str().expect("temp paths are UTF-8"))
    ));
    let run = sandbox.run(&["plan", sandbox.script()]);
    assert!(
        !marker.exists(),
        "`reef plan` ran `touch` from the script:\n{run}"
    );
    assert_eq!(run.code, EXIT_SCRIPT_ERROR, "{run}");
    assert!(run.stderr.contains("call it from a hook"), "{run}");
}

// ---------------------------------------------------------------------------------------------
// 8 and 9. Repairing a gateway that exits 78.

/// Breaks main's config and restarts it; waits until main is ready again on a new pid with
/// `repaired` in place, checking at every poll that `rescue` keeps its pid and stays ready.
/// Returns the last status.
fn break_main_and_await_repair(up: &mut Up<'_>, sandbox: &Sandbox, repaired: &Path) -> Value {
    let before = up.wait_until("main and rescue ready", |s| {
        state(s, "main") == "ready" && state(s, "rescue") == "ready"
    });
    let (old_main, rescue) = (pid(&before, "main"), pid(&before, "rescue"));
    sandbox.break_config("main");
    sandbox.run_ok(&["restart", "main"]);
    let after = up.wait_until_checking(
        "main repaired and ready on a new pid",
        |status| {
            assert_eq!(
                pid_in(instance(status, "rescue")),
                Some(rescue),
                "the rescue keeps its pid throughout: {status:#}"
            );
            assert_eq!(
                state(status, "rescue"),
                "ready",
                "the rescue stays ready throughout: {status:#}"
            );
        },
        |status| ready_with_new_pid(status, "main", old_main) && repaired.exists(),
    );
    assert_eq!(
        std::fs::read_to_string(repaired).expect("the broken config was moved aside"),
        "{ broken"
    );
    assert!(
        !sandbox.config_path("main").exists(),
        "nothing replaced the broken config"
    );
    let stderr = up.wait_stderr("main's exit 78", |s| s.contains("exited 78"));
    assert!(
        stderr.contains("a hook asks to restart it"),
        "the hook restarted main: {stderr}"
    );
    wait_gone(old_main, "main's first gateway");
    after
}

#[test]
fn the_rescue_failover_example_repairs_main_while_the_rescue_keeps_running() {
    let [main, rescue, standby] = claim::<3>();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rescue-failover.lua"),
    )
    .expect("the example is readable");
    let mut text = example.clone();
    for (from, to) in [
        ("18789", main.base),
        ("19789", rescue.base),
        ("20789", standby.base),
    ] {
        assert_eq!(
            example.matches(from).count(),
            1,
            "the example uses port {from} once"
        );
        text = text.replace(from, &to.to_string());
    }
    let sandbox = Sandbox::empty();
    sandbox.rename_save_script(&text);
    let mut up = sandbox.up();
    let repaired = PathBuf::from(format!("{}.broken", sandbox.config_path("main").display()));
    let after = break_main_and_await_repair(&mut up, &sandbox, &repaired);
    assert_eq!(state(&after, "standby"), "stopped", "{after:#}");
    assert_eq!(instance(&after, "standby")["pid"], Value::Null, "{after:#}");
    let stderr = up.wait_stderr("the hook's warning", |s| s.contains("repairing"));
    assert!(
        stderr.contains("main exited 78 (configuration error); repairing"),
        "{stderr}"
    );
    up.stop();
}

#[test]
fn the_rescue_module_repairs_main_on_exit_78() {
    let [first, second] = claim::<2>();
    let (low, high) = if first.base < second.base {
        (first.base, second.base)
    } else {
        (second.base, first.base)
    };
    let sandbox = Sandbox::empty();
    sandbox.rename_save_script(&format!(
        r#"local rescue = require "reef.rescue"
rescue.pair {{
  port = {low},
  spacing = {spacing},
  repair = {{ "sh", "-c", "mv {{config}} {{config}}.bad" }},
}}
"#,
        spacing = high - low,
    ));
    let mut up = sandbox.up();
    let repaired = PathBuf::from(format!("{}.bad", sandbox.config_path("main").display()));
    let after = break_main_and_await_repair(&mut up, &sandbox, &repaired);
    assert_eq!(instance(&after, "rescue")["ports"]["gateway"], high);
    up.stop();
}

#[test]
fn the_rescue_module_repairs_a_config_broken_before_reef_up() {
    let [first, second] = claim::<2>();
    let (low, high) = (first.base.min(second.base), first.base.max(second.base));
    let sandbox = Sandbox::empty();
    sandbox.rename_save_script(&format!(
        r#"local rescue = require "reef.rescue"
rescue.pair {{ port = {low}, spacing = {}, repair = {{ "sh", "-c", "mv {{config}} {{config}}.bad" }} }}
"#,
        high - low,
    ));
    sandbox.break_config("main");
    let mut up = sandbox.up();
    let repaired = PathBuf::from(format!("{}.bad", sandbox.config_path("main").display()));
    up.wait_until("main repaired and ready", |s| {
        state(s, "main") == "ready" && state(s, "rescue") == "ready" && repaired.exists()
    });
    let stderr = up.wait_stderr("the module's warning", |s| s.contains("running its repair"));
    let warned = stderr
        .lines()
        .find(|l| l.contains("running its repair"))
        .expect("found above");
    assert!(
        warned.contains("WARN") && warned.contains("reef/rescue.lua:"),
        "the shipped module's log line names its file and line: {warned}"
    );
    up.stop();
}

#[test]
fn a_failed_repair_leaves_main_in_config_error() {
    let [first, second] = claim::<2>();
    let (low, high) = (first.base.min(second.base), first.base.max(second.base));
    let sandbox = Sandbox::empty();
    sandbox.rename_save_script(&format!(
        r#"local rescue = require "reef.rescue"
rescue.pair {{ port = {low}, spacing = {}, repair = {{ "sh", "-c", "echo cannot repair >&2; exit 4" }} }}
"#,
        high - low,
    ));
    let mut up = sandbox.up();
    let before = up.wait_enabled_ready();
    let rescue = pid(&before, "rescue");
    sandbox.break_config("main");
    sandbox.run_ok(&["restart", "main"]);
    let stderr = up.wait_stderr("the failed repair", |s| s.contains("repair failed"));
    let failed = stderr
        .lines()
        .find(|l| l.contains("repair failed"))
        .expect("found above");
    assert!(
        failed.contains("ERROR") && failed.contains("(4)") && failed.contains("cannot repair"),
        "the error gives the repair's exit code and stderr: {failed}"
    );
    let after = up.wait_until("main in config-error", |s| {
        state(s, "main") == "config-error"
    });
    assert_eq!(pid(&after, "rescue"), rescue, "{after:#}");
    assert!(
        sandbox.config_path("main").exists(),
        "the config stays in place"
    );
    let log = up.stop();
    assert!(
        !log.contains("a hook asks to restart it"),
        "main is not restarted after a failed repair: {log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The hook host: a process of its own that no hook can wedge.

#[test]
fn a_stuck_hook_host_is_killed_and_restarted_while_supervision_goes_on() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::with(&format!(
        r#"{}
reef.every(0.1, function() note("tick") end)
reef.on("exit", "a", function() note("exit seen") end)
"#,
        gateway("a", a.base, ""),
    ));
    let mut up = sandbox.up();
    up.wait_enabled_ready();
    up.wait_events("the first ticks", |l| count(l, "tick") >= 3);
    let before = up.status();
    let host = before["hooks"]["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("status shows the hook host: {before:#}"));
    // A host that stops answering, whatever the cause (here it is stopped outright; a loop in C
    // or in a finalizer looks the same from outside).
    send_signal(host, Signal::SIGSTOP);
    let _continue_on_failure = Frozen(host);
    let gateway_pid = pid(&before, "a");
    sandbox.run_ok(&["restart", "a"]);
    // Supervision goes on: the gateway is restarted while the host is stuck.
    let restarted_gateway = up.wait_until("a to be ready again", |s| {
        ready_with_new_pid(s, "a", gateway_pid)
    });
    assert_eq!(
        restarted_gateway["hooks"]["restarts"].as_u64(),
        Some(0),
        "the host is not yet given up on: {restarted_gateway:#}"
    );
    let restarted = up.wait_until("the hook host to be restarted", |s| {
        s["hooks"]["restarts"].as_u64().unwrap_or(0) >= 1
            && s["hooks"]["pid"]
                .as_u64()
                .is_some_and(|pid| pid != u64::from(host))
    });
    let reason = restarted["hooks"]["last_restart"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("killed") && reason.contains(" event "),
        "the restart says why: {restarted:#}"
    );
    wait_gone(host, "the stuck hook host");
    // The new host runs the same script: its timers fire again.
    let ticks = count(&sandbox.events(), "tick");
    up.wait_events("ticks from the restarted host", |l| {
        count(l, "tick") >= ticks + 5
    });
    let log = up.stop();
    assert!(
        log.contains("restarting it from the last good script"),
        "the restart is logged: {log}"
    );
}

#[test]
fn hooks_see_spawns_stops_and_failed_reloads() {
    let [a] = claim::<1>();
    let body = |extra: &str| {
        format!(
            r#"{}
reef.on("spawned", function(e) note("spawned|" .. e.name .. "|" .. opt(e.pid)) end)
reef.on("backoff", function(e) note("backoff|" .. e.name .. "|" .. opt(e.reason)) end)
reef.on("stopped", function(e) note("stopped|" .. e.name .. "|" .. opt(e.reason)) end)
reef.on("reload-failed", function(e) note("reload-failed|" .. opt(e.name) .. "|" .. opt(e.reason)) end)
{extra}
"#,
            gateway("a", a.base, "restart = { backoff = { initial = 0.1 } }"),
        )
    };
    let sandbox = Sandbox::with(&body(""));
    let mut up = sandbox.up();
    let status = up.wait_enabled_ready();
    let first = pid(&status, "a");
    let spawned = up.wait_line("spawned|a|");
    assert_eq!(spawned, format!("spawned|a|{first}"));
    let restart = sandbox.run(&["restart", "a", sandbox.script()]);
    assert_eq!(restart.code, 0, "{restart}");
    up.wait_line("stopped|a|");
    sandbox.rename_save_script(&sandbox.hooks_script(&body("error('broken on purpose')")));
    let failed = up.wait_line("reload-failed|");
    assert!(
        failed.starts_with("reload-failed|-|") && failed.contains("broken on purpose"),
        "{failed}"
    );
    up.stop();
}
