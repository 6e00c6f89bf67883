//! Evaluations in a child process: no script can wedge or kill the reef that asked.
//!
//! Every command that evaluates a script (`plan`, `check`, `env`, `export`, `setup`, `install`,
//! `down`, `up` and its reloads) runs [`plan`]: a child of reef's own binary (`reef
//! __evaluate`) evaluates and validates the script and answers with the plan as JSON on a pipe.
//! The child runs under hard limits whatever the script does:
//! - **time**: a watchdog thread in the child answers "past its time budget" and exits at the
//!   budget plus [`WATCHDOG_GRACE`] (with the last place the budget hook saw the script at), even
//!   when the script spins where the VM's own budget cannot reach (a `pcall` loop, a finalizer,
//!   a C pattern match); the parent kills the child at the budget plus [`KILL_GRACE`] should the
//!   watchdog not get to run, so an evaluation never takes more than its budget plus a second;
//! - **memory**: the VM's allocator refuses past `Limits::memory`, and the child's address space
//!   is capped at that plus [`ADDRESS_SPACE_OVERHEAD`] (`RLIMIT_AS`), which also bounds what
//!   validation and the answer can take; CPU time is capped too (`RLIMIT_CPU`);
//! - **answer**: the parent reads at most [`MAX_REPLY_BYTES`], so it never grows with the script.
//!
//! The child leaves before the VM is dropped, so finalizers never run at exit. It dies with its
//! parent (`PDEATHSIG` on Linux) and starts nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lua::{self, Host, Limits, ScriptError, ScriptErrorKind};
use crate::plan::{Plan, Planned};
use crate::topology::Topology;
use crate::validate::{self, Report};

/// The hidden verb the child runs.
pub const CHILD_VERB: &str = "__evaluate";
/// The child's watchdog answers this long after the time budget.
pub const WATCHDOG_GRACE: Duration = Duration::from_millis(250);
/// The parent kills the child this long after the time budget.
pub const KILL_GRACE: Duration = Duration::from_millis(750);
/// Address space the child may take beyond the VM's memory limit: the binary, stacks, the
/// resolved topology, validation and the JSON answer.
pub const ADDRESS_SPACE_OVERHEAD: u64 = 512 << 20;
/// The largest answer read from a child (10,000 gateways take about 12 MiB).
pub const MAX_REPLY_BYTES: u64 = 64 << 20;

/// The bytes of every file an evaluation read, by absolute path: what a later evaluation can
/// run again even after the files changed on disk ("the last good script").
pub use crate::lua::Sources;

/// What the parent asks.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub script: PathBuf,
    pub memory: usize,
    pub instructions: u64,
    pub time_ms: u64,
    /// Send back the bytes of the files read ([`Reply::sources`]).
    pub keep_sources: bool,
}

impl Request {
    pub fn new(script: &Path, limits: Limits) -> Request {
        Request {
            script: script.to_path_buf(),
            memory: limits.memory,
            instructions: limits.instructions,
            time_ms: u64::try_from(limits.time.as_millis()).unwrap_or(u64::MAX),
            keep_sources: false,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            instructions: self.instructions,
            time: Duration::from_millis(self.time_ms),
        }
    }
}

/// A successful evaluation: the plan, and how much automation the script declared.
#[derive(Debug, Serialize, Deserialize)]
pub struct Evaluated {
    pub topology: Topology,
    pub report: Report,
    pub hooks: usize,
    pub timers: usize,
}

/// What the child answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub files: Vec<PathBuf>,
    pub result: Result<Evaluated, ScriptError>,
    #[serde(default)]
    pub sources: Option<Sources>,
}

/// A plan, and what the script needs beyond it inside `reef up`.
#[derive(Debug)]
pub struct Outcome {
    pub planned: Planned,
    /// Hooks and timers the script declared (0 and 0: no hook host is needed).
    pub hooks: usize,
    pub timers: usize,
    /// The files' bytes, when asked for.
    pub sources: Option<Sources>,
}

/// Evaluates and validates `script` in a child process with the default limits.
pub fn plan(script: &Path) -> Planned {
    evaluate(Request::new(script, Limits::default())).planned
}

/// Runs one evaluation in a child process (blocking: call it off the async runtime).
pub fn evaluate(request: Request) -> Outcome {
    evaluate_with(&reef_binary(), request)
}

/// reef's own binary, which every child runs. On Linux the very file this process runs
/// (`/proc/self/exe`): the children then speak the supervisor's own protocol version, and keep
/// working after the binary is upgraded or deleted under a running `reef up` (the path would then
/// name a new version, or nothing).
pub fn reef_binary() -> PathBuf {
    let own = Path::new("/proc/self/exe");
    if cfg!(target_os = "linux") && own.exists() {
        return own.to_path_buf();
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("reef"))
}

