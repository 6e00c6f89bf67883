//! Hot reload end to end on the built-in gateway: `reef up` watches its script and every module
//! the script required, applies a changed topology (restarting only the instances whose spec
//! changed, starting added ones, stopping removed ones, updating live fields in place), keeps
//! the running topology when the script fails and shows the error in `reef status`, and
//! reloads on `reef reload` and SIGHUP; `reef diff` tells what a reload would do.
//!
//! Every test runs in its own temporary HOME (so its own state dirs, logs and control socket)
//! with base ports of its own (see [`Footprint`]), writes its topology there, and runs `reef up`
//! in the background under an [`Up`] guard that stops it (SIGTERM, then SIGKILL after 15 s) even
//! when the test panics. Nothing sleeps for a fixed time where a state can be awaited: tests poll
//! `reef status --json` every 50 ms with a 30 s deadline and panic with the last status. Checks
//! that something did *not* happen first wait for a positive signal (a new generation, one more
//! evaluation, a reload error) and then look at the pids.

mod common;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::*;

/// Base ports are handed out from 44000..52000 (this binary's range; `tests/up.rs` and
/// `tests/restore.rs` use the ranges below) in steps of 126, which hold one footprint (111
/// ports) with a little room to spare.
///
/// The range lies inside Linux's ephemeral port range (32768..60999), where other programs'
/// outgoing connections take local ports; such a socket makes a gateway's port unbindable
/// ("held by another process") for as long as the connection lives. Since Linux 4.6
/// `connect()` picks even ports first, so every base port here is odd (an odd start, an even
/// step): the gateway port and browser control (base + 2) are then odd too.
const PORTS: PortRange = PortRange::odd(44_000, 52_000, 126);

/// `n` footprints.
fn claim<const N: usize>() -> [Footprint; N] {
    Footprint::claim_n(&PORTS)
}

// ---------------------------------------------------------------------------------------------
// Topologies (see also `tests/common`).

/// A script: the `reef` module, then `lines` (line 1 is `local reef = require "reef"`).
fn script(lines: &[String]) -> String {
    let mut text = String::from("local reef = require \"reef\"\n");
    for line in lines {
        text.push_str(line);
    }
    text
}

/// Instances a, b and c on the given ports, nothing else.
fn trio(a: u16, b: u16, c: u16) -> String {
    script(&[
        gateway("a", a, ""),
        gateway("b", b, ""),
        gateway("c", c, ""),
    ])
}

// ---------------------------------------------------------------------------------------------
// Reading statuses (see also `tests/common`).

/// `name` is ready on a gateway port `port` with a pid other than `old`.
fn restarted_on(status: &Value, name: &str, old: u32, port: u16) -> bool {
    find(status, name).is_some_and(|i| {
        i["state"] == "ready"
            && pid_in(i).is_some_and(|p| p != old)
            && i["ports"]["gateway"] == port
    })
}

/// A check for [`Up::wait_until_checking`]: each named instance still runs with its pid.
fn keeps_pids<'a>(kept: &'a [(&'a str, u32)]) -> impl FnMut(&Value) + 'a {
    move |status| {
        for &(name, expected) in kept {
            assert_eq!(
                pid_in(instance(status, name)),
                Some(expected),
                "`{name}` must keep its pid {expected}: {status:#}"
            );
        }
    }
}

/// The pids of the named instances in `status`.
fn pids_of<'a>(status: &Value, names: &[&'a str]) -> Vec<(&'a str, u32)> {
    names
        .iter()
        .map(|&name| (name, pid(status, name)))
        .collect()
}

/// A variable of a running process's environment.
fn environ_var(pid: u32, var: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    raw.split(|&byte| byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_owned))
}

