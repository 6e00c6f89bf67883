//! reef's own files under attack, end to end: a socket directory another user got first, a
//! log that is a symbolic link to someone's file, a state dir deleted under a running `reef up`,
//! and `reef setup` on a linked state dir.
//!
//! Every test runs in its own sandbox (see `tests/common`); a `reef up` runs under an [`Up`]
//! guard that stops it even when the test panics, and states are awaited by polling
//! `reef status --json`, never by sleeping.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use reef::layout::TopologyDirs;

use common::*;

/// The exit code of an ordinary failure (see `reef --help`).
const EXIT_FAILURE: i32 = 3;

/// Shares `tests/up.rs`'s range; the claim files keep the binaries apart.
const PORTS: PortRange = PortRange::new(20_000, 32_000, 200);

/// A topology with no gateway: enough for what reef does with its own files.
const EMPTY: &str = "local reef = require \"reef\"\n";

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Where reef places the sandbox's topology (as `reef` run in the sandbox sees it).
fn dirs(sandbox: &Sandbox) -> TopologyDirs {
    let env: BTreeMap<String, String> =
        [("HOME".to_owned(), sandbox.home.display().to_string())].into();
    TopologyDirs::for_script(&sandbox.script, &env).expect("the topology has a place")
}

/// `reef up` in the sandbox with extra environment variables.
fn up_with_env<'a>(sandbox: &'a Sandbox, vars: &[(&str, &Path)]) -> Up<'a> {
    let mut command = sandbox.command(&["up", sandbox.script()]);
    for (key, value) in vars {
        command.env(key, value);
    }
    Up {
        proc: Proc::spawn(command, &sandbox.outputs, "reef up"),
        sandbox,
        gateways: BTreeSet::new(),
    }
}

/// A sandbox whose HOME is so deep that the control socket beside the lock would not fit in a
/// socket path: reef falls back to `$TMPDIR/reef-UID`.
fn deep_sandbox(script: &str) -> Sandbox {
    let sandbox = Sandbox::new(script);
    let home = sandbox.tmp.path().join("h".repeat(80));
    std::fs::create_dir(&home).expect("the deep HOME");
    Sandbox { home, ..sandbox }
}

#[test]
fn a_squatted_socket_dir_is_passed_over_for_a_private_one() {
    let sandbox = deep_sandbox(EMPTY);
    let temp = sandbox.path("tmp");
    std::fs::create_dir(&temp).unwrap();
    // Another user's world-writable directory where reef's would be (as root, given away; as
    // anyone else, a link to a directory reef must not use).
    let squatted = temp.join(format!("reef-{}", uid()));
    if uid() == 0 {
        std::fs::create_dir(&squatted).unwrap();
        std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
    } else {
        let elsewhere = sandbox.path("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &squatted).unwrap();
    }

    let mut up = up_with_env(&sandbox, &[("TMPDIR", &temp)]);
    // `reef status` (run without that TMPDIR) finds the socket through the lock file.
    let status = up.status();
    assert_eq!(
        status["pid"].as_u64(),
        Some(u64::from(up.proc.pid())),
        "{status:#}"
    );
    let socket = dirs(&sandbox).running_socket();
    let socket_dir = socket.parent().unwrap();
    assert!(!socket.starts_with(&squatted), "{}", socket.display());
    assert_eq!(socket_dir.parent(), Some(temp.as_path()));
    assert!(
        socket_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("reef-{}-", uid())),
        "{}",
        socket.display()
    );
    let meta = std::fs::symlink_metadata(socket_dir).unwrap();
    assert!(meta.is_dir() && meta.uid() == uid() && meta.mode() & 0o777 == 0o700);
    assert_eq!(
        std::fs::read_dir(&squatted).unwrap().count(),
        0,
        "nothing was put in the squatted dir"
    );
    let stderr = up.wait_stderr("a warning about the squatted dir", |stderr| {
        stderr.contains(&squatted.display().to_string())
    });
    assert!(
        stderr.contains(&socket_dir.display().to_string()),
        "{stderr}"
    );
    up.stop();
}

#[test]
fn a_linked_log_is_never_written_through() {
    let footprint = Footprint::claim_in(&PORTS);
    let sandbox = Sandbox::new(&format!("{EMPTY}{}", gateway("main", footprint.base, "")));
    let victim = sandbox.path("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let dirs = dirs(&sandbox);
    std::fs::create_dir_all(&dirs.logs).unwrap();
    let log = dirs.log("main");
    std::os::unix::fs::symlink(&victim, &log).unwrap();

    let mut up = sandbox.up();
    let status = up.wait_until("main to report its linked log", |status| {
        instance(status, "main")["message"]
            .as_str()
            .is_some_and(|message| message.contains("symbolic link"))
    });
    let message = instance(&status, "main")["message"].as_str().unwrap();
    assert!(
        message.contains(&log.display().to_string()) && message.contains("remove it"),
        "the error names the log and what to do: {status:#}"
    );
    assert_eq!(instance(&status, "main")["pid"], serde_json::Value::Null);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    up.stop();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn deleting_the_state_dir_does_not_let_a_second_reef_up_start() {
    let sandbox = Sandbox::new(EMPTY);
    let mut up = sandbox.up();
    up.status();
    let dirs = dirs(&sandbox);
    std::fs::remove_dir_all(&dirs.dir).unwrap();

    let second = sandbox.run(&["up", sandbox.script()]);
    assert_eq!(second.code, EXIT_FAILURE, "{second}");
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&up.proc.pid().to_string()),
        "the refusal names the running reef (pid {}): {second}",
        up.proc.pid()
    );
    up.assert_running("the second reef up to be refused", "(not polled)");
    assert_eq!(up.stop_with(Signal::SIGTERM), 0, "{}", up.proc.output());
}

#[test]
fn setup_refuses_a_linked_state_dir_unless_allowed() {
    let sandbox = Sandbox::new(&format!("{EMPTY}{}", gateway("main", 18789, "")));
    let real: PathBuf = sandbox.path("real-state");
    std::fs::create_dir(&real).unwrap();
    let linked = sandbox.home.join(".openclaw-main");
    std::os::unix::fs::symlink(&real, &linked).unwrap();

    let refused = sandbox.run(&["setup", sandbox.script()]);
    assert_eq!(refused.code, EXIT_FAILURE, "{refused}");
    assert!(
        refused.stderr.contains(&linked.display().to_string())
            && refused.stderr.contains("--allow-symlinks"),
        "the refusal names the link and the way on: {refused}"
    );
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

    let allowed = sandbox.run(&["setup", "--allow-symlinks", sandbox.script()]);
    assert_eq!(allowed.code, 0, "{allowed}");
    assert!(real.join("openclaw.json").is_file(), "{allowed}");
}
