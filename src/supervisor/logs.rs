//! Per-instance log files.
//!
//! Gateways write straight to their log file ([`open_for_gateway`], O_APPEND), so the log keeps
//! working when reef itself is gone, and a slow disk never blocks a pipe. reef rotates the logs
//! by copy-and-truncate: a rotation never blocks or breaks a writer, whose next append lands at
//! the new end.
//!
//! # The bound
//!
//! On disk, per instance: at most `(1 + KEEP) × ROTATE_AT` = 3 × 10 MiB — the live log plus
//! `NAME.log.1` and `NAME.log.2`, each copy holding the newest 10 MiB of what was rotated and what
//! came during the copy (at most [`copy_slack`], 640 KiB, more) — plus what the gateway writes
//! in about one `CHECK_EVERY` (1 s), while the live log waits for
//! the next check. Every [`CHECK_EVERY`] the supervisor calls [`rotate_all`] on the logs that
//! [`LogWatch`] saw written since the last look (inotify), and on all of them every
//! [`FULL_CHECK_EVERY`] or when events may have been lost: an idle colony costs no check at all,
//! a flooding gateway one a second. A check that finds
//! the live log past [`ROTATE_AT`] copies only its newest `ROTATE_AT` bytes, so a flood (a
//! gateway writing 20 MB/s) costs at most 31.25 MiB plus about 20 MB. What is written during the
//! copy goes along (copied again until the log holds still), so only what lands between the last
//! look and the truncation, microseconds, can be lost, as with any copy-and-truncate; beyond
//! the slack (a gateway writing over ~100 MB/s) the rest of the copy's time is cut.
//!
//! # Links
//!
//! reef never writes through a symbolic link: the logs directory and the logs are opened with
//! O_NOFOLLOW (a linked log is an error that names it), and a rotated name that is a link is
//! replaced by a fresh file, never written through.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};

/// A log is rotated once it grows past this.
pub const ROTATE_AT: u64 = 10 << 20;
/// Rotated copies kept: `NAME.log.1` (newest) and `NAME.log.2`.
pub const KEEP: u32 = 2;
/// How often the supervisor should call [`rotate_all`] on the logs written meanwhile.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often every log is checked, written or not (a safety net under the watch).
pub const FULL_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Which logs were written since the last look, from inotify events on the logs directory.
///
/// The events are read only when [`LogWatch::due`] looks, once per [`CHECK_EVERY`]: between
/// looks the kernel queues them (and merges repeats), so a gateway that floods its log with
/// thousands of writes a second wakes reef no more than an idle one. (A watcher thread that
/// reads each event as it comes, as `notify` does for the script's files, cost a flooding
/// colony a tenth of a core.) A full queue is reported by the kernel, and then every log is
/// checked.
pub struct LogWatch {
    dir: PathBuf,
    /// The watch, and the device and inode of the directory it watches.
    inotify: Option<(nix::sys::inotify::Inotify, (u64, u64))>,
    last_full: std::time::Instant,
}

impl LogWatch {
    /// Watches `dir` (the topology's logs directory). A watch that cannot be set up is retried
    /// at every look; meanwhile every log is checked.
    pub fn new(dir: PathBuf) -> LogWatch {
        LogWatch {
            inotify: watch_dir(&dir),
            dir,
            last_full: std::time::Instant::now(),
        }
    }

    /// The logs among `logs` to check now: those written since the last look; all of them when
    /// events may have been lost or a full check is due.
    pub fn due(&mut self, logs: impl FnOnce() -> Vec<PathBuf>) -> Vec<PathBuf> {
        let (written, lost) = match &self.inotify {
            // A directory removed and made again between two looks is another inode, whether
            // or not the kernel told the watch.
            Some((inotify, watched)) if identity(&self.dir) == Some(*watched) => drain(inotify),
            _ => (std::collections::BTreeSet::new(), true),
        };
        if lost {
            // The directory went (and may be back), the queue overflowed, or no watch yet.
            self.inotify = watch_dir(&self.dir);
        }
        if lost || self.last_full.elapsed() >= FULL_CHECK_EVERY {
            self.last_full = std::time::Instant::now();
            return logs();
        }
        if written.is_empty() {
            return Vec::new();
        }
        logs()
            .into_iter()
            .filter(|log| log.file_name().is_some_and(|name| written.contains(name)))
            .collect()
    }
}

