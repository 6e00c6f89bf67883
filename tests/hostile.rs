//! Hostile topology scripts against reef's guarantee: "for any script, every command that
//! evaluates it returns within its budget (2 s) plus one second, with a clear error (file:line
//! wherever one exists); the supervisor keeps supervising, answers control requests, applies the
//! next good edit and stops cleanly whatever a reload evaluated."
//!
//! The corpus is `tests/fixtures/hostile/*.lua` (each file's first line says what it attacks),
//! listed once in `corpus!` with what reef must answer, and the files that can only exist at
//! run time (a FIFO, a symlink to /dev/zero, a directory, a symlink loop, a 50 MB script, modules
//! that are a FIFO or /dev/zero), listed in `made!`. Adding an attack is a file, its line in
//! `corpus!` and its name in a reload group (a test checks that the three agree).
//!
//! - `plan::*`, `plan_made::*`: `reef plan` on each entry: the exit code, the time, the size of
//!   the output, and an error that names the file (and line) and says what happened.
//! - `reload_*`: a running `reef up` whose script is replaced by one entry after another: each
//!   reload fails in time and is reported, `reef status` answers within 2 s, the running gateway
//!   keeps its pid; then a good edit applies, reef stays idle (nothing it gave up on still runs
//!   inside it), stops cleanly and leaves no process behind. `reload_past_*` do the same after a
//!   valid script whose VM never closes, and after a hook that swallows its own budget.
//! - `command::*`: the other commands on a hostile script (`env`, `export`, `check`, `setup`,
//!   `install`, `up`, `down`).
//!
//! Nothing here can hang the test binary. Every reef command runs under a hard limit (killed with
//! its process group after [`KILL_AFTER`], which reads as "hung"); its output is read through
//! pipes that keep only the head (a script may print gigabytes); its address space is capped (a
//! script linked to /dev/zero would otherwise be read until the host runs out of memory); and a
//! failing `reef up` is killed at once with its gateways.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use serde_json::Value;

use common::*;

/// Base ports for the reload tests; no other test binary uses this range (the claim files would
/// keep them apart anyway). Odd bases, as in `tests/reload.rs`.
const PORTS: PortRange = PortRange::odd(32_000, 44_000, 126);

/// A script's budget (2 s) plus one second, plus slack for a loaded machine.
const EVALUATION_WITHIN: Duration = Duration::from_millis(4_500);
/// What needs no evaluation budget: a file that cannot be read, validation.
const FAST_WITHIN: Duration = Duration::from_secs(3);
/// When a reef command is taken for hung and killed with its process group.
const KILL_AFTER: Duration = Duration::from_secs(8);
/// How much of each output is kept: its first and its last half (what lies between is counted
/// and dropped; an output up to 1.5 times this long is kept whole).
const OUTPUT_KEPT: usize = 256 << 10;
/// How much a command may print in all, unless its entry says otherwise.
const MAX_OUTPUT: usize = 256 << 10;
/// The address space of every reef process started here.
const ADDRESS_SPACE: u64 = 2 << 30;
/// From saving a hostile script to its reload error in `reef status`.
const RELOAD_WITHIN: Duration = Duration::from_secs(5);
/// How long `reef status` may take to answer.
const STATUS_WITHIN: Duration = Duration::from_secs(2);
/// How long a good edit may take to apply (a gateway restart included).
const APPLY_WITHIN: Duration = Duration::from_secs(10);
/// How long `reef up` may take to stop its gateways and exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How long an idle `reef up` is watched, and the CPU time it may use meanwhile: far less than
/// a thread still running a hostile script would.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
const IDLE_CPU: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// What reef must answer.

