//! One function per verb. This is the output layer: the only module that prints.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};

use crate::cli::{
    Command, DiffArgs, EnvArgs, ExportArgs, GatewayArgs, InitArgs, InstallArgs, InstallMode,
    LogsArgs, NameArgs, PlanArgs, ScriptArg, ServiceManager, SetupArgs, StatusArgs, TopArgs,
    UpArgs,
};
use crate::control::{self, Request};
use crate::layout::{TopologyDirs, UpLock};
use crate::lua::{Host, Limits};
use crate::plan::Plan;
use crate::render::{self, Style};
use crate::supervisor::launch;

/// reef's exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// The topology evaluated but breaks isolation rules.
    Violations,
    /// The script could not be read or evaluated.
    ScriptError,
    /// Anything else went wrong (the message says what).
    Failure,
    /// `reef status`: no reef runs the topology (gateways it left may still serve).
    NotRunning,
    /// The command line was wrong.
    Usage,
    /// `reef gateway`'s own codes: 1 port in use, 78 configuration error.
    Gateway(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Violations => 1,
            Exit::ScriptError => 2,
            Exit::Failure => 3,
            Exit::NotRunning => 4,
            Exit::Usage => 64,
            Exit::Gateway(code) => code,
        }
    }
}

/// The starter script `reef init` writes.
pub const STARTER_SCRIPT: &str = include_str!("templates/reef.lua");
/// LuaLS `---@meta` definitions of the API, for editor completion.
pub const TYPE_STUBS: &str = include_str!("templates/reef-meta.lua");
/// Points lua-language-server at the stubs.
const LUARC: &str = "{\n  \"runtime.version\": \"Lua 5.4\",\n  \"workspace.library\": [\"types\"],\n  \"diagnostics.globals\": [\"reef\"]\n}\n";

/// stdout was closed by its reader (`reef plan --json | head`): the reader has what it wanted,
/// so the command ends quietly with success instead of panicking in `println!` (exit 101).
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// A stdout write error, with a closed pipe turned into [`StdoutClosed`].
fn stdout_error(err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(err).context("cannot write to stdout")
    }
}

/// Writes to stdout and flushes, so a closed pipe is seen here and not at exit.
fn emit(text: std::fmt::Arguments<'_>) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// `print!` through [`emit`]: returns early from the command when stdout is closed.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))?
    };
}

