//! What a gateway process is started with, and the signals that stop its whole process group.
//!
//! [`describe`] is the one place an instance's command line, environment and working directory
//! are decided. It is pure: the caller says where the programs are ([`Binaries`]), what reef's
//! own environment is, and what the instance's config holds (read with [`read_config`]). Every
//! consumer takes its launch from here so they cannot drift:
//! - `reef up` spawns exactly [`launch`]'s argv, env and cwd;
//! - `reef env` prints that same launch for a manual run;
//! - `reef install` / `reef export` write its argv and [`gateway_env`] into units and agents, and
//!   [`gateway_env`] of the instance moved into the image's paths into containers.
//!
//! The environment is built from scratch: a short list of host variables is passed through
//! ([`is_passed_through`]), then the gateway's own variables ([`gateway_env`]). Everything else
//! is dropped, so a gateway never inherits another gateway's selectors (shared/OPENCLAW.md:
//! "build a child's environment from scratch"). The supervisor adds its marker variables
//! (`host::markers`) to each spawn on top: they name one spawn, not the instance, so they are
//! not part of the launch and a gateway run by hand never carries them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::gateway_config::{self, ConfigError, GatewaySettings};
use crate::topology::{Instance, Runtime};

/// Variables passed through from reef's own environment; everything else is dropped, so a
/// gateway never inherits another gateway's selectors (OPENCLAW_GATEWAY_PORT and friends).
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Prefixes of the variables that select a gateway, its paths or its credentials: OpenClaw's
/// own, and the legacy names (Clawdbot, Moltbot) it still reads as fallbacks. None of them is
/// ever passed through; `reef env` unsets those a caller's shell holds and the launch does not
/// set.
const SELECTOR_PREFIXES: &[&str] = &["OPENCLAW_", "CLAWDBOT_", "MOLTBOT_", MARKER_PREFIX];

/// reef's own process markers (`REEF_TOPOLOGY`, `REEF_INSTANCE`, `REEF_SPAWN`): a gateway started
/// by hand from a shell that holds them (inside a `reef.exec` hook, say) must not pass for one
/// of reef's.
const MARKER_PREFIX: &str = "REEF_";

/// Whether reef passes `key` from its own environment to every gateway (PATH, HOME, LANG,
/// `LC_*`, proxies, CA certificates...).
pub fn is_passed_through(key: &str) -> bool {
    PASSED_THROUGH.contains(&key) || key.starts_with("LC_")
}

/// Whether `key` selects a gateway (OPENCLAW_GATEWAY_PORT, OPENCLAW_STATE_DIR, ...): inherited
/// ones point at another gateway and are dropped.
pub fn is_gateway_selector(key: &str) -> bool {
    SELECTOR_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Where the programs an instance may run live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// reef's own binary: runs `reef gateway` for runtime builtin.
    pub reef: PathBuf,
    /// `openclaw` for runtime openclaw without a `command`; `None`: the bare name, found on the
    /// gateway's PATH when it starts.
    pub openclaw: Option<PathBuf>,
}

impl Binaries {
    /// reef's binary, with `openclaw` left to the gateway's PATH (what `reef up` runs).
    pub fn new(reef: impl Into<PathBuf>) -> Binaries {
        Binaries {
            reef: reef.into(),
            openclaw: None,
        }
    }

