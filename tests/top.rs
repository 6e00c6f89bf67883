//! `reef top` end to end in a real pseudo-terminal: the dashboard of a running `reef up` shows
//! its gateways, restarts one on `r`, quits on `q` (or SIGTERM) and gives the terminal back as
//! it found it; a lost reef is shown, not a crash. Also its refusals: no terminal (exit 64), no
//! reef running (exit 4).
//!
//! `reef top` runs as a session leader with the slave side of a pty (120x40, TERM
//! xterm-256color) as its controlling terminal and stdin, stdout and stderr; a thread drains the
//! master side into a [`vt100`] parser, so the tests read the screen a person would see, and
//! keep the raw bytes to check the escape sequences. Nothing sleeps for a fixed time: the tests
//! poll the parsed screen every 50 ms with a 30 s deadline and panic with the screen.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, tcgetattr};
use nix::unistd::Pid;

use common::*;

/// Exit codes (see `reef --help`).
const EXIT_NOT_RUNNING: i32 = 4;
const EXIT_USAGE: i32 = 64;

/// This binary's base ports: `tests/up.rs`'s range (the claim files keep the two apart).
const PORTS: PortRange = PortRange::new(20_000, 32_000, 200);

const ROWS: u16 = 40;
const COLUMNS: u16 = 120;

const ENTER_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049h";
const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";
const SHOW_CURSOR: &[u8] = b"\x1b[?25h";

/// What the master side of the pty received: parsed, and raw.
struct Output {
    parser: vt100::Parser,
    raw: Vec<u8>,
}

/// `reef ARGS` on a pseudo-terminal of its own. Dropping it kills the process if it still
/// runs (by its pid: it leads its own session and starts nothing).
struct Tty {
    child: Child,
    master: File,
    /// The test's own handle on the terminal, to read its modes while and after reef runs.
    slave: Option<OwnedFd>,
    output: Arc<Mutex<Output>>,
    reader: Option<JoinHandle<()>>,
    status: Option<std::process::ExitStatus>,
}

impl Tty {
    fn spawn(sandbox: &Sandbox, args: &[&str]) -> Tty {
        let size = Winsize {
            ws_row: ROWS,
            ws_col: COLUMNS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("a pseudo-terminal");
        let stdio = || Stdio::from(pty.slave.try_clone().expect("the pty's slave side dups"));
        let mut command = sandbox.command(args);
        command
            .env("TERM", "xterm-256color")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio());
        // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                // The pty becomes the controlling terminal, as a login shell's would be.
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("reef starts");
        drop(command);
        let output = Arc::new(Mutex::new(Output {
            parser: vt100::Parser::new(
                std::num::NonZeroU16::new(ROWS).expect("rows"),
                std::num::NonZeroU16::new(COLUMNS).expect("columns"),
                0,
            ),
            raw: Vec::new(),
        }));
        let mut reading = File::from(pty.master.try_clone().expect("the pty's master side dups"));
        let reader = std::thread::spawn({
            let output = Arc::clone(&output);
            move || {
                let mut buffer = [0; 4096];
                // Ends with EIO once every slave descriptor is closed.
                while let Ok(n @ 1..) = reading.read(&mut buffer) {
                    let mut output = output.lock().unwrap();
                    output.parser.process(&buffer[..n]);
                    output.raw.extend_from_slice(&buffer[..n]);
                }
            }
        });
        Tty {
            child,
            master: File::from(pty.master),
            slave: Some(pty.slave),
            output,
            reader: Some(reader),
            status: None,
        }
    }

    /// The screen as text, a line a row.
    fn screen(&self) -> String {
        self.output.lock().unwrap().parser.screen().contents()
    }

    fn raw(&self) -> Vec<u8> {
        self.output.lock().unwrap().raw.clone()
    }