/// `println!` through [`emit`].
macro_rules! outln {
    () => {
        emit(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        emit(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub fn run(mut command: Command) -> Result<Exit> {
    if let Some(script) = command.running_script_mut() {
        find_running_script(script);
    }
    let result = dispatch(command);
    match result {
        Err(err) if err.downcast_ref::<StdoutClosed>().is_some() => Ok(Exit::Success),
        other => other,
    }
}

fn dispatch(command: Command) -> Result<Exit> {
    match command {
        Command::Plan(args) => plan(args),
        Command::Env(args) => env(args),
        Command::Check(args) => check(args),
        Command::Init(args) => init(args),
        Command::Setup(args) => setup(args),
        Command::Up(args) => up(args),
        Command::Reload(args) => reload(args),
        Command::Diff(args) => diff(args),
        Command::Down(args) => down(args),
        Command::Status(args) => status(args),
        Command::Top(args) => top(args),
        Command::Start(args) => control_verb(args, |name| Request::Start { name }),
        Command::Stop(args) => control_verb(args, |name| Request::Stop { name }),
        Command::Restart(args) => control_verb(args, |name| Request::Restart { name }),
        Command::Logs(args) => logs(args),
        Command::Gateway(args) => gateway(args),
        Command::Evaluate => crate::evaluator::serve_child(),
        Command::Hooks => crate::hookhost::serve_child(),
        Command::Install(args) => install(args),
        Command::Export(args) => export(args),
        Command::Completions(args) => completions(args),
        Command::Events(args) => events(args),
        Command::Ls(args) => list_topologies(args),
        Command::Man => man(),
    }
}

/// Evaluates the script; on a script error reports it (as JSON if asked) and returns the exit.
fn load(script: &std::path::Path, json: bool) -> Result<Result<Plan, Exit>> {
    // Fails early, with a plain message, where no home directory can be found.
    Host::from_process().map_err(|err| anyhow::anyhow!(err))?;
    let planned = crate::evaluator::plan(script);
    Ok(match planned.result {
        Ok(plan) => Ok(plan),
        Err(err) => {
            if json {
                outln!(
                    "{}",
                    render::script_error_json(script, &err, &planned.files)
                );
            } else {
                eprintln!("{}", render::script_error_text(&err, Style::for_stderr()));
            }
            Err(Exit::ScriptError)
        }
    })
}

fn home() -> std::path::PathBuf {
    Host::from_process()
        .map(|host| host.home)
        .unwrap_or_default()
}

fn plan(args: PlanArgs) -> Result<Exit> {
    let plan = match load(&args.script.script, args.json)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let exit = if plan.is_valid() {
        Exit::Success
    } else {
        Exit::Violations
    };
    if args.json {
        outln!("{}", render::plan_json(&plan));
        return Ok(exit);
    }
    if !plan.topology.instances.is_empty() {
        out!("{}", render::plan_table(&plan, &home()));
    }
    outln!("{}", render::plan_summary(&plan));
    report_violations(&plan);
    Ok(exit)
}

fn env(args: EnvArgs) -> Result<Exit> {
    let plan = match load(&args.script.script, false)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let Some(instance) = plan.topology.instance(&args.name) else {
        let names = plan.topology.instances.iter().map(|i| i.name.as_str());
        anyhow::bail!(
            "{}: {}",
            args.script.script.display(),
            crate::suggest::no_such_instance(&args.name, names)
        );
    };
    if !plan.is_valid() {
        eprintln!(
            "{} {} has {} isolation violation(s); run `reef plan {}` before starting gateways by hand",
            Style::for_stderr().warning("warning:"),
            args.script.script.display(),
            plan.report.violation_count(),
            args.script.script.display()
        );
    }
    let inherited = process_env();
    let reef_binary = std::env::current_exe().context("cannot find reef's own binary")?;
    let config = launch::read_config(instance, &inherited);
    // The very call `reef up` makes before it spawns the gateway.
    let launch = launch::launch(instance, &reef_binary, &inherited, config.as_ref());
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&with_format(&launch)?)?);
    } else {
        out!("{}", render::launch_script(&launch, &inherited));
    }
    Ok(Exit::Success)
}

/// `value` as a JSON object that starts with the `format` every JSON output carries.
fn with_format(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    let mut object = serde_json::Map::new();
    object.insert("format".into(), render::JSON_FORMAT.into());
    match serde_json::to_value(value)? {
        serde_json::Value::Object(fields) => object.extend(fields),
        other => {
            object.insert("value".into(), other);
        }
    }
    Ok(serde_json::Value::Object(object))
}

/// Writes `bytes` to stdout, as [`emit`] does text.
fn emit_bytes(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(stdout_error)
}

/// The script a client verb acts on when none was typed and `./reef.lua` does not exist: the
/// only topology a reef runs for this user, said on stderr. Otherwise left as it is (and the
/// verb says it cannot find it).
fn find_running_script(script: &mut std::path::PathBuf) {
    let defaulted = script.as_os_str() == "reef.lua"
        && std::env::var_os("REEF_SCRIPT").is_none_or(|v| v.is_empty());
    if !defaulted || script.exists() {
        return;
    }
    let running: Vec<std::path::PathBuf> = list(&process_env())
        .unwrap_or_default()
        .into_iter()
        .filter(|listed| listed.reef_pid.is_some())
        .filter_map(|listed| listed.script)
        .collect();
    if let [only] = running.as_slice() {
        eprintln!(
            "no ./reef.lua here; using {}, the only topology running",
            only.display()
        );
        *script = only.clone();
    }
}

/// One topology `reef ls` found.
#[derive(Debug, serde::Serialize)]
struct Listed {
    script: Option<std::path::PathBuf>,
    id: String,
    /// The reef running it, if one does.
    reef_pid: Option<u32>,
    /// Its gateways by state (from the running reef).
    states: std::collections::BTreeMap<String, usize>,
    /// Gateways its ledger says still serve with no reef running.
    serving: usize,
}

fn list_topologies(args: crate::cli::LsArgs) -> Result<Exit> {
    let found = list(&process_env())?;
    if args.json {
        let json = serde_json::json!({ "format": render::JSON_FORMAT, "topologies": found });
        outln!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Exit::Success);
    }
    if found.is_empty() {
        outln!("no topology of yours is running (reef up SCRIPT starts one)");
        return Ok(Exit::Success);
    }
    for listed in &found {
        let script = listed
            .script
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_else(|| listed.id.clone());
        let what = match listed.reef_pid {
            Some(pid) => {
                let counts: Vec<String> = listed
                    .states
                    .iter()
                    .map(|(state, n)| format!("{n} {state}"))
                    .collect();
                format!("reef pid {pid}: {}", counts.join(", "))
            }
            None => format!(
                "no reef: {} gateway{} still serving (`reef up` adopts, `reef down` stops)",
                listed.serving,
                if listed.serving == 1 { "" } else { "s" }
            ),
        };
        outln!("{script}  {what}");
    }
    Ok(Exit::Success)
}

/// This user's topologies that a reef runs or whose gateways still serve.
fn list(env: &std::collections::BTreeMap<String, String>) -> Result<Vec<Listed>> {
    let root = crate::layout::TopologyDirs::state_root(env)
        .context("cannot find reef's state: neither XDG_STATE_HOME nor HOME is set")?;
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries.flatten().collect::<Vec<_>>(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", root.display())),
    };
    for entry in entries {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let id = entry.file_name().to_string_lossy().into_owned();
        let lock = std::fs::read_to_string(dir.join("up.lock")).unwrap_or_default();
        let mut lines = lock.lines();
        // up.lock: reef's pid, its control socket, the script.
        let (socket, script) = (lines.nth(1), lines.next());
        let ledger_script = std::fs::read_to_string(dir.join("ledger.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|ledger| ledger["script"].as_str().map(std::path::PathBuf::from));
        let mut listed = Listed {
            script: script
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from)
                .or(ledger_script),
            id,
            reef_pid: None,
            states: Default::default(),
            serving: 0,
        };
        let status = socket
            .filter(|s| !s.is_empty())
            .and_then(|socket| {
                control::request_within(
                    std::path::Path::new(socket),
                    &Request::Status,
                    std::time::Duration::from_secs(2),
                )
                .ok()
            })
            .filter(|response| response.ok)
            .and_then(|response| response.status);
        match status {
            Some(status) => {
                listed.reef_pid = Some(status.pid);
                listed.script = Some(status.script.clone());
                for instance in &status.instances {
                    *listed.states.entry(instance.state.to_string()).or_default() += 1;
                }
            }
            None => {
                listed.serving = crate::supervisor::ledger::read(&dir.join("ledger.json"))
                    .unwrap_or_default()
                    .iter()
                    .filter(|entry| entry.is_alive())
                    .count();
                if listed.serving == 0 {
                    continue;
                }
            }
        }
        found.push(listed);
    }
    found.sort_by(|a, b| a.script.cmp(&b.script).then(a.id.cmp(&b.id)));
    Ok(found)
}

fn events(args: crate::cli::EventsArgs) -> Result<Exit> {
    let script = &args.script.script;
    let dirs = dirs_of(script)?;
    let mut failure = None;
    let attached = || {
        eprintln!(
            "streaming the events of {} (Ctrl-C stops)",
            script.display()
        )
    };
    let streamed = control::events(&dirs.running_socket(), attached, |line| {
        let text = if args.json {
            format!("{line}\n")
        } else {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(event) => render::event_text(&event),
                Err(_) => format!("{line}\n"),
            }
        };
        match emit_bytes(text.as_bytes()) {
            Ok(()) => true,
            Err(err) => {
                failure = Some(err);
                false
            }
        }
    });
    if let Some(err) = failure {
        return Err(err);
    }
    match streamed {
        Ok(()) => {
            eprintln!("reef stopped; no more events");
            Ok(Exit::Success)
        }
        Err(control::ClientError::NotRunning(_)) => {
            eprintln!(
                "no reef is running {}; start it with `reef up {}`",
                script.display(),
                script.display()
            );
            Ok(Exit::NotRunning)
        }
        Err(other) => Err(anyhow::anyhow!(other)),
    }
}

