//! Marker variables: how reef recognises the processes it started, and all their descendants.
//!
//! Every process reef starts gets three variables in its environment: the topology's id, the
//! instance's name and a nonce fresh for each spawn. Children inherit their parent's
//! environment, so a gateway's helpers, and whatever escaped its process group with `setsid` or
//! a double fork, carry them too, and the kernel keeps the environment a process was started
//! with readable in `/proc/PID/environ`. Together with pid and start time ([`super::identity`])
//! they are the proof reef requires before it signals anything: a crash of reef at any instant
//! leaves every process it started findable by the next `reef up`.
//!
//! Limits: a descendant that execs with a scrubbed environment (`env -i`) carries no markers
//! and cannot be found this way; a process that overwrites its initial environment in memory
//! could forge or drop them. Only processes of reef's own user are read, so another user's
//! processes are never candidates. On systems without `/proc` nothing is found.

use std::sync::OnceLock;

/// The topology a process belongs to (its id, as the supervisor names it).
pub const TOPOLOGY_VAR: &str = "REEF_TOPOLOGY";
/// The instance a process was started for (`reef.exec` for hook programs).
pub const INSTANCE_VAR: &str = "REEF_INSTANCE";
/// A nonce fresh for each spawn: it tells one start of an instance from the next.
pub const SPAWN_VAR: &str = "REEF_SPAWN";

/// The markers of one spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub topology: String,
    pub instance: String,
    pub spawn: String,
}

impl Markers {
    /// The variables to add to a spawn's environment.
    pub fn vars(&self) -> [(&'static str, String); 3] {
        [
            (TOPOLOGY_VAR, self.topology.clone()),
            (INSTANCE_VAR, self.instance.clone()),
            (SPAWN_VAR, self.spawn.clone()),
        ]
    }
}

/// A fresh spawn nonce: 16 hex digits from the OS's random source. Should that fail (it does
/// not on any supported system), the time and reef's pid stand in: unique per spawn in
/// practice, which is all a nonce needs.
pub fn new_spawn_nonce() -> String {
    let bits = getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 40)
    });
    format!("{bits:016x}")
}

static TOPOLOGY: OnceLock<String> = OnceLock::new();

/// Names the topology this reef supervises, for spawns made far from the supervisor (hook
/// programs run by `reef.exec`). The supervisor calls it once at start; one reef process
/// serves one topology, so the first id wins and a different later one is ignored (and logged).
pub fn set_topology(id: &str) {
    let kept = TOPOLOGY.get_or_init(|| id.to_owned());
    if kept != id {
        tracing::warn!(
            kept = %kept,
            ignored = %id,
            "the topology id of a reef process is set once"
        );
    }
}

/// The topology set by [`set_topology`], if any.
pub fn topology() -> Option<String> {
    TOPOLOGY.get().cloned()
}

/// A live process that carries markers.
#[derive(Debug, Clone)]
pub struct MarkedProcess {
    pub pid: u32,
    /// Clock ticks since boot, as [`super::identity::start_time`] reports.
    pub start_ticks: u64,
    pub pgid: u32,
    pub sid: u32,
    pub ppid: u32,
    pub markers: Markers,
}

