//! Beyond one host: the same plan as systemd units, launchd agents, a Compose file, Kubernetes
//! manifests or a Nomad job.
//!
//! Pure text generation: the same plan and options give the same bytes. What a target cannot
//! express is named in a warning, never dropped silently. What runs and with which variables
//! is never rebuilt here: host units take the argv, working directory and gateway variables of
//! the instance's launch (`supervisor::launch`, the one `reef up` spawns), containers its
//! gateway variables. Secrets (the gateway token, and every variable whose name says it is one:
//! [`secrets`]) never go into a unit, manifest, job or Compose file: they are referenced from an
//! env file, a Secret or a variable that reef writes 0600 ([`SecretFile`]), or (launchd) kept in
//! a property list written 0600. What reef prints shows a placeholder instead of their values
//! ([`File::printed`], [`SecretFile::printed`]).
//!
//! Instances with runtime openclaw get the unit and agent OpenClaw's own installer writes
//! ([`openclaw`]); the others keep reef's own.
//!
//! Generation is pure. Two parts touch the filesystem, outside it: [`openclaw::Host::detect`]
//! and [`openclaw::Installation::resolve`], which the commands call to build [`Options`], and
//! [`write`], which puts an export on disk (modes, atomic replacement, secret files never
//! overwritten).
//!
//! Every string from the script (names, env, argv, paths, image) goes through the one quoting
//! function of its format ([`yaml_string`], `hcl`, `xml`, systemd's `quoted`), so no value can
//! add a line, a key or a directive. Where a format cannot hold a character at all (a control
//! character in an unquoted systemd setting, most of them in XML, a NUL anywhere) the export
//! fails with an [`ExportError`] naming the instance and the field; comments show such
//! characters escaped ([`one_line`]).

pub mod compose;
pub mod kubernetes;
pub mod launchd;
pub mod nomad;
pub mod openclaw;
pub mod secrets;
pub mod systemd;
pub mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::plan::Plan;
use crate::supervisor::launch::{self, Binaries, Launch};
use crate::topology::{ISOLATION_VARS, Instance};

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

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Systemd => "a systemd unit",
            Format::Launchd => "a launchd property list",
            Format::Compose => "a Compose file",
            Format::Kubernetes => "Kubernetes manifests",
            Format::Nomad => "a Nomad job",
        })
    }
}

/// Why a value from the script cannot be written in a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A character the format has no way to write where the value goes: a NUL anywhere (no
    /// argument, variable or path holds one), a control character in an unquoted systemd
    /// setting, one outside XML 1.0's characters in a property list.
    Character(char),
    /// Leading or trailing whitespace, which systemd strips from an unquoted setting.
    EdgeWhitespace,
    /// A trailing backslash, which joins an unquoted systemd line with the next one.
    TrailingBackslash,
    /// A character systemd refuses in the program of `ExecStart=` (quotes, a backslash, `$`),
    /// or reads as one of its prefixes (`-`, `@`, `:`, `+`, `!`, `|`) when it comes first.
    Executable(char),
    /// No letter or digit to name the service, volume or group after.
    NoLabel,
    /// The same service, volume or group name (the name's DNS label) as another instance.
    SameLabel { other: String },
    /// A character the format's secret store cannot hold in a value (a line break in an env
    /// file, say). The value itself is never shown.
    SecretCharacter(char),
    /// A secret's value holds `${`, which Compose v1 (python-dotenv) expands in every env file
    /// value, quoted or not, with no escape.
    SecretInterpolation,
    /// A secret's name the format's secret store cannot use as a key (a Kubernetes Secret's
    /// keys are letters, digits, `-`, `_` and `.`; Nomad Variables' items identifiers).
    SecretName,
}

/// A value from the script that a format cannot hold: which instance, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError {
    pub format: Format,
    /// The instance the value belongs to; none for the topology's own (its script's path).
    pub instance: Option<String>,
    /// The field as the script names it (`env.KEY`, `args[2]`, `state_dir`, `name`), or what
    /// the value is when the script has no field for it (`the script's path`).
    pub field: String,
    pub value: String,
    pub problem: Problem,
}

