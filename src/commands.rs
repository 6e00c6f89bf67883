//! One function per verb. This is the output layer: the only module that prints.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::{Command, EnvArgs, InitArgs, PlanArgs};
use crate::lua::{Host, Limits};
use crate::plan::{self, Plan};
use crate::render::{self, Style};
use crate::suggest::did_you_mean;
use crate::topology::{INHERITED_GATEWAY_VARS, PROFILE_VARS, Runtime};

/// reef's exit codes (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// The topology evaluated but breaks isolation rules.
    Violations = 1,
    /// The script could not be read or evaluated.
    ScriptError = 2,
    /// Anything else went wrong (the message says what).
    Failure = 3,
    /// The command line was wrong.
    Usage = 64,
}

/// The starter script `reef init` writes.
pub const STARTER_SCRIPT: &str = include_str!("templates/reef.lua");

pub fn run(command: Command) -> Result<Exit> {
    match command {
        Command::Plan(args) => plan(args),
        Command::Env(args) => env(args),
        Command::Init(args) => init(args),
    }
}

/// Evaluates the script; on a script error reports it (as JSON if asked) and returns the exit.
fn load(script: &std::path::Path, json: bool) -> Result<Result<Plan, Exit>> {
    let host = Host::from_process().map_err(|err| anyhow::anyhow!(err))?;
    let planned = plan::plan(script, &host, Limits::default());
    Ok(match planned.result {
        Ok(plan) => Ok(plan),
        Err(err) => {
            if json {
                println!(
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
        println!("{}", render::plan_json(&plan));
        return Ok(exit);
    }
    let style = Style::for_stderr();
    let mut stdout = std::io::stdout().lock();
    if !plan.topology.instances.is_empty() {
        write!(stdout, "{}", render::plan_table(&plan, &home()))?;
    }
    writeln!(stdout, "{}", render::plan_summary(&plan))?;
    stdout.flush()?;
    for warning in &plan.report.warnings {
        eprintln!("{}", render::warning_text(warning, style));
    }
    for violation in &plan.report.violations {
        eprintln!("{}", render::violation_text(violation, style));
    }
    Ok(exit)
}

fn env(args: EnvArgs) -> Result<Exit> {
    let plan = match load(&args.script.script, false)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let Some(instance) = plan.topology.instance(&args.name) else {
        let names: Vec<&str> = plan
            .topology
            .instances
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        let hint = did_you_mean(&args.name, names.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        anyhow::bail!(
            "no instance named `{}` in {}{hint}; instances: {}",
            args.name,
            args.script.script.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    if !plan.is_valid() {
        eprintln!(
            "{} {} has {} isolation violation(s); run `reef plan {}` before starting gateways by hand",
            Style::for_stderr().warning("warning:"),
            args.script.script.display(),
            plan.report.violations.len(),
            args.script.script.display()
        );
    }
    let vars = instance.profile_env();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vars)?);
        return Ok(Exit::Success);
    }
    let mut out = render::env_exports(&vars, PROFILE_VARS, INHERITED_GATEWAY_VARS);
    let command = match instance.runtime {
        Runtime::Builtin => format!("reef gateway --port {}", instance.port),
        Runtime::Openclaw => format!("openclaw gateway --port {}", instance.port),
        Runtime::Command => shlex::try_join(
            instance
                .command
                .iter()
                .flatten()
                .chain(&instance.args)
                .map(String::as_str),
        )
        .unwrap_or_default(),
    };
    out.push_str(&format!("# then run: {command}\n"));
    print!("{out}");
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
    println!(
        "wrote {}: a main gateway on 18789 and a rescue gateway on 19789",
        path.display()
    );
    println!("next: reef plan {}", path.display());
    Ok(Exit::Success)
}
