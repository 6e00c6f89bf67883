//! Evaluating a topology script.
//!
//! Every evaluation builds a fresh Lua 5.4 VM ([`evaluate`]): a sandbox without `io`, `debug`,
//! file loading (`dofile`, `loadfile`) or process control (`os.execute`, `os.exit`), text chunks
//! only (no bytecode), `print` to stderr, a memory limit, and an instruction and time budget
//! enforced by a hook. Pattern matching runs in C where the hook cannot reach, so patterns whose
//! backtracking could run for minutes are refused up front. An endless loop or a memory bomb
//! fails the evaluation with file and line instead of hanging reef.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, VmState};

pub use error::{ScriptError, ScriptErrorKind};
pub use loader::SHIPPED_MODULES;

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

/// The outcome of one evaluation. `files` lists every script file read, also on failure.
#[derive(Debug)]
pub struct Evaluation {
    pub result: Result<Topology, ScriptError>,
    pub files: Vec<PathBuf>,
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
    /// Modules being loaded, outermost first (to explain a require cycle).
    pub loading: Vec<String>,
    pub budget: Budget,
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

/// Evaluates the script at `script` in a fresh VM and resolves its topology.
pub fn evaluate(script: &Path, host: &Host, limits: Limits) -> Evaluation {
    evaluate_keeping_vm(script, host, limits).0
}

/// Like [`evaluate`], and on success keeps the VM as an [`automation::Automaton`] that can run
/// the script's hooks and timers.
pub fn evaluate_keeping_vm(
    script: &Path,
    host: &Host,
    limits: Limits,
) -> (Evaluation, Option<automation::Automaton>) {
    let display = script.to_path_buf();
    let source = match std::fs::read(script) {
        Ok(source) => source,
        Err(err) => {
            return (
                Evaluation {
                    result: Err(ScriptError::read(script, &err)),
                    files: Vec::new(),
                },
                None,
            );
        }
    };
    let absolute = std::path::absolute(script).unwrap_or_else(|_| script.to_path_buf());
    let absolute = absolute.canonicalize().unwrap_or(absolute);
    let state = EvalState {
        script_dir_display: display.parent().map(Path::to_path_buf).unwrap_or_default(),
        script_dir: absolute.parent().map(Path::to_path_buf).unwrap_or_default(),
        home: host.home.clone(),
        defaults: GatewaySpec::default(),
        instances: Vec::new(),
        reserved: Vec::new(),
        auto_pool: Pool::default_auto(),
        files: vec![absolute.clone()],
        loading: Vec::new(),
        attachment: None,
        budget: Budget {
            limits,
            started: Instant::now(),
            instructions: 0,
            last_location: None,
        },
    };
    match run(state, &display, &source, host) {
        Ok((instances, files, automaton)) => (
            Evaluation {
                result: Ok(Topology {
                    script: display,
                    instances,
                    files: files.clone(),
                }),
                files,
            },
            Some(automaton),
        ),
        Err((err, files)) => (
            Evaluation {
                result: Err(err),
                files,
            },
            None,
        ),
    }
}

type RunResult =
    Result<(Vec<Instance>, Vec<PathBuf>, automation::Automaton), (ScriptError, Vec<PathBuf>)>;

fn run(initial: EvalState, display: &Path, source: &[u8], host: &Host) -> RunResult {
    let lua = match new_vm(initial, host) {
        Ok(lua) => lua,
        Err(err) => return Err((ScriptError::from_lua(&err, None), Vec::new())),
    };
    let outcome = lua
        .load(source)
        .set_name(format!("@{}", display.display()))
        .set_mode(mlua::chunk::ChunkMode::Text)
        .exec()
        .and_then(|()| automation::check_hook_names(&lua));
    let (instances, files, near) = {
        let mut state = state(&lua);
        (
            std::mem::take(&mut state.instances),
            std::mem::take(&mut state.files),
            state.budget.last_location.clone(),
        )
    };
    if let Err(err) = outcome {
        return Err((ScriptError::from_lua(&err, near), files));
    }
    match automation::Automaton::new(lua) {
        Ok(automaton) => Ok((instances, files, automaton)),
        Err(err) => Err((ScriptError::from_lua(&err, None), files)),
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
    sandbox(&lua)?;

    let reef = lua.create_table()?;
    gateway::register(&lua, &reef)?;
    automation::register(&lua, &reef)?;
    ports::register(&lua, &reef)?;
    host::register(&lua, &reef, host, &script_dir)?;
    guard_unknown_members(&lua, &reef)?;
    loader::register(&lua, reef)?;

    // Lines keep `last_location` current (memory errors carry no position of their own);
    // every HOOK_EVERY instructions the budget is checked.
    lua.set_global_hook(
        HookTriggers::new()
            .every_line()
            .every_nth_instruction(HOOK_EVERY),
        |lua, debug| {
            let mut state = lua.app_data_mut::<EvalState>().expect("evaluation state");
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
                        })
                    }
                }
            }
            if debug.event() != mlua::debug::DebugEvent::Count {
                return Ok(VmState::Continue);
            }
            budget.instructions += u64::from(HOOK_EVERY);
            let elapsed = budget.started.elapsed();
            if budget.instructions > budget.limits.instructions || elapsed > budget.limits.time {
                return Err(mlua::Error::external(ScriptError::over_budget(
                    budget.limits,
                    budget.last_location.clone(),
                )));
            }
            Ok(VmState::Continue)
        },
    )?;
    lua.set_memory_limit(memory)?;
    Ok(lua)
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
                let key = key.to_string().unwrap_or_default();
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