impl ExportError {
    pub(crate) fn new(
        format: Format,
        instance: Option<&Instance>,
        field: impl Into<String>,
        value: impl Into<String>,
        problem: Problem,
    ) -> Self {
        ExportError {
            format,
            instance: instance.map(|i| i.name.clone()),
            field: field.into(),
            value: value.into(),
            problem,
        }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = self.format;
        match &self.instance {
            Some(instance) => write!(f, "cannot export `{}` as {format}: ", one_line(instance))?,
            None => write!(f, "cannot export as {format}: ")?,
        }
        write!(f, "{} {:?} ", one_line(&self.field), self.value)?;
        let hint = match self.instance {
            Some(_) => "change it in the topology",
            None => "move or rename it",
        };
        match &self.problem {
            Problem::Character('\0') => write!(
                f,
                "contains a NUL, which no argument, environment variable or path can hold; {hint}"
            ),
            Problem::Character(c) => {
                let reason = match format {
                    Format::Systemd => "an unquoted systemd setting cannot hold",
                    Format::Launchd => "XML 1.0 has no way to write",
                    _ => "this format cannot hold",
                };
                write!(
                    f,
                    "contains {:?} (U+{:04X}), which {reason}; {hint}",
                    c,
                    u32::from(*c)
                )
            }
            Problem::EdgeWhitespace => write!(
                f,
                "starts or ends with whitespace, which systemd strips from this setting; {hint}"
            ),
            Problem::TrailingBackslash => write!(
                f,
                "ends with a backslash, which would join this systemd line with the next; {hint}"
            ),
            Problem::Executable(c) => write!(
                f,
                "has {c:?} where systemd refuses it in the program of ExecStart= (or reads it as a prefix); \
                 name the program by a path without it"
            ),
            Problem::NoLabel => write!(
                f,
                "has no letter or digit to name its service after; give the instance a name with one"
            ),
            Problem::SameLabel { other } => write!(
                f,
                "is named `{}` there, as `{}` is; rename one of them",
                dns_label(&self.value),
                one_line(other)
            ),
            Problem::SecretCharacter(c) => write!(
                f,
                "is a secret whose value contains {:?} (U+{:04X}), which {} cannot hold; {hint}",
                c,
                u32::from(*c),
                match format {
                    Format::Systemd =>
                        "a systemd env file (one line of printable text per variable)",
                    Format::Compose =>
                        "a Compose env file (read the same way by Compose v1 and v2)",
                    _ => "this format's secret store",
                }
            ),
            Problem::SecretInterpolation => write!(
                f,
                "is a secret whose value contains \"${{\", which Compose v1 expands in any env file value \
                 (it has no escape for it); {hint}"
            ),
            Problem::SecretName => write!(
                f,
                "is a secret whose name {} cannot use as a key; rename the variable",
                match format {
                    Format::Kubernetes => "a Kubernetes Secret (letters, digits, '-', '_', '.')",
                    Format::Nomad => "Nomad Variables (letters, digits, '_', '-')",
                    _ => "an env file (letters, digits, '_', '.', '-')",
                }
            ),
        }
    }
}

impl std::error::Error for ExportError {}

/// What an export needs besides the plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image for instances that name none.
    pub image: Option<String>,
    /// reef's binary (runtime builtin, and `reef up` in supervisor units) and `openclaw`
    /// resolved on this host (runtime openclaw without a `command`): units run under the
    /// service manager's PATH, not the caller's.
    pub binaries: Binaries,
    /// Each instance's resolved config, by instance name, where one exists: the launch adds the
    /// flags for what it lacks, as `reef up` does.
    pub configs: BTreeMap<String, launch::Config>,
    /// The topology script, absolute (supervisor units run `reef up` on it).
    pub script: PathBuf,
    /// A short name for the topology (Compose project, Nomad job, Kubernetes labels).
    pub topology: String,
    /// What OpenClaw's installer would read on this host (HOME, TMPDIR, PATH, memory): the
    /// environment of runtime-openclaw services.
    pub openclaw_host: openclaw::Host,
    /// The `openclaw` of each runtime-openclaw instance (by name) resolved to Node and the
    /// package entry as the installer runs them, or why that failed (the service then runs the
    /// launch's program, with a warning).
    pub openclaw_installs: BTreeMap<String, Result<openclaw::Installation, String>>,
}

