//! Evaluating a topology script.
//!
//! Every evaluation builds a fresh Lua 5.4 VM ([`evaluate`]): a sandbox without `io`, `debug`,
//! file loading (`dofile`, `loadfile`), finalizers or process control (`os.execute`,
//! `os.exit`), text chunks only (no bytecode), `print` to stderr, a memory limit, and an
//! instruction and time budget enforced by a hook ([`sandbox`] says how none of it can be
//! caught away). Pattern matching runs in C where the hook cannot reach, so patterns whose
//! backtracking could run long are refused up front. An endless loop or a memory bomb fails the
//! evaluation with file and line instead of hanging reef; the child process an evaluation runs
//! in (`crate::evaluator`) is the backstop.
//!
//! The script and its modules are read by [`read_source`]: regular files of at most
//! [`MAX_SCRIPT_BYTES`], opened without blocking. The evaluation keeps the bytes of every file
//! it read ([`Evaluation::sources`]), and [`evaluate_from`] can run the same script again from
//! those bytes alone, whatever the disk says since ("the last good script").
//!
//! The `reef` module is registered one namespace per file (`gateway`, `ports`, `host`,
//! [`automation`]); unknown members raise with a "did you mean". `loader` replaces `require`
//! so that sibling modules and the modules shipped in `scripts/` load, and records every file it
//! read (and where missing modules would be): the watch set for hot reload, even when the
//! evaluation fails. [`evaluate_keeping_vm`] keeps the VM of a good evaluation as an
//! [`automation::Automaton`] that runs the script's hooks inside `reef up`.
//!
//! Script state lives in the VM's app data (`EvalState`); Lua only ever sees plain tables and
//! read-only views.

pub mod automation;
mod error;
mod gateway;
mod host;
mod loader;
mod ports;
mod sandbox;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

pub use error::{ScriptError, ScriptErrorKind};
pub use loader::{MAX_SCRIPT_BYTES, SHIPPED_MODULES, read_source};

use crate::ports::{Pool, PortRange};
use crate::topology::{GatewaySpec, Instance, Location, Topology};

/// Resource limits of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes the VM may allocate.
    pub memory: usize,
    /// VM instructions the script may run.
    pub instructions: u64,
    /// Wall-clock time the script may take, whatever it runs.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 64 << 20,
            instructions: 200_000_000,
            time: Duration::from_secs(2),
        }
    }
}

/// How often (in VM instructions) the budget hook runs.
const HOOK_EVERY: u32 = 10_000;

/// The bytes of files an evaluation read, by absolute path.
pub type Sources = BTreeMap<PathBuf, Vec<u8>>;

/// What a script sees of the host: its environment (for `reef.env`) and the home directory
/// profiles resolve against.
#[derive(Debug, Clone)]
pub struct Host {
    pub env: BTreeMap<String, String>,
    pub home: PathBuf,
}

impl Host {
    /// The current process's environment, with home resolved as OpenClaw does.
    pub fn from_process() -> Result<Host, ScriptError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Host::from_env(env)
    }

    pub fn from_env(env: BTreeMap<String, String>) -> Result<Host, ScriptError> {
        let home = crate::profile::resolve_home(
            env.get("OPENCLAW_HOME").map(String::as_str),
            env.get("HOME").map(String::as_str),
        )
        .ok_or_else(|| {
            ScriptError::plain(
                ScriptErrorKind::Read,
                "cannot resolve the home directory: neither OPENCLAW_HOME nor HOME is set",
            )
        })?;
        Ok(Host { env, home })
    }
}

/// The outcome of one evaluation. `files` lists every script file read (and where missing
/// modules would be), also on failure; `sources` holds the bytes of each file actually read, by
/// the same absolute paths: give them to [`evaluate_from`] to run this script again as it was.
#[derive(Debug)]
pub struct Evaluation {
    pub result: Result<Topology, ScriptError>,
    pub files: Vec<PathBuf>,
    pub sources: Sources,
}

