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
    walk(leaders)
        .into_iter()
        .map(|(l, (u, _))| (l, u))
        .collect()
}

/// One walk of `/proc`: per session in `leaders`, its usage and its processes.
fn walk(leaders: &[u32]) -> HashMap<u32, (Usage, Vec<u32>)> {
    let mut found: HashMap<u32, (Usage, Vec<u32>)> = leaders
        .iter()
        .map(|&l| (l, (Usage::default(), Vec::new())))
        .collect();
    if leaders.is_empty() {
        return found;
    }
    let page = page_size();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(parsed) = read_stat(pid) else {
            continue;
        };
        if let Some((total, pids)) = found.get_mut(&parsed.session) {
            total.add(&parsed, page);
            pids.push(pid);
        }
    }
    found
}

fn read_stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

impl Usage {
    fn add(&mut self, stat: &Stat, page: u64) {
        self.cpu_ticks += stat.cpu_ticks;
        self.rss_bytes += stat.rss_pages * page;
        self.processes += 1;
    }
}

/// Samples sessions cheaply: one walk of all of `/proc` finds each session's processes (at the
/// first sample, when a session is new, and every [`Sampler::REWALK`] for workers started
/// since); the samples between read only those processes. On a host with hundreds of other
/// processes, a sample of 50 gateways then costs 50 reads instead of a walk of them all.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Per session leader, its processes (the leader included).
    members: HashMap<u32, Vec<u32>>,
    walked: Option<Instant>,
}

impl Sampler {
    /// How often the whole of `/proc` is walked again for processes a gateway started since.
    pub const REWALK: std::time::Duration = std::time::Duration::from_secs(30);

    /// What each session in `leaders` uses now.
    pub fn sample(&mut self, leaders: &[u32], now: Instant) -> HashMap<u32, Usage> {
        let due = self
            .walked
            .is_none_or(|at| now.saturating_duration_since(at) >= Self::REWALK);
        let unknown = leaders.iter().any(|l| !self.members.contains_key(l));
        if due || unknown {
            let found = walk(leaders);
            self.walked = Some(now);
            self.members = found
                .iter()
                .map(|(&leader, (_, pids))| (leader, pids.clone()))
                .collect();
            return found.into_iter().map(|(l, (u, _))| (l, u)).collect();
        }
        let page = page_size();
        let mut usage = HashMap::with_capacity(leaders.len());
        for &leader in leaders {
            let mut total = Usage::default();
            if let Some(pids) = self.members.get_mut(&leader) {
                // A process that ended, or a pid reused outside the session, is dropped.
                pids.retain(|&pid| match read_stat(pid) {
                    Some(stat) if stat.session == leader => {
                        total.add(&stat, page);
                        true
                    }
                    _ => false,
                });
            }
            usage.insert(leader, total);
        }
        let current: std::collections::HashSet<u32> = leaders.iter().copied().collect();
        self.members.retain(|leader, _| current.contains(leader));
        usage
    }
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

/// The last sample of the gateways' CPU and memory, shared by every client: however many
/// watch, the processes are read at most once per [`UsageCache::FRESH`].
#[derive(Debug, Default)]
pub struct UsageCache {
    sampler: Sampler,
    pub meter: CpuMeter,
    last: Option<(std::time::Instant, Vec<u32>, HashMap<u32, Usage>)>,
}

impl UsageCache {
    /// How long a sample serves: a client refreshing every second reads the processes every
    /// third time (CPU shares are then measured over 3 s, as `top` does by default).
    const FRESH: std::time::Duration = std::time::Duration::from_millis(2900);

    /// Usage of the sessions led by `leaders` (in this order), and when it was read.
    pub fn sample(&mut self, leaders: &[u32]) -> (std::time::Instant, HashMap<u32, Usage>) {
        let now = std::time::Instant::now();
        if let Some((at, sampled, usage)) = &self.last
            && now.saturating_duration_since(*at) < Self::FRESH
            && sampled == leaders
        {
            return (*at, usage.clone());
        }
        let usage = self.sampler.sample(leaders, now);
        self.last = Some((now, leaders.to_vec(), usage.clone()));
        (now, usage)
    }
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
    fn the_sampler_reads_only_known_processes_between_walks() {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "sleep 30 & exec sleep 30"]);
        // SAFETY: setsid is async-signal-safe; the forked child is never a group leader.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let leader = child.id();
        let start = Instant::now();
        let deadline = start + std::time::Duration::from_secs(5);
        // Until the shell has started its background sleep (a new sampler walks each time).
        let (mut sampler, first) = loop {
            let mut fresh = Sampler::default();
            let usage = fresh.sample(&[leader], start)[&leader];
            if usage.processes >= 2 || Instant::now() > deadline {
                break (fresh, usage);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(first.processes, 2, "{first:?}");
        let members = sampler.members[&leader].clone();
        assert_eq!(members.len(), 2, "{members:?}");
        // Between walks the known processes are read again; one that ends is dropped (as a
        // zombie until its parent, init, reaps it, it no longer counts).
        let background = *members.iter().find(|&&pid| pid != leader).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(background as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let later = start + std::time::Duration::from_secs(1);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut usage = sampler.sample(&[leader], later)[&leader];
        while usage.processes != 1 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            usage = sampler.sample(&[leader], later)[&leader];
        }
        assert_eq!(usage.processes, 1, "{usage:?}");
        assert_eq!(sampler.walked, Some(start), "no walk before REWALK");
        // A session never seen is found by a walk.
        let unknown = sampler.sample(&[leader, u32::MAX - 1], later);
        assert_eq!(unknown[&(u32::MAX - 1)].processes, 0);
        assert_eq!(sampler.walked, Some(later));
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(leader as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
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
