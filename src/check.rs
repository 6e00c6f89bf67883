//! `reef check`: the plan against the host. What `reef plan` cannot see from the script alone:
//! ports other processes listen on, state dirs and configs others can read, and keys in existing
//! `openclaw.json` files that undo the isolation the plan sets up.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::gateway_config::{self, GatewaySettings};
use crate::hostports;
use crate::plan::Plan;
use crate::ports::Footprint;
use crate::profile;
use crate::supervisor::launch;
use crate::topology::{Instance, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The instance would not start, or would not be isolated.
    Error,
    /// Works, but may bite.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub instance: String,
    pub kind: &'static str,
    pub message: String,
}

/// Checks every instance of a valid plan against the host. `own` are pids of the topology's
/// own running gateways (from its ledger): the ports they hold are expected.
pub fn check(plan: &Plan, own: &BTreeSet<u32>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let listening = hostports::listening_ports();
    let inherited: BTreeMap<String, String> = std::env::vars().collect();
    let configs: BTreeMap<String, Config> = plan
        .topology
        .instances
        .iter()
        .filter_map(|instance| {
            Some((
                instance.name.clone(),
                read_config(instance, &inherited, &mut findings)?,
            ))
        })
        .collect();
    for instance in &plan.topology.instances {
        ports(instance, &listening, own, &mut findings);
        permissions(instance, &mut findings);
        if let Some(config) = configs.get(&instance.name) {
            config_keys(instance, config, plan, &mut findings);
        }
    }
    let values = configs
        .into_iter()
        .map(|(name, config)| (name, config.value))
        .collect();
    shared_config_values(plan, &values, &mut findings);
    findings.sort_by(|a, b| (a.severity, &a.instance).cmp(&(b.severity, &b.instance)));
    findings
}

fn finding(
    findings: &mut Vec<Finding>,
    severity: Severity,
    instance: &Instance,
    kind: &'static str,
    message: String,
) {
    findings.push(Finding {
        severity,
        instance: instance.name.clone(),
        kind,
        message,
    });
}

/// Listeners inside the footprint: on the gateway or browser-control port the instance would be
/// blocked; in the relay or CDP range its browser profiles would collide.
fn ports(
    instance: &Instance,
    listening: &BTreeSet<u16>,
    own: &BTreeSet<u32>,
    findings: &mut Vec<Finding>,
) {
    let Ok(footprint) = instance.footprint() else {
        return;
    };
    for &port in listening.range(footprint.first..=footprint.last) {
        let holder = hostports::holder(port);
        if holder
            .pid
            .is_some_and(|pid| own.contains(&pid) || own_descendant(pid, own))
        {
            continue;
        }
        let role = footprint.describe_port(port).unwrap_or_default();
        let essential = port == footprint.gateway || port == footprint.browser_control;
        let (severity, consequence) = if essential {
            (Severity::Error, "the gateway would be blocked")
        } else {
            (
                Severity::Warning,
                "a browser profile of this gateway would collide with it",
            )
        };
        finding(
            findings,
            severity,
            instance,
            "port-in-use",
            format!("`{}`: {holder} — its {role}; {consequence}", instance.name),
        );
    }
}