/// Everything a script builds up while it runs.
pub(crate) struct EvalState {
    /// The script's directory as the user wrote it (for messages).
    pub script_dir_display: PathBuf,
    /// The script's directory, absolute (for resolving relative paths and modules).
    pub script_dir: PathBuf,
    pub home: PathBuf,
    pub defaults: GatewaySpec,
    pub instances: Vec<Instance>,
    /// Footprints declared or handed out so far; pools and `"auto"` skip them.
    pub reserved: Vec<PortRange>,
    pub auto_pool: Pool,
    pub files: Vec<PathBuf>,
    /// The bytes of every file read so far.
    pub sources: Sources,
    /// When evaluating from a snapshot: the only files there are.
    pub snapshot: Option<Sources>,
    /// Modules being loaded, outermost first (to explain a require cycle).
    pub loading: Vec<String>,
    pub budget: Budget,
    /// Bytes `print` wrote in the budget that started at this instant (see `sandbox`).
    pub printed: (Instant, usize),
    /// Inside `reef up`: what hooks may do to the running topology.
    pub attachment: Option<automation::Attachment>,
}

pub(crate) struct Budget {
    limits: Limits,
    started: Instant,
    instructions: u64,
    /// Where the script was when the hook last ran, for errors that carry no position.
    last_location: Option<Location>,
}

impl Budget {
    /// Whether the script has used up its instructions or its time. Once it has, every hook
    /// call raises again, and `pcall` and its kin re-raise (see [`sandbox`]).
    pub(crate) fn overrun(&self) -> bool {
        self.instructions > self.limits.instructions || self.started.elapsed() > self.limits.time
    }

    /// Instructions left before the budget is overrun.
    pub(crate) fn remaining(&self) -> u64 {
        self.limits.instructions.saturating_sub(self.instructions)
    }

    /// Counts `work` done in C on the script's behalf (which the hook cannot see) as
    /// instructions; `Err` once that overruns the budget.
    pub(crate) fn charge(&mut self, work: u64) -> Result<(), ScriptError> {
        self.instructions = self.instructions.saturating_add(work);
        if self.overrun() {
            return Err(self.over_budget());
        }
        Ok(())
    }

    pub(crate) fn over_budget(&self) -> ScriptError {
        ScriptError::over_budget(self.limits, self.last_location.clone())
    }
}

/// The file of the place the budget hook last saw a script at, in this process (see
/// [`last_seen_location`]). Written only when the file changes; the line is an atomic.
static LAST_SEEN_FILE: Mutex<Option<String>> = Mutex::new(None);
static LAST_SEEN_LINE: AtomicU32 = AtomicU32::new(0);

/// The last place any evaluation in this process was seen running (file and line), for a
/// watchdog on another thread that ends an evaluation stuck where the hook cannot reach. Only
/// meaningful in a process that runs one evaluation at a time, like the evaluator's child.
pub fn last_seen_location() -> Option<Location> {
    let file = LAST_SEEN_FILE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()?;
    Some(Location {
        file,
        line: LAST_SEEN_LINE.load(Ordering::Relaxed),
    })
}

/// Evaluates the script at `script` in a fresh VM and resolves its topology.
pub fn evaluate(script: &Path, host: &Host, limits: Limits) -> Evaluation {
    evaluate_from(script, host, limits, None).0
}

/// Like [`evaluate`], and on success keeps the VM as an [`automation::Automaton`] that can run
/// the script's hooks and timers.
pub fn evaluate_keeping_vm(
    script: &Path,
    host: &Host,
    limits: Limits,
) -> (Evaluation, Option<automation::Automaton>) {
    evaluate_from(script, host, limits, None)
}

/// Evaluates `script`, reading it and its modules from `snapshot` when given (the
/// [`Evaluation::sources`] of an earlier evaluation) and from the disk otherwise. With a
/// snapshot, the disk is never read: a module that is not in it does not exist. On success the
/// VM is kept as an [`automation::Automaton`].
pub fn evaluate_from(
    script: &Path,
    host: &Host,
    limits: Limits,
    snapshot: Option<&Sources>,
) -> (Evaluation, Option<automation::Automaton>) {
    let display = script.to_path_buf();
    let absolute = script_path(script, snapshot);
    let read = match snapshot {
        Some(_) => loader::fetch(snapshot, &absolute),
        None => loader::fetch(None, script),
    };
    let source = match read {
        Ok(source) => source,
        Err(unreadable) => {
            return (
                Evaluation {
                    result: Err(unreadable.into_error(script, "script")),
                    files: Vec::new(),
                    sources: Sources::new(),
                },
                None,
            );
        }
    };
    let started = Instant::now();
    let state = EvalState {
        script_dir_display: display.parent().map(Path::to_path_buf).unwrap_or_default(),
        script_dir: absolute.parent().map(Path::to_path_buf).unwrap_or_default(),
        home: host.home.clone(),
        defaults: GatewaySpec::default(),
        instances: Vec::new(),
        reserved: Vec::new(),
        auto_pool: Pool::default_auto(),
        files: vec![absolute.clone()],
        sources: Sources::from([(absolute, source.clone())]),
        snapshot: snapshot.cloned(),
        loading: Vec::new(),
        attachment: None,
        printed: (started, 0),
        budget: Budget {
            limits,
            started,
            instructions: 0,
            last_location: None,
        },
    };
    let ran = run(state, &display, &source, host);
    let (result, automaton) = match ran.result {
        Ok((instances, automaton)) => (
            Ok(Topology {
                script: display,
                instances,
                files: ran.files.clone(),
            }),
            Some(automaton),
        ),
        Err(err) => (Err(err), None),
    };
    (
        Evaluation {
            result,
            files: ran.files,
            sources: ran.sources,
        },
        automaton,
    )
}

