//! Liveness and readiness probes: GET a path on the gateway port and check the JSON body.
//!
//! The real gateway answers 200 with its Control UI on every unknown path, so a status code
//! alone proves nothing: liveness needs `"ok":true`, readiness `"ready":true`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The JSON field a probe's body must hold as `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `"ok": true`
    Live,
    /// `"ready": true`
    Ready,
}

impl Expect {
    fn field(self) -> &'static str {
        match self {
            Expect::Live => "ok",
            Expect::Ready => "ready",
        }
    }
}

type Connection = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
);

/// Probes one gateway over a kept-alive connection (reconnecting when it drops), so that
/// probing many idle gateways costs reef next to nothing.
pub struct Prober {
    port: u16,
    connection: Option<Connection>,
}

impl Prober {
    pub fn new(port: u16) -> Prober {
        Prober {
            port,
            connection: None,
        }
    }

    /// GETs `path` and checks that the JSON body holds `expect`'s field as `true`.
    pub async fn probe(
        &mut self,
        path: &str,
        expect: Expect,
        timeout: Duration,
    ) -> Result<(), String> {
        let answer = match tokio::time::timeout(timeout, self.request(path)).await {
            Ok(answer) => answer,
            Err(_) => {
                // A request cut off mid-way leaves the connection unusable.
                self.disconnect();
                return Err(format!("no answer within {:.1} s", timeout.as_secs_f64()));
            }
        };
        let (status, body) = answer?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let field = expect.field();
        match json.as_ref().and_then(|v| v.get(field)) {
            Some(serde_json::Value::Bool(true)) => Ok(()),
            Some(_) => Err(format!(
                "{path} answered {status} with \"{field}\" not true"
            )),
            None => Err(format!(
                "{path} answered {status} without a JSON \"{field}\" field"
            )),
        }
    }

    async fn request(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        // A kept-alive connection the gateway closed fails once: retry on a fresh one.
        let reused = self.connection.is_some();
        match self.request_once(path).await {
            Err(_) if reused => {
                self.disconnect();
                self.request_once(path).await
            }
            other => other,
        }
    }

    async fn request_once(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        if self.connection.is_none() {
            self.connection = Some(connect(self.port).await?);
        }
        let (sender, _) = self.connection.as_mut().expect("connected above");
        let result = send(sender, self.port, path).await;
        if result.is_err() {
            self.disconnect();
        }
        result
    }

    fn disconnect(&mut self) {
        if let Some((_, driver)) = self.connection.take() {
            driver.abort();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.disconnect();
    }
}

async fn connect(port: u16) -> Result<Connection, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|err| format!("cannot connect to port {port}: {err}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, driver))
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    port: u16,
    path: &str,
) -> Result<(u16, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|err| format!("connection closed: {err}"))?;
    let request = Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("user-agent", "reef-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status().as_u16();
    // A probe answer is a few bytes of JSON; anything huge is not one.
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|err| format!("reading the answer failed: {err}"))?
        .to_bytes();
    Ok((status, body))
}
