//! The ledger: which gateway processes this topology's reef started, so that the next `reef up`
//! adopts exactly the gateways it can prove are its own and touches nothing else.
//!
//! One JSON file per topology (`ledger.json` beside the lock), rewritten atomically (temp file,
//! fsync, rename) on every change. An entry proves ownership only while its pid is alive with
//! the recorded start time; pids are reused, so a live pid alone proves nothing. A ledger that
//! cannot be parsed is reported and ignored, never trusted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::status::PortSummary;
use crate::process;

pub const LEDGER_FORMAT: u32 = 1;

/// One gateway process reef started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// When reef spawned it (seconds since the Unix epoch), for `reef status` after adoption.
    #[serde(default)]
    pub started_at: f64,
    /// `Instance::spec_hash` of the spec it was started with.
    pub spec_hash: String,
    pub ports: PortSummary,
    pub log: PathBuf,
}

impl Entry {
    /// Whether the process is still the one this entry recorded.
    pub fn is_alive(&self) -> bool {
        process::is_same_process(self.pid, self.start_ticks)
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
    Write { path: String, error: std::io::Error },
}

/// The ledger of one topology, kept in memory and mirrored to disk on every change.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    script: PathBuf,
    entries: BTreeMap<String, Entry>,
    writer: Writer,
}

/// Where the file is written: right away, or by a thread that keeps only the newest content,
/// so that fsyncs never stall the supervisor.
#[derive(Debug)]
enum Writer {
    Inline,
    Background(std::sync::mpsc::Sender<Job>),
}

enum Job {
    /// The new content; `None` removes the file.
    Write(Option<String>),
    Flush(std::sync::mpsc::Sender<()>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Write(_) => "Write",
            Job::Flush(_) => "Flush",
        })
    }
}

impl Ledger {
    /// An empty ledger that will be written at `path`, on every change, before returning.
    pub fn new(path: PathBuf, script: PathBuf) -> Ledger {
        Ledger {
            path,
            script,
            entries: BTreeMap::new(),
            writer: Writer::Inline,
        }
    }

    /// An empty ledger whose writes happen on a thread of its own (inside `reef up`). Errors
    /// are logged there; [`Ledger::flush`] waits for the writes queued so far.
    pub fn in_background(path: PathBuf, script: PathBuf) -> std::io::Result<Ledger> {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let target = path.clone();
        std::thread::Builder::new()
            .name("reef-ledger".into())
            .spawn(move || write_forever(&target, &inbox))?;
        Ok(Ledger {
            path,
            script,
            entries: BTreeMap::new(),
            writer: Writer::Background(jobs),
        })
    }

    /// Waits until every change so far is on disk.
    pub fn flush(&self) {
        if let Writer::Background(jobs) = &self.writer {
            let (done, written) = std::sync::mpsc::channel();
            if jobs.send(Job::Flush(done)).is_ok() {
                let _ = written.recv();
            }
        }
    }

    /// The entries recorded at `path`: none if there is no file; an error if it is corrupt.
    pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(LedgerError::Read {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        let corrupt = |error: String| LedgerError::Corrupt {
            path: path.display().to_string(),
            error,
        };
        let file: LedgerFile =
            serde_json::from_str(&text).map_err(|err| corrupt(err.to_string()))?;
        if file.format != LEDGER_FORMAT {
            return Err(corrupt(format!("unknown format {}", file.format)));
        }
        Ok(file.entries)
    }

    pub fn record(&mut self, entry: Entry) -> Result<(), LedgerError> {
        self.entries.insert(entry.name.clone(), entry);
        self.save()
    }

    /// Forgets `name`'s process if it is still `pid` (a newer process keeps its entry).
    pub fn forget(&mut self, name: &str, pid: u32) -> Result<(), LedgerError> {
        if self.entries.get(name).is_some_and(|entry| entry.pid == pid) {
            self.entries.remove(name);
            self.save()?;
        }
        Ok(())
    }

    /// The file's content for the current entries; `None` when there are none (no file).
    fn content(&self) -> Option<String> {
        (!self.entries.is_empty()).then(|| {
            let file = LedgerFile {
                format: LEDGER_FORMAT,
                script: self.script.clone(),
                entries: self.entries.values().cloned().collect(),
            };
            serde_json::to_string_pretty(&file).expect("ledgers serialize")
        })
    }

    fn save(&self) -> Result<(), LedgerError> {
        let content = self.content();
        match &self.writer {
            Writer::Inline => {
                store(&self.path, content.as_deref()).map_err(|error| LedgerError::Write {
                    path: self.path.display().to_string(),
                    error,
                })
            }
            Writer::Background(jobs) => {
                // A writer that is gone (never, short of a panic) leaves the file as it was.
                let _ = jobs.send(Job::Write(content));
                Ok(())
            }
        }
    }
}

/// Writes or removes the ledger file.
fn store(path: &Path, content: Option<&str>) -> std::io::Result<()> {
    match content {
        Some(text) => write_atomically(path, text.as_bytes()),
        None => match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        },
    }
}