/// Where an error must point in the script.
#[derive(Clone, Copy, Debug)]
enum Line {
    /// Nowhere in particular (the file cannot be read, say).
    Unknown,
    /// At `file:N` for some N.
    Any,
    /// At `file:N` for one of these N.
    In(&'static [u32]),
}

#[derive(Clone, Copy, Debug)]
struct Expect {
    /// Acceptable exit codes of `reef plan`.
    exit: &'static [i32],
    line: Line,
    /// Files the message must name besides the script.
    names: &'static [&'static str],
    /// The message must hold one word (case-insensitive) of each group.
    says: &'static [&'static [&'static str]],
    within: Duration,
    max_output: usize,
}

/// Exit 2 (the script could not be read or evaluated), saying one word of each group.
const fn fails(says: &'static [&'static [&'static str]]) -> Expect {
    Expect {
        exit: &[2],
        line: Line::Unknown,
        names: &[],
        says,
        within: EVALUATION_WITHIN,
        max_output: MAX_OUTPUT,
    }
}

/// Exit 1 (isolation violations), saying one word of each group.
const fn violates(says: &'static [&'static [&'static str]]) -> Expect {
    Expect {
        exit: &[1],
        ..fails(says)
    }
}

impl Expect {
    const fn at(self, lines: &'static [u32]) -> Expect {
        Expect {
            line: Line::In(lines),
            ..self
        }
    }

    const fn at_some_line(self) -> Expect {
        Expect {
            line: Line::Any,
            ..self
        }
    }

    const fn naming(self, names: &'static [&'static str]) -> Expect {
        Expect { names, ..self }
    }

    /// Within [`FAST_WITHIN`]: nothing to evaluate for long.
    const fn fast(self) -> Expect {
        Expect {
            within: FAST_WITHIN,
            ..self
        }
    }

    const fn or_exit(self, exit: &'static [i32]) -> Expect {
        Expect { exit, ..self }
    }

    const fn printing_at_most(self, max_output: usize) -> Expect {
        Expect { max_output, ..self }
    }

    /// Whether a reload of this entry must be refused with an evaluation error (rather than
    /// for violations, or accepted).
    fn is_script_error(&self) -> bool {
        self.exit == [2]
    }
}

/// Words that say the script ran out of time.
const BUDGET: &[&str] = &[
    "budget",
    "time limit",
    "timed out",
    "took too long",
    "took longer",
];
const BUDGET_OR_PATTERN: &[&str] = &[
    "budget",
    "time limit",
    "timed out",
    "took too long",
    "took longer",
    "pattern",
];
/// For C loops that a fix may also make instant: then the script's own error follows.
const BUDGET_OR_CAME_BACK: &[&str] = &[
    "budget",
    "time limit",
    "timed out",
    "took too long",
    "took longer",
    "too large",
    "too many",
    "came back",
];
/// For finalizers: stopped by the budget, or refused outright.
const BUDGET_OR_NO_FINALIZER: &[&str] = &["budget", "time limit", "timed out", "finalizer", "__gc"];
const MEMORY: &[&str] = &["memory"];
const MEMORY_OR_BUDGET: &[&str] = &["memory", "budget", "time limit", "timed out"];
const STACK: &[&str] = &["stack overflow", "c levels", "memory", "budget"];
/// Words that say a file is not a regular file (a FIFO, say).
const NOT_REGULAR: &[&str] = &["fifo", "named pipe", "regular file", "not a file"];
const NOT_REGULAR_OR_TOO_LARGE: &[&str] = &[
    "regular file",
    "device",
    "not a file",
    "too large",
    "too big",
    "larger",
];

macro_rules! corpus {
    ($($name:ident => $expect:expr;)*) => {
        /// Every fixture of `tests/fixtures/hostile/` (by name, without `.lua`) and what
        /// `reef plan` answers for it.
        const CORPUS: &[(&str, Expect)] = &[$((stringify!($name), $expect)),*];

        /// `reef plan` on each fixture.
        mod plan {
            $(#[test] fn $name() { super::plan_fixture(stringify!($name)); })*
        }
    };
}

corpus! {
    pcall_loop => fails(&[BUDGET]).at(&[2, 3]);
    finalizer_loop => fails(&[&["budget", "time limit", "timed out", "finalizer", "__gc", "collectgarbage"]])
        .at_some_line();
    finalizer_dropped => fails(&[BUDGET_OR_NO_FINALIZER]).at_some_line();
    // A valid topology: accepted in time, or refused (its budget, finalizers); never a hang.
    finalizer_at_close => fails(&[BUDGET_OR_NO_FINALIZER]).or_exit(&[0, 2]);
    pattern_backtrack => fails(&[BUDGET_OR_PATTERN]).at(&[2]);
    pattern_find_big => fails(&[BUDGET_OR_PATTERN]).at(&[3]);
    plain_find => fails(&[BUDGET_OR_PATTERN]).at(&[4]);
    rep_empty => fails(&[BUDGET_OR_CAME_BACK]).at(&[2, 3]);
    table_move_nil => fails(&[BUDGET_OR_CAME_BACK]).at(&[2, 3]);
    tostring_loop => fails(&[BUDGET]).at(&[2]);
    error_object => fails(&[&["budget", "time limit", "timed out", "not a string"]]).at(&[2]);
    coroutine_loop => fails(&[BUDGET]).at(&[2]);
    metamethod_loop => fails(&[BUDGET]).at(&[2, 3]);
    close_loop => fails(&[BUDGET]).at(&[2]);
    api_metamethods => fails(&[BUDGET]).at(&[2, 3]);
    print_flood => fails(&[BUDGET]).at(&[2]);
    string_bomb => fails(&[MEMORY]).at(&[4]);
    table_bomb => fails(&[MEMORY_OR_BUDGET]).at(&[3]);
    concat_bomb => fails(&[MEMORY]).at(&[5]);
    deep_recursion => fails(&[STACK]).at(&[2, 3]);
    c_stack => fails(&[STACK]).at(&[2, 7]);
    format_width => fails(&[&["invalid conversion", "format"]]).at(&[5]);
    binary_chunk => fails(&[&["binary"]]).at(&[15]);
    require_traversal => fails(&[&["not paths", "dotted", "module name"]]).at(&[6]);
    // Evaluating 10,000 gateways takes 0.6 s in a release build (`reef plan` exits 1 with one
    // capped message), but about the whole 2 s budget in a debug build, where a budget error
    // (exit 2) is as good an answer.
    ten_thousand_same_port => violates(&[&["more", "budget"], &["overlap", "collide", "footprint", "budget"]])
        .or_exit(if cfg!(debug_assertions) { &[1, 2] } else { &[1] })
        .at(&[2])
        .printing_at_most(200_000);
    nul_in_env => violates(&[&["nul", "\\0"], &["env.a"]]).at(&[2]).fast();
}

/// Makes a hostile script called `script` in `dir` (with any module it needs), replacing
/// whatever is there.
type Maker = fn(dir: &Path, script: &str);

macro_rules! made {
    ($($name:ident => $make:expr, $expect:expr;)*) => {
        /// The hostile files that only exist at run time, and what `reef plan` answers.
        const MADE: &[(&str, Maker, Expect)] = &[$((stringify!($name), $make, $expect)),*];

        /// `reef plan` on each file made at run time.
        mod plan_made {
            $(#[test] fn $name() { super::plan_made(stringify!($name)); })*
        }
    };
}

made! {
    fifo_script => make_fifo_script, fails(&[NOT_REGULAR]).fast();
    dev_zero_script => make_dev_zero_script, fails(&[NOT_REGULAR_OR_TOO_LARGE]).fast();
    directory_script => make_directory_script, fails(&[&["directory"]]).fast();
    symlink_loop => make_symlink_loop, fails(&[&["symbolic link", "symlink", "loop"]]).fast();
    huge_script => make_huge_script,
        fails(&[&["too large", "too big", "larger", "memory", "size"]]).fast();
    fifo_module => make_fifo_module, fails(&[NOT_REGULAR]).at(&[2]).naming(&["pipe.lua"]).fast();
    dev_zero_module => make_dev_zero_module,
        fails(&[NOT_REGULAR_OR_TOO_LARGE]).at(&[2]).naming(&["zero.lua"]).fast();
}

fn corpus_entry(name: &str) -> Expect {
    CORPUS
        .iter()
        .find(|(entry, _)| *entry == name)
        .map(|(_, expect)| *expect)
        .unwrap_or_else(|| panic!("no fixture `{name}` in the corpus"))
}

fn made_entry(name: &str) -> (Maker, Expect) {
    MADE.iter()
        .find(|(entry, _, _)| *entry == name)
        .map(|(_, make, expect)| (*make, *expect))
        .unwrap_or_else(|| panic!("no made file `{name}`"))
}

// ---------------------------------------------------------------------------------------------
// Files made at run time.

/// Puts a new file at `path`: made by `make` at `path.new`, then renamed over whatever is at
/// `path` (a directory, or anything where a directory goes, is removed first), so that a watcher
/// sees one change.
fn replace(path: &Path, make: impl FnOnce(&Path)) {
    let mut new = path.as_os_str().to_owned();
    new.push(".new");
    let new = Path::new(&new);
    remove_any(new);
    make(new);
    if let Ok(old) = std::fs::symlink_metadata(path) {
        let new_is_dir = std::fs::symlink_metadata(new).is_ok_and(|m| m.is_dir());
        if old.is_dir() || new_is_dir {
            remove_any(path);
        }
    }
    std::fs::rename(new, path)
        .unwrap_or_else(|err| panic!("cannot rename {} into place: {err}", new.display()));
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).expect("a directory goes"),
        Ok(_) => std::fs::remove_file(path).expect("a file goes"),
        Err(_) => {}
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
        .unwrap_or_else(|err| panic!("mkfifo {}: {err}", path.display()));
}

fn symlink(target: &str, path: &Path) {
    std::os::unix::fs::symlink(target, path)
        .unwrap_or_else(|err| panic!("symlink {}: {err}", path.display()));
}

fn make_fifo_script(dir: &Path, script: &str) {
    replace(&dir.join(script), mkfifo);
}

fn make_dev_zero_script(dir: &Path, script: &str) {
    replace(&dir.join(script), |path| symlink("/dev/zero", path));
}

fn make_directory_script(dir: &Path, script: &str) {
    replace(&dir.join(script), |path| {
        std::fs::create_dir(path).expect("a directory named like a script");
    });
}

/// The script is a symbolic link to itself.
fn make_symlink_loop(dir: &Path, script: &str) {
    replace(&dir.join(script), |path| symlink(script, path));
}

/// `local s = "aaa...a"`: 50 MB in one string literal.
fn make_huge_script(dir: &Path, script: &str) {
    replace(&dir.join(script), |path| {
        let mut text = Vec::with_capacity(50_000_100);
        text.extend_from_slice(b"-- 50 MB in one string literal\nlocal s = \"");
        text.resize(text.len() + 50_000_000, b'a');
        text.extend_from_slice(b"\"\n");
        std::fs::write(path, text).expect("the huge script is written");
    });
}

/// A script whose line 2 requires `lib.NAME`, a module that `make` puts in place.
fn make_requiring(dir: &Path, script: &str, module: &str, make: impl FnOnce(&Path)) {
    std::fs::create_dir_all(dir.join("lib")).expect("the module directory");
    replace(&dir.join("lib").join(format!("{module}.lua")), make);
    let text = format!(
        "-- Requires a module that is no regular file.\nrequire \"lib.{module}\"\n\
         error(\"lib.{module} was loaded\")\n"
    );
    replace(&dir.join(script), |path| {
        std::fs::write(path, text).expect("the script is written");
    });
}

fn make_fifo_module(dir: &Path, script: &str) {
    make_requiring(dir, script, "pipe", mkfifo);
}

fn make_dev_zero_module(dir: &Path, script: &str) {
    make_requiring(dir, script, "zero", |path| symlink("/dev/zero", path));
}

// ---------------------------------------------------------------------------------------------
// Running reef under a hard limit.

/// Every reef process started here carries this variable with a value of its own, so that
/// processes it leaves behind can be found.
const MARKER: &str = "REEF_HOSTILE_RUN";

static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

fn new_marker() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// Marks `command` and caps its address space.
fn harden(command: &mut Command, marker: &str) {
    command.env(MARKER, marker);
    let cap = ADDRESS_SPACE as libc::rlim_t;
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: cap,
                rlim_max: cap,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// An output as kept (see [`OUTPUT_KEPT`]) and how long it was in all.
struct Captured {
    text: String,
    total: usize,
}

/// Reads `pipe` to its end on a thread of its own, keeping its start and its end.
fn capture(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Captured> {
    const HALF: usize = OUTPUT_KEPT / 2;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut start, mut end) = (Vec::new(), Vec::new());
        let mut total = 0;
        let mut buffer = vec![0; 64 << 10];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    let room = HALF.saturating_sub(start.len()).min(n);
                    start.extend_from_slice(&buffer[..room]);
                    end.extend_from_slice(&buffer[room..n]);
                    if end.len() > 2 * HALF {
                        end.drain(..end.len() - HALF);
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let dropped = total - start.len() - end.len();
        let mut text = String::from_utf8_lossy(&start).into_owned();
        if dropped > 0 {
            text.push_str(&format!("\n[... {dropped} bytes left out ...]\n"));
        }
        text.push_str(&String::from_utf8_lossy(&end));
        let _ = sender.send(Captured { text, total });
    });
    receiver
}

/// A reef command that ran under [`bounded`].
struct Finished {
    label: String,
    /// `None`: it did not end within its limit and was killed.
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: Captured,
    stderr: Captured,
    /// Processes it started that outlived it (killed since).
    leftovers: Vec<String>,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|status| status.code())
    }

    /// Both outputs (excerpts), for failure messages.
    fn output(&self) -> String {
        format!(
            "\n--- {} stdout ({} bytes):\n{}\n--- {} stderr ({} bytes):\n{}",
            self.label,
            self.stdout.total,
            excerpt(&self.stdout.text),
            self.label,
            self.stderr.total,
            excerpt(&self.stderr.text)
        )
    }
}

/// Runs `command` in a process group of its own; kills the group after `limit`. Outputs go
/// through pipes (their heads kept); processes of the run that outlive reef are reported and
/// killed.
fn bounded(mut command: Command, label: &str, limit: Duration) -> Finished {
    let marker = new_marker();
    harden(&mut command, &marker);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {label}: {err}"));
    let stdout = capture(child.stdout.take().expect("stdout is piped"));
    let stderr = capture(child.stderr.take().expect("stderr is piped"));
    let group = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            break Some(status);
        }
        if started.elapsed() >= limit {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();

    let mut leftovers = kill_leftovers(Some(group), &[marked(&marker)]);
    let mut collect = |receiver: mpsc::Receiver<Captured>, which: &str| {
        receiver
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| {
                leftovers.push(format!(
                    "a process still held its {which} 2 s after it ended"
                ));
                kill_leftovers(Some(group), &[marked(&marker)]);
                receiver
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or(Captured {
                        text: "(never closed)".into(),
                        total: 0,
                    })
            })
    };
    let stdout = collect(stdout, "stdout");
    let stderr = collect(stderr, "stderr");
    if status.is_none() {
        // What a killed run leaves is part of its hang, not a leak.
        leftovers.clear();
    }
    Finished {
        label: label.to_owned(),
        status,
        elapsed,
        stdout,
        stderr,
        leftovers,
    }
}

