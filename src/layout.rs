//! Where reef keeps a running topology's files, and the lock that makes `reef up` unique.
//!
//! A topology is identified by its script's canonical path: its id is `<stem>-<hash>`. Its
//! directory, `$XDG_STATE_HOME/reef/<id>` (default `~/.local/state/reef/...`), holds the
//! `up.lock` (it names the running reef's pid and socket), the `ledger.json` of its gateway
//! processes, and the per-instance logs under `logs/`. The control socket lives in
//! `$XDG_RUNTIME_DIR/reef/` when that is set, else beside the lock, or, when that path is too
//! long for a socket, in `$TMPDIR/reef-UID/`.
//!
//! The socket controls gateways, so every directory reef uses is checked before use (never
//! following a link): it must be a real directory, owned by this user; reef makes it 0700 when it
//! is not. A shared socket directory (`$TMPDIR/reef-UID`, `$XDG_RUNTIME_DIR/reef`) that another
//! user got first, or that is a link, is passed over for `$TMPDIR/reef-UID-<random>`, created
//! by reef itself (nobody can predict or hold it); the lock file records the socket, so clients
//! find it.
//!
//! `reef up` holds [`UpLock`] for its whole life: a flock on `up.lock` and, on Linux, an
//! abstract Unix socket named after the user and the topology, which no file deletion removes.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The longest Unix socket path the kernel takes, less a margin.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyDirs {
    /// `<stem>-<hash>`: names the topology's directory, socket and up lock; the supervisor marks
    /// its processes with it.
    pub id: String,
    /// The topology's own directory.
    pub dir: PathBuf,
    pub lock: PathBuf,
    /// The gateways this topology's reef started (live restore).
    pub ledger: PathBuf,
    pub socket: PathBuf,
    pub logs: PathBuf,
    /// Why the socket is not in its usual directory (another user holds that one), if so.
    pub socket_note: Option<String>,
    /// The script, absolute (`up.lock` names it, so `reef ls` can).
    pub script: PathBuf,
}

