//! Watching a topology's files: notify events become debounced reload requests.
//!
//! The watch set is every file the last evaluation read (also a failed one), and the watched
//! objects are their directories, so that editors that save by renaming a temp file over the
//! original are seen. The notify callback never blocks: it only `try_send`s. A burst of events
//! becomes one request once the files have been quiet for the debounce window.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long the files must be quiet before a reload: long enough to cover an editor's burst of
/// writes, short enough to feel instant.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(75);

pub struct ScriptWatcher {
    watcher: RecommendedWatcher,
    files: Arc<RwLock<BTreeSet<PathBuf>>>,
    dirs: BTreeSet<PathBuf>,
    /// `reef up --no-watch`: nothing is watched; reloads come from `reef reload` and SIGHUP.
    paused: bool,
}

impl ScriptWatcher {
    /// A watcher that signals `changed` whenever a watched file may have changed.
    pub fn new(changed: mpsc::Sender<()>) -> Result<ScriptWatcher> {
        let files: Arc<RwLock<BTreeSet<PathBuf>>> = Arc::default();
        let watched = files.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                // Lost events (queue overflow): better one reload too many than one too few.
                let _ = changed.try_send(());
                return;
            };
            if is_read_only(&event.kind) {
                return;
            }
            let files = watched.read().expect("watch set lock");
            if event.paths.iter().any(|path| files.contains(path)) {
                let _ = changed.try_send(());
            }
        })
        .context("cannot watch the topology's files")?;
        Ok(ScriptWatcher {
            watcher,
            files,
            dirs: BTreeSet::new(),
            paused: false,
        })
    }

    /// A watcher that watches nothing (`reef up --no-watch`).
    pub fn paused(changed: mpsc::Sender<()>) -> Result<ScriptWatcher> {
        let mut watcher = ScriptWatcher::new(changed)?;
        watcher.paused = true;
        Ok(watcher)
    }

    /// Makes `files` the watch set (absolute paths), watching their directories.
    pub fn watch(&mut self, files: &[PathBuf]) -> Result<()> {
        if self.paused {
            return Ok(());
        }
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch {}", dir.display()))?;
        }
        self.dirs = dirs;
        *self.files.write().expect("watch set lock") = files.iter().cloned().collect();
        Ok(())
    }
}

/// Opening or reading a file changes nothing (and reef reads the files itself on every reload).
fn is_read_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}

/// Turns bursts of raw signals into one request per quiet period of `window`.
pub async fn debounce(mut raw: mpsc::Receiver<()>, window: Duration, requests: mpsc::Sender<()>) {
    while raw.recv().await.is_some() {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(window) => break,
                more = raw.recv() => if more.is_none() { return },
            }
        }
        if requests.send(()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_burst_becomes_one_request() {
        let (raw_tx, raw_rx) = mpsc::channel(1);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        tokio::spawn(debounce(raw_rx, Duration::from_millis(75), out_tx));
        for _ in 0..100 {
            let _ = raw_tx.try_send(());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            out_rx.try_recv().is_err(),
            "no request while writes keep coming"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(out_rx.recv().await.is_some());
        assert!(
            out_rx.try_recv().is_err(),
            "exactly one request for the burst"
        );
    }
}
