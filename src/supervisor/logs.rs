//! Per-instance log files: gateways write straight to them (opened O_APPEND), and reef rotates
//! them by copy-and-truncate, so a rotation never blocks or breaks a writer, and the files keep
//! working when reef itself is gone.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A log is rotated once it grows past this.
pub const ROTATE_AT: u64 = 10 << 20;
/// Rotated copies kept: `NAME.log.1` (newest) .. `NAME.log.3`.
pub const KEEP: u32 = 3;
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Checks the running instances' logs every few seconds, forever.
pub async fn rotate_forever(registry: std::sync::Arc<super::Registry>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let logs: Vec<PathBuf> = registry.handles().iter().map(|h| h.status().log).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for log in &logs {
                if let Err(err) = rotate_if_large(log, ROTATE_AT, KEEP) {
                    tracing::warn!("cannot rotate {}: {err}", log.display());
                }
            }
        })
        .await;
    }
}

/// Rotates `log` when it is larger than `limit`: shifts `.1`..`.keep`, copies the log to `.1`,
/// then truncates it in place.
pub fn rotate_if_large(log: &Path, limit: u64, keep: u32) -> std::io::Result<bool> {
    let size = match std::fs::metadata(log) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    if size <= limit || keep == 0 {
        return Ok(false);
    }
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", log.display()));
    for n in (1..keep).rev() {
        if numbered(n).exists() {
            std::fs::rename(numbered(n), numbered(n + 1))?;
        }
    }
    std::fs::copy(log, numbered(1))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)?
        .set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of a log (all of it if shorter).
pub fn tail(log: &Path, lines: usize) -> std::io::Result<String> {
    let mut file = std::fs::File::open(log)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_numbered_copies_and_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, "first\n").unwrap();
        assert!(!rotate_if_large(&log, 100, 3).unwrap());
        std::fs::write(&log, "a".repeat(200)).unwrap();
        assert!(rotate_if_large(&log, 100, 3).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("main.log.1"))
                .unwrap()
                .len(),
            200
        );
        std::fs::write(&log, "b".repeat(200)).unwrap();
        assert!(rotate_if_large(&log, 100, 3).unwrap());
        assert!(
            std::fs::read_to_string(dir.path().join("main.log.1"))
                .unwrap()
                .starts_with('b')
        );
        assert!(
            std::fs::read_to_string(dir.path().join("main.log.2"))
                .unwrap()
                .starts_with('a')
        );
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
    }
}
