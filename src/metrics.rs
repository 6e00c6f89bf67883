//! `reef up --metrics ADDR`: the colony in Prometheus' text exposition format on
//! `http://ADDR/metrics`.
//!
//! [`exposition`] is pure: a [`TopologyStatus`] in, the text out. [`serve`] answers scrapes
//! with a fresh snapshot each (one walk of `/proc` for every gateway's CPU and memory); between
//! scrapes it costs nothing.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::supervisor::colony::Colony;
use crate::supervisor::status::{State, TopologyStatus};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where `--metrics` listens: `PORT` alone means loopback, `HOST:PORT` (`[V6]:PORT`) any
/// address the user names, `localhost:PORT` loopback.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "`{text}` is not an address to listen on: give PORT (loopback), IP:PORT or [IPv6]:PORT, \
         e.g. 9464 or 127.0.0.1:9464"
    ))
}

/// One metric family: its help, its type and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (label, text)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label(text, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(value, self.out);
        self.out.push('\n');
    }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The colony as Prometheus text: per gateway (labelled `name` and `profile`) whether it runs,
/// is ready, its state, restarts, CPU time, memory, last probe's duration and start time; for
/// reef itself its evaluations, reloads, failed reloads, generation and gateway counts.
pub fn exposition(status: &TopologyStatus) -> String {
    let mut out = String::with_capacity(512 + status.instances.len() * 1024);
    let gateways = &status.instances;
    let labels = |i: &crate::supervisor::status::InstanceStatus| {
        [("name", i.name.clone()), ("profile", i.profile.clone())]
    };
    let per_gateway =
        |out: &mut String,
         name: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&crate::supervisor::status::InstanceStatus) -> Option<f64>| {
            let mut family = Family::new(out, name, kind, help);
            for gateway in gateways {
                if let Some(value) = value(gateway) {
                    let owned = labels(gateway);
                    let pairs: Vec<(&str, &str)> =
                        owned.iter().map(|(l, v)| (*l, v.as_str())).collect();
                    family.sample(name, &pairs, value);
                }
            }
        };
    let flag = |yes: bool| if yes { 1.0 } else { 0.0 };

    per_gateway(
        &mut out,
        "reef_gateway_up",
        "gauge",
        "Whether the gateway's process is running (1) or not (0).",
        &|g| Some(flag(g.state.is_running())),
    );
    per_gateway(
        &mut out,
        "reef_gateway_ready",
        "gauge",
        "Whether the gateway passed its readiness probe and is serving (1) or not (0).",
        &|g| Some(flag(g.ready && g.state.is_running())),
    );
    {
        let name = "reef_gateway_state";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "The gateway's state: 1 for the state it is in, 0 for the others.",
        );
        for gateway in gateways {
            for state in State::ALL {
                let state_text = state.to_string();
                family.sample(
                    name,
                    &[
                        ("name", &gateway.name),
                        ("profile", &gateway.profile),
                        ("state", &state_text),
                    ],
                    flag(gateway.state == state),
                );
            }
        }
    }
    per_gateway(
        &mut out,
        "reef_gateway_restarts_total",
        "counter",
        "Times the gateway was started again after its first start.",
        &|g| Some(f64::from(g.restarts)),
    );
    per_gateway(
        &mut out,
        "reef_gateway_cpu_seconds_total",
        "counter",
        "CPU time (user and system) used by the gateway's live processes, its workers included.",
        &|g| g.cpu_seconds,
    );
    per_gateway(
        &mut out,
        "reef_gateway_rss_bytes",
        "gauge",
        "Resident memory of the gateway's processes, its workers included, in bytes.",
        &|g| g.rss_bytes.map(|bytes| bytes as f64),
    );
    per_gateway(
        &mut out,
        "reef_gateway_probe_duration_seconds",
        "gauge",
        "How long the last liveness or readiness probe of the running gateway took.",
        &|g| g.probe_seconds,
    );
    per_gateway(
        &mut out,
        "reef_gateway_start_time_seconds",
        "gauge",
        "When the gateway's current process started, in seconds since the Unix epoch.",
        &|g| g.started_at.filter(|_| g.state.is_running()),
    );

    Family::new(
        &mut out,
        "reef_evaluations_total",
        "counter",
        "Evaluations of the topology script (reloads, diffs, failed ones included).",
    )
    .sample("reef_evaluations_total", &[], status.evaluations as f64);
    Family::new(
        &mut out,
        "reef_reloads_total",
        "counter",
        "Reloads applied that changed the running topology.",
    )
    .sample(
        "reef_reloads_total",
        &[],
        status.generation.saturating_sub(1) as f64,
    );
    Family::new(
        &mut out,
        "reef_reload_failures_total",
        "counter",
        "Reloads that failed; the running topology stayed as it was.",
    )
    .sample(
        "reef_reload_failures_total",
        &[],
        status.reload_failures as f64,
    );
    Family::new(
        &mut out,
        "reef_reload_error",
        "gauge",
        "Whether the last reload failed (1) and no reload succeeded since (0 otherwise).",
    )
    .sample(
        "reef_reload_error",
        &[],
        flag(status.reload_error.is_some()),
    );
    Family::new(
        &mut out,
        "reef_generation",
        "gauge",
        "The running topology's generation: 1 at start, one more per reload that changed it.",
    )
    .sample("reef_generation", &[], status.generation as f64);
    Family::new(
        &mut out,
        "reef_start_time_seconds",
        "gauge",
        "When this reef started, in seconds since the Unix epoch.",
    )
    .sample("reef_start_time_seconds", &[], status.started_at);
    {
        let name = "reef_gateways";
        let mut family = Family::new(
            &mut out,
            name,
            "gauge",
            "Gateways of the topology by state.",
        );
        for state in State::ALL {
            let count = gateways.iter().filter(|g| g.state == state).count();
            family.sample(name, &[("state", &state.to_string())], count as f64);
        }
    }
    out
}