/// Permissions of a file only its owner reads: OpenClaw's units, and anything holding a secret.
pub const PRIVATE: u32 = 0o600;
/// Permissions of a file anyone may read.
pub const PUBLIC: u32 = 0o644;

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// A file name (units, plists) or a suggested one (`compose.yaml`).
    pub name: String,
    /// What is written.
    pub content: String,
    /// What is printed instead, when `content` holds secrets: each value replaced by
    /// [`secrets::PLACEHOLDER`].
    pub printed: Option<String>,
    /// Its permissions when written ([`PRIVATE`] or [`PUBLIC`]).
    pub mode: u32,
}

impl File {
    /// A file without secrets.
    pub fn new(name: impl Into<String>, content: String, mode: u32) -> File {
        File {
            name: name.into(),
            content,
            printed: None,
            mode,
        }
    }

    /// What stdout shows of it: never a secret's value.
    pub fn shown(&self) -> &str {
        self.printed.as_deref().unwrap_or(&self.content)
    }
}

/// A file of secrets (an env file, Kubernetes Secrets, a Nomad variable specification): written
/// 0600 and only where none exists, since its owner may have filled it in since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// Its name in the directory of `reef export --output`.
    pub name: String,
    /// Where the service reads it on this host (a unit's `EnvironmentFile=`), which
    /// `reef install` writes; none for the orchestrators' files.
    pub host_path: Option<PathBuf>,
    /// What is written, with the values.
    pub content: String,
    /// What is printed: each value replaced by [`secrets::PLACEHOLDER`].
    pub printed: String,
    /// The variables (or items) it defines, to name those an existing file lacks.
    pub keys: Vec<String>,
}

/// The files of an export and what they could not express.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    pub files: Vec<File>,
    pub warnings: Vec<String>,
    /// The secrets' files, written only where none exists yet, 0600.
    pub secret_files: Vec<SecretFile>,
}

/// Exports the plan's enabled instances (a disabled one is named in a warning); fails on the
/// first value the format cannot hold.
pub fn export(plan: &Plan, format: Format, options: &Options) -> Result<Export, ExportError> {
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
            one_line(&disabled.name)
        ));
    }
    match format {
        Format::Systemd => systemd::per_instance(&instances, options, &mut export)?,
        Format::Launchd => launchd::per_instance(&instances, options, &mut export)?,
        Format::Compose => compose::export(&instances, options, &mut export)?,
        Format::Kubernetes => kubernetes::export(&instances, options, &mut export)?,
        Format::Nomad => nomad::export(&instances, options, &mut export)?,
    }
    Ok(export)
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
/// instance moved into the image's state dir, secrets included: each format takes those
/// ([`secrets::split`]) to its secret store. The token comes from a Secret or env file.
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
            one_line(&instance.name)
        )),
        Runtime::Command => warnings.push(format!(
            "`{}` runs its own command; {target} runs the OpenClaw image with its default command instead",
            one_line(&instance.name)
        )),
    }
    if !instance.args.is_empty() {
        warnings.push(format!(
            "`{}`: args {:?} are not passed in {target}",
            one_line(&instance.name),
            instance.args
        ));
    }
    if instance.workspace != crate::profile::workspace(&instance.state_dir) {
        warnings.push(format!(
            "`{}`: the custom workspace {} is not exported; in {target} it lives in the state volume",
            one_line(&instance.name),
            instance.workspace.display()
        ));
    }
    if instance.browser.cdp_url.is_some() || instance.browser.cdp_port.is_some() {
        warnings.push(format!(
            "`{}`: browser.cdp_port / cdp_url belong in its openclaw.json for {target}",
            one_line(&instance.name)
        ));
    }
    if instance.stop.signal != "SIGTERM" {
        warnings.push(format!(
            "`{}`: stop signal {} is not expressed in {target}",
            one_line(&instance.name),
            instance.stop.signal
        ));
    }
}