/// The markers in the environment `pid` was started with; `None` if it has none (all three are
/// needed), is gone, or belongs to another user.
///
/// A process caught in the middle of its `execve` (in the microseconds after `spawn` returns)
/// shows an empty environment, so it has no markers yet: signal a child just spawned through
/// its process group, which reef holds anyway.
pub fn markers_of(pid: u32) -> Option<Markers> {
    #[cfg(target_os = "linux")]
    {
        let process = super::proc_handle(pid)?;
        read_markers(&process, rustix::process::getuid().as_raw())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Every live process of reef's user marked with `topology`, except reef itself.
///
/// Another user's processes are skipped on the owner of their `/proc/PID` directory, before
/// their environment is read; zombies are left out (nothing to signal, and their parent reaps
/// them).
pub fn find_marked(topology: &str) -> Vec<MarkedProcess> {
    #[cfg(target_os = "linux")]
    {
        let me = std::process::id();
        let uid = rustix::process::getuid().as_raw();
        let Ok(processes) = procfs::process::all_processes() else {
            return Vec::new();
        };
        processes
            .flatten()
            .filter(|process| u32::try_from(process.pid).is_ok_and(|pid| pid != me))
            .filter_map(|process| marked(&process, uid, topology))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = topology;
        Vec::new()
    }
}

/// Whether `pid` is provably a process reef started for `topology` (and for the spawn `spawn`,
/// when given): the one that started at `start_ticks`, alive, and carrying the markers.
pub fn is_ours(pid: u32, start_ticks: u64, topology: &str, spawn: Option<&str>) -> bool {
    #[cfg(target_os = "linux")]
    {
        // One `/proc/PID` handle for every read: they all describe the same process, even if it
        // exits and its pid is reused meanwhile.
        let Some(process) = super::proc_handle(pid) else {
            return false;
        };
        let uid = rustix::process::getuid().as_raw();
        marked(&process, uid, topology).is_some_and(|found| {
            found.start_ticks == start_ticks
                && spawn.is_none_or(|nonce| found.markers.spawn == nonce)
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (pid, start_ticks, topology, spawn);
        false
    }
}

/// The process behind `process` if it runs, is `uid`'s, and carries `topology`'s markers.
#[cfg(target_os = "linux")]
fn marked(process: &procfs::process::Process, uid: u32, topology: &str) -> Option<MarkedProcess> {
    let markers = read_markers(process, uid).filter(|m| m.topology == topology)?;
    let stat = process.stat().ok()?;
    if !super::identity::is_running(stat.state) {
        return None;
    }
    let id = |raw: i32| u32::try_from(raw).ok();
    Some(MarkedProcess {
        pid: id(stat.pid)?,
        start_ticks: stat.starttime,
        pgid: id(stat.pgrp)?,
        sid: id(stat.session)?,
        ppid: id(stat.ppid)?,
        markers,
    })
}

#[cfg(target_os = "linux")]
fn read_markers(process: &procfs::process::Process, uid: u32) -> Option<Markers> {
    // The owner check is one fstat on the handle: cheap enough to skip most of `/proc`.
    if process.uid().ok()? != uid {
        return None;
    }
    process.read::<_, EnvironMarkers>("environ").ok()?.0
}

/// The markers in a `/proc/PID/environ`. Read through procfs, but without building a map of the
/// whole environment as `Process::environ` does: [`find_marked`] reads every candidate's, and
/// the map took a third of its time. As with `getenv`, the first of repeated names counts.
#[cfg(target_os = "linux")]
struct EnvironMarkers(Option<Markers>);

#[cfg(target_os = "linux")]
impl procfs::FromRead for EnvironMarkers {
    fn from_read<R: std::io::Read>(mut reader: R) -> procfs::ProcResult<Self> {
        let mut environ = Vec::with_capacity(8192);
        reader.read_to_end(&mut environ)?;
        let mut found: [Option<&[u8]>; 3] = [None; 3];
        let names = [TOPOLOGY_VAR, INSTANCE_VAR, SPAWN_VAR].map(str::as_bytes);
        for entry in environ.split(|&byte| byte == 0) {
            let Some(equals) = entry.iter().position(|&byte| byte == b'=') else {
                continue;
            };
            let (name, value) = (&entry[..equals], &entry[equals + 1..]);
            if let Some(slot) = names.iter().position(|wanted| *wanted == name) {
                found[slot].get_or_insert(value);
            }
        }
        let text = |value: Option<&[u8]>| Some(std::str::from_utf8(value?).ok()?.to_owned());
        let [topology, instance, spawn] = found;
        Ok(EnvironMarkers((|| {
            Some(Markers {
                topology: text(topology)?,
                instance: text(instance)?,
                spawn: text(spawn)?,
            })
        })()))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::host::identity::start_time;
    use crate::host::testing::{Spawned, kill_if_same, read_pid};

    fn markers(topology: &str) -> Markers {
        Markers {
            topology: topology.into(),
            instance: "gw".into(),
            spawn: new_spawn_nonce(),
        }
    }

    /// A topology id no other test (or process) uses.
    fn unique_topology() -> String {
        format!("test-{}", new_spawn_nonce())
    }

    #[test]
    fn markers_are_parsed_from_an_environ_block() {
        use procfs::FromRead;
        let parse = |block: &[u8]| EnvironMarkers::from_read(block).unwrap().0;
        let block = b"PATH=/bin\0REEF_SPAWN=ab=cd\0REEF_TOPOLOGY=t\0NOEQUALS\0REEF_INSTANCE=gw\0REEF_TOPOLOGY=later\0";
        assert_eq!(
            parse(block),
            Some(Markers {
                topology: "t".into(),
                instance: "gw".into(),
                spawn: "ab=cd".into(),
            })
        );
        assert_eq!(parse(b"REEF_TOPOLOGY=t\0REEF_INSTANCE=gw\0"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(
            parse(b"REEF_TOPOLOGY=\xff\0REEF_INSTANCE=gw\0REEF_SPAWN=s\0"),
            None
        );
    }

    #[test]
    fn nonces_are_sixteen_hex_digits_and_differ() {
        let a = new_spawn_nonce();
        let b = new_spawn_nonce();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn markers_are_read_back_from_a_child_environment() {
        let wanted = markers(&unique_topology());
        let mut child = Spawned::new(Command::new("sleep").arg("30").envs(wanted.vars()));
        assert_eq!(markers_of(child.pid()), Some(wanted.clone()));

        let mut unmarked = Spawned::new(Command::new("sleep").arg("30").env_remove(TOPOLOGY_VAR));
        assert_eq!(markers_of(unmarked.pid()), None);
        let mut partial = Spawned::new(
            Command::new("sleep")
                .arg("30")
                .env(TOPOLOGY_VAR, &wanted.topology)
                .env_remove(SPAWN_VAR),
        );
        assert_eq!(markers_of(partial.pid()), None, "all three are needed");
        for spawned in [&mut child, &mut unmarked, &mut partial] {
            spawned.kill_and_reap();
        }
        assert_eq!(markers_of(child.pid()), None, "gone");
    }

    #[test]
    fn find_marked_finds_an_escaped_grandchild_and_not_an_unmarked_process() {
        let wanted = markers(&unique_topology());
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("escaped.pid");
        // The grandchild leaves the group and session of its parent, which exits: only the
        // markers tie it to us.
        let mut parent = Spawned::new(
            Command::new("sh")
                .args(["-c", r#"setsid sleep 30 & echo $! > "$1"; exit 0"#, "sh"])
                .arg(&pid_file)
                .envs(wanted.vars())
                .process_group(0),
        );
        let mut unmarked = Spawned::new(Command::new("sleep").arg("30"));
        parent.reap();
        let escaped = read_pid(&pid_file, "sleep");
        let escaped_ticks = start_time(escaped).expect("the escaped sleep runs");

        let found = find_marked(&wanted.topology);
        assert_eq!(found.len(), 1, "{found:?}");
        let found = &found[0];
        assert_eq!(found.pid, escaped);
        assert_eq!(found.start_ticks, escaped_ticks);
        assert_eq!(found.markers, wanted);
        assert_eq!(found.sid, escaped, "setsid made it a session leader");
        assert_eq!(found.pgid, escaped);
        assert!(find_marked(&unique_topology()).is_empty());
        assert!(
            !find_marked(&wanted.topology)
                .iter()
                .any(|p| p.pid == unmarked.pid())
        );

        assert!(is_ours(escaped, escaped_ticks, &wanted.topology, None));
        assert!(is_ours(
            escaped,
            escaped_ticks,
            &wanted.topology,
            Some(&wanted.spawn)
        ));
        assert!(!is_ours(escaped, escaped_ticks + 1, &wanted.topology, None));
        assert!(!is_ours(escaped, escaped_ticks, "another", None));
        assert!(!is_ours(
            escaped,
            escaped_ticks,
            &wanted.topology,
            Some("0000000000000000")
        ));
        assert!(!is_ours(
            unmarked.pid(),
            start_time(unmarked.pid()).unwrap(),
            &wanted.topology,
            None
        ));

        kill_if_same(escaped, escaped_ticks);
        unmarked.kill_and_reap();
    }

    #[test]
    fn reef_itself_is_never_found() {
        // The test binary carries no markers, but find_marked must skip it even if it did.
        let me = std::process::id();
        let topology = unique_topology();
        assert!(find_marked(&topology).iter().all(|p| p.pid != me));
    }

    /// `cargo test --release --lib host::markers::tests::find_marked_is_fast -- --ignored
    /// --nocapture`: tops the host up to 300 processes (a third of the added ones marked) and
    /// times a scan.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn find_marked_is_fast() {
        let topology = unique_topology();
        let count = || procfs::process::all_processes().unwrap().count();
        let added: Vec<Spawned> = (0..300usize.saturating_sub(count()))
            .map(|i| {
                let mut command = Command::new("sleep");
                command.arg("30");
                if i % 3 == 0 {
                    command.envs(markers(&topology).vars());
                }
                Spawned::new(&mut command)
            })
            .collect();
        let rounds = 100;
        let started = std::time::Instant::now();
        let mut found = 0;
        for _ in 0..rounds {
            found = std::hint::black_box(find_marked(&topology)).len();
        }
        let each = started.elapsed() / rounds;
        println!(
            "find_marked over {} processes ({found} marked, run as uid {}): {each:?} per scan",
            count(),
            rustix::process::getuid().as_raw()
        );
        drop(added);
    }

    use std::os::unix::process::CommandExt;
}