    /// reef's binary and `openclaw` resolved on `path` (a PATH value), for service files that
    /// run under another PATH. Reads the filesystem.
    pub fn resolving_openclaw(reef: impl Into<PathBuf>, path: Option<&str>) -> Binaries {
        let openclaw = path.and_then(|path| {
            std::env::split_paths(path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join("openclaw"))
                .find(|candidate| is_executable(candidate))
        });
        Binaries {
            reef: reef.into(),
            openclaw,
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// How to start one instance: the program and its arguments, the whole environment (nothing
/// else is inherited), and the working directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// The launch of `instance`: [`argv`], the passed-through part of `inherited` (reef's own
/// environment) overlaid with [`gateway_env`], and the state dir as the working directory.
/// With an empty `inherited`, `env` is exactly [`gateway_env`]. Pure.
pub fn describe(
    instance: &Instance,
    binaries: &Binaries,
    inherited: &BTreeMap<String, String>,
    config: Option<&Config>,
) -> Launch {
    Launch {
        argv: argv(instance, binaries, config),
        env: environment(instance, inherited),
        cwd: instance.state_dir.clone(),
    }
}

/// What `reef up` runs for `instance`: [`describe`] with `openclaw` left to the gateway's PATH.
/// `reef_binary` runs the built-in gateway; `inherited` is reef's own environment; `config` is
/// what reef knows of the instance's config ([`read_config`]).
pub fn launch(
    instance: &Instance,
    reef_binary: &Path,
    inherited: &BTreeMap<String, String>,
    config: Option<&Config>,
) -> Launch {
    describe(instance, &Binaries::new(reef_binary), inherited, config)
}

/// What reef knows of an instance's config for its launch: `None`, no file (the gateway starts
/// without one); else its settings, or why reef cannot resolve them.
pub type Config = Result<GatewaySettings, ConfigError>;

/// A flag reef adds to the real gateway's command line, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedFlag {
    pub flag: &'static [&'static str],
    pub reason: &'static str,
}

/// The flags the real gateway needs for what its resolved config lacks (shared/OPENCLAW.md,
/// "Running it as a supervised child"): `--allow-unconfigured` without `gateway.mode`,
/// `--bind loopback` without `gateway.bind`. A config reef cannot resolve gets none: reef never
/// overrides a setting it cannot see (the gateway reports the config itself).
pub fn added_flags(config: Option<&Config>) -> Vec<AddedFlag> {
    let (mode, bind) = match config {
        None => (None, None),
        Some(Ok(settings)) => (settings.mode.as_deref(), settings.bind.as_deref()),
        Some(Err(_)) => return Vec::new(),
    };
    let no_file = config.is_none();
    let mut flags = Vec::new();
    if mode.is_none() {
        flags.push(AddedFlag {
            flag: &["--allow-unconfigured"],
            reason: if no_file {
                "there is no config file"
            } else {
                "the config sets no gateway.mode"
            },
        });
    }
    if bind.is_none() {
        flags.push(AddedFlag {
            flag: &["--bind", "loopback"],
            reason: if no_file {
                "there is no config file"
            } else {
                "the config sets no gateway.bind"
            },
        });
    }
    flags
}

/// The command line of `instance`. The real gateway gets the [`added_flags`] its config
/// needs; the instance's `args` come last.
pub fn argv(instance: &Instance, binaries: &Binaries, config: Option<&Config>) -> Vec<String> {
    let port = instance.port.to_string();
    let mut argv: Vec<String> = match instance.runtime {
        Runtime::Builtin => vec![
            binaries.reef.display().to_string(),
            "gateway".into(),
            "--port".into(),
            port,
        ],
        Runtime::Openclaw => {
            let mut argv = instance.command.clone().unwrap_or_else(|| {
                vec![
                    binaries
                        .openclaw
                        .as_ref()
                        .map(|path| path.display().to_string())
                        .unwrap_or_else(|| "openclaw".into()),
                ]
            });
            argv.extend(["gateway".into(), "--port".into(), port]);
            for added in added_flags(config) {
                argv.extend(added.flag.iter().map(|word| (*word).to_owned()));
            }
            argv
        }
        Runtime::Command => instance.command.clone().unwrap_or_default(),
    };
    argv.extend(instance.args.iter().cloned());
    argv
}

/// The gateway's own variables, wherever it runs: never self-respawn detached and no Bonjour
/// (shared/OPENCLAW.md, supervised use), then the profile pins and the instance's `env`
/// ([`Instance::profile_env`]). No host variable and no secret.
pub fn gateway_env(instance: &Instance) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("OPENCLAW_NO_RESPAWN".to_owned(), "1".to_owned()),
        ("OPENCLAW_DISABLE_BONJOUR".to_owned(), "1".to_owned()),
    ]);
    env.extend(instance.profile_env());
    env
}

/// The selector variables of `inherited` that `launch` drops: what a shell must unset to run
/// the launch by hand (OPENCLAW_GATEWAY_TOKEN of another gateway, say). Sorted.
pub fn dropped_selectors(inherited: &BTreeMap<String, String>, launch: &Launch) -> Vec<String> {
    inherited
        .keys()
        .filter(|key| is_gateway_selector(key) && !launch.env.contains_key(*key))
        .cloned()
        .collect()
}

