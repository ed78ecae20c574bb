//! A small HTTP/1.1 client for the gateway's JSON API (the `transport`
//! scenario): one keep-alive connection per worker, hyper's, the copy
//! tonic and axum already bring.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection to the gateway.
#[derive(Debug)]
pub struct Http {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
}

/// What a request sends besides its method and path.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

impl Http {
    /// Connects to `addr` (`HOST:PORT`).
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the gateway at {addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Http {
            authority: addr.to_owned(),
            sender,
        })
    }

    /// Sends one request with the session's cookies and the CSRF header
    /// the gateway asks of every state-changing call; returns the status
    /// and the whole response body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        cookie: &str,
        body: Option<Body<'_>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::COOKIE, cookie)
            .header("x-padlock-csrf", "1");
        if let Some(body) = body {
            request = request.header(hyper::header::CONTENT_TYPE, body.content_type);
        }
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::copy_from_slice(b.bytes));
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(bytes))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The cookies the gateway sets at sign-in, for a session made over gRPC:
/// the opaque session token and the access token (`bearer` without its
/// `Bearer ` prefix).
pub fn session_cookie(session_token: &str, bearer: &str) -> String {
    let access = bearer.strip_prefix("Bearer ").unwrap_or(bearer);
    format!("padlock_session={session_token}; padlock_access={access}")
}