fn completions(args: crate::cli::CompletionsArgs) -> Result<Exit> {
    let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "reef", &mut script);
    emit_bytes(&script)?;
    Ok(Exit::Success)
}

fn man() -> Result<Exit> {
    let command = <crate::cli::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .context("cannot render the man page")?;
    emit_bytes(&page)?;
    Ok(Exit::Success)
}

fn init(args: InitArgs) -> Result<Exit> {
    let path = &args.path;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "{} already exists; reef init never overwrites a script. Move it away or pass another path",
                path.display()
            );
        }
        Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(STARTER_SCRIPT.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Every file first, then the report: a reader that goes away stops no write.
    let mut done = vec![format!(
        "wrote {}: a main gateway on 18789 and a rescue gateway on 19789",
        path.display()
    )];
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    for (relative, content) in [("types/reef.lua", TYPE_STUBS), (".luarc.json", LUARC)] {
        let target = dir.join(relative);
        if target.exists() {
            done.push(format!("kept the existing {}", target.display()));
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
        done.push(format!(
            "wrote {} (editor completion for reef.*)",
            target.display()
        ));
    }
    done.push(format!("next: reef plan {}", path.display()));
    for line in &done {
        outln!("{line}");
    }
    Ok(Exit::Success)
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking work (port checks, /proc walks, file opens, forks that wait for the child's
        // exec) is short: eight threads start a colony quickly, hundreds would only cost
        // memory, and idle ones leave soon after.
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .context("cannot start the async runtime")
}

fn process_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Prints a plan's violations; true if there were any.
fn report_violations(plan: &Plan) -> bool {
    let style = Style::for_stderr();
    for warning in &plan.report.warnings {
        eprintln!("{}", render::warning_text(warning, style));
    }
    for more in plan.report.omitted_warnings_summary() {
        eprintln!("{} {more}", style.warning("warning:"));
    }
    for violation in &plan.report.violations {
        eprintln!("{}", render::violation_text(violation, style));
    }
    for more in plan.report.omitted_summary() {
        eprintln!("{} {more}", style.error("error:"));
    }
    !plan.is_valid()
}

fn setup(args: SetupArgs) -> Result<Exit> {
    let plan = match load(&args.script.script, args.json)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    if report_violations(&plan) {
        eprintln!("nothing was set up: fix the violations above first");
        return Ok(Exit::Violations);
    }
    // Every instance first, then the report: a reader that goes away stops no setup.
    let mut reports = Vec::new();
    let mut failure = None;
    let reef_binary = std::env::current_exe().context("cannot find reef's own binary")?;
    let options = crate::setup::SetupOptions {
        allow_symlinks: args.allow_symlinks,
        openclaw: launch::Binaries::resolving_openclaw(
            reef_binary,
            std::env::var("PATH").ok().as_deref(),
        )
        .openclaw
        .map(|path| vec![path.display().to_string()]),
        inherited: process_env(),
    };
    for instance in &plan.topology.instances {
        match crate::setup::set_up_with(instance, &options) {
            Ok(report) => reports.push((instance, report)),
            Err(err) => {
                failure = Some(err.context(format!("setting up `{}`", instance.name)));
                break;
            }
        }
    }
    let print = || -> Result<()> {
        if args.json {
            if failure.is_none() {
                let reports: Vec<_> = reports.iter().map(|(_, report)| report).collect();
                let json = serde_json::json!({
                    "format": render::JSON_FORMAT,
                    "script": plan.topology.script,
                    "instances": reports,
                });
                outln!("{}", serde_json::to_string_pretty(&json)?);
            }
            return Ok(());
        }
        for (instance, report) in &reports {
            let mut done = Vec::new();
            if report.created_state_dir {
                done.push(format!("created {} (0700)", instance.state_dir.display()));
            }
            if report.wrote_config {
                done.push(format!(
                    "wrote {} (0600, port {}, token pinned)",
                    instance.config_path.display(),
                    instance.port
                ));
            } else if report.baseline {
                done.push(format!(
                    "laid out by `openclaw --profile {} setup --baseline`",
                    instance.profile
                ));
            } else {
                done.push(format!(
                    "kept the existing {}",
                    instance.config_path.display()
                ));
            }
            if !report.added.is_empty() {
                let added: Vec<String> = report
                    .added
                    .iter()
                    .map(|key| match key.as_str() {
                        "gateway.port" => format!("gateway.port {}", instance.port),
                        "gateway.auth.token" => "gateway.auth.token (a new random token)".into(),
                        other => other.to_owned(),
                    })
                    .collect();
                done.push(format!(
                    "added {} to {}",
                    added.join(", "),
                    instance.config_path.display()
                ));
            }
            outln!("{}: {}", instance.name, done.join("; "));
            if let Some(note) = &report.note {
                eprintln!(
                    "{} {}: {note}",
                    Style::for_stderr().warning("warning:"),
                    instance.name
                );
            }
        }
        Ok(())
    };
    let printed = print();
    // A failed setup is the news, also when nobody reads stdout any more.
    if let Some(err) = failure {
        return Err(err);
    }
    printed?;
    Ok(Exit::Success)
}

fn up(args: UpArgs) -> Result<Exit> {
    let (debounce, watch) = (
        std::time::Duration::from_millis(args.debounce_ms),
        !args.no_watch,
    );
    let metrics_address = args.metrics;
    let show_logs = args.logs;
    let args = args.script;
    Host::from_process().map_err(|err| anyhow::anyhow!(err))?;
    let mut request = crate::evaluator::Request::new(&args.script, Limits::default());
    request.keep_sources = true;
    let outcome = crate::evaluator::evaluate(request);
    let hooks_script =
        (outcome.hooks + outcome.timers > 0).then(|| crate::supervisor::automation::Script {
            path: args.script.clone(),
            sources: outcome.sources.unwrap_or_default(),
            hooks: outcome.hooks,
            timers: outcome.timers,
        });
    let plan = match outcome.planned.result {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("{}", render::script_error_text(&err, Style::for_stderr()));
            return Ok(Exit::ScriptError);
        }
    };
    if report_violations(&plan) {
        eprintln!(
            "no gateway was started: fix the violations above first (`reef plan` shows them)"
        );
        return Ok(Exit::Violations);
    }
    let env = process_env();
    let dirs = TopologyDirs::for_script(&args.script, &env)?;
    dirs.create()?;
    let _lock = UpLock::acquire(&dirs)
        .with_context(|| format!("cannot supervise {}", args.script.display()))?;
    // Bound now, so that a busy address stops reef before it starts anything.
    let metrics = match metrics_address {
        Some(address) => {
            let listener = crate::metrics::bind(address).map_err(|err| {
                anyhow::anyhow!(
                    "{err:#}; nothing was started: choose another address with --metrics, or \
                     leave it out"
                )
            })?;
            let bound = listener.local_addr().unwrap_or(address);
            tracing::info!("serving metrics on http://{bound}/metrics");
            Some(listener)
        }
        None => None,
    };
    let options = crate::supervisor::UpOptions {
        debounce,
        watch,
        metrics,
    };
    tracing::info!(
        "supervising {} ({} gateways); logs in {}, control socket {}",
        args.script.display(),
        plan.topology.instances.len(),
        dirs.logs.display(),
        dirs.socket.display()
    );
    if show_logs {
        // A thread of its own: the supervisor's runtime never waits on a terminal.
        let logs = dirs.logs.clone();
        let colour = Style::for_stdout().is_coloured();
        std::thread::Builder::new()
            .name("logs".into())
            .spawn(move || {
                let mut stdout = std::io::stdout();
                let _ = crate::logview::follow_dir(&logs, colour, &mut stdout);
            })
            .context("cannot start the log printer")?;
    }
    let runtime = current_thread_runtime()?;
    runtime.block_on(crate::supervisor::run(
        plan,
        dirs,
        env,
        options,
        hooks_script,
    ))?;
    // An evaluation still running on a blocking thread must not keep reef from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(Exit::Success)
}

fn dirs_of(script: &std::path::Path) -> Result<TopologyDirs> {
    TopologyDirs::for_script(script, &process_env())
}

/// Sends a request to the reef running `script`; a refusal is an error.
fn ask(script: &std::path::Path, request: &Request) -> Result<control::Response> {
    let response = ask_raw(script, request)?;
    if !response.ok {
        anyhow::bail!(
            "{}",
            response
                .message
                .unwrap_or_else(|| "reef refused the request".into())
        );
    }
    Ok(response)
}

/// A reload or diff the running reef could not evaluate: the script's error, exit 2.
fn evaluation_refused(response: &control::Response) -> Exit {
    let message = response
        .message
        .as_deref()
        .unwrap_or("the script could not be evaluated");
    eprintln!("{} {message}", Style::for_stderr().error("error:"));
    Exit::ScriptError
}

/// Sends a request to the reef running `script`.
fn ask_raw(script: &std::path::Path, request: &Request) -> Result<control::Response> {
    let dirs = dirs_of(script)?;
    let response = control::request(&dirs.running_socket(), request).map_err(|err| match err {
        control::ClientError::NotRunning(_) => anyhow::anyhow!(
            "no reef is running {} (no control socket at {}); start it with `reef up {}`",
            script.display(),
            dirs.running_socket().display(),
            script.display()
        ),
        other => anyhow::anyhow!(other),
    })?;
    Ok(response)
}

/// The status of the reef running the topology of `dirs`; `None` when none runs it.
fn running_status(
    dirs: &crate::layout::TopologyDirs,
) -> Result<Option<crate::supervisor::status::TopologyStatus>> {
    match control::request(&dirs.running_socket(), &Request::Status) {
        Ok(response) if response.ok => Ok(Some(response.status.context("reef sent no status")?)),
        Ok(response) => anyhow::bail!(
            "{}",
            response
                .message
                .unwrap_or_else(|| "reef refused the request".into())
        ),
        Err(control::ClientError::NotRunning(_)) => Ok(None),
        Err(other) => Err(anyhow::anyhow!(other)),
    }
}

fn status(args: StatusArgs) -> Result<Exit> {
    let script = &args.script.script;
    let clear = args.watch && std::io::stdout().is_terminal();
    let mut changes: Option<StateChanges> = None;
    loop {
        let dirs = dirs_of(script)?;
        if args.watch && changes.is_none() {
            // Attached before the table is drawn: no change after it goes unseen.
            changes = Some(StateChanges::follow(dirs.running_socket()));
        }
        let Some(status) = running_status(&dirs)? else {
            return status_without_reef(script, &dirs, args.json);
        };
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(Exit::Success);
        }
        let table = render::status_table(&status, crate::supervisor::status::unix_now());
        if clear {
            out!("\x1b[2J\x1b[H");
        }
        out!("{table}");
        if !args.watch {
            return Ok(Exit::Success);
        }
        let following = changes.as_ref().expect("followed before the first table");
        if !following.wait(args.interval) {
            // A reef started again later is followed anew.
            changes = None;
        }
        if !clear {
            outln!();
        }
    }
}