/// The absolute path the script is known by (in `files`, `sources` and snapshots): canonical
/// when read from the disk. From a snapshot, the path as given (made absolute, `.` and `..`
/// resolved by name) if the snapshot has it, else its canonical form.
fn script_path(script: &Path, snapshot: Option<&Sources>) -> PathBuf {
    let absolute = std::path::absolute(script).unwrap_or_else(|_| script.to_path_buf());
    let Some(snapshot) = snapshot else {
        return absolute.canonicalize().unwrap_or(absolute);
    };
    let lexical = lexically_normal(&absolute);
    if snapshot.contains_key(&lexical) {
        return lexical;
    }
    match absolute.canonicalize() {
        Ok(canonical) if snapshot.contains_key(&canonical) => canonical,
        _ => lexical,
    }
}

/// `path` with `.` dropped and `..` taken back by name, without asking the disk.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// What running the script left: its result and every file it read.
struct Ran {
    result: Result<(Vec<Instance>, automation::Automaton), ScriptError>,
    files: Vec<PathBuf>,
    sources: Sources,
}

fn run(initial: EvalState, display: &Path, source: &[u8], host: &Host) -> Ran {
    let files = initial.files.clone();
    let sources = initial.sources.clone();
    let lua = match new_vm(initial, host) {
        Ok(lua) => lua,
        Err(err) => {
            return Ran {
                result: Err(ScriptError::from_lua(&err, None)),
                files,
                sources,
            };
        }
    };
    let outcome = lua
        .load(source)
        .set_name(format!("@{}", display.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .exec()
        .and_then(|()| automation::check_hook_names(&lua));
    let (instances, files, sources, failure) = {
        let mut state = state(&lua);
        let failure = outcome.err().map(|err| {
            let err = ScriptError::from_lua(&err, state.budget.last_location.clone());
            // A budget error caught and turned into something else is still the budget's.
            match err.kind {
                ScriptErrorKind::Budget | ScriptErrorKind::Memory => err,
                _ if state.budget.overrun() => state.budget.over_budget(),
                _ => err,
            }
        });
        (
            std::mem::take(&mut state.instances),
            std::mem::take(&mut state.files),
            std::mem::take(&mut state.sources),
            failure,
        )
    };
    // A script that spent its budget does not succeed, even if it caught every error.
    let failure = failure.or_else(|| {
        let state = state(&lua);
        state.budget.overrun().then(|| state.budget.over_budget())
    });
    let result = match failure {
        Some(err) => Err(err),
        None => automation::Automaton::new(lua)
            .map(|automaton| (instances, automaton))
            .map_err(|err| ScriptError::from_lua(&err, None)),
    };
    Ran {
        result,
        files,
        sources,
    }
}

fn new_vm(state: EvalState, host: &Host) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE
        | StdLib::STRING
        | StdLib::MATH
        | StdLib::UTF8
        | StdLib::COROUTINE
        | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let memory = state.budget.limits.memory;
    let script_dir = state.script_dir.clone();
    lua.set_app_data(state);
    sandbox::install(&lua)?;

    let reef = lua.create_table()?;
    gateway::register(&lua, &reef)?;
    automation::register(&lua, &reef)?;
    ports::register(&lua, &reef)?;
    host::register(&lua, &reef, host, &script_dir)?;
    guard_unknown_members(&lua, &reef)?;
    loader::register(&lua, reef)?;

    // Lines keep `last_location` current (memory errors carry no position of their own);
    // every HOOK_EVERY instructions the budget is checked. Once it is overrun, every call of the
    // hook raises, lines included, so that code that caught the error dies at its next line.
    lua.set_global_hook(
        HookTriggers::new()
            .every_line()
            .every_nth_instruction(HOOK_EVERY),
        budget_hook,
    )?;
    lua.set_memory_limit(memory)?;
    Ok(lua)
}

fn budget_hook(lua: &Lua, debug: &mlua::debug::Debug) -> mlua::Result<VmState> {
    // Without its state (the VM is being torn down) nothing of the script may run on.
    let Some(mut state) = lua.app_data_mut::<EvalState>() else {
        return Err(mlua::Error::runtime("the evaluation is over"));
    };
    let budget = &mut state.budget;
    if let (Some(source), Some(line)) = (debug.source().source, debug.current_line())
        && let Some(file) = source.strip_prefix('@')
    {
        let line = line as u32;
        match &mut budget.last_location {
            Some(location) if location.file == file => location.line = line,
            other => {
                *other = Some(Location {
                    file: file.to_owned(),
                    line,
                });
                *LAST_SEEN_FILE
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file.to_owned());
            }
        }
        LAST_SEEN_LINE.store(line, Ordering::Relaxed);
    }
    if debug.event() == mlua::debug::DebugEvent::Count {
        budget.instructions += u64::from(HOOK_EVERY);
    }
    if budget.overrun() {
        return Err(mlua::Error::external(budget.over_budget()));
    }
    Ok(VmState::Continue)
}

