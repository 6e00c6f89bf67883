//! Automation in Lua: `reef.on`, `reef.every`, `reef.after` register hooks while a script is
//! evaluated; inside `reef up` an [`Automaton`] keeps that script's VM and runs them.
//!
//! Hooks run one at a time on the thread that owns the VM, each with its own instruction and
//! time budget: a hook that raises is logged with file:line and the rest goes on; a hook that
//! runs past its budget is stopped. Actions (`reef.start/stop/restart`) are messages to the
//! supervisor and return at once; `reef.exec` blocks only this thread, never supervision.
//!
//! A program run by `reef.exec` ends with reef: it runs in its own process group (killed as a
//! whole on timeout), gets SIGKILL should reef die while it runs, and carries the topology's
//! marker variables (instance `reef.exec`), so whatever it leaves behind can be found.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlua::{Function, Lua, LuaSerdeExt, Table, Value};

use super::{Limits, ScriptError, ScriptErrorKind, caller_location, state};
use crate::host;

/// Events a hook can wait for.
pub const EVENTS: &[&str] = &[
    "ready",
    "unhealthy",
    "healthy",
    "exit",
    "blocked",
    "degraded",
    "recovered",
    "spawned",
    "adopted",
    "backoff",
    "stopped",
    "config-error",
    "reload",
    "reload-failed",
];

/// What one hook invocation may use.
pub const HOOK_LIMITS: Limits = Limits {
    memory: 64 << 20,
    instructions: 100_000_000,
    time: Duration::from_secs(5),
};

/// The shortest period of `reef.every`.
const MIN_PERIOD: f64 = 0.05;
/// Output kept from `reef.exec`, per stream.
const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

const HOOKS: &str = "reef.hooks";
const TIMERS: &str = "reef.timers";
/// The thread of the hook or timer running now (absent between runs).
const CURRENT_TASK: &str = "reef.current_task";
/// What `reef.exec` yields to the scheduler with, so a hook's own `coroutine.yield` is told apart.
const EXEC_SENTINEL: &str = "reef.exec_sentinel";

/// An action a hook asks of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(String),
    Stop(String),
    Restart(String),
}

/// What the running supervisor lends the hooks.
pub struct Attachment {
    /// Carries out an action; `Err` for an unknown instance.
    pub act: Box<dyn Fn(Action) -> Result<(), String> + Send>,
    /// A snapshot of the topology's status.
    pub status: Box<dyn Fn() -> serde_json::Value + Send>,
    /// Where programs started by `reef.exec` from a hook report their end; `None`: `reef.exec`
    /// waits for the program itself.
    pub exec_done: Option<std::sync::mpsc::Sender<ExecDone>>,
}

/// A program started by `reef.exec` from a hook has ended (or could not run).
#[derive(Debug)]
pub struct ExecDone {
    pub ticket: u64,
    pub result: Result<(i32, Vec<u8>, Vec<u8>), String>,
}

/// Programs run by hooks at once, at most.
const MAX_RUNNING_EXECS: usize = 16;
static RUNNING_EXECS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(super) fn register(lua: &Lua, reef: &Table) -> mlua::Result<()> {
    lua.set_named_registry_value(HOOKS, lua.create_table()?)?;
    lua.set_named_registry_value(TIMERS, lua.create_table()?)?;
    reef.set("on", lua.create_function(on)?)?;
    reef.set(
        "every",
        lua.create_function(|lua, (seconds, f): (Value, Value)| {
            timer(lua, "reef.every", seconds, f, true)
        })?,
    )?;
    reef.set(
        "after",
        lua.create_function(|lua, (seconds, f): (Value, Value)| {
            timer(lua, "reef.after", seconds, f, false)
        })?,
    )?;
    reef.set(
        "start",
        lua.create_function(|lua, name: Value| act(lua, "reef.start", name, Action::Start))?,
    )?;
    reef.set(
        "stop",
        lua.create_function(|lua, name: Value| act(lua, "reef.stop", name, Action::Stop))?,
    )?;
    reef.set(
        "restart",
        lua.create_function(|lua, name: Value| act(lua, "reef.restart", name, Action::Restart))?,
    )?;
    reef.set("exec", exec_function(lua)?)?;
    reef.set("status", lua.create_function(status)?)?;
    let log = lua.create_table()?;
    log.set(
        "info",
        lua.create_function(|lua, message: Value| log_line(lua, tracing::Level::INFO, message))?,
    )?;
    log.set(
        "warn",
        lua.create_function(|lua, message: Value| log_line(lua, tracing::Level::WARN, message))?,
    )?;
    log.set(
        "error",
        lua.create_function(|lua, message: Value| log_line(lua, tracing::Level::ERROR, message))?,
    )?;
    reef.set("log", log)?;
    Ok(())
}