impl TopologyDirs {
    /// The directories for `script`, from the given environment (XDG_STATE_HOME, HOME,
    /// XDG_RUNTIME_DIR, TMPDIR). A shared socket directory that another user controls is passed
    /// over here, for a private one that [`TopologyDirs::create`] makes.
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
        let temp = var("TMPDIR").unwrap_or_else(std::env::temp_dir);
        let uid = nix::unistd::getuid().as_raw();
        let usual = match var("XDG_RUNTIME_DIR") {
            Some(runtime) => runtime.join("reef").join(format!("{id}.sock")),
            None => dir.join("control.sock"),
        };
        // Unix socket paths must fit in 108 bytes: fall back to a short private directory.
        let usual = if usual.as_os_str().len() > MAX_SOCKET_PATH {
            temp.join(format!("reef-{uid}")).join(format!("{id}.sock"))
        } else {
            usual
        };
        let usual_dir = usual.parent().unwrap_or(&dir);
        let (socket, socket_note) = match foreign(usual_dir, uid) {
            Some(why) if usual_dir != dir => {
                let private = match reusable_private_dir(&dir.join("up.lock"), &temp, uid) {
                    Some(private) => private,
                    None => temp.join(format!("reef-{uid}-{}", random_hex()?)),
                };
                let note = format!(
                    "{} {why}; the control socket is in {} instead",
                    usual_dir.display(),
                    private.display()
                );
                (private.join(format!("{id}.sock")), Some(note))
            }
            _ => (usual, None),
        };
        Ok(TopologyDirs {
            id,
            script: canonical.clone(),
            lock: dir.join("up.lock"),
            ledger: dir.join("ledger.json"),
            logs: dir.join("logs"),
            socket,
            dir,
            socket_note,
        })
    }

    /// Where every topology's directory lives: `$XDG_STATE_HOME/reef` (`~/.local/state/reef`).
    pub fn state_root(env: &BTreeMap<String, String>) -> Option<PathBuf> {
        let var = |key: &str| env.get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        var("XDG_STATE_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".local/state")))
            .map(|state| state.join("reef"))
    }

    /// The `<stem>-<hash>` id of the topology.
    pub fn topology_id(&self) -> &str {
        &self.id
    }

    /// Creates the directories that do not exist yet (0700) and checks them all: a real
    /// directory (not a link), owned by this user, private (made so if it is not). A directory
    /// that fails the checks is refused with what to do.
    pub fn create(&self) -> Result<()> {
        ensure_private_dir(&self.dir, "lock, ledger and logs", "")?;
        ensure_private_dir(&self.logs, "logs", "")?;
        if let Some(socket_dir) = self.socket.parent()
            && socket_dir != self.dir
        {
            if let Some(note) = &self.socket_note {
                tracing::warn!("{note}");
            }
            ensure_private_dir(
                socket_dir,
                "control socket",
                " (or set TMPDIR to a directory of your own)",
            )?;
        }
        // sun_path holds 108 bytes, the terminating NUL included.
        if self.socket.as_os_str().len() > 107 {
            anyhow::bail!(
                "the control socket path {} is longer than a Unix socket allows (107 bytes); set TMPDIR or XDG_RUNTIME_DIR to a shorter directory",
                self.socket.display()
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

/// Why `dir` is not ours to use, if it exists and is not: a link, not a directory, or another
/// user's. A directory that does not exist yet is fine (create makes it, and checks again).
fn foreign(dir: &Path, uid: u32) -> Option<String> {
    match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => Some(format!("cannot be inspected ({err})")),
        Ok(meta) if meta.file_type().is_symlink() => Some("is a symbolic link".into()),
        Ok(meta) if !meta.is_dir() => Some("is not a directory".into()),
        Ok(meta) if meta.uid() != uid => Some(format!(
            "belongs to another user (uid {}), not you (uid {uid})",
            meta.uid()
        )),
        Ok(_) => None,
    }
}

/// The private socket dir the last `reef up` used (as its lock file says), if it is one of ours
/// still: `$TMPDIR/reef-UID-<random>`, a real directory of this user, 0700 (so nobody else can
/// have put anything in it). Reusing it keeps a squatted fallback from leaving a new dir per run.
fn reusable_private_dir(lock: &Path, temp: &Path, uid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(lock).ok()?;
    let socket = PathBuf::from(text.lines().nth(1)?);
    let dir = socket.parent()?;
    let name = dir.file_name()?.to_str()?;
    let random = name.strip_prefix(&format!("reef-{uid}-"))?;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let ours = dir.parent() == Some(temp)
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && foreign(dir, uid).is_none()
        && meta.mode() & 0o777 == 0o700;
    ours.then(|| dir.to_owned())
}

/// Creates `dir` (0700, and its missing parents) unless it exists, then checks it without
/// following a link: ours, a directory, private (made so when it is not).
fn ensure_private_dir(dir: &Path, holds: &str, hint: &str) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let uid = nix::unistd::getuid().as_raw();
    if let Some(why) = foreign(dir, uid) {
        let remedy = if why == "is a symbolic link" {
            format!("remove the link (`rm {}`){hint}", dir.display())
        } else {
            format!("remove it (as its owner, or root){hint}")
        };
        anyhow::bail!(
            "{} {why}: reef keeps its {holds} only in a directory of your own; {remedy}, then run reef again",
            dir.display()
        );
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    if meta.mode() & 0o077 != 0 {
        // Checked above: a directory of ours, not a link.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        tracing::warn!(
            "{} was open to others (mode {:o}); reef made it private (0700)",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// 16 hex digits from the OS's generator: a directory name nobody can predict.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("cannot get random bytes: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(16_777_619)
    })
}

/// The lock that makes `reef up` unique per topology, held for the life of the value; the
/// kernel drops it when the process ends, however it ends.
///
/// Two locks: a flock on `up.lock`, which names reef's pid and socket for clients; and, on
/// Linux, an abstract Unix socket `@reef/<uid>/<topology id>` that no file deletion removes
/// (deleting the state dir would otherwise let a second `reef up` start). A name held by the
/// same user is an [`AlreadyRunning`] naming its pid (from the kernel's peer credentials); a
/// name held by another user, who cannot be reef for this user, is warned about and left
/// alone: the file lock still stands, and nobody else can block reef.
#[derive(Debug)]
pub struct UpLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    #[cfg(target_os = "linux")]
    _name: Option<std::os::unix::net::UnixListener>,
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
        // The name first: a refused second reef never touches the first one's lock file.
        #[cfg(target_os = "linux")]
        let name = name_lock::acquire(&dirs.id)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dirs.lock)
            .map_err(|err| {
                if err.raw_os_error() == Some(libc::ELOOP) {
                    anyhow::anyhow!(
                        "{} is a symbolic link; reef never writes its lock through a link: remove it (`rm {}`) and run reef again",
                        dirs.lock.display(),
                        dirs.lock.display()
                    )
                } else {
                    anyhow::Error::new(err).context(format!("cannot open {}", dirs.lock.display()))
                }
            })?;
        if !file.metadata()?.is_file() {
            anyhow::bail!(
                "{} is not a regular file; remove it and run reef again",
                dirs.lock.display()
            );
        }
        // A reef killed a moment ago can leave its lock to a child between fork and exec (or
        // dying with it): while the pid the file names is gone, wait a little for it.
        let orphaned_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut file = file;
        let mut lock = loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((mut held, _)) => {
                    let mut content = String::new();
                    let _ = held.read_to_string(&mut content);
                    let _ = held.rewind();
                    let pid = content.lines().next().unwrap_or_default().trim().to_owned();
                    let gone = pid
                        .parse::<u32>()
                        .is_ok_and(|pid| crate::host::identity::start_time(pid).is_none());
                    if gone && std::time::Instant::now() < orphaned_until {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        file = held;
                        continue;
                    }
                    return Err(AlreadyRunning {
                        pid: if pid.is_empty() {
                            "unknown".into()
                        } else {
                            pid
                        },
                    }
                    .into());
                }
            }
        };
        lock.set_len(0)?;
        lock.rewind()?;
        // The pid, then the socket: clients with another environment still find it.
        writeln!(
            lock,
            "{}\n{}\n{}",
            std::process::id(),
            dirs.socket.display(),
            dirs.script.display()
        )?;
        Ok(UpLock {
            _file: lock,
            #[cfg(target_os = "linux")]
            _name: name,
        })
    }
}