/// Makes `reef.gatewya` an error with a hint instead of a puzzling "attempt to call a nil value".
fn guard_unknown_members(lua: &Lua, reef: &Table) -> mlua::Result<()> {
    let mut members: Vec<String> = Vec::new();
    for pair in reef.pairs::<String, mlua::Value>() {
        members.push(pair?.0);
    }
    members.sort();
    let meta = lua.create_table()?;
    meta.set(
        "__index",
        lua.create_function(
            move |lua, (_, key): (mlua::Value, mlua::Value)| -> mlua::Result<()> {
                let key = describe(&key);
                let hint = crate::suggest::did_you_mean(&key, members.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean reef.{s}?)"))
                    .unwrap_or_default();
                Err(ScriptError::raise(
                    lua,
                    ScriptErrorKind::Runtime,
                    format!(
                        "reef.{key} does not exist{hint}; reef has: {}",
                        members.join(", ")
                    ),
                ))
            },
        )?,
    )?;
    reef.set_metatable(Some(meta))?;
    Ok(())
}

/// Where the Lua code calling into Rust is, `level` frames up (1 = the direct caller).
pub(crate) fn caller_location(lua: &Lua, level: usize) -> Option<Location> {
    lua.inspect_stack(level, |debug| {
        let file = debug.source().source?.strip_prefix('@')?.to_owned();
        let line = debug.current_line()? as u32;
        Some(Location { file, line })
    })
    .flatten()
}

/// `Err` with the budget's error once it is spent: for Rust code that called into the script
/// (a metamethod) and may have taken the budget's error for something else.
pub(crate) fn check_budget(lua: &Lua) -> mlua::Result<()> {
    let state = state(lua);
    if state.budget.overrun() {
        return Err(mlua::Error::external(state.budget.over_budget()));
    }
    Ok(())
}

/// A value for a message, without running any of its metamethods: `__tostring` is the
/// script's own code, and a message must neither loop nor swallow the error that stops one.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => text.to_string_lossy(),
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Nil => "nil".into(),
        other => format!("a {}", other.type_name()),
    }
}

/// Borrows the evaluation state. Callers must not call back into Lua while holding it.
pub(crate) fn state(lua: &Lua) -> mlua::AppDataRefMut<'_, EvalState> {
    lua.app_data_mut::<EvalState>()
        .expect("reef functions only run inside an evaluation")
}