/// A JS one-liner for the image's Node that probes `path` and checks the JSON body, since the
/// gateway answers 200 on any unknown path.
pub fn node_probe(port: i64, path: &str, field: &str) -> String {
    let url = js_string(&format!("http://127.0.0.1:{port}{path}"));
    format!(
        "fetch({url}).then(r => r.json()).then(j => process.exit(j.{field} === true ? 0 : 1)).catch(() => process.exit(1))"
    )
}

/// A JS single-quoted string literal: a quote in a health path stays in the URL.
fn js_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
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

/// Checks that the instances' names give distinct, non-empty DNS labels: the names of their
/// services, volumes, objects or groups in `format`.
pub(crate) fn check_labels(format: Format, instances: &[&Instance]) -> Result<(), ExportError> {
    let mut seen: BTreeMap<String, &Instance> = BTreeMap::new();
    for instance in instances {
        let label = dns_label(&instance.name);
        if label.is_empty() {
            return Err(ExportError::new(
                format,
                Some(instance),
                "name",
                &instance.name,
                Problem::NoLabel,
            ));
        }
        if let Some(other) = seen.insert(label, instance) {
            return Err(ExportError::new(
                format,
                Some(instance),
                "name",
                &instance.name,
                Problem::SameLabel {
                    other: other.name.clone(),
                },
            ));
        }
    }
    Ok(())
}

/// The field of the script a variable of the gateway's environment comes from.
pub(crate) fn env_field(key: &str) -> String {
    match ISOLATION_VARS.iter().find(|(var, _)| *var == key) {
        Some((_, field)) => (*field).to_owned(),
        None if is_identifier(key) => format!("env.{key}"),
        None => format!("env[{key:?}]"),
    }
}

/// The field of the script word `index` of an instance's command line comes from, counted
/// from 1 as Lua does; reef's own words (its binary, `gateway --port N`) by what they are.
pub(crate) fn argv_field(instance: &Instance, argv: &[String], index: usize) -> String {
    let args_start = argv.len().saturating_sub(instance.args.len());
    let command_len = instance.command.as_ref().map_or(0, Vec::len);
    if index >= args_start {
        format!("args[{}]", index - args_start + 1)
    } else if index < command_len {
        format!("command[{}]", index + 1)
    } else if index == 0 {
        "the gateway's program".to_owned()
    } else {
        "the gateway's command line".to_owned()
    }
}

/// Refuses the first character of `value` that `holds` rejects; a NUL is refused everywhere.
pub(crate) fn check_chars(
    value: &str,
    holds: impl Fn(char) -> bool,
    refuse: impl FnOnce(Problem) -> ExportError,
) -> Result<(), ExportError> {
    match value.chars().find(|&c| c == '\0' || !holds(c)) {
        Some(c) => Err(refuse(Problem::Character(c))),
        None => Ok(()),
    }
}

/// Checks a gateway's environment against what `format` can hold (`holds`), NUL refused.
pub(crate) fn check_env(
    format: Format,
    instance: &Instance,
    env: &BTreeMap<String, String>,
    holds: impl Fn(char) -> bool + Copy,
) -> Result<(), ExportError> {
    for (key, value) in env {
        for text in [key, value] {
            check_chars(text, holds, |problem| {
                ExportError::new(format, Some(instance), env_field(key), text, problem)
            })?;
        }
    }
    Ok(())
}

