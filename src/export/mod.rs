//! Beyond one host: the same plan as systemd units, launchd agents, a Compose file, Kubernetes
//! manifests or a Nomad job.
//!
//! Pure text generation: the same plan and options give the same bytes. What a target cannot
//! express is named in a warning, never dropped silently. What runs and with which variables
//! is never rebuilt here: host units take the argv, working directory and gateway variables of
//! the instance's launch (`supervisor::launch`, the one `reef up` spawns), containers its
//! gateway variables. Secrets (the gateway token) never go into a generated file: they are
//! referenced from an env file, a Secret or a variable.

pub mod compose;
pub mod kubernetes;
pub mod launchd;
pub mod nomad;
pub mod systemd;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::plan::Plan;
use crate::supervisor::launch::{self, Binaries, Launch};
use crate::topology::Instance;

/// The official image, pinned to the reference release (never `latest`).
pub const DEFAULT_IMAGE: &str = "ghcr.io/openclaw/openclaw:2026.9.6";
/// Every file reef writes says so: `reef install` overwrites only files that do.
pub const WRITTEN_BY: &str = "Written by reef";

/// Where the official image keeps the gateway's state.
pub const CONTAINER_STATE_DIR: &str = "/home/node/.openclaw";

/// Output formats of `reef export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Systemd,
    Launchd,
    Compose,
    Kubernetes,
    Nomad,
}

/// What an export needs besides the plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image for instances that name none.
    pub image: Option<String>,
    /// reef's binary (runtime builtin, and `reef up` in supervisor units) and `openclaw`
    /// resolved on this host (runtime openclaw without a `command`): units run under the
    /// service manager's PATH, not the caller's.
    pub binaries: Binaries,
    /// Each instance's parsed config, by instance name, where one exists: the launch adds the
    /// flags for what it lacks, as `reef up` does.
    pub configs: BTreeMap<String, serde_json::Value>,
    /// The topology script, absolute (supervisor units run `reef up` on it).
    pub script: PathBuf,
    /// A short name for the topology (Compose project, Nomad job, Kubernetes labels).
    pub topology: String,
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// A file name (units, plists) or a suggested one (`compose.yaml`).
    pub name: String,
    pub content: String,
}

/// The files of an export and what they could not express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub files: Vec<File>,
    pub warnings: Vec<String>,
    /// Files for secrets (env files), written only where none exists yet, 0600.
    pub secret_templates: Vec<File>,
}

/// Exports the plan's enabled instances (a disabled one is named in a warning).
pub fn export(plan: &Plan, format: Format, options: &Options) -> Export {
    let mut export = Export::default();
    let instances: Vec<&Instance> = plan
        .topology
        .instances
        .iter()
        .filter(|i| i.enabled)
        .collect();
    for disabled in plan.topology.instances.iter().filter(|i| !i.enabled) {
        export.warnings.push(format!(
            "`{}` is disabled in the topology and not exported",
            disabled.name
        ));
    }
    match format {
        Format::Systemd => systemd::per_instance(&instances, options, &mut export),
        Format::Launchd => launchd::per_instance(&instances, options, &mut export),
        Format::Compose => compose::export(&instances, options, &mut export),
        Format::Kubernetes => kubernetes::export(&instances, options, &mut export),
        Format::Nomad => nomad::export(&instances, options, &mut export),
    }
    export
}

/// The image of an instance.
pub fn image_of<'a>(instance: &'a Instance, options: &'a Options) -> &'a str {
    instance
        .image
        .as_deref()
        .or(options.image.as_deref())
        .unwrap_or(DEFAULT_IMAGE)
}

/// How an instance runs on this host under a service manager: the launch `reef up` would use
/// (same argv, same flags for what the config lacks, same working directory) with only the
/// gateway's own variables. The service manager supplies HOME, PATH and the like, and no
/// secret is written: the token stays in the config.
pub fn host_launch(instance: &Instance, options: &Options) -> Launch {
    launch::describe(
        instance,
        &options.binaries,
        &BTreeMap::new(),
        options.configs.get(&instance.name),
    )
}

/// The environment inside a container: the gateway's own variables (as on the host) for the
/// instance moved into the image's state dir. The token comes from a Secret or env file.
pub fn container_env(instance: &Instance) -> BTreeMap<String, String> {
    let mut inside = instance.clone();
    inside.state_dir = PathBuf::from(CONTAINER_STATE_DIR);
    inside.config_path = crate::profile::config_path(&inside.state_dir);
    // A custom workspace is not exported (see `container_warnings`): the default one, in the
    // state volume.
    inside.workspace = crate::profile::workspace(&inside.state_dir);
    launch::gateway_env(&inside)
}

/// Warnings for what containers cannot express about an instance.
pub fn container_warnings(instance: &Instance, target: &str, warnings: &mut Vec<String>) {
    use crate::topology::Runtime;
    match instance.runtime {
        Runtime::Openclaw => {}
        Runtime::Builtin => warnings.push(format!(
            "`{}` uses runtime \"builtin\" (reef's reference gateway); {target} runs the OpenClaw image instead",
            instance.name
        )),
        Runtime::Command => warnings.push(format!(
            "`{}` runs its own command; {target} runs the OpenClaw image with its default command instead",
            instance.name
        )),
    }
    if !instance.args.is_empty() {
        warnings.push(format!(
            "`{}`: args {:?} are not passed in {target}",
            instance.name, instance.args
        ));
    }
    if instance.workspace != crate::profile::workspace(&instance.state_dir) {
        warnings.push(format!(
            "`{}`: the custom workspace {} is not exported; in {target} it lives in the state volume",
            instance.name,
            instance.workspace.display()
        ));
    }
    if instance.browser.cdp_url.is_some() || instance.browser.cdp_port.is_some() {
        warnings.push(format!(
            "`{}`: browser.cdp_port / cdp_url belong in its openclaw.json for {target}",
            instance.name
        ));
    }
    if instance.stop.signal != "SIGTERM" {
        warnings.push(format!(
            "`{}`: stop signal {} is not expressed in {target}",
            instance.name, instance.stop.signal
        ));
    }
}

/// A JS one-liner for the image's Node that probes `path` and checks the JSON body, since the
/// gateway answers 200 on any unknown path.
pub fn node_probe(port: i64, path: &str, field: &str) -> String {
    format!(
        "fetch('http://127.0.0.1:{port}{path}').then(r => r.json()).then(j => process.exit(j.{field} === true ? 0 : 1)).catch(() => process.exit(1))"
    )
}

/// A name usable as a DNS label (Kubernetes, Compose volumes): lowercase, `-` for the rest.
pub fn dns_label(name: &str) -> String {
    let label: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    label.trim_matches('-').chars().take(63).collect()
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
pub fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(dns_label("Team_1"), "team-1");
        assert_eq!(dns_label("-x-"), "x");
    }
}
