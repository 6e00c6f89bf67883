//! The built-in reference gateway (`reef gateway --port N`, runtime `builtin`).
//!
//! It honours the real OpenClaw gateway's contract in a few MB, so a topology runs on any
//! machine and tests are fast:
//! - HTTP on 127.0.0.1:N: GET/HEAD `/health` `/healthz` (200 `{"ok":true,"status":"live"}`),
//!   `/ready` `/readyz` (503 while starting or draining, then 200 `{"ready":true,...}`),
//!   `/startup` `/startupz`; 405 for other methods; every other path answers 200 with a page,
//!   as the real Control UI does (so a probe must check the body).
//! - browser control on 127.0.0.1:N+2;
//! - a single-owner lock under `$OPENCLAW_STATE_DIR/tmp/openclaw-<uid>/gateway.state.lock`: a
//!   second gateway on the same state dir exits 78 naming the holder's pid. (Run bare, with
//!   neither `OPENCLAW_STATE_DIR` nor `OPENCLAW_PROFILE` set, it keeps no state and no lock.)
//! - an invalid JSON5 config at `$OPENCLAW_CONFIG_PATH` exits 78;
//! - a port held by someone else exits 1 after a short retry;
//! - SIGTERM or SIGINT exits 0 at once.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for a configuration problem: do not restart-loop on it.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when the port stays taken.
pub const EXIT_PORT_IN_USE: u8 = 1;

/// How long to retry a taken port before giving up.
const BIND_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    /// Time between listening and reporting ready.
    pub startup_delay: Duration,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Runs the gateway until SIGTERM/SIGINT; returns the process exit code.
pub async fn run(options: Options) -> u8 {
    match serve(options).await {
        Ok(()) => 0,
        Err(Failure { code, message }) => {
            eprintln!("reef gateway: {message}");
            code
        }
    }
}

struct Failure {
    code: u8,
    message: String,
}

fn config_failure(message: String) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        message,
    }
}

async fn serve(options: Options) -> Result<(), Failure> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    // Under reef (or `reef env`) the profile variables are always set. A bare `reef gateway
    // --port N`, as process-manager benchmarks run it, names no profile: it then keeps no state
    // and takes no lock, so many can run side by side.
    let profiled = env("OPENCLAW_STATE_DIR").is_some() || env("OPENCLAW_PROFILE").is_some();
    let (_lock, where_) = if profiled {
        let profile =
            env("OPENCLAW_PROFILE").unwrap_or_else(|| crate::profile::DEFAULT_PROFILE.to_owned());
        let home =
            crate::profile::resolve_home(env("OPENCLAW_HOME").as_deref(), env("HOME").as_deref());
        let state_dir = match (env("OPENCLAW_STATE_DIR"), home) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => crate::profile::state_dir(&profile, &home),
            (None, None) => {
                return Err(config_failure(
                    "OPENCLAW_PROFILE is set but neither OPENCLAW_STATE_DIR nor HOME".into(),
                ));
            }
        };
        let config_path = env("OPENCLAW_CONFIG_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::profile::config_path(&state_dir));
        check_config(&config_path)?;
        let lock = take_lock(&state_dir, options.port, &config_path)?;
        (
            Some(lock),
            format!("profile {profile}, state dir {}", state_dir.display()),
        )
    } else {
        if let Some(config_path) = env("OPENCLAW_CONFIG_PATH") {
            check_config(Path::new(&config_path))?;
        }
        (None, "no profile: no state dir, no lock".to_owned())
    };

    let gateway = bind(options.port).await?;
    let control_port = options.port.checked_add(2).ok_or_else(|| Failure {
        code: EXIT_PORT_IN_USE,
        message: format!(
            "port {} leaves no room for browser control at +2",
            options.port
        ),
    })?;
    let control = bind(control_port).await?;
    println!(
        "reef gateway: listening on ws://127.0.0.1:{} ({where_}), browser control on {control_port}",
        options.port
    );

    let phase = Arc::new(AtomicU8::new(STARTING));
    if options.startup_delay.is_zero() {
        phase.store(READY, Ordering::SeqCst);
    } else {
        let phase = phase.clone();
        let delay = options.startup_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = phase.compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
        });
    }

    let gateway_task = tokio::spawn(accept(gateway, phase.clone(), gateway_route));
    let control_task = tokio::spawn(accept(control, phase.clone(), control_route));

    let mut terminate = signal(SignalKind::terminate()).expect("signal handlers install");
    let mut interrupt = signal(SignalKind::interrupt()).expect("signal handlers install");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    phase.store(DRAINING, Ordering::SeqCst);
    gateway_task.abort();
    control_task.abort();
    println!("reef gateway: stopping");
    Ok(())
}

