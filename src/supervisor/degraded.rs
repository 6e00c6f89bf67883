//! The gateway's own degraded states, read from what it writes to its log.
//!
//! The real gateway can run "ready" and still be degraded: after 3 unclean boots within 300 s
//! (kill -9, crashes, exit 78, a busy port) its restart-loop breaker trips, channel and
//! provider auto-start are suppressed, and `/readyz` still answers ready (shared/OPENCLAW.md,
//! "Restart-loop breaker"). It says so on its output, which reef captures into the
//! instance's log: `restart-loop breaker tripped: ...`, `wrote stability bundle: PATH` (the
//! first trip since the last recovery, and the other bundle reasons), and later `restart-loop
//! breaker recovered; channel auto-start restored`. A [`LogWatch`] reads what the gateway
//! wrote since it was started, a bounded amount per look, and turns those lines into a
//! [`Degraded`] state: shown in `reef status`, in `--json`, and sent to hooks as an event.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The most a look reads: a gateway flooding its log is skipped over, not read in full.
const MAX_READ: u64 = 1024 * 1024;
/// An adopted gateway's log is read from this far before its end.
const ADOPTED_TAIL: u64 = 256 * 1024;
/// A line longer than this is no line the gateway's degraded markers are on.
const MAX_LINE: usize = 16 * 1024;
/// Looks closer together than this are skipped (probes run every 10 ms while a gateway starts).
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// The line reef writes before each start: what came before it is another process's.
const START_MARKER: &str = "--- reef: starting ";

const BREAKER_REASON: &str = "gateway.crash_loop_breaker";
const TRIPPED: &str = "restart-loop breaker tripped";
const RECOVERED: &str = "restart-loop breaker recovered";
const BUNDLE: &str = "wrote stability bundle: ";

/// A degraded state the gateway reported, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    /// OpenClaw's reason, e.g. `gateway.crash_loop_breaker`.
    pub reason: String,
    /// What the gateway said.
    pub message: String,
    /// What to do.
    pub advice: String,
    /// The stability bundle it wrote, if it wrote one for this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
}

impl Degraded {
    /// The one-line note `reef status` shows.
    pub fn note(&self) -> String {
        let bundle = self
            .bundle
            .as_ref()
            .map(|path| format!(" (stability bundle {})", path.display()))
            .unwrap_or_default();
        format!("degraded: {}{bundle}; {}", self.message, self.advice)
    }
}

/// What one line of the gateway's output says about its state, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sign {
    /// reef started another process: whatever the last one said is over.
    Started,
    Tripped(String),
    Recovered,
    /// A stability bundle at this path, for this reason (from its file name).
    Bundle {
        path: PathBuf,
        reason: String,
    },
}

/// Reads one line (colours removed) for a sign of a degraded state.
pub fn sign_of(line: &str) -> Option<Sign> {
    if line.starts_with(START_MARKER) {
        return Some(Sign::Started);
    }
    let line = strip_colours(line);
    if let Some(at) = line.find(TRIPPED) {
        let message = line[at..].trim_end();
        // The gateway's own sentence ends the summary at the first ';'.
        let summary = message.split(';').next().unwrap_or(message);
        return Some(Sign::Tripped(summary.to_owned()));
    }
    if line.contains(RECOVERED) {
        return Some(Sign::Recovered);
    }
    let at = line.find(BUNDLE)?;
    let path = PathBuf::from(line[at + BUNDLE.len()..].trim());
    let name = path.file_name()?.to_str()?;
    // openclaw-stability-<time>-<pid>-<reason>.json
    let reason = name
        .strip_suffix(".json")?
        .rsplit('-')
        .next()
        .filter(|reason| reason.contains('.') || reason.contains('_'))?
        .to_owned();
    Some(Sign::Bundle { path, reason })
}

fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The state after `sign`, from `state`.
pub fn apply(state: Option<Degraded>, sign: Sign, profile: &str) -> Option<Degraded> {
    match sign {
        Sign::Started => None,
        Sign::Tripped(message) => Some(Degraded {
            reason: BREAKER_REASON.into(),
            message,
            advice: format!(
                "channel and provider auto-start are suppressed: find why it crashed (`reef logs`), \
                 then start a channel with `openclaw --profile {profile} gateway call channels.start \
                 --params '{{\"channel\":\"<id>\"}}'`, or let it run: it recovers on its own about 6 \
                 minutes after the last unclean boot"
            ),
            bundle: None,
        }),
        Sign::Recovered => state.filter(|degraded| degraded.reason != BREAKER_REASON),
        Sign::Bundle { path, reason } => match state {
            Some(mut degraded) if degraded.reason == reason => {
                degraded.bundle = Some(path);
                Some(degraded)
            }
            Some(other) => Some(other),
            None => Some(Degraded {
                advice: format!(
                    "read it with `openclaw --profile {profile} gateway stability --bundle latest`"
                ),
                message: format!("the gateway wrote a stability bundle ({reason})"),
                reason,
                bundle: Some(path),
            }),
        },
    }
}

/// Follows one gateway's log from where its process started.
#[derive(Debug)]
pub struct LogWatch {
    path: PathBuf,
    profile: String,
    offset: u64,
    partial: Vec<u8>,
    state: Option<Degraded>,
    last_look: Option<std::time::Instant>,
}

impl LogWatch {
    /// Follows `path` from `offset` (the log's length when the gateway was started).
    pub fn from(path: &Path, profile: &str, offset: u64) -> LogWatch {
        LogWatch {
            path: path.to_owned(),
            profile: profile.to_owned(),
            offset,
            partial: Vec::new(),
            state: None,
            last_look: None,
        }
    }