/// The device and inode of `dir`.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// A non-blocking inotify instance watching `dir` for writes and new files, with the
/// directory's identity.
fn watch_dir(dir: &Path) -> Option<(nix::sys::inotify::Inotify, (u64, u64))> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let before = identity(dir)?;
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR,
        )
        .ok()?;
    // The directory watched is the one identified (not one made again in between).
    (identity(dir) == Some(before)).then_some((inotify, before))
}

/// Every event queued since the last look: the names written, and whether events may have
/// been lost (the queue overflowed, or the directory was removed or moved).
fn drain(inotify: &nix::sys::inotify::Inotify) -> (std::collections::BTreeSet<OsString>, bool) {
    use nix::sys::inotify::AddWatchFlags;
    let mut written = std::collections::BTreeSet::new();
    let gone = AddWatchFlags::IN_Q_OVERFLOW
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_IGNORED;
    loop {
        match inotify.read_events() {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    if event.mask.intersects(gone) {
                        return (written, true);
                    }
                    if let Some(name) = event.name {
                        written.insert(name);
                    }
                }
            }
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => return (written, false),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return (written, true),
        }
    }
}

/// Rotates each log that grew past [`ROTATE_AT`], keeping [`KEEP`] copies. Blocking (run it on
/// a blocking thread). A failure is logged as a warning, once until it changes or the log
/// rotates again (it is retried every call), and the other logs are still checked.
pub fn rotate_all(logs: &[PathBuf]) {
    static WARNED: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    for log in logs {
        // One lstat per log and second: a small regular file needs nothing more (this runs for
        // every gateway, every second, so it must cost next to nothing).
        match std::fs::symlink_metadata(log) {
            Ok(meta) if meta.is_file() && meta.len() <= ROTATE_AT => continue,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        let outcome = rotate_if_large(log, ROTATE_AT, KEEP);
        let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(_) => {
                warned.remove(log);
            }
            Err(err) => {
                let message = err.to_string();
                if warned.get(log) != Some(&message) {
                    tracing::warn!(log = %log.display(), "cannot rotate the log: {message}");
                    warned.insert(log.clone(), message);
                }
            }
        }
    }
}

/// The extended attribute of a rotated copy that holds the offset in the log its first byte
/// had.
const ROTATED_FROM: &str = "user.reef.rotated-from";

/// Where the rotated copy `copy` starts in the log it was copied from, when recorded.
pub fn rotated_from(copy: &File) -> Option<u64> {
    let mut value = [0u8; 24];
    let length = rustix::fs::fgetxattr(copy, ROTATED_FROM, &mut value[..]).ok()?;
    std::str::from_utf8(&value[..length]).ok()?.parse().ok()
}

/// How many times a rotation copies what was written during its copy before truncating.
const COPY_ROUNDS: u32 = 8;

/// How much a rotated copy may hold beyond `limit`: what the gateway wrote while the newest
/// `limit` bytes were being copied (a flood of more is cut there).
pub const fn copy_slack(limit: u64) -> u64 {
    limit / 16
}