/// A read-only view of `data`: reads go through, writes raise.
pub(crate) fn read_only(lua: &Lua, data: Table, what: &str) -> mlua::Result<Table> {
    let view = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set("__index", data)?;
    let what = what.to_owned();
    meta.set(
        "__newindex",
        lua.create_function(
            move |lua, (_, key): (mlua::Value, mlua::Value)| -> mlua::Result<()> {
                Err(ScriptError::raise(
                    lua,
                    ScriptErrorKind::Runtime,
                    format!("{what} is read-only (tried to set {})", describe(&key)),
                ))
            },
        )?,
    )?;
    meta.set("__metatable", false)?;
    view.set_metatable(Some(meta))?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn host() -> Host {
        Host::from_env([("HOME".to_owned(), "/home/ada".to_owned())].into()).unwrap()
    }

    pub(super) fn write(dir: &Path, name: &str, source: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, source).unwrap();
        path
    }

    #[test]
    fn files_of_a_failed_evaluation_are_still_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "reef.lua",
            "require 'lib.good'\nrequire 'lib.bad'\n",
        );
        write(dir.path(), "lib/good.lua", "return {}");
        write(dir.path(), "lib/bad.lua", "error('broken module')");
        let evaluation = evaluate(&script, &host(), Limits::default());
        let err = evaluation.result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Runtime);
        assert!(
            err.file.as_deref().unwrap().ends_with("lib/bad.lua"),
            "{err}"
        );
        let names: Vec<String> = evaluation
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path().canonicalize().unwrap())
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["reef.lua", "lib/good.lua", "lib/bad.lua"]);
    }

    #[test]
    fn instruction_budget_stops_an_endless_loop() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "loop.lua",
            "local n = 0\nwhile true do n = n + 1 end\n",
        );
        let limits = Limits {
            instructions: 1_000_000,
            time: Duration::from_secs(60),
            ..Limits::default()
        };
        let err = evaluate(&script, &host(), limits).result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Budget);
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn budget_also_covers_coroutines() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "co.lua",
            "local co = coroutine.wrap(function() while true do end end)\nco()\n",
        );
        let limits = Limits {
            instructions: 1_000_000,
            time: Duration::from_secs(60),
            ..Limits::default()
        };
        let err = evaluate(&script, &host(), limits).result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Budget);
    }

    #[test]
    fn memory_limit_stops_a_bomb() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "bomb.lua",
            "local t = {}\nwhile true do t[#t + 1] = {} end\n",
        );
        let limits = Limits {
            memory: 4 << 20,
            ..Limits::default()
        };
        let err = evaluate(&script, &host(), limits).result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Memory);
    }

    #[test]
    fn a_caught_gateway_error_does_not_declare_anything() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "pcall.lua",
            "local ok, err = pcall(reef.gateway, { profile = 'a', prot = 1 })\n\
             assert(not ok and tostring(err):find('did you mean'))\n\
             reef.gateway { profile = 'b', port = 20000 }\n",
        );
        let topology = evaluate(&script, &host(), Limits::default())
            .result
            .unwrap();
        let names: Vec<&str> = topology.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn sandbox_has_no_files_or_processes() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "sandbox.lua",
            "assert(io == nil and dofile == nil and loadfile == nil)\n\
             assert(os.execute == nil and os.exit == nil and os.getenv == nil and os.remove == nil)\n\
             assert(type(os.time()) == 'number')\n\
             assert(string.dump == nil and collectgarbage == nil)\n\
             assert(load('\\27Lua\\84\\0', 'x', 'b') == nil)\n\
             local ok, err = pcall(require, '../escape')\n\
             assert(not ok and tostring(err):find('not paths'))\n\
             ok, err = pcall(require, '/etc/passwd')\n\
             assert(not ok and tostring(err):find('not paths'))\n",
        );
        evaluate(&script, &host(), Limits::default())
            .result
            .unwrap();
    }
}

#[cfg(test)]
mod hostile_tests {
    //! Scripts that try to outlast, outgrow or outwit the evaluation.

    use super::*;

    fn host() -> Host {
        Host::from_env([("HOME".to_owned(), "/home/ada".to_owned())].into()).unwrap()
    }

    /// Limits where the instruction budget, not the clock, decides, and decides quickly (a
    /// tight loop calls the line hook at every turn).
    fn small() -> Limits {
        Limits {
            memory: 16 << 20,
            instructions: 200_000,
            time: Duration::from_secs(60),
        }
    }

    fn failure(source: &str, limits: Limits) -> ScriptError {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hostile.lua");
        std::fs::write(&script, source).unwrap();
        evaluate(&script, &host(), limits).result.unwrap_err()
    }

    fn succeeds(source: &str) {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fine.lua");
        std::fs::write(&script, source).unwrap();
        if let Err(err) = evaluate(&script, &host(), Limits::default()).result {
            panic!("{source}\n{err}");
        }
    }

