//! `reef up --metrics`: Prometheus text on `/metrics` that follows the colony, checked by
//! `promtool check metrics` and scraped by a real Prometheus server on loopback.
//!
//! promtool and prometheus come from Debian's `prometheus` package; without them those two
//! tests say so and pass, unless `REEF_REQUIRE_VALIDATORS=1` (as `.ci/run` sets after installing
//! them), which makes a missing one a failure.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// Shares `tests/up.rs`'s range; the claim files keep them apart. The metrics and Prometheus
/// ports sit in the unused room above a footprint (base+150 and up).
const PORTS: PortRange = PortRange::new(20_000, 32_000, 200);

const DEADLINE: Duration = Duration::from_secs(60);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// GET `path` on loopback: status code, content type and body.
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut response = agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|err| panic!("GET :{port}{path}: {err}"));
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| panic!("GET :{port}{path}: {err}"));
    (code, content_type, body)
}

/// The value of the sample `series` (name and labels exactly as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Scrapes until `done` holds for the text; panics with the last one after the deadline.
fn scrape_until(up: &mut Up<'_>, port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, _, text) = get(port, "/metrics");
        if done(&text) {
            return text;
        }
        up.assert_running(what, &text);
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn two_gateways() -> (Sandbox, [Footprint; 2]) {
    let ports = Footprint::claim_n::<2>(&PORTS);
    let script = format!(
        "{}{}",
        gateway("main", ports[0].base, ""),
        gateway("rescue", ports[1].base, "")
    );
    (Sandbox::new(&script), ports)
}

#[test]
fn metrics_follow_the_colony() {
    let (sandbox, ports) = two_gateways();
    let metrics = ports[0].base + 150;
    let address = metrics.to_string();
    let mut up = sandbox.up_with(&["--metrics", &address]);
    up.wait_all_ready();

    let main = "{name=\"main\",profile=\"main\"}";
    let text = scrape_until(
        &mut up,
        metrics,
        "both gateways ready in the metrics",
        |t| {
            sample(t, &format!("reef_gateway_ready{main}")) == Some(1.0)
                && sample(t, "reef_gateway_ready{name=\"rescue\",profile=\"rescue\"}") == Some(1.0)
        },
    );
    assert_eq!(sample(&text, &format!("reef_gateway_up{main}")), Some(1.0));
    assert_eq!(
        sample(&text, &format!("reef_gateway_restarts_total{main}")),
        Some(0.0)
    );
    let rss = sample(&text, &format!("reef_gateway_rss_bytes{main}")).expect("rss of main");
    assert!(rss > 1_000_000.0, "a live gateway uses some memory: {rss}");
    assert!(sample(&text, &format!("reef_gateway_cpu_seconds_total{main}")).is_some());
    let probe = sample(&text, &format!("reef_gateway_probe_duration_seconds{main}"))
        .expect("a ready gateway was probed");
    assert!((0.0..5.0).contains(&probe), "probe duration {probe}");
    assert_eq!(sample(&text, "reef_gateways{state=\"ready\"}"), Some(2.0));
    assert_eq!(sample(&text, "reef_generation"), Some(1.0));

    let (code, content_type, _) = get(metrics, "/metrics");
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (code, _, body) = get(metrics, "/nothing");
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");

    // A stopped gateway is down, with no memory figure; a restarted one counts its restart.
    sandbox.run_ok(&["stop", "rescue"]);
    let text = scrape_until(&mut up, metrics, "rescue stopped", |t| {
        sample(
            t,
            "reef_gateway_state{name=\"rescue\",profile=\"rescue\",state=\"stopped\"}",
        ) == Some(1.0)
    });
    assert_eq!(
        sample(&text, "reef_gateway_up{name=\"rescue\",profile=\"rescue\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "reef_gateway_rss_bytes{name=\"rescue\",profile=\"rescue\"}"
        ),
        None
    );
    sandbox.run_ok(&["restart", "main"]);
    scrape_until(&mut up, metrics, "main's restart counted", |t| {
        sample(t, &format!("reef_gateway_restarts_total{main}")) == Some(1.0)
            && sample(t, &format!("reef_gateway_ready{main}")) == Some(1.0)
    });

    // A reload that fails counts, and the running topology stays.
    sandbox.edit_script("reef.gateway { profile = ");
    let text = scrape_until(&mut up, metrics, "the failed reload counted", |t| {
        sample(t, "reef_reload_failures_total") == Some(1.0)
    });
    assert_eq!(sample(&text, "reef_reload_error"), Some(1.0));
    assert_eq!(sample(&text, &format!("reef_gateway_up{main}")), Some(1.0));
    assert!(sample(&text, "reef_evaluations_total").is_some_and(|n| n >= 1.0));
    up.stop();
}

#[test]
fn a_busy_or_bad_metrics_address_starts_nothing() {
    let (sandbox, ports) = two_gateways();
    let busy = std::net::TcpListener::bind(("127.0.0.1", ports[0].base + 150))
        .expect("the test's own port is free");
    let address = busy.local_addr().unwrap().to_string();
    let run = sandbox.run(&["up", "--metrics", &address, sandbox.script()]);
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot serve metrics on {address}")),
        "{run}"
    );
    assert!(run.stderr.contains("nothing was started"), "{run}");
    for port in ports.iter().map(|p| p.base) {
        assert!(port_is_free(port), "a gateway was started on {port}");
    }

    let run = sandbox.run(&["up", "--metrics", "example.org:80", sandbox.script()]);
    assert_eq!(run.code, 64, "a bad address is a usage error: {run}");
    assert!(run.stderr.contains("IP:PORT"), "{run}");
}

/// Whether `program` is installed; a missing one fails the test under
/// `REEF_REQUIRE_VALIDATORS=1`.
fn installed(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("REEF_REQUIRE_VALIDATORS").as_deref() != Ok("1"),
            "{program} is required (REEF_REQUIRE_VALIDATORS=1) but not installed"
        );
        eprintln!("skipped: {program} is not installed (Debian package `prometheus`)");
    }
    found
}