fn misuse(lua: &Lua, message: String) -> mlua::Error {
    ScriptError::raise(lua, ScriptErrorKind::InvalidField, message)
}

fn here(lua: &Lua) -> String {
    caller_location(lua, 1)
        .map(|l| l.to_string())
        .unwrap_or_else(|| "?".into())
}

/// `reef.on(event, [name], fn)`
fn on(lua: &Lua, args: mlua::Variadic<Value>) -> mlua::Result<()> {
    const USAGE: &str = "reef.on(event, [name], function(e) ... end)";
    let (event, name, function) = match args.as_slice() {
        [Value::String(event), Value::Function(f)] => (event.to_string_lossy(), None, f.clone()),
        [
            Value::String(event),
            Value::String(name),
            Value::Function(f),
        ] => (
            event.to_string_lossy(),
            Some(name.to_string_lossy()),
            f.clone(),
        ),
        _ => return Err(misuse(lua, format!("expected {USAGE}"))),
    };
    if !EVENTS.contains(&event.as_str()) {
        let hint = crate::suggest::did_you_mean(&event, EVENTS.iter().copied())
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        return Err(misuse(
            lua,
            format!(
                "reef.on: unknown event {event:?}{hint}; events: {}",
                EVENTS.join(", ")
            ),
        ));
    }
    if event == "reload" && name.is_some() {
        return Err(misuse(
            lua,
            "reef.on: \"reload\" concerns the whole topology; drop the name".into(),
        ));
    }
    let hook = lua.create_table()?;
    hook.set("event", event)?;
    hook.set("name", name)?;
    hook.set("fn", function)?;
    hook.set("where", here(lua))?;
    lua.named_registry_value::<Table>(HOOKS)?.push(hook)?;
    Ok(())
}

