//! The command line: clap definitions only. See `commands` for what each verb does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run a colony of OpenClaw gateways on one host, declared in a Lua topology script.
#[derive(Debug, Parser)]
#[command(name = "reef", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 topology violations, 2 script error, 3 other failure, 64 usage error."
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
    /// Print `export` lines that reproduce an instance's environment for a manual run.
    Env(EnvArgs),
    /// Write a starter reef.lua (a main and a rescue gateway); never overwrites.
    Init(InitArgs),
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
pub struct EnvArgs {
    /// The instance's name.
    pub name: String,

    #[command(flatten)]
    pub script: ScriptArg,

    /// Print the variables as a JSON object instead.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the starter script.
    #[arg(value_name = "PATH", default_value = "reef.lua")]
    pub path: PathBuf,
}
