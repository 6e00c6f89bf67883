//! `reef logs` over every gateway: each line prefixed with its gateway's name (coloured on a
//! terminal, as foreman and overmind do), the last lines of each first, then, with `-f`, every
//! new line of any gateway as it arrives. A line without a timestamp of its own gets the local
//! time reef read it, marked with `~` so it is not taken for the gateway's own.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Colours for the names, in turn (ANSI: cyan, yellow, green, magenta, blue, red).
const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "31"];
/// A line longer than this is printed in pieces.
const MAX_LINE: usize = 64 * 1024;

/// One gateway's log.
pub struct Source {
    pub name: String,
    pub log: PathBuf,
}

/// How names are shown.
pub struct Prefixer {
    width: usize,
    colour: bool,
}

impl Prefixer {
    pub fn new(sources: &[Source], colour: bool) -> Prefixer {
        Prefixer {
            width: sources.iter().map(|s| s.name.len()).max().unwrap_or(0),
            colour,
        }
    }

    /// `name | ` padded to the longest name, coloured by the gateway's place.
    pub fn prefix(&self, index: usize, name: &str) -> String {
        let padded = format!("{name:<width$} | ", width = self.width);
        if self.colour {
            format!("\x1b[{}m{padded}\x1b[0m", COLOURS[index % COLOURS.len()])
        } else {
            padded
        }
    }
}

/// Whether `line` starts with a time of its own: an ISO date (`2026-12-01T...` or
/// `2026-12-01 ...`), a bracketed time, or reef's own `--- reef:` marker (which carries one).
pub fn has_timestamp(line: &str) -> bool {
    let bytes = line.trim_start_matches('[').as_bytes();
    let iso_date = bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-';
    let clock = bytes.len() >= 8
        && bytes[..2].iter().all(u8::is_ascii_digit)
        && bytes[2] == b':'
        && bytes[3..5].iter().all(u8::is_ascii_digit)
        && bytes[5] == b':';
    iso_date || clock || line.starts_with("--- reef:")
}

/// The local time of day now, `HH:MM:SS`.
pub fn local_clock() -> String {
    clock_at(now_seconds())
}

/// The local time of day at `seconds` since the Unix epoch, `HH:MM:SS`.
pub fn clock_at(seconds: libc::time_t) -> String {
    local_tm(seconds)
        .map(|tm| format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec))
        .unwrap_or_else(|| "--:--:--".into())
}

/// The local date and time now, `YYYY-MM-DD HH:MM:SS` (reef's own markers in a gateway's log).
pub fn local_datetime() -> String {
    local_tm(now_seconds())
        .map(|tm| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec
            )
        })
        .unwrap_or_else(|| "----------".into())
}

fn now_seconds() -> libc::time_t {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0)
}

fn local_tm(seconds: libc::time_t) -> Option<libc::tm> {
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&seconds, &mut tm).is_null() };
    ok.then_some(tm)
}

/// The last `lines` of every source, each prefixed, source after source.
pub fn history(
    sources: &[Source],
    lines: usize,
    prefixer: &Prefixer,
    out: &mut impl Write,
) -> std::io::Result<()> {
    for (index, source) in sources.iter().enumerate() {
        let text = match crate::supervisor::logs::tail(&source.log, lines) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for line in text.lines() {
            writeln!(out, "{}{line}", prefixer.prefix(index, &source.name))?;
        }
    }
    out.flush()
}