/// The writer thread: of a burst of changes, only the newest content is written.
fn write_forever(path: &Path, inbox: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = inbox.recv() {
        let mut newest: Option<Option<String>> = None;
        let mut flushes = Vec::new();
        for job in std::iter::once(first).chain(inbox.try_iter()) {
            match job {
                Job::Write(content) => newest = Some(content),
                Job::Flush(done) => flushes.push(done),
            }
        }
        if let Some(content) = newest
            && let Err(err) = store(path, content.as_deref())
        {
            tracing::error!(
                "cannot write the ledger {}: {err}; a crash of reef now would orphan gateways",
                path.display()
            );
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
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

    fn entry(name: &str, pid: u32) -> Entry {
        Entry {
            name: name.into(),
            pid,
            start_ticks: 42,
            started_at: 1.5,
            spec_hash: "00".into(),
            ports: PortSummary {
                gateway: 20000,
                browser_control: 20002,
                cdp_first: 20011,
                cdp_last: 20110,
            },
            log: "/tmp/x.log".into(),
        }
    }

    #[test]
    fn round_trip_and_removal_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::new(path.clone(), "reef.lua".into());
        assert!(Ledger::read(&path).unwrap().is_empty());
        ledger.record(entry("main", 10)).unwrap();
        ledger.record(entry("rescue", 11)).unwrap();
        let read = Ledger::read(&path).unwrap();
        assert_eq!(read, vec![entry("main", 10), entry("rescue", 11)]);
        ledger.forget("main", 99).unwrap();
        assert_eq!(
            Ledger::read(&path).unwrap().len(),
            2,
            "another pid keeps the entry"
        );
        ledger.forget("main", 10).unwrap();
        ledger.forget("rescue", 11).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_background_ledger_lands_on_disk_by_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::in_background(path.clone(), "reef.lua".into()).unwrap();
        for pid in 1..50 {
            ledger.record(entry("main", pid)).unwrap();
        }
        ledger.flush();
        assert_eq!(Ledger::read(&path).unwrap(), vec![entry("main", 49)]);
        ledger.forget("main", 49).unwrap();
        ledger.flush();
        assert!(!path.exists());
    }

    #[test]
    fn corrupt_or_truncated_ledgers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::new(path.clone(), "reef.lua".into());
        ledger.record(entry("main", 10)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(matches!(
            Ledger::read(&path),
            Err(LedgerError::Corrupt { .. })
        ));
        std::fs::write(&path, "{\"format\": 9, \"script\": \"x\", \"entries\": []}").unwrap();
        assert!(matches!(
            Ledger::read(&path),
            Err(LedgerError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = std::process::id();
        let ticks = process::start_time(me).unwrap();
        let mine = Entry {
            start_ticks: ticks,
            ..entry("main", me)
        };
        assert!(mine.is_alive());
        let impostor = Entry {
            start_ticks: ticks + 7,
            ..entry("main", me)
        };
        assert!(!impostor.is_alive());
    }
}
