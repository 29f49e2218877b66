//! The same exchange through hyper's client connection, kept to measure what the lean reader
//! in [`super::http`] saves on the connection-per-request path (`--http-client hyper`). Only
//! the modes that open a connection per request: for keep-alive the two cost the same.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use super::errors::ErrorClass;
use super::http::wait_for_fin;
use super::stats::Sample;
use super::stream::Stream;
use super::tls;
use super::{DriverConfig, RequestSpec};
use crate::model::Mode;

/// A request template hyper can clone cheaply per connection.
pub(crate) struct HyperRequest {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    /// How the connection ends after it.
    mode: Mode,
}

impl HyperRequest {
    pub(crate) fn new(
        cfg: &DriverConfig,
        r: &RequestSpec,
        mode: Mode,
    ) -> Result<HyperRequest, hyper::http::Error> {
        let mut headers = Vec::new();
        if !r
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            headers.push((HOST, value(&cfg.target.host_header)?));
        }
        for (n, v) in &r.headers {
            let name = HeaderName::from_bytes(n.as_bytes())?;
            headers.push((name, value(v)?));
        }
        if mode == Mode::ServerClose {
            headers.push((CONNECTION, HeaderValue::from_static("close")));
        }
        Ok(HyperRequest {
            method: Method::from_bytes(r.method.as_bytes())?,
            path: r.path.clone(),
            headers,
            body: r.body.clone(),
            mode,
        })
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        // Checked in `new` through RequestSpec::validate; an odd path falls back to "/".
        *req.uri_mut() = self
            .path
            .parse()
            .unwrap_or_else(|_| hyper::Uri::from_static("/"));
        for (n, v) in &self.headers {
            req.headers_mut().append(n.clone(), v.clone());
        }
        req
    }
}

fn value(v: &str) -> Result<HeaderValue, hyper::http::Error> {
    Ok(HeaderValue::from_str(v)?)
}

fn hyper_error(e: hyper::Error) -> ErrorClass {
    if let Some(io) = crate::error_chain::io_error(&e) {
        return tls::classify(io);
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorClass::Eof
    } else {
        ErrorClass::Protocol
    }
}

/// Sends one request on the new connection `stream` and ends it as the mode says.
/// `Ok(true)`: server-close and the server never sent its FIN.
pub(crate) async fn exchange(
    cfg: &DriverConfig,
    req: &HyperRequest,
    stream: Stream,
    s: &mut Sample,
) -> Result<bool, ErrorClass> {
    let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(hyper_error)?;
    // The connection future must run while the request is in flight; without_shutdown hands
    // the socket back instead of closing it, so the mode decides how it ends.
    let conn = tokio::spawn(conn.without_shutdown());
    let response = timeout(cfg.request_timeout, async {
        let resp = sender
            .send_request(req.build())
            .await
            .map_err(hyper_error)?;
        s.first_byte = Some(Instant::now());
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(hyper_error)?;
        }
        Ok::<u16, ErrorClass>(status)
    })
    .await;
    drop(sender);
    let status = match response {
        Err(_) => {
            conn.abort();
            return Err(ErrorClass::Timeout);
        }
        Ok(Err(e)) => {
            conn.abort();
            return Err(e);
        }
        Ok(Ok(status)) => status,
    };
    s.done = Instant::now();
    s.result = ErrorClass::from_status(status);
    let parts = match conn.await {
        Ok(Ok(parts)) => parts,
        // The connection already ended (the server closed it): nothing left to close.
        _ => return Ok(false),
    };
    let mut io = parts.io.into_inner();
    let mut fin_missing = false;
    match req.mode {
        Mode::ServerClose => {
            let mut buf = Vec::new();
            fin_missing = timeout(cfg.request_timeout, wait_for_fin(&mut io, &mut buf))
                .await
                .is_err();
        }
        Mode::ClientClose => io.close_notify().await,
        Mode::Reset | Mode::KeepAlive => {}
    }
    drop(io);
    Ok(fin_missing)
}
