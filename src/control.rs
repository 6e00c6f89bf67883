//! The control socket of a running `reef up`: a Unix socket (0600, in a 0700 directory)
//! speaking one JSON request and one JSON response per connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::supervisor::status::TopologyStatus;
use crate::supervisor::{DiffNames, Registry};

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

pub async fn serve(listener: UnixListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, say: do not spin.
                tracing::warn!("control socket: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let registry = registry.clone();
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
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => answer(&registry, request).await,
                Err(err) => Response::error(format!("bad request: {err}")),
            };
            let mut text = serde_json::to_string(&response).expect("responses serialize");
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}

async fn answer(registry: &Registry, request: Request) -> Response {
    let acted = match &request {
        Request::Status => Ok(None),
        Request::Start { name } => {
            act(registry, name, |h| Box::pin(async move { h.start().await })).await
        }
        Request::Stop { name } => {
            act(registry, name, |h| Box::pin(async move { h.stop().await })).await
        }
        Request::Restart { name } => {
            act(registry, name, |h| {
                Box::pin(async move { h.restart().await })
            })
            .await
        }
        Request::Down => {
            let count = registry.handles().len();
            registry.shutdown().await;
            registry.down_requested.notify_one();
            Ok(Some(format!(
                "stopped {count} gateway(s); reef up is ending"
            )))
        }
        Request::Reload | Request::Diff => {
            let apply = request == Request::Reload;
            return match registry.request_reload(None, apply).await {
                Ok(diff) => Response {
                    ok: true,
                    message: Some(diff.summary.clone()),
                    status: Some(registry.snapshot()),
                    diff: Some(diff),
                },
                Err(message) => Response::error(message),
            };
        }
    };
    match acted {
        Ok(message) => Response {
            ok: true,
            message,
            status: Some(registry.snapshot()),
            diff: None,
        },
        Err(message) => Response::error(message),
    }
}

type Verb =
    fn(
        crate::supervisor::instance::InstanceHandle,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

async fn act(registry: &Registry, name: &str, verb: Verb) -> Result<Option<String>, String> {
    let handle = registry.handle(name)?;
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
    let io = |error: std::io::Error| ClientError::Io {
        path: socket.display().to_string(),
        error,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(socket.display().to_string()));
        }
        Err(err) => return Err(io(err)),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(io)?;
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line).map_err(|err| ClientError::Protocol(format!("{err}: {line:?}")))
}
