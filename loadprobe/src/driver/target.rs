//! Parsing `--target http[s]://HOST[:PORT][/PATH]`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resolved address connections go to.
    pub addr: SocketAddr,
    /// The `Host` header value (`127.0.0.1:8080`, `[::1]:8080`, `example:80`).
    pub host_header: String,
    /// Path and query from the URL, `/` when absent.
    pub path: String,
    /// The host as the URL names it, without brackets or port: the TLS server name.
    pub host: String,
    /// `https://`: every connection speaks TLS.
    pub tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// What is wrong with `url`.
    #[error("{why}")]
    Invalid { url: String, why: String },
}

impl Target {
    /// A target for a known address (the embedded server).
    pub fn from_addr(addr: SocketAddr) -> Target {
        Target {
            addr,
            host_header: addr.to_string(),
            path: "/".to_string(),
            host: addr.ip().to_string(),
            tls: false,
        }
    }

    /// Parses an `http://` or `https://` URL. Literal IPv4 and `[IPv6]` hosts are used as is; a name is
    /// resolved once, here, and its first address used for the whole run.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let invalid = |why: &str| TargetError::Invalid {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some(_) => return Err(invalid("only http:// and https:// URLs are supported")),
            None => return Err(invalid("expected http[s]://HOST[:PORT][/PATH]")),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.contains('@') {
            return Err(invalid("user info in the URL is not supported"));
        }
        let (host, port) = split_host_port(authority).map_err(&invalid)?;
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("port must be 1-65535"))?,
            None => default_port,
        };
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if host.starts_with('[') => {
                let inner = host.trim_start_matches('[').trim_end_matches(']');
                inner
                    .parse::<IpAddr>()
                    .map_err(|_| invalid("bad IPv6 literal"))?
            }
            Err(_) => {
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    return Err(invalid("bad host name"));
                }
                (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .map(|a| a.ip())
                    .ok_or_else(|| invalid("cannot resolve host"))?
            }
        };
        let host_header = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host_header,
            path,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            tls,
        })
    }
}

/// Splits `host[:port]` / `[v6][:port]`; the host keeps its brackets (it goes in `Host:` so).
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or("unclosed '[' in host")?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("junk after IPv6 literal"),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                Err("IPv6 literals must be in brackets: http://[::1]:8080/")
            }
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((authority, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_ipv6_and_paths() {
        let t = Target::parse("http://127.0.0.1:8080/api/query?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.path, "/api/query?x=1");

        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(t.host_header, "[::1]:9000");
        assert_eq!(t.path, "/");

        let t = Target::parse("HTTP://127.0.0.2?q").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.host_header, "127.0.0.2");
        assert_eq!(t.path, "/?q");
        assert!(!t.tls);

        let t = Target::parse("https://localhost/x").unwrap();
        assert!(t.tls);
        assert_eq!(t.addr.port(), 443);
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("localhost", "localhost")
        );
        let t = Target::parse("https://[::1]:8443/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:8443")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "127.0.0.1:80",
            "ftp://x/",
            "http://",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://[::1/",
            "http://::1:80/",
            "http://a b/",
            "http://u@127.0.0.1/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
