//! CPU and memory of whole gateways: each gateway leads a session of its own (reef starts it
//! with `setsid`), and its workers and the programs it runs stay in that session, so summing
//! every process of the session counts the real gateway's workers too (the main process is
//! only part of its 1-1.5 GiB). One walk of `/proc` serves every gateway.

use std::collections::HashMap;
use std::time::Instant;

/// What a session's processes use right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time, in clock ticks, of the live processes.
    pub cpu_ticks: u64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    pub processes: u32,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Sums `/proc/PID/stat` of every process by session, for the sessions in `leaders`.
pub fn of_sessions(leaders: &[u32]) -> HashMap<u32, Usage> {
    let mut usage: HashMap<u32, Usage> = leaders.iter().map(|&l| (l, Usage::default())).collect();
    if leaders.is_empty() {
        return usage;
    }
    let page = page_size();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(parsed) = parse_stat(&stat) else {
            continue;
        };
        if let Some(total) = usage.get_mut(&parsed.session) {
            total.cpu_ticks += parsed.cpu_ticks;
            total.rss_bytes += parsed.rss_pages * page;
            total.processes += 1;
        }
    }
    usage
}

struct Stat {
    session: u32,
    cpu_ticks: u64,
    rss_pages: u64,
}

/// The fields of `/proc/PID/stat` that matter here (the command name may hold spaces and
/// parentheses: fields are counted after its last `)`).
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12) ... rss(21)
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some(Stat {
        session: fields.get(3)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

/// Turns CPU time into a share of one core between looks: the first look at a gateway gives
/// its average since it started. Looks closer together than [`CpuMeter::WINDOW`] give the last
/// share again, so that many clients, or one that asks on every event, neither see the noise of
/// a few clock ticks nor shorten each other's window.
#[derive(Debug, Default)]
pub struct CpuMeter {
    /// Per session leader: the CPU ticks and time of the window's start, and the last share.
    last: HashMap<u32, (u64, Instant, f64)>,
}

impl CpuMeter {
    /// The shortest window a share is measured over.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_millis(900);

    /// The CPU share (100 = one core) of the session led by `leader`, which has used
    /// `cpu_ticks` so far and has run for `uptime` seconds.
    pub fn percent(&mut self, leader: u32, cpu_ticks: u64, uptime: f64, now: Instant) -> f64 {
        let per_second = ticks_per_second();
        let since_start = || {
            if uptime > 0.0 {
                cpu_ticks as f64 / per_second / uptime * 100.0
            } else {
                0.0
            }
        };
        let percent = match self.last.get(&leader) {
            Some(&(ticks, at, share)) if cpu_ticks >= ticks => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed < Self::WINDOW {
                    return share;
                }
                (cpu_ticks - ticks) as f64 / per_second / elapsed.as_secs_f64() * 100.0
            }
            _ => since_start(),
        };
        let percent = (percent * 10.0).round() / 10.0;
        self.last.insert(leader, (cpu_ticks, now, percent));
        percent
    }

    /// Drops what is kept of sessions no longer running.
    pub fn keep_only(&mut self, alive: &[u32]) {
        let alive: std::collections::HashSet<u32> = alive.iter().copied().collect();
        self.last.retain(|leader, _| alive.contains(leader));
    }
}

/// "1.2 GiB", "830 MiB", "512 KiB".
pub fn bytes_text(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else {
        format!("{:.0} KiB", b / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (node (worker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 11 0 999 1000000 2048 18446744073709551615";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.cpu_ticks, 300);
        assert_eq!(stat.rss_pages, 2048);
        assert!(parse_stat("1 (z) Z 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0 0 0").is_none());
    }

    #[test]
    fn a_session_sums_its_processes() {
        // This test process and a child it starts in a session of its own.
        let child = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 30 & sleep 30"])
            .spawn()
            .unwrap();
        let leader = child.id();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let usage = loop {
            let usage = of_sessions(&[leader])[&leader];
            if usage.processes >= 2 || Instant::now() > deadline {
                break usage;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // setsid may fork when the caller leads a group; the session is then the child's.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(leader as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let mut child = child;
        let _ = child.wait();
        if usage.processes > 0 {
            assert!(usage.processes >= 2, "{usage:?}");
            assert!(usage.rss_bytes > 0, "{usage:?}");
        }
    }

    #[test]
    fn cpu_share_is_measured_between_looks() {
        let mut meter = CpuMeter::default();
        let start = Instant::now();
        let hz = ticks_per_second() as u64;
        // First look: the average since start (2 s of CPU over 4 s).
        assert_eq!(meter.percent(7, 2 * hz, 4.0, start), 50.0);
        // Then: one more second of CPU in two seconds.
        let later = start + std::time::Duration::from_secs(2);
        assert_eq!(meter.percent(7, 3 * hz, 6.0, later), 50.0);
        // A look within the window repeats the last share, whatever a few ticks say.
        let soon = later + std::time::Duration::from_millis(30);
        assert_eq!(meter.percent(7, 3 * hz + 3, 6.03, soon), 50.0);
        // The next window starts where the last one ended: 0.5 s of CPU in 1 s.
        let next = later + std::time::Duration::from_secs(1);
        assert_eq!(meter.percent(7, 3 * hz + hz / 2, 7.0, next), 50.0);
        meter.keep_only(&[]);
        assert!(meter.last.is_empty());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes_text(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(bytes_text(830 * 1024 * 1024), "830 MiB");
        assert_eq!(bytes_text(512 * 1024), "512 KiB");
    }
}