/// Like [`evaluate`] with the binary given (benchmarks and tests run it from outside).
pub fn evaluate_with(program: &Path, request: Request) -> Outcome {
    let limits = request.limits();
    let script = request.script.clone();
    match run_child(program, &request, limits) {
        Ok(reply) => {
            let (hooks, timers, result) = match reply.result {
                Ok(evaluated) => (
                    evaluated.hooks,
                    evaluated.timers,
                    Ok(Plan {
                        topology: evaluated.topology,
                        report: evaluated.report,
                    }),
                ),
                Err(err) => (0, 0, Err(err)),
            };
            Outcome {
                planned: Planned {
                    result,
                    files: reply.files,
                },
                hooks,
                timers,
                sources: reply.sources,
            }
        }
        Err(err) => Outcome {
            planned: Planned {
                result: Err(err.located(&script)),
                files: Vec::new(),
            },
            hooks: 0,
            timers: 0,
            sources: None,
        },
    }
}

/// Why a child gave no usable answer.
enum ChildFailure {
    Start(std::io::Error),
    TimedOut(Duration),
    /// It ended without an answer: by a signal (SIGKILL, SIGABRT, SIGSEGV: out of memory or
    /// stack), or with a code of its own.
    Died {
        how: String,
        signalled: bool,
    },
    TooLarge,
    Garbled(String),
}

impl ChildFailure {
    fn located(self, script: &Path) -> ScriptError {
        let (kind, message) = match self {
            ChildFailure::Start(err) => (
                ScriptErrorKind::Read,
                format!("cannot start the evaluation process: {err}"),
            ),
            ChildFailure::TimedOut(budget) => (
                ScriptErrorKind::Budget,
                format!(
                    "the script ran past its {:.1} s time budget and was killed; look for an \
                     endless loop (also inside pcall, a __gc finalizer or a metamethod) or a \
                     pattern that backtracks",
                    budget.as_secs_f64()
                ),
            ),
            ChildFailure::Died {
                how,
                signalled: true,
            } => (
                ScriptErrorKind::Memory,
                format!(
                    "the evaluation process {how}; the script most likely ran out of memory \
                     (a string or table bomb)"
                ),
            ),
            ChildFailure::Died {
                how,
                signalled: false,
            } => (
                ScriptErrorKind::Runtime,
                format!("the evaluation process {how}; see the lines above"),
            ),
            ChildFailure::TooLarge => (
                ScriptErrorKind::Memory,
                format!(
                    "the evaluation's answer is larger than {} MiB; the topology is too large",
                    MAX_REPLY_BYTES >> 20
                ),
            ),
            ChildFailure::Garbled(err) => (
                ScriptErrorKind::Runtime,
                format!("the evaluation process gave an unreadable answer: {err}"),
            ),
        };
        ScriptError {
            kind,
            file: Some(script.display().to_string()),
            line: None,
            message,
        }
    }
}