/// A name of letters, digits and `_`, not starting with a digit (a shell variable's).
pub(crate) fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Text for a comment or a message: one line whatever it holds, control characters (and
/// Unicode's line separators) shown as Rust escapes.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                )
            {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A YAML double-quoted scalar, the one form every string takes in Compose and Kubernetes
/// files: `"` and `\` escaped, every character YAML does not print (C0 and C1 controls, DEL,
/// the line separators a YAML 1.1 reader would fold, non-characters) as an escape. Ordinary
/// text comes out as its JSON string.
pub fn yaml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A YAML scalar for a name (a mapping key, an env var's name): plain when YAML reads it back
/// as the same string (a shell identifier that no YAML version takes for a boolean or null),
/// double-quoted otherwise.
pub fn yaml_name(text: &str) -> String {
    const READ_AS_OTHERS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    if is_identifier(text) && !READ_AS_OTHERS.contains(&text.to_ascii_lowercase().as_str()) {
        text.to_owned()
    } else {
        yaml_string(text)
    }
}

/// Instances and options for the formats' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::*;
    use crate::topology::{GatewaySpec, Location};

    /// An instance of profile `main` as `edit` declares it, resolved under `/home/ada`.
    pub fn instance(edit: impl FnOnce(&mut GatewaySpec)) -> Instance {
        let mut spec = GatewaySpec {
            profile: Some("main".into()),
            ..GatewaySpec::default()
        };
        edit(&mut spec);
        spec.resolve(
            18789,
            Path::new("/home/ada"),
            Path::new("/srv"),
            Location {
                file: "reef.lua".into(),
                line: 1,
            },
        )
        .expect("a valid gateway")
    }

    pub fn options() -> Options {
        Options {
            image: None,
            binaries: Binaries::new("/usr/bin/reef"),
            configs: BTreeMap::new(),
            script: PathBuf::from("/srv/reef.lua"),
            topology: "srv".into(),
            openclaw_host: openclaw::test_host(),
            openclaw_installs: BTreeMap::new(),
        }
    }

    /// Options where every runtime-openclaw instance of `instances` runs Node 24 from /opt/node
    /// on /opt/openclaw's package.
    pub fn options_with_openclaw(instances: &[&Instance]) -> Options {
        let mut options = options();
        for instance in instances {
            options.openclaw_installs.insert(
                instance.name.clone(),
                Ok(openclaw::Installation {
                    node: "/opt/node/bin/node".into(),
                    entry: "/opt/openclaw/node_modules/openclaw/dist/index.js".into(),
                    bin_dirs: vec!["/opt/node/bin".into()],
                }),
            );
        }
        options
    }

    /// Exports `instances` as `format`.
    pub fn export(format: Format, instances: &[&Instance]) -> Result<Export, ExportError> {
        export_with(format, instances, &options_with_openclaw(instances))
    }

    /// Exports `instances` as `format` with `options`.
    pub fn export_with(
        format: Format,
        instances: &[&Instance],
        options: &Options,
    ) -> Result<Export, ExportError> {
        let mut export = Export::default();
        match format {
            Format::Systemd => systemd::per_instance(instances, options, &mut export),
            Format::Launchd => launchd::per_instance(instances, options, &mut export),
            Format::Compose => compose::export(instances, options, &mut export),
            Format::Kubernetes => kubernetes::export(instances, options, &mut export),
            Format::Nomad => nomad::export(instances, options, &mut export),
        }?;
        Ok(export)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{export, instance};
    use super::*;
    use crate::topology::OneOrMany;

    const FORMATS: [Format; 5] = [
        Format::Systemd,
        Format::Launchd,
        Format::Compose,
        Format::Kubernetes,
        Format::Nomad,
    ];

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(dns_label("Team_1"), "team-1");
        assert_eq!(dns_label("-x-"), "x");
    }

    #[test]
    fn yaml_strings_escape_what_yaml_does_not_print() {
        for ordinary in ["main", "/home/node/.openclaw", "a b 'c' é ✓", ""] {
            assert_eq!(
                yaml_string(ordinary),
                serde_json::to_string(ordinary).unwrap()
            );
        }
        assert_eq!(yaml_string("a: b # c\n- d"), r#""a: b # c\n- d""#);
        assert_eq!(yaml_string("\"\\\t\r"), r#""\"\\\t\r""#);
        assert_eq!(
            yaml_string("\u{1b}[1m\u{7f}\u{85}\u{2028}\u{feff}"),
            r#""\x1b[1m\x7f\x85\u2028\ufeff""#
        );
    }

    #[test]
    fn yaml_names_are_plain_only_where_yaml_reads_them_back() {
        assert_eq!(yaml_name("OPENCLAW_PROFILE"), "OPENCLAW_PROFILE");
        assert_eq!(yaml_name("_x1"), "_x1");
        for quoted in ["on", "Yes", "NULL", "1A", "a: b", "- x", "#c", "a.b", ""] {
            assert_eq!(yaml_name(quoted), yaml_string(quoted), "{quoted:?}");
        }
    }

    #[test]
    fn comments_stay_on_one_line() {
        assert_eq!(one_line("a\nb\u{1b}c\u{2028}"), "a\\nb\\u{1b}c\\u{2028}");
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn a_health_path_stays_inside_the_probe_url() {
        let probe = node_probe(1, "/x'+process.exit(0)+'\\\u{1b}", "ok");
        assert!(
            probe.starts_with(r"fetch('http://127.0.0.1:1/x\'+process.exit(0)+\'\\\u001b')."),
            "{probe}"
        );
    }

    #[test]
    fn argv_words_are_named_by_their_field() {
        let custom = instance(|spec| {
            spec.command = Some(OneOrMany::Many(vec!["/bin/gw".into(), "-v".into()]));
            spec.args = Some(vec!["--x".into()]);
        });
        let argv: Vec<String> = ["/bin/gw", "-v", "--x"].map(String::from).into();
        let fields: Vec<String> = (0..3).map(|i| argv_field(&custom, &argv, i)).collect();
        assert_eq!(fields, ["command[1]", "command[2]", "args[1]"]);
        assert_eq!(env_field("OPENCLAW_STATE_DIR"), "state_dir");
        assert_eq!(env_field("TZ"), "env.TZ");
        assert_eq!(env_field("a.b"), "env[\"a.b\"]");
    }

    #[test]
    fn a_nul_is_refused_by_every_format_with_instance_and_field() {
        let hostile = instance(|spec| {
            spec.name = Some("hostile".into());
            spec.env = Some(BTreeMap::from([("BAD".into(), "a\0b".into())]));
        });
        for format in FORMATS {
            let err = export(format, &[&hostile]).unwrap_err();
            assert_eq!(err.instance.as_deref(), Some("hostile"), "{format}");
            assert_eq!(err.field, "env.BAD", "{format}");
            assert_eq!(err.problem, Problem::Character('\0'), "{format}");
            let message = err.to_string();
            assert!(
                message.contains("`hostile`") && message.contains("env.BAD"),
                "{message}"
            );
        }
    }

    #[test]
    fn names_that_give_no_or_the_same_service_name_are_refused() {
        let unnamed = instance(|spec| spec.name = Some("日本".into()));
        let first = instance(|spec| spec.name = Some("a_b".into()));
        let second = instance(|spec| {
            spec.name = Some("a-b".into());
            spec.profile = Some("other".into());
        });
        for format in [Format::Compose, Format::Kubernetes, Format::Nomad] {
            let err = export(format, &[&unnamed]).unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.problem),
                ("name", Problem::NoLabel)
            );
            let err = export(format, &[&first, &second]).unwrap_err();
            assert_eq!(err.instance.as_deref(), Some("a-b"));
            assert_eq!(
                err.problem,
                Problem::SameLabel {
                    other: "a_b".into()
                }
            );
        }
    }
}
