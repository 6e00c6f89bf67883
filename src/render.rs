//! Output forms: the human table of a plan, its stable JSON form, and error listings.
//!
//! The JSON forms are an interface: fields are only ever added, and `format` is bumped on any
//! other change.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use comfy_table::{Cell, ContentArrangement, Table, presets};
use serde::Serialize;

use crate::lua::ScriptError;
use crate::plan::Plan;
use crate::ports::Footprint;
use crate::supervisor::launch::Launch;
use crate::topology::{Instance, PROFILE_VARS};
use crate::validate::{Violation, Warning};

/// Version of the JSON forms.
pub const JSON_FORMAT: u32 = 1;

/// Whether to color text for a stream: only on a terminal, and never with `NO_COLOR` set.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    pub fn for_stderr() -> Style {
        Style::detect(std::io::stderr().is_terminal())
    }

    pub fn for_stdout() -> Style {
        Style::detect(std::io::stdout().is_terminal())
    }

    /// Whether this style paints (a terminal, no `NO_COLOR`).
    pub fn is_coloured(&self) -> bool {
        self.color
    }

    fn detect(terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: terminal && !no_color,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn error(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub fn warning(&self, text: &str) -> String {
        self.paint("1;33", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// An instance as the JSON form shows it: everything resolved, plus its footprint.
#[derive(Serialize)]
struct InstanceJson<'a> {
    #[serde(flatten)]
    instance: &'a Instance,
    ports: Option<Footprint>,
}

#[derive(Serialize)]
struct PlanJson<'a> {
    format: u32,
    script: &'a Path,
    valid: bool,
    instances: Vec<InstanceJson<'a>>,
    violations: &'a [Violation],
    warnings: &'a [Warning],
    /// Violations (and warnings) of a kind beyond the 50 listed, by kind.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    omitted: &'a std::collections::BTreeMap<crate::validate::ViolationKind, usize>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    omitted_warnings: &'a std::collections::BTreeMap<crate::validate::WarningKind, usize>,
    files: &'a [std::path::PathBuf],
}

/// The stable JSON form of a plan.
pub fn plan_json(plan: &Plan) -> String {
    let json = PlanJson {
        format: JSON_FORMAT,
        script: &plan.topology.script,
        valid: plan.is_valid(),
        instances: plan
            .topology
            .instances
            .iter()
            .map(|instance| InstanceJson {
                instance,
                ports: instance.footprint().ok(),
            })
            .collect(),
        violations: &plan.report.violations,
        omitted: &plan.report.omitted,
        omitted_warnings: &plan.report.omitted_warnings,
        warnings: &plan.report.warnings,
        files: &plan.topology.files,
    };
    serde_json::to_string_pretty(&json).expect("plans serialize")
}

#[derive(Serialize)]
struct ScriptErrorJson<'a> {
    format: u32,
    script: &'a Path,
    valid: bool,
    error: &'a ScriptError,
    files: &'a [std::path::PathBuf],
}

/// The JSON form of a script that could not be evaluated.
pub fn script_error_json(
    script: &Path,
    error: &ScriptError,
    files: &[std::path::PathBuf],
) -> String {
    serde_json::to_string_pretty(&ScriptErrorJson {
        format: JSON_FORMAT,
        script,
        valid: false,
        error,
        files,
    })
    .expect("errors serialize")
}

/// `~/...` for paths under home: the table is for reading.
fn short_path(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if !home.as_os_str().is_empty() => format!("~/{}", rest.display()),
        _ => path.display().to_string(),
    }
}

