//! OpenClaw's profile rules, exactly as `openclaw --profile NAME` applies them (2026.9).
//!
//! A profile names an isolated install: its own state dir, config file, workspace and service
//! names. The rules are pure functions of the name and the home directory, so that `reef plan`
//! predicts precisely where each gateway will keep its state.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The profile that maps to the un-suffixed install (`~/.openclaw`), in any letter case.
pub const DEFAULT_PROFILE: &str = "default";

/// Longest profile name OpenClaw accepts.
pub const MAX_NAME_LEN: usize = 64;

/// A profile name OpenClaw would refuse with exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid profile name {name:?}: OpenClaw accepts 1 to 64 letters, digits, '_' or '-', \
     starting with a letter or digit"
)]
pub struct InvalidProfileName {
    pub name: String,
}

/// Checks OpenClaw's rule `^[a-z0-9][a-z0-9_-]{0,63}$`, matched case-insensitively.
pub fn check_name(name: &str) -> Result<(), InvalidProfileName> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(InvalidProfileName {
            name: name.to_owned(),
        })
    }
}

/// Whether `name` selects the un-suffixed default install.
pub fn is_default(name: &str) -> bool {
    name.eq_ignore_ascii_case(DEFAULT_PROFILE)
}

/// The home directory OpenClaw resolves paths against: `OPENCLAW_HOME`, else `HOME`.
/// Empty values count as unset, as they do for OpenClaw.
pub fn resolve_home(openclaw_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    [openclaw_home, home]
        .into_iter()
        .flatten()
        .find(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Everything a profile name determines, resolved against a home directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfilePaths {
    pub name: String,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub workspace: PathBuf,
    pub systemd_unit: String,
    pub launchd_label: String,
}

impl ProfilePaths {
    /// The paths `openclaw --profile name` would use under `home`. The name's case is kept.
    pub fn resolve(name: &str, home: &Path) -> ProfilePaths {
        let state_dir = state_dir(name, home);
        ProfilePaths {
            name: name.to_owned(),
            config_path: config_path(&state_dir),
            workspace: workspace(&state_dir),
            state_dir,
            systemd_unit: systemd_unit(name),
            launchd_label: launchd_label(name),
        }
    }
}

/// `<home>/.openclaw` for the default profile, else `<home>/.openclaw-NAME`.
pub fn state_dir(name: &str, home: &Path) -> PathBuf {
    if is_default(name) {
        home.join(".openclaw")
    } else {
        home.join(format!(".openclaw-{name}"))
    }
}

/// The config file OpenClaw reads for a state dir.
pub fn config_path(state_dir: &Path) -> PathBuf {
    state_dir.join("openclaw.json")
}

/// The agent workspace OpenClaw 2026.9 uses for a state dir (no `OPENCLAW_WORKSPACE_DIR`).
pub fn workspace(state_dir: &Path) -> PathBuf {
    state_dir.join("workspace")
}

/// The systemd user unit `openclaw gateway install` writes for this profile.
pub fn systemd_unit(name: &str) -> String {
    if is_default(name) {
        "openclaw-gateway.service".to_owned()
    } else {
        format!("openclaw-gateway-{name}.service")
    }
}

/// The launchd label `openclaw gateway install` uses for this profile on macOS.
pub fn launchd_label(name: &str) -> String {
    if is_default(name) {
        "ai.openclaw.gateway".to_owned()
    } else {
        format!("ai.openclaw.{name}")
    }
}

/// Why a macOS launchd agent could not be installed for this profile, if it could not.
pub fn macos_service_problem(name: &str) -> Option<&'static str> {
    if is_default(name) {
        None
    } else if name.chars().any(|c| c.is_ascii_uppercase()) {
        Some("only lowercase profile names may own a macOS service")
    } else if name == "gateway" || name == "node" {
        Some("'gateway' and 'node' are reserved launchd names on macOS")
    } else {
        None
    }
}

/// The port `openclaw --profile dev` always uses (`--dev` sets it as OPENCLAW_GATEWAY_PORT).
pub const DEV_PORT: u16 = 19_001;
/// The port of the default profile (`default`, in any case) when none is pinned.
pub const DEFAULT_PORT: u16 = 18_789;

/// The port the OpenClaw CLI looks for a profile's gateway on when the config pins none, as the
/// real CLI resolves it: 18789 for `default` (any case), 19001 for `dev` (forced whatever the
/// config says), else a hash of the name ([`name_hash_port`]).
pub fn hashed_port(name: &str) -> u16 {
    if name.eq_ignore_ascii_case("default") {
        DEFAULT_PORT
    } else if name == "dev" {
        DEV_PORT
    } else {
        name_hash_port(name)
    }
}

/// Whether `openclaw --profile NAME` uses its own port whatever the config pins (`dev`).
pub fn cli_forces_port(name: &str) -> Option<u16> {
    (name == "dev").then_some(DEV_PORT)
}

/// OpenClaw's fallback for other names: 32-bit FNV-1a of the name, mapped into 20000..60000.
/// Different names can land close together: pin every port.
pub fn name_hash_port(name: &str) -> u16 {
    const OFFSET: u32 = 2_166_136_261;
    const PRIME: u32 = 16_777_619;
    let hash = name.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(PRIME)
    });
    // The remainder is below 40000, so the sum always fits.
    (20_000 + hash % 40_000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured against the real CLI (openclaw 2026.9.6): the port it targets for a profile
    /// whose config pins none.
    #[test]
    fn cli_ports_match_openclaw_for_dev_and_default() {
        assert_eq!(hashed_port("dev"), 19_001);
        for default in ["default", "Default", "DEFAULT", "dEfAuLt"] {
            assert_eq!(hashed_port(default), 18_789, "{default}");
        }
        assert_eq!(hashed_port("Dev"), name_hash_port("Dev"));
        assert_eq!(cli_forces_port("dev"), Some(19_001));
        assert_eq!(cli_forces_port("main"), None);
    }

    /// What the real CLI (openclaw 2026.9.6) resolves for each name with no config: the port it
    /// looks for the gateway on and the config path under HOME. Generated once with
    /// `tools/profile-parity.sh`; the CLI refuses the invalid names `name_rule` lists.
    const CLI_RESOLVES: &[(&str, u16, &str)] = &[
        ("main", 23592, ".openclaw-main/openclaw.json"),
        ("rescue", 23532, ".openclaw-rescue/openclaw.json"),
        ("ops", 55291, ".openclaw-ops/openclaw.json"),
        ("work", 41984, ".openclaw-work/openclaw.json"),
        ("test", 53445, ".openclaw-test/openclaw.json"),
        ("dev", 19001, ".openclaw-dev/openclaw.json"),
        ("Dev", 57916, ".openclaw-Dev/openclaw.json"),
        ("DEV", 38844, ".openclaw-DEV/openclaw.json"),
        ("default", 18789, ".openclaw/openclaw.json"),
        ("Default", 18789, ".openclaw/openclaw.json"),
        ("DEFAULT", 18789, ".openclaw/openclaw.json"),
        ("a", 22220, ".openclaw-a/openclaw.json"),
        ("z", 57933, ".openclaw-z/openclaw.json"),
        ("0", 42063, ".openclaw-0/openclaw.json"),
        ("9lives", 51431, ".openclaw-9lives/openclaw.json"),
        ("my_bot", 24905, ".openclaw-my_bot/openclaw.json"),
        ("my-bot", 30467, ".openclaw-my-bot/openclaw.json"),
        ("Rescue_1", 48776, ".openclaw-Rescue_1/openclaw.json"),
        ("UPPER", 23303, ".openclaw-UPPER/openclaw.json"),
        ("mIxEd", 41752, ".openclaw-mIxEd/openclaw.json"),
        ("x-_-y", 50681, ".openclaw-x-_-y/openclaw.json"),
        ("gateway", 52057, ".openclaw-gateway/openclaw.json"),
        ("node", 55661, ".openclaw-node/openclaw.json"),
        ("bot2", 27908, ".openclaw-bot2/openclaw.json"),
        ("prod", 56084, ".openclaw-prod/openclaw.json"),
        ("staging", 28422, ".openclaw-staging/openclaw.json"),
        ("fleet-01", 43209, ".openclaw-fleet-01/openclaw.json"),
        ("fleet_02", 49206, ".openclaw-fleet_02/openclaw.json"),
        ("r2d2", 33363, ".openclaw-r2d2/openclaw.json"),
        ("alpha-beta", 36512, ".openclaw-alpha-beta/openclaw.json"),
        (
            "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp",
            47205,
            ".openclaw-pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp/openclaw.json",
        ),
    ];

    #[test]
    fn every_derived_value_matches_the_real_cli() {
        let home = Path::new("/home/ada");
        for &(name, port, config) in CLI_RESOLVES {
            assert!(check_name(name).is_ok(), "{name}");
            assert_eq!(hashed_port(name), port, "{name}");
            let paths = ProfilePaths::resolve(name, home);
            assert_eq!(paths.config_path, home.join(config), "{name}");
            assert_eq!(
                paths.config_path.parent(),
                Some(paths.state_dir.as_path()),
                "{name}"
            );
        }
    }

    #[test]
    fn hashed_ports_match_openclaw() {
        assert_eq!(hashed_port("rescue"), 23532);
        assert_eq!(hashed_port("main"), 23592);
        assert_eq!(hashed_port("ops"), 55291);
        assert_eq!(hashed_port("work"), 41984);
        assert_eq!(hashed_port("test"), 53445);
    }

    #[test]
    fn name_rule() {
        for good in [
            "main",
            "rescue",
            "a",
            "Team-1",
            "x_y",
            "0abc",
            &"a".repeat(64),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-main",
            "_x",
            "main bot",
            "mäin",
            "a/b",
            "a.b",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_profile_is_unsuffixed_in_any_case() {
        let home = Path::new("/home/ada");
        for name in ["default", "Default", "DEFAULT"] {
            let paths = ProfilePaths::resolve(name, home);
            assert_eq!(paths.state_dir, Path::new("/home/ada/.openclaw"));
            assert_eq!(paths.systemd_unit, "openclaw-gateway.service");
            assert_eq!(paths.launchd_label, "ai.openclaw.gateway");
        }
    }

    #[test]
    fn named_profile_paths() {
        let paths = ProfilePaths::resolve("rescue", Path::new("/home/ada"));
        assert_eq!(paths.state_dir, Path::new("/home/ada/.openclaw-rescue"));
        assert_eq!(
            paths.config_path,
            Path::new("/home/ada/.openclaw-rescue/openclaw.json")
        );
        assert_eq!(
            paths.workspace,
            Path::new("/home/ada/.openclaw-rescue/workspace")
        );
        assert_eq!(paths.systemd_unit, "openclaw-gateway-rescue.service");
        assert_eq!(paths.launchd_label, "ai.openclaw.rescue");
    }

    #[test]
    fn main_is_an_ordinary_name_and_case_is_kept() {
        let home = Path::new("/h");
        assert_eq!(state_dir("main", home), Path::new("/h/.openclaw-main"));
        assert_eq!(state_dir("Main", home), Path::new("/h/.openclaw-Main"));
    }

    #[test]
    fn home_prefers_openclaw_home_and_skips_empty_values() {
        assert_eq!(
            resolve_home(Some("/oc"), Some("/h")),
            Some(PathBuf::from("/oc"))
        );
        assert_eq!(
            resolve_home(Some(""), Some("/h")),
            Some(PathBuf::from("/h"))
        );
        assert_eq!(resolve_home(None, Some("/h")), Some(PathBuf::from("/h")));
        assert_eq!(resolve_home(None, None), None);
    }

    #[test]
    fn macos_service_names() {
        assert!(macos_service_problem("main").is_none());
        assert!(macos_service_problem("Main").is_some());
        assert!(macos_service_problem("gateway").is_some());
        assert!(macos_service_problem("node").is_some());
        assert!(macos_service_problem("DEFAULT").is_none());
    }
}
