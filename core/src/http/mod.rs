//! The one HTTP/1.1 client of the core, built on hyper over the environment's connector.
//!
//! One connection per call: jobs run every few minutes, so pooling buys nothing and a
//! fresh connection never inherits a half-dead socket. Every call has a deadline covering
//! connect, headers and body, which turns a 30-second stall into a classified timeout.

use std::time::Duration;

use bytes::Bytes;
pub use http::Method;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::config::Url;
use crate::env::{Connector, NetError};
use crate::taxonomy::FailureKind;

/// The largest response body kept (bounded memory per call).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// An outgoing request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: http::Method,
    /// Absolute URL.
    pub url: Url,
    /// Headers, in order. May hold an `Authorization` header: never log a request.
    pub headers: Vec<(String, String)>,
    /// Body (empty for none).
    pub body: Bytes,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: http::Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A received response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A header as text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a call failed before a status code arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The stream could not be opened.
    #[error(transparent)]
    Connect(#[from] NetError),
    /// No complete response before the deadline.
    #[error("no response within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The connection broke mid-call.
    #[error("connection failed: {0}")]
    Broken(String, FailureKind),
    /// The response body was larger than [`MAX_BODY_BYTES`].
    #[error("response body over {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// The request could not be built (bad header, say).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl HttpError {
    /// The taxonomy kind of this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Connect(e) => FailureKind::from(e.kind),
            Self::Timeout(_) => FailureKind::Timeout,
            Self::Broken(_, kind) => *kind,
            Self::BodyTooLarge => FailureKind::ClientError(413),
            Self::Invalid(_) => FailureKind::BadConfig,
        }
    }
}

/// Sends `req` over a new connection from `connector`, all within `timeout`.
pub async fn send<C: Connector>(
    connector: &C,
    req: &Request,
    timeout: Duration,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, send_inner(connector, req)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

async fn send_inner<C: Connector>(connector: &C, req: &Request) -> Result<Response, HttpError> {
    let stream = connector.connect(&req.url.target()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(broken)?;
    // The connection task ends when the call ends (its sender is dropped) or the peer
    // closes; it never outlives the runtime.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.url.path_and_query.as_str())
        .header(http::header::HOST, req.url.authority());
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| HttpError::Invalid(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(broken)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                HttpError::BodyTooLarge
            } else {
                HttpError::Broken(e.to_string(), FailureKind::ConnectionReset)
            }
        })?
        .to_bytes();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Maps a hyper error to a taxonomy kind by the I/O error underneath, if any.
fn broken(err: hyper::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return HttpError::Broken(err.to_string(), FailureKind::from(io));
        }
        source = e.source();
    }
    // An incomplete message or a closed channel means the peer went away mid-call.
    HttpError::Broken(err.to_string(), FailureKind::ConnectionReset)
}