    /// Waits until `done` holds for the screen; returns it. Panics with the screen if reef
    /// exits first or the deadline passes.
    fn wait_screen(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if let Some(status) = self.try_status() {
                panic!("reef top exited ({status}) while waiting for {what}; screen:\n{screen}");
            }
            if Instant::now() >= deadline {
                panic!("timed out after {DEADLINE:?} waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Types `keys`.
    fn send(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("the pty takes keys");
    }

    fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait works");
        }
        self.status
    }

    /// The exit code within [`DEADLINE`].
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_status() {
                return status
                    .code()
                    .unwrap_or_else(|| panic!("reef died of a signal ({status})"));
            }
            if Instant::now() >= deadline {
                panic!(
                    "reef did not exit within {DEADLINE:?}; screen:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The terminal's local modes (echo, canonical input) as reef leaves them.
    fn local_flags(&self) -> LocalFlags {
        let slave = self.slave.as_ref().expect("the slave side is open");
        tcgetattr(slave.as_fd())
            .expect("the pty's modes can be read")
            .local_flags
    }

    /// Everything reef wrote, once it has exited: the slave side closed, the reader drained.
    fn finish(&mut self) -> Vec<u8> {
        assert!(self.try_status().is_some(), "reef top still runs");
        self.slave = None;
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader ends");
        }
        self.raw()
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The cell of `column` (a heading of the gateways table) in the row of `name`, read at the
/// heading's place on the screen.
fn cell(screen: &str, name: &str, column: &str) -> Option<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines
        .iter()
        .position(|line| line.contains(" NAME ") && line.contains(" RESTARTS "))?;
    let at = lines[header][..lines[header].find(&format!(" {column} "))? + 1]
        .chars()
        .count();
    let is_gap = |c: char| c.is_whitespace() || c == '│' || c == '>';
    let row = lines[header + 1..]
        .iter()
        .find(|line| line.split(is_gap).any(|word| word == name))?;
    Some(
        row.chars()
            .skip(at)
            .take_while(|c| !c.is_whitespace())
            .collect(),
    )
}

fn has(screen: &str, name: &str, column: &str, value: &str) -> bool {
    cell(screen, name, column).as_deref() == Some(value)
}

fn pair(main: &Footprint, rescue: &Footprint) -> Sandbox {
    Sandbox::new(&format!(
        "local reef = require \"reef\"\n{}{}",
        gateway("main", main.base, ""),
        gateway("rescue", rescue.base, "")
    ))
}

/// Whether `needle` occurs in `haystack` after `after`.
fn find_from(haystack: &[u8], needle: &[u8], after: usize) -> Option<usize> {
    haystack
        .get(after..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + after)
}

/// The terminal came back: the alternate screen entered then left, the cursor shown after,
/// echo and line editing on again.
fn assert_restored(top: &mut Tty) {
    let flags = top.local_flags();
    assert!(
        flags.contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "echo and canonical mode are back: {flags:?}"
    );
    let raw = top.finish();
    let entered = find_from(&raw, ENTER_ALTERNATE_SCREEN, 0).expect("the alternate screen");
    let left = find_from(&raw, LEAVE_ALTERNATE_SCREEN, entered)
        .unwrap_or_else(|| panic!("no leave-alternate-screen after entering it"));
    assert!(
        find_from(&raw, SHOW_CURSOR, left).is_some(),
        "the cursor is shown again after leaving the alternate screen"
    );
}

#[test]
fn top_shows_the_colony_restarts_a_gateway_and_gives_the_terminal_back() {
    let [main, rescue] = Footprint::claim_n::<2>(&PORTS);
    let sandbox = pair(&main, &rescue);
    let mut up = sandbox.up();
    let ready = up.wait_all_ready();
    let first_pid = pid(&ready, "main").to_string();

    let mut top = Tty::spawn(&sandbox, &["top", sandbox.script()]);
    let before = top.local_flags();
    assert!(
        before.contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "a fresh pty echoes: {before:?}"
    );
    let screen = top.wait_screen("both gateways ready", |screen| {
        has(screen, "main", "STATE", "ready") && has(screen, "rescue", "STATE", "ready")
    });
    assert!(has(&screen, "main", "PID", &first_pid), "{screen}");
    assert!(
        has(&screen, "main", "PORT", &main.base.to_string()),
        "{screen}"
    );
    assert!(
        has(
            &screen,
            "rescue",
            "CONTROL",
            &rescue.browser_control().to_string()
        ),
        "{screen}"
    );
    assert!(has(&screen, "main", "RESTARTS", "0"), "{screen}");
    assert!(screen.contains("q quit"), "the keys show: {screen}");
    let raw_mode = top.local_flags();
    assert!(
        !raw_mode.intersects(LocalFlags::ECHO | LocalFlags::ICANON),
        "reef top runs the terminal raw: {raw_mode:?}"
    );
    // main's log, selected at start, is shown.
    top.wait_screen("main's log", |screen| {
        screen.contains("main log:") && screen.contains("reef gateway: listening")
    });

    // `r` restarts the selected (first) gateway; the row shows it.
    top.send(b"r");
    let screen = top.wait_screen("main restarted and ready again", |screen| {
        has(screen, "main", "RESTARTS", "1")
            && has(screen, "main", "STATE", "ready")
            && !has(screen, "main", "PID", &first_pid)
    });
    assert!(screen.contains("main: "), "the answer shows: {screen}");
    assert!(has(&screen, "rescue", "RESTARTS", "0"), "{screen}");
    up.wait_until("main restarted once", |status| {
        restarts(status, "main") == 1 && state(status, "main") == "ready"
    });

    top.send(b"q");
    assert_eq!(top.exit_code(), 0, "q quits cleanly");
    assert_restored(&mut top);
    up.stop();
}

#[test]
fn top_shows_a_lost_reef_and_ends_cleanly_on_sigterm() {
    let [main, rescue] = Footprint::claim_n::<2>(&PORTS);
    let sandbox = pair(&main, &rescue);
    let mut up = sandbox.up();
    up.wait_all_ready();
    let mut top = Tty::spawn(&sandbox, &["top", sandbox.script()]);
    top.wait_screen("both gateways ready", |screen| {
        has(screen, "main", "STATE", "ready") && has(screen, "rescue", "STATE", "ready")
    });
    // reef stops its gateways and ends: the dashboard sees the stops, then the silence.
    up.stop();
    let screen = top.wait_screen("reef is not running", |screen| {
        screen.contains("reef is not running")
    });
    assert!(has(&screen, "main", "STATE", "stopped"), "{screen}");
    kill(
        Pid::from_raw(i32::try_from(top.child.id()).expect("pids fit")),
        Signal::SIGTERM,
    )
    .expect("SIGTERM is sent");
    assert_eq!(top.exit_code(), 0, "SIGTERM ends reef top cleanly");
    assert_restored(&mut top);
}

#[test]
fn top_without_a_terminal_points_to_status_watch_and_events() {
    let sandbox = Sandbox::new(&gateway("main", 20_001, ""));
    let run = sandbox.run(&["top", sandbox.script()]);
    assert_eq!(run.code, EXIT_USAGE, "{run}");
    for needle in [
        "`reef top` needs a terminal",
        "reef status --watch",
        "reef events --json",
    ] {
        assert!(run.stderr.contains(needle), "{needle}: {run}");
    }
    assert_eq!(run.stdout, "", "{run}");
}

#[test]
fn top_without_a_reef_says_how_to_start_one_and_exits_4() {
    let sandbox = Sandbox::new(&gateway("main", 20_001, ""));
    let mut top = Tty::spawn(&sandbox, &["top", sandbox.script()]);
    assert_eq!(top.exit_code(), EXIT_NOT_RUNNING);
    let raw = top.finish();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains(&format!(
            "no reef is running {}; start it with `reef up {}`",
            sandbox.script(),
            sandbox.script()
        )),
        "{text}"
    );
    assert!(
        find_from(&raw, ENTER_ALTERNATE_SCREEN, 0).is_none(),
        "the screen was never taken: {text:?}"
    );
}
