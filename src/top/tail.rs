//! The tail of the selected gateway's log: its last lines read once from the end of the file,
//! then only what is appended, found by one `stat` a tick. reef rotates logs by copy and
//! truncate, so a file that shrank (or was replaced) is read again from its start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most read at once: the end of a log on opening it, or of a burst appended since the
/// last tick (a gateway flooding its log is skipped over, not read in full).
const MAX_READ: u64 = 256 * 1024;

/// What changed in the log since the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Show these lines instead (the tail of a log read anew).
    Replace(Vec<String>),
    /// These lines were appended.
    Append(Vec<String>),
}

#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of the open file: another file at the path is read from its start.
    identity: Option<(u64, u64)>,
    /// How far the file has been read.
    offset: u64,
    /// The end of the last read after its last newline: the start of a line being written.
    partial: Vec<u8>,
}

impl LogTail {
    /// Follows the log at `path` (which may not exist yet), with its last lines.
    pub fn open(path: &Path) -> (LogTail, Vec<String>) {
        let mut tail = LogTail {
            path: path.to_owned(),
            file: None,
            identity: None,
            offset: 0,
            partial: Vec::new(),
        };
        let lines = match tail.poll() {
            Some(Update::Replace(lines) | Update::Append(lines)) => lines,
            None => Vec::new(),
        };
        (tail, lines)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was appended since the last look, if anything. A log that cannot be read (not
    /// there yet, deleted) changes nothing: what was shown stays.
    pub fn poll(&mut self) -> Option<Update> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let identity = (meta.dev(), meta.ino());
        if self.identity != Some(identity) || meta.len() < self.offset {
            // New, replaced or truncated (rotated): read it from its start.
            self.file = Some(File::open(&self.path).ok()?);
            self.identity = Some(identity);
            self.offset = 0;
            self.partial.clear();
        }
        let file = self.file.as_mut()?;
        // The open file's own length: the path may have changed again since the stat.
        let size = file.metadata().ok()?.len();
        if size < self.offset {
            self.identity = None;
            return None;
        }
        if size == self.offset {
            return None;
        }
        let skipped = size - self.offset > MAX_READ;
        let start = if skipped {
            size - MAX_READ
        } else {
            self.offset
        };
        let mut bytes = Vec::with_capacity((size - start) as usize);
        file.seek(SeekFrom::Start(start)).ok()?;
        file.by_ref()
            .take(size - start)
            .read_to_end(&mut bytes)
            .ok()?;
        self.offset = start + bytes.len() as u64;
        if skipped {
            // Read from the middle of a line: that line's end is no line of its own.
            self.partial.clear();
            let first = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.drain(..first);
        }
        let mut text = std::mem::take(&mut self.partial);
        text.extend_from_slice(&bytes);
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = text.split_off(complete);
        let lines: Vec<String> = text
            .split(|b| *b == b'\n')
            .take(text.iter().filter(|b| **b == b'\n').count())
            .map(clean)
            .collect();
        if skipped {
            Some(Update::Replace(lines))
        } else if lines.is_empty() {
            None
        } else {
            Some(Update::Append(lines))
        }
    }
}

/// One line of a log as the screen can show it: terminal escapes (colours, cursor moves) left
/// out, tabs as spaces, what a carriage return overwrote dropped, no other control character.
pub fn clean(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let text = text.rsplit('\r').next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| (*line).to_owned()).collect()
    }

    #[test]
    fn a_log_is_read_from_its_end_then_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        append(&log, "one\ntwo\nthr");
        let (mut tail, first) = LogTail::open(&log);
        assert_eq!(first, lines(&["one", "two"]));
        assert_eq!(tail.poll(), None, "nothing new");
        append(&log, "ee\nfour\n");
        assert_eq!(
            tail.poll(),
            Some(Update::Append(lines(&["three", "four"]))),
            "the line being written is finished first"
        );
        assert_eq!(tail.poll(), None);
    }

    #[test]
    fn a_missing_log_is_followed_once_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("later.log");
        let (mut tail, first) = LogTail::open(&log);
        assert!(first.is_empty());
        assert_eq!(tail.poll(), None);
        append(&log, "hello\n");
        assert_eq!(tail.poll(), Some(Update::Append(lines(&["hello"]))));
    }

    #[test]
    fn a_truncated_or_replaced_log_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        append(&log, "old line one\nold line two\n");
        let (mut tail, _) = LogTail::open(&log);
        // Rotation: copy, then truncate in place; the writer goes on at the start.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, "new\n");
        assert_eq!(tail.poll(), Some(Update::Append(lines(&["new"]))));
        // Another file renamed over it.
        let other = dir.path().join("other.log");
        append(&other, "a much longer first line of another file\n");
        std::fs::rename(&other, &log).unwrap();
        assert_eq!(
            tail.poll(),
            Some(Update::Append(lines(&[
                "a much longer first line of another file"
            ])))
        );
    }

    #[test]
    fn a_flood_is_skipped_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        append(&log, "start\n");
        let (mut tail, _) = LogTail::open(&log);
        let flood: String = (0..100_000).map(|n| format!("line {n}\n")).collect();
        append(&log, &flood);
        let Some(Update::Replace(lines)) = tail.poll() else {
            panic!("a flood replaces the tail");
        };
        assert_eq!(lines.last().map(String::as_str), Some("line 99999"));
        assert!(lines[0].starts_with("line "), "{}", lines[0]);
        assert!(lines.len() < 100_000);
    }

    #[test]
    fn escapes_and_control_characters_never_reach_the_screen() {
        assert_eq!(clean(b"\x1b[1;31merror:\x1b[0m bad"), "error: bad");
        assert_eq!(clean(b"\x1b]0;title\x07text"), "text");
        assert_eq!(clean(b"\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(clean(b"a\tb\r"), "a    b");
        assert_eq!(clean(b"10%\r50%\r100%"), "100%");
        assert_eq!(clean(b"bell\x07 nul\x00"), "bell nul");
        assert_eq!(clean(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }
}
