//! The built-in reference gateway (`reef gateway --port P`) against the real gateway's contract:
//! JSON probes (`/healthz`, `/readyz`, `/startupz` and their short forms), 503 while starting,
//! 405 for other methods, a 200 page on unknown paths, browser control on P+2, the state dir's
//! single-owner lock and an invalid config (exit 78), a taken port (exit 1), SIGTERM/SIGINT
//! (exit 0).
//!
//! Each test runs the gateway directly with its own temp dir as HOME, `OPENCLAW_STATE_DIR` and
//! `OPENCLAW_CONFIG_PATH`, on base ports of its own (see [`Footprint`]), under a guard that ends
//! it even when the test panics. Tests wait for the port to answer, never for a fixed time.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use common::{DEADLINE, Footprint, POLL, PortRange, Proc, port_is_free, reef};

/// How long the gateway may take to exit on SIGTERM/SIGINT (its contract: within a second).
const SIGNAL_EXIT: Duration = Duration::from_secs(5);

/// The gateway's exit codes.
const EXIT_PORT_IN_USE: i32 = 1;
const EXIT_CONFIG: i32 = 78;

/// Base ports: the range of `tests/up.rs`; the claim files coordinate the two binaries.
const PORTS: PortRange = PortRange::new(20_000, 32_000, 200);

fn claim() -> Footprint {
    Footprint::claim_in(&PORTS)
}

// ---------------------------------------------------------------------------------------------
// The gateway process (a [`Proc`]: its output in files, ended when dropped).

/// A temp dir with HOME, a state dir and the config path inside it.
struct Sandbox {
    tmp: tempfile::TempDir,
    state_dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let state_dir = tmp.path().join("state");
        std::fs::create_dir(&state_dir).expect("the state dir");
        Sandbox { tmp, state_dir }
    }

    fn config_path(&self) -> PathBuf {
        self.state_dir.join("openclaw.json")
    }

    /// Starts `reef gateway --port PORT ARGS` on this sandbox's state dir.
    fn gateway(&self, port: u16, args: &[&str]) -> Proc {
        self.gateway_on(&self.state_dir, port, args)
    }

    /// Starts it on `state_dir`, its config at `<state_dir>/openclaw.json`.
    fn gateway_on(&self, state_dir: &Path, port: u16, args: &[&str]) -> Proc {
        let config = state_dir.join("openclaw.json");
        self.spawn(
            port,
            args,
            &[
                ("OPENCLAW_STATE_DIR", state_dir),
                ("OPENCLAW_CONFIG_PATH", &config),
            ],
        )
    }

    /// Starts `reef gateway --port PORT ARGS` with HOME in the sandbox and `vars` set.
    fn spawn(&self, port: u16, args: &[&str], vars: &[(&str, &Path)]) -> Proc {
        let port = port.to_string();
        let mut command = reef(
            &["gateway", "--port", &port],
            self.tmp.path(),
            self.tmp.path(),
        );
        command.args(args);
        for (key, value) in vars {
            command.env(key, value);
        }
        Proc::spawn(command, self.tmp.path(), "gateway")
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// An answer: status, content type, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }
}

/// A client that returns 4xx/5xx answers instead of errors, and never uses a proxy.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .body_mut()
        .read_to_string()
        .expect("the body is text");
    Answer {
        status,
        content_type,
        body,
    }
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

fn get(port: u16, path: &str) -> Result<Answer, ureq::Error> {
    agent().get(url(port, path)).call().map(answer)
}

fn must_get(port: u16, path: &str) -> Answer {
    get(port, path).unwrap_or_else(|err| panic!("GET {path} on {port} failed: {err}"))
}