/// The running reef's events, followed on a thread of its own: a watcher redraws as soon as
/// something happens instead of polling reef faster.
struct StateChanges {
    events: std::sync::mpsc::Receiver<()>,
}

impl StateChanges {
    /// How long after an event to wait for the rest of its burst (a reload that restarts many
    /// gateways), so that one redraw shows them all.
    const GATHER: std::time::Duration = std::time::Duration::from_millis(25);

    /// How long to wait for reef to start streaming before drawing anyway.
    const ATTACH: std::time::Duration = std::time::Duration::from_secs(2);

    /// Follows the events of the reef on `socket`; returns once they stream (or could not).
    fn follow(socket: std::path::PathBuf) -> StateChanges {
        let (send, events) = std::sync::mpsc::sync_channel(1);
        let (attached_tx, attached) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                let _ = control::events(
                    &socket,
                    move || {
                        let _ = attached_tx.send(());
                    },
                    // A full channel already holds a wake-up.
                    |_| {
                        !matches!(
                            send.try_send(()),
                            Err(std::sync::mpsc::TrySendError::Disconnected(_))
                        )
                    },
                );
            });
        if spawned.is_err() {
            tracing::debug!("cannot follow reef's events; redrawing every interval only");
        }
        let _ = attached.recv_timeout(Self::ATTACH);
        StateChanges { events }
    }

    /// Returns after `refresh`, or soon after the next event; `false` once the stream is gone
    /// (reef stopped, or could not be followed).
    fn wait(&self, refresh: std::time::Duration) -> bool {
        use std::sync::mpsc::RecvTimeoutError;
        match self.events.recv_timeout(refresh) {
            Ok(()) => {
                std::thread::sleep(Self::GATHER);
                while self.events.try_recv().is_ok() {}
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(refresh);
                false
            }
        }
    }
}

