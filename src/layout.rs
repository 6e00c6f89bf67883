//! Where reef keeps a running topology's files.
//!
//! A topology is identified by its script's canonical path. Its directory,
//! `$XDG_STATE_HOME/reef/<stem>-<hash>` (default `~/.local/state/reef/...`), holds the
//! `up.lock` that makes `reef up` unique per topology (it names the running reef's pid and
//! socket), the `ledger.json` of its gateway processes, and the per-instance logs under `logs/`.
//! The control socket lives in `$XDG_RUNTIME_DIR/reef/` when that is set, else beside the lock
//! (or, when that path is too long for a socket, in a private directory under the temp dir).
//! Directories are created 0700: the socket controls gateways.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The longest Unix socket path the kernel takes, less a margin.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDirs {
    /// The topology's own directory.
    pub dir: PathBuf,
    pub lock: PathBuf,
    /// The gateways this topology's reef started (live restore).
    pub ledger: PathBuf,
    pub socket: PathBuf,
    pub logs: PathBuf,
}

impl TopologyDirs {
    /// The directories for `script`, from the given environment (XDG_STATE_HOME, HOME,
    /// XDG_RUNTIME_DIR). The script must exist.
    pub fn for_script(script: &Path, env: &BTreeMap<String, String>) -> Result<TopologyDirs> {
        // A script that was moved or deleted still names its topology (to stop it, say).
        let canonical = match script.canonicalize() {
            Ok(path) => path,
            Err(_) => crate::topology::clean(
                &std::path::absolute(script)
                    .with_context(|| format!("cannot place {}", script.display()))?,
            ),
        };
        let stem = canonical
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "reef".into());
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let id = format!(
            "{stem}-{:08x}",
            fnv1a(canonical.as_os_str().as_encoded_bytes())
        );
        let var = |key: &str| env.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let state_home = var("XDG_STATE_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".local/state")))
            .context("cannot place reef's state: neither XDG_STATE_HOME nor HOME is set")?;
        let dir = state_home.join("reef").join(&id);
        let socket = match var("XDG_RUNTIME_DIR") {
            Some(runtime) => runtime.join("reef").join(format!("{id}.sock")),
            None => dir.join("control.sock"),
        };
        // Unix socket paths must fit in 108 bytes: fall back to a short private directory.
        let socket = if socket.as_os_str().len() > MAX_SOCKET_PATH {
            std::env::temp_dir()
                .join(format!("reef-{}", nix::unistd::getuid()))
                .join(format!("{id}.sock"))
        } else {
            socket
        };
        Ok(TopologyDirs {
            lock: dir.join("up.lock"),
            ledger: dir.join("ledger.json"),
            logs: dir.join("logs"),
            socket,
            dir,
        })
    }

    /// Creates the directories (0700) that do not exist yet; the socket's must be ours and
    /// private, since the socket controls the gateways.
    pub fn create(&self) -> Result<()> {
        let socket_dir = self.socket.parent().unwrap_or(&self.dir);
        for dir in [&self.dir, &self.logs, socket_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(socket_dir)
            .with_context(|| format!("cannot inspect {}", socket_dir.display()))?;
        if meta.uid() != nix::unistd::getuid().as_raw() || meta.mode() & 0o077 != 0 {
            anyhow::bail!(
                "{} must belong to you and be private (mode 0700): it holds the control socket",
                socket_dir.display()
            );
        }
        Ok(())
    }

    /// The socket a running `reef up` listens on: as its lock file says (the runner's
    /// environment may differ from the caller's), else where it would be.
    pub fn running_socket(&self) -> PathBuf {
        std::fs::read_to_string(&self.lock)
            .ok()
            .and_then(|text| text.lines().nth(1).map(PathBuf::from))
            .filter(|path| !path.as_os_str().is_empty())
            .unwrap_or_else(|| self.socket.clone())
    }

    /// The log file of one instance.
    pub fn log(&self, instance: &str) -> PathBuf {
        self.logs.join(format!("{instance}.log"))
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(16_777_619)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_follow_xdg_and_differ_per_script() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.lua");
        let b = tmp.path().join("b.lua");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let env: BTreeMap<String, String> = [("HOME".to_owned(), "/home/ada".to_owned())].into();
        let dirs_a = TopologyDirs::for_script(&a, &env).unwrap();
        let dirs_b = TopologyDirs::for_script(&b, &env).unwrap();
        assert!(dirs_a.dir.starts_with("/home/ada/.local/state/reef"));
        assert!(
            dirs_a
                .dir
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("a-")
        );
        assert_ne!(dirs_a.dir, dirs_b.dir);
        assert_eq!(dirs_a.socket, dirs_a.dir.join("control.sock"));

        let env: BTreeMap<String, String> = [
            ("HOME".to_owned(), "/home/ada".to_owned()),
            ("XDG_RUNTIME_DIR".to_owned(), "/run/user/1000".to_owned()),
        ]
        .into();
        let dirs = TopologyDirs::for_script(&a, &env).unwrap();
        assert!(dirs.socket.starts_with("/run/user/1000/reef"));
    }
}

/// The lock that makes `reef up` unique per topology: a flock on `up.lock` holding reef's pid.
/// The kernel drops it when the process ends, however it ends.
#[derive(Debug)]
pub struct UpLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Another `reef up` holds the topology.
#[derive(Debug, thiserror::Error)]
#[error(
    "reef up is already running this topology (pid {pid}); use `reef status`, or stop that one first"
)]
pub struct AlreadyRunning {
    pub pid: String,
}

impl UpLock {
    pub fn acquire(dirs: &TopologyDirs) -> Result<UpLock> {
        use std::io::{Read, Seek, Write};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&dirs.lock)
            .with_context(|| format!("cannot open {}", dirs.lock.display()))?;
        let mut lock =
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((mut file, _)) => {
                    let mut content = String::new();
                    let _ = file.read_to_string(&mut content);
                    let pid = content.lines().next().unwrap_or_default().trim().to_owned();
                    return Err(AlreadyRunning {
                        pid: if pid.is_empty() {
                            "unknown".into()
                        } else {
                            pid
                        },
                    }
                    .into());
                }
            };
        lock.set_len(0)?;
        lock.rewind()?;
        // The pid, then the socket: clients with another environment still find it.
        writeln!(lock, "{}\n{}", std::process::id(), dirs.socket.display())?;
        Ok(UpLock { _lock: lock })
    }
}
