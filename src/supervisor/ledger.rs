//! The ledger: which gateway processes this topology's reef started, written ahead of every
//! spawn, so that a reef killed at any instant leaves nothing the next one cannot find.
//!
//! One JSON file per topology (`ledger.json` beside the lock), rewritten atomically (temp file,
//! fsync, rename, fsync of the directory) by a thread of its own that owns the entries:
//! - before a first spawn, [`LedgerHandle::intend`] records the instance, its spawn nonce, the
//!   nonce reserved for its next spawn, and its spec, and returns only once that is durable.
//!   Concurrent intents share one write (group commit), so starting 250 gateways costs a
//!   handful of fsyncs, not 250;
//! - a restart uses the reserved nonce, already on disk, so it needs no fsync before the fork:
//!   [`LedgerHandle::put_durable`] records the new spawn with a fresh reservation in the
//!   background, and the spawn after that waits for it only if it is not on disk yet;
//! - after the spawn, [`LedgerHandle::record`] adds pid and start time (not awaited: the nonce
//!   in the process's environment already makes it findable);
//! - after an exit, [`LedgerHandle::ended`] clears the pid (the reservation stays); an instance
//!   stopped for good is dropped by [`LedgerHandle::retire`].
//!
//! An entry proves nothing by itself: pids are reused and the file may be forged. reef signals
//! a process only when its pid, start time *and* the marker variables in its environment
//! (topology, spawn nonce) match. A ledger that cannot be parsed is reported and ignored.
//! Files are never opened through a symlink.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::status::PortSummary;

/// How long changes nobody waits for are gathered before the file is written: long enough to
/// batch a colony's start, short enough that a spawn's pid is on file before the gateway can
/// have started helpers of its own (until then only the intent names it, and a helper that
/// left its group could pass for the gateway if the gateway died too).
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Format 2 added spawn nonces, intents, dependencies, stop settings and restart counts;
/// format 1 files are still read.
pub const LEDGER_FORMAT: u32 = 2;

/// One gateway process reef started, or is about to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// The spawn nonce in the process's `REEF_SPAWN` variable.
    #[serde(default)]
    pub spawn: String,
    /// The nonce the next spawn of this instance will carry, on disk before that spawn.
    #[serde(default)]
    pub next_spawn: Option<String>,
    /// `None` while only the intent is recorded, and after the process ended.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The spawn's process has ended: nothing carrying its nonce is the gateway any more.
    #[serde(default)]
    pub ended: bool,
    /// Start time in clock ticks since boot.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// When reef spawned it (seconds since the Unix epoch), for `reef status` after adoption.
    #[serde(default)]
    pub started_at: f64,
    /// `Instance::spec_hash` of the spec it was started with.
    pub spec_hash: String,
    /// So that `reef down` without a script stops dependents first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: f64,
    /// Restarts so far and how the last process ended: they survive adoption.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit: Option<String>,
    pub ports: PortSummary,
    pub log: PathBuf,
}

fn default_stop_signal() -> String {
    "SIGTERM".into()
}

fn default_stop_timeout() -> f64 {
    10.0
}

impl Entry {
    /// Whether the recorded process is still alive with the recorded start time. Not a proof
    /// of ownership on its own (see [`crate::host::markers::is_ours`]).
    pub fn is_alive(&self) -> bool {
        match (self.pid, self.start_ticks) {
            (Some(pid), Some(ticks)) => crate::host::identity::is_same_process(pid, ticks),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LedgerFile {
    format: u32,
    script: PathBuf,
    entries: Vec<Entry>,
}

/// Why a ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot read the ledger {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(
        "the ledger {path} is corrupt ({error}); ignoring it: no gateway it lists is adopted or signalled"
    )]
    Corrupt { path: String, error: String },
    #[error("cannot write the ledger {path}: {error}")]
    Write { path: String, error: String },
}