/// Removes what a topology script has no business with: files, processes, bytecode.
fn sandbox(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in ["dofile", "loadfile", "collectgarbage"] {
        globals.raw_set(name, mlua::Nil)?;
    }
    // `print` would write into reef's own output (and break `--json`): it goes to stderr, with
    // the line that printed.
    globals.raw_set(
        "print",
        lua.create_function(|lua, args: mlua::Variadic<mlua::Value>| {
            let words: Vec<String> = args
                .iter()
                .map(|value| {
                    value
                        .to_string()
                        .unwrap_or_else(|_| value.type_name().to_owned())
                })
                .collect();
            let at = caller_location(lua, 1)
                .map(|l| l.to_string())
                .unwrap_or_default();
            use std::io::Write;
            let _ = writeln!(crate::progress::Stderr, "{at}: {}", words.join("\t"));
            Ok(())
        })?,
    )?;
    let os: Table = globals.get("os")?;
    for name in [
        "execute",
        "exit",
        "remove",
        "rename",
        "tmpname",
        "getenv",
        "setlocale",
    ] {
        os.raw_set(name, mlua::Nil)?;
    }
    // Pattern matching runs in C, out of reach of the instruction budget, and backtracks: a
    // pattern with k repetitions over n bytes can take n^(k+1) steps. Refuse the costly ones.
    lua.load(
        r##"local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub
        local LIMIT = 1e9
        local function repetitions(pattern)
          local count, i, length = 0, 1, #pattern
          while i <= length do
            local c = pattern:byte(i)
            if c == 37 then i = i + 2 -- '%' escapes the next character
            else
              if c == 42 or c == 43 or c == 45 then count = count + 1 end -- '*', '+', '-'
              i = i + 1
            end
          end
          return count
        end
        local function check(name, subject, pattern, plain)
          if plain or type(subject) ~= "string" or type(pattern) ~= "string" then return end
          local k = repetitions(pattern)
          if k > 0 and (#subject + 1) ^ (k + 1) > LIMIT then
            error(("string.%s: pattern %q repeats %d time(s) over %d bytes and could run for minutes; "
              .. "use fewer repetitions or a shorter string"):format(name, pattern, k, #subject), 3)
          end
        end
        string.find = function(s, p, init, plain) check("find", s, p, plain) return find(s, p, init, plain) end
        string.match = function(s, p, init) check("match", s, p) return match(s, p, init) end
        string.gmatch = function(s, p, init) check("gmatch", s, p) return gmatch(s, p, init) end
        string.gsub = function(s, p, r, n) check("gsub", s, p) return gsub(s, p, r, n) end"##,
    )
    .set_name("=sandbox")
    .exec()?;
    // Text chunks only: crafted bytecode can crash the VM.
    lua.load(
        r##"local raw_load = load
        load = function(chunk, name, _, ...)
          if select("#", ...) > 0 then return raw_load(chunk, name, "t", ...) end
          return raw_load(chunk, name, "t")
        end"##,
    )
    .set_name("=sandbox")
    .exec()
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
                    format!(
                        "{what} is read-only (tried to set {})",
                        key.to_string().unwrap_or_else(|_| "a field".into())
                    ),
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

    fn host() -> Host {
        Host::from_env([("HOME".to_owned(), "/home/ada".to_owned())].into()).unwrap()
    }

    fn write(dir: &Path, name: &str, source: &str) -> PathBuf {
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
             assert(load(string.dump(function() end)) == nil)\n",
        );
        evaluate(&script, &host(), Limits::default())
            .result
            .unwrap();
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