    /// Follows `path` from near its end (an adopted gateway: what it wrote before is partly
    /// read again, so a state it is still in is found).
    pub fn adopted(path: &Path, profile: &str) -> LogWatch {
        let length = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogWatch::from(path, profile, length.saturating_sub(ADOPTED_TAIL))
    }

    pub fn state(&self) -> Option<&Degraded> {
        self.state.as_ref()
    }

    /// Reads what was written since the last look (at most [`MAX_READ`]); `Some(new state)`
    /// when the state changed.
    pub fn look(&mut self) -> Option<Option<Degraded>> {
        let now = std::time::Instant::now();
        if self
            .last_look
            .is_some_and(|last| now.duration_since(last) < MIN_INTERVAL)
        {
            return None;
        }
        self.last_look = Some(now);
        let before = self.state.clone();
        let mut file = std::fs::File::open(&self.path).ok()?;
        let length = file.metadata().ok()?.len();
        if length < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if length - self.offset > MAX_READ {
            self.offset = length - MAX_READ;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut fresh = Vec::new();
        file.take(MAX_READ).read_to_end(&mut fresh).ok()?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None => {
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                }
                return None;
            }
        };
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        for line in lines.split(|&b| b == b'\n') {
            if line.len() > MAX_LINE {
                continue;
            }
            if let Some(sign) = sign_of(&String::from_utf8_lossy(line)) {
                self.state = apply(self.state.take(), sign, &self.profile);
            }
        }
        (self.state != before).then(|| self.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIP: &str = "2026-12-01T05:30:50.582+00:00 [gateway] restart-loop breaker tripped: 3 unclean boot(s) within 300000ms; suppressing channel/provider account auto-start. Inspect the stability bundle and fix the startup crash before restarting the service.";
    const WROTE: &str = "2026-12-01T05:30:50.595+00:00 [gateway] wrote stability bundle: /s/.openclaw-a/logs/stability/openclaw-stability-2026-12-01T05-30-50-584Z-22844-gateway.crash_loop_breaker.json";

    #[test]
    fn the_breaker_lines_set_and_clear_the_state() {
        let tripped = apply(None, sign_of(TRIP).unwrap(), "a").unwrap();
        assert_eq!(tripped.reason, "gateway.crash_loop_breaker");
        assert_eq!(
            tripped.message,
            "restart-loop breaker tripped: 3 unclean boot(s) within 300000ms"
        );
        assert!(
            tripped
                .advice
                .contains("openclaw --profile a gateway call channels.start")
        );
        let with_bundle = apply(Some(tripped), sign_of(WROTE).unwrap(), "a").unwrap();
        assert_eq!(
            with_bundle.bundle.as_deref(),
            Some(Path::new(
                "/s/.openclaw-a/logs/stability/openclaw-stability-2026-12-01T05-30-50-584Z-22844-gateway.crash_loop_breaker.json"
            ))
        );
        assert!(
            with_bundle
                .note()
                .starts_with("degraded: restart-loop breaker tripped")
        );
        let line = "\u{1b}[32m[gateway]\u{1b}[0m restart-loop breaker recovered; channel auto-start restored";
        assert_eq!(apply(Some(with_bundle), sign_of(line).unwrap(), "a"), None);
        assert_eq!(sign_of("[gateway] listening on ws://127.0.0.1:1"), None);
    }

    #[test]
    fn another_bundle_reason_is_a_state_of_its_own() {
        let line = "[gateway] wrote stability bundle: /x/openclaw-stability-2026-12-01T05-30-50-584Z-1-gateway.restart_startup_failed.json";
        let state = apply(None, sign_of(line).unwrap(), "a").unwrap();
        assert_eq!(state.reason, "gateway.restart_startup_failed");
        assert!(state.advice.contains("gateway stability --bundle latest"));
    }

    #[test]
    fn a_watch_reads_only_what_was_written_since_the_start_and_in_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, format!("{TRIP}\nold run\n")).unwrap();
        let start = std::fs::metadata(&log).unwrap().len();
        let mut watch = LogWatch::from(&log, "a", start);
        let look = |watch: &mut LogWatch| {
            watch.last_look = None;
            watch.look()
        };
        assert_eq!(look(&mut watch), None);
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        write!(out, "{}", &TRIP[..40]).unwrap();
        assert_eq!(look(&mut watch), None, "half a line is not read yet");
        writeln!(out, "{}", &TRIP[40..]).unwrap();
        let state = look(&mut watch).expect("changed").expect("degraded");
        assert_eq!(state.reason, "gateway.crash_loop_breaker");
        assert_eq!(look(&mut watch), None);
        writeln!(
            out,
            "[gateway] restart-loop breaker recovered; channel auto-start restored"
        )
        .unwrap();
        assert_eq!(look(&mut watch), Some(None));
        writeln!(out, "{TRIP}").unwrap();
        assert!(look(&mut watch).is_some());
        assert_eq!(
            watch.look(),
            None,
            "a look right after another one is skipped"
        );
        // An adopted gateway's watch finds the state it is still in, and none of the state of
        // a process started before it.
        let mut adopted = LogWatch::adopted(&log, "a");
        assert_eq!(adopted.offset, 0);
        assert!(look(&mut adopted).unwrap().is_some());
        writeln!(out, "--- reef: starting /bin/gateway at 12:00:00 ---").unwrap();
        let mut adopted = LogWatch::adopted(&log, "a");
        assert_eq!(look(&mut adopted), None);
    }
}