/// Whether `pid` descends from one of `own` (a gateway's worker).
fn own_descendant(pid: u32, own: &BTreeSet<u32>) -> bool {
    let mut current = pid;
    for _ in 0..16 {
        let Some(parent) = parent_of(current) else {
            return false;
        };
        if own.contains(&parent) {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        current = parent;
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn permissions(instance: &Instance, findings: &mut Vec<Finding>) {
    if let Some(mode) = mode(&instance.state_dir)
        && mode & 0o077 != 0
    {
        finding(
            findings,
            Severity::Warning,
            instance,
            "state-dir-permissions",
            format!(
                "`{}`: state dir {} is open to others (mode {mode:o}); run `chmod 700 {}`",
                instance.name,
                instance.state_dir.display(),
                instance.state_dir.display()
            ),
        );
    }
    if let Some(mode) = mode(&instance.config_path)
        && mode & 0o077 != 0
    {
        finding(
            findings,
            Severity::Warning,
            instance,
            "config-permissions",
            format!(
                "`{}`: {} holds the gateway's token but is readable by others (mode {mode:o}); run `chmod 600 {}`",
                instance.name,
                instance.config_path.display(),
                instance.config_path.display()
            ),
        );
    }
}

/// The instance's config resolved as the gateway resolves it ($include, `${VAR}`), or a finding
/// that says why it cannot be: the gateway would refuse it (exit 78), or reef cannot see a
/// setting it needs and would add no flag for it.
fn read_config(
    instance: &Instance,
    inherited: &BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
) -> Option<Config> {
    let env = launch::environment(instance, inherited);
    let resolved = match gateway_config::resolve(&instance.config_path, &env) {
        Ok(Some(resolved)) => resolved,
        Ok(None) => {
            cli_port_without_config(instance, None, findings);
            return None;
        }
        Err(err) => {
            finding(
                findings,
                Severity::Error,
                instance,
                "invalid-config",
                format!("`{}`: {err}; the gateway would exit 78", instance.name),
            );
            return None;
        }
    };
    match GatewaySettings::of(&resolved) {
        Ok(settings) => Some(Config {
            value: resolved.value,
            settings,
        }),
        Err(err) => {
            finding(
                findings,
                Severity::Error,
                instance,
                "unresolved-config",
                format!(
                    "`{}`: {err}; reef cannot tell what the gateway will use, so it adds no flag \
                     and cannot keep the port in step",
                    instance.name
                ),
            );
            None
        }
    }
}

/// A config, resolved, with the gateway settings reef acts on.
struct Config {
    value: serde_json::Value,
    settings: GatewaySettings,
}

/// The port `openclaw --profile X` looks on when no config pins one (the CLI's default for the
/// profile), compared with the plan's: a real gateway the CLI cannot find is an error.
fn cli_port_without_config(
    instance: &Instance,
    config: Option<&Path>,
    findings: &mut Vec<Finding>,
) {
    if instance.runtime != Runtime::Openclaw {
        return;
    }
    let cli_port = profile::hashed_port(&instance.profile);
    if i64::from(cli_port) == instance.port {
        return;
    }
    let what = match config {
        Some(path) => format!("{} pins no gateway.port", path.display()),
        None => format!("there is no config at {}", instance.config_path.display()),
    };
    finding(
        findings,
        Severity::Error,
        instance,
        "config-port-missing",
        format!(
            "`{}`: {what}, so `openclaw --profile {}` looks for the gateway on {cli_port}, not the \
             plan's {}; run `reef setup` to pin it",
            instance.name, instance.profile, instance.port
        ),
    );
}

fn config_keys(instance: &Instance, config: &Config, plan: &Plan, findings: &mut Vec<Finding>) {
    let path = instance.config_path.display();
    match config.settings.port {
        Some(port) if port != instance.port => {
            let written = gateway_config::locate(&instance.config_path, "gateway.port")
                .ok()
                .filter(|location| location.file != instance.config_path)
                .map(|location| format!(" (written in {})", location.file.display()))
                .unwrap_or_default();
            finding(
                findings,
                Severity::Error,
                instance,
                "config-port",
                format!(
                    "`{}`: {path} pins gateway.port {port}{written} but the plan says {}, so \
                     `openclaw --profile {}` and every client that reads the file look on {port}; \
                     `reef up` sets it to {} before it starts the gateway (keeping a backup), unless it \
                     is written as ${{VAR}} or in a file outside the config's directory: then set it yourself",
                    instance.name, instance.port, instance.profile, instance.port
                ),
            );
        }
        Some(_) => {}
        None => cli_port_without_config(instance, Some(&instance.config_path), findings),
    }
    if !config.settings.has_token && instance.runtime == Runtime::Openclaw {
        finding(
            findings,
            Severity::Warning,
            instance,
            "config-token",
            format!(
                "`{}`: {path} pins no gateway.auth.token, so the gateway invents one at every start \
                 and `openclaw --profile {}` cannot authenticate; run `reef setup` to pin one",
                instance.name, instance.profile
            ),
        );
    }
    let config = &config.value;
    if let Some(workspace) = config
        .pointer("/agents/defaults/workspace")
        .and_then(serde_json::Value::as_str)
    {
        let workspace = PathBuf::from(workspace);
        if let Some(other) = plan
            .topology
            .instances
            .iter()
            .find(|other| other.name != instance.name && other.workspace == workspace)
        {
            finding(
                findings,
                Severity::Error,
                instance,
                "config-workspace",
                format!(
                    "`{}`: {path} sets agents.defaults.workspace to {}, the workspace of `{}`; give it its own",
                    instance.name,
                    workspace.display(),
                    other.name
                ),
            );
        }
    }
    let pinned_cdp_ports = config
        .pointer("/browser/profiles")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(profile, settings)| {
            Some((profile.clone(), settings.get("cdpPort")?.as_i64()?))
        });
    for (profile, port) in pinned_cdp_ports {
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for other in plan
            .topology
            .instances
            .iter()
            .filter(|o| o.name != instance.name)
        {
            if let Some(role) = other
                .footprint()
                .ok()
                .and_then(|f: Footprint| f.describe_port(port))
            {
                finding(
                    findings,
                    Severity::Error,
                    instance,
                    "config-cdp-port",
                    format!(
                        "`{}`: {path} pins browser.profiles.{profile}.cdpPort {port}, inside `{}`'s footprint ({role})",
                        instance.name, other.name
                    ),
                );
            }
        }
    }
}

/// Values in existing configs that two gateways must not share.
fn shared_config_values(
    plan: &Plan,
    configs: &BTreeMap<String, serde_json::Value>,
    findings: &mut Vec<Finding>,
) {
    for (pointer, what, severity) in [
        ("/browser/cdpUrl", "browser.cdpUrl", Severity::Error),
        ("/logging/file", "logging.file", Severity::Warning),
    ] {
        let mut by_value: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, config) in configs {
            if let Some(value) = config.pointer(pointer).and_then(serde_json::Value::as_str) {
                by_value.entry(value.to_owned()).or_default().push(name);
            }
        }
        for (value, names) in by_value.into_iter().filter(|(_, names)| names.len() > 1) {
            let Some(first) = plan.topology.instance(names[0]) else {
                continue;
            };
            finding(
                findings,
                severity,
                first,
                "shared-config-value",
                format!(
                    "{} set the same {what} {value:?} in their openclaw.json; give each its own",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            );
        }
    }
}
