//! Liveness and readiness probes: GET a path on the gateway port and check the JSON body.
//!
//! The real gateway answers 200 with its Control UI on every unknown path, so a status code
//! alone proves nothing: liveness needs `"ok":true`, readiness `"ready":true`.
//!
//! Each probe opens a connection, sends one request and closes it, driving the connection in
//! the probe's own future (no task of its own). Between probes reef holds no socket and no
//! buffer per gateway: with liveness probes every 30 s by default, a kept-alive connection
//! would cost more memory per gateway than the connections it saves cost CPU.

use std::net::{IpAddr, SocketAddr};
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

/// Bytes read from the gateway at a time: a probe answer is a few bytes of JSON.
const READ_BUFFER: usize = 1024;
/// A probe answer is a few bytes of JSON; anything huge is not one.
const MAX_BODY: usize = 64 * 1024;

/// GETs `path` on `host:port` within `timeout` and checks that the JSON body holds `expect`'s
/// field as `true`.
pub async fn probe(
    host: IpAddr,
    port: u16,
    path: &str,
    expect: Expect,
    timeout: Duration,
) -> Result<(), String> {
    let (status, body) = tokio::time::timeout(timeout, get(host, port, path))
        .await
        .map_err(|_| format!("no answer within {:.1} s", timeout.as_secs_f64()))??;
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

async fn get(host: IpAddr, port: u16, path: &str) -> Result<(u16, Bytes), String> {
    let address = SocketAddr::new(host, port);
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| format!("cannot connect to {address}: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER))
        .writev(false)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let exchange = async {
        let request = Request::get(path)
            .header("host", address.to_string())
            .header("user-agent", "reef-probe")
            .header("connection", "close")
            .body(Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|err| format!("reading the answer failed: {err}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    // The connection is driven here, beside the exchange; it ends when the answer is read.
    tokio::pin!(connection);
    tokio::pin!(exchange);
    tokio::select! {
        answer = &mut exchange => answer,
        ended = &mut connection => match ended {
            Err(err) => Err(format!("connection failed: {err}")),
            // Closed cleanly after the answer: let the exchange finish reading it.
            Ok(()) => exchange.await,
        },
    }
}
