//! `cargo bench --bench reload`: with `reef up` running three built-in gateways, how long from
//! writing a changed port into the script to that gateway being ready again on it (median of
//! 20), and how many evaluations a burst of 100 writes costs.
//!
//! Prints figures; asserts nothing about speed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reef::control::{self, Request};
use reef::layout::TopologyDirs;
use reef::supervisor::status::{State, TopologyStatus};

const ROUNDS: usize = 20;
const BURST: usize = 100;

fn main() {
    let home = tempfile::tempdir().expect("temp dir");
    let bases = free_bases(4);
    let (a, b, c, b_other) = (bases[0], bases[1], bases[2], bases[3]);
    let script = home.path().join("reef.lua");
    let write = |b_port: u16| {
        std::fs::write(
            &script,
            format!(
                "reef.gateway {{ profile = \"a\", port = {a} }}\n\
                 reef.gateway {{ profile = \"b\", port = {b_port} }}\n\
                 reef.gateway {{ profile = \"c\", port = {c} }}\n"
            ),
        )
        .expect("write the script")
    };
    write(b);
    let env: BTreeMap<String, String> =
        [("HOME".to_owned(), home.path().display().to_string())].into();
    let socket = TopologyDirs::for_script(&script, &env)
        .expect("dirs")
        .socket;

    let mut up = Guard(
        Command::new(env!("CARGO_BIN_EXE_reef"))
            .arg("up")
            .arg(&script)
            .env("HOME", home.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_STATE_HOME")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start reef up"),
    );
    wait_for(&socket, |s| {
        s.instances.iter().all(|i| i.state == State::Ready)
    });

    let mut samples = Vec::with_capacity(ROUNDS);
    let mut port = b;
    for _ in 0..ROUNDS {
        port = if port == b { b_other } else { b };
        let before = status(&socket).expect("status");
        let old_pid = before.instances[1].pid;
        let started = Instant::now();
        write(port);
        wait_for(&socket, |s| {
            let b = &s.instances[1];
            b.ports.gateway == port && b.state == State::Ready && b.pid != old_pid
        });
        samples.push(started.elapsed());
    }
    samples.sort();

    let before = status(&socket).expect("status").evaluations;
    for i in 0..BURST {
        write(if i.is_multiple_of(2) { b_other } else { b });
    }
    let last = if (BURST - 1).is_multiple_of(2) {
        b_other
    } else {
        b
    };
    wait_for(&socket, |s| {
        s.instances[1].ports.gateway == last && s.instances[1].state == State::Ready
    });
    // Let a trailing evaluation, if any, land before counting.
    std::thread::sleep(Duration::from_millis(500));
    let evaluations = status(&socket).expect("status").evaluations - before;

    println!("hot reload with 3 built-in gateways, {ROUNDS} rounds");
    println!(
        "  write -> changed gateway ready on its new port: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(samples[ROUNDS / 2]),
        ms(samples[0]),
        ms(samples[ROUNDS - 1])
    );
    println!("  a burst of {BURST} writes cost {evaluations} evaluation(s)");
    up.stop();
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn status(socket: &Path) -> Option<TopologyStatus> {
    control::request(socket, &Request::Status).ok()?.status
}

fn wait_for(socket: &Path, done: impl Fn(&TopologyStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = status(socket)
            && done(&status)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {:#?}",
            status(socket)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `count` base ports 200 apart whose gateway and control ports are free.
fn free_bases(count: usize) -> Vec<u16> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 61000 + (std::process::id() % 10) as u16 * 200;
    (0..)
        .map(|i| start + i * 200)
        .take_while(|base| *base < 65400)
        .filter(|&base| free(base) && free(base + 2))
        .take(count)
        .collect()
}

/// Stops `reef up` on the way out, however the benchmark ends.
struct Guard(Child);

impl Guard {
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}
