//! End to end with the real OpenClaw gateway: `reef setup` + `reef up` run a main and a rescue
//! gateway with runtime "openclaw"; both reach `/readyz` 200 and `openclaw --profile NAME health`
//! finds each; `kill -9` of reef leaves both serving and the next `reef up` adopts them with the
//! same pids; SIGINT then stops both with exit 0 and no process left.
//!
//! Needs the real gateway: `tools/install-openclaw.sh` installs it and prints the wrapper's
//! path; run with `REEF_OPENCLAW_BIN=<that path> cargo test --test openclaw -- --ignored`.
//! (`.ci/run` does exactly that.) Each gateway takes ~10 s to become ready and ~1.5 GiB.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const READY_DEADLINE: Duration = Duration::from_secs(240);

fn openclaw_bin() -> PathBuf {
    let path = std::env::var_os("REEF_OPENCLAW_BIN").expect(
        "REEF_OPENCLAW_BIN must name the openclaw wrapper: run tools/install-openclaw.sh, which prints it",
    );
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "REEF_OPENCLAW_BIN={} is not a file",
        path.display()
    );
    path
}

/// `reef` with a private home and nothing inherited that could steer OpenClaw elsewhere.
fn reef(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reef"));
    command
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("OPENCLAW_HOME")
        .env_remove("OPENCLAW_PROFILE")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_GATEWAY_PORT")
        .env_remove("REEF_SCRIPT");
    command
}

/// Two base ports 1000 apart whose gateway and browser-control ports are free, in the test's own
/// `slot` (the tests of this file may run at once: each searches its own 3000 ports).
fn free_bases(slot: u16) -> (u16, u16) {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 21000 + slot * 3000;
    (start..start + 1800)
        .step_by(200)
        .find(|&base| {
            [
                base,
                base + 2,
                base + 500,
                base + 502,
                base + 1000,
                base + 1002,
                base + 1500,
                base + 1502,
            ]
            .into_iter()
            .all(free)
        })
        .map(|base| (base, base + 1000))
        .expect("two free footprints")
}

/// Stops `reef up` when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `reef up` on `script` in the background, its output in `log` under `home`.
fn start_up(home: &Path, script: &Path, log: &str) -> Child {
    start_up_with(home, script, log, &[])
}