    #[test]
    fn print_does_not_swallow_the_budget_in_a_looping_tostring() {
        let err = failure(
            "local t = setmetatable({}, { __tostring = function() while true do end end })\n\
             print(t)\n",
            small(),
        );
        assert_eq!(err.kind, ScriptErrorKind::Budget, "{err}");
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn catching_cannot_outlast_the_budget() {
        for source in [
            "local function f() while true do end end\nwhile true do pcall(f) end\n",
            "local function f() while true do end end\n\
             while true do xpcall(f, function() while true do end end) end\n",
            "local function f() while true do end end\n\
             while true do xpcall(f, function() return 'fine' end) end\n",
            "local function f() while true do end end\n\
             while true do coroutine.resume(coroutine.create(f)) end\n",
            "local function f() while true do end end\n\
             while true do pcall(pcall, pcall, f) end\n",
            "local function f() while true do end end\n\
             while true do local ok = pcall(f); error('again', 0) end\n",
        ] {
            let started = Instant::now();
            let err = failure(source, small());
            assert_eq!(err.kind, ScriptErrorKind::Budget, "{source}: {err}");
            assert!(err.line.is_some(), "{source}: {err}");
            assert!(started.elapsed() < Duration::from_secs(10), "{source}");
        }
    }

    #[test]
    fn catching_cannot_outlast_the_clock() {
        let limits = Limits {
            instructions: u64::MAX,
            time: Duration::from_millis(200),
            ..small()
        };
        let started = Instant::now();
        let err = failure(
            "local function f() while true do end end\nwhile true do pcall(f) end\n",
            limits,
        );
        assert_eq!(err.kind, ScriptErrorKind::Budget, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn ordinary_errors_are_still_caught() {
        succeeds(
            "local ok, err = pcall(error, { code = 7 })\n\
             assert(not ok and err.code == 7)\n\
             local ok2, msg = xpcall(function() error('boom') end, function(e) return 'handled: ' .. e end)\n\
             assert(not ok2 and msg:find('handled: .*boom'))\n\
             local co = coroutine.create(function() error('inside') end)\n\
             local ok3, e3 = coroutine.resume(co)\n\
             assert(not ok3 and e3:find('inside'))\n\
             assert(select('#', pcall(function() return 1, nil, 3 end)) == 4)\n",
        );
    }

    #[test]
    fn memory_errors_carry_the_line() {
        for (source, line) in [
            ("local a = 1\nlocal s = string.rep('x', 1e9)\n", 2),
            ("local a = 1\n\nlocal s = ('x'):rep(1e8)\n", 3),
            ("local s = ('x'):rep(1e6, ('y'):rep(100))\n", 1),
            (
                "local t = {}\nfor i = 1, 100 do t[i] = ('x'):rep(1e5) end\n\
                 local u = {}\nfor i = 1, 100 do u[i] = table.concat(t) end\n",
                4,
            ),
            // Caught, and raised again.
            ("local a = 1\nlocal ok = pcall(string.rep, 'x', 1e9)\n", 2),
            ("local ok = xpcall(string.rep, print, 'x', 1e9)\n", 1),
        ] {
            let err = failure(source, small());
            assert_eq!(err.kind, ScriptErrorKind::Memory, "{source}: {err}");
            assert_eq!(err.line, Some(line), "{source}: {err}");
            assert!(err.message.contains("memory limit"), "{err}");
            assert!(err.file.as_deref().unwrap().ends_with("hostile.lua"));
        }
    }

    #[test]
    fn a_stack_overflow_has_a_line() {
        let err = failure(
            "local a = 1\n\
             local function f() return tostring(setmetatable({}, { __tostring = f })) end\n\
             f()\n",
            small(),
        );
        assert_eq!(err.kind, ScriptErrorKind::Runtime, "{err}");
        assert!(err.line.is_some(), "{err}");
        assert!(err.message.contains("stack overflow"), "{err}");
    }

    #[test]
    fn backtracking_patterns_are_refused_with_the_line() {
        for source in [
            "local a = 1\nlocal m = ('a'):rep(40):match(('a?'):rep(40) .. ('a'):rep(40))\n",
            "local s = ('a'):rep(31000)\nfor i = 1, 5 do s:find('a*b') end\n",
            "local s = ('a'):rep(1e5)\nfor w in s:gmatch('a-a-b') do end\n",
            "local s = ('a'):rep(1e5)\nlocal r = s:gsub('(a*)(a*)b', '')\n",
        ] {
            let started = Instant::now();
            let err = failure(source, Limits::default());
            assert_eq!(err.kind, ScriptErrorKind::Runtime, "{source}: {err}");
            assert_eq!(err.line, Some(2), "{source}: {err}");
            assert!(err.message.contains("backtrack"), "{err}");
            assert!(started.elapsed() < Duration::from_secs(2), "{source}");
        }
    }

    #[test]
    fn everyday_patterns_still_work() {
        succeeds(
            "local text = ('word  other\\n'):rep(5000)\n\
             local squeezed = text:gsub('%s+', ' ')\n\
             local lines = 0\n\
             for line in text:gmatch('[^\\n]+') do lines = lines + 1 end\n\
             assert(lines == 5000)\n\
             local padded = (' '):rep(2000) .. 'x y' .. (' '):rep(2000)\n\
             assert(padded:match('^%s*(.-)%s*$') == 'x y')\n\
             assert(('key = value'):match('^(%w+)%s*=%s*(.*)$') == 'key')\n\
             assert(('run {config} now'):gsub('{config}', '/etc/x') == 'run /etc/x now')\n\
             assert(('read-only'):find('read%-only'))\n\
             assert(('a.b'):find('.', 1, true) == 2)\n",
        );
    }

    #[test]
    fn c_loops_the_script_sizes_count_against_the_budget() {
        succeeds("assert(string.rep('', 1e18) == '' and (''):rep(1e18, '') == '')\n");
        succeeds(
            "local t = {1, 2, 3}\ntable.insert(t, 1, 0)\nassert(table.remove(t, 1) == 0)\n\
             assert(#table.move(t, 1, 3, 2) == 4)\n",
        );
        for source in [
            "local a = 1\ntable.move({}, 1, 1e12, 2)\n",
            "local a = 1\n\
             table.remove(setmetatable({}, { __len = function() return 1e15 end }), 1)\n",
            "local a = 1\n\
             table.insert(setmetatable({}, { __len = function() return 1e15 end }), 1, 1)\n",
        ] {
            let started = Instant::now();
            let err = failure(source, small());
            assert_eq!(err.kind, ScriptErrorKind::Budget, "{source}: {err}");
            assert_eq!(err.line, Some(2), "{source}: {err}");
            assert!(started.elapsed() < Duration::from_secs(10), "{source}");
        }
    }

    #[test]
    fn reef_functions_do_not_swallow_the_budget_in_a_metamethod() {
        let err = failure(
            "local trap = setmetatable({}, { __index = function() while true do end end })\n\
             reef.gateway { profile = 'main', port = 18789, depends_on = trap }\n",
            small(),
        );
        assert_eq!(err.kind, ScriptErrorKind::Budget, "{err}");
        // Where it looped.
        assert_eq!(err.line, Some(1), "{err}");
    }

    #[test]
    fn a_script_that_caught_its_budget_error_still_fails() {
        let err = failure(
            "local ok = pcall(function() local t = setmetatable({}, { __index = function() \
             while true do end end }) return t.x end)\n",
            small(),
        );
        assert_eq!(err.kind, ScriptErrorKind::Budget, "{err}");
    }

    #[test]
    fn finalizers_are_refused() {
        let err = failure(
            "local a = 1\nsetmetatable({}, { __gc = function() while true do end end })\n",
            small(),
        );
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("__gc"), "{err}");
    }

    #[test]
    fn argument_errors_of_wrapped_functions_point_at_the_script() {
        for (source, name) in [
            ("local a = 1\ntable.insert(nil, 1)\n", "'insert'"),
            ("local a = 1\nlocal s = string.rep('x', {})\n", "'rep'"),
            ("local a = 1\nlocal s = ('x'):find('[')\n", "malformed"),
            ("local a = 1\npcall()\n", "'pcall'"),
        ] {
            let err = failure(source, small());
            assert_eq!(err.line, Some(2), "{source}: {err}");
            assert!(err.message.contains(name), "{source}: {err}");
            assert!(err.file.as_deref().unwrap().ends_with("hostile.lua"));
        }
    }

    #[test]
    fn the_last_seen_location_is_published() {
        failure("local a = 1\nerror('stop')\n", small());
        assert!(last_seen_location().is_some());
    }
}

#[cfg(test)]
mod source_tests {
    //! What the evaluation reads, and evaluating again from what it read.

    use super::tests::{host, write};
    use super::*;

    fn names(topology: &Topology) -> Vec<(String, i64)> {
        topology
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.port))
            .collect()
    }

