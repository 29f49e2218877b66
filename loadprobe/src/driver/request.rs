//! The request every task sends, encoded once before the run: the hot path only copies bytes.

use bytes::Bytes;

/// What to send, as given on the command line.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// Path and query; must start with `/`.
    pub path: String,
    /// Extra headers, in order. `Host` overrides the target's; `Connection` and
    /// `Content-Length` are the driver's to set and are rejected.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: "GET".to_string(),
            path: "/".to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Each message says what is wrong with the value it holds, which the caller names.
    #[error("must be an HTTP token like GET or POST")]
    Method(String),
    #[error("must start with '/' and contain no spaces or control characters")]
    Path(String),
    #[error("expected 'Name: value' with a token name and no line breaks")]
    Header(String),
    #[error("set by the driver (from the mode and the body), not allowed here")]
    Reserved(String),
}

/// Parses `Name: value` from `--header`.
pub fn parse_header(s: &str) -> Result<(String, String), RequestError> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| RequestError::Header(s.to_string()))?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(RequestError::Header(s.to_string()));
    }
    if name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
    {
        return Err(RequestError::Reserved(name.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

impl RequestSpec {
    /// Checks method and path; headers were checked by [`parse_header`].
    pub fn validate(&self) -> Result<(), RequestError> {
        if !is_token(&self.method) {
            return Err(RequestError::Method(self.method.clone()));
        }
        if !self.path.starts_with('/') || self.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(RequestError::Path(self.path.clone()));
        }
        Ok(())
    }

    /// Whether responses to this request have no body whatever their headers say.
    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// The request on the wire. `close` adds `Connection: close` (server-close mode).
    pub fn encode(&self, host: &str, close: bool) -> Bytes {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            push_header(&mut out, "Host", host);
        }
        for (name, value) in &self.headers {
            push_header(&mut out, name, value);
        }
        if close {
            push_header(&mut out, "Connection", "close");
        }
        let method_has_body = !matches!(
            self.method.to_ascii_uppercase().as_str(),
            "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE"
        );
        if !self.body.is_empty() || method_has_body {
            push_header(&mut out, "Content-Length", &self.body.len().to_string());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_get_and_post() {
        let get = RequestSpec::default().encode("127.0.0.1:80", false);
        assert_eq!(&get[..], b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n");

        let post = RequestSpec {
            method: "POST".into(),
            path: "/api/query".into(),
            headers: vec![parse_header("Content-Type: application/json").unwrap()],
            body: Bytes::from_static(b"{}"),
        };
        post.validate().unwrap();
        assert_eq!(
            &post.encode("h", true)[..],
            &b"POST /api/query HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\
               Connection: close\r\nContent-Length: 2\r\n\r\n{}"[..]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_header("NoColon").is_err());
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("Connection: close").is_err());
        let spec = RequestSpec {
            path: "nope".into(),
            ..Default::default()
        };
        assert!(spec.validate().is_err());
        let spec = RequestSpec {
            method: "G T".into(),
            ..Default::default()
        };
        assert!(spec.validate().is_err());
    }
}
