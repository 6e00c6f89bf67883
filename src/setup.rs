//! `reef setup`: the state dirs and configs a topology's gateways need to start.
//!
//! For runtime `openclaw` with the program at hand, OpenClaw itself lays the state dir out
//! (`openclaw --profile X setup --baseline`: config, workspace and its bootstrap files, session
//! folders); otherwise reef writes a minimal config. Then the keys the CLI and a supervised
//! start need and a baseline lacks are filled in: `gateway.port` (the plan's), `gateway.mode`
//! and a pinned token. Never overwrites: a key that is set keeps its value (a port other than
//! the plan's is reported; `reef up` brings it in line when it starts the gateway), and an edit
//! keeps the file's comments ([`gateway_config::set`]). Never writes through a symbolic link
//! either, unless told to: a state dir or config path that is a link may point into another
//! instance's, or another user's, files.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::gateway_config::{self, GatewaySettings};
use crate::topology::{Instance, Runtime};

/// What setup did for one instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    pub name: String,
    pub created_state_dir: bool,
    pub wrote_config: bool,
    /// `openclaw setup --baseline` laid the state dir out.
    pub baseline: bool,
    /// Keys added to a config that lacked them (`gateway.port`, `gateway.mode`,
    /// `gateway.auth.token`).
    pub added: Vec<String>,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupOptions {
    /// Use a state dir, config dir or config path that is a symbolic link (refused otherwise).
    pub allow_symlinks: bool,
    /// The command that runs `openclaw` for runtime openclaw instances without a `command`
    /// (`None`: not found; reef writes its minimal config instead of OpenClaw's baseline).
    pub openclaw: Option<Vec<String>>,
    /// The environment the baseline runs in (reef's own; the gateway's variables are set on
    /// top, as for a launch).
    pub inherited: std::collections::BTreeMap<String, String>,
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
        baseline: false,
        added: Vec::new(),
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
    let mut notes = Vec::new();
    if !instance.config_path.exists()
        && let Some(program) = baseline_program(instance, options)
    {
        match run_baseline(instance, &program, &options.inherited) {
            Ok(()) => report.baseline = instance.config_path.exists(),
            // OpenClaw that cannot run here (an old Node, say): reef's minimal config still
            // starts the gateway once the program is fixed.
            Err(err) => notes.push(format!("{err:#}; wrote reef's minimal config instead")),
        }
    }
    if !report.baseline {
        let config =
            serde_json::to_string_pretty(&minimal_config(instance, &random_token()?))? + "\n";
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
                report.note = (!notes.is_empty()).then(|| notes.join("; "));
                return Ok(report);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot create {}", instance.config_path.display()));
            }
        }
    }
    let (added, note) = fill_missing(instance, &options.inherited)?;
    report.added = added;
    notes.extend(note);
    report.note = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(report)
}

/// The program that lays out OpenClaw's baseline for `instance`, if it runs the real gateway
/// and the program is at hand.
fn baseline_program(instance: &Instance, options: &SetupOptions) -> Option<Vec<String>> {
    if instance.runtime != Runtime::Openclaw {
        return None;
    }
    instance
        .command
        .clone()
        .or_else(|| options.openclaw.clone())
}

/// `openclaw --profile X setup --baseline` in the gateway's environment: OpenClaw's own
/// config, workspace and session folders, without onboarding questions (no port, no token).
fn run_baseline(
    instance: &Instance,
    program: &[String],
    inherited: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let env = crate::supervisor::launch::environment(instance, inherited);
    let output = std::process::Command::new(&program[0])
        .args(&program[1..])
        .args(["--profile", &instance.profile, "setup", "--baseline"])
        .env_clear()
        .envs(&env)
        .current_dir(&instance.state_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", program[0]))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let said = stderr
            .trim()
            .lines()
            .chain(stdout.trim().lines())
            .last()
            .unwrap_or("");
        anyhow::bail!(
            "`{} --profile {} setup --baseline` failed ({}): {said}",
            program.join(" "),
            instance.profile,
            output.status
        );
    }
    // The baseline holds no secret yet, but the token reef pins next goes into it.
    use std::os::unix::fs::PermissionsExt;
    if instance.config_path.exists() {
        std::fs::set_permissions(
            &instance.config_path,
            std::fs::Permissions::from_mode(0o600),
        )
        .with_context(|| format!("cannot make {} private", instance.config_path.display()))?;
    }
    Ok(())
}

