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
                    state.push(Followed::from_start());
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

/// Where one source is read from, its unfinished last line, and the last bytes read (to find
/// the place again in the copy a rotation made).
struct Followed {
    offset: u64,
    partial: Vec<u8>,
    context: Vec<u8>,
    /// The log's modification time at the last look.
    modified: Option<std::time::SystemTime>,
}

/// How many of the last bytes read are kept to find the place again after a rotation.
const CONTEXT: usize = 128;
/// At most this much of one source is read per round, so that memory stays bounded whatever a
/// gateway writes; the next round comes at once.
const READ_AT_MOST: u64 = 4 << 20;

impl Followed {
    fn at_end(source: &Source) -> Followed {
        let offset = std::fs::metadata(&source.log).map(|m| m.len()).unwrap_or(0);
        // The bytes before the end, so that a rotation right away loses nothing either.
        let context = std::fs::File::open(&source.log)
            .and_then(|mut file| {
                let from = offset.saturating_sub(CONTEXT as u64);
                file.seek(SeekFrom::Start(from))?;
                let mut context = Vec::new();
                file.take(offset - from).read_to_end(&mut context)?;
                Ok(context)
            })
            .unwrap_or_default();
        Followed {
            offset,
            partial: Vec::new(),
            context,
            modified: None,
        }
    }

    fn from_start() -> Followed {
        Followed {
            offset: 0,
            partial: Vec::new(),
            context: Vec::new(),
            modified: None,
        }
    }

    /// Whether the bytes before `offset` in `file` are still the last ones read: a log that was
    /// rotated and grew past the old offset again between two looks is not.
    fn still_there(&self, file: &mut std::fs::File) -> bool {
        let length = self.context.len().min(self.offset as usize);
        if length == 0 {
            return true;
        }
        let mut found = vec![0; length];
        let read = file
            .seek(SeekFrom::Start(self.offset - length as u64))
            .and_then(|_| file.read_exact(&mut found));
        read.is_err() || found == self.context[self.context.len() - length..]
    }

    fn consumed(&mut self, bytes: &[u8]) {
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(bytes);
        if bytes.len() >= CONTEXT {
            self.context.clear();
            self.context
                .extend_from_slice(&bytes[bytes.len() - CONTEXT..]);
        } else {
            self.context.extend_from_slice(bytes);
            let extra = self.context.len().saturating_sub(CONTEXT);
            self.context.drain(..extra);
        }
    }
}