/// [`start_up`] with options for `reef up`.
fn start_up_with(home: &Path, script: &Path, log: &str, options: &[&str]) -> Child {
    let log = std::fs::File::create(home.join(log)).unwrap();
    reef(home)
        .arg("up")
        .args(options)
        .arg(script)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn status(home: &Path, script: &Path) -> Option<Value> {
    let output = reef(home)
        .arg("status")
        .arg(script)
        .arg("--json")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .expect("the gateway answers");
    let code = response.status().as_u16();
    (
        code,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
#[ignore = "needs the real OpenClaw: see this file's header"]
fn real_openclaw_main_and_rescue_run_under_reef() {
    let openclaw = openclaw_bin();
    let home = tempfile::tempdir().unwrap();
    let (main_port, rescue_port) = free_bases(0);
    let script = home.path().join("reef.lua");
    std::fs::write(
        &script,
        format!(
            "reef.defaults {{\n  runtime = \"openclaw\",\n  command = {{ {openclaw:?} }},\n  \
             -- tests only: no messaging channels\n  env = {{ OPENCLAW_SKIP_CHANNELS = \"1\" }},\n}}\n\
             local main = reef.gateway {{ profile = \"main\", port = {main_port} }}\n\
             reef.gateway {{ profile = \"rescue\", port = {rescue_port} }}\n",
        ),
    )
    .unwrap();

    let setup = reef(home.path())
        .arg("setup")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "reef setup: {}",
        String::from_utf8_lossy(&setup.stderr)
    );

    let metrics = main_port + 300;
    let child = start_up_with(
        home.path(),
        &script,
        "reef-up.log",
        &["--metrics", &metrics.to_string()],
    );
    let mut up = Running(child);

    let started = Instant::now();
    let statuses = loop {
        if let Some(status) = status(home.path(), &script) {
            let instances = status["instances"].as_array().unwrap().clone();
            if instances.iter().all(|i| i["state"] == "ready") {
                break instances;
            }
            let stuck: Vec<&Value> = instances
                .iter()
                .filter(|i| {
                    ["config-error", "exited", "blocked"]
                        .contains(&i["state"].as_str().unwrap_or(""))
                })
                .collect();
            assert!(
                stuck.is_empty(),
                "a gateway cannot start: {stuck:#?}\nreef up log:\n{}",
                std::fs::read_to_string(home.path().join("reef-up.log")).unwrap_or_default()
            );
        }
        if let Ok(Some(exit)) = up.0.try_wait() {
            panic!(
                "reef up exited early ({exit}):\n{}",
                std::fs::read_to_string(home.path().join("reef-up.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < READY_DEADLINE,
            "not ready within {READY_DEADLINE:?}: {:#?}\nreef up log:\n{}",
            status(home.path(), &script),
            std::fs::read_to_string(home.path().join("reef-up.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "both real gateways ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for (port, profile) in [(main_port, "main"), (rescue_port, "rescue")] {
        let (code, body) = http_get(port, "/readyz");
        assert_eq!(code, 200, "{profile} /readyz: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ready"], true, "{profile} /readyz: {body}");

        let health = Command::new(&openclaw)
            .args(["--profile", profile, "health"])
            .env("HOME", home.path())
            .env_remove("OPENCLAW_HOME")
            .env_remove("OPENCLAW_STATE_DIR")
            .env_remove("OPENCLAW_CONFIG_PATH")
            .env_remove("OPENCLAW_GATEWAY_PORT")
            .output()
            .unwrap();
        assert!(
            health.status.success(),
            "openclaw --profile {profile} health failed:\n{}\n{}",
            String::from_utf8_lossy(&health.stdout),
            String::from_utf8_lossy(&health.stderr)
        );
    }

    // CPU and memory count the whole gateway (its workers too), and the metrics show them.
    let measured = status(home.path(), &script).expect("a status");
    let (_, text) = http_get(metrics, "/metrics");
    for profile in ["main", "rescue"] {
        let instance = instance_of(&measured, profile);
        let rss = instance["rss_bytes"].as_u64().unwrap_or(0);
        assert!(
            rss > 100 << 20,
            "a real gateway takes far more than 100 MiB: {instance:#}"
        );
        assert!(
            instance["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0,
            "{instance:#}"
        );
        assert!(instance["cpu_percent"].is_number(), "{instance:#}");
        let labels = format!("{{name=\"{profile}\",profile=\"{profile}\"}}");
        for series in [
            format!("reef_gateway_ready{labels} 1"),
            format!("reef_gateway_up{labels} 1"),
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "no {series:?} in:\n{text}"
            );
        }
        let scraped_rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("reef_gateway_rss_bytes{labels} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rss of {profile} in:\n{text}"));
        assert!(scraped_rss > (100 << 20) as f64, "{text}");
        assert!(
            text.contains(&format!("reef_gateway_probe_duration_seconds{labels} ")),
            "{text}"
        );
    }

    let pids: Vec<i32> = statuses
        .iter()
        .map(|i| i["pid"].as_i64().unwrap() as i32)
        .collect();

    // Live restore: reef dies hard, the gateways keep serving, the next reef adopts them.
    kill(Pid::from_raw(up.0.id() as i32), Signal::SIGKILL).unwrap();
    up.0.wait().unwrap();
    for port in [main_port, rescue_port] {
        let (code, body) = http_get(port, "/healthz");
        assert_eq!(
            code, 200,
            "a gateway stopped serving when reef died: {body}"
        );
    }
    let child = start_up(home.path(), &script, "reef-up-2.log");
    up = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let adopted = loop {
        if let Some(status) = status(home.path(), &script) {
            let instances = status["instances"].as_array().unwrap().clone();
            if instances.iter().all(|i| i["state"] == "ready") {
                break instances;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted reef did not take the gateways back: {:#?}\n{}",
            status(home.path(), &script),
            std::fs::read_to_string(home.path().join("reef-up-2.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let adopted_pids: Vec<i32> = adopted
        .iter()
        .map(|i| i["pid"].as_i64().unwrap() as i32)
        .collect();
    assert_eq!(
        adopted_pids, pids,
        "every gateway keeps its pid across a reef crash"
    );
    assert!(adopted.iter().all(|i| i["adopted"] == true), "{adopted:#?}");

    kill(Pid::from_raw(up.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = up.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "reef up did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exit.code(), Some(0), "reef up exit");
    for pid in pids {
        // Each gateway led its own process group: nothing of it may be left.
        assert!(
            // A zombie leader waiting for init to reap it holds nothing: live members only.
            !reef::host::identity::group_has_live_members(pid as u32),
            "process group {pid} still has members after reef stopped"
        );
    }
    for port in [main_port, rescue_port] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken after reef stopped"
        );
    }
}

/// Polls `reef status` until `done` holds for it, failing early if reef up exits.
fn wait_status(
    home: &Path,
    script: &Path,
    up: &mut Running,
    log: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        if let Some(status) = status(home, script)
            && done(&status)
        {
            return status;
        }
        if let Ok(Some(exit)) = up.0.try_wait() {
            panic!(
                "reef up exited early ({exit}):\n{}",
                std::fs::read_to_string(home.join(log)).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < READY_DEADLINE,
            "no {what} within {READY_DEADLINE:?}: {:#?}\nreef up log:\n{}",
            status(home, script),
            std::fs::read_to_string(home.join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `reef ARGS SCRIPT` to completion and expects success.
fn reef_ok(home: &Path, args: &[&str], script: &Path) -> std::process::Output {
    let output = reef(home).args(args).arg(script).output().unwrap();
    assert!(
        output.status.success(),
        "reef {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn instance_of<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {status:#}"))
}

fn openclaw_cli(openclaw: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(openclaw)
        .args(args)
        .env("HOME", home)
        .env_remove("OPENCLAW_HOME")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_GATEWAY_PORT")
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs the real OpenClaw: see this file's header"]
fn real_openclaw_config_is_never_overridden_and_follows_a_moved_port() {
    let openclaw = openclaw_bin();
    let home = tempfile::tempdir().unwrap();
    let (bound_port, moved_port) = free_bases(1);
    let new_port = moved_port + 500;
    let script = home.path().join("reef.lua");
    let topology = |moved: u16| {
        format!(
            "reef.defaults {{ runtime = \"openclaw\", command = {{ {openclaw:?} }}, \
             env = {{ OPENCLAW_SKIP_CHANNELS = \"1\" }} }}\n\
             reef.gateway {{ profile = \"bound\", port = {bound_port} }}\n\
             reef.gateway {{ profile = \"moved\", port = {moved} }}\n"
        )
    };
    std::fs::write(&script, topology(moved_port)).unwrap();
    // `bound`: its gateway section lives in an included file that binds one custom address.
    let bound_dir = home.path().join(".openclaw-bound");
    std::fs::create_dir_all(&bound_dir).unwrap();
    std::fs::write(
        bound_dir.join("openclaw.json"),
        "{\n  // everything about the gateway is in gateway.json5\n  gateway: { $include: './gateway.json5' },\n  discovery: { mdns: { mode: 'off' } },\n  update: { checkOnStart: false },\n}\n",
    )
    .unwrap();
    std::fs::write(
        bound_dir.join("gateway.json5"),
        format!(
            "{{ mode: 'local', bind: 'custom', customBindHost: '127.0.0.2', port: {bound_port}, \
             auth: {{ mode: 'token', token: 'bound-token-0123456789' }} }}\n"
        ),
    )
    .unwrap();
    // `moved`: what `reef setup` lays out (OpenClaw's baseline, then port, mode and token).
    let setup = reef_ok(home.path(), &["setup"], &script);
    let said = String::from_utf8_lossy(&setup.stdout);
    assert!(
        said.contains("moved: ")
            && said.contains("setup --baseline")
            && said.contains("added gateway.port"),
        "{said}"
    );
    // What OpenClaw's baseline lays out is there: the workspace and its bootstrap files.
    assert!(
        home.path()
            .join(".openclaw-moved/workspace/AGENTS.md")
            .is_file(),
        "openclaw setup --baseline laid out the workspace"
    );
    reef_ok(home.path(), &["check"], &script);

    let mut up = Running(start_up(home.path(), &script, "reef-up.log"));
    let ready = wait_status(
        home.path(),
        &script,
        &mut up,
        "reef-up.log",
        "two ready gateways",
        |s| {
            s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["state"] == "ready")
        },
    );
    // The custom bind is the gateway's: reef added no --bind and probes where it listens.
    let bound_log = instance_of(&ready, "bound")["log"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = std::fs::read_to_string(&bound_log).unwrap();
    let started = log
        .lines()
        .find(|l| l.starts_with("--- reef: starting"))
        .unwrap();
    assert!(
        !started.contains("--bind") && !started.contains("--allow-unconfigured"),
        "{started}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.2", bound_port)).is_ok(),
        "the gateway listens on its custom address"
    );

    // A reload moves `moved` to another port: the config follows, the CLI finds it there.
    let old_pid = instance_of(&ready, "moved")["pid"].as_u64().unwrap();
    std::fs::write(&script, topology(new_port)).unwrap();
    wait_status(
        home.path(),
        &script,
        &mut up,
        "reef-up.log",
        "`moved` ready on its new port",
        |s| {
            let moved = instance_of(s, "moved");
            moved["state"] == "ready"
                && moved["pid"].as_u64() != Some(old_pid)
                && moved["ports"]["gateway"] == new_port
        },
    );
    let config =
        std::fs::read_to_string(home.path().join(".openclaw-moved/openclaw.json")).unwrap();
    assert!(config.contains(&new_port.to_string()), "{config}");
    assert!(
        home.path()
            .join(".openclaw-moved/openclaw.json.reef-backup")
            .is_file()
    );
    let health = openclaw_cli(&openclaw, home.path(), &["--profile", "moved", "health"]);
    assert!(
        health.status.success(),
        "openclaw --profile moved health after the move:\n{}\n{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    let port = openclaw_cli(
        &openclaw,
        home.path(),
        &[
            "--profile",
            "moved",
            "config",
            "get",
            "gateway.port",
            "--json",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&port.stdout).trim(),
        new_port.to_string()
    );
}

#[test]
#[ignore = "needs the real OpenClaw: see this file's header"]
fn real_openclaw_restart_loop_breaker_shows_as_degraded() {
    let openclaw = openclaw_bin();
    let home = tempfile::tempdir().unwrap();
    let (port, _) = free_bases(2);
    let script = home.path().join("reef.lua");
    std::fs::write(
        &script,
        format!(
            "reef.defaults {{ runtime = \"openclaw\", command = {{ {openclaw:?} }}, \
             env = {{ OPENCLAW_SKIP_CHANNELS = \"1\" }}, \
             restart = {{ backoff = {{ initial = 0.2, max = 1 }} }} }}\n\
             reef.gateway {{ profile = \"crashy\", port = {port} }}\n\
             reef.on(\"degraded\", function(e) reef.log.warn(\"hook saw degraded: \" .. e.reason) end)\n"
        ),
    )
    .unwrap();
    reef_ok(home.path(), &["setup"], &script);
    let mut up = Running(start_up(home.path(), &script, "reef-up.log"));
    // Three unclean boots (kill -9 once ready): the fourth trips the gateway's breaker.
    let mut last_pid = 0;
    for round in 0..3 {
        let status = wait_status(
            home.path(),
            &script,
            &mut up,
            "reef-up.log",
            "a ready gateway",
            |s| {
                let i = instance_of(s, "crashy");
                i["state"] == "ready" && i["pid"].as_u64() != Some(last_pid)
            },
        );
        let crashy = instance_of(&status, "crashy");
        assert!(crashy["degraded"].is_null(), "round {round}: {crashy:#}");
        last_pid = crashy["pid"].as_u64().unwrap();
        kill(Pid::from_raw(-(last_pid as i32)), Signal::SIGKILL).unwrap();
    }
    let status = wait_status(
        home.path(),
        &script,
        &mut up,
        "reef-up.log",
        "a degraded gateway",
        |s| {
            let i = instance_of(s, "crashy");
            i["state"] == "ready"
                && i["pid"].as_u64() != Some(last_pid)
                && i["degraded"].is_object()
        },
    );
    let crashy = instance_of(&status, "crashy");
    assert_eq!(
        crashy["degraded"]["reason"], "gateway.crash_loop_breaker",
        "{crashy:#}"
    );
    assert!(
        crashy["message"]
            .as_str()
            .unwrap()
            .contains("restart-loop breaker tripped"),
        "{crashy:#}"
    );
    let table = reef(home.path())
        .arg("status")
        .arg(&script)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("degraded:"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(home.path().join("reef-up.log"))
        .unwrap_or_default()
        .contains("hook saw degraded: gateway.crash_loop_breaker")
    {
        assert!(Instant::now() < deadline, "the degraded hook did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
}