/// Rotates `log` when it is larger than `limit`: shifts `.1`..`.keep` up one (the oldest goes),
/// copies the newest `limit` bytes of the log to a fresh `.1`, then truncates the log in place.
/// With `keep` 0 the log is only truncated. Returns whether it rotated; a missing log is not an
/// error. A log that is a symbolic link or not a regular file is refused.
pub fn rotate_if_large(log: &Path, limit: u64, keep: u32) -> io::Result<bool> {
    let (dir_path, name) = split(log)?;
    let dir = match open_dir(dir_path) {
        Ok(dir) => dir,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    let file = match open_log_at(&dir, name, log, OFlags::RDWR) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if file.metadata()?.len() <= limit {
        return Ok(false);
    }
    if keep > 0 {
        let numbered = |n: u32| {
            let mut numbered = name.to_os_string();
            numbered.push(format!(".{n}"));
            numbered
        };
        // Renames replace a link at the destination; they never write through it.
        for n in (1..keep).rev() {
            match rustix::fs::renameat(&dir, numbered(n), &dir, numbered(n + 1)) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(err) => return Err(err.into()),
            }
        }
        // Copy into a fresh private file, then put it in place as `.1`.
        let mut temp_name = OsStr::new(".").to_os_string();
        temp_name.push(name);
        temp_name.push(".rotating");
        match rustix::fs::unlinkat(&dir, &temp_name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(err) => return Err(err.into()),
        }
        let mut temp = File::from(rustix::fs::openat(
            &dir,
            &temp_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        // Measured again: the newest bytes are the ones worth keeping.
        // What the gateway writes during the copy goes along too (up to `copy_slack`), until
        // the log holds still: a few rounds at most, each copying
        // what came during the last, so that the truncation below drops next to nothing.
        let mut end = file.metadata()?.len();
        let from = end.saturating_sub(limit);
        let mut source = &file;
        source.seek(SeekFrom::Start(from))?;
        io::copy(&mut source.take(limit), &mut temp)?;
        let mut room = copy_slack(limit);
        for _ in 0..COPY_ROUNDS {
            let now = file.metadata()?.len();
            if now <= end || room == 0 {
                break;
            }
            source.seek(SeekFrom::Start(end))?;
            room -= io::copy(&mut source.take((now - end).min(room)), &mut temp)?;
            end = now;
        }
        // Where the copy starts in the log, for followers that must pick up where they were
        // (`reef logs -f`); a file system without user attributes leaves them to search.
        let _ = rustix::fs::fsetxattr(
            &temp,
            ROTATED_FROM,
            from.to_string().as_bytes(),
            rustix::fs::XattrFlags::empty(),
        );
        drop(temp);
        rustix::fs::renameat(&dir, &temp_name, &dir, numbered(1))?;
    }
    file.set_len(0)?;
    Ok(true)
}

/// Opens `log` for a gateway's stdout and stderr: append, created 0600, the logs directory
/// created (0700) if it was deleted. A log (or logs directory) that is a symbolic link is an
/// error that names it and is never written through; so is anything but a regular file.
pub fn open_for_gateway(log: &Path) -> io::Result<File> {
    let (dir_path, name) = split(log)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir_path)
        .map_err(|err| annotate(err, format!("cannot create {}", dir_path.display())))?;
    let dir = open_dir(dir_path)?;
    let file = open_log_at(
        &dir,
        name,
        log,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
    )?;
    // O_NONBLOCK only kept the open of a FIFO from hanging; the gateway gets a plain file.
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    Ok(file)
}

/// The last `lines` lines of a log (all of it if shorter). A linked log is refused.
pub fn tail(log: &Path, lines: usize) -> io::Result<String> {
    let (dir_path, name) = split(log)?;
    let dir = open_dir(dir_path)?;
    let mut file = open_log_at(&dir, name, log, OFlags::RDONLY)?;
    let size = file.metadata()?.len();
    // Read back in chunks until enough newlines are seen.
    let mut start = size;
    let mut buffer: Vec<u8> = Vec::new();
    while start > 0 && buffer.iter().filter(|b| **b == b'\n').count() <= lines {
        let chunk = start.min(64 * 1024);
        start -= chunk;
        file.seek(SeekFrom::Start(start))?;
        let mut piece = vec![0; chunk as usize];
        file.read_exact(&mut piece)?;
        piece.extend_from_slice(&buffer);
        buffer = piece;
    }
    let text = String::from_utf8_lossy(&buffer);
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = all[skip..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

fn split(log: &Path) -> io::Result<(&Path, &OsStr)> {
    match (log.parent(), log.file_name()) {
        (Some(dir), Some(name)) => Ok((
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a log file", log.display()),
        )),
    }
}

/// The logs directory, not followed if it is a link (its ancestors are reef's state dirs).
fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| match err {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR if is_link(dir) => link_error(dir),
        err => annotate(err.into(), format!("cannot open {}", dir.display())),
    })
}

/// Opens the regular file `name` in `dir` (whose path is `log`) without following a link and
/// without blocking on a FIFO.
fn open_log_at(dir: &OwnedFd, name: &OsStr, log: &Path, access: OFlags) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|err| match err {
        rustix::io::Errno::LOOP => link_error(log),
        rustix::io::Errno::NXIO => not_regular(log),
        err => annotate(err.into(), format!("cannot open {}", log.display())),
    })?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(not_regular(log));
    }
    Ok(file)
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
}