/// Whether `text` contains `file:N:` for some line number N.
fn names_file_and_line(text: &str, file: &str) -> bool {
    let needle = format!("{file}:");
    text.match_indices(&needle).any(|(at, _)| {
        let rest = &text[at + needle.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(':')
    })
}

// ---------------------------------------------------------------------------------------------
// 1. A changed port restarts only that instance.

#[test]
fn changing_one_port_restarts_only_that_instance() {
    let [a, b, c, b2] = claim::<4>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    assert_eq!(generation(&before), 1, "{before:#}");
    assert_eq!(evaluations(&before), 0, "{before:#}");
    assert_eq!(before["reload_error"], Value::Null, "{before:#}");
    let loaded_at = before["loaded_at"].as_f64().expect("loaded_at");
    let old_b = pid(&before, "b");
    let kept = pids_of(&before, &["a", "c"]);

    sandbox.edit_script(&trio(a.base, b2.base, c.base));
    let after = up.wait_until_checking(
        "b to be ready on its new port with a new pid",
        keeps_pids(&kept),
        |status| generation(status) == 2 && restarted_on(status, "b", old_b, b2.base),
    );
    assert!(
        after["loaded_at"].as_f64().expect("loaded_at") > loaded_at,
        "loaded_at moves with the generation: {after:#}"
    );
    assert_eq!(after["reload_error"], Value::Null, "{after:#}");
    assert_eq!(names(&after), ["a", "b", "c"], "{after:#}");
    for name in ["a", "c"] {
        assert_eq!(state(&after, name), "ready", "{after:#}");
        assert_eq!(restarts(&after, name), 0, "{after:#}");
    }
    assert_eq!(
        instance(&after, "b")["ports"]["browser_control"],
        b2.base + 2
    );
    assert_gone(old_b, "b's old gateway");
    assert!(port_is_free(b.base), "b's old port {} is free", b.base);
    up.stop();
}

/// An upgrade installs a new binary at reef's path while `reef up` runs: reloads still evaluate
/// (with the running version: its children run the file it runs) and new gateways start.
#[test]
fn reloads_keep_working_after_reefs_binary_is_replaced() {
    let [a, b, c, b2] = claim::<4>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let installed = sandbox.path("bin/reef");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_reef"), &installed).unwrap();
    let command = sandbox.command(&["up", sandbox.script()]);
    let mut replaced = std::process::Command::new(&installed);
    replaced.args(command.get_args());
    replaced.current_dir(sandbox.dir());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => replaced.env(key, value),
            None => replaced.env_remove(key),
        };
    }
    let mut up = Up {
        proc: Proc::spawn(replaced, &sandbox.outputs, "reef up (installed copy)"),
        sandbox: &sandbox,
        gateways: Default::default(),
    };
    let before = up.wait_all_ready();
    let old_b = pid(&before, "b");

    // What a package manager does: the old file goes, a new one takes its path.
    std::fs::remove_file(&installed).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_reef"), &installed).unwrap();
    sandbox.edit_script(&trio(a.base, b2.base, c.base));
    let after = up.wait_until("the reload to apply", |status| {
        status["reload_error"] != Value::Null
            || (generation(status) == 2 && restarted_on(status, "b", old_b, b2.base))
    });
    assert_eq!(after["reload_error"], Value::Null, "{after:#}");
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. A broken script changes nothing; the fix applies.