/// The environment entry that marks the processes of one run.
fn marked(marker: &str) -> String {
    format!("{MARKER}={marker}")
}

/// Live processes in process group `group` or whose environment holds one of `marks`
/// (`KEY=value`): described, then killed.
fn kill_leftovers(group: Option<Pid>, marks: &[String]) -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold anything but ends at the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let in_group = group.is_some_and(|group| {
            fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(group.as_raw())
        });
        let carries = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|&byte| byte == 0)
                .any(|entry| marks.iter().any(|mark| mark.as_bytes() == entry))
        });
        if in_group || carries {
            let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .unwrap_or_default();
            found.push(format!("pid {pid}: {}", command.trim_end()));
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).expect("pids fit")),
                Signal::SIGKILL,
            );
        }
    }
    found
}

/// At most `limit` bytes of `text` (on a character boundary).
fn head(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most the last `limit` bytes of `text`.
fn tail(text: &str, limit: usize) -> &str {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The start and the end of a long `text`, for failure messages.
fn excerpt(text: &str) -> String {
    if text.len() <= 4000 {
        return text.to_owned();
    }
    format!("{}\n[...]\n{}", head(text, 2000), tail(text, 1500))
}

/// The CPU time (user and system, all threads) process `pid` has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `pid (comm)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_millis(ticks * 1000 / per_second.max(1)))
}

// ---------------------------------------------------------------------------------------------
// Checking an answer.

/// The N of every `file:N` in `text`.
fn lines_of(text: &str, file: &str) -> Vec<u32> {
    let needle = format!("{file}:");
    text.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// What an error message lacks: the files it must name, the line, the words.
fn message_problems(expect: &Expect, script: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for name in std::iter::once(script).chain(expect.names.iter().copied()) {
        if !text.contains(name) {
            problems.push(format!("does not name `{name}`"));
        }
    }
    match expect.line {
        Line::Unknown => {}
        Line::Any => {
            if lines_of(text, script).is_empty() {
                problems.push(format!("gives no line (`{script}:N`)"));
            }
        }
        Line::In(lines) => {
            let found = lines_of(text, script);
            if !found.iter().any(|line| lines.contains(line)) {
                problems.push(format!(
                    "points at lines {found:?} of {script}, not at one of {lines:?}"
                ));
            }
        }
    }
    // The words must come from the message, not from a file name that happens to hold them.
    let mut lower = text.to_lowercase();
    for name in std::iter::once(script).chain(expect.names.iter().copied()) {
        let name = name.to_lowercase();
        lower = lower.replace(&name, "");
        if let Some(stem) = name.strip_suffix(".lua") {
            lower = lower.replace(stem, "");
        }
    }
    for group in expect.says {
        if !group
            .iter()
            .any(|word| lower.contains(&word.to_lowercase()))
        {
            problems.push(format!("says none of {group:?}"));
        }
    }
    problems
}

/// What is wrong with a finished command, for `expect` (`script`: the file name it must name).
fn run_problems(run: &Finished, expect: &Expect, script: &str) -> Vec<String> {
    let Some(status) = run.status else {
        return vec![format!(
            "did not return within {KILL_AFTER:?}: hung (killed with its process group)"
        )];
    };
    let mut problems = Vec::new();
    match status.code() {
        None => problems.push(format!("died of a signal ({status})")),
        Some(code) if !expect.exit.contains(&code) => {
            problems.push(format!("exited {code}, expected {:?}", expect.exit));
        }
        Some(_) => {}
    }
    if run.elapsed > expect.within {
        problems.push(format!(
            "took {:.2?}, more than {:?}",
            run.elapsed, expect.within
        ));
    }
    // A plan that evaluated prints its table on stdout, as long as the topology: the bound is on
    // what reef says about the script (stderr) then.
    let printed = match status.code() {
        Some(1) => run.stderr.total,
        _ => run.stdout.total + run.stderr.total,
    };
    if printed > expect.max_output {
        problems.push(format!(
            "printed {printed} bytes, more than {}",
            expect.max_output
        ));
    }
    if status.code() != Some(0) {
        problems.extend(
            message_problems(expect, script, &run.stderr.text)
                .into_iter()
                .map(|problem| format!("its error {problem}")),
        );
    }
    problems.extend(
        run.leftovers
            .iter()
            .map(|process| format!("left a process behind: {process}")),
    );
    problems
}

fn assert_no_problems(what: &str, problems: &[String], output: &str) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}{output}",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// 1. `reef plan` on every entry.

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_path(name: &str) -> String {
    format!("tests/fixtures/hostile/{name}.lua")
}

fn plan_fixture(name: &str) {
    let expect = corpus_entry(name);
    let home = tempfile::tempdir().expect("a temp HOME");
    let script = fixture_path(name);
    let label = format!("reef plan {script}");
    let run = bounded(
        reef(&["plan", &script], repo(), home.path()),
        &label,
        KILL_AFTER,
    );
    let problems = run_problems(&run, &expect, &format!("{name}.lua"));
    assert_no_problems(&format!("`{label}`"), &problems, &run.output());
}

fn plan_made(name: &str) {
    let (make, expect) = made_entry(name);
    let sandbox = Sandbox::empty();
    let script = format!("{name}.lua");
    make(sandbox.tmp.path(), &script);
    let label = format!("reef plan {script}");
    let run = bounded(sandbox.command(&["plan", &script]), &label, KILL_AFTER);
    let problems = run_problems(&run, &expect, &script);
    assert_no_problems(&format!("`{label}`"), &problems, &run.output());
}

#[test]
fn the_corpus_lists_every_fixture_and_each_says_what_it_attacks() {
    let dir = repo().join("tests/fixtures/hostile");
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("the hostile fixtures") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let stem = name
            .strip_suffix(".lua")
            .unwrap_or_else(|| panic!("{} is not a .lua fixture", path.display()));
        let text = std::fs::read_to_string(&path).expect("a fixture is text");
        assert!(
            text.lines().next().is_some_and(|l| l.starts_with("-- ")),
            "{} must begin with a comment saying what it attacks",
            path.display()
        );
        on_disk.insert(stem.to_owned());
    }
    let listed: BTreeSet<String> = CORPUS.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(
        on_disk, listed,
        "tests/fixtures/hostile/ and the corpus! list must match"
    );
    let mut reloaded: Vec<&str> = RELOAD_GROUPS
        .iter()
        .flat_map(|group| group.iter().copied())
        .chain(NOT_RELOADED.iter().map(|(name, _)| *name))
        .collect();
    reloaded.sort_unstable();
    let mut entries: Vec<&str> = CORPUS
        .iter()
        .map(|(name, _)| *name)
        .chain(MADE.iter().map(|(name, _, _)| *name))
        .collect();
    entries.sort_unstable();
    assert_eq!(
        reloaded, entries,
        "every entry is in one reload group or in NOT_RELOADED, once"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Reloads of every entry under a running `reef up`.

/// Reload groups, each a sequence saved over one running `reef up`; the groups run in parallel.
const RELOAD_CPU: &[&str] = &[
    "close_loop",
    "error_object",
    "pcall_loop",
    "coroutine_loop",
    "metamethod_loop",
    "tostring_loop",
    "api_metamethods",
    "finalizer_loop",
    "finalizer_dropped",
];
const RELOAD_C_CODE: &[&str] = &[
    "pattern_backtrack",
    "pattern_find_big",
    "plain_find",
    "rep_empty",
    "table_move_nil",
];
const RELOAD_LIMITS: &[&str] = &[
    "string_bomb",
    "table_bomb",
    "concat_bomb",
    "deep_recursion",
    "c_stack",
    "format_width",
    "binary_chunk",
    "require_traversal",
    "ten_thousand_same_port",
    "nul_in_env",
];
const RELOAD_FILES: &[&str] = &[
    "huge_script",
    "directory_script",
    "symlink_loop",
    "fifo_module",
    "dev_zero_module",
    "fifo_script",
];
const RELOAD_GROUPS: &[&[&str]] = &[RELOAD_CPU, RELOAD_C_CODE, RELOAD_LIMITS, RELOAD_FILES];

/// Entries no reload group saves, and why.
const NOT_RELOADED: &[(&str, &str)] = &[
    (
        "print_flood",
        "reef up's log is a file here: gigabytes of prints would fill the disk",
    ),
    (
        "finalizer_at_close",
        "a valid script: `reload_past_a_vm_that_never_closes` runs it",
    ),
    (
        "dev_zero_script",
        "a topology is named by its script's resolved path: through the link it is /dev/zero's",
    ),
];

#[test]
fn reload_cpu_loops() {
    reload_gauntlet(RELOAD_CPU);
}

#[test]
fn reload_c_code() {
    reload_gauntlet(RELOAD_C_CODE);
}

#[test]
fn reload_limits_and_bad_values() {
    reload_gauntlet(RELOAD_LIMITS);
}

#[test]
fn reload_files_that_are_no_scripts() {
    reload_gauntlet(RELOAD_FILES);
}

/// A topology with gateway `keeper` (its env carrying `generation`) and maybe `second`.
fn good(keeper: u16, second: Option<u16>, generation: u32) -> String {
    let mut text = String::from("local reef = require \"reef\"\n");
    text.push_str(&gateway(
        "keeper",
        keeper,
        &format!("env = {{ REEF_TEST_GEN = \"{generation}\" }}"),
    ));
    if let Some(port) = second {
        text.push_str(&gateway("second", port, ""));
    }
    text
}

/// Saves `text` as the script in one rename (whatever the script is now).
fn put_script(sandbox: &Sandbox, text: &str) {
    replace(&sandbox.script, |path| {
        std::fs::write(path, text).expect("the script is written");
    });
}

/// Why there is no status.
enum NoStatus {
    /// `reef status` did not answer in time, or answered nonsense.
    Broken(String),
    /// `reef status` said it could not (no reef runs the topology yet, say).
    Failed(String),
}

/// `reef status --json` within [`STATUS_WITHIN`].
fn status_within(sandbox: &Sandbox) -> Result<Value, NoStatus> {
    let run = bounded(
        sandbox.command(&["status", "--json", sandbox.script()]),
        "reef status",
        STATUS_WITHIN,
    );
    let broken = |message: String| Err(NoStatus::Broken(message));
    match run.code() {
        _ if run.status.is_none() => broken(format!(
            "`reef status` did not answer within {STATUS_WITHIN:?}"
        )),
        Some(0) if run.stdout.total > OUTPUT_KEPT => broken(format!(
            "`reef status --json` printed {} bytes",
            run.stdout.total
        )),
        Some(0) => serde_json::from_str(&run.stdout.text).map_err(|err| {
            NoStatus::Broken(format!(
                "`reef status --json` printed no JSON ({err}){}",
                run.output()
            ))
        }),
        _ => Err(NoStatus::Failed(format!(
            "`reef status` failed{}",
            run.output()
        ))),
    }
}

/// The time of the reload error in a status, if there is one.
fn reload_error_at(status: &Value) -> Option<f64> {
    let error = &status["reload_error"];
    if error.is_null() {
        return None;
    }
    Some(error["at"].as_f64().unwrap_or(0.0))
}

/// A `reef up` under test: if the test fails, reef is killed at once, with its gateways.
struct Supervised<'a> {
    up: Up<'a>,
    /// Environment entries of reef up that what it starts may carry too: its [`MARKER`] and
    /// the sandbox's HOME (which gateways inherit). Whatever carries one is the test's to end.
    marks: [String; 2],
}

impl Drop for Supervised<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if self.up.proc.try_status().is_none() {
                let pid = i32::try_from(self.up.proc.pid()).expect("pids fit");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                self.up.proc.wait_within(Duration::from_secs(5));
            }
            for &pid in &self.up.gateways {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // Gateways no status showed yet (reef failed early), evaluators it started.
            kill_leftovers(None, &self.marks);
        }
    }
}