fn run_child(program: &Path, request: &Request, limits: Limits) -> Result<Reply, ChildFailure> {
    let mut command = Command::new(program);
    command
        .arg(CHILD_VERB)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    crate::host::end_with_parent(&mut command);
    let mut child =
        crate::host::reaper::spawn_tracked(|| command.spawn(), |child| Some(child.id()))
            .map_err(ChildFailure::Start)?;
    let _untrack = crate::host::reaper::Untrack(child.id());
    let deadline = Instant::now() + limits.time + KILL_GRACE;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let request_json = serde_json::to_vec(request).expect("requests serialize");
    // Written and read on a thread of its own, so that the deadline below holds whatever the
    // child does with its pipes.
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&request_json);
        drop(stdin);
        let mut reply = Vec::new();
        let read = (&mut stdout)
            .take(MAX_REPLY_BYTES + 1)
            .read_to_end(&mut reply);
        let _ = done_tx.send(read.map(|_| reply));
    });
    let wait = deadline.saturating_duration_since(Instant::now());
    let reply = match done.recv_timeout(wait) {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ChildFailure::Garbled(err.to_string()));
        }
        Err(_) => {
            // The child is unreaped, so its pid still names it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(ChildFailure::TimedOut(limits.time));
        }
    };
    if reply.len() as u64 > MAX_REPLY_BYTES {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ChildFailure::TooLarge);
    }
    let status = child.wait().map_err(|err| ChildFailure::Died {
        how: format!("could not be waited for ({err})"),
        signalled: false,
    })?;
    if reply.is_empty() {
        let how = crate::supervisor::real::describe_exit(status);
        return Err(ChildFailure::Died {
            how: format!("ended ({how}) without an answer"),
            signalled: status.code().is_none(),
        });
    }
    serde_json::from_slice(&reply).map_err(|err| ChildFailure::Garbled(err.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The child.

/// Only one answer leaves the child: the evaluation's or the watchdog's.
static ANSWERED: Mutex<bool> = Mutex::new(false);

/// Writes `reply` as the child's answer unless one was written; true if this one was.
fn answer(reply: &Reply) -> bool {
    let mut answered = ANSWERED.lock().unwrap_or_else(|e| e.into_inner());
    if *answered {
        return false;
    }
    *answered = true;
    let json = serde_json::to_vec(reply).unwrap_or_else(|err| {
        serde_json::to_vec(&Reply {
            files: reply.files.clone(),
            result: Err(ScriptError::plain(
                ScriptErrorKind::Runtime,
                format!("cannot encode the evaluation's answer: {err}"),
            )),
            sources: None,
        })
        .expect("errors serialize")
    });
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&json);
    let _ = stdout.flush();
    true
}

/// Leaves at once: no destructor runs (a dropped VM would run the script's finalizers).
pub(crate) fn leave(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running anything; always sound.
    unsafe { libc::_exit(code) }
}

/// `reef __evaluate`: reads a [`Request`] on stdin, answers a [`Reply`] on stdout, exits.
pub fn serve_child() -> ! {
    let mut input = Vec::new();
    if std::io::stdin()
        .lock()
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut input)
        .is_err()
    {
        leave(3);
    }
    let request: Request = match serde_json::from_slice(&input) {
        Ok(request) => request,
        Err(err) => {
            eprintln!("reef {CHILD_VERB}: bad request: {err}");
            leave(3);
        }
    };
    drop(input);
    let limits = request.limits();
    set_hard_limits(limits);
    let started = Instant::now();
    let script = request.script.clone();
    std::thread::Builder::new()
        .name("watchdog".into())
        .stack_size(64 << 10)
        .spawn(move || {
            std::thread::sleep((started + limits.time + WATCHDOG_GRACE) - Instant::now());
            let near = lua::last_seen_location();
            let error = ScriptError::at(
                ScriptErrorKind::Budget,
                near.clone(),
                format!(
                    "the script ran past its {:.1} s time budget and was stopped{}; look for an \
                     endless loop (also inside pcall, a __gc finalizer or a metamethod) or a \
                     pattern that backtracks",
                    limits.time.as_secs_f64(),
                    if near.is_some() { " near here" } else { "" },
                ),
            );
            let error = ScriptError {
                file: error.file.or_else(|| Some(script.display().to_string())),
                ..error
            };
            answer(&Reply {
                files: vec![script],
                result: Err(error),
                sources: None,
            });
            leave(0);
        })
        .unwrap_or_else(|_| leave(3));
    let reply = evaluate_here(&request, limits);
    answer(&reply);
    leave(0)
}

/// The evaluation itself, in this process.
fn evaluate_here(request: &Request, limits: Limits) -> Reply {
    let host = match Host::from_process() {
        Ok(host) => host,
        Err(err) => {
            return Reply {
                files: Vec::new(),
                result: Err(err),
                sources: None,
            };
        }
    };
    let (evaluation, automaton) = lua::evaluate_from(&request.script, &host, limits, None);
    let sources = request.keep_sources.then_some(evaluation.sources);
    let result = evaluation.result.map(|topology| {
        let (hooks, timers) = automaton
            .as_ref()
            .map(|a| (a.hook_count(), a.timer_count()))
            .unwrap_or_default();
        Evaluated {
            report: validate::validate(&topology.instances),
            topology,
            hooks,
            timers,
        }
    });
    // Never dropped: `leave` ends the process with the VM and its finalizers untouched.
    std::mem::forget(automaton);
    Reply {
        files: evaluation.files,
        result,
        sources,
    }
}

/// Caps this process: address space at the VM's limit plus [`ADDRESS_SPACE_OVERHEAD`], CPU time
/// at the budget plus two seconds (the watchdog normally ends it long before).
fn set_hard_limits(limits: Limits) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let space = (limits.memory as u64).saturating_add(ADDRESS_SPACE_OVERHEAD);
        let _ = setrlimit(
            Resource::As,
            Rlimit {
                current: Some(space),
                maximum: Some(space),
            },
        );
        let cpu = limits.time.as_secs() + 2;
        let _ = setrlimit(
            Resource::Cpu,
            Rlimit {
                current: Some(cpu),
                maximum: Some(cpu + 1),
            },
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = limits;
}