/// An invalid JSON5 config is a configuration error (exit 78); a missing one is fine.
fn check_config(path: &Path) -> Result<(), Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(config_failure(format!(
                "cannot read config {}: {err}",
                path.display()
            )));
        }
    };
    let value: serde_json::Value = json5::from_str(&text)
        .map_err(|err| config_failure(format!("invalid config {}: {err}", path.display())))?;
    if !value.is_object() {
        return Err(config_failure(format!(
            "invalid config {}: the top level must be an object",
            path.display()
        )));
    }
    Ok(())
}

/// Where the single-owner lock of a state dir lives, as for the real gateway.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    let uid = nix::unistd::getuid();
    state_dir
        .join("tmp")
        .join(format!("openclaw-{uid}"))
        .join("gateway.state.lock")
}

/// The pid of a live gateway that holds `state_dir` (from its lock record), if one does. A
/// stale record (the gateway was killed) names a dead pid, or one reused by a program that is
/// no gateway: neither counts.
pub fn live_owner(state_dir: &Path) -> Option<u32> {
    let record = std::fs::read_to_string(lock_path(state_dir)).ok()?;
    let pid = serde_json::from_str::<serde_json::Value>(&record)
        .ok()?
        .get("pid")?
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .filter(|&pid| pid > 1)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    (cmdline.contains("openclaw") || cmdline.contains("gateway")).then_some(pid)
}

/// Takes the state dir's lock (held until the process ends, even by SIGKILL: it is a flock).
fn take_lock(
    state_dir: &Path,
    port: u16,
    config_path: &Path,
) -> Result<nix::fcntl::Flock<File>, Failure> {
    let path = lock_path(state_dir);
    let dir = path.parent().expect("the lock has a directory");
    std::fs::create_dir_all(dir)
        .map_err(|err| config_failure(format!("cannot create {}: {err}", dir.display())))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|err| config_failure(format!("cannot open lock {}: {err}", path.display())))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = serde_json::from_str::<serde_json::Value>(&holder)
                .ok()
                .and_then(|v| v.get("pid").and_then(serde_json::Value::as_u64))
                .map(|pid| pid.to_string())
                .unwrap_or_else(|| "unknown".into());
            return Err(config_failure(format!(
                "gateway already running (pid {pid}) for state dir {}",
                state_dir.display()
            )));
        }
    };
    let record = serde_json::json!({
        "pid": std::process::id(),
        "port": port,
        "configPath": config_path,
    });
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(record.to_string().as_bytes()));
    written
        .map_err(|err| config_failure(format!("cannot write lock {}: {err}", path.display())))?;
    Ok(lock)
}

async fn bind(port: u16) -> Result<TcpListener, Failure> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => {
                return Err(Failure {
                    code: EXIT_PORT_IN_USE,
                    message: format!(
                        "another gateway instance is already listening on ws://{address} ({err})"
                    ),
                });
            }
        }
    }
}

type Route = fn(&Request<Incoming>, u8) -> Response<Full<Bytes>>;

async fn accept(listener: TcpListener, phase: Arc<AtomicU8>, route: Route) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let phase = phase.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = route(&request, phase.load(Ordering::SeqCst));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static responses are valid")
}

fn method_not_allowed() -> Response<Full<Bytes>> {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        "{\"ok\":false,\"error\":\"method not allowed\"}",
    );
    response.headers_mut().insert(
        "allow",
        hyper::header::HeaderValue::from_static("GET, HEAD"),
    );
    response
}

const PAGE: &str = "<!doctype html><title>reef gateway</title><p>reef reference gateway</p>\n";

fn gateway_route(request: &Request<Incoming>, phase: u8) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return method_not_allowed();
    }
    match request.uri().path() {
        "/health" | "/healthz" => json(StatusCode::OK, "{\"ok\":true,\"status\":\"live\"}"),
        "/ready" | "/readyz" => match phase {
            READY => json(StatusCode::OK, "{\"ready\":true,\"status\":\"ready\"}"),
            DRAINING => json(
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false,\"status\":\"draining\"}",
            ),
            _ => json(
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false,\"status\":\"starting\"}",
            ),
        },
        "/startup" | "/startupz" => match phase {
            READY => json(StatusCode::OK, "{\"status\":\"started\"}"),
            DRAINING => json(StatusCode::SERVICE_UNAVAILABLE, "{\"status\":\"draining\"}"),
            _ => json(StatusCode::SERVICE_UNAVAILABLE, "{\"status\":\"starting\"}"),
        },
        _ => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
            .expect("static responses are valid"),
    }
}

fn control_route(request: &Request<Incoming>, _phase: u8) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return method_not_allowed();
    }
    json(
        StatusCode::OK,
        "{\"ok\":true,\"service\":\"browser-control\"}",
    )
}