/// The abstract-socket half of [`UpLock`].
#[cfg(target_os = "linux")]
mod name_lock {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::time::Duration;

    use anyhow::Result;

    use super::AlreadyRunning;

    /// How long asking a name's holder who it is may take (it never should: the kernel queues
    /// the connection and answers).
    const ASK_WITHIN: Duration = Duration::from_secs(2);

    /// Who holds a name.
    enum Holder {
        /// A process of ours (uid and pid from SO_PEERCRED).
        Us { pid: Option<i32> },
        /// Another user's process.
        Other { uid: u32, pid: Option<i32> },
        /// Nobody listens (the holder is exiting, or it is not a listening socket).
        Refused,
        /// It could not be asked.
        Unknown(std::io::Error),
    }

    /// The name `reef/<uid>/<id>`, held by the returned listener; `None` when another user (or
    /// something that cannot be asked) holds it, so only the file lock stands.
    pub(super) fn acquire(id: &str) -> Result<Option<UnixListener>> {
        let uid = nix::unistd::getuid().as_raw();
        let name = format!("reef/{uid}/{id}");
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let mut refused = 0;
        // A reef killed a moment ago can leave its lock to a child between fork and exec (or
        // dying with it): while the pid that bound the name is gone, wait a little for it.
        let orphaned_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let why = loop {
            match UnixListener::bind_addr(&addr) {
                Ok(listener) => return Ok(Some(listener)),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(err) => break format!("cannot be bound ({err})"),
            }
            match holder(&name, uid) {
                Holder::Us { pid: Some(pid) }
                    if crate::host::identity::start_time(pid as u32).is_none()
                        && std::time::Instant::now() < orphaned_until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Holder::Us { pid } => {
                    return Err(AlreadyRunning {
                        pid: pid.map_or_else(|| "unknown".into(), |pid| pid.to_string()),
                    }
                    .into());
                }
                Holder::Other { uid, pid } => {
                    let pid = pid.map_or_else(|| "unknown".into(), |pid| pid.to_string());
                    break format!("is held by another user (uid {uid}, pid {pid})");
                }
                // The holder may have just exited: try again, a few times.
                Holder::Refused if refused < 3 => refused += 1,
                Holder::Refused => break "is held by a socket that does not listen".into(),
                Holder::Unknown(err) => {
                    break format!("is held, and its holder cannot be asked ({err})");
                }
            }
        };
        tracing::warn!(
            "reef's lock name @{name} {why}; relying on the lock file alone (deleting reef's state dir would let a second `reef up` of this topology start)"
        );
        Ok(None)
    }

