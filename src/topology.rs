//! The topology as plain data: what a script declared ([`GatewaySpec`]) and what it resolves to
//! ([`Instance`]). No Lua, no tokio, no filesystem: paths are computed, never touched.
//!
//! Parsing happens in two stages. The Lua layer deserializes each `reef.gateway{...}` table into
//! a [`GatewaySpec`] (every field optional, unknown fields refused), merges in the defaults, and
//! [`GatewaySpec::resolve`] turns it into an [`Instance`] with every default filled in from the
//! profile rules. Cross-instance checks live in `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ports::{BaseOutOfRange, Footprint};
use crate::profile::{self, ProfilePaths};

/// Fields of `reef.gateway{...}`, for "did you mean" hints and the reference docs.
pub const GATEWAY_FIELDS: &[&str] = &[
    "name",
    "profile",
    "port",
    "runtime",
    "command",
    "args",
    "env",
    "state_dir",
    "config_path",
    "workspace",
    "depends_on",
    "restart",
    "health",
    "stop",
    "browser",
    "enabled",
    "image",
];

/// Fields of the nested tables, by the field that holds them.
pub const NESTED_FIELDS: &[(&str, &[&str])] = &[
    ("restart", &["policy", "backoff"]),
    ("restart.backoff", &["initial", "max", "reset_after"]),
    (
        "health",
        &[
            "liveness_path",
            "readiness_path",
            "interval",
            "timeout",
            "start_period",
        ],
    ),
    ("stop", &["signal", "timeout"]),
    ("browser", &["cdp_port", "cdp_url"]),
];