/// A borderless table as text, without trailing spaces.
fn table_text(table: &Table) -> String {
    let mut out = String::new();
    for line in table.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human table of a plan's instances.
pub fn plan_table(plan: &Plan, home: &Path) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "NAME",
            "PROFILE",
            "RUNTIME",
            "PORT",
            "CONTROL",
            "CDP",
            "STATE DIR",
            "WORKSPACE",
        ]);
    for instance in &plan.topology.instances {
        let footprint = instance.footprint().ok();
        let name = if instance.enabled {
            instance.name.clone()
        } else {
            format!("{} (disabled)", instance.name)
        };
        let workspace = match instance.workspace.strip_prefix(&instance.state_dir) {
            Ok(rest) => format!("<state>/{}", rest.display()),
            Err(_) => short_path(&instance.workspace, home),
        };
        table.add_row([
            Cell::new(name),
            Cell::new(&instance.profile),
            Cell::new(instance.runtime),
            Cell::new(instance.port),
            Cell::new(
                footprint
                    .map(|f| f.browser_control.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                footprint
                    .map(|f| f.cdp.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(short_path(&instance.state_dir, home)),
            Cell::new(workspace),
        ]);
    }
    table_text(&table)
}

/// One violation for a terminal: the message, then where each instance was declared.
pub fn violation_text(violation: &Violation, style: Style) -> String {
    let mut text = format!("{} {}", style.error("error:"), violation.message);
    let places: Vec<String> = violation
        .instances
        .iter()
        .zip(&violation.locations)
        .map(|(name, location)| format!("{name} at {location}"))
        .collect();
    if !places.is_empty() {
        text.push_str(&style.dim(&format!("\n  --> {}", places.join(", "))));
    }
    text
}

pub fn warning_text(warning: &Warning, style: Style) -> String {
    format!("{} {}", style.warning("warning:"), warning.message)
}

pub fn script_error_text(error: &ScriptError, style: Style) -> String {
    format!("{} {error}", style.error("error:"))
}

/// The one-line summary under a plan's table.
pub fn plan_summary(plan: &Plan) -> String {
    let instances = &plan.topology.instances;
    let footprints: Vec<Footprint> = instances
        .iter()
        .filter_map(|i| i.footprint().ok())
        .collect();
    let span = match (
        footprints.iter().map(|f| f.first).min(),
        footprints.iter().map(|f| f.last).max(),
    ) {
        (Some(first), Some(last)) => format!(", ports {first}-{last}"),
        _ => String::new(),
    };
    let noun = if instances.len() == 1 {
        "gateway"
    } else {
        "gateways"
    };
    let verdict = if plan.is_valid() {
        "valid".to_owned()
    } else {
        let count = plan.report.violation_count();
        format!("{count} violation{}", if count == 1 { "" } else { "s" })
    };
    format!("{} {noun}{span}: {verdict}", instances.len())
}

/// A value as one shell word (single-quoted where needed).
fn shell_word(value: &str) -> String {
    shlex::try_quote(value)
        .map(|quoted| quoted.into_owned())
        // Only a NUL byte cannot be quoted, and it cannot be in an environment or argv anyway.
        .unwrap_or_else(|_| shell_word(&value.replace('\0', "")))
}

/// `reef env`: shell lines that reproduce a launch by hand, for `eval` in the caller's shell.
/// `unset` for the selector variables the caller has and the launch drops; `export` for every
/// variable of the launch except those passed through unchanged from the caller (its shell has
/// them already), profile pins first in OpenClaw's order; then, as a comment, the working
/// directory and the full command line.
pub fn launch_script(launch: &Launch, inherited: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let dropped = crate::supervisor::launch::dropped_selectors(inherited, launch);
    if !dropped.is_empty() {
        out.push_str(&format!("unset {}\n", dropped.join(" ")));
    }
    let shown = |key: &str, value: &String| {
        !(crate::supervisor::launch::is_passed_through(key) && inherited.get(key) == Some(value))
    };
    let ordered = PROFILE_VARS
        .iter()
        .filter_map(|key| launch.env.get_key_value(*key))
        .chain(
            launch
                .env
                .iter()
                .filter(|(key, _)| !PROFILE_VARS.contains(&key.as_str())),
        );
    for (key, value) in ordered.filter(|(key, value)| shown(key, value)) {
        out.push_str(&format!("export {key}={}\n", shell_word(value)));
    }
    let command: Vec<String> = launch.argv.iter().map(|word| shell_word(word)).collect();
    out.push_str(&format!(
        "# then run: (cd {} && {})\n",
        shell_word(&launch.cwd.display().to_string()),
        command.join(" ")
    ));
    out
}

/// "2h05m", "3m12s", "41s".
pub fn duration_text(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, _) => format!("{minutes}m{secs:02}s"),
        (hours, _) if hours >= 48 => format!("{}d{:02}h", hours / 24, hours % 24),
        _ => format!("{hours}h{minutes:02}m"),
    }
}

