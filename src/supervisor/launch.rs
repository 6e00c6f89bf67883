//! What a gateway process is started with: argv and an environment built from scratch, and the
//! signals that stop its whole process group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

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

/// How to start one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
}

/// The command line and environment for `instance`. `reef_binary` runs the built-in gateway;
/// `inherited` is reef's own environment; `config` is the instance's parsed config, if any.
pub fn launch(
    instance: &Instance,
    reef_binary: &Path,
    inherited: &BTreeMap<String, String>,
    config: Option<&serde_json::Value>,
) -> Launch {
    let port = instance.port.to_string();
    let mut argv: Vec<String> = match instance.runtime {
        Runtime::Builtin => vec![
            reef_binary.display().to_string(),
            "gateway".into(),
            "--port".into(),
            port.clone(),
        ],
        Runtime::Openclaw => {
            let mut argv = instance
                .command
                .clone()
                .unwrap_or_else(|| vec!["openclaw".into()]);
            argv.extend(["gateway".into(), "--port".into(), port.clone()]);
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

    let mut env: BTreeMap<String, String> = inherited
        .iter()
        .filter(|(key, _)| PASSED_THROUGH.contains(&key.as_str()) || key.starts_with("LC_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("OPENCLAW_NO_RESPAWN".into(), "1".into());
    env.insert("OPENCLAW_DISABLE_BONJOUR".into(), "1".into());
    env.extend(instance.profile_env());

    Launch {
        argv,
        env,
        cwd: instance.state_dir.clone(),
    }
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is fine.
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::killpg(Pid::from_raw(raw), signal);
}

/// Whether any process of the group led by `pid` is still alive (zombies do not count).
pub fn group_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::killpg(Pid::from_raw(raw), None).is_ok()
        && crate::process::group_has_live_members(pid)
}

/// Parses a signal name as written in a topology (`SIGTERM`).
pub fn parse_signal(name: &str) -> Signal {
    name.parse().unwrap_or(Signal::SIGTERM)
}

/// "exit code 1", "signal 9 (SIGKILL)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("signal {signal} ({name})"),
            Err(_) => format!("signal {signal}"),
        },
        _ => "unknown exit".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::topology::{GatewaySpec, Location, OneOrMany};

    fn instance(edit: impl FnOnce(&mut GatewaySpec)) -> Instance {
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
        .unwrap()
    }

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
}
