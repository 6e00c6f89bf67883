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

/// Probes `http://127.0.0.1:port{path}`; `Err` says why it failed.
pub async fn probe(port: u16, path: &str, expect: Expect, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, request(port, path)).await {
        Err(_) => Err(format!("no answer within {:.1} s", timeout.as_secs_f64())),
        Ok(Err(err)) => Err(err),
        Ok(Ok((status, body))) => {
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
    }
}

async fn request(port: u16, path: &str) -> Result<(u16, Bytes), String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|err| format!("cannot connect to port {port}: {err}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake failed: {err}"))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("user-agent", "reef-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| format!("reading the answer failed: {err}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