/// A port as written in a script: a number, or `"auto"` for the default pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Number(i64),
    Auto,
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<PortSpec, D::Error> {
        struct PortVisitor;
        impl serde::de::Visitor<'_> for PortVisitor {
            type Value = PortSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortSpec, E> {
                Ok(PortSpec::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortSpec, E> {
                Ok(PortSpec::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PortSpec, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(PortSpec::Number(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortSpec, E> {
                if v == "auto" {
                    Ok(PortSpec::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// What runs for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// reef's own reference gateway (`reef gateway`).
    #[default]
    Builtin,
    /// The real `openclaw gateway`.
    Openclaw,
    /// An explicit `command = {...}` array.
    Command,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Builtin => "builtin",
            Runtime::Openclaw => "openclaw",
            Runtime::Command => "command",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// A string or an array of strings (`command`, `depends_on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<OneOrMany, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OneOrMany, A::Error> {
                // Lua's empty table `{}` arrives as an empty map.
                match map.next_key::<serde::de::IgnoredAny>()? {
                    None => Ok(OneOrMany::Many(Vec::new())),
                    Some(_) => Err(serde::de::Error::invalid_type(
                        serde::de::Unexpected::Map,
                        &self,
                    )),
                }
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `reef.gateway{...}` as written: every field optional, nothing resolved yet.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    pub name: Option<String>,
    pub profile: Option<String>,
    pub port: Option<PortSpec>,
    pub runtime: Option<Runtime>,
    pub command: Option<OneOrMany>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub state_dir: Option<String>,
    pub config_path: Option<String>,
    pub workspace: Option<String>,
    pub depends_on: Option<OneOrMany>,
    pub restart: Option<RestartSpec>,
    pub health: Option<HealthSpec>,
    pub stop: Option<StopSpec>,
    pub browser: Option<BrowserSpec>,
    pub enabled: Option<bool>,
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    pub policy: Option<RestartPolicy>,
    pub backoff: Option<BackoffSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    pub initial: Option<f64>,
    pub max: Option<f64>,
    pub reset_after: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub liveness_path: Option<String>,
    pub readiness_path: Option<String>,
    pub interval: Option<f64>,
    pub timeout: Option<f64>,
    pub start_period: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    pub signal: Option<String>,
    pub timeout: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserSpec {
    pub cdp_port: Option<i64>,
    pub cdp_url: Option<String>,
}

/// A field of a spec that is wrong for a reason the types alone do not show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Takes `field` from `over` if set, else from `under`.
fn pick<T: Clone>(over: &Option<T>, under: &Option<T>) -> Option<T> {
    over.clone().or_else(|| under.clone())
}

impl GatewaySpec {
    /// This spec with every unset field taken from `defaults`. `env` tables are merged key by
    /// key and nested tables field by field, so a default backoff survives a policy override.
    pub fn merged_over(&self, defaults: &GatewaySpec) -> GatewaySpec {
        let env = match (&defaults.env, &self.env) {
            (Some(base), Some(own)) => {
                let mut env = base.clone();
                env.extend(own.clone());
                Some(env)
            }
            (base, own) => pick(own, base),
        };
        GatewaySpec {
            name: pick(&self.name, &defaults.name),
            profile: pick(&self.profile, &defaults.profile),
            port: pick(&self.port, &defaults.port),
            runtime: pick(&self.runtime, &defaults.runtime),
            command: pick(&self.command, &defaults.command),
            args: pick(&self.args, &defaults.args),
            env,
            state_dir: pick(&self.state_dir, &defaults.state_dir),
            config_path: pick(&self.config_path, &defaults.config_path),
            workspace: pick(&self.workspace, &defaults.workspace),
            depends_on: pick(&self.depends_on, &defaults.depends_on),
            restart: merge_nested(&self.restart, &defaults.restart, |own, base| RestartSpec {
                policy: pick(&own.policy, &base.policy),
                backoff: merge_nested(&own.backoff, &base.backoff, |own, base| BackoffSpec {
                    initial: pick(&own.initial, &base.initial),
                    max: pick(&own.max, &base.max),
                    reset_after: pick(&own.reset_after, &base.reset_after),
                }),
            }),
            health: merge_nested(&self.health, &defaults.health, |own, base| HealthSpec {
                liveness_path: pick(&own.liveness_path, &base.liveness_path),
                readiness_path: pick(&own.readiness_path, &base.readiness_path),
                interval: pick(&own.interval, &base.interval),
                timeout: pick(&own.timeout, &base.timeout),
                start_period: pick(&own.start_period, &base.start_period),
            }),
            stop: merge_nested(&self.stop, &defaults.stop, |own, base| StopSpec {
                signal: pick(&own.signal, &base.signal),
                timeout: pick(&own.timeout, &base.timeout),
            }),
            browser: merge_nested(&self.browser, &defaults.browser, |own, base| BrowserSpec {
                cdp_port: pick(&own.cdp_port, &base.cdp_port),
                cdp_url: pick(&own.cdp_url, &base.cdp_url),
            }),
            enabled: pick(&self.enabled, &defaults.enabled),
            image: pick(&self.image, &defaults.image),
        }
    }

    /// Refuses fields that would make every later gateway share a value.
    pub fn check_as_defaults(&self) -> Result<(), FieldError> {
        let set = [
            ("name", self.name.is_some()),
            ("profile", self.profile.is_some()),
            ("state_dir", self.state_dir.is_some()),
            ("config_path", self.config_path.is_some()),
            ("workspace", self.workspace.is_some()),
        ];
        if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
            return Err(FieldError::new(
                *field,
                "cannot be a default: every gateway needs its own; set it in reef.gateway{...}",
            ));
        }
        if let Some(PortSpec::Number(port)) = self.port {
            return Err(FieldError::new(
                "port",
                format!(
                    "cannot be a default ({port}): every gateway would share it; only port = \"auto\" can be a default"
                ),
            ));
        }
        let browser = self.browser.as_ref();
        if browser.is_some_and(|b| b.cdp_port.is_some() || b.cdp_url.is_some()) {
            return Err(FieldError::new(
                "browser",
                "cannot pin cdp_port or cdp_url as a default: each gateway needs its own browser",
            ));
        }
        Ok(())
    }

    /// Resolves this (already merged) spec into an instance. `base_port` is the resolved port
    /// (the Lua layer allocates `"auto"`); relative paths are taken from `script_dir`.
    pub fn resolve(
        self,
        base_port: i64,
        home: &Path,
        script_dir: &Path,
        declared_at: Location,
    ) -> Result<Instance, FieldError> {
        let profile = self.profile.ok_or_else(|| {
            FieldError::new(
                "profile",
                "is missing; every gateway needs a profile, e.g. profile = \"main\"",
            )
        })?;
        let name = self.name.unwrap_or_else(|| profile.clone());
        if name.trim().is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        let defaults = ProfilePaths::resolve(&profile, home);
        let resolve_path =
            |field: &str, value: Option<String>| -> Result<Option<PathBuf>, FieldError> {
                value
                    .map(|raw| {
                        if raw.is_empty() {
                            Err(FieldError::new(field, "must not be empty"))
                        } else {
                            Ok(absolute(&raw, home, script_dir))
                        }
                    })
                    .transpose()
            };
        let state_dir = resolve_path("state_dir", self.state_dir)?.unwrap_or(defaults.state_dir);
        let config_path = resolve_path("config_path", self.config_path)?
            .unwrap_or_else(|| profile::config_path(&state_dir));
        let workspace = resolve_path("workspace", self.workspace)?
            .unwrap_or_else(|| profile::workspace(&state_dir));

        let command = self.command.map(OneOrMany::into_vec);
        let runtime = match (self.runtime, &command) {
            (Some(runtime), _) => runtime,
            (None, Some(_)) => Runtime::Command,
            (None, None) => Runtime::default(),
        };
        match (runtime, &command) {
            (Runtime::Builtin, Some(_)) => {
                return Err(FieldError::new(
                    "command",
                    "has no effect with runtime \"builtin\"; use runtime = \"command\" to run your own program",
                ));
            }
            (Runtime::Command, None) => {
                return Err(FieldError::new(
                    "command",
                    "is missing; runtime \"command\" needs command = { \"program\", \"arg\", ... }",
                ));
            }
            (_, Some(argv)) if argv.is_empty() || argv[0].is_empty() => {
                return Err(FieldError::new("command", "must name a program"));
            }
            _ => {}
        }

        let env = self.env.unwrap_or_default();
        if let Some(key) = env.keys().find(|key| key.is_empty() || key.contains('=')) {
            return Err(FieldError::new(
                format!("env[{key:?}]"),
                "is not a valid environment variable name",
            ));
        }
        if let Some((key, field)) = env.keys().find_map(|key| {
            ISOLATION_VARS
                .iter()
                .find(|(var, _)| var == key)
                .map(|(var, field)| (*var, *field))
        }) {
            return Err(FieldError::new(
                format!("env.{key}"),
                format!(
                    "would override the isolation reef derives and checks; set `{field}` instead"
                ),
            ));
        }

        let restart = self.restart.unwrap_or_default();
        let backoff = restart.backoff.unwrap_or_default();
        let defaults_backoff = Backoff::default();
        let backoff = Backoff {
            initial: seconds(
                "restart.backoff.initial",
                backoff.initial,
                defaults_backoff.initial,
            )?,
            max: seconds("restart.backoff.max", backoff.max, defaults_backoff.max)?,
            reset_after: seconds(
                "restart.backoff.reset_after",
                backoff.reset_after,
                defaults_backoff.reset_after,
            )?,
        };
        if backoff.initial < 0.05 {
            return Err(FieldError::new(
                "restart.backoff.initial",
                format!(
                    "is {}; at least 0.05 s, or a crashing gateway restarts in a tight loop",
                    backoff.initial
                ),
            ));
        }
        if backoff.max < backoff.initial {
            return Err(FieldError::new(
                "restart.backoff.max",
                format!(
                    "is {}, below restart.backoff.initial {}",
                    backoff.max, backoff.initial
                ),
            ));
        }

        let health = self.health.unwrap_or_default();
        let health_defaults = Health::default();
        let health = Health {
            liveness_path: http_path(
                "health.liveness_path",
                health.liveness_path,
                health_defaults.liveness_path,
            )?,
            readiness_path: http_path(
                "health.readiness_path",
                health.readiness_path,
                health_defaults.readiness_path,
            )?,
            interval: positive_seconds(
                "health.interval",
                health.interval,
                health_defaults.interval,
            )?,
            timeout: positive_seconds("health.timeout", health.timeout, health_defaults.timeout)?,
            start_period: seconds(
                "health.start_period",
                health.start_period,
                health_defaults.start_period,
            )?,
        };

        if health.start_period < 1.0 {
            return Err(FieldError::new(
                "health.start_period",
                format!(
                    "is {}; a gateway needs at least 1 s to come up (the real one takes ~10 s)",
                    health.start_period
                ),
            ));
        }

        let stop = self.stop.unwrap_or_default();
        let stop_defaults = Stop::for_runtime(runtime);
        let stop = Stop {
            signal: match stop.signal {
                Some(signal) => normalize_signal(&signal).ok_or_else(|| {
                    FieldError::new(
                        "stop.signal",
                        format!(
                            "names an unknown signal {signal:?}; use one of {}",
                            STOP_SIGNALS.join(", ")
                        ),
                    )
                })?,
                None => stop_defaults.signal,
            },
            timeout: positive_seconds("stop.timeout", stop.timeout, stop_defaults.timeout)?,
        };

        let browser = self.browser.unwrap_or_default();
        if let Some(url) = &browser.cdp_url
            && url.trim().is_empty()
        {
            return Err(FieldError::new("browser.cdp_url", "must not be empty"));
        }

        Ok(Instance {
            name,
            systemd_unit: defaults.systemd_unit,
            launchd_label: defaults.launchd_label,
            profile,
            port: base_port,
            runtime,
            command,
            args: self.args.unwrap_or_default(),
            env,
            state_dir,
            config_path,
            workspace,
            depends_on: self.depends_on.map(OneOrMany::into_vec).unwrap_or_default(),
            restart: Restart {
                policy: restart.policy.unwrap_or_default(),
                backoff,
            },
            health,
            stop,
            browser: Browser {
                cdp_port: browser.cdp_port,
                cdp_url: browser.cdp_url,
            },
            enabled: self.enabled.unwrap_or(true),
            image: self.image,
            declared_at,
        })
    }
}

fn merge_nested<T: Clone>(
    own: &Option<T>,
    base: &Option<T>,
    merge: impl FnOnce(&T, &T) -> T,
) -> Option<T> {
    match (own, base) {
        (Some(own), Some(base)) => Some(merge(own, base)),
        (own, base) => pick(own, base),
    }
}

/// The longest duration a spec may give (about 115 days): longer ones cannot be timers.
pub const MAX_SECONDS: f64 = 1e7;

fn seconds(field: &str, value: Option<f64>, default: f64) -> Result<f64, FieldError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) => Ok(v),
        Some(v) => Err(FieldError::new(
            field,
            format!("is {v}; give a duration in seconds, from 0 to {MAX_SECONDS}"),
        )),
    }
}

fn positive_seconds(field: &str, value: Option<f64>, default: f64) -> Result<f64, FieldError> {
    match seconds(field, value, default)? {
        v if v > 0.0 => Ok(v),
        v => Err(FieldError::new(
            field,
            format!("is {v}; it must be more than 0 seconds"),
        )),
    }
}

fn http_path(field: &str, value: Option<String>, default: String) -> Result<String, FieldError> {
    match value {
        None => Ok(default),
        Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => Ok(path),
        Some(path) => Err(FieldError::new(
            field,
            format!("is {path:?}, not an HTTP path; it must start with '/', e.g. \"/healthz\""),
        )),
    }
}

/// Signals a gateway may be stopped with.
pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
];

fn normalize_signal(raw: &str) -> Option<String> {
    let upper = raw.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    STOP_SIGNALS.contains(&full.as_str()).then_some(full)
}

/// `~/x` against home, relative paths against the script's directory, then lexically cleaned
/// so that `a/./b` and `a/b` compare equal in validation.
fn absolute(raw: &str, home: &Path, script_dir: &Path) -> PathBuf {
    let path = if raw == "~" {
        home.to_path_buf()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        home.join(rest)
    } else {
        script_dir.join(raw)
    };
    clean(&path)
}

/// Removes `.` components, resolves `..` lexically and drops trailing slashes.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Where something was declared in a script.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One gateway, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub name: String,
    pub profile: String,
    /// The base port as declared; `validate` checks that its footprint fits.
    pub port: i64,
    pub runtime: Runtime,
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub workspace: PathBuf,
    pub systemd_unit: String,
    pub launchd_label: String,
    pub depends_on: Vec<String>,
    pub restart: Restart,
    pub health: Health,
    pub stop: Stop,
    pub browser: Browser,
    pub enabled: bool,
    /// The container image for exports (`reef export`); none: the default or `--image`.
    pub image: Option<String>,
    pub declared_at: Location,
}

/// Variables reef sets from an instance's fields, with the field that sets each: `env` may not
/// override them, or validation would check one thing and the gateway do another.
pub const ISOLATION_VARS: &[(&str, &str)] = &[
    ("OPENCLAW_PROFILE", "profile"),
    ("OPENCLAW_STATE_DIR", "state_dir"),
    ("OPENCLAW_CONFIG_PATH", "config_path"),
    ("OPENCLAW_GATEWAY_PORT", "port"),
    ("OPENCLAW_WORKSPACE_DIR", "workspace"),
];

/// Variables a gateway inherits from whoever started it that would point it at another
/// gateway; a supervised or manual run drops them (a running gateway sets them for its children).
pub const INHERITED_GATEWAY_VARS: &[&str] = &[
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_GATEWAY_URL",
    "OPENCLAW_GATEWAY_TOKEN",
    "OPENCLAW_SYSTEMD_UNIT",
    "OPENCLAW_LAUNCHD_LABEL",
];

/// The order the profile variables are shown in, as in OpenClaw's manual-env example.
pub const PROFILE_VARS: &[&str] = &[
    "OPENCLAW_PROFILE",
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_WORKSPACE_DIR",
];

impl Instance {
    pub fn footprint(&self) -> Result<Footprint, BaseOutOfRange> {
        Footprint::new(self.port)
    }

    /// A hash of everything that needs a restart when it changes: what runs (runtime, command,
    /// args, env), where (port, profile, state dir, config path, workspace). Policies, probes
    /// and dependencies are live fields and excluded. Stable across runs and builds.
    pub fn spec_hash(&self) -> String {
        let relevant = serde_json::json!({
            "runtime": self.runtime,
            "command": self.command,
            "args": self.args,
            "env": self.env,
            "port": self.port,
            "profile": self.profile,
            "state_dir": self.state_dir,
            "config_path": self.config_path,
            "workspace": self.workspace,
        });
        let text = serde_json::to_string(&relevant).expect("specs serialize");
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// The environment that pins this gateway to its profile: all of PROFILE, STATE_DIR and
    /// CONFIG_PATH (OPENCLAW_PROFILE alone moves nothing), the port, the workspace when it is
    /// not the state dir's default, then the instance's own `env`.
    pub fn profile_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("OPENCLAW_PROFILE".to_owned(), self.profile.clone());
        env.insert(
            "OPENCLAW_STATE_DIR".to_owned(),
            self.state_dir.display().to_string(),
        );
        env.insert(
            "OPENCLAW_CONFIG_PATH".to_owned(),
            self.config_path.display().to_string(),
        );
        env.insert("OPENCLAW_GATEWAY_PORT".to_owned(), self.port.to_string());
        if self.workspace != profile::workspace(&self.state_dir) {
            env.insert(
                "OPENCLAW_WORKSPACE_DIR".to_owned(),
                self.workspace.display().to_string(),
            );
        }
        env.extend(self.env.clone());
        env
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub policy: RestartPolicy,
    pub backoff: Backoff,
}

/// Seconds between restarts: doubled from `initial` up to `max`, back to `initial` after
/// `reset_after` seconds of health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial: f64,
    pub max: f64,
    pub reset_after: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: 0.5,
            max: 30.0,
            reset_after: 60.0,
        }
    }
}

/// Probes, in seconds. Liveness every 30 s, between Kubernetes' default (10 s) and OpenClaw's own
/// health monitor (300 s): a hung gateway is replaced within about 90 s (three failures in a
/// row), and 250 idle gateways cost reef under 0.1 % of a core. Readiness is polled
/// fast while a gateway starts (10 ms, doubling to 100 ms), within a start period long enough
/// for the real gateway (~10 s to ready).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub liveness_path: String,
    pub readiness_path: String,
    pub interval: f64,
    pub timeout: f64,
    pub start_period: f64,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            liveness_path: "/healthz".to_owned(),
            readiness_path: "/readyz".to_owned(),
            interval: 30.0,
            timeout: 2.0,
            start_period: 120.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub signal: String,
    pub timeout: f64,
}

impl Default for Stop {
    fn default() -> Stop {
        Stop {
            signal: "SIGTERM".to_owned(),
            timeout: 10.0,
        }
    }
}

/// The real gateway's own shutdown budget: it may drain for 315 s and gives itself 330 s in all
/// (shared/OPENCLAW.md, "Stop budget"); OpenClaw's unit waits as long (`TimeoutStopSec=330`).
pub const OPENCLAW_STOP_TIMEOUT: f64 = 330.0;

impl Stop {
    /// The defaults for `runtime`: the real gateway gets its own shutdown budget, so a stop never
    /// kills it while it drains; the others 10 s.
    pub fn for_runtime(runtime: Runtime) -> Stop {
        match runtime {
            Runtime::Openclaw => Stop {
                timeout: OPENCLAW_STOP_TIMEOUT,
                ..Stop::default()
            },
            Runtime::Builtin | Runtime::Command => Stop::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Browser {
    pub cdp_port: Option<i64>,
    pub cdp_url: Option<String>,
}

/// A script's resolved instances, in declaration order, and every file it loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub script: PathBuf,
    pub instances: Vec<Instance>,
    pub files: Vec<PathBuf>,
}

impl Topology {
    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|instance| instance.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Location {
        Location {
            file: "reef.lua".into(),
            line: 1,
        }
    }

    fn spec(profile: &str) -> GatewaySpec {
        GatewaySpec {
            profile: Some(profile.into()),
            ..GatewaySpec::default()
        }
    }

    #[test]
    fn the_real_gateway_gets_its_own_shutdown_budget_to_stop() {
        let mut real = spec("main");
        real.runtime = Some(Runtime::Openclaw);
        let instance = real
            .clone()
            .resolve(18789, Path::new("/h"), Path::new("/srv"), here())
            .unwrap();
        assert_eq!(instance.stop.timeout, OPENCLAW_STOP_TIMEOUT);
        real.stop = Some(StopSpec {
            timeout: Some(20.0),
            ..StopSpec::default()
        });
        let set = real
            .resolve(18789, Path::new("/h"), Path::new("/srv"), here())
            .unwrap();
        assert_eq!(set.stop.timeout, 20.0);
        let builtin = spec("main")
            .resolve(18789, Path::new("/h"), Path::new("/srv"), here())
            .unwrap();
        assert_eq!(builtin.stop.timeout, 10.0);
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let instance = spec("rescue")
            .resolve(19789, Path::new("/home/ada"), Path::new("/srv"), here())
            .unwrap();
        assert_eq!(instance.name, "rescue");
        assert_eq!(instance.state_dir, Path::new("/home/ada/.openclaw-rescue"));
        assert_eq!(
            instance.config_path,
            Path::new("/home/ada/.openclaw-rescue/openclaw.json")
        );
        assert_eq!(instance.runtime, Runtime::Builtin);
        assert_eq!(instance.restart.policy, RestartPolicy::Always);
        assert!(instance.enabled);
    }

    #[test]
    fn config_and_workspace_follow_an_overridden_state_dir() {
        let mut spec = spec("main");
        spec.state_dir = Some("state/../data/main/".into());
        let instance = spec
            .resolve(
                18789,
                Path::new("/home/ada"),
                Path::new("/srv/reef"),
                here(),
            )
            .unwrap();
        assert_eq!(instance.state_dir, Path::new("/srv/reef/data/main"));
        assert_eq!(
            instance.config_path,
            Path::new("/srv/reef/data/main/openclaw.json")
        );
        assert_eq!(
            instance.workspace,
            Path::new("/srv/reef/data/main/workspace")
        );
    }

    #[test]
    fn spec_hash_covers_what_needs_a_restart_only() {
        let base = spec("main")
            .resolve(18789, Path::new("/h"), Path::new("/s"), here())
            .unwrap();
        let moved = spec("main")
            .resolve(18900, Path::new("/h"), Path::new("/s"), here())
            .unwrap();
        assert_ne!(base.spec_hash(), moved.spec_hash());
        let mut live = base.clone();
        live.restart.policy = RestartPolicy::Never;
        live.health.interval = 9.0;
        live.depends_on = vec!["other".into()];
        live.declared_at.line = 42;
        assert_eq!(base.spec_hash(), live.spec_hash());
        let mut env = base.clone();
        env.env.insert("A".into(), "1".into());
        assert_ne!(base.spec_hash(), env.spec_hash());
        assert_eq!(base.spec_hash().len(), 16);
    }

    #[test]
    fn tilde_means_home() {
        let mut spec = spec("main");
        spec.workspace = Some("~/work".into());
        let instance = spec
            .resolve(18789, Path::new("/home/ada"), Path::new("/srv"), here())
            .unwrap();
        assert_eq!(instance.workspace, Path::new("/home/ada/work"));
    }

    #[test]
    fn missing_profile_is_a_field_error() {
        let err = GatewaySpec::default()
            .resolve(18789, Path::new("/h"), Path::new("/s"), here())
            .unwrap_err();
        assert_eq!(err.field, "profile");
    }

    #[test]
    fn command_implies_runtime_command_and_builtin_refuses_it() {
        let mut spec = spec("x");
        spec.command = Some(OneOrMany::Many(vec!["/bin/true".into()]));
        let instance = spec
            .clone()
            .resolve(20000, Path::new("/h"), Path::new("/s"), here())
            .unwrap();
        assert_eq!(instance.runtime, Runtime::Command);
        spec.runtime = Some(Runtime::Builtin);
        let err = spec
            .resolve(20000, Path::new("/h"), Path::new("/s"), here())
            .unwrap_err();
        assert_eq!(err.field, "command");
    }

    #[test]
    fn merge_keeps_nested_defaults_and_merges_env() {
        let defaults = GatewaySpec {
            env: Some([("A".into(), "1".into()), ("B".into(), "1".into())].into()),
            restart: Some(RestartSpec {
                policy: Some(RestartPolicy::OnFailure),
                backoff: Some(BackoffSpec {
                    initial: Some(2.0),
                    ..BackoffSpec::default()
                }),
            }),
            ..GatewaySpec::default()
        };
        let own = GatewaySpec {
            env: Some([("B".into(), "2".into())].into()),
            restart: Some(RestartSpec {
                policy: Some(RestartPolicy::Never),
                backoff: None,
            }),
            ..spec("x")
        };
        let merged = own.merged_over(&defaults);
        let env = merged.env.unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "2");
        let restart = merged.restart.unwrap();
        assert_eq!(restart.policy, Some(RestartPolicy::Never));
        assert_eq!(restart.backoff.unwrap().initial, Some(2.0));
    }

    #[test]
    fn defaults_refuse_identity_fields_and_pinned_ports() {
        assert_eq!(spec("x").check_as_defaults().unwrap_err().field, "profile");
        let pinned = GatewaySpec {
            port: Some(PortSpec::Number(18789)),
            ..GatewaySpec::default()
        };
        assert_eq!(pinned.check_as_defaults().unwrap_err().field, "port");
        let auto = GatewaySpec {
            port: Some(PortSpec::Auto),
            ..GatewaySpec::default()
        };
        assert!(auto.check_as_defaults().is_ok());
    }

    #[test]
    fn bad_durations_and_signals_name_their_field() {
        let mut bad = spec("x");
        bad.stop = Some(StopSpec {
            signal: Some("SIGFOO".into()),
            timeout: None,
        });
        let err = bad
            .resolve(20000, Path::new("/h"), Path::new("/s"), here())
            .unwrap_err();
        assert_eq!(err.field, "stop.signal");

        let mut bad = spec("x");
        bad.health = Some(HealthSpec {
            interval: Some(-1.0),
            ..HealthSpec::default()
        });
        let err = bad
            .resolve(20000, Path::new("/h"), Path::new("/s"), here())
            .unwrap_err();
        assert_eq!(err.field, "health.interval");

        let mut ok = spec("x");
        ok.stop = Some(StopSpec {
            signal: Some("int".into()),
            timeout: Some(3.0),
        });
        let instance = ok
            .resolve(20000, Path::new("/h"), Path::new("/s"), here())
            .unwrap();
        assert_eq!(instance.stop.signal, "SIGINT");
    }
}