#[test]
fn a_syntax_error_keeps_everything_running_and_the_fix_applies() {
    let [a, b, c, b2] = claim::<4>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);
    let evaluated = evaluations(&before);

    // Line 3 lacks the port's value.
    let broken = script(&[
        gateway("a", a.base, ""),
        format!("reef.gateway {{ profile = \"b\", port = = {} }}\n", b2.base),
        gateway("c", c.base, ""),
    ]);
    sandbox.edit_script(&broken);
    let failed = up.wait_until_checking("the reload error", keeps_pids(&pids), |status| {
        status["reload_error"] != Value::Null
    });
    let message = failed["reload_error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("the reload error has a message: {failed:#}"));
    assert!(
        names_file_and_line(message, "reef.lua"),
        "the message names the file and line (`reef.lua:N:`): {failed:#}"
    );
    assert!(
        message.contains("reef.lua:3:"),
        "the error is on line 3: {failed:#}"
    );
    assert!(
        failed["reload_error"]["at"].as_f64().is_some(),
        "the error has a time: {failed:#}"
    );
    assert_eq!(generation(&failed), 1, "{failed:#}");
    assert!(evaluations(&failed) > evaluated, "{failed:#}");
    assert!(all_ready(&failed), "{failed:#}");
    for (name, _) in &pids {
        assert_eq!(restarts(&failed, name), 0, "{failed:#}");
    }

    let human = sandbox.run(&["status", sandbox.script()]);
    assert_eq!(human.code, 0, "{human}");
    assert!(human.stdout.contains("last reload failed"), "{human}");
    assert!(human.stdout.contains("reef.lua:3:"), "{human}");
    // reef's log has it too.
    assert!(
        up.proc.stderr().contains("reef.lua:3:"),
        "the error is logged{}",
        up.proc.output()
    );

    // Still nothing moved once the error is in.
    let still = up.status();
    keeps_pids(&pids)(&still);

    sandbox.edit_script(&trio(a.base, b2.base, c.base));
    let fixed = up.wait_until_checking("the fix to apply", keeps_pids(&pids[..1]), |status| {
        status["reload_error"] == Value::Null
            && generation(status) == 2
            && restarted_on(status, "b", pids[1].1, b2.base)
    });
    assert_eq!(pid(&fixed, "c"), pids[2].1, "{fixed:#}");
    let human = sandbox.run(&["status", sandbox.script()]);
    assert!(!human.stdout.contains("last reload failed"), "{human}");
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 3. Editing a required module reloads.

fn ports_module(a: u16, b: u16, c: u16) -> String {
    format!("return {{ a = {a}, b = {b}, c = {c} }}\n")
}

#[test]
fn editing_a_required_module_reloads() {
    let [a, b, c, b2] = claim::<4>();
    let sandbox = Sandbox::new(&script(&[
        "local ports = require \"lib.ports\"\n".to_owned(),
        gateway("a", "ports.a", ""),
        gateway("b", "ports.b", ""),
        gateway("c", "ports.c", ""),
    ]));
    sandbox.write("lib/ports.lua", &ports_module(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    assert_eq!(gateway_port(&before, "b"), u64::from(b.base), "{before:#}");
    let old_b = pid(&before, "b");
    let kept = pids_of(&before, &["a", "c"]);

    sandbox.write("lib/ports.lua", &ports_module(a.base, b2.base, c.base));
    up.wait_until_checking(
        "b to restart on the module's new port",
        keeps_pids(&kept),
        |status| generation(status) == 2 && restarted_on(status, "b", old_b, b2.base),
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. Editors that save by rename.

#[test]
fn an_editor_style_rename_save_reloads() {
    let [a, b, c, b2, c2] = claim::<5>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let old_b = pid(&before, "b");
    let kept = pids_of(&before, &["a", "c"]);

    // Write a temp file beside the script, rename it over the script.
    sandbox.rename_save_script(&trio(a.base, b2.base, c.base));
    let renamed = up.wait_until_checking("the rename save to apply", keeps_pids(&kept), |status| {
        generation(status) == 2 && restarted_on(status, "b", old_b, b2.base)
    });
    assert!(
        !sandbox.path("reef.lua.tmp").exists(),
        "the temp file was renamed away"
    );

    // The new inode is watched too: a backup-then-write save (vim's way: move the script to
    // `reef.lua~`, write a new `reef.lua`) applies as well.
    let kept = pids_of(&renamed, &["a", "b"]);
    let old_c = pid(&renamed, "c");
    std::fs::rename(&sandbox.script, sandbox.path("reef.lua~")).expect("backup rename");
    sandbox.edit_script(&trio(a.base, b2.base, c2.base));
    up.wait_until_checking(
        "the backup-then-write save to apply",
        keeps_pids(&kept),
        |status| {
            generation(status) >= 3
                && status["reload_error"] == Value::Null
                && restarted_on(status, "c", old_c, c2.base)
        },
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. A burst of writes: few evaluations, the last content wins.

#[test]
fn a_burst_of_writes_ends_in_the_last_contents_state_with_few_evaluations() {
    const WRITES: u32 = 100;
    let [a, b, c, b2] = claim::<4>();
    let b_with = |port: u16, n: u32| {
        script(&[
            gateway("a", a.base, ""),
            gateway("b", port, &format!("env = {{ REEF_TEST_BURST = \"{n}\" }}")),
            gateway("c", c.base, ""),
        ])
    };
    let sandbox = Sandbox::new(&b_with(b.base, 0));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let old_b = pid(&before, "b");
    assert_eq!(
        environ_var(old_b, "REEF_TEST_BURST").as_deref(),
        Some("0"),
        "b's gateway runs with its env"
    );
    let kept = pids_of(&before, &["a", "c"]);
    let evaluated = evaluations(&before);
    let generated = generation(&before);

    // Every write a different env value for b; the last also moves b to a new port.
    for n in 1..WRITES {
        sandbox.edit_script(&b_with(b.base, n));
    }
    let last = WRITES.to_string();
    sandbox.edit_script(&b_with(b2.base, WRITES));

    let after = up.wait_until_checking(
        "b to run the last content (new port, last env value)",
        keeps_pids(&kept),
        |status| {
            restarted_on(status, "b", old_b, b2.base)
                && environ_var(pid(status, "b"), "REEF_TEST_BURST").as_deref()
                    == Some(last.as_str())
        },
    );
    // The files have been quiet since the last write: any evaluation of the burst is done.
    let settled = up.wait_until("the topology to be settled", |status| {
        status["reload_error"] == Value::Null && all_ready(status)
    });
    let burst_evaluations = evaluations(&settled) - evaluated;
    eprintln!(
        "reload burst: {WRITES} writes -> {burst_evaluations} evaluation(s), generation {} -> {}",
        generated,
        generation(&settled)
    );
    assert!(
        burst_evaluations >= 1,
        "the burst was evaluated at least once: {settled:#}"
    );
    assert!(
        burst_evaluations <= 10,
        "{WRITES} writes cost {burst_evaluations} evaluations; the debounce should merge them: {settled:#}"
    );
    assert!(generation(&after) > generated, "{after:#}");
    assert_eq!(
        environ_var(pid(&settled, "b"), "REEF_TEST_BURST").as_deref(),
        Some(last.as_str()),
        "{settled:#}"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. and 7. Removing and adding instances.

#[test]
fn removing_an_instance_stops_it_and_only_it() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let kept = pids_of(&before, &["a", "b"]);
    let old_c = pid(&before, "c");

    sandbox.edit_script(&script(&[
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    ]));
    let after = up.wait_until_checking("c to be gone", keeps_pids(&kept), |status| {
        generation(status) == 2 && find(status, "c").is_none()
    });
    assert_eq!(names(&after), ["a", "b"], "{after:#}");
    assert!(all_ready(&after), "{after:#}");
    assert_gone(old_c, "the removed instance's gateway");
    assert!(port_is_free(c.base), "c's port {} is free again", c.base);
    for (name, _) in &kept {
        assert_eq!(restarts(&after, name), 0, "{after:#}");
    }
    up.stop();
}

#[test]
fn adding_an_instance_starts_it_and_touches_nothing_else() {
    let [a, b, c, d] = claim::<4>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let kept = pids_of(&before, &["a", "b", "c"]);

    sandbox.edit_script(&script(&[
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
        gateway("c", c.base, ""),
        gateway("d", d.base, ""),
    ]));
    let after = up.wait_until_checking("d to be ready", keeps_pids(&kept), |status| {
        generation(status) == 2 && find(status, "d").is_some_and(|d| d["state"] == "ready")
    });
    assert_eq!(names(&after), ["a", "b", "c", "d"], "{after:#}");
    assert_eq!(gateway_port(&after, "d"), u64::from(d.base), "{after:#}");
    assert_eq!(restarts(&after, "d"), 0, "{after:#}");
    for (name, _) in &kept {
        assert_eq!(restarts(&after, name), 0, "{after:#}");
    }
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 8. Live fields restart nothing.

#[test]
fn a_live_field_change_restarts_nothing_and_takes_effect() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);

    sandbox.edit_script(&script(&[
        gateway("a", a.base, "health = { interval = 1 }"),
        gateway("b", b.base, "restart = { policy = \"on-failure\" }"),
        gateway("c", c.base, ""),
    ]));
    let after = up.wait_until_checking("generation 2", keeps_pids(&pids), |status| {
        generation(status) == 2
    });
    for (name, _) in &pids {
        let status = instance(&after, name);
        assert_eq!(status["state"], "ready", "{after:#}");
        assert_eq!(status["restarts"], 0, "{after:#}");
        assert_eq!(status["last_exit"], Value::Null, "never stopped: {after:#}");
    }

    // The new policy is in force: b ended cleanly is not restarted any more ("always" would).
    kill(Pid::from_raw(pids[1].1 as i32), Signal::SIGTERM).expect("b's gateway can be signalled");
    let ended = up.wait_until_checking(
        "b to have exited for good",
        keeps_pids(&[pids[0], pids[2]]),
        |status| state(status, "b") == "exited",
    );
    let b_status = instance(&ended, "b");
    assert_eq!(b_status["last_exit"], "exit code 0", "{ended:#}");
    assert_eq!(b_status["restarts"], 0, "{ended:#}");
    assert!(
        b_status["message"]
            .as_str()
            .is_some_and(|m| m.contains("restart policy")),
        "{ended:#}"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 9. reef diff, reef reload, SIGHUP.

#[test]
fn diff_changes_nothing_then_reload_and_sighup_apply() {
    let [a, b, c, b2, c2] = claim::<5>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    // A debounce far longer than the test: only reef reload and SIGHUP reload.
    let mut up = sandbox.up_with(&["--debounce-ms", "60000"]);
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);

    let nothing = sandbox.run(&["diff", sandbox.script()]);
    assert_eq!(nothing.code, 0, "{nothing}");
    assert!(
        nothing.stdout.contains("a reload would change nothing"),
        "{nothing}"
    );

    sandbox.edit_script(&trio(a.base, b2.base, c.base));
    let diff = sandbox.run(&["diff", sandbox.script(), "--json"]);
    assert_eq!(diff.code, 0, "{diff}");
    let json: Value = serde_json::from_str(&diff.stdout)
        .unwrap_or_else(|err| panic!("`reef diff --json` prints JSON ({err}): {diff}"));
    assert_eq!(json["restart"], serde_json::json!(["b"]), "{json:#}");
    assert_eq!(json["unchanged"], serde_json::json!(["a", "c"]), "{json:#}");
    for empty in ["start", "stop", "update_live"] {
        assert_eq!(json[empty], serde_json::json!([]), "{json:#}");
    }
    assert_eq!(json["summary"], "restart b", "{json:#}");
    let human = sandbox.run(&["diff", sandbox.script()]);
    assert_eq!(human.code, 0, "{human}");
    let restart_line = human
        .stdout
        .lines()
        .find(|line| line.starts_with("restart"))
        .unwrap_or_else(|| panic!("no restart line: {human}"));
    assert_eq!(
        restart_line.split_whitespace().collect::<Vec<_>>(),
        ["restart", "b"],
        "{human}"
    );

    // The diffs were evaluations (the positive signal), and changed nothing.
    let diffed = up.wait_until_checking("the diffs to be counted", keeps_pids(&pids), |status| {
        evaluations(status) >= evaluations(&before) + 3
    });
    assert_eq!(generation(&diffed), 1, "{diffed:#}");
    assert_eq!(gateway_port(&diffed, "b"), u64::from(b.base), "{diffed:#}");
    assert!(all_ready(&diffed), "{diffed:#}");

    let reload = sandbox.run(&["reload", sandbox.script()]);
    assert_eq!(reload.code, 0, "{reload}");
    assert_eq!(reload.stdout.trim(), "reloaded: restart b", "{reload}");
    let reloaded = up.wait_until_checking(
        "b to restart after reef reload",
        keeps_pids(&[pids[0], pids[2]]),
        |status| generation(status) == 2 && restarted_on(status, "b", pids[1].1, b2.base),
    );

    // SIGHUP after another edit.
    let kept = pids_of(&reloaded, &["a", "b"]);
    sandbox.edit_script(&trio(a.base, b2.base, c2.base));
    up.proc.signal(Signal::SIGHUP);
    up.wait_until_checking("c to restart after SIGHUP", keeps_pids(&kept), |status| {
        generation(status) == 3 && restarted_on(status, "c", pids[2].1, c2.base)
    });
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 10. A module required by a reload is watched from then on.

#[test]
fn a_module_required_after_a_reload_is_watched() {
    let [a, b, c, c2, c3] = claim::<5>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    sandbox.write("lib/extra.lua", &format!("return {}\n", c2.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let kept = pids_of(&before, &["a", "b"]);
    let old_c = pid(&before, "c");

    sandbox.edit_script(&script(&[
        "local extra = require \"lib.extra\"\n".to_owned(),
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
        gateway("c", "extra", ""),
    ]));
    let required = up.wait_until_checking(
        "c to move to the module's port",
        keeps_pids(&kept),
        |status| generation(status) == 2 && restarted_on(status, "c", old_c, c2.base),
    );
    let old_c = pid(&required, "c");

    sandbox.write("lib/extra.lua", &format!("return {}\n", c3.base));
    up.wait_until_checking(
        "c to follow the edited module",
        keeps_pids(&kept),
        |status| generation(status) == 3 && restarted_on(status, "c", old_c, c3.base),
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 11. A changed spec gives an instance in config-error a fresh start.

#[test]
fn an_instance_in_config_error_starts_fresh_when_its_spec_changes() {
    let [a, b, c, b2, c2] = claim::<5>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let config = sandbox.config_path("b");
    std::fs::create_dir_all(config.parent().expect("a state dir")).expect("b's state dir");
    std::fs::write(&config, "{ gateway: ").expect("a broken config");

    let mut up = sandbox.up();
    let failed = up.wait_until("a and c ready, b in config-error", |status| {
        state(status, "a") == "ready"
            && state(status, "c") == "ready"
            && state(status, "b") == "config-error"
    });
    assert_eq!(
        instance(&failed, "b")["last_exit"],
        "exit code 78",
        "{failed:#}"
    );
    let a_pid = pid(&failed, "a");

    // A reload that leaves b's spec alone leaves b alone.
    let old_c = pid(&failed, "c");
    sandbox.edit_script(&trio(a.base, b.base, c2.base));
    let untouched = up.wait_until_checking(
        "c to restart on its new port",
        keeps_pids(&[("a", a_pid)]),
        |status| generation(status) == 2 && restarted_on(status, "c", old_c, c2.base),
    );
    assert_eq!(state(&untouched, "b"), "config-error", "{untouched:#}");
    assert_eq!(restarts(&untouched, "b"), 0, "{untouched:#}");

    // The config is fixed (removed) and b's port changes: b starts again, fresh.
    let kept = pids_of(&untouched, &["a", "c"]);
    std::fs::remove_file(&config).expect("the bad config can be removed");
    sandbox.edit_script(&trio(a.base, b2.base, c2.base));
    let fixed = up.wait_until_checking(
        "b to be ready on its new port",
        keeps_pids(&kept),
        |status| {
            generation(status) == 3
                && find(status, "b")
                    .is_some_and(|b| b["state"] == "ready" && b["ports"]["gateway"] == b2.base)
        },
    );
    assert_eq!(instance(&fixed, "b")["message"], Value::Null, "{fixed:#}");
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 12. Dependencies: a changed dependent restarts only once its changed dependency is ready.

#[test]
fn a_dependent_restarts_after_its_restarted_dependency_is_ready() {
    let [a, b] = claim::<2>();
    let topology = |n: u32| {
        script(&[
            gateway(
                "a",
                a.base,
                &format!(
                    "args = {{ \"--startup-delay\", \"1\" }}, env = {{ REEF_TEST_GEN = \"{n}\" }}"
                ),
            ),
            gateway(
                "b",
                b.base,
                &format!("depends_on = {{ \"a\" }}, env = {{ REEF_TEST_GEN = \"{n}\" }}"),
            ),
        ])
    };
    let sandbox = Sandbox::new(&topology(1));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let (old_a, old_b) = (pid(&before, "a"), pid(&before, "b"));

    sandbox.edit_script(&topology(2));
    let after = up.wait_until_checking(
        "both to be ready with new pids",
        |status| {
            if let Some(new_b) = pid_in(instance(status, "b")).filter(|&p| p != old_b) {
                let a_now = instance(status, "a");
                assert!(
                    a_now["state"] == "ready" && pid_in(a_now) != Some(old_a),
                    "b runs again (pid {new_b}) before the new a is ready: {status:#}"
                );
            }
        },
        |status| {
            generation(status) == 2
                && all_ready(status)
                && pid(status, "a") != old_a
                && pid(status, "b") != old_b
        },
    );
    let a_ready = instance(&after, "a")["since"].as_f64().expect("since");
    let b_started = instance(&after, "b")["started_at"]
        .as_f64()
        .expect("started_at");
    assert!(
        b_started >= a_ready,
        "b started at {b_started}, before a was ready again at {a_ready}: {after:#}"
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 13. reef diff and reef reload of a broken script.

#[test]
fn diff_and_reload_of_a_broken_script_report_the_error_and_change_nothing() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up_with(&["--debounce-ms", "60000"]);
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);

    sandbox.edit_script(&format!(
        "{}reef.gateway {{ profile = \"d\"\n",
        trio(a.base, b.base, c.base)
    ));
    let diff = sandbox.run(&["diff", sandbox.script(), "--json"]);
    assert_ne!(diff.code, 0, "{diff}");
    assert!(names_file_and_line(&diff.stderr, "reef.lua"), "{diff}");
    let diffed = up.wait_until_checking("the diff to be counted", keeps_pids(&pids), |status| {
        evaluations(status) > evaluations(&before)
    });
    assert_eq!(
        diffed["reload_error"],
        Value::Null,
        "a diff is no reload: {diffed:#}"
    );
    assert_eq!(generation(&diffed), 1, "{diffed:#}");

    let reload = sandbox.run(&["reload", sandbox.script()]);
    assert_ne!(reload.code, 0, "{reload}");
    assert!(names_file_and_line(&reload.stderr, "reef.lua"), "{reload}");
    let failed = up.wait_until_checking("the reload error", keeps_pids(&pids), |status| {
        status["reload_error"] != Value::Null
    });
    assert_eq!(generation(&failed), 1, "{failed:#}");
    assert!(all_ready(&failed), "{failed:#}");
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 14. A broken module: the error names the module; fixing the module applies.

#[test]
fn an_error_in_a_module_is_reported_and_fixing_the_module_applies() {
    let [a, b, c, b2] = claim::<4>();
    let sandbox = Sandbox::new(&script(&[
        "local ports = require \"lib.ports\"\n".to_owned(),
        gateway("a", "ports.a", ""),
        gateway("b", "ports.b", ""),
        gateway("c", "ports.c", ""),
    ]));
    sandbox.write("lib/ports.lua", &ports_module(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);

    sandbox.write(
        "lib/ports.lua",
        &format!("return {{ a = {}, b = , c = {} }}\n", a.base, c.base),
    );
    let failed = up.wait_until_checking("the reload error", keeps_pids(&pids), |status| {
        status["reload_error"] != Value::Null
    });
    let message = failed["reload_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        names_file_and_line(message, "ports.lua"),
        "the message names the module and line: {failed:#}"
    );
    assert_eq!(generation(&failed), 1, "{failed:#}");

    // The module that failed is still watched: fixing it applies.
    sandbox.write("lib/ports.lua", &ports_module(a.base, b2.base, c.base));
    up.wait_until_checking(
        "the fixed module to apply",
        keeps_pids(&[pids[0], pids[2]]),
        |status| {
            status["reload_error"] == Value::Null
                && generation(status) == 2
                && restarted_on(status, "b", pids[1].1, b2.base)
        },
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 15. Two instances swap ports.

#[test]
fn two_instances_swapping_ports_both_end_ready() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let (old_a, old_b) = (pid(&before, "a"), pid(&before, "b"));
    let kept = pids_of(&before, &["c"]);

    sandbox.edit_script(&trio(b.base, a.base, c.base));
    up.wait_until_checking(
        "a and b on each other's ports",
        keeps_pids(&kept),
        |status| {
            generation(status) == 2
                && restarted_on(status, "a", old_a, b.base)
                && restarted_on(status, "b", old_b, a.base)
        },
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// 16. enabled = false stops an instance, enabled = true starts it again.

#[test]
fn disabling_and_enabling_an_instance_by_reload() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let kept = pids_of(&before, &["a", "c"]);
    let old_b = pid(&before, "b");

    sandbox.edit_script(&script(&[
        gateway("a", a.base, ""),
        gateway("b", b.base, "enabled = false"),
        gateway("c", c.base, ""),
    ]));
    let disabled = up.wait_until_checking("b to be stopped", keeps_pids(&kept), |status| {
        generation(status) == 2 && state(status, "b") == "stopped"
    });
    assert_eq!(instance(&disabled, "b")["pid"], Value::Null, "{disabled:#}");
    assert_gone(old_b, "the disabled instance's gateway");

    sandbox.edit_script(&trio(a.base, b.base, c.base));
    up.wait_until_checking("b to run again", keeps_pids(&kept), |status| {
        generation(status) == 3 && restarted_on(status, "b", old_b, b.base)
    });
    up.stop();
}

#[test]
fn an_emptied_script_mid_save_stops_nothing() {
    let [a, b, c] = claim::<3>();
    let sandbox = Sandbox::new(&trio(a.base, b.base, c.base));
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let pids = pids_of(&before, &["a", "b", "c"]);

    // An editor that truncates before writing, caught in between.
    sandbox.edit_script("");
    let failed = up.wait_until_checking("the reload error", keeps_pids(&pids), |status| {
        status["reload_error"] != Value::Null
    });
    let message = failed["reload_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("is empty"), "{failed:#}");
    assert!(all_ready(&failed), "{failed:#}");
    assert_eq!(generation(&failed), 1, "{failed:#}");

    // A script that says so in Lua may empty the topology.
    sandbox.edit_script("-- no gateways for now\n");
    let emptied = up.wait_until("every instance stopped", |status| {
        instances(status).is_empty()
    });
    assert_eq!(emptied["reload_error"], Value::Null, "{emptied:#}");
    for (name, pid) in pids {
        assert_gone(pid, name);
    }
}

// ---------------------------------------------------------------------------------------------
// The config follows the plan: a port moved by a reload is written into the gateway's
// openclaw.json (in the file where it lives, comments kept, a backup beside it) before the
// gateway starts on it, so `openclaw --profile X` finds the gateway.

#[test]
fn a_port_moved_by_a_reload_is_written_into_the_gateways_config() {
    let [a, a2] = claim::<2>();
    let sandbox = Sandbox::new(&script(&[gateway("a", a.base, "")]));
    let state_dir = sandbox.home.join(".openclaw-a");
    std::fs::create_dir_all(&state_dir).unwrap();
    let main = "{\n  // the gateway section is in its own file\n  gateway: { $include: './gateway.json5' },\n}\n";
    std::fs::write(state_dir.join("openclaw.json"), main).unwrap();
    let included = format!(
        "{{\n  mode: 'local', // kept\n  port: {},\n}}\n",
        a.base + 7
    );
    std::fs::write(state_dir.join("gateway.json5"), &included).unwrap();

    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    // At start: the stale port was brought in line first.
    let written = std::fs::read_to_string(state_dir.join("gateway.json5")).unwrap();
    assert_eq!(
        written,
        included.replace(&(a.base + 7).to_string(), &a.base.to_string())
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("gateway.json5.reef-backup")).unwrap(),
        included
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("openclaw.json")).unwrap(),
        main
    );

    let old = pid(&before, "a");
    sandbox.edit_script(&script(&[gateway("a", a2.base, "")]));
    up.wait_until("a to be ready on its new port", |status| {
        generation(status) == 2 && restarted_on(status, "a", old, a2.base)
    });
    let written = std::fs::read_to_string(state_dir.join("gateway.json5")).unwrap();
    assert!(
        written.contains(&format!("port: {}", a2.base)) && written.contains("// kept"),
        "{written}"
    );
    assert!(
        up.proc
            .output()
            .contains(&format!("set gateway.port {}", a2.base)),
        "reef logs the change:\n{}",
        up.proc.output()
    );
    up.stop();
}

#[test]
fn a_config_reef_cannot_edit_safely_keeps_the_gateway_from_starting() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::new(&script(&[gateway("a", a.base, "")]));
    let state_dir = sandbox.home.join(".openclaw-a");
    std::fs::create_dir_all(&state_dir).unwrap();
    let text = "{ gateway: { port: '${SOME_PORT}' }, env: { vars: { SOME_PORT: '1234' } } }";
    std::fs::write(state_dir.join("openclaw.json"), text).unwrap();
    let mut up = sandbox.up();
    let status = up.wait_until("a to be refused", |status| state(status, "a") == "exited");
    let message = instance(&status, "a")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("${SOME_PORT}") && message.contains("not started"),
        "{status:#}"
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("openclaw.json")).unwrap(),
        text
    );
    up.stop();
}

// ---------------------------------------------------------------------------------------------
// The gateway's own degraded state (its restart-loop breaker) shows in the status, with what
// to do, and goes away when it recovers. A wrapper prints what the real gateway prints.

#[test]
fn a_tripped_restart_loop_breaker_shows_in_the_status_until_it_recovers() {
    let [a] = claim::<1>();
    let sandbox = Sandbox::empty();
    let flag = sandbox.path("recovered");
    let wrapper = format!(
        "echo '2026-12-01T05:30:50.582+00:00 [gateway] restart-loop breaker tripped: 3 unclean boot(s) within 300000ms; suppressing channel/provider account auto-start.' >&2; \
         ( while [ ! -e {flag} ]; do sleep 0.05; done; echo '[gateway] restart-loop breaker recovered; channel auto-start restored' ) & \
         exec {reef} gateway --port {port}",
        flag = flag.display(),
        reef = env!("CARGO_BIN_EXE_reef"),
        port = a.base,
    );
    sandbox.edit_script(&script(&[gateway(
        "a",
        a.base,
        &format!(
            "command = {{ \"sh\", \"-c\", {} }}, health = {{ interval = 0.2 }}",
            lua_string(&wrapper)
        ),
    ), "reef.on(\"degraded\", function(e) reef.log.warn(\"hook saw degraded: \" .. e.reason) end)\n".to_owned(),
    "reef.on(\"recovered\", function(e) reef.log.warn(\"hook saw recovered: \" .. e.reason) end)\n".to_owned()]));
    let mut up = sandbox.up();
    let status = up.wait_until("a to be ready and degraded", |status| {
        state(status, "a") == "ready" && instance(status, "a")["degraded"].is_object()
    });
    let a_status = instance(&status, "a");
    assert_eq!(a_status["degraded"]["reason"], "gateway.crash_loop_breaker");
    let message = a_status["message"].as_str().unwrap();
    assert!(
        message.starts_with("degraded: restart-loop breaker tripped")
            && message.contains("channels.start"),
        "{status:#}"
    );
    let table = sandbox.run(&["status", sandbox.script()]);
    assert!(table.stdout.contains("degraded:"), "{table}");

    std::fs::write(&flag, "").unwrap();
    up.wait_until("a to be no longer degraded", |status| {
        let a = instance(status, "a");
        a["degraded"].is_null() && a["message"].is_null() && state(status, "a") == "ready"
    });
    up.wait_output("both hooks", |output| {
        output
            .contains("hook saw degraded: gateway.crash_loop_breaker: restart-loop breaker tripped")
            && output.contains("hook saw recovered: gateway.crash_loop_breaker is over")
    });
    up.stop();
}

#[test]
fn check_knows_the_topology_is_running() {
    let [a, b] = claim::<2>();
    let sandbox = Sandbox::new(&script(&[
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    ]));
    let mut up = sandbox.up();
    up.wait_all_ready();
    let run = sandbox.run(&["check", sandbox.script()]);
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .contains("ready to run (2 of its gateways are running now"),
        "{run}"
    );
    let run = sandbox.run(&["check", "--json", sandbox.script()]);
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["running"], 2, "{run}");
    up.stop();
}

#[test]
fn a_reload_that_changes_nothing_keeps_the_generation() {
    let [a, b] = claim::<2>();
    let text = script(&[gateway("a", a.base, "")]);
    let sandbox = Sandbox::new(&text);
    let mut up = sandbox.up();
    let before = up.wait_all_ready();
    let old = pid(&before, "a");
    let run = sandbox.run(&["reload", sandbox.script()]);
    assert_eq!(run.code, 0, "{run}");
    // A comment changes no gateway either.
    sandbox.edit_script(&format!("{text}-- a comment\n"));
    let status = up.wait_until("the edit to be evaluated", |status| {
        evaluations(status) >= 2
    });
    assert_eq!(generation(&status), 1, "{status:#}");
    assert_eq!(pid(&status, "a"), old, "{status:#}");
    // A real change still applies.
    sandbox.edit_script(&script(&[
        gateway("a", a.base, ""),
        gateway("b", b.base, ""),
    ]));
    up.wait_until("b to start in generation 2", |status| {
        generation(status) == 2 && state(status, "b") == "ready"
    });
    up.stop();
}

#[test]
fn with_no_watch_a_save_waits_for_reef_reload() {
    let [a, a2] = claim::<2>();
    let sandbox = Sandbox::new(&script(&[gateway("a", a.base, "")]));
    let mut up = sandbox.up_with(&["--no-watch"]);
    let before = up.wait_all_ready();
    let old = pid(&before, "a");
    sandbox.edit_script(&script(&[gateway("a", a2.base, "")]));
    // The save is not applied: `reef diff` still has it to do.
    let diff = sandbox.run(&["diff", sandbox.script()]);
    assert_eq!(diff.code, 0, "{diff}");
    assert!(
        diff.stdout.contains("restart") && diff.stdout.contains('a'),
        "{diff}"
    );
    // Ten debounce periods later, still nothing was applied.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(750);
    while std::time::Instant::now() < deadline {
        let status = up.status();
        assert_eq!(generation(&status), 1, "{status:#}");
        assert_eq!(pid(&status, "a"), old, "{status:#}");
    }
    let run = sandbox.run(&["reload", sandbox.script()]);
    assert_eq!(run.code, 0, "{run}");
    up.wait_until("a on its new port", |status| {
        generation(status) == 2 && restarted_on(status, "a", old, a2.base)
    });
    up.stop();
}

#[test]
fn diff_compares_the_running_topology_with_a_candidate_file() {
    let [a, b, a2] = claim::<3>();
    let sandbox = Sandbox::new(&script(&[gateway("a", a.base, "")]));
    let mut up = sandbox.up();
    up.wait_all_ready();
    sandbox.write(
        "candidate.lua",
        &script(&[gateway("a", a2.base, ""), gateway("b", b.base, "")]),
    );
    let candidate = sandbox.path("candidate.lua");
    let candidate = candidate.to_str().unwrap();
    for args in [
        vec!["diff", candidate],
        vec!["diff", sandbox.script(), candidate],
    ] {
        let run = sandbox.run(&args);
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains("start        b"), "{run}");
        assert!(run.stdout.contains("restart      a"), "{run}");
        assert!(
            run.stderr.contains("comparing the topology running"),
            "{run}"
        );
    }
    let status = up.status();
    assert_eq!(generation(&status), 1, "nothing was applied: {status:#}");
    assert_eq!(instances(&status).len(), 1, "{status:#}");
    up.stop();
}