/// Adds to an existing config the keys a supervised gateway and the CLI need and it lacks:
/// the plan's port, local mode, loopback bind and a pinned token (unless another auth mode is
/// chosen). Keys
/// that are set keep their values; a port other than the plan's is noted.
fn fill_missing(
    instance: &Instance,
    inherited: &std::collections::BTreeMap<String, String>,
) -> Result<(Vec<String>, Option<String>)> {
    let env = crate::supervisor::launch::environment(instance, inherited);
    let path = &instance.config_path;
    let resolved = match gateway_config::resolve(path, &env) {
        Ok(Some(resolved)) => resolved,
        Ok(None) => return Ok((Vec::new(), None)),
        Err(err) => {
            return Ok((
                Vec::new(),
                Some(format!("{err}; the gateway will exit 78 until it is fixed")),
            ));
        }
    };
    let settings = match GatewaySettings::of(&resolved) {
        Ok(settings) => settings,
        Err(err) => return Ok((Vec::new(), Some(format!("{err}; nothing was added")))),
    };
    let auth_mode = resolved
        .get("gateway.auth.mode")
        .and_then(serde_json::Value::as_str);
    // Password auth (in the config or the gateway's environment) is the user's choice: no
    // token is added beside it, and the auth mode is never written.
    let password = settings.has_password
        || env
            .get("OPENCLAW_GATEWAY_PASSWORD")
            .is_some_and(|p| !p.is_empty());
    let token_from_env = env
        .get("OPENCLAW_GATEWAY_TOKEN")
        .is_some_and(|t| !t.is_empty());
    let mut missing: Vec<(&str, serde_json::Value)> = Vec::new();
    if settings.port.is_none() {
        missing.push(("gateway.port", instance.port.into()));
    }
    if settings.mode.is_none() {
        missing.push(("gateway.mode", "local".into()));
    }
    // What `reef up` would otherwise pass as `--bind loopback`: in the file, the CLI, a unit
    // and a manual run all agree.
    if settings.bind.is_none() {
        missing.push(("gateway.bind", "loopback".into()));
    }
    if !settings.has_token
        && !password
        && !token_from_env
        && auth_mode.is_none_or(|mode| mode == "token")
    {
        missing.push(("gateway.auth.token", random_token()?.into()));
    }
    let mut added = Vec::new();
    let mut refused = Vec::new();
    for (key, value) in missing {
        match gateway_config::set(path, key, &value) {
            Ok(edit) => {
                if key == "gateway.auth.token" {
                    make_private(&edit.file)?;
                }
                added.push(key.to_owned());
            }
            Err(err) => refused.push(format!("{key} was not added: {err}")),
        }
    }
    let note = match settings.port {
        _ if !refused.is_empty() => Some(refused.join("; ")),
        Some(port) if port != instance.port => Some(format!(
            "{} pins gateway.port {port}, the plan says {}: `reef up` sets it to {} (keeping a \
             backup) when it starts the gateway, so that `openclaw --profile {}` finds it",
            path.display(),
            instance.port,
            instance.port,
            instance.profile
        )),
        _ => None,
    };
    Ok((added, note))
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

/// A file that now holds a token is readable by its owner only.
fn make_private(file: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("cannot make {} private", file.display()))?;
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
            ..SetupOptions::default()
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
            ..SetupOptions::default()
        };
        let report = set_up_with(&instance, &allowed).unwrap();
        assert!(!report.wrote_config && report.added.is_empty());
        let note = report.note.unwrap();
        assert!(note.contains("outside the config's directory"), "{note}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "{}");
    }

    #[test]
    fn an_existing_config_with_another_port_is_noted_and_kept() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        std::fs::create_dir_all(&instance.state_dir).unwrap();
        let text =
            "{ gateway: { port: 19000, mode: 'local', bind: 'lan', auth: { mode: 'password' } } }";
        std::fs::write(&instance.config_path, text).unwrap();
        let report = set_up(&instance).unwrap();
        assert!(report.note.unwrap().contains("pins gateway.port 19000"));
        assert!(report.added.is_empty());
        assert_eq!(
            std::fs::read_to_string(&instance.config_path).unwrap(),
            text
        );
    }

    #[test]
    fn missing_port_mode_and_token_are_filled_in_keeping_the_rest() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        std::fs::create_dir_all(&instance.state_dir).unwrap();
        let text = "{\n  // from openclaw setup --baseline\n  agents: { defaults: { workspace: '/w' } },\n  gateway: { bind: 'lan' },\n}\n";
        std::fs::write(&instance.config_path, text).unwrap();
        let report = set_up(&instance).unwrap();
        assert_eq!(
            report.added,
            ["gateway.port", "gateway.mode", "gateway.auth.token"]
        );
        assert!(!report.wrote_config && report.note.is_none());
        let written = std::fs::read_to_string(&instance.config_path).unwrap();
        assert!(
            written.contains("// from openclaw setup --baseline"),
            "{written}"
        );
        let resolved = gateway_config::resolve(&instance.config_path, &Default::default())
            .unwrap()
            .unwrap();
        let settings = GatewaySettings::of(&resolved).unwrap();
        assert_eq!(settings.port, Some(18789));
        assert_eq!(settings.mode.as_deref(), Some("local"));
        assert_eq!(settings.bind.as_deref(), Some("lan"));
        assert!(settings.has_token);
        assert_eq!(
            resolved.get("agents.defaults.workspace"),
            Some(&serde_json::json!("/w"))
        );
        // A second run adds nothing.
        assert!(set_up(&instance).unwrap().added.is_empty());
    }

    #[test]
    fn password_auth_gets_no_token_and_a_token_file_becomes_private() {
        let home = tempfile::tempdir().unwrap();
        let instance = instance(home.path());
        std::fs::create_dir_all(&instance.state_dir).unwrap();
        std::fs::write(
            &instance.config_path,
            "{ gateway: { mode: 'local', auth: { password: 'hunter2' } } }",
        )
        .unwrap();
        let report = set_up(&instance).unwrap();
        assert_eq!(report.added, ["gateway.port", "gateway.bind"]);
        let text = std::fs::read_to_string(&instance.config_path).unwrap();
        assert!(!text.contains("token"), "{text}");

        // The gateway section is an included file others can read: the token makes it private.
        std::fs::write(
            &instance.config_path,
            "{ gateway: { $include: './gateway.json5' } }",
        )
        .unwrap();
        let included = instance.state_dir.join("gateway.json5");
        std::fs::write(
            &included,
            "{ mode: 'local', bind: 'loopback', port: 18789, auth: { token: null } }",
        )
        .unwrap();
        std::fs::set_permissions(&included, std::fs::Permissions::from_mode(0o644)).unwrap();
        let report = set_up(&instance).unwrap();
        assert_eq!(report.added, ["gateway.auth.token"]);
        assert!(
            std::fs::read_to_string(&included)
                .unwrap()
                .contains("token\": \"")
                || std::fs::read_to_string(&included)
                    .unwrap()
                    .contains("token: \""),
            "{}",
            std::fs::read_to_string(&included).unwrap()
        );
        let mode = std::fs::metadata(&included).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn openclaws_baseline_lays_out_the_state_dir_for_the_real_runtime() {
        let home = tempfile::tempdir().unwrap();
        let mut instance = instance(home.path());
        instance.runtime = Runtime::Openclaw;
        // A stand-in for `openclaw` that writes a baseline as OpenClaw does: no port, no token.
        let fake = home.path().join("openclaw");
        std::fs::write(
            &fake,
            "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"--profile main setup --baseline\" ] || exit 9\n\
             mkdir -p \"$OPENCLAW_STATE_DIR/workspace\"\n\
             printf '{ agents: { defaults: { workspace: \"%s\" } } }' \"$OPENCLAW_STATE_DIR/workspace\" > \"$OPENCLAW_CONFIG_PATH\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let options = SetupOptions {
            openclaw: Some(vec![fake.display().to_string()]),
            ..SetupOptions::default()
        };
        let report = set_up_with(&instance, &options).unwrap();
        assert!(report.baseline && !report.wrote_config, "{report:?}");
        assert!(instance.state_dir.join("workspace").is_dir());
        assert!(report.added.contains(&"gateway.auth.token".to_owned()));
        let mode = std::fs::metadata(&instance.config_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A baseline that fails says why, and reef's minimal config is written instead.
        std::fs::remove_file(&instance.config_path).unwrap();
        std::fs::write(&fake, "#!/bin/sh\necho 'no node here' >&2\nexit 3\n").unwrap();
        let report = set_up_with(&instance, &options).unwrap();
        let note = report.note.unwrap_or_default();
        assert!(report.wrote_config && !report.baseline, "{note}");
        assert!(
            note.contains("setup --baseline") && note.contains("no node here"),
            "{note}"
        );
    }
}
