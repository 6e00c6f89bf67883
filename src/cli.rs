//! The command line: clap definitions only. See `commands` for what each verb does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run a colony of OpenClaw gateways on one host, declared in a Lua topology script.
#[derive(Debug, Parser)]
#[command(name = "reef", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 topology violations, 2 script error, 3 other failure, 4 no reef runs the topology (status, events, top), 64 usage error."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate and validate a topology: instances, ports, dirs; every isolation mistake explained.
    Plan(PlanArgs),
    /// The plan against this host: ports in use, dir and config permissions, config keys that
    /// break isolation or hide a gateway from the OpenClaw CLI.
    Check(CheckArgs),
    /// Print what `reef up` runs for an instance, as shell lines for a manual run.
    ///
    /// `unset` for the OpenClaw variables of your shell that would point the gateway elsewhere
    /// (OPENCLAW_*, and the legacy CLAWDBOT_* / MOLTBOT_*), `export` for the gateway's own
    /// variables, then, as a comment, its working directory and full command line with the
    /// flags reef adds. Host variables reef passes through unchanged (PATH, HOME, USER, LANG,
    /// LC_*, TZ, TMPDIR, XDG_* dirs, proxies, CA certificates) are left out: your shell already
    /// has them. Use as `eval "$(reef env NAME)"`. Your shell keeps its other variables; `reef up`
    /// does not pass them (`--json` shows the exact environment).
    Env(EnvArgs),
    /// Write a starter reef.lua (a main and a rescue gateway); never overwrites.
    Init(InitArgs),
    /// Create missing state dirs (0700) and configs (0600): OpenClaw's own baseline for runtime
    /// "openclaw" when the program is at hand, else a minimal one; then fill in a missing port,
    /// mode, bind and token, keeping what is set and the file's comments.
    Setup(SetupArgs),
    /// Start the gateways and supervise them in the foreground, reloading the script when it
    /// changes; Ctrl-C stops them all.
    Up(UpArgs),
    /// Stop a topology's gateways: through its running reef, else from its ledger (only
    /// processes provably started by reef for this topology).
    Down(ScriptArg),
    /// State, pid, health, readiness, restarts, uptime, CPU, memory and ports of every instance;
    /// with no reef running, the gateways still serving (exit 4).
    Status(StatusArgs),
    /// A live dashboard of the running topology in the terminal: every gateway's state,
    /// health, pid, CPU, memory, restarts, uptime and ports, and the selected one's log.
    ///
    /// Keys: Up/Down or j/k select a gateway; s starts, x stops, r restarts it; R reloads the
    /// script; ? shows help; q, Esc or Ctrl-C quit. It follows reef's events, so a state
    /// change shows at once, and asks for a status once a second. Needs a terminal: for a pipe
    /// or a file use `reef status --watch` or `reef events --json`. With no reef running the
    /// topology, it says so and exits 4, as `reef status` does.
    Top(TopArgs),
    /// This user's topologies: those a reef runs, and those whose gateways still serve
    /// without one, with their gateways counted by state.
    Ls(LsArgs),
    /// Start one instance of the running topology.
    Start(NameArgs),
    /// Stop one instance of the running topology (it stays stopped until started).
    Stop(NameArgs),
    /// Restart one instance of the running topology (also clears a config error).
    Restart(NameArgs),
    /// Re-evaluate the running topology's script now and apply it (SIGHUP does the same).
    Reload(ScriptArg),
    /// What reloading the script (or loading CANDIDATE instead) would start, stop, restart or
    /// update live, without doing it.
    Diff(DiffArgs),
    /// Show an instance's captured output, or every gateway's, each line prefixed with its name.
    Logs(LogsArgs),
    /// Stream what happens in the running topology from now on (spawned, ready, unhealthy,
    /// exited, blocked, backoff, stopped, adopted, degraded, reloads), one line each.
    Events(EventsArgs),
    /// Install services: a systemd user unit (or launchd agent) per instance, or one unit that
    /// runs `reef up`.
    Install(InstallArgs),
    /// Print the topology as systemd units, launchd agents, a Compose file, Kubernetes
    /// manifests or a Nomad job.
    Export(ExportArgs),
    /// Run the built-in reference gateway (what runtime "builtin" starts).
    Gateway(GatewayArgs),
    /// Print a shell completion script: `reef completions bash > ~/.local/share/bash-completion/completions/reef`.
    Completions(CompletionsArgs),
    /// Print reef's man page (roff): `reef man > ~/.local/share/man/man1/reef.1`.
    Man,
    /// Internal: evaluates a script for a parent reef (a JSON request on stdin, the plan as
    /// JSON on stdout).
    #[command(name = "__evaluate", hide = true)]
    Evaluate,
    /// Internal: runs a script's hooks for a parent `reef up` (JSON lines both ways).
    #[command(name = "__hooks", hide = true)]
    Hooks,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print `{ format, topologies: [...] }` as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// One JSON object a line: format, time, instance, kind and its fields, state, pid.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub script: ScriptArg,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Command {
    /// The script a verb that reads one acts on, to resolve before it runs. `up`, `plan` and
    /// the other verbs that start from the file want it as typed; the client verbs that talk
    /// to a running reef may find it (`reef status` with no `./reef.lua` and one topology
    /// running).
    pub fn running_script_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            Command::Down(script) | Command::Reload(script) => Some(&mut script.script),
            Command::Status(args) => Some(&mut args.script.script),
            Command::Start(args) | Command::Stop(args) | Command::Restart(args) => {
                Some(&mut args.script.script)
            }
            Command::Diff(args) => Some(&mut args.script.script),
            Command::Logs(args) => Some(&mut args.script.script),
            Command::Events(args) => Some(&mut args.script.script),
            Command::Top(args) => Some(&mut args.script.script),
            _ => None,
        }
    }
}