/// The environment the gateway resolves its config in: the passed-through part of `inherited`
/// and the gateway's own variables (what [`describe`] gives it).
pub fn environment(
    instance: &Instance,
    inherited: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = inherited
        .iter()
        .filter(|(key, _)| is_passed_through(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(gateway_env(instance));
    env
}

/// The instance's config as the gateway will resolve it ([`gateway_config::resolve`] in the
/// gateway's environment): `None` when there is no file. Reads the filesystem.
pub fn read_config(instance: &Instance, inherited: &BTreeMap<String, String>) -> Option<Config> {
    let env = environment(instance, inherited);
    match gateway_config::resolve(&instance.config_path, &env) {
        Ok(None) => None,
        Ok(Some(resolved)) => Some(GatewaySettings::of(&resolved)),
        Err(err) => Some(Err(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::topology::OneOrMany;

    use crate::export::testing::instance;

    fn inherited() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/ada"),
            ("LC_ALL", "C.UTF-8"),
            ("OPENCLAW_GATEWAY_PORT", "1111"),
            ("OPENCLAW_GATEWAY_TOKEN", "secret"),
            ("OPENCLAW_STATE_DIR", "/elsewhere"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn environment_is_built_from_scratch() {
        let launch = launch(
            &instance(|_| {}),
            Path::new("/bin/reef"),
            &inherited(),
            None,
        );
        assert_eq!(launch.argv, ["/bin/reef", "gateway", "--port", "18789"]);
        let env = &launch.env;
        assert_eq!(env["OPENCLAW_PROFILE"], "main");
        assert_eq!(env["OPENCLAW_STATE_DIR"], "/home/ada/.openclaw-main");
        assert_eq!(
            env["OPENCLAW_CONFIG_PATH"],
            "/home/ada/.openclaw-main/openclaw.json"
        );
        assert_eq!(env["OPENCLAW_GATEWAY_PORT"], "18789");
        assert_eq!(env["OPENCLAW_NO_RESPAWN"], "1");
        assert_eq!(env["OPENCLAW_DISABLE_BONJOUR"], "1");
        assert_eq!(env["PATH"], "/usr/bin");
        assert_eq!(env["LC_ALL"], "C.UTF-8");
        assert!(!env.contains_key("OPENCLAW_GATEWAY_TOKEN"));
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn openclaw_gets_the_flags_its_config_lacks() {
        let real = instance(|s| s.runtime = Some(Runtime::Openclaw));
        let bare = launch(&real, Path::new("/bin/reef"), &inherited(), None);
        assert_eq!(
            bare.argv,
            [
                "openclaw",
                "gateway",
                "--port",
                "18789",
                "--allow-unconfigured",
                "--bind",
                "loopback"
            ]
        );
        let config: Config = Ok(GatewaySettings {
            mode: Some("local".into()),
            bind: Some("loopback".into()),
            ..GatewaySettings::default()
        });
        let configured = launch(&real, Path::new("/bin/reef"), &inherited(), Some(&config));
        assert_eq!(configured.argv, ["openclaw", "gateway", "--port", "18789"]);

        let pinned = instance(|s| {
            s.runtime = Some(Runtime::Openclaw);
            s.command = Some(OneOrMany::Many(vec![
                "/opt/node".into(),
                "/opt/openclaw.mjs".into(),
            ]));
            s.args = Some(vec!["--verbose".into()]);
        });
        let pinned = launch(&pinned, Path::new("/bin/reef"), &inherited(), Some(&config));
        assert_eq!(
            pinned.argv,
            [
                "/opt/node",
                "/opt/openclaw.mjs",
                "gateway",
                "--port",
                "18789",
                "--verbose"
            ]
        );
    }

    #[test]
    fn without_inherited_variables_the_environment_is_the_gateways_own() {
        let instance = instance(|s| {
            s.env = Some(BTreeMap::from([("TZ".to_owned(), "UTC".to_owned())]));
        });
        let bare = describe(
            &instance,
            &Binaries::new("/bin/reef"),
            &BTreeMap::new(),
            None,
        );
        assert_eq!(bare.env, gateway_env(&instance));
        assert_eq!(bare.cwd, Path::new("/home/ada/.openclaw-main"));
        // The instance's own value wins over a passed-through one.
        let full = launch(&instance, Path::new("/bin/reef"), &inherited(), None);
        assert_eq!(full.env["TZ"], "UTC");
        let gateway = gateway_env(&instance);
        for (key, value) in &full.env {
            assert!(
                gateway.get(key) == Some(value) || is_passed_through(key),
                "{key} comes from nowhere"
            );
        }
    }

    #[test]
    fn a_resolved_openclaw_replaces_the_bare_name() {
        let real = instance(|s| s.runtime = Some(Runtime::Openclaw));
        let binaries = Binaries {
            reef: "/bin/reef".into(),
            openclaw: Some("/opt/bin/openclaw".into()),
        };
        let resolved = describe(&real, &binaries, &inherited(), None);
        assert_eq!(resolved.argv[0], "/opt/bin/openclaw");
        let bare = launch(&real, Path::new("/bin/reef"), &inherited(), None);
        assert_eq!(bare.argv[0], "openclaw");
        assert_eq!(resolved.argv[1..], bare.argv[1..]);
    }

    #[test]
    fn inherited_selectors_that_the_launch_does_not_set_are_dropped() {
        let mut inherited = inherited();
        inherited.insert("CLAWDBOT_GATEWAY_TOKEN".into(), "legacy".into());
        let launch = launch(&instance(|_| {}), Path::new("/bin/reef"), &inherited, None);
        // OPENCLAW_GATEWAY_PORT and OPENCLAW_STATE_DIR are set by the launch itself.
        assert_eq!(
            dropped_selectors(&inherited, &launch),
            ["CLAWDBOT_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_TOKEN"]
        );
        for var in crate::topology::INHERITED_GATEWAY_VARS {
            assert!(is_gateway_selector(var) && !is_passed_through(var), "{var}");
        }
    }

    #[test]
    fn a_setting_reef_cannot_see_is_never_overridden() {
        let real = instance(|s| s.runtime = Some(Runtime::Openclaw));
        let custom: Config = Ok(GatewaySettings {
            mode: Some("local".into()),
            bind: Some("custom".into()),
            custom_bind_host: Some("127.0.0.2".into()),
            ..GatewaySettings::default()
        });
        let argv = launch(&real, Path::new("/bin/reef"), &inherited(), Some(&custom)).argv;
        assert_eq!(argv, ["openclaw", "gateway", "--port", "18789"]);
        let mode_only: Config = Ok(GatewaySettings {
            mode: Some("local".into()),
            ..GatewaySettings::default()
        });
        assert_eq!(
            added_flags(Some(&mode_only)),
            [AddedFlag {
                flag: &["--bind", "loopback"],
                reason: "the config sets no gateway.bind"
            }]
        );
        // A config reef cannot resolve: no flag at all, whatever it may hold.
        let unresolvable: Config = Err(ConfigError::Unresolved {
            file: "/c/openclaw.json".into(),
            key: "gateway.bind".into(),
            var: "BIND".into(),
        });
        let argv = launch(
            &real,
            Path::new("/bin/reef"),
            &inherited(),
            Some(&unresolvable),
        )
        .argv;
        assert_eq!(argv, ["openclaw", "gateway", "--port", "18789"]);
    }

    #[test]
    fn configs_are_resolved_in_the_gateways_environment() {
        let dir = tempfile::tempdir().unwrap();
        let instance = instance(|s| {
            s.config_path = Some(dir.path().join("openclaw.json").display().to_string());
            s.env = Some(BTreeMap::from([("BIND".to_owned(), "lan".to_owned())]));
        });
        assert!(read_config(&instance, &inherited()).is_none());
        std::fs::write(
            &instance.config_path,
            "{ gateway: { $include: './g.json5' }, // comment\n }",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("g.json5"),
            "{ mode: 'local', bind: '${BIND}' }",
        )
        .unwrap();
        let settings = read_config(&instance, &inherited()).unwrap().unwrap();
        assert_eq!(settings.mode.as_deref(), Some("local"));
        assert_eq!(settings.bind.as_deref(), Some("lan"));
        std::fs::write(&instance.config_path, "{ gateway: ").unwrap();
        assert!(read_config(&instance, &inherited()).unwrap().is_err());
    }
}