fn timer(lua: &Lua, function: &str, seconds: Value, f: Value, repeat: bool) -> mlua::Result<()> {
    let seconds = match seconds {
        Value::Integer(n) => n as f64,
        Value::Number(n) => n,
        other => {
            return Err(misuse(
                lua,
                format!(
                    "{function}(seconds, fn): seconds must be a number, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    let least = if repeat { MIN_PERIOD } else { 0.0 };
    let most = crate::topology::MAX_SECONDS;
    if !seconds.is_finite() || seconds < least || seconds > most {
        return Err(misuse(
            lua,
            format!("{function}: {seconds} s is not a usable delay (from {least} to {most} s)"),
        ));
    }
    let Value::Function(f) = f else {
        return Err(misuse(
            lua,
            format!("{function}(seconds, fn): fn must be a function"),
        ));
    };
    let entry = lua.create_table()?;
    entry.set("seconds", seconds)?;
    entry.set("repeat", repeat)?;
    entry.set("fn", f)?;
    entry.set("where", here(lua))?;
    lua.named_registry_value::<Table>(TIMERS)?.push(entry)?;
    Ok(())
}

/// `reef.start/stop/restart(name)`: `true`, or `nil, err` for an unknown instance.
fn act(
    lua: &Lua,
    function: &str,
    name: Value,
    make: fn(String) -> Action,
) -> mlua::Result<(Value, Value)> {
    let Value::String(name) = name else {
        return Err(misuse(
            lua,
            format!("{function}(name): name must be a string"),
        ));
    };
    let name = name.to_string_lossy();
    let outcome = {
        let state = state(lua);
        state
            .attachment
            .as_ref()
            .map(|attachment| (attachment.act)(make(name)))
    };
    match outcome {
        None => Err(misuse(
            lua,
            format!(
                "{function} acts on running gateways: call it from a hook (reef.on, reef.every, reef.after)"
            ),
        )),
        Some(Ok(())) => Ok((Value::Boolean(true), Value::Nil)),
        Some(Err(err)) => Ok((Value::Nil, Value::String(lua.create_string(err)?))),
    }
}

fn status(lua: &Lua, (): ()) -> mlua::Result<Value> {
    let snapshot = {
        let state = state(lua);
        state
            .attachment
            .as_ref()
            .map(|attachment| (attachment.status)())
    };
    match snapshot {
        Some(snapshot) => to_lua(lua, &snapshot),
        None => Err(misuse(
            lua,
            "reef.status() describes running gateways: call it from a hook".into(),
        )),
    }
}

fn log_line(lua: &Lua, level: tracing::Level, message: Value) -> mlua::Result<()> {
    let text = match &message {
        Value::String(s) => s.to_string_lossy(),
        other => other.to_string()?,
    };
    let at = here(lua);
    match level {
        tracing::Level::ERROR => tracing::error!(script = %at, "{text}"),
        tracing::Level::WARN => tracing::warn!(script = %at, "{text}"),
        _ => tracing::info!(script = %at, "{text}"),
    }
    Ok(())
}

/// Plain data for Lua: absent values (JSON null) become nil, not a null userdata that would
/// count as true in `if e.code then`.
fn to_lua(lua: &Lua, value: &serde_json::Value) -> mlua::Result<Value> {
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    lua.to_value_with(value, options)
}

/// `reef.exec{ "cmd", "arg", timeout = 10, env = {...}, cwd = "..." }` -> code, stdout, stderr,
/// or `nil, err` when it cannot start or runs past its timeout.
///
/// Inside a hook or timer run by the hook host, the program runs on a thread of its own and the
/// hook's coroutine yields until it ends, so other hooks and timers go on meanwhile. Where a
/// coroutine cannot yield (a `table.sort` comparator, a `string.gsub` callback) or inside a
/// coroutine of the script's own, it waits for the program.
fn exec_function(lua: &Lua) -> mlua::Result<Function> {
    lua.set_named_registry_value(EXEC_SENTINEL, lua.create_table()?)?;
    let coroutine: Table = lua.globals().get("coroutine")?;
    lua.load(
        "local start, run, in_task, sentinel, yield, isyieldable = ...\n\
         return function(spec)\n\
           if in_task() and isyieldable() then\n\
             local ticket = start(spec)\n\
             return yield(sentinel, ticket)\n\
           end\n\
           return run(spec)\n\
         end",
    )
    .set_name("=reef.exec")
    .call((
        lua.create_function(exec_start)?,
        lua.create_function(exec)?,
        lua.create_function(|lua, ()| Ok(in_current_task(lua)))?,
        lua.named_registry_value::<Table>(EXEC_SENTINEL)?,
        coroutine.get::<Function>("yield")?,
        coroutine.get::<Function>("isyieldable")?,
    ))
}

/// Whether Lua runs on the thread of the current hook task itself (not a coroutine of its own)
/// and programs can be waited for without blocking.
fn in_current_task(lua: &Lua) -> bool {
    let scheduled = state(lua)
        .attachment
        .as_ref()
        .is_some_and(|attachment| attachment.exec_done.is_some());
    scheduled
        && lua
            .named_registry_value::<Option<mlua::Thread>>(CURRENT_TASK)
            .ok()
            .flatten()
            .is_some_and(|task| task.to_pointer() == lua.current_thread().to_pointer())
}

/// A checked `reef.exec` table.
struct ExecSpec {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout: Duration,
}

fn exec_spec(lua: &Lua, spec: Value, level: usize) -> mlua::Result<ExecSpec> {
    const USAGE: &str =
        "reef.exec{ \"cmd\", \"arg\", timeout = 10, env = { K = \"v\" }, cwd = \"/dir\" }";
    let misuse = |message: String| {
        mlua::Error::external(ScriptError::at(
            ScriptErrorKind::InvalidField,
            caller_location(lua, level),
            message,
        ))
    };
    let Value::Table(spec) = spec else {
        return Err(misuse(format!("expected {USAGE}")));
    };
    let argv: Vec<String> = spec
        .sequence_values::<String>()
        .collect::<mlua::Result<_>>()
        .map_err(|_| {
            misuse(format!(
                "reef.exec: the list part is the argv, all strings: {USAGE}"
            ))
        })?;
    if argv.is_empty() {
        return Err(misuse(format!("reef.exec: name a program: {USAGE}")));
    }
    let timeout: f64 = spec.get::<Option<f64>>("timeout")?.unwrap_or(10.0);
    if !timeout.is_finite() || timeout <= 0.0 || timeout > crate::topology::MAX_SECONDS {
        return Err(misuse(
            "reef.exec: timeout must be more than 0 seconds".into(),
        ));
    }
    let env: BTreeMap<String, String> = spec
        .get::<Option<BTreeMap<String, String>>>("env")?
        .unwrap_or_default();
    let cwd: Option<String> = spec.get("cwd")?;
    let nul = argv
        .iter()
        .chain(env.keys())
        .chain(env.values())
        .chain(cwd.iter())
        .any(|text| text.contains('\0'));
    if nul {
        return Err(misuse(
            "reef.exec: a NUL byte (\\0) cannot be passed to a program".into(),
        ));
    }
    if state(lua).attachment.is_none() {
        return Err(misuse(
            "reef.exec runs programs: call it from a hook (reef.on, reef.every, reef.after); evaluating a topology has no effects".into(),
        ));
    }
    Ok(ExecSpec {
        argv,
        env,
        cwd,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// `reef.exec` where it waits for the program.
fn exec(lua: &Lua, spec: Value) -> mlua::Result<(Value, Value, Value)> {
    let spec = exec_spec(lua, spec, 1)?;
    let started = Instant::now();
    let outcome = run_command(&spec.argv, &spec.env, spec.cwd.as_deref(), spec.timeout);
    // Time spent waiting for the program is not the hook's own work.
    state(lua).budget.started += started.elapsed();
    exec_results(lua, outcome)
}

fn exec_results(
    lua: &Lua,
    outcome: Result<(i32, Vec<u8>, Vec<u8>), String>,
) -> mlua::Result<(Value, Value, Value)> {
    let text =
        |bytes: Vec<u8>| -> mlua::Result<Value> { Ok(Value::String(lua.create_string(bytes)?)) };
    match outcome {
        Ok((code, stdout, stderr)) => {
            Ok((Value::Integer(code.into()), text(stdout)?, text(stderr)?))
        }
        Err(err) => Ok((
            Value::Nil,
            Value::String(lua.create_string(err)?),
            Value::Nil,
        )),
    }
}

/// `reef.exec` from a hook task: starts the program on a thread and returns its ticket; the
/// task yields until [`Automaton::exec_done`] resumes it.
fn exec_start(lua: &Lua, spec: Value) -> mlua::Result<Value> {
    use std::sync::atomic::Ordering;
    let spec = exec_spec(lua, spec, 2)?;
    let Some(done) = state(lua)
        .attachment
        .as_ref()
        .and_then(|attachment| attachment.exec_done.clone())
    else {
        return Err(mlua::Error::runtime(
            "reef.exec: this hook runs without a scheduler for programs",
        ));
    };
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    if RUNNING_EXECS.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_EXECS {
        RUNNING_EXECS.fetch_sub(1, Ordering::SeqCst);
        let _ = done.send(ExecDone {
            ticket,
            result: Err(format!(
                "{MAX_RUNNING_EXECS} programs started by hooks are still running; `{}` was not started",
                spec.argv[0]
            )),
        });
        return Ok(Value::Integer(ticket as i64));
    }
    let spawned = std::thread::Builder::new()
        .name("reef-exec".into())
        .spawn(move || {
            let result = run_command(&spec.argv, &spec.env, spec.cwd.as_deref(), spec.timeout);
            RUNNING_EXECS.fetch_sub(1, Ordering::SeqCst);
            let _ = done.send(ExecDone { ticket, result });
        });
    if let Err(err) = spawned {
        RUNNING_EXECS.fetch_sub(1, Ordering::SeqCst);
        return Err(mlua::Error::runtime(format!(
            "reef.exec: cannot start a thread for the program: {err}"
        )));
    }
    Ok(Value::Integer(ticket as i64))
}

/// Runs a program in its own process group with output captured; kills the group on timeout.
fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    timeout: Duration,
) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    // After the script's own variables: a hook cannot pass its programs off as something else.
    if let Some(topology) = host::markers::topology() {
        let markers = host::markers::Markers {
            topology,
            instance: EXEC_INSTANCE.into(),
            spawn: host::markers::new_spawn_nonce(),
        };
        command.envs(markers.vars());
    }
    host::end_with_parent(&mut command);
    // Tracked: reef's orphan reaper must leave this child's exit status to the wait below.
    let mut child = host::reaper::spawn_tracked(|| command.spawn(), |child| Some(child.id()))
        .map_err(|err| format!("cannot run `{}`: {err}", argv[0]))?;
    let _tracked = host::reaper::Untrack(child.id());
    type Buffer = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;
    let read_all = |stream: Option<Box<dyn Read + Send>>| -> (Buffer, std::thread::JoinHandle<()>) {
        let kept: Buffer = Buffer::default();
        let filling = kept.clone();
        let reader = std::thread::spawn(move || {
            let Some(mut stream) = stream else { return };
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let mut kept = filling.lock().expect("output lock");
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        });
        (kept, reader)
    };
    let (stdout, stdout_reader) = read_all(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let (stderr, stderr_reader) = read_all(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    // The child leads its group. Its exit is noticed without reaping it (WNOWAIT): the
    // unreaped leader keeps the group's id from being reused, so the group is killed while its
    // id still names only what this program left behind.
    let group = child.id();
    let leader = rustix::process::Pid::from_child(&child);
    let exited = || {
        use rustix::process::{WaitId, WaitIdOptions};
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        rustix::process::waitid(WaitId::Pid(leader), options).map(|status| status.is_some())
    };
    let deadline = Instant::now() + timeout;
    loop {
        match exited() {
            Ok(true) => break,
            Ok(false) if Instant::now() >= deadline => {
                host::signal::signal_group(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "`{}` timed out after {:.1} s and was killed",
                    argv[0],
                    timeout.as_secs_f64()
                ));
            }
            Ok(false) => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => return Err(format!("waiting for `{}` failed: {err}", argv[0])),
        }
    }
    // Whatever it left running in its group (`cmd &`) would hold the pipes open: end it.
    host::signal::signal_group(group, nix::sys::signal::Signal::SIGKILL);
    let status = child
        .wait()
        .map_err(|err| format!("waiting for `{}` failed: {err}", argv[0]))?;
    // Output still in flight is read until the deadline; a descendant that left the group and
    // keeps a pipe open does not hold the hook beyond it.
    while !(stdout_reader.is_finished() && stderr_reader.is_finished()) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let take = |buffer: &Buffer| std::mem::take(&mut *buffer.lock().expect("output lock"));
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok((code, take(&stdout), take(&stderr)))
}

/// The instance name in the markers of programs run by `reef.exec`.
pub const EXEC_INSTANCE: &str = "reef.exec";

/// After an evaluation: every `reef.on(event, name, ...)` must name a declared instance.
pub(super) fn check_hook_names(lua: &Lua) -> mlua::Result<()> {
    let names: Vec<String> = state(lua)
        .instances
        .iter()
        .map(|i| i.name.clone())
        .collect();
    for hook in lua
        .named_registry_value::<Table>(HOOKS)?
        .sequence_values::<Table>()
    {
        let hook = hook?;
        let Some(name) = hook.get::<Option<String>>("name")? else {
            continue;
        };
        if names.contains(&name) {
            continue;
        }
        let place: String = hook.get("where")?;
        let (file, line) = place
            .rsplit_once(':')
            .map(|(file, line)| (file.to_owned(), line.parse().unwrap_or(0)))
            .unwrap_or((place.clone(), 0));
        return Err(mlua::Error::external(ScriptError::at(
            ScriptErrorKind::InvalidField,
            Some(crate::topology::Location { file, line }),
            format!(
                "reef.on: {}",
                crate::suggest::no_such_instance(&name, names.iter().map(String::as_str))
            ),
        )));
    }
    Ok(())
}

/// A timer of the running script.
struct Timer {
    id: u64,
    function: Function,
    period: Option<Duration>,
    due: Instant,
    place: String,
}

/// A hook or timer run: a coroutine, with the budget it has used so far (it pauses while it
/// waits for a program started by `reef.exec`).
struct Task {
    thread: mlua::Thread,
    what: String,
    used: Duration,
    instructions: u64,
    /// The timer it runs for: a repeating timer does not fire again while a run still waits.
    timer: Option<u64>,
}

/// A successfully evaluated script's VM, kept to run its hooks and timers.
///
/// Each hook or timer runs as a coroutine under its own budget. One that calls `reef.exec`
/// yields until the program ends ([`Automaton::exec_done`]); the others go on meanwhile.
pub struct Automaton {
    lua: Lua,
    timers: Vec<Timer>,
    next_timer: u64,
    waiting: std::collections::HashMap<u64, Task>,
    /// Told before each run of a hook or timer (the hook host tells its parent).
    announce: Option<Announcer>,
}

/// Told what runs before each run of a hook or timer.
type Announcer = Box<dyn Fn(&str) + Send>;

impl Automaton {
    /// Takes over the VM of an evaluation (its state must still be attached).
    pub(super) fn new(lua: Lua) -> mlua::Result<Automaton> {
        let mut automaton = Automaton {
            lua,
            timers: Vec::new(),
            next_timer: 0,
            waiting: std::collections::HashMap::new(),
            announce: None,
        };
        automaton.take_new_timers()?;
        Ok(automaton)
    }

    /// Moves the timers registered since the last look (at evaluation, or by a hook calling
    /// `reef.every`/`reef.after`) into the schedule.
    fn take_new_timers(&mut self) -> mlua::Result<()> {
        let now = Instant::now();
        let pending = self.lua.named_registry_value::<Table>(TIMERS)?;
        for entry in pending.sequence_values::<Table>() {
            let entry = entry?;
            let seconds: f64 = entry.get("seconds")?;
            let repeat: bool = entry.get("repeat")?;
            self.next_timer += 1;
            self.timers.push(Timer {
                id: self.next_timer,
                function: entry.get("fn")?,
                period: repeat.then(|| Duration::from_secs_f64(seconds)),
                due: now + Duration::from_secs_f64(seconds),
                place: entry.get("where")?,
            });
        }
        self.lua
            .set_named_registry_value(TIMERS, self.lua.create_table()?)
    }

    /// Lends the hooks the running supervisor's actions and status.
    pub fn attach(&mut self, attachment: Attachment) {
        state(&self.lua).attachment = Some(attachment);
    }

    /// Calls `announce` with what runs before each run of a hook or timer.
    pub fn announce_runs(&mut self, announce: impl Fn(&str) + Send + 'static) {
        self.announce = Some(Box::new(announce));
    }

    pub fn hook_count(&self) -> usize {
        self.lua
            .named_registry_value::<Table>(HOOKS)
            .map(|hooks| hooks.raw_len())
            .unwrap_or(0)
    }

    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Runs every hook registered for `event` (a table with at least `event` and, for
    /// instance events, `name`).
    pub fn dispatch(&mut self, event: &serde_json::Value) {
        let kind = event
            .get("event")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let name = event.get("name").and_then(|v| v.as_str());
        let Ok(hooks) = self.lua.named_registry_value::<Table>(HOOKS) else {
            return;
        };
        let matching: Vec<(Function, String)> = hooks
            .sequence_values::<Table>()
            .filter_map(Result::ok)
            .filter(|hook| hook.get::<String>("event").is_ok_and(|e| e == kind))
            .filter(|hook| match hook.get::<Option<String>>("name") {
                Ok(Some(wanted)) => Some(wanted.as_str()) == name,
                _ => true,
            })
            .filter_map(|hook| Some((hook.get("fn").ok()?, hook.get("where").ok()?)))
            .collect();
        for (function, place) in matching {
            let argument = match to_lua(&self.lua, event) {
                Ok(value) => value,
                Err(err) => {
                    tracing::error!("cannot pass the {kind} event to the hook at {place}: {err}");
                    continue;
                }
            };
            self.call(&function, argument, format!("{kind} hook at {place}"), None);
        }
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.iter().map(|t| t.due).min()
    }

    /// Runs the timers that are due.
    pub fn run_due_timers(&mut self) {
        let now = Instant::now();
        // Take the due timers out first: their functions may schedule new ones.
        let (fired, kept): (Vec<Timer>, Vec<Timer>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|timer| timer.due <= now);
        self.timers = kept;
        for mut timer in fired {
            let still_waiting = self
                .waiting
                .values()
                .any(|task| task.timer == Some(timer.id));
            if still_waiting {
                tracing::warn!(
                    "timer at {} is due but its last run still waits for a program; skipped",
                    timer.place
                );
            } else {
                let function = timer.function.clone();
                let what = format!("timer at {}", timer.place);
                self.call(&function, Value::Nil, what, Some(timer.id));
            }
            if let Some(period) = timer.period {
                timer.due = Instant::now() + period;
                self.timers.push(timer);
            }
        }
    }

    /// A program started by `reef.exec` ended: the hook that waits for it goes on.
    pub fn exec_done(&mut self, done: ExecDone) {
        let Some(task) = self.waiting.remove(&done.ticket) else {
            return;
        };
        let results = match exec_results(&self.lua, done.result) {
            Ok((code, stdout, stderr)) => mlua::MultiValue::from_iter([code, stdout, stderr]),
            Err(err) => {
                tracing::error!("{}: cannot pass the program's results: {err}", task.what);
                return;
            }
        };
        self.resume(task, results);
    }

    /// One hook invocation under a fresh budget; errors and overruns are logged, never raised.
    fn call(&mut self, function: &Function, argument: Value, what: String, timer: Option<u64>) {
        let thread = match self.lua.create_thread(function.clone()) {
            Ok(thread) => thread,
            Err(err) => {
                tracing::error!("{what} cannot run: {err}");
                return;
            }
        };
        let task = Task {
            thread,
            what,
            used: Duration::ZERO,
            instructions: 0,
            timer,
        };
        self.resume(task, mlua::MultiValue::from_iter([argument]));
    }

    /// Runs `task` until it ends, fails or waits for a program, with the budget it has left.
    fn resume(&mut self, mut task: Task, arguments: mlua::MultiValue) {
        if let Some(announce) = &self.announce {
            announce(&task.what);
        }
        let started = Instant::now();
        {
            let mut state = state(&self.lua);
            state.budget.limits = HOOK_LIMITS;
            state.budget.started = started - task.used;
            state.budget.instructions = task.instructions;
            state.budget.last_location = None;
        }
        let _ = self
            .lua
            .set_named_registry_value(CURRENT_TASK, task.thread.clone());
        let outcome = task.thread.resume::<mlua::MultiValue>(arguments);
        let _ = self.lua.set_named_registry_value(CURRENT_TASK, Value::Nil);
        task.used += started.elapsed();
        task.instructions = state(&self.lua).budget.instructions;
        match outcome {
            Err(err) => {
                let near = state(&self.lua).budget.last_location.clone();
                let err = ScriptError::from_lua(&err, near);
                match err.kind {
                    ScriptErrorKind::Budget => tracing::error!("{} was stopped: {err}", task.what),
                    _ => tracing::error!("{} failed: {err}", task.what),
                }
            }
            Ok(_) if task.thread.status() != mlua::thread::ThreadStatus::Resumable => {}
            Ok(yielded) => match self.exec_ticket(&yielded) {
                Some(ticket) => {
                    self.waiting.insert(ticket, task);
                }
                None => tracing::error!(
                    "{} yielded outside a coroutine of its own; it was ended (only reef.exec \
                     may pause a hook)",
                    task.what
                ),
            },
        }
        if let Err(err) = self.take_new_timers() {
            tracing::error!("cannot schedule new timers: {err}");
        }
    }

    /// The ticket of a `reef.exec` yield: the sentinel, then the ticket.
    fn exec_ticket(&self, yielded: &mlua::MultiValue) -> Option<u64> {
        let sentinel = self.lua.named_registry_value::<Table>(EXEC_SENTINEL).ok()?;
        match yielded.iter().collect::<Vec<_>>().as_slice() {
            [Value::Table(first), Value::Integer(ticket)]
                if first.to_pointer() == sentinel.to_pointer() =>
            {
                u64::try_from(*ticket).ok()
            }
            _ => None,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::host::identity::{is_same_process, start_time};
    use crate::host::testing::{PATIENCE, isolated, kill_if_same, read_pid};

    fn run(script: &str, env: &[(&str, &str)]) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
        let argv = ["sh", "-c", script, "sh"].map(String::from);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run_command(&argv, &env, None, PATIENCE)
    }

    #[test]
    fn exec_children_carry_the_markers_and_cannot_forge_them() {
        // Sets the process-wide topology: alone in a copy of the test binary.
        if !isolated(
            "lua::automation::tests::exec_children_carry_the_markers_and_cannot_forge_them",
        ) {
            return;
        }
        host::markers::set_topology("hooks-test");
        let forged = [("REEF_TOPOLOGY", "other"), ("REEF_SPAWN", "forged")];
        let script = r#"printf '%s|%s|%s' "$REEF_TOPOLOGY" "$REEF_INSTANCE" "$REEF_SPAWN""#;
        let (code, out, _) = run(script, &forged).unwrap();
        let out = String::from_utf8(out).unwrap();
        let fields: Vec<&str> = out.split('|').collect();
        assert_eq!(code, 0);
        assert_eq!(fields[..2], ["hooks-test", EXEC_INSTANCE], "{out}");
        assert!(fields[2].len() == 16 && fields[2] != "forged", "{out}");
        let (_, again, _) = run(script, &[]).unwrap();
        assert_ne!(
            String::from_utf8(again).unwrap(),
            out,
            "a fresh nonce per run"
        );
    }

    #[test]
    fn exec_children_are_untracked_once_reaped() {
        let (code, out, _) = run("echo $$; exit 4", &[]).unwrap();
        assert_eq!(code, 4);
        let pid: u32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
        // Forgotten once reaped, so the registry does not grow.
        assert!(!host::reaper::is_tracked(pid));
    }

    /// The copy of the test binary that plays reef runs a hook program, then is killed.
    const PDEATH_PID_FILE: &str = "REEF_TEST_EXEC_PID_FILE";

    #[test]
    fn an_exec_child_dies_with_reef() {
        if let Ok(pid_file) = std::env::var(PDEATH_PID_FILE) {
            let script = format!("echo $$ > '{pid_file}'; exec sleep 30");
            let _ = run(&script, &[]);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("exec.pid");
        let mut reef = Command::new(std::env::current_exe().unwrap())
            .args([
                "lua::automation::tests::an_exec_child_dies_with_reef",
                "--exact",
                "--nocapture",
            ])
            .env(PDEATH_PID_FILE, &pid_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let program = read_pid(&pid_file, "sleep");
        let ticks = start_time(program).unwrap();
        reef.kill().unwrap();
        reef.wait().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while is_same_process(program, ticks) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let survived = is_same_process(program, ticks);
        kill_if_same(program, ticks);
        assert!(!survived, "the hook program outlived reef");
    }
}