/// The topology script argument shared by most verbs.
#[derive(Debug, Args)]
pub struct ScriptArg {
    /// The topology script.
    #[arg(value_name = "SCRIPT", default_value = "reef.lua", env = "REEF_SCRIPT")]
    pub script: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the plan as JSON (a stable form; see the README).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the findings, violations and warnings as JSON (a stable form; see the README).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The instance's name.
    pub name: String,

    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the launch as JSON instead: {argv, env, cwd}, with the complete environment.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the starter script.
    #[arg(value_name = "PATH", default_value = "reef.lua")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Report what was done as JSON.
    #[arg(long)]
    pub json: bool,

    /// Use a state dir or config path that is a symbolic link (refused by default: a link can
    /// point into another instance's or user's files).
    #[arg(long)]
    pub allow_symlinks: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,

    /// Keep the table up to date until interrupted: redrawn as soon as a state changes, and
    /// every --interval for CPU and memory.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,

    /// With --watch: seconds between redraws when nothing changes.
    #[arg(long, value_name = "SECONDS", default_value = "1", requires = "watch", value_parser = parse_interval)]
    pub interval: std::time::Duration,
}

/// A positive number of seconds, at least 0.1.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&seconds) {
        return Err(format!(
            "{seconds} s is out of range: give 0.1 to 86400 seconds"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The instance's name.
    pub name: String,

    #[command(flatten)]
    pub script: ScriptArg,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The instance's name; none: every gateway's, each line prefixed with its name. A first
    /// argument that ends in `.lua` or holds a `/` is the script, not a name.
    pub name: Option<String>,

    #[command(flatten)]
    pub script: ScriptArg,

    /// Keep printing new output as it arrives.
    #[arg(short, long)]
    pub follow: bool,

    /// How many of the last lines to print first.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The base port: HTTP and probes here, browser control at +2.
    #[arg(long)]
    pub port: u16,

    /// Seconds to report "starting" on /readyz before turning ready.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub startup_delay: f64,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// How long the script's files must be quiet after a change before reef reloads.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = crate::watch::DEFAULT_DEBOUNCE.as_millis() as u64,
        env = "REEF_DEBOUNCE_MS"
    )]
    pub debounce_ms: u64,

    /// Do not reload when the script's files change; `reef reload` and SIGHUP still do.
    #[arg(long)]
    pub no_watch: bool,

    /// Also print every gateway's output, each line prefixed with its name (as `reef logs -f`).
    #[arg(long)]
    pub logs: bool,

    /// Serve Prometheus metrics on http://ADDR/metrics: a port alone listens on loopback
    /// (`--metrics 9464`), IP:PORT where you say. Off unless given.
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::parse_address, env = "REEF_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Another script to compare the running topology with (`reef diff CANDIDATE.lua` alone
    /// compares it with the topology that runs here).
    #[arg(value_name = "CANDIDATE")]
    pub candidate: Option<PathBuf>,

    /// Print the diff as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InstallMode {
    /// A unit per gateway, as `openclaw gateway install` writes for one profile.
    PerInstance,
    /// One unit that runs `reef up` (hot reload, hooks, live restore included).
    Supervisor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceManager {
    Systemd,
    Launchd,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the files and commands instead of writing anything.
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value_t = InstallMode::PerInstance)]
    pub mode: InstallMode,

    /// The service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum)]
    pub target: Option<ServiceManager>,

    /// Overwrite unit files that reef did not write.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: crate::export::Format,

    #[command(flatten)]
    pub script: ScriptArg,

    /// The container image for instances without an `image` (default: the pinned official one).
    #[arg(long)]
    pub image: Option<String>,

    /// Write the files into this directory instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,
}