fn link_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; reef never writes logs through a link: remove it (`rm {}`) and reef creates a plain file",
            path.display(),
            path.display()
        ),
    )
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file; remove it and reef creates one",
            path.display()
        ),
    )
}

fn annotate(err: io::Error, context: String) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    use super::*;

    fn len(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).map_or(0, |meta| meta.len())
    }

    #[test]
    fn rotation_keeps_numbered_copies_and_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, "first\n").unwrap();
        assert!(!rotate_if_large(&log, 100, 2).unwrap());
        std::fs::write(&log, "a".repeat(100)).unwrap();
        assert!(rotate_if_large(&log, 100, 2).is_ok_and(|rotated| !rotated));
        std::fs::write(&log, "a".repeat(200)).unwrap();
        assert!(rotate_if_large(&log, 100, 2).unwrap());
        assert_eq!(len(&log), 0);
        std::fs::write(&log, "b".repeat(150)).unwrap();
        assert!(rotate_if_large(&log, 100, 2).unwrap());
        std::fs::write(&log, "c".repeat(150)).unwrap();
        assert!(rotate_if_large(&log, 100, 2).unwrap());
        // Two copies, newest first, each the newest 100 bytes of what was rotated.
        let copy = |n: u32| std::fs::read_to_string(dir.path().join(format!("main.log.{n}")));
        assert_eq!(copy(1).unwrap(), "c".repeat(100));
        assert_eq!(copy(2).unwrap(), "b".repeat(100));
        assert!(copy(3).is_err());
        let mode = std::fs::metadata(dir.path().join("main.log.1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp file is left: {names:?}");
    }

    #[test]
    fn the_copy_holds_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        let text: String = (0..100).map(|i| format!("{i:04}\n")).collect();
        std::fs::write(&log, &text).unwrap();
        assert!(rotate_if_large(&log, 50, 1).unwrap());
        let copy = std::fs::read_to_string(dir.path().join("main.log.1")).unwrap();
        assert_eq!(copy, text[text.len() - 50..]);
    }

    #[test]
    fn keeping_no_copy_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, "a".repeat(200)).unwrap();
        assert!(rotate_if_large(&log, 100, 0).unwrap());
        assert_eq!(len(&log), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_log_or_logs_dir_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!rotate_if_large(&dir.path().join("none.log"), 1, 2).unwrap());
        assert!(!rotate_if_large(&dir.path().join("gone/none.log"), 1, 2).unwrap());
        rotate_all(&[dir.path().join("none.log")]);
    }

    #[test]
    fn a_linked_log_is_never_rotated_nor_truncated_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x".repeat(500)).unwrap();
        let log = dir.path().join("main.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let err = rotate_if_large(&log, 100, 2).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x".repeat(500));
        rotate_all(std::slice::from_ref(&log));
        assert_eq!(len(&victim), 500);
    }

    #[test]
    fn a_rotated_name_that_is_a_link_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        let victims = [dir.path().join("victim1"), dir.path().join("victim2")];
        for (n, victim) in victims.iter().enumerate() {
            std::fs::write(victim, "precious").unwrap();
            std::os::unix::fs::symlink(victim, dir.path().join(format!("main.log.{}", n + 1)))
                .unwrap();
        }
        for round in 0..3 {
            std::fs::write(&log, format!("{round}").repeat(200)).unwrap();
            assert!(rotate_if_large(&log, 100, 2).unwrap());
        }
        for victim in &victims {
            assert_eq!(std::fs::read_to_string(victim).unwrap(), "precious");
        }
        for n in 1..=2 {
            let copy = dir.path().join(format!("main.log.{n}"));
            assert!(std::fs::symlink_metadata(&copy).unwrap().is_file());
        }
    }

    #[test]
    fn a_linked_logs_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("main.log"), "y".repeat(200)).unwrap();
        let logs = dir.path().join("logs");
        std::os::unix::fs::symlink(&elsewhere, &logs).unwrap();
        let err = rotate_if_large(&logs.join("main.log"), 100, 2).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = open_for_gateway(&logs.join("main.log")).unwrap_err();
        assert!(
            err.to_string().contains(&logs.display().to_string()),
            "{err}"
        );
        assert_eq!(len(&elsewhere.join("main.log")), 200);
    }

    #[test]
    fn gateway_logs_are_private_appended_and_recreated_with_their_dir() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state/logs/main.log");
        let mut file = open_for_gateway(&log).unwrap();
        file.write_all(b"one\n").unwrap();
        let mut again = open_for_gateway(&log).unwrap();
        again.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&log), 0o600);
        assert_eq!(mode(log.parent().unwrap()), 0o700);
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(flags.contains(OFlags::APPEND) && !flags.contains(OFlags::NONBLOCK));

        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        open_for_gateway(&log)
            .unwrap()
            .write_all(b"three\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "three\n");
        assert_eq!(mode(log.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_linked_gateway_log_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let log = dir.path().join("main.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let err = open_for_gateway(&log).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&log.display().to_string()) && message.contains("remove it"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A dangling link is not created through either.
        std::fs::remove_file(&victim).unwrap();
        assert!(open_for_gateway(&log).is_err());
        assert!(!victim.exists());
    }

    #[test]
    fn a_gateway_log_that_is_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = open_for_gateway(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let sub = dir.path().join("dir.log");
        std::fs::create_dir(&sub).unwrap();
        assert!(open_for_gateway(&sub).is_err());
    }

    #[test]
    fn the_watch_names_the_logs_written_since_the_last_look() {
        let dir = tempfile::tempdir().unwrap();
        let logs_dir = dir.path().join("logs");
        std::fs::create_dir(&logs_dir).unwrap();
        let a = logs_dir.join("a.log");
        let b = logs_dir.join("b.log");
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let all = || vec![a.clone(), b.clone()];
        let mut watch = LogWatch::new(logs_dir.clone());
        assert!(watch.due(all).is_empty(), "nothing written yet");
        // Thousands of writes between two looks: one name, read in one go.
        let mut file = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
        for _ in 0..5000 {
            file.write_all(b"x\n").unwrap();
        }
        assert_eq!(watch.due(all), std::slice::from_ref(&b));
        assert!(watch.due(all).is_empty(), "each write is seen once");
        // A removed and remade directory: everything is checked, then watched again.
        std::fs::remove_dir_all(&logs_dir).unwrap();
        std::fs::create_dir(&logs_dir).unwrap();
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        assert_eq!(watch.due(all), all());
        std::fs::write(&a, "again\n").unwrap();
        assert_eq!(watch.due(all), std::slice::from_ref(&a));
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(tail(&log, 2).unwrap(), "line 999\nline 1000\n");
        assert_eq!(tail(&log, 0).unwrap(), "");
        std::fs::write(&log, "only\n").unwrap();
        assert_eq!(tail(&log, 5).unwrap(), "only\n");
        let missing = tail(&dir.path().join("none.log"), 5).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    /// Writes `rate` bytes per second into `log` (opened as a gateway's) until stopped,
    /// counting what it wrote.
    struct Flood {
        written: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        writer: Option<std::thread::JoinHandle<()>>,
    }

    /// What one write adds.
    const CHUNK: usize = 64 * 1024;

    impl Flood {
        fn start(log: &Path, rate: u64) -> Flood {
            let written = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut file = open_for_gateway(log).unwrap();
            let writer = {
                let (written, stop) = (written.clone(), stop.clone());
                std::thread::spawn(move || {
                    let line = format!("{}\n", "f".repeat(127));
                    let chunk = line.repeat(CHUNK / line.len());
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        file.write_all(chunk.as_bytes()).unwrap();
                        let total =
                            written.fetch_add(CHUNK as u64, Ordering::SeqCst) + CHUNK as u64;
                        // Pacing to the rate, so the test does not fill the disk.
                        let due = Duration::from_secs_f64(total as f64 / rate as f64);
                        if let Some(ahead) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(ahead);
                        }
                    }
                })
            };
            Flood {
                written,
                stop,
                writer: Some(writer),
            }
        }

        fn written(&self) -> u64 {
            self.written.load(Ordering::SeqCst)
        }
    }

    impl Drop for Flood {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(writer) = self.writer.take() {
                writer.join().unwrap();
            }
        }
    }

    /// Runs `rotate` every `every` for `run` while a flood writes `rate` bytes per second;
    /// checks before and after each rotation that the files together stay within
    /// `(1 + keep) × limit` plus what was written since the previous check began (plus one
    /// write in flight), and that each copy holds at most `limit`. Returns the rotations.
    fn flood_stays_bounded(
        limit: u64,
        keep: u32,
        every: Duration,
        run: Duration,
        rate: u64,
        rotate: impl Fn(&Path),
    ) -> u32 {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/flood.log");
        let flood = Flood::start(&log, rate);
        let total = || -> u64 {
            std::fs::read_dir(log.parent().unwrap())
                .unwrap()
                .filter_map(Result::ok)
                .map(|entry| entry.metadata().map_or(0, |meta| meta.len()))
                .sum()
        };
        let started = Instant::now();
        let mut previous_check = flood.written();
        let mut rotations = 0;
        while started.elapsed() < run {
            std::thread::sleep(every);
            let since = flood.written() - previous_check;
            let bound = (1 + u64::from(keep)) * limit
                + u64::from(keep) * copy_slack(limit)
                + since
                + 2 * CHUNK as u64;
            let before = total();
            assert!(
                before <= bound,
                "{before} bytes on disk before a check, more than {bound}"
            );
            previous_check = flood.written();
            let live = len(&log);
            rotate(&log);
            if len(&log) < live {
                rotations += 1;
            }
            for n in 1..=keep {
                let copy = len(&PathBuf::from(format!("{}.{n}", log.display())));
                assert!(
                    copy <= limit + copy_slack(limit),
                    "copy {n} holds {copy} bytes, more than {limit} and its slack"
                );
            }
            let since = flood.written() - previous_check;
            let after = total();
            let bound = (1 + u64::from(keep)) * limit
                + u64::from(keep) * copy_slack(limit)
                + since
                + 2 * CHUNK as u64;
            assert!(
                after <= bound,
                "{after} bytes on disk after a check, more than {bound}"
            );
            assert!(len(&PathBuf::from(format!("{}.{}", log.display(), keep + 1))) == 0);
        }
        drop(flood);
        rotations
    }

    #[test]
    fn a_flood_stays_bounded_with_small_limits() {
        let limit = 256 << 10;
        let rotations = flood_stays_bounded(
            limit,
            2,
            Duration::from_millis(25),
            Duration::from_millis(800),
            // About 1 MiB per check: every check rotates.
            40 << 20,
            |log| {
                rotate_if_large(log, limit, 2).unwrap();
            },
        );
        assert!(rotations >= 10, "{rotations} rotations");
    }

    #[test]
    fn a_flood_stays_bounded_at_the_real_constants() {
        // 30 MB/s: a check sees three times ROTATE_AT.
        let rotations = flood_stays_bounded(
            ROTATE_AT,
            KEEP,
            CHECK_EVERY,
            Duration::from_millis(3_500),
            30 << 20,
            |log| rotate_all(&[log.to_path_buf()]),
        );
        assert!(rotations >= 2, "{rotations} rotations");
    }
}