fn top(args: TopArgs) -> Result<Exit> {
    let script = &args.script.script;
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        eprintln!(
            "{} `reef top` needs a terminal (its input and output are not one); use `reef status --watch` or `reef events --json` instead",
            Style::for_stderr().error("error:")
        );
        return Ok(Exit::Usage);
    }
    let dirs = dirs_of(script)?;
    let Some(first) = running_status(&dirs)? else {
        return status_without_reef(script, &dirs, false);
    };
    crate::top::run(dirs, first, Style::for_stdout().is_coloured())?;
    Ok(Exit::Success)
}

/// `reef status` with no reef running the topology: the gateways its ledger says are still
/// serving (a reef killed hard leaves them running), and exit 4.
fn status_without_reef(
    script: &std::path::Path,
    dirs: &crate::layout::TopologyDirs,
    json: bool,
) -> Result<Exit> {
    let serving: Vec<crate::supervisor::ledger::Entry> =
        crate::supervisor::ledger::read(&dirs.ledger)
            .unwrap_or_default()
            .into_iter()
            .filter(crate::supervisor::ledger::Entry::is_alive)
            .collect();
    if json {
        let gateways: Vec<serde_json::Value> = serving
            .iter()
            .map(|entry| {
                serde_json::json!({
                    "name": entry.name,
                    "pid": entry.pid,
                    "started_at": entry.started_at,
                    "ports": entry.ports,
                    "log": entry.log,
                })
            })
            .collect();
        let json = serde_json::json!({
            "format": render::JSON_FORMAT,
            "script": script,
            "running": false,
            "serving": gateways,
        });
        outln!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(Exit::NotRunning);
    }
    let now = crate::supervisor::status::unix_now();
    eprintln!(
        "no reef is running {}; start it with `reef up {}`",
        script.display(),
        script.display()
    );
    if !serving.is_empty() {
        outln!(
            "{} gateway{} it started {} still serving; `reef up` adopts them, `reef down` stops them:",
            serving.len(),
            if serving.len() == 1 { "" } else { "s" },
            if serving.len() == 1 { "is" } else { "are" }
        );
        for entry in &serving {
            outln!(
                "  {}  pid {}  up {}  port {}",
                entry.name,
                entry.pid.unwrap_or_default(),
                render::duration_text(now - entry.started_at),
                entry.ports.gateway
            );
        }
    }
    Ok(Exit::NotRunning)
}

fn control_verb(args: NameArgs, make: fn(String) -> Request) -> Result<Exit> {
    let response = ask(&args.script.script, &make(args.name.clone()))?;
    outln!(
        "{}: {}",
        args.name,
        response.message.unwrap_or_else(|| "done".into())
    );
    Ok(Exit::Success)
}