/// Polls `path` until the gateway answers at all (any status); panics if it exits first.
fn first_answer(gateway: &mut Proc, port: u16, path: &str) -> Answer {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = gateway.try_status() {
            panic!(
                "the gateway exited ({status}) before answering{}",
                gateway.output()
            );
        }
        match get(port, path) {
            Ok(answer) => return answer,
            Err(err) if Instant::now() >= deadline => {
                panic!(
                    "port {port} did not answer within {DEADLINE:?}: {err}{}",
                    gateway.output()
                )
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Polls `path` until it answers 200.
fn wait_for_200(gateway: &mut Proc, port: u16, path: &str) -> Answer {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = first_answer(gateway, port, path);
        if answer.status == 200 {
            return answer;
        }
        if Instant::now() >= deadline {
            panic!("{path} still answers {answer:?} after {DEADLINE:?}");
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// Probes.

#[test]
fn probes_answer_with_json_bodies() {
    let port = claim();
    let sandbox = Sandbox::new();
    let mut gateway = sandbox.gateway(port.base, &[]);
    first_answer(&mut gateway, port.base, "/healthz");

    for path in ["/healthz", "/health"] {
        let answer = must_get(port.base, path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(
            answer.content_type.starts_with("application/json"),
            "{answer:?}"
        );
        assert_eq!(
            answer.json(),
            json!({ "ok": true, "status": "live" }),
            "{path}"
        );
    }
    for path in ["/readyz", "/ready"] {
        let answer = must_get(port.base, path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.json()["ready"], true, "{path}: {answer:?}");
    }
    for path in ["/startupz", "/startup"] {
        let answer = must_get(port.base, path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.json()["status"], "started", "{path}: {answer:?}");
    }
    let head = agent()
        .head(url(port.base, "/healthz"))
        .call()
        .expect("HEAD /healthz answers");
    assert_eq!(head.status().as_u16(), 200);
    let stdout = gateway.stdout();
    assert!(
        stdout.contains(&format!("listening on ws://127.0.0.1:{}", port.base)),
        "{}",
        gateway.output()
    );
}

#[test]
fn readiness_and_startup_answer_503_until_the_startup_delay_has_passed() {
    let port = claim();
    let sandbox = Sandbox::new();
    let spawned = Instant::now();
    let mut gateway = sandbox.gateway(port.base, &["--startup-delay", "2"]);

    let ready = first_answer(&mut gateway, port.base, "/readyz");
    let startup = must_get(port.base, "/startupz");
    let live = must_get(port.base, "/healthz");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.json()["ready"], false, "{ready:?}");
    assert_eq!(ready.json()["status"], "starting", "{ready:?}");
    assert_eq!(startup.status, 503, "{startup:?}");
    assert_eq!(startup.json()["status"], "starting", "{startup:?}");
    assert_eq!(live.status, 200, "liveness holds while starting: {live:?}");
    assert_eq!(live.json()["ok"], true, "{live:?}");

    let ready = wait_for_200(&mut gateway, port.base, "/readyz");
    assert!(
        spawned.elapsed() >= Duration::from_secs(2),
        "ready after {:?}, before its start-up delay",
        spawned.elapsed()
    );
    assert_eq!(ready.json()["ready"], true, "{ready:?}");
    let startup = must_get(port.base, "/startupz");
    assert_eq!(startup.status, 200, "{startup:?}");
    assert_eq!(startup.json()["status"], "started", "{startup:?}");
}

#[test]
fn other_methods_get_405_and_unknown_paths_a_page_that_is_not_json() {
    let port = claim();
    let sandbox = Sandbox::new();
    let mut gateway = sandbox.gateway(port.base, &[]);
    first_answer(&mut gateway, port.base, "/healthz");

    let post = answer(
        agent()
            .post(url(port.base, "/healthz"))
            .send_empty()
            .expect("POST answers"),
    );
    assert_eq!(post.status, 405, "{post:?}");
    let put = answer(
        agent()
            .put(url(port.base, "/readyz"))
            .send_empty()
            .expect("PUT answers"),
    );
    assert_eq!(put.status, 405, "{put:?}");

    // The contract that makes probes check the body: every other path answers 200.
    for path in ["/", "/no/such/page", "/healthzz"] {
        let page = must_get(port.base, path);
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert!(
            page.content_type.starts_with("text/html"),
            "{path}: {page:?}"
        );
        assert!(
            serde_json::from_str::<Value>(&page.body).is_err(),
            "{path} answers JSON: {page:?}"
        );
    }
}

#[test]
fn browser_control_answers_two_ports_up() {
    let port = claim();
    let sandbox = Sandbox::new();
    let mut gateway = sandbox.gateway(port.base, &[]);
    first_answer(&mut gateway, port.base, "/healthz");

    let control = must_get(port.base + 2, "/");
    assert_eq!(control.status, 200, "{control:?}");
    assert_eq!(control.json()["ok"], true, "{control:?}");
    assert_eq!(control.json()["service"], "browser-control", "{control:?}");
}

// ---------------------------------------------------------------------------------------------
// Configuration errors: exit 78.

#[test]
fn a_second_gateway_on_the_same_state_dir_exits_78_naming_the_first() {
    let (first_port, second_port) = (claim(), claim());
    let sandbox = Sandbox::new();
    let mut first = sandbox.gateway(first_port.base, &[]);
    first_answer(&mut first, first_port.base, "/healthz");

    let mut second = sandbox.gateway(second_port.base, &[]);
    let code = second.exit_code_within(DEADLINE);
    assert_eq!(code, EXIT_CONFIG, "{}", second.output());
    assert!(
        second.stderr().contains(&format!("pid {}", first.pid())),
        "the refusal names the holder (pid {}){}",
        first.pid(),
        second.output()
    );
    assert!(
        port_is_free(second_port.base),
        "the refused gateway bound its port"
    );

    // The first one keeps running.
    assert_eq!(must_get(first_port.base, "/healthz").status, 200);
    assert!(first.try_status().is_none(), "{}", first.output());
}

#[test]
fn another_state_dir_is_not_locked_out() {
    let (first_port, second_port) = (claim(), claim());
    let sandbox = Sandbox::new();
    let other_state = sandbox.tmp.path().join("other-state");
    std::fs::create_dir(&other_state).unwrap();
    let mut first = sandbox.gateway(first_port.base, &[]);
    let mut second = sandbox.gateway_on(&other_state, second_port.base, &[]);
    first_answer(&mut first, first_port.base, "/healthz");
    first_answer(&mut second, second_port.base, "/healthz");
}

#[test]
fn an_invalid_json5_config_exits_78() {
    let port = claim();
    let sandbox = Sandbox::new();
    std::fs::write(sandbox.config_path(), "{ gateway: ").unwrap();
    let mut gateway = sandbox.gateway(port.base, &[]);
    assert_eq!(
        gateway.exit_code_within(DEADLINE),
        EXIT_CONFIG,
        "{}",
        gateway.output()
    );
    assert!(
        gateway.stderr().contains("invalid config"),
        "{}",
        gateway.output()
    );
    assert!(
        port_is_free(port.base),
        "a gateway with a bad config bound its port"
    );
}

/// The contract (shared/OPENCLAW.md, "Config file"): the config is read from
/// `OPENCLAW_CONFIG_PATH`, and an invalid one at start-up exits 78, whether or not a state dir
/// or profile is named too.
#[test]
fn an_invalid_config_at_openclaw_config_path_exits_78_without_a_state_dir() {
    let port = claim();
    let sandbox = Sandbox::new();
    let config = sandbox.tmp.path().join("elsewhere.json");
    std::fs::write(&config, "{ gateway: ").unwrap();
    let mut gateway = sandbox.spawn(port.base, &[], &[("OPENCLAW_CONFIG_PATH", &config)]);
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(status) = gateway.try_status() {
            break status.code();
        }
        // A gateway that answers has accepted the invalid config: no need to wait longer.
        if let Ok(answer) = get(port.base, "/healthz") {
            panic!(
                "the gateway serves ({answer:?}) despite an invalid config at \
                 OPENCLAW_CONFIG_PATH{}",
                gateway.output()
            );
        }
        assert!(Instant::now() < deadline, "no exit{}", gateway.output());
        std::thread::sleep(POLL);
    };
    assert_eq!(code, Some(EXIT_CONFIG), "{}", gateway.output());
    assert!(
        gateway.stderr().contains("invalid config"),
        "{}",
        gateway.output()
    );
}

#[test]
fn a_json5_config_with_comments_and_trailing_commas_is_accepted() {
    let port = claim();
    let sandbox = Sandbox::new();
    std::fs::write(
        sandbox.config_path(),
        "// reef test\n{ gateway: { mode: 'local', port: 1, }, }\n",
    )
    .unwrap();
    let mut gateway = sandbox.gateway(port.base, &[]);
    assert_eq!(
        first_answer(&mut gateway, port.base, "/healthz").status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Signals and ports.

fn exits_0_on(signal: Signal) {
    let port = claim();
    let sandbox = Sandbox::new();
    let mut gateway = sandbox.gateway(port.base, &[]);
    first_answer(&mut gateway, port.base, "/healthz");
    gateway.signal(signal);
    assert_eq!(
        gateway.exit_code_within(SIGNAL_EXIT),
        0,
        "{}",
        gateway.output()
    );
    assert!(port_is_free(port.base), "port {} still taken", port.base);
    assert!(
        port_is_free(port.base + 2),
        "port {} still taken",
        port.base + 2
    );
}

#[test]
fn sigterm_exits_0_and_frees_the_ports() {
    exits_0_on(Signal::SIGTERM);
}

#[test]
fn sigint_exits_0_and_frees_the_ports() {
    exits_0_on(Signal::SIGINT);
}

#[test]
fn a_port_held_by_a_listener_exits_1() {
    let port = claim();
    let sandbox = Sandbox::new();
    let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port.base)).expect("bind");
    let mut gateway = sandbox.gateway(port.base, &[]);
    assert_eq!(
        gateway.exit_code_within(DEADLINE),
        EXIT_PORT_IN_USE,
        "{}",
        gateway.output()
    );
    assert!(
        gateway.stderr().contains("already listening"),
        "{}",
        gateway.output()
    );
}

#[test]
fn a_browser_control_port_held_by_a_listener_exits_1() {
    let port = claim();
    let sandbox = Sandbox::new();
    let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port.base + 2)).expect("bind");
    let mut gateway = sandbox.gateway(port.base, &[]);
    assert_eq!(
        gateway.exit_code_within(DEADLINE),
        EXIT_PORT_IN_USE,
        "{}",
        gateway.output()
    );
    assert!(
        gateway
            .stderr()
            .contains(&format!("127.0.0.1:{}", port.base + 2)),
        "{}",
        gateway.output()
    );
}