#[test]
fn promtool_accepts_the_metrics() {
    if !installed("promtool") {
        return;
    }
    let (sandbox, ports) = two_gateways();
    let metrics = ports[0].base + 150;
    let mut up = sandbox.up_with(&["--metrics", &metrics.to_string()]);
    up.wait_all_ready();
    sandbox.run_ok(&["stop", "rescue"]);
    let text = scrape_until(&mut up, metrics, "a probe duration", |t| {
        t.contains("reef_gateway_probe_duration_seconds{")
    });
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics:\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool's linter is quiet about good metrics.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "",
        "promtool has remarks:\n{text}"
    );
    up.stop();
}

#[test]
fn a_real_prometheus_scrapes_reef() {
    if !installed("prometheus") {
        return;
    }
    let (sandbox, ports) = two_gateways();
    let metrics = ports[0].base + 150;
    let web = ports[0].base + 160;
    let mut up = sandbox.up_with(&["--metrics", &metrics.to_string()]);
    up.wait_all_ready();

    let config = sandbox.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: reef\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus");
    prometheus
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            sandbox.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .current_dir(sandbox.dir());
    let mut server = Proc::spawn(prometheus, &sandbox.outputs, "prometheus");

    let query = "/api/v1/query?query=reef_gateway_ready";
    let deadline = Instant::now() + DEADLINE;
    let answer = loop {
        if let Some(status) = server.try_status() {
            panic!("prometheus exited ({status}):\n{}", server.output());
        }
        let answered = agent()
            .get(&format!("http://127.0.0.1:{web}{query}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|body| serde_json::from_str::<Value>(&body).ok());
        if let Some(answer) = answered
            && answer["data"]["result"]
                .as_array()
                .is_some_and(|series| series.len() == 2)
        {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape reef within {DEADLINE:?}:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut names: Vec<(String, String, String)> = answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            (
                series["metric"]["name"].as_str().unwrap_or("").to_owned(),
                series["metric"]["profile"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                series["value"][1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("main".into(), "main".into(), "1".into()),
            ("rescue".into(), "rescue".into(), "1".into())
        ],
        "{answer}"
    );
    // The target is healthy: every scrape parsed.
    let (_, _, targets) = get(web, "/api/v1/targets");
    let targets: Value = serde_json::from_str(&targets).unwrap();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{targets}");
    assert_eq!(active["lastError"], "", "{targets}");
    server.end();
    up.stop();
}