/// Reads the entries at `path`: none if there is no file; an error if it is corrupt or a
/// symlink.
pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let read_error = |error| LedgerError::Read {
        path: path.display().to_string(),
        error,
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(read_error(error)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    let corrupt = |error: String| LedgerError::Corrupt {
        path: path.display().to_string(),
        error,
    };
    let file: LedgerFile = serde_json::from_str(&text).map_err(|err| corrupt(err.to_string()))?;
    if file.format != 1 && file.format != LEDGER_FORMAT {
        return Err(corrupt(format!("unknown format {}", file.format)));
    }
    Ok(file.entries)
}

enum Job {
    /// Record (or replace) an entry; `durable` is answered once it is on disk.
    Put(Box<Entry>, Option<oneshot::Sender<Result<(), String>>>),
    Record {
        name: String,
        spawn: String,
        pid: u32,
        start_ticks: Option<u64>,
    },
    Ended {
        name: String,
        spawn: String,
    },
    Retire {
        name: String,
    },
    Flush(std::sync::mpsc::Sender<()>),
}

/// The ledger of a running `reef up`: a handle to the thread that owns the entries and writes
/// the file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LedgerHandle {
    jobs: std::sync::mpsc::Sender<Job>,
    path: PathBuf,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl LedgerHandle {
    /// Starts the writer thread for the ledger at `path`, beginning with no entries (adopted
    /// gateways are put back by [`LedgerHandle::put`]).
    pub fn start(path: PathBuf, script: PathBuf) -> std::io::Result<LedgerHandle> {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let target = path.clone();
        std::thread::Builder::new()
            .name("reef-ledger".into())
            .spawn(move || write_forever(&target, &script, &inbox))?;
        Ok(LedgerHandle { jobs, path })
    }

    /// Records the intent to spawn `entry` (no pid yet); resolves once it is on disk.
    pub async fn intend(&self, entry: Entry) -> Result<(), LedgerError> {
        let (durable, written) = oneshot::channel();
        let gone = || LedgerError::Write {
            path: self.path.display().to_string(),
            error: "the ledger's writer is gone".into(),
        };
        self.jobs
            .send(Job::Put(Box::new(entry), Some(durable)))
            .map_err(|_| gone())?;
        written
            .await
            .map_err(|_| gone())?
            .map_err(|error| LedgerError::Write {
                path: self.path.display().to_string(),
                error,
            })
    }

    /// Puts an entry back without waiting (an adopted gateway).
    pub fn put(&self, entry: Entry) {
        let _ = self.jobs.send(Job::Put(Box::new(entry), None));
    }

    /// Adds the pid and start time to `name`'s entry of spawn `spawn`.
    pub fn record(&self, name: &str, spawn: &str, pid: u32, start_ticks: Option<u64>) {
        let _ = self.jobs.send(Job::Record {
            name: name.into(),
            spawn: spawn.into(),
            pid,
            start_ticks,
        });
    }

    /// Records (or replaces) an entry; the answer comes once it is on disk, without holding
    /// up the caller.
    pub fn put_durable(&self, entry: Entry) -> oneshot::Receiver<Result<(), String>> {
        let (durable, written) = oneshot::channel();
        let _ = self.jobs.send(Job::Put(Box::new(entry), Some(durable)));
        written
    }

    /// Spawn `spawn` of `name` has ended: its pid no longer counts (a newer spawn keeps its
    /// entry). The reserved next nonce stays.
    pub fn ended(&self, name: &str, spawn: &str) {
        let _ = self.jobs.send(Job::Ended {
            name: name.into(),
            spawn: spawn.into(),
        });
    }

    /// `name` is stopped for good (stopped, disabled, removed, shut down): drops its entry.
    pub fn retire(&self, name: &str) {
        let _ = self.jobs.send(Job::Retire { name: name.into() });
    }

    /// Waits until every change so far is on disk (blocking).
    pub fn flush(&self) {
        let (done, written) = std::sync::mpsc::channel();
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = written.recv();
        }
    }
}