/// Follows every `*.log` in `dir` (a topology's logs: one per gateway, named after it), from
/// their current ends, picking up gateways that appear later; forever.
pub fn follow_dir(
    dir: &std::path::Path,
    colour: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let list = || -> Vec<Source> {
        let mut sources: Vec<Source> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_name()?.to_str()?.strip_suffix(".log")?.to_owned();
                Some(Source { name, log: path })
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        sources
    };
    let mut known = list();
    let mut prefixer = Prefixer::new(&known, colour);
    let mut state: Vec<Followed> = known.iter().map(Followed::at_end).collect();
    let mut listed = std::time::Instant::now();
    loop {
        if listed.elapsed() >= std::time::Duration::from_secs(1) {
            listed = std::time::Instant::now();
            for source in list() {
                if !known.iter().any(|k| k.name == source.name) {
                    // A gateway started after us: from its beginning.
                    state.push(Followed {
                        offset: 0,
                        partial: Vec::new(),
                    });
                    known.push(source);
                    prefixer = Prefixer::new(&known, colour);
                }
            }
        }
        if !read_new(&known, &mut state, &prefixer, out)? {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Where one source is read from, and its unfinished last line.
struct Followed {
    offset: u64,
    partial: Vec<u8>,
}

impl Followed {
    fn at_end(source: &Source) -> Followed {
        Followed {
            offset: std::fs::metadata(&source.log).map(|m| m.len()).unwrap_or(0),
            partial: Vec::new(),
        }
    }
}

/// Prints every new line of every source as it arrives, forever (until stdout closes).
pub fn follow(
    sources: &[Source],
    prefixer: &Prefixer,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut state: Vec<Followed> = sources.iter().map(Followed::at_end).collect();
    loop {
        if !read_new(sources, &mut state, prefixer, out)? {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Prints the complete new lines of every source; whether there were any.
fn read_new(
    sources: &[Source],
    state: &mut [Followed],
    prefixer: &Prefixer,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut buffer = Vec::new();
    let mut wrote = false;
    for (index, (source, followed)) in sources.iter().zip(state.iter_mut()).enumerate() {
        let Ok(mut file) = std::fs::File::open(&source.log) else {
            continue;
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size < followed.offset {
            // Rotated or truncated: start over.
            followed.offset = 0;
            followed.partial.clear();
        }
        if size == followed.offset {
            continue;
        }
        buffer.clear();
        file.seek(SeekFrom::Start(followed.offset))?;
        file.take(size - followed.offset).read_to_end(&mut buffer)?;
        followed.offset += buffer.len() as u64;
        followed.partial.extend_from_slice(&buffer);
        let complete = match followed.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if followed.partial.len() > MAX_LINE => followed.partial.len(),
            None => continue,
        };
        let lines: Vec<u8> = followed.partial.drain(..complete).collect();
        let clock = local_clock();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8_lossy(line);
            let prefix = prefixer.prefix(index, &source.name);
            if has_timestamp(&line) {
                writeln!(out, "{prefix}{line}")?;
            } else {
                writeln!(out, "{prefix}{clock}~ {line}")?;
            }
        }
        wrote = true;
    }
    if wrote {
        out.flush()?;
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_their_own_are_recognised() {
        for stamped in [
            "2026-12-01T05:30:50.582+00:00 [gateway] ready",
            "2026-12-01 05:30:50 ready",
            "[05:30:50] ready",
            "--- reef: starting x at 2026-12-01 06:00:00 ---",
        ] {
            assert!(has_timestamp(stamped), "{stamped}");
        }
        for bare in [
            "reef gateway: listening",
            "",
            "12 apples",
            "[gateway] ready",
        ] {
            assert!(!has_timestamp(bare), "{bare}");
        }
    }

    #[test]
    fn names_are_padded_and_coloured_only_on_a_terminal() {
        let sources = [
            Source {
                name: "main".into(),
                log: PathBuf::new(),
            },
            Source {
                name: "rescue".into(),
                log: PathBuf::new(),
            },
        ];
        assert_eq!(
            Prefixer::new(&sources, false).prefix(0, "main"),
            "main   | "
        );
        assert_eq!(
            Prefixer::new(&sources, true).prefix(1, "rescue"),
            "\x1b[33mrescue | \x1b[0m"
        );
        assert_eq!(local_clock().len(), 8);
        let datetime = local_datetime();
        assert_eq!(datetime.len(), 19, "{datetime}");
        assert!(has_timestamp(&datetime), "{datetime}");
    }

    #[test]
    fn history_prefixes_every_line_of_every_log() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        std::fs::write(&a, "one\ntwo\nthree\n").unwrap();
        std::fs::write(&b, "uno\n").unwrap();
        let sources = [
            Source {
                name: "a".into(),
                log: a,
            },
            Source {
                name: "bb".into(),
                log: b,
            },
            Source {
                name: "never-started".into(),
                log: dir.path().join("none.log"),
            },
        ];
        let mut out = Vec::new();
        history(&sources, 2, &Prefixer::new(&sources[..2], false), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a  | two\na  | three\nbb | uno\n"
        );
    }
}
