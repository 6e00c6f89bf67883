//! The control socket of a running `reef up`: a Unix socket (0600, in a 0700 directory)
//! speaking one JSON request and one JSON response per connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::supervisor::DiffNames;
use crate::supervisor::colony::Colony;
use crate::supervisor::status::TopologyStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    /// Stop every gateway and end `reef up`.
    Down,
    /// Re-evaluate the script now and apply it.
    Reload,
    /// Evaluate the script and tell what a reload would do, without doing it.
    Diff,
    /// What loading `candidate` instead of the running script would do, without doing it.
    DiffWith {
        candidate: std::path::PathBuf,
    },
    /// Stream every event from now on: an answer line, then one JSON line per event
    /// ([`event_line`]) until the client goes away or reef stops.
    Events,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: Option<String>,
    pub status: Option<TopologyStatus>,
    /// For `reload` and `diff`: what the reload does (or would do).
    #[serde(default)]
    pub diff: Option<DiffNames>,
}

impl Response {
    fn error(message: String) -> Response {
        Response {
            ok: false,
            message: Some(message),
            status: None,
            diff: None,
        }
    }
}

/// Makes the socket's private directory again (it was deleted), then binds.
async fn rebind(path: &Path) -> Result<UnixListener> {
    let dir = path.parent().map(Path::to_path_buf);
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("creating the socket's directory failed")??;
    bind(path)
}

/// Binds the socket, replacing a stale one (the caller holds the topology's lock, so no live
/// reef owns it).
pub fn bind(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// How often the server checks that its socket file still exists (someone may delete the
/// state dir it lives in); a missing one is bound again.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

pub async fn serve(mut listener: UnixListener, socket: std::path::PathBuf, colony: Colony) {
    let mut check = tokio::time::interval(SOCKET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebind_failed = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = check.tick() => {
                // One lstat: cheaper inline than a trip to the blocking pool.
                let gone = matches!(
                    std::fs::symlink_metadata(&socket),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound
                );
                if gone {
                    match rebind(&socket).await {
                        Ok(bound) => {
                            listener = bound;
                            rebind_failed = false;
                            tracing::warn!(
                                "the control socket {} was deleted; listening there again",
                                socket.display()
                            );
                        }
                        Err(err) if !rebind_failed => {
                            rebind_failed = true;
                            tracing::error!("the control socket was deleted and cannot be made again: {err:#}");
                        }
                        Err(_) => {}
                    }
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, say: do not spin.
                tracing::warn!("control socket: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let colony = colony.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            // One short JSON line, soon: a client that sends more, or nothing, is dropped.
            let mut reader = tokio::io::BufReader::new(read.take(64 * 1024));
            let read_request = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                reader.read_line(&mut line),
            );
            if !matches!(read_request.await, Ok(Ok(_))) {
                return;
            }
            let (response, written) = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Events) => {
                    stream_events(&colony, &mut write).await;
                    return;
                }
                Ok(request) => answer(&colony, request).await,
                Err(err) => (Response::error(format!("bad request: {err}")), None),
            };
            let mut text = serde_json::to_string(&response).expect("responses serialize");
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
            let _ = write.shutdown().await;
            if let Some(written) = written {
                let _ = written.send(());
            }
        });
    }
}

/// One event as `reef events --json` prints it: `format`, `time`, `instance` (null for the
/// topology's own events), `kind` and its fields, and the instance's `state` and `pid` after it.
pub fn event_line(event: &crate::supervisor::events::Event) -> serde_json::Value {
    let mut line = serde_json::Map::new();
    line.insert("format".into(), crate::render::JSON_FORMAT.into());
    line.insert("time".into(), event.time.into());
    line.insert("instance".into(), event.instance().into());
    if let Ok(serde_json::Value::Object(kind)) = serde_json::to_value(&event.kind) {
        line.extend(kind);
    }
    if let Some(status) = &event.status {
        line.insert(
            "state".into(),
            serde_json::to_value(status.state).unwrap_or_default(),
        );
        line.insert("pid".into(), status.pid.into());
    }
    serde_json::Value::Object(line)
}