/// One event line of `reef events` for a terminal: local time, instance (or `reef` for the
/// topology's own), kind, then the kind's fields as `key=value`.
pub fn event_text(event: &serde_json::Value) -> String {
    let time = event["time"].as_f64().unwrap_or_default();
    let clock = crate::logview::clock_at(time as libc::time_t);
    let who = event["instance"].as_str().unwrap_or("reef");
    let kind = event["kind"].as_str().unwrap_or("?");
    let fields: Vec<String> = event
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, value)| {
            !["format", "time", "instance", "kind", "state", "pid"].contains(&key.as_str())
                && !value.is_null()
        })
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => format!("{key}={text}"),
            // Durations (`after`, `delay`) read as people write them.
            serde_json::Value::Number(number) if number.is_f64() => {
                format!("{key}={:.2}s", number.as_f64().unwrap_or_default())
            }
            other => format!("{key}={other}"),
        })
        .collect();
    format!("{clock} {who:<12} {kind:<14} {}\n", fields.join(" "))
        .trim_end()
        .to_owned()
        + "\n"
}

/// The human table of `reef status`.
pub fn status_table(status: &crate::supervisor::status::TopologyStatus, now: f64) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "NAME", "STATE", "PID", "HEALTH", "READY", "RESTARTS", "UPTIME", "CPU", "MEM", "PORTS",
            "NOTE",
        ]);
    for instance in &status.instances {
        let health = match instance.healthy {
            Some(true) => "ok",
            Some(false) => "failing",
            None => "-",
        };
        table.add_row([
            Cell::new(&instance.name),
            Cell::new(instance.state),
            Cell::new(
                instance
                    .pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(health),
            Cell::new(if instance.ready { "yes" } else { "no" }),
            Cell::new(instance.restarts),
            Cell::new(
                instance
                    .started_at
                    .map(|at| duration_text(now - at))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                instance
                    .cpu_percent
                    .map(|cpu| format!("{cpu:.1}%"))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(
                instance
                    .rss_bytes
                    .map(crate::host::usage::bytes_text)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::new(format!(
                "{},{},{}-{}",
                instance.ports.gateway,
                instance.ports.browser_control,
                instance.ports.cdp_first,
                instance.ports.cdp_last
            )),
            Cell::new(match (&instance.message, instance.adopted) {
                (Some(message), _) => message.as_str(),
                (None, true) => "adopted from a previous reef",
                (None, false) => "",
            }),
        ]);
    }
    let mut out = table_text(&table);
    out.push_str(&format!(
        "reef pid {}, supervising {} for {}; generation {} loaded {} ago\n",
        status.pid,
        status.script.display(),
        duration_text(now - status.started_at),
        status.generation,
        duration_text(now - status.loaded_at)
    ));
    if let Some(error) = &status.reload_error {
        out.push_str(&format!(
            "last reload failed {} ago, still running generation {}: {}\n",
            duration_text(now - error.at),
            status.generation,
            error.message
        ));
    }
    if let Some(hooks) = &status.hooks {
        let host = match hooks.pid {
            Some(pid) => format!("hook host pid {pid}"),
            None => "hook host not running".to_owned(),
        };
        out.push_str(&format!(
            "hooks: {} hook(s), {} timer(s), {host}",
            hooks.hooks, hooks.timers
        ));
        if let (Some(reason), Some(at)) = (&hooks.last_restart, hooks.last_restart_at) {
            out.push_str(&format!(
                "; restarted {} time(s), last {} ago: {reason}",
                hooks.restarts,
                duration_text(now - at)
            ));
        }
        out.push('\n');
    }
    out
}
