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

/// Two base ports 1000 apart whose gateway and browser-control ports are free.
fn free_bases() -> (u16, u16) {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let offset = (std::process::id() % 40) as u16 * 200;
    (21000..30000)
        .step_by(200)
        .map(|base| base + offset % 2000)
        .find(|&base| {
            [base, base + 2, base + 1000, base + 1002]
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
    let log = std::fs::File::create(home.join(log)).unwrap();
    reef(home)
        .arg("up")
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
    let (main_port, rescue_port) = free_bases();
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

    let child = start_up(home.path(), &script, "reef-up.log");
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