impl<'a> Supervised<'a> {
    /// `reef up` on the sandbox's script (address space capped), once `name` is ready.
    fn start(sandbox: &'a Sandbox, name: &str) -> (Supervised<'a>, Value) {
        let mut command = sandbox.command(&["up", sandbox.script()]);
        let marker = new_marker();
        harden(&mut command, &marker);
        let mut supervised = Supervised {
            marks: [marked(&marker), format!("HOME={}", sandbox.home.display())],
            up: Up {
                proc: Proc::spawn(command, &sandbox.outputs, "reef up"),
                sandbox,
                gateways: BTreeSet::new(),
            },
        };
        // Until reef listens, `reef status` says that no reef runs the topology.
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = supervised.up.proc.try_status() {
                supervised.fail(&format!("reef up exited ({status}) at start"));
            }
            match status_within(sandbox) {
                Ok(_) => break,
                Err(NoStatus::Failed(_)) if Instant::now() < deadline => std::thread::sleep(POLL),
                Err(NoStatus::Failed(err) | NoStatus::Broken(err)) => supervised.fail(&err),
            }
        }
        let ready = supervised
            .await_status(
                &format!("`{name}` to be ready"),
                DEADLINE,
                |_| Ok(()),
                |status| find(status, name).is_some_and(|i| i["state"] == "ready"),
            )
            .unwrap_or_else(|err| supervised.fail(&err));
        (supervised, ready)
    }

    /// Polls the status (each answer within [`STATUS_WITHIN`]) until `done`, for up to
    /// `within`; `check` must hold for every status seen.
    fn await_status(
        &mut self,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> Result<(), String>,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("(no status yet)");
        loop {
            if let Some(status) = self.up.proc.try_status() {
                return Err(format!(
                    "reef up exited ({status}) while waiting for {what}; last status:\n{last}"
                ));
            }
            let status = status_within(self.up.sandbox).map_err(|err| {
                let (NoStatus::Failed(err) | NoStatus::Broken(err)) = err;
                format!("while waiting for {what}: {err}")
            })?;
            self.up
                .gateways
                .extend(instances(&status).iter().filter_map(pid_in));
            check(&status).map_err(|err| format!("while waiting for {what}: {err}"))?;
            if done(&status) {
                return Ok(status);
            }
            last = head(
                &serde_json::to_string_pretty(&status).expect("JSON prints"),
                6000,
            )
            .to_owned();
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {within:?} waiting for {what}; last status:\n{last}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn fail(&self, message: &str) -> ! {
        panic!(
            "{message}\n--- reef up's log (tail):\n{}",
            tail(&self.up.proc.stderr(), 6000)
        )
    }

    /// Applies the good edit (keeper's env changes, so it restarts; `second` is added) and
    /// waits until it runs.
    fn apply_good_edit(&mut self, sandbox: &Sandbox, keeper: &Footprint, second: &Footprint) {
        let before = self
            .await_status("a status", STATUS_WITHIN, |_| Ok(()), |_| true)
            .unwrap_or_else(|err| self.fail(&err));
        let old = pid(&before, "keeper");
        put_script(sandbox, &good(keeper.base, Some(second.base), 1));
        self.await_status(
            "the good edit to apply (keeper restarted, second ready)",
            APPLY_WITHIN,
            |_| Ok(()),
            |status| {
                status["reload_error"].is_null()
                    && find(status, "keeper").is_some_and(|k| {
                        k["state"] == "ready" && pid_in(k).is_some_and(|p| p != old)
                    })
                    && find(status, "second").is_some_and(|s| s["state"] == "ready")
            },
        )
        .unwrap_or_else(|err| self.fail(&err));
    }

    /// Once reef up is idle, it must stay idle: a reload it gave up on must not still run
    /// inside it.
    fn assert_idle(&self) {
        let pid = self.up.proc.pid();
        let before = cpu_time(pid);
        std::thread::sleep(IDLE_WINDOW);
        if let (Some(before), Some(after)) = (before, cpu_time(pid)) {
            let used = after.saturating_sub(before);
            if used > IDLE_CPU {
                self.fail(&format!(
                    "reef up used {used:.2?} of CPU in {IDLE_WINDOW:?} while idle: something it \
                     evaluated still runs inside it"
                ));
            }
        }
    }

    /// SIGTERM: reef must exit 0 within [`STOP_WITHIN`], its gateways gone.
    fn stop_cleanly(mut self) {
        self.up.proc.signal(Signal::SIGTERM);
        match self.up.proc.wait_within(STOP_WITHIN) {
            None => self.fail(&format!(
                "reef up did not stop within {STOP_WITHIN:?} of SIGTERM"
            )),
            Some(status) if status.code() != Some(0) => self.fail(&format!(
                "reef up ended with {status} on SIGTERM, not exit 0"
            )),
            Some(_) => {}
        }
        let alive: Vec<u32> = self
            .up
            .gateways
            .iter()
            .copied()
            .filter(|&pid| process_exists(pid))
            .collect();
        if !alive.is_empty() {
            self.fail(&format!("gateways {alive:?} outlived reef's clean stop"));
        }
        let leftovers = kill_leftovers(None, &self.marks);
        if !leftovers.is_empty() {
            self.fail(&format!(
                "processes reef up started outlived its clean stop: {leftovers:?}"
            ));
        }
    }
}

/// Saves `name` (a fixture, its port 18789 moved to `spare`; or a made file) as the script.
fn save_entry(sandbox: &Sandbox, name: &str, spare: u16) -> Expect {
    if CORPUS.iter().any(|(entry, _)| *entry == name) {
        let text = std::fs::read_to_string(repo().join(fixture_path(name)))
            .expect("the fixture is readable");
        put_script(sandbox, &text.replace("18789", &spare.to_string()));
        return corpus_entry(name);
    }
    let (make, expect) = made_entry(name);
    make(sandbox.tmp.path(), "reef.lua");
    expect
}

/// Starts `reef up` on a good topology, saves each entry over its script in turn (each reload
/// must fail in time, with an error in `reef status`, while `reef status` answers within 2 s and
/// the running gateway keeps its pid), then a good edit that must apply, then stops reef.
fn reload_gauntlet(steps: &[&str]) {
    let [keeper, second, spare] = Footprint::claim_n::<3>(&PORTS);
    let sandbox = Sandbox::new(&good(keeper.base, None, 0));
    let (mut up, ready) = Supervised::start(&sandbox, "keeper");
    let keeper_pid = pid(&ready, "keeper");
    let first_generation = generation(&ready);
    let keeps_running = |status: &Value| -> Result<(), String> {
        if generation(status) != first_generation {
            return Err(format!("a hostile script was applied: {status:#}"));
        }
        match find(status, "keeper") {
            Some(k) if k["state"] == "ready" && pid_in(k) == Some(keeper_pid) => Ok(()),
            _ => Err(format!(
                "`keeper` no longer runs ready with its pid {keeper_pid}: {status:#}"
            )),
        }
    };

    let mut previous_error: Option<f64> = None;
    for (index, name) in steps.iter().enumerate() {
        let fail = |up: &Supervised, problem: String| -> ! {
            up.fail(&format!(
                "reload {} of {} (`{name}`): {problem}\n(not reached: {:?})",
                index + 1,
                steps.len(),
                &steps[index + 1..]
            ))
        };
        let expect = save_entry(&sandbox, name, spare.base);
        let saved = Instant::now();
        let failed = up
            .await_status(
                &format!("the reload of `{name}` to fail"),
                RELOAD_WITHIN,
                keeps_running,
                |status| {
                    reload_error_at(status)
                        .is_some_and(|at| previous_error.is_none_or(|previous| at > previous))
                },
            )
            .unwrap_or_else(|err| fail(&up, err));
        let took = saved.elapsed();
        previous_error = reload_error_at(&failed);
        if expect.is_script_error() {
            let message = failed["reload_error"]["message"]
                .as_str()
                .unwrap_or_default();
            let problems = message_problems(&expect, "reef.lua", message);
            if !problems.is_empty() {
                fail(
                    &up,
                    format!(
                        "the reload error {} (after {took:.2?}): {message:?}",
                        problems.join("; ")
                    ),
                );
            }
        }
        eprintln!("reload of {name}: refused after {took:.2?}");
    }

    up.apply_good_edit(&sandbox, &keeper, &second);
    up.assert_idle();
    up.stop_cleanly();
}

/// A valid topology whose VM runs a finalizer that never returns when the VM is closed, saved
/// as a reload: accepted or refused (finalizers may be banned), after it the edits apply, reef
/// stays idle and stops cleanly.
#[test]
fn reload_past_a_vm_that_never_closes() {
    let [keeper, second] = Footprint::claim_n::<2>(&PORTS);
    let fixture = std::fs::read_to_string(repo().join(fixture_path("finalizer_at_close")))
        .expect("the fixture is readable");
    let forever = fixture
        .lines()
        .find(|line| line.starts_with("FOREVER"))
        .expect("the fixture sets FOREVER");
    let sandbox = Sandbox::new(&good(keeper.base, None, 0));
    let (mut up, ready) = Supervised::start(&sandbox, "keeper");
    let keeper_pid = pid(&ready, "keeper");
    let evaluated = evaluations(&ready);
    put_script(
        &sandbox,
        &format!("{}{forever}\n", good(keeper.base, None, 0)),
    );
    up.await_status(
        "the script with the finalizer to be evaluated",
        RELOAD_WITHIN,
        |status| match pid_in(instance(status, "keeper")) {
            Some(pid) if pid == keeper_pid => Ok(()),
            other => Err(format!("keeper's pid went from {keeper_pid} to {other:?}")),
        },
        |status| evaluations(status) > evaluated,
    )
    .unwrap_or_else(|err| up.fail(&err));
    up.apply_good_edit(&sandbox, &keeper, &second);
    // And once more: the supervisor still reloads after dropping that VM.
    put_script(&sandbox, &good(keeper.base, None, 2));
    up.await_status(
        "the edit after it to apply (second stopped)",
        APPLY_WITHIN,
        |_| Ok(()),
        |status| {
            status["reload_error"].is_null()
                && find(status, "second").is_none()
                && all_ready(status)
        },
    )
    .unwrap_or_else(|err| up.fail(&err));
    up.assert_idle();
    up.stop_cleanly();
}

/// A hook that swallows its own budget error in a loop: reef keeps answering and supervising,
/// applies the next edit, and stops cleanly.
#[test]
fn reload_past_a_hook_that_swallows_its_budget() {
    let [keeper, second] = Footprint::claim_n::<2>(&PORTS);
    let hook = "reef.on(\"ready\", function() local function f() while true do end end \
                while true do pcall(f) end end)\n";
    let sandbox = Sandbox::new(&format!("{}{hook}", good(keeper.base, None, 0)));
    let (mut up, ready) = Supervised::start(&sandbox, "keeper");
    let keeper_pid = pid(&ready, "keeper");
    // Past the hook budget (5 s) and then some: every status answers in time, nothing moves.
    let since = Instant::now();
    up.await_status(
        "7 s to pass with the hook running",
        Duration::from_secs(10),
        |status| match pid_in(instance(status, "keeper")) {
            Some(pid) if pid == keeper_pid => Ok(()),
            other => Err(format!("keeper's pid went from {keeper_pid} to {other:?}")),
        },
        |_| since.elapsed() >= Duration::from_secs(7),
    )
    .unwrap_or_else(|err| up.fail(&err));
    up.apply_good_edit(&sandbox, &keeper, &second);
    up.assert_idle();
    up.stop_cleanly();
}

// ---------------------------------------------------------------------------------------------
// 3. The other commands on a hostile script.

macro_rules! commands {
    ($($name:ident => $args:expr, $exit:expr;)*) => {
        /// Each command on `pcall_loop.lua` and on a FIFO: bounded, with its exit code.
        mod command {
            $(#[test] fn $name() { super::command_on_hostile_scripts($args, $exit); })*
        }
    };
}

commands! {
    env => &["env", "main"], 2;
    export_systemd => &["export", "--format", "systemd"], 2;
    check => &["check"], 2;
    setup => &["setup"], 2;
    install_dry_run => &["install", "--dry-run"], 2;
    up => &["up"], 2;
    // Evaluates nothing: no reef runs the topology, so there is nothing to stop.
    down => &["down"], 0;
}

fn command_on_hostile_scripts(args: &[&str], exit: i32) {
    let sandbox = Sandbox::empty();
    std::fs::copy(
        repo().join(fixture_path("pcall_loop")),
        sandbox.path("pcall_loop.lua"),
    )
    .expect("the fixture is copied");
    make_fifo_script(sandbox.tmp.path(), "fifo_script.lua");
    let scripts = [
        ("pcall_loop.lua", fails(&[BUDGET]).at(&[2, 3])),
        ("fifo_script.lua", fails(&[NOT_REGULAR]).fast()),
    ];
    let mut report = Vec::new();
    for (script, expect) in scripts {
        let expect = if exit == 0 {
            fails(&[]).or_exit(&[0]).fast()
        } else {
            expect
        };
        let mut full = args.to_vec();
        full.push(script);
        let label = format!("reef {}", full.join(" "));
        let run = bounded(sandbox.command(&full), &label, KILL_AFTER);
        let problems = run_problems(&run, &expect, script);
        if !problems.is_empty() {
            report.push(format!(
                "`{label}`:\n  - {}{}",
                problems.join("\n  - "),
                run.output()
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}