    #[test]
    fn an_evaluation_from_a_snapshot_ignores_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(
            dir.path(),
            "reef.lua",
            "local ports = require 'lib.ports'\n\
             reef.gateway { profile = 'main', port = ports.main }\n",
        );
        let module = write(dir.path(), "lib/ports.lua", "return { main = 20000 }\n");
        let first = evaluate(&script, &host(), Limits::default());
        let topology = first.result.unwrap();
        let root = dir.path().canonicalize().unwrap();
        let read: Vec<&PathBuf> = first.sources.keys().collect();
        assert_eq!(read, [&root.join("lib/ports.lua"), &root.join("reef.lua")]);
        assert_eq!(
            first.sources[&root.join("lib/ports.lua")],
            b"return { main = 20000 }\n"
        );

        // The disk moves on: the script breaks, the module goes, a new module appears.
        write(dir.path(), "reef.lua", "error('edited since')\n");
        std::fs::remove_file(&module).unwrap();
        let again = evaluate_from(&script, &host(), Limits::default(), Some(&first.sources)).0;
        assert_eq!(names(&again.result.unwrap()), names(&topology));
        assert_eq!(again.sources, first.sources);
        assert_eq!(again.files, first.files);

        // Modules not in the snapshot do not exist, whatever is on disk.
        write(dir.path(), "lib/extra.lua", "return {}\n");
        let mut snapshot = first.sources.clone();
        snapshot.insert(root.join("reef.lua"), b"require 'lib.extra'\n".to_vec());
        let err = evaluate_from(&script, &host(), Limits::default(), Some(&snapshot))
            .0
            .result
            .unwrap_err();
        assert!(err.message.contains("not found"), "{err}");