fn logs(args: LogsArgs) -> Result<Exit> {
    // `reef logs rescue.lua`: the one argument is the script, never taken for a name.
    let (name, script) = match args.name {
        Some(name) if name.ends_with(".lua") || name.contains('/') => {
            (None, std::path::PathBuf::from(name))
        }
        name => (name, args.script.script),
    };
    let plan = match load(&script, false)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let dirs = dirs_of(&script)?;
    let Some(name) = name else {
        let sources: Vec<crate::logview::Source> = plan
            .topology
            .instances
            .iter()
            .map(|instance| crate::logview::Source {
                name: instance.name.clone(),
                log: dirs.log(&instance.name),
            })
            .collect();
        let colour = Style::for_stdout().is_coloured();
        let prefixer = crate::logview::Prefixer::new(&sources, colour);
        let mut stdout = std::io::stdout().lock();
        crate::logview::history(&sources, args.lines, &prefixer, &mut stdout)
            .map_err(stdout_error)?;
        if args.follow {
            crate::logview::follow(&sources, &prefixer, &mut stdout).map_err(stdout_error)?;
        }
        return Ok(Exit::Success);
    };
    if plan.topology.instance(&name).is_none() {
        let names = plan.topology.instances.iter().map(|i| i.name.as_str());
        anyhow::bail!("{}", crate::suggest::no_such_instance(&name, names));
    }
    let log = dirs.log(&name);
    let text = crate::supervisor::logs::tail(&log, args.lines).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{}` has no log yet ({} does not exist); has it been started with `reef up`?",
                name,
                log.display()
            )
        } else {
            anyhow::anyhow!("cannot read {}: {err}", log.display())
        }
    })?;
    out!("{text}");
    if !args.follow {
        return Ok(Exit::Success);
    }
    follow(&log, &mut std::io::stdout().lock())
}

/// Prints what is appended to `log`, forever; starts over when the file is truncated (rotated).
fn follow(log: &std::path::Path, out: &mut impl Write) -> Result<Exit> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log)?;
    let mut offset = file.seek(SeekFrom::End(0))?;
    let mut buffer = Vec::new();
    loop {
        let size = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if size < offset {
            file = std::fs::File::open(log)?;
            offset = 0;
        }
        if size > offset {
            file.seek(SeekFrom::Start(offset))?;
            buffer.clear();
            Read::by_ref(&mut file)
                .take(size - offset)
                .read_to_end(&mut buffer)?;
            offset += buffer.len() as u64;
            out.write_all(&buffer)
                .and_then(|()| out.flush())
                .map_err(stdout_error)?;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn gateway(args: GatewayArgs) -> Result<Exit> {
    if !args.startup_delay.is_finite()
        || !(0.0..=crate::topology::MAX_SECONDS).contains(&args.startup_delay)
    {
        anyhow::bail!(
            "--startup-delay must be from 0 to {} seconds",
            crate::topology::MAX_SECONDS
        );
    }
    let options = crate::gateway::Options {
        port: args.port,
        startup_delay: std::time::Duration::from_secs_f64(args.startup_delay),
    };
    let code = current_thread_runtime()?.block_on(crate::gateway::run(options));
    Ok(Exit::Gateway(code))
}

fn down(args: ScriptArg) -> Result<Exit> {
    let script = &args.script;
    let dirs = dirs_of(script)?;
    match control::request(&dirs.running_socket(), &Request::Down) {
        Ok(response) if response.ok => {
            outln!("{}", response.message.unwrap_or_else(|| "stopped".into()));
            return Ok(Exit::Success);
        }
        Ok(response) => anyhow::bail!(
            "{}",
            response.message.unwrap_or_else(|| "reef refused".into())
        ),
        Err(control::ClientError::NotRunning(_)) => {}
        Err(err) => return Err(err.into()),
    }
    // No reef runs this topology: stop what its ledger and its markers prove are its own
    // (escaped descendants included), holding the lock so that no `reef up` starts meanwhile.
    // The lock lives in the state dir, which may never have existed (or was deleted while
    // marked gateways still run).
    dirs.create()?;
    let _lock = UpLock::acquire(&dirs).map_err(|err| match err.downcast::<crate::layout::AlreadyRunning>() {
        Ok(running) => anyhow::anyhow!(
            "reef pid {} holds this topology but its control socket ({}) does not answer; stop that process first",
            running.pid,
            dirs.running_socket().display()
        ),
        Err(other) => other,
    })?;
    let lines = crate::supervisor::takeover::down_without_reef(&dirs)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    if lines.is_empty() {
        outln!(
            "nothing to stop: no reef runs {} and no process of it is left",
            script.display()
        );
    }
    for line in lines {
        outln!("{line}");
    }
    Ok(Exit::Success)
}

fn reload(args: ScriptArg) -> Result<Exit> {
    let response = ask_raw(&args.script, &Request::Reload)?;
    if !response.ok {
        return Ok(evaluation_refused(&response));
    }
    outln!(
        "reloaded: {}",
        response.message.unwrap_or_else(|| "done".into())
    );
    Ok(Exit::Success)
}

/// Whether a reef runs `script`.
fn is_running(script: &std::path::Path) -> bool {
    dirs_of(script)
        .ok()
        .and_then(|dirs| {
            control::request_within(
                &dirs.running_socket(),
                &Request::Status,
                std::time::Duration::from_secs(5),
            )
            .ok()
        })
        .is_some_and(|response| response.ok)
}

fn diff(args: DiffArgs) -> Result<Exit> {
    let typed = args.script.script;
    // `reef diff CANDIDATE.lua`: one file that no reef runs is compared with the topology
    // that runs here (./reef.lua, or the only one running).
    let (running, candidate) = match args.candidate {
        Some(candidate) => (typed, Some(candidate)),
        None if typed.exists() && !is_running(&typed) => {
            let mut here = std::path::PathBuf::from("reef.lua");
            find_running_script(&mut here);
            if is_running(&here) {
                (here, Some(typed))
            } else {
                (typed, None)
            }
        }
        None => (typed, None),
    };
    let request = match &candidate {
        Some(candidate) => Request::DiffWith {
            candidate: std::path::absolute(candidate)
                .with_context(|| format!("cannot find {}", candidate.display()))?,
        },
        None => Request::Diff,
    };
    if let Some(candidate) = &candidate {
        eprintln!(
            "comparing the topology running {} with {}",
            running.display(),
            candidate.display()
        );
    }
    let response = ask_raw(&running, &request)?;
    if !response.ok {
        return Ok(evaluation_refused(&response));
    }
    let diff = response.diff.context("reef sent no diff")?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&with_format(&diff)?)?);
        return Ok(Exit::Success);
    }
    let lines = [
        ("start", &diff.start),
        ("stop", &diff.stop),
        ("restart", &diff.restart),
        ("update live", &diff.update_live),
        ("unchanged", &diff.unchanged),
    ];
    for (verb, names) in lines {
        if !names.is_empty() {
            outln!("{verb:<12} {}", names.join(", "));
        }
    }
    if diff.start.is_empty()
        && diff.stop.is_empty()
        && diff.restart.is_empty()
        && diff.update_live.is_empty()
    {
        outln!("a reload would change nothing");
    }
    Ok(Exit::Success)
}

/// Loads a valid plan or says why not (violations and script errors printed).
fn valid_plan(script: &std::path::Path) -> Result<Result<Plan, Exit>> {
    let plan = match load(script, false)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(Err(exit)),
    };
    if report_violations(&plan) {
        eprintln!("nothing was written: fix the violations above first");
        return Ok(Err(Exit::Violations));
    }
    Ok(Ok(plan))
}

/// What `export` and `install` need besides the plan: the programs on this host and the
/// configs as they are now (the launch adds flags for what a config lacks, as `reef up` does).
fn export_options(
    plan: &Plan,
    script: &std::path::Path,
    image: Option<String>,
) -> Result<crate::export::Options> {
    let script = script
        .canonicalize()
        .with_context(|| format!("cannot find {}", script.display()))?;
    let topology = script
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reef".into());
    let topology = if topology == "reef" {
        // `reef.lua` says little: name the topology after its directory.
        script
            .parent()
            .and_then(|dir| dir.file_name())
            .map(|dir| dir.to_string_lossy().into_owned())
            .unwrap_or(topology)
    } else {
        topology
    };
    let reef_binary = std::env::current_exe().context("cannot find reef's own binary")?;
    let binaries =
        launch::Binaries::resolving_openclaw(reef_binary, std::env::var("PATH").ok().as_deref());
    let inherited = process_env();
    let configs = plan
        .topology
        .instances
        .iter()
        .filter_map(|instance| {
            launch::read_config(instance, &inherited).map(|config| (instance.name.clone(), config))
        })
        .collect();
    // Runtime-openclaw services are written as OpenClaw's installer would write them from this
    // shell: its environment, and the Node and package behind each instance's `openclaw`.
    let openclaw_installs = plan
        .topology
        .instances
        .iter()
        .filter(|instance| instance.runtime == crate::topology::Runtime::Openclaw)
        .map(|instance| {
            let found = crate::export::openclaw::Installation::resolve(
                instance.command.as_deref(),
                binaries.openclaw.as_deref(),
                &inherited,
            );
            (instance.name.clone(), found)
        })
        .collect();
    Ok(crate::export::Options {
        image,
        binaries,
        configs,
        script,
        topology,
        openclaw_host: crate::export::openclaw::Host::detect(&inherited),
        openclaw_installs,
    })
}

fn export(args: ExportArgs) -> Result<Exit> {
    let plan = match valid_plan(&args.script.script)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let options = export_options(&plan, &args.script.script, args.image)?;
    let exported = crate::export::export(&plan, args.format, &options)?;
    let style = Style::for_stderr();
    for warning in &exported.warnings {
        eprintln!("{} {warning}", style.warning("warning:"));
    }
    match &args.output {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // Every file first, then the report: a reader that goes away stops no write.
            let mut done = Vec::new();
            for file in &exported.files {
                let path = crate::export::write::replace(dir, file)
                    .with_context(|| format!("cannot write {}", dir.join(&file.name).display()))?;
                done.push(format!("wrote {}", path.display()));
            }
            for secret in &exported.secret_files {
                let path = dir.join(&secret.name);
                let outcome = crate::export::write::create_secret(&path, secret)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                done.push(crate::export::write::secret_report(
                    &path,
                    secret,
                    &outcome,
                    secret.host_path.as_deref(),
                ));
            }
            for line in &done {
                outln!("{line}");
            }
        }
        None => {
            // What is printed never holds a secret's value: files as shown, secret files as
            // comments with placeholders.
            let single = exported.files.len() == 1;
            for (index, file) in exported.files.iter().enumerate() {
                if index > 0 {
                    outln!();
                }
                if !single {
                    outln!("# ==> {} <==", file.name);
                }
                out!("{}", file.shown());
            }
            for secret in exported.secret_files.iter().filter(|s| !s.keys.is_empty()) {
                let location = secret
                    .host_path
                    .clone()
                    .unwrap_or_else(|| std::path::PathBuf::from(&secret.name));
                outln!();
                out!(
                    "{}",
                    crate::export::write::printed_secret(secret, &location)
                );
            }
        }
    }
    Ok(Exit::Success)
}

fn install(args: InstallArgs) -> Result<Exit> {
    let plan = match valid_plan(&args.script.script)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let options = export_options(&plan, &args.script.script, None)?;
    let target = args.target.unwrap_or(if cfg!(target_os = "macos") {
        ServiceManager::Launchd
    } else {
        ServiceManager::Systemd
    });
    let env = process_env();
    let home = Host::from_process()
        .map(|host| host.home)
        .map_err(|err| anyhow::anyhow!(err))?;
    let (dir, exported) = match (target, args.mode) {
        (ServiceManager::Systemd, mode) => {
            let config = env
                .get("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| home.join(".config"));
            let exported = match mode {
                InstallMode::PerInstance => {
                    crate::export::export(&plan, crate::export::Format::Systemd, &options)?
                }
                InstallMode::Supervisor => crate::export::Export {
                    files: vec![crate::export::systemd::supervisor(&options)?],
                    ..crate::export::Export::default()
                },
            };
            (config.join("systemd/user"), exported)
        }
        (ServiceManager::Launchd, InstallMode::PerInstance) => (
            home.join("Library/LaunchAgents"),
            crate::export::export(&plan, crate::export::Format::Launchd, &options)?,
        ),
        (ServiceManager::Launchd, InstallMode::Supervisor) => (
            home.join("Library/LaunchAgents"),
            crate::export::Export {
                files: vec![crate::export::launchd::supervisor(&options)?],
                ..crate::export::Export::default()
            },
        ),
    };
    let style = Style::for_stderr();
    for warning in &exported.warnings {
        eprintln!("{} {warning}", style.warning("warning:"));
    }
    let names: Vec<&str> = exported.files.iter().map(|f| f.name.as_str()).collect();
    let commands: Vec<String> = match target {
        ServiceManager::Systemd => vec![
            "systemctl --user daemon-reload".into(),
            format!("systemctl --user enable --now {}", names.join(" ")),
            "loginctl enable-linger \"$USER\"   # optional: start them at boot, without a login"
                .into(),
        ],
        ServiceManager::Launchd => names
            .iter()
            .map(|name| {
                format!(
                    "launchctl bootstrap gui/$(id -u) {}",
                    dir.join(name).display()
                )
            })
            .collect(),
    };
    // The secrets' env files go where the units read them (the state dirs).
    let secret_files: Vec<(&crate::export::SecretFile, &std::path::Path)> = exported
        .secret_files
        .iter()
        .filter_map(|secret| secret.host_path.as_deref().map(|path| (secret, path)))
        .collect();
    if args.dry_run {
        for file in &exported.files {
            outln!("# ==> {} <==", dir.join(&file.name).display());
            out!("{}", file.shown());
            outln!();
        }
        for (secret, path) in &secret_files {
            out!("{}", crate::export::write::printed_secret(secret, path));
            outln!();
        }
        outln!("# then:");
        for command in &commands {
            outln!("{command}");
        }
        return Ok(Exit::Success);
    }
    let foreign: Vec<String> = exported
        .files
        .iter()
        .map(|file| dir.join(&file.name))
        .filter(|path| {
            std::fs::read_to_string(path)
                .is_ok_and(|text| !text.contains(crate::export::WRITTEN_BY))
        })
        .map(|path| path.display().to_string())
        .collect();
    if !foreign.is_empty() && !args.force {
        anyhow::bail!(
            "{} exist(s) and reef did not write it (e.g. `openclaw gateway install` did); nothing was written. \
             Remove it, or pass --force to overwrite",
            foreign.join(", ")
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Every file first, then the report: a reader that goes away stops no write. Units and
    // agents are written 0600, as OpenClaw writes its own.
    let mut done = Vec::new();
    for file in &exported.files {
        let path = crate::export::write::replace(&dir, file)
            .with_context(|| format!("cannot write {}", dir.join(&file.name).display()))?;
        done.push(format!("wrote {}", path.display()));
    }
    for (secret, path) in &secret_files {
        let outcome = crate::export::write::create_secret(path, secret)
            .with_context(|| format!("cannot create {}", path.display()))?;
        done.push(crate::export::write::secret_report(
            path, secret, &outcome, None,
        ));
    }
    for line in &done {
        outln!("{line}");
    }
    if args.mode == InstallMode::PerInstance {
        outln!(
            "these services run the gateways without reef: do not also run `reef up` on this topology"
        );
    }
    outln!("then:");
    for command in &commands {
        outln!("  {command}");
    }
    Ok(Exit::Success)
}

fn check(args: crate::cli::CheckArgs) -> Result<Exit> {
    let plan = match load(&args.script.script, args.json)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    // The topology's own running gateways hold their ports on purpose.
    let own: std::collections::BTreeSet<u32> = dirs_of(&args.script.script)
        .ok()
        .and_then(|dirs| crate::supervisor::ledger::read(&dirs.ledger).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| entry.is_alive())
        .filter_map(|entry| entry.pid)
        .collect();
    let findings = crate::check::check(&plan, &own);
    let errors = findings
        .iter()
        .any(|f| f.severity == crate::check::Severity::Error)
        || !plan.is_valid();
    if args.json {
        let json = serde_json::json!({
            "format": render::JSON_FORMAT,
            "script": plan.topology.script,
            "valid": !errors,
            "violations": plan.report.violations,
            "warnings": plan.report.warnings,
            "omitted": plan.report.omitted,
            "omitted_warnings": plan.report.omitted_warnings,
            "findings": findings,
            "running": own.len(),
        });
        outln!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        report_violations(&plan);
        let style = Style::for_stderr();
        for finding in &findings {
            let label = match finding.severity {
                crate::check::Severity::Error => style.error("error:"),
                crate::check::Severity::Warning => style.warning("warning:"),
            };
            eprintln!("{label} {}", finding.message);
        }
        let count = plan.topology.instances.len();
        let warnings = findings
            .iter()
            .filter(|f| f.severity == crate::check::Severity::Warning)
            .count()
            + plan.report.warnings.len();
        let verdict = match (errors, warnings) {
            (true, _) => "problems found".to_owned(),
            (false, 0) => "ready to run".to_owned(),
            (false, 1) => "ready to run, with 1 warning".to_owned(),
            (false, n) => format!("ready to run, with {n} warnings"),
        };
        let running = match own.len() {
            0 => String::new(),
            1 => " (1 of its gateways is running now; the ports it holds are expected)".to_owned(),
            n => {
                format!(" ({n} of its gateways are running now; the ports they hold are expected)")
            }
        };
        outln!(
            "{count} gateway{} checked against this host: {verdict}{running}",
            if count == 1 { "" } else { "s" },
        );
    }
    Ok(if errors {
        Exit::Violations
    } else {
        Exit::Success
    })
}
