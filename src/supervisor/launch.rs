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
    config: Option<&serde_json::Value>,
) -> Launch {
    let mut env: BTreeMap<String, String> = inherited
        .iter()
        .filter(|(key, _)| is_passed_through(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(gateway_env(instance));
    Launch {
        argv: argv(instance, binaries, config),
        env,
        cwd: instance.state_dir.clone(),
    }
}

/// What `reef up` runs for `instance`: [`describe`] with `openclaw` left to the gateway's PATH.
/// `reef_binary` runs the built-in gateway; `inherited` is reef's own environment; `config` is
/// the instance's parsed config, if any.
pub fn launch(
    instance: &Instance,
    reef_binary: &Path,
    inherited: &BTreeMap<String, String>,
    config: Option<&serde_json::Value>,
) -> Launch {
    describe(instance, &Binaries::new(reef_binary), inherited, config)
}

/// The command line of `instance`. The real gateway gets `--allow-unconfigured` when its config
/// lacks `gateway.mode` and `--bind loopback` when it lacks `gateway.bind` (shared/OPENCLAW.md,
/// "Running it as a supervised child"); the instance's `args` come last.
pub fn argv(
    instance: &Instance,
    binaries: &Binaries,
    config: Option<&serde_json::Value>,
) -> Vec<String> {
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
            let gateway = config.and_then(|c| c.get("gateway"));
            if gateway.and_then(|g| g.get("mode")).is_none() {
                argv.push("--allow-unconfigured".into());
            }
            if gateway.and_then(|g| g.get("bind")).is_none() {
                argv.extend(["--bind".into(), "loopback".into()]);
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

/// The instance's config as the gateway will read it (JSON5), if it exists and parses.
pub fn read_config(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    json5::from_str(&text).ok()
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
        let config = serde_json::json!({ "gateway": { "mode": "local", "bind": "loopback" } });
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
    fn configs_are_read_as_json5_and_missing_or_broken_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openclaw.json");
        assert_eq!(read_config(&path), None);
        std::fs::write(&path, "{ gateway: { mode: 'local' }, // comment\n }").unwrap();
        assert_eq!(
            read_config(&path),
            Some(serde_json::json!({ "gateway": { "mode": "local" } }))
        );
        std::fs::write(&path, "{ gateway: ").unwrap();
        assert_eq!(read_config(&path), None);
    }
}