    /// Connects to the name (never blocking: a holder that does not accept cannot stall reef)
    /// and reads the kernel's credentials of its holder. On a thread of its own, so this works
    /// inside or outside an async runtime.
    fn holder(name: &str, uid: u32) -> Holder {
        let path = format!("\0{name}");
        let asked = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()?;
                    runtime.block_on(async {
                        let stream = tokio::time::timeout(
                            ASK_WITHIN,
                            tokio::net::UnixStream::connect(&path),
                        )
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                        stream.peer_cred()
                    })
                })
                .join()
        });
        match asked {
            Ok(Ok(cred)) if cred.uid() == uid => Holder::Us { pid: cred.pid() },
            Ok(Ok(cred)) => Holder::Other {
                uid: cred.uid(),
                pid: cred.pid(),
            },
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => Holder::Refused,
            Ok(Err(err)) => Holder::Unknown(err),
            Err(_) => Holder::Unknown(std::io::Error::other("the check panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &Path)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.display().to_string()))
            .collect()
    }

    fn script(dir: &Path) -> PathBuf {
        let script = dir.join("reef.lua");
        std::fs::write(&script, "").unwrap();
        script
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    /// A runtime dir whose socket paths are too long, so the socket falls back to TMPDIR.
    fn long_runtime(tmp: &Path) -> PathBuf {
        tmp.join("r".repeat(MAX_SOCKET_PATH))
    }

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
        assert!(dirs_a.topology_id().starts_with("a-"));
        assert_eq!(dirs_a.dir.file_name().unwrap(), dirs_a.topology_id());
        assert_ne!(dirs_a.dir, dirs_b.dir);
        assert_ne!(dirs_a.id, dirs_b.id);
        assert_eq!(dirs_a.socket, dirs_a.dir.join("control.sock"));

        let env: BTreeMap<String, String> = [
            ("HOME".to_owned(), "/home/ada".to_owned()),
            ("XDG_RUNTIME_DIR".to_owned(), "/run/user/1000".to_owned()),
        ]
        .into();
        let dirs = TopologyDirs::for_script(&a, &env).unwrap();
        assert!(dirs.socket.starts_with("/run/user/1000/reef"));
    }

    #[test]
    fn a_long_socket_path_falls_back_to_a_private_temp_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let env = env(&[
            ("HOME", &tmp.path().join("home")),
            ("XDG_RUNTIME_DIR", &long_runtime(tmp.path())),
            ("TMPDIR", &temp),
        ]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        let fallback = temp.join(format!("reef-{}", uid()));
        assert_eq!(dirs.socket.parent().unwrap(), fallback);
        assert_eq!(dirs.socket_note, None);
        dirs.create().unwrap();
        assert_eq!(mode(&fallback), 0o700);
        assert_eq!(mode(&dirs.dir), 0o700);
        assert_eq!(mode(&dirs.logs), 0o700);

        // Ours but open to others: made private again.
        std::fs::set_permissions(&fallback, std::fs::Permissions::from_mode(0o777)).unwrap();
        let again = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert_eq!(again.socket, dirs.socket);
        again.create().unwrap();
        assert_eq!(mode(&fallback), 0o700);
    }

    /// Checks that `squatted` (the usual socket dir) is passed over for a private dir of ours.
    fn assert_passed_over(dirs: &TopologyDirs, squatted: &Path, temp: &Path) {
        let socket_dir = dirs.socket.parent().unwrap();
        assert_ne!(socket_dir, squatted);
        assert_eq!(socket_dir.parent().unwrap(), temp);
        let name = socket_dir.file_name().unwrap().to_str().unwrap();
        let prefix = format!("reef-{}-", uid());
        assert!(
            name.starts_with(&prefix) && name.len() == prefix.len() + 16,
            "{name}"
        );
        let note = dirs.socket_note.as_deref().unwrap();
        assert!(note.contains(&squatted.display().to_string()), "{note}");
        dirs.create().unwrap();
        let meta = std::fs::symlink_metadata(socket_dir).unwrap();
        assert!(meta.is_dir() && meta.uid() == uid() && meta.mode() & 0o777 == 0o700);
    }

    #[test]
    fn a_linked_fallback_socket_dir_is_passed_over() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&temp).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let squatted = temp.join(format!("reef-{}", uid()));
        std::os::unix::fs::symlink(&elsewhere, &squatted).unwrap();
        let env = env(&[
            ("HOME", &tmp.path().join("home")),
            ("XDG_RUNTIME_DIR", &long_runtime(tmp.path())),
            ("TMPDIR", &temp),
        ]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert!(
            dirs.socket_note
                .as_deref()
                .unwrap()
                .contains("symbolic link")
        );
        assert_passed_over(&dirs, &squatted, &temp);
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // Each placement picks another name: nobody can predict it...
        let other = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert_ne!(other.socket, dirs.socket);
        // ...except that the dir the lock file names is used again while it is ours and private.
        drop(UpLock::acquire(&dirs).unwrap());
        let again = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert_eq!(again.socket, dirs.socket);
        let socket_dir = dirs.socket.parent().unwrap();
        std::fs::set_permissions(socket_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let loose = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert_ne!(loose.socket, dirs.socket);
    }

    #[test]
    fn another_users_fallback_socket_dir_is_passed_over() {
        if uid() != 0 {
            eprintln!("skipped: needs root to give a directory to another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let squatted = temp.join("reef-0");
        std::fs::create_dir(&squatted).unwrap();
        std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
        let env = env(&[
            ("HOME", &tmp.path().join("home")),
            ("XDG_RUNTIME_DIR", &long_runtime(tmp.path())),
            ("TMPDIR", &temp),
        ]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert!(dirs.socket_note.as_deref().unwrap().contains("uid 65534"));
        assert_passed_over(&dirs, &squatted, &temp);
        assert_eq!(std::fs::read_dir(&squatted).unwrap().count(), 0);
        assert_eq!(mode(&squatted), 0o777, "another user's dir is left alone");
    }

    #[test]
    fn a_linked_runtime_socket_dir_is_passed_over() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        let runtime = tmp.path().join("run");
        let elsewhere = tmp.path().join("elsewhere");
        for dir in [&temp, &runtime, &elsewhere] {
            std::fs::create_dir(dir).unwrap();
        }
        let squatted = runtime.join("reef");
        std::os::unix::fs::symlink(&elsewhere, &squatted).unwrap();
        let env = env(&[
            ("HOME", &tmp.path().join("home")),
            ("XDG_RUNTIME_DIR", &runtime),
            ("TMPDIR", &temp),
        ]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        assert_passed_over(&dirs, &squatted, &temp);
    }

    #[test]
    fn a_socket_dir_squatted_after_placement_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = tmp.path().join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let env = env(&[
            ("HOME", &tmp.path().join("home")),
            ("XDG_RUNTIME_DIR", &long_runtime(tmp.path())),
            ("TMPDIR", &temp),
        ]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        let squatted = dirs.socket.parent().unwrap();
        std::os::unix::fs::symlink(tmp.path(), squatted).unwrap();
        let err = format!("{:#}", dirs.create().unwrap_err());
        assert!(
            err.contains(&squatted.display().to_string())
                && err.contains("symbolic link")
                && err.contains("TMPDIR"),
            "{err}"
        );
    }

    #[test]
    fn linked_state_and_logs_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let env = env(&[("HOME", &tmp.path().join("home"))]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        std::fs::create_dir_all(dirs.dir.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dirs.dir).unwrap();
        let err = format!("{:#}", dirs.create().unwrap_err());
        assert!(
            err.contains(&dirs.dir.display().to_string()) && err.contains("remove the link"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

        std::fs::remove_file(&dirs.dir).unwrap();
        std::fs::create_dir(&dirs.dir).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dirs.logs).unwrap();
        let err = format!("{:#}", dirs.create().unwrap_err());
        assert!(err.contains(&dirs.logs.display().to_string()), "{err}");
    }

    #[test]
    fn a_linked_lock_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(&[("HOME", &tmp.path().join("home"))]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        dirs.create().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &dirs.lock).unwrap();
        let err = format!("{:#}", UpLock::acquire(&dirs).unwrap_err());
        assert!(
            err.contains(&dirs.lock.display().to_string()) && err.contains("symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    fn already_running(result: Result<UpLock>) -> AlreadyRunning {
        result
            .unwrap_err()
            .downcast::<AlreadyRunning>()
            .expect("an AlreadyRunning error")
    }

    #[test]
    fn the_up_lock_is_exclusive_and_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(&[("HOME", &tmp.path().join("home"))]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        dirs.create().unwrap();
        let lock = UpLock::acquire(&dirs).unwrap();
        let text = std::fs::read_to_string(&dirs.lock).unwrap();
        assert_eq!(
            text,
            format!(
                "{}\n{}\n{}\n",
                std::process::id(),
                dirs.socket.display(),
                dirs.script.display()
            )
        );
        assert_eq!(dirs.running_socket(), dirs.socket);
        let second = already_running(UpLock::acquire(&dirs));
        assert_eq!(second.pid, std::process::id().to_string());
        assert_eq!(std::fs::read_to_string(&dirs.lock).unwrap(), text);
        drop(lock);
        drop(UpLock::acquire(&dirs).unwrap());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn deleting_the_state_dir_does_not_release_the_up_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(&[("HOME", &tmp.path().join("home"))]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        dirs.create().unwrap();
        let lock = UpLock::acquire(&dirs).unwrap();
        std::fs::remove_dir_all(&dirs.dir).unwrap();
        dirs.create().unwrap();
        let second = already_running(UpLock::acquire(&dirs));
        assert_eq!(second.pid, std::process::id().to_string());
        assert!(
            std::fs::read_to_string(&dirs.lock)
                .unwrap_or_default()
                .is_empty(),
            "the refused one wrote nothing"
        );
        drop(lock);
        drop(UpLock::acquire(&dirs).unwrap());
    }

    /// Run by [`another_users_lock_name_does_not_block_reef`] as another user: holds the
    /// abstract name in `REEF_TEST_SQUAT`, says so, and lets go when its stdin closes.
    #[cfg(target_os = "linux")]
    #[test]
    #[ignore = "a helper, run by another_users_lock_name_does_not_block_reef"]
    fn squatter() {
        use std::io::Read;
        use std::os::linux::net::SocketAddrExt;
        let Ok(name) = std::env::var("REEF_TEST_SQUAT") else {
            return;
        };
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _held = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        println!("squatter-holds-the-name");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn another_users_lock_name_does_not_block_reef() {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        if uid() != 0 {
            eprintln!("skipped: needs root to run a process as another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let env = env(&[("HOME", &tmp.path().join("home"))]);
        let dirs = TopologyDirs::for_script(&script(tmp.path()), &env).unwrap();
        dirs.create().unwrap();
        let mut squatter = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "layout::tests::squatter",
                "--ignored",
                "--nocapture",
            ])
            .env("REEF_TEST_SQUAT", format!("reef/{}/{}", uid(), dirs.id))
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(squatter.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.contains("squatter-holds-the-name") {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the squatter ended early: {seen}"
            );
            seen.push_str(&line);
        }
        // The squatter is warned about; the file lock alone still makes reef up unique.
        let lock = UpLock::acquire(&dirs).unwrap();
        assert!(lock._name.is_none());
        let second = already_running(UpLock::acquire(&dirs));
        assert_eq!(second.pid, std::process::id().to_string());
        drop(squatter.stdin.take());
        assert!(squatter.wait().unwrap().success());
    }
}