        // Nor does a script that is not in it.
        let err = evaluate_from(&script, &host(), Limits::default(), Some(&Sources::new()))
            .0
            .result
            .unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Read, "{err}");
    }

    #[test]
    fn a_snapshot_is_found_by_a_relative_or_roundabout_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        write(
            &root,
            "sub/reef.lua",
            "reef.gateway { profile = 'main', port = 20000 }\n",
        );
        let roundabout = root.join("sub/../sub/./reef.lua");
        let first = evaluate(&roundabout, &host(), Limits::default());
        assert!(first.result.is_ok());
        std::fs::remove_dir_all(root.join("sub")).unwrap();
        let again = evaluate_from(
            &roundabout,
            &host(),
            Limits::default(),
            Some(&first.sources),
        );
        assert!(again.0.result.is_ok(), "{:?}", again.0.result);
    }

    #[test]
    fn a_module_that_is_not_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(dir.path(), "reef.lua", "local a = 1\nrequire 'lib.pipe'\n");
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("lib/pipe.lua"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let evaluation = evaluate(&script, &host(), Limits::default());
        let err = evaluation.result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Read, "{err}");
        assert_eq!(err.file.as_deref(), Some(script.to_str().unwrap()), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
        assert!(
            err.message.contains("lib/pipe.lua: is a FIFO (named pipe)"),
            "{err}"
        );
        let root = dir.path().canonicalize().unwrap();
        assert!(evaluation.files.contains(&root.join("lib/pipe.lua")));
    }

    #[test]
    fn a_script_that_is_not_a_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("zero.lua");
        std::os::unix::fs::symlink("/dev/zero", &script).unwrap();
        let evaluation = evaluate(&script, &host(), Limits::default());
        let err = evaluation.result.unwrap_err();
        assert_eq!(err.kind, ScriptErrorKind::Read);
        assert_eq!(err.file.as_deref(), Some(script.to_str().unwrap()));
        assert!(err.message.contains("character device"), "{err}");
        assert!(evaluation.files.is_empty() && evaluation.sources.is_empty());
    }
}

#[cfg(test)]
mod stub_tests {
    use super::*;

    /// `reef init` writes editor stubs: they must cover every member of the API.
    #[test]
    fn type_stubs_cover_the_whole_api() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("names.lua");
        std::fs::write(
            &script,
            "local names = {}\nfor key in pairs(reef) do names[#names + 1] = key end\n\
             for key in pairs(reef.ports) do names[#names + 1] = 'ports.' .. key end\n\
             for key in pairs(reef.log) do names[#names + 1] = 'log.' .. key end\n\
             error(table.concat(names, ' '))\n",
        )
        .unwrap();
        let host = Host::from_env([("HOME".to_owned(), "/home/ada".to_owned())].into()).unwrap();
        let err = evaluate(&script, &host, Limits::default())
            .result
            .unwrap_err();
        let stubs = crate::commands::TYPE_STUBS;
        for name in err.message.split_whitespace() {
            let declared = [format!("reef.{name}"), format!("field {name} ")];
            assert!(
                declared.iter().any(|d| stubs.contains(d.as_str())),
                "types/reef.lua lacks reef.{name}"
            );
        }
    }
}