/// Binds the metrics address now, so that a busy or forbidden one stops `reef up` before it
/// starts anything.
pub fn bind(address: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context as _;
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    listener
        .set_nonblocking(true)
        .context("cannot make the metrics listener non-blocking")?;
    Ok(listener)
}

/// Serves `GET /metrics` until the task is dropped. Each connection gets a task of its own; a
/// scrape walks `/proc` once.
pub async fn serve(listener: std::net::TcpListener, colony: Colony) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("cannot serve metrics: {err}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("metrics: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let colony = colony.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let colony = colony.clone();
                async move { Ok::<_, Infallible>(answer(&request, &colony).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = connection.await;
        });
    }
}

async fn answer<B>(request: &Request<B>, colony: &Colony) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static headers are valid")
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, "GET, HEAD".parse().expect("valid"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            CONTENT_TYPE,
            exposition(&colony.sample().await),
        ),
        "/" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "reef: metrics are on /metrics\n".into(),
        ),
        path => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("nothing at {path}; metrics are on /metrics\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::InstanceStatus;
    use crate::supervisor::status::samples;

    /// A gateway in `state`: running ones have a pid, CPU, memory and a probe time.
    fn gateway(name: &str, state: State) -> InstanceStatus {
        let mut gateway = samples::instance(name, 18789);
        let running = state.is_running();
        gateway.profile = format!("{name}-profile");
        gateway.state = state;
        gateway.ready = state == State::Ready;
        gateway.restarts = 3;
        gateway.pid = running.then_some(4242);
        gateway.cpu_seconds = running.then_some(12.25);
        gateway.rss_bytes = running.then_some(1_048_576);
        gateway.probe_seconds = running.then_some(0.0042);
        gateway
    }

    fn topology(instances: Vec<InstanceStatus>) -> TopologyStatus {
        let mut topology = samples::topology(instances);
        topology.generation = 3;
        topology.evaluations = 5;
        topology.reload_failures = 1;
        topology
    }

    #[test]
    fn every_gateway_has_its_metrics_labelled_by_name_and_profile() {
        let text = exposition(&topology(vec![
            gateway("main", State::Ready),
            gateway("rescue", State::Stopped),
        ]));
        for line in [
            "reef_gateway_up{name=\"main\",profile=\"main-profile\"} 1",
            "reef_gateway_up{name=\"rescue\",profile=\"rescue-profile\"} 0",
            "reef_gateway_ready{name=\"main\",profile=\"main-profile\"} 1",
            "reef_gateway_ready{name=\"rescue\",profile=\"rescue-profile\"} 0",
            "reef_gateway_restarts_total{name=\"main\",profile=\"main-profile\"} 3",
            "reef_gateway_cpu_seconds_total{name=\"main\",profile=\"main-profile\"} 12.25",
            "reef_gateway_rss_bytes{name=\"main\",profile=\"main-profile\"} 1048576",
            "reef_gateway_probe_duration_seconds{name=\"main\",profile=\"main-profile\"} 0.0042",
            "reef_gateway_state{name=\"main\",profile=\"main-profile\",state=\"ready\"} 1",
            "reef_gateway_state{name=\"main\",profile=\"main-profile\",state=\"stopped\"} 0",
            "reef_gateway_state{name=\"rescue\",profile=\"rescue-profile\",state=\"stopped\"} 1",
            "reef_evaluations_total 5",
            "reef_reloads_total 2",
            "reef_reload_failures_total 1",
            "reef_generation 3",
            "reef_gateways{state=\"ready\"} 1",
            "reef_gateways{state=\"stopped\"} 1",
            "reef_gateways{state=\"blocked\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // A stopped gateway has no CPU, memory or probe figure, rather than a made-up zero.
        assert!(!text.contains("reef_gateway_rss_bytes{name=\"rescue\""));
    }

    #[test]
    fn every_family_is_announced_once_before_its_samples() {
        let text = exposition(&topology(vec![
            gateway("a", State::Ready),
            gateway("b", State::Backoff),
        ]));
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(seen.insert(name.clone()), "{name} announced twice");
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample {line:?} outside its family");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut hostile = gateway("x", State::Ready);
        hostile.profile = "a\"b\\c\nd".into();
        let text = exposition(&topology(vec![hostile]));
        assert!(
            text.contains("reef_gateway_up{name=\"x\",profile=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(
            parse_address("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_address("localhost:9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_address("[::1]:9").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            parse_address("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        let error = parse_address("example.org:80").unwrap_err();
        assert!(error.contains("IP:PORT"), "{error}");
        assert!(parse_address("localhost:http").is_err());
        assert!(parse_address("70000").is_err());
    }

    #[test]
    fn values_are_printed_as_prometheus_reads_them() {
        let mut out = String::new();
        for value in [1.0, 0.5, f64::NAN, f64::INFINITY, 1e20] {
            push_value(value, &mut out);
            out.push(' ');
        }
        assert_eq!(out, "1 0.5 NaN +Inf 100000000000000000000 ");
    }
}