/// After `log` shrank under a follower: what was written after the follower's last read and
/// before the rotation, from the copy the rotation made (`log.1`, which holds the rotated log's
/// newest bytes up to the truncation). The copy says where it starts in the old log; without
/// that (a file system with no user attributes), the follower's last bytes are searched for.
/// Empty when the place cannot be found (a log truncated by hand, or rotated twice since).
fn missed_by_rotation(log: &std::path::Path, followed: &Followed) -> Vec<u8> {
    let mut name = log.as_os_str().to_os_string();
    name.push(".1");
    let Ok(mut file) = std::fs::File::open(name) else {
        return Vec::new();
    };
    let mut copy = Vec::new();
    if file.read_to_end(&mut copy).is_err() {
        return Vec::new();
    }
    let context = &followed.context;
    let ends_with_context = |at: usize| {
        let length = context.len().min(at);
        copy[..at].ends_with(&context[context.len() - length..])
    };
    if let Some(from) = crate::supervisor::logs::rotated_from(&file) {
        match usize::try_from(followed.offset.saturating_sub(from)) {
            // Behind the copy's start: what came before it is gone; all of the copy is new.
            Ok(0) if followed.offset < from => return copy,
            Ok(at) if at <= copy.len() && ends_with_context(at) => return copy[at..].to_vec(),
            _ => {}
        }
    }
    if context.is_empty() {
        return Vec::new();
    }
    match copy
        .windows(context.len())
        .rposition(|window| window == context.as_slice())
    {
        Some(at) => copy[at + context.len()..].to_vec(),
        None => Vec::new(),
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

/// Prints the complete new lines of every source, in one write; whether there were any.
fn read_new(
    sources: &[Source],
    state: &mut [Followed],
    prefixer: &Prefixer,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut buffer = Vec::new();
    let mut printed = Vec::new();
    let mut clock: Option<String> = None;
    for (index, (source, followed)) in sources.iter().zip(state.iter_mut()).enumerate() {
        let Ok(mut file) = std::fs::File::open(&source.log) else {
            continue;
        };
        let metadata = file.metadata().ok();
        let size = metadata.as_ref().map_or(0, std::fs::Metadata::len);
        let modified = metadata.and_then(|m| m.modified().ok());
        // A log written since the last look may have been rotated, even back to the same size.
        let written = size > followed.offset || modified != followed.modified;
        followed.modified = modified;
        if size < followed.offset || (written && !followed.still_there(&mut file)) {
            // Rotated (or truncated): first what came between the last read and the rotation.
            let missed = missed_by_rotation(&source.log, followed);
            followed.consumed(&missed);
            followed.offset = 0;
        }
        if size > followed.offset {
            buffer.clear();
            file.seek(SeekFrom::Start(followed.offset))?;
            file.take((size - followed.offset).min(READ_AT_MOST))
                .read_to_end(&mut buffer)?;
            followed.consumed(&buffer);
        }
        let complete = match followed.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if followed.partial.len() > MAX_LINE => followed.partial.len(),
            None => continue,
        };
        let clock = clock.get_or_insert_with(local_clock);
        let prefix = prefixer.prefix(index, &source.name);
        for line in followed.partial[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let line = String::from_utf8_lossy(line);
            printed.extend_from_slice(prefix.as_bytes());
            if !has_timestamp(&line) {
                printed.extend_from_slice(clock.as_bytes());
                printed.extend_from_slice(b"~ ");
            }
            printed.extend_from_slice(line.as_bytes());
            printed.push(b'\n');
        }
        followed.partial.drain(..complete);
    }
    if printed.is_empty() {
        return Ok(false);
    }
    out.write_all(&printed)?;
    out.flush()?;
    Ok(true)
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

    /// Lines `from..to` as a gateway writes them, with no time of their own.
    fn numbered(from: u32, to: u32) -> String {
        (from..to).map(|n| format!("line {n:05}\n")).collect()
    }

    fn append(log: &std::path::Path, text: &str) {
        let mut file = std::fs::OpenOptions::new().append(true).open(log).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    /// `reef logs -f` of one log, printing into a buffer.
    struct Follower {
        sources: [Source; 1],
        prefixer: Prefixer,
        state: Vec<Followed>,
        out: Vec<u8>,
    }

    impl Follower {
        fn at_end_of(log: &std::path::Path) -> Follower {
            let sources = [Source {
                name: "main".into(),
                log: log.to_path_buf(),
            }];
            Follower {
                prefixer: Prefixer::new(&sources, false),
                state: sources.iter().map(Followed::at_end).collect(),
                sources,
                out: Vec::new(),
            }
        }

        fn read(&mut self) {
            read_new(
                &self.sources,
                &mut self.state,
                &self.prefixer,
                &mut self.out,
            )
            .unwrap();
        }

        /// The numbers of the lines printed, prefixes and read-time markers stripped.
        fn numbers(&self) -> Vec<u32> {
            String::from_utf8_lossy(&self.out)
                .lines()
                .map(|line| {
                    let number = line.rsplit("line ").next().unwrap();
                    number.parse().unwrap_or_else(|_| panic!("{line:?}"))
                })
                .collect()
        }
    }

    #[test]
    fn following_across_rotations_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, numbered(0, 100)).unwrap();
        let mut follower = Follower::at_end_of(&log);
        let mut next = 100;
        for round in 0..20 {
            // Lines the follower reads, then lines it only sees after the rotation (in `.1`),
            // then lines of the fresh log; every fifth round, a line cut by a rotation.
            append(&log, &numbered(next, next + 37));
            follower.read();
            append(&log, &numbered(next + 37, next + 50));
            assert!(crate::supervisor::logs::rotate_if_large(&log, 500, 2).unwrap());
            append(&log, &numbered(next + 50, next + 60));
            next += 60;
            if round % 5 == 4 {
                // A partial line across the rotation.
                append(&log, "line 0");
                follower.read();
                append(&log, &format!("{next:04}\n"));
                next += 1;
            }
        }
        follower.read();
        assert_eq!(follower.numbers(), (100..next).collect::<Vec<_>>());
    }

    #[test]
    fn identical_lines_are_not_lost_across_a_rotation_either() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        let same = |count: usize| ("x".repeat(299) + "\n").repeat(count);
        std::fs::write(&log, same(10)).unwrap();
        let mut follower = Follower::at_end_of(&log);
        append(&log, &same(5));
        follower.read();
        append(&log, &same(7));
        assert!(crate::supervisor::logs::rotate_if_large(&log, 2000, 2).unwrap());
        append(&log, &same(3));
        follower.read();
        let printed = String::from_utf8_lossy(&follower.out).lines().count();
        if crate::supervisor::logs::rotated_from(
            &std::fs::File::open(dir.path().join("main.log.1")).unwrap(),
        )
        .is_some()
        {
            assert_eq!(printed, 5 + 7 + 3);
        } else {
            // Without user attributes the place is searched for: among identical lines the
            // newest match wins, so what came in between cannot be told apart.
            assert!(printed >= 5 + 3, "{printed}");
        }
    }

    #[test]
    fn a_rotated_log_that_grew_past_the_old_place_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, numbered(0, 10)).unwrap();
        let mut follower = Follower::at_end_of(&log);
        append(&log, &numbered(10, 20));
        follower.read();
        append(&log, &numbered(20, 25));
        assert!(crate::supervisor::logs::rotate_if_large(&log, 200, 2).unwrap());
        // Longer than everything before: the size alone would not show the rotation.
        append(&log, &numbered(25, 60));
        follower.read();
        assert_eq!(follower.numbers(), (10..60).collect::<Vec<_>>());
    }

    #[test]
    fn a_log_truncated_by_hand_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        std::fs::write(&log, numbered(0, 10)).unwrap();
        let mut follower = Follower::at_end_of(&log);
        std::fs::write(&log, numbered(50, 52)).unwrap();
        follower.read();
        assert_eq!(follower.numbers(), [50, 51]);
    }
}