/// The writer thread: applies every queued change, then writes the newest content once and
/// answers everyone who waited for it.
fn write_forever(path: &Path, script: &Path, inbox: &std::sync::mpsc::Receiver<Job>) {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut written: Option<Option<String>> = None;
    loop {
        // Changes nobody waits for (pids, ends) are gathered for a moment: a colony starting
        // 250 gateways rewrites the file a few times, not once per gateway. Anyone waiting (an
        // intent, a flush) ends the wait at once.
        let Ok(first) = inbox.recv() else { return };
        let mut jobs = vec![first];
        jobs.extend(inbox.try_iter());
        let urgent = |job: &Job| matches!(job, Job::Put(_, Some(_)) | Job::Flush(_));
        if !jobs.iter().any(urgent) {
            let deadline = std::time::Instant::now() + GATHER;
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match inbox.recv_timeout(left) {
                    Ok(job) => {
                        let stop = urgent(&job);
                        jobs.push(job);
                        if stop {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let mut durable = Vec::new();
        let mut flushes = Vec::new();
        for job in jobs {
            match job {
                Job::Put(entry, ack) => {
                    entries.insert(entry.name.clone(), *entry);
                    durable.extend(ack);
                }
                Job::Record {
                    name,
                    spawn,
                    pid,
                    start_ticks,
                } => {
                    if let Some(entry) = entries.get_mut(&name).filter(|e| e.spawn == spawn) {
                        entry.pid = Some(pid);
                        entry.start_ticks = start_ticks;
                    }
                }
                Job::Ended { name, spawn } => {
                    if let Some(entry) = entries.get_mut(&name).filter(|e| e.spawn == spawn) {
                        entry.pid = None;
                        entry.start_ticks = None;
                        entry.ended = true;
                    }
                }
                Job::Retire { name } => {
                    entries.remove(&name);
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        let content = content(script, &entries);
        let result = if written.as_ref() == Some(&content) {
            Ok(())
        } else {
            store(path, content.as_deref())
        };
        match &result {
            Ok(()) => written = Some(content),
            Err(err) => tracing::error!(
                "cannot write the ledger {}: {err}; gateways started now are found by their markers only",
                path.display()
            ),
        }
        for ack in durable {
            let _ = ack.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The file's content for `entries`; `None` when there are none (no file).
fn content(script: &Path, entries: &BTreeMap<String, Entry>) -> Option<String> {
    (!entries.is_empty()).then(|| {
        let file = LedgerFile {
            format: LEDGER_FORMAT,
            script: script.to_path_buf(),
            entries: entries.values().cloned().collect(),
        };
        serde_json::to_string(&file).expect("ledgers serialize")
    })
}

/// Writes or removes the ledger file; recreates its directory if it was deleted.
fn store(path: &Path, content: Option<&str>) -> std::io::Result<()> {
    match content {
        Some(text) => match write_atomically(path, text.as_bytes()) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                write_atomically(path, text.as_bytes())
            }
            other => other,
        },
        None => match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        },
    }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new content, never a mix.
/// The temporary file is created exclusively (a planted symlink makes it fail, never followed);
/// the rename replaces a symlink at `path` itself, not its target.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, spawn: &str) -> Entry {
        Entry {
            name: name.into(),
            spawn: spawn.into(),
            next_spawn: None,
            pid: None,
            ended: false,
            start_ticks: None,
            started_at: 1.5,
            spec_hash: "00".into(),
            depends_on: vec![],
            stop_signal: "SIGTERM".into(),
            stop_timeout: 10.0,
            restarts: 0,
            last_exit: None,
            ports: PortSummary {
                gateway: 20000,
                browser_control: 20002,
                cdp_first: 20011,
                cdp_last: 20110,
            },
            log: "/tmp/x.log".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_intent_is_on_disk_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = LedgerHandle::start(path.clone(), "reef.lua".into()).unwrap();
        ledger.intend(entry("main", "a1")).await.unwrap();
        assert_eq!(read(&path).unwrap(), vec![entry("main", "a1")]);
        ledger.record("main", "a1", 42, Some(7));
        ledger.record("main", "stale", 43, Some(8));
        ledger.flush();
        let read_back = read(&path).unwrap();
        assert_eq!(read_back[0].pid, Some(42));
        assert_eq!(read_back[0].start_ticks, Some(7));
        ledger.ended("main", "older");
        ledger.flush();
        assert_eq!(
            read(&path).unwrap()[0].pid,
            Some(42),
            "another spawn keeps its pid"
        );
        ledger.ended("main", "a1");
        ledger.flush();
        let ended = &read(&path).unwrap()[0];
        assert!(
            ended.pid.is_none() && ended.ended,
            "an ended spawn keeps its entry"
        );
        let next = Entry {
            next_spawn: Some("c3".into()),
            ..entry("main", "b2")
        };
        ledger.put_durable(next.clone()).await.unwrap().unwrap();
        assert_eq!(read(&path).unwrap(), vec![next]);
        ledger.retire("main");
        ledger.flush();
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deleted_state_dir_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let path = state.join("ledger.json");
        let ledger = LedgerHandle::start(path.clone(), "reef.lua".into()).unwrap();
        std::fs::remove_dir_all(&state).unwrap();
        ledger.intend(entry("main", "b2")).await.unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
    }

    #[test]
    fn a_symlinked_ledger_is_not_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.json");
        std::fs::write(&target, "{}").unwrap();
        let path = dir.path().join("ledger.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(read(&path), Err(LedgerError::Read { .. })));
        write_atomically(&path, b"{\"format\":2,\"script\":\"x\",\"entries\":[]}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
    }

    #[test]
    fn corrupt_or_unknown_ledgers_are_refused_and_format_1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        std::fs::write(&path, "{\"format\": 2, \"script\"").unwrap();
        assert!(matches!(read(&path), Err(LedgerError::Corrupt { .. })));
        std::fs::write(&path, "{\"format\": 9, \"script\": \"x\", \"entries\": []}").unwrap();
        assert!(matches!(read(&path), Err(LedgerError::Corrupt { .. })));
        let old = r#"{"format": 1, "script": "x", "entries": [{"name": "main", "pid": 10,
            "start_ticks": 42, "started_at": 1.5, "spec_hash": "00",
            "ports": {"gateway": 20000, "browser_control": 20002, "cdp_first": 20011, "cdp_last": 20110},
            "log": "/tmp/x.log"}]}"#;
        std::fs::write(&path, old).unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries[0].pid, Some(10));
        assert_eq!(entries[0].stop_timeout, 10.0);
    }
}