/// Writes an answer, then every event as a JSON line, until the client or the bus goes away.
/// Events are pushed: a client that waits costs the supervisor nothing between them.
async fn stream_events(colony: &Colony, write: &mut tokio::net::unix::OwnedWriteHalf) {
    let mut events = colony.events();
    let mut answer = serde_json::to_string(&Response {
        ok: true,
        message: Some("streaming events".into()),
        status: None,
        diff: None,
    })
    .expect("responses serialize");
    answer.push('\n');
    if write.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    loop {
        let line = match events.recv().await {
            Ok(event) => event_line(&event),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => serde_json::json!({
                "format": crate::render::JSON_FORMAT,
                "kind": "lagged",
                "missed": missed,
            }),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let mut text = line.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A connection to the reef listening on `socket`; no listener is [`ClientError::NotRunning`].
fn connect(socket: &Path) -> Result<std::os::unix::net::UnixStream, ClientError> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(socket.display().to_string())
        }
        _ => ClientError::Io {
            path: socket.display().to_string(),
            error: err,
        },
    })
}

/// Sends [`Request::Events`], calls `attached` once reef streams, then `each` with every event
/// line until reef stops (then `Ok`) or `each` says to stop (`false`).
pub fn events(
    socket: &Path,
    attached: impl FnOnce(),
    mut each: impl FnMut(&str) -> bool,
) -> Result<(), ClientError> {
    let io = |error: std::io::Error| ClientError::Io {
        path: socket.display().to_string(),
        error,
    };
    let mut stream = connect(socket)?;
    let mut text = serde_json::to_string(&Request::Events).expect("requests serialize");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let answer: Response = serde_json::from_str(&line)
        .map_err(|err| ClientError::Protocol(format!("{err}: {line:?}")))?;
    if !answer.ok {
        return Err(ClientError::Protocol(answer.message.unwrap_or_default()));
    }
    attached();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        if !each(line.trim_end()) {
            return Ok(());
        }
    }
}

/// The response, and for `reef down` a sender to fire once it is written.
async fn answer(
    colony: &Colony,
    request: Request,
) -> (Response, Option<tokio::sync::oneshot::Sender<()>>) {
    let acted = match &request {
        Request::Status => Ok(None),
        Request::Events => Err("events are streamed, not answered once".to_owned()),
        Request::DiffWith { candidate } => {
            let response = match colony.reload(Some(candidate.clone()), false).await {
                Ok(diff) => Response {
                    ok: true,
                    message: Some(diff.summary.clone()),
                    status: None,
                    diff: Some(diff),
                },
                Err(message) => Response::error(message),
            };
            return (response, None);
        }
        Request::Start { name } => {
            act(colony, name, |h| Box::pin(async move { h.start().await })).await
        }
        Request::Stop { name } => {
            act(colony, name, |h| Box::pin(async move { h.stop().await })).await
        }
        Request::Restart { name } => {
            act(colony, name, |h| Box::pin(async move { h.restart().await })).await
        }
        Request::Down => {
            match colony.down().await {
                Ok((count, written)) => {
                    // reef up waits for this answer to be written before it exits.
                    let response = Response {
                        ok: true,
                        message: Some(format!("stopped {count} gateway(s); reef up is ending")),
                        status: None,
                        diff: None,
                    };
                    return (response, Some(written));
                }
                Err(message) => Err(message),
            }
        }
        Request::Reload | Request::Diff => {
            let apply = request == Request::Reload;
            let response = match colony.reload(None, apply).await {
                Ok(diff) => Response {
                    ok: true,
                    message: Some(diff.summary.clone()),
                    status: Some(colony.snapshot().await),
                    diff: Some(diff),
                },
                Err(message) => Response::error(message),
            };
            return (response, None);
        }
    };
    let response = match acted {
        Ok(message) => Response {
            ok: true,
            message,
            status: Some(colony.snapshot().await),
            diff: None,
        },
        Err(message) => Response::error(message),
    };
    (response, None)
}

type Verb =
    fn(
        crate::supervisor::runner::InstanceHandle,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

async fn act(colony: &Colony, name: &str, verb: Verb) -> Result<Option<String>, String> {
    let handle = colony.handle(name)?;
    verb(handle).await.map(Some)
}

/// Why a client could not talk to a running reef.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reef is running this topology (no control socket at {0}); start it with `reef up`")]
    NotRunning(String),
    #[error("talking to reef over {path} failed: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("reef answered something unreadable: {0}")]
    Protocol(String),
}

/// Sends one request to the reef listening on `socket` and waits for its answer. Stopping a
/// gateway can take its whole stop timeout, so the wait is generous.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    request_within(socket, request, Duration::from_secs(300))
}

/// [`request`], waiting at most `timeout` for the answer (a stopped reef does not hold up a
/// client that only looks around, such as `reef ls`).
pub fn request_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let io = |error: std::io::Error| ClientError::Io {
        path: socket.display().to_string(),
        error,
    };
    let mut stream = connect(socket)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line).map_err(|err| ClientError::Protocol(format!("{err}: {line:?}")))
}
