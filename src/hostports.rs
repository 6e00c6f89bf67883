//! The host's side of ports: is a port free on loopback, and if not, which process holds it.
//!
//! Holders are found the way `ss -p` does: the listening socket's inode from
//! `/proc/net/tcp{,6}`, then the process whose fd table links to `socket:[inode]`.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

use serde::Serialize;

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub port: u16,
    /// `None` when the socket belongs to a process we may not inspect.
    pub pid: Option<u32>,
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(command)) => {
                write!(f, "port {} is held by pid {pid} ({command})", self.port)
            }
            (Some(pid), None) => write!(f, "port {} is held by pid {pid}", self.port),
            _ => write!(f, "port {} is held by another process", self.port),
        }
    }
}

/// Whether `port` can be bound right now on loopback: 127.0.0.1, and ::1 where the host has
/// IPv6 (OpenClaw binds both).
pub fn is_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return false;
    }
    match TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => true,
        Err(err) => err.kind() != std::io::ErrorKind::AddrInUse,
    }
}

/// The first of `ports` that cannot be bound, with whoever listens on it.
pub fn first_taken(ports: &[u16]) -> Option<Holder> {
    ports
        .iter()
        .find(|port| !is_free(**port))
        .map(|&port| holder(port))
}

/// Every TCP port something listens on (IPv4 and IPv6).
pub fn listening_ports() -> std::collections::BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
                    (*fields.get(3)? == "0A").then_some(port)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Who listens on `port` (TCP, IPv4 or IPv6).
pub fn holder(port: u16) -> Holder {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    let pid = inodes.iter().find_map(|inode| pid_of_socket(*inode));
    Holder {
        port,
        pid,
        command: pid.and_then(command_line),
    }
}

/// Inodes of sockets in LISTEN state on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *state == LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

fn pid_of_socket(inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link == Path::new(&target)) {
                return Some(pid);
            }
        }
    }
    None
}

/// A process's command line, arguments joined by spaces.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|byte| *byte == 0)
        .filter(|word| !word.is_empty())
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    if words.is_empty() {
        return None;
    }
    // One line, and short enough to read in a message.
    let line: String = words
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Some(if line.chars().count() > 120 {
        format!("{}…", line.chars().take(119).collect::<String>())
    } else {
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:4965 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 0x4965), vec![12345]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        let holder = holder(port);
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.command.is_some());
        drop(listener);
        assert!(is_free(port));
    }
}
