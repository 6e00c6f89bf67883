//! `reef setup`: the state dirs and minimal configs a topology's gateways need to start.
//!
//! Never overwrites: an existing config is left as it is (and checked against the plan's port).
//! Never writes through a symbolic link either, unless told to: a state dir or config path that
//! is a link may point into another instance's, or another user's, files.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::topology::Instance;

/// What setup did for one instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    pub name: String,
    pub created_state_dir: bool,
    pub wrote_config: bool,
    /// Something the user should know (e.g. an existing config pins another port).
    pub note: Option<String>,
}

/// The minimal config that starts a gateway cleanly offline (shared/OPENCLAW.md): local mode,
/// loopback, the plan's port, a pinned token, no mDNS, no update check, a per-instance log file.
pub fn minimal_config(instance: &Instance, token: &str) -> serde_json::Value {
    serde_json::json!({
        "gateway": {
            "mode": "local",
            "bind": "loopback",
            "port": instance.port,
            "auth": { "mode": "token", "token": token },
        },
        "discovery": { "mdns": { "mode": "off" } },
        "update": { "checkOnStart": false },
        "logging": { "file": instance.state_dir.join("logs").join("gateway.log") },
    })
}

/// A random token: 32 hex digits from the OS's generator.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("cannot get random bytes: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How `reef setup` treats what it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetupOptions {
    /// Use a state dir, config dir or config path that is a symbolic link (refused otherwise).
    pub allow_symlinks: bool,
}

/// A path setup would use is a symbolic link, and links were not allowed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {} is a symbolic link{}; reef setup does not write through links, which can point into another instance's or user's files: point the topology at the real directory, or pass --allow-symlinks if the link is intended",
    path.display(),
    target.as_ref().map(|t| format!(" (to {})", t.display())).unwrap_or_default()
)]
pub struct LinkRefused {
    pub what: &'static str,
    pub path: PathBuf,
    pub target: Option<PathBuf>,
}

/// Creates what is missing for `instance`, refusing symbolic links.
pub fn set_up(instance: &Instance) -> Result<SetupReport> {
    set_up_with(instance, &SetupOptions::default())
}

/// Creates what is missing for `instance`, as `options` say.
pub fn set_up_with(instance: &Instance, options: &SetupOptions) -> Result<SetupReport> {
    if !options.allow_symlinks {
        refuse_links(instance)?;
    }
    let mut report = SetupReport {
        name: instance.name.clone(),
        created_state_dir: false,
        wrote_config: false,
        note: None,
    };
    if !instance.state_dir.exists() {
        create_private_dir(&instance.state_dir)?;
        report.created_state_dir = true;
    }
    if let Some(parent) = instance.config_path.parent()
        && !parent.exists()
    {
        create_private_dir(parent)?;
    }
    let config = serde_json::to_string_pretty(&minimal_config(instance, &random_token()?))? + "\n";
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&instance.config_path)
    {
        Ok(mut file) => {
            file.write_all(config.as_bytes())
                .with_context(|| format!("cannot write {}", instance.config_path.display()))?;
            report.wrote_config = true;
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            report.note = existing_config_note(instance, &instance.config_path);
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot create {}", instance.config_path.display()));
        }
    }
    Ok(report)
}

/// The state dir, the config's dir and the config itself, none of which may be a link.
fn refuse_links(instance: &Instance) -> Result<(), LinkRefused> {
    let config_dir = instance
        .config_path
        .parent()
        .filter(|dir| *dir != instance.state_dir);
    let paths = [
        Some(("state dir", instance.state_dir.as_path())),
        config_dir.map(|dir| ("config dir", dir)),
        Some(("config", instance.config_path.as_path())),
    ];
    for (what, path) in paths.into_iter().flatten() {
        let is_link =
            std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink());
        if is_link {
            return Err(LinkRefused {
                what,
                path: path.to_owned(),
                target: std::fs::read_link(path).ok(),
            });
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// A remark about an existing config that disagrees with the plan, if it does.
fn existing_config_note(instance: &Instance, path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let Ok(config) = json5::from_str::<serde_json::Value>(&text) else {
        return Some(format!(
            "{} is not valid JSON5: the gateway will exit 78 until it is fixed",
            path.display()
        ));
    };
    let pinned = config
        .pointer("/gateway/port")
        .and_then(serde_json::Value::as_i64);
    match pinned {
        Some(port) if port != instance.port => Some(format!(
            "{} pins gateway.port {port}, the plan says {}; reef passes --port {}, but `openclaw --profile {} health` reads the file",
            path.display(),
            instance.port,
            instance.port,
            instance.profile
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::topology::{GatewaySpec, Location};

    fn instance(home: &Path) -> Instance {
        GatewaySpec {
            profile: Some("main".into()),
            ..GatewaySpec::default()
        }
        .resolve(
            18789,
            home,
            home,
            Location {
                file: "reef.lua".into(),
                line: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn writes_a_private_minimal_config_once() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        let first = set_up(&instance).unwrap();
        assert!(first.created_state_dir && first.wrote_config);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&instance.state_dir), 0o700);
        assert_eq!(mode(&instance.config_path), 0o600);
        let written = std::fs::read_to_string(&instance.config_path).unwrap();
        let config: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(config["gateway"]["mode"], "local");
        assert_eq!(config["gateway"]["port"], 18789);
        assert_eq!(
            config["gateway"]["auth"]["token"].as_str().unwrap().len(),
            32
        );

        let second = set_up(&instance).unwrap();
        assert!(!second.created_state_dir && !second.wrote_config);
        assert_eq!(
            std::fs::read_to_string(&instance.config_path).unwrap(),
            written
        );
    }

    #[test]
    fn a_linked_state_dir_is_refused_unless_allowed() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        let real = home.path().join("real-state");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &instance.state_dir).unwrap();
        let err = set_up(&instance).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains(&instance.state_dir.display().to_string())
                && message.contains(&real.display().to_string())
                && message.contains("--allow-symlinks"),
            "{message}"
        );
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

        let allowed = SetupOptions {
            allow_symlinks: true,
        };
        let report = set_up_with(&instance, &allowed).unwrap();
        assert!(report.wrote_config && !report.created_state_dir);
        assert!(real.join("openclaw.json").is_file());
    }

    #[test]
    fn a_linked_config_is_refused_and_never_written_through() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        std::fs::create_dir_all(&instance.state_dir).unwrap();
        let victim = home.path().join("victim.json");
        std::fs::write(&victim, "{}").unwrap();
        std::os::unix::fs::symlink(&victim, &instance.config_path).unwrap();
        let message = format!("{:#}", set_up(&instance).unwrap_err());
        assert!(
            message.contains("config ") && message.contains("symbolic link"),
            "{message}"
        );
        let allowed = SetupOptions {
            allow_symlinks: true,
        };
        let report = set_up_with(&instance, &allowed).unwrap();
        assert!(!report.wrote_config);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
    }

    #[test]
    fn an_existing_config_with_another_port_is_noted() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        std::fs::create_dir_all(&instance.state_dir).unwrap();
        std::fs::write(&instance.config_path, "{ gateway: { port: 19000 } }").unwrap();
        let report = set_up(&instance).unwrap();
        assert!(report.note.unwrap().contains("pins gateway.port 19000"));
    }
}
