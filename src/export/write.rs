//! Putting an export on disk (`reef export --output`, `reef install`), and on stdout.
//!
//! Generated files replace what was there atomically (a temporary file in the same directory,
//! renamed over it), with the permissions the export gives them, so a unit never keeps the
//! looser mode of the file it replaces and never is half written. Secret files are created
//! 0600 and only where nothing exists yet (not even a dangling symlink): their owner may have
//! filled them in, and reef never overwrites that; it says which of the topology's variables a
//! kept file lacks. What is printed never holds a secret's value: files show
//! [`File::shown`], secret files their placeholders, as comments of the output's format.
//!
//! This is the only part of `export` that writes; generation stays pure.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{File, SecretFile};

/// Writes `file` into `dir`, replacing any file of that name atomically, with `file.mode`.
/// Returns its path.
pub fn replace(dir: &Path, file: &File) -> std::io::Result<PathBuf> {
    let path = dir.join(&file.name);
    let temporary = dir.join(format!(".{}.reef-{}.tmp", file.name, std::process::id()));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&temporary)?;
        // The umask may have narrowed the mode; it is set exactly, before anything is in it.
        out.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
        out.write_all(file.content.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

/// What became of a secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    /// Created, 0600, with the topology's values.
    Created,
    /// One existed and was kept; these of the topology's variables are not in it.
    Kept { missing: Vec<String> },
}

/// Creates the secret file at `path` (0600; missing parent directories 0700), unless something
/// exists there.
pub fn create_secret(path: &Path, secret: &SecretFile) -> std::io::Result<SecretOutcome> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut out) => {
            out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            out.write_all(secret.content.as_bytes())?;
            out.sync_all()?;
            Ok(SecretOutcome::Created)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing = std::fs::read_to_string(path).unwrap_or_default();
            Ok(SecretOutcome::Kept {
                missing: missing_keys(&existing, &secret.keys),
            })
        }
        Err(err) => Err(err),
    }
}

/// The line that reports what became of a secret file at `path`; `read_at` is where its unit
/// reads it when that is elsewhere (an export for another host).
pub fn secret_report(
    path: &Path,
    secret: &SecretFile,
    outcome: &SecretOutcome,
    read_at: Option<&Path>,
) -> String {
    let path_shown = super::one_line(&path.display().to_string());
    let elsewhere = read_at
        .filter(|at| *at != path)
        .map(|at| {
            format!(
                "; its unit reads it as {}: put it there (0600) on the target host",
                super::one_line(&at.display().to_string())
            )
        })
        .unwrap_or_default();
    match outcome {
        SecretOutcome::Created if secret.keys.is_empty() => {
            format!("wrote {path_shown} (0600: put the gateway's token there)")
        }
        SecretOutcome::Created => format!(
            "wrote {path_shown} (0600: {}){elsewhere}",
            secret.keys.join(", ")
        ),
        SecretOutcome::Kept { missing } if missing.is_empty() => {
            format!("kept the existing {path_shown}{elsewhere}")
        }
        SecretOutcome::Kept { missing } => format!(
            "kept the existing {path_shown}; it lacks {} from the topology: add {}{elsewhere}",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        ),
    }
}

/// The `keys` that no line of `text` defines (`KEY=`, `KEY:`, `KEY =`, quoted or not).
pub fn missing_keys(text: &str, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|key| {
            !text.lines().any(|line| {
                let line = line.trim_start();
                let rest = line
                    .strip_prefix(key.as_str())
                    .or_else(|| {
                        line.strip_prefix('"')
                            .and_then(|l| l.strip_prefix(key.as_str()))
                            .and_then(|l| l.strip_prefix('"'))
                    })
                    .map(str::trim_start);
                rest.is_some_and(|rest| rest.starts_with('=') || rest.starts_with(':'))
            })
        })
        .cloned()
        .collect()
}

/// A secret file as printed: a heading naming where it goes, then its placeholder form, every
/// line a `#` comment, so the printed output stays one valid file of its format (and applying
/// it never creates a secret with a placeholder for its value).
pub fn printed_secret(secret: &SecretFile, location: &Path) -> String {
    let mut out = format!(
        "# ==> {} (secrets, 0600; written with the values only where no such file exists) <==\n",
        super::one_line(&location.display().to_string())
    );
    for line in secret.printed.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str(&format!("# {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn secret(keys: &[&str]) -> SecretFile {
        SecretFile {
            name: "main.env".into(),
            host_path: None,
            content: "API_KEY=sk-1\n".into(),
            printed: "# Secrets\nAPI_KEY=<secret>\n".into(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn files_replace_atomically_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.service");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let file = File::new("unit.service", "new\n".into(), 0o600);
        assert_eq!(replace(dir.path(), &file).unwrap(), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Nothing left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_files_are_created_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/gateway.systemd.env");
        assert_eq!(
            create_secret(&path, &secret(&["API_KEY"])).unwrap(),
            SecretOutcome::Created
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        std::fs::write(&path, "# mine\nAPI_KEY=filled-in\n").unwrap();
        assert_eq!(
            create_secret(&path, &secret(&["API_KEY", "DB_PASSWORD"])).unwrap(),
            SecretOutcome::Kept {
                missing: vec!["DB_PASSWORD".into()]
            }
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# mine\nAPI_KEY=filled-in\n"
        );
        // A dangling symlink is not followed.
        let link = dir.path().join("link.env");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(matches!(
            create_secret(&link, &secret(&["API_KEY"])).unwrap(),
            SecretOutcome::Kept { .. }
        ));
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn keys_are_found_in_env_files_yaml_and_hcl() {
        let keys: Vec<String> = ["A_KEY", "B_TOKEN", "C_SECRET", "D_PASSWORD"]
            .map(String::from)
            .into();
        let text = "A_KEY=1\n  B_TOKEN: \"x\"\n  \"C_SECRET\": y\n# D_PASSWORD=\nD_PASSWORDS=2\n";
        assert_eq!(missing_keys(text, &keys), ["D_PASSWORD"]);
    }

    #[test]
    fn printed_secrets_are_comments_with_placeholders() {
        let printed = printed_secret(&secret(&["API_KEY"]), Path::new("/srv/main.env"));
        assert_eq!(
            printed,
            "# ==> /srv/main.env (secrets, 0600; written with the values only where no such file exists) <==\n# # Secrets\n# API_KEY=<secret>\n"
        );
    }
}
