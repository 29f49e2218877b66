//! Parsing `--source-ips`: each local address multiplies the 4-tuple space by the ephemeral port
//! range, which is the standard cure for port exhaustion towards one destination.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// The most addresses accepted: more would be a typo (a /8), not a plan.
pub const MAX_SOURCE_IPS: u128 = 65_536;

/// What is wrong with the address list `spec`.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct SourceIpsError {
    pub spec: String,
    why: String,
}

/// Parses a comma-separated list whose items are an address, a range `A-B` (inclusive) or a
/// CIDR block `A/N`. For IPv4 blocks up to /30 the network and broadcast addresses are left out,
/// since binding to them fails. All addresses must be of one family.
pub fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>, SourceIpsError> {
    let err = |why: String| SourceIpsError {
        spec: spec.to_string(),
        why,
    };
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = if let Some((a, b)) = item.split_once('-') {
            let a = parse_ip(a).map_err(&err)?;
            let b = parse_ip(b).map_err(&err)?;
            if a.is_ipv4() != b.is_ipv4() || to_u128(a) > to_u128(b) {
                return Err(err(format!(
                    "{item}: range must go upwards within one family"
                )));
            }
            (a, b)
        } else if let Some((a, bits)) = item.split_once('/') {
            let a = parse_ip(a).map_err(&err)?;
            let width = if a.is_ipv4() { 32 } else { 128 };
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| *b <= width)
                .ok_or_else(|| err(format!("{item}: bad prefix length")))?;
            let host_bits = width - bits;
            let span = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            let base = to_u128(a) & !span;
            let (mut lo, mut hi) = (base, base + span);
            if a.is_ipv4() && host_bits >= 2 {
                lo += 1;
                hi -= 1;
            }
            (from_u128(lo, a.is_ipv4()), from_u128(hi, a.is_ipv4()))
        } else {
            let a = parse_ip(item).map_err(&err)?;
            (a, a)
        };
        let count = to_u128(last) - to_u128(first) + 1;
        if count + out.len() as u128 > MAX_SOURCE_IPS {
            return Err(err(format!("more than {MAX_SOURCE_IPS} addresses")));
        }
        for n in to_u128(first)..=to_u128(last) {
            out.push(from_u128(n, first.is_ipv4()));
        }
    }
    if out.is_empty() {
        return Err(err("no addresses".to_string()));
    }
    if out.iter().any(|ip| ip.is_ipv4() != out[0].is_ipv4()) {
        return Err(err("mixes IPv4 and IPv6".to_string()));
    }
    let mut seen = HashSet::with_capacity(out.len());
    if let Some(twice) = out.iter().find(|ip| !seen.insert(**ip)) {
        // Connections would go to it twice as often as to the others.
        return Err(err(format!("{twice} is listed more than once")));
    }
    Ok(out)
}

/// A source address connections cannot be made from.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {addr} as a source address (is it an address of this host?)")]
pub struct UnusableSourceIp {
    pub addr: IpAddr,
    source: io::Error,
}

/// Binds a socket to each address, as the connections will, so that an address that is not
/// local here is an error before the run instead of a share of failed connects in it. The
/// port is left to connect() (IP_BIND_ADDRESS_NO_PORT), so the check takes no port.
pub fn check_usable(ips: &[IpAddr]) -> Result<(), UnusableSourceIp> {
    for &addr in ips {
        let bind = || -> io::Result<()> {
            let socket = Socket::new(
                Domain::for_address(SocketAddr::new(addr, 0)),
                Type::STREAM.cloexec(),
                Some(Protocol::TCP),
            )?;
            super::connect::set_bind_address_no_port(&socket)?;
            socket.bind(&SocketAddr::new(addr, 0).into())
        };
        bind().map_err(|source| UnusableSourceIp { addr, source })?;
    }
    Ok(())
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::from((n as u32).to_be_bytes())
    } else {
        IpAddr::from(n.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(spec: &str) -> Vec<String> {
        parse_source_ips(spec)
            .unwrap()
            .iter()
            .map(|ip| ip.to_string())
            .collect()
    }

    #[test]
    fn list_range_cidr() {
        assert_eq!(ips("127.0.0.2, 127.0.0.3"), ["127.0.0.2", "127.0.0.3"]);
        assert_eq!(ips("127.0.0.2-127.0.0.9").len(), 8);
        assert_eq!(ips("127.0.0.8/30"), ["127.0.0.9", "127.0.0.10"]);
        assert_eq!(ips("127.0.0.8/31"), ["127.0.0.8", "127.0.0.9"]);
        assert_eq!(ips("::1"), ["::1"]);
        assert_eq!(ips("fd00::1-fd00::3").len(), 3);
        assert_eq!(ips("10.0.0.255-10.0.1.1").len(), 3);
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "x",
            "127.0.0.9-127.0.0.2",
            "127.0.0.1/33",
            "10.0.0.0/8",
            "127.0.0.1,::1",
            "127.0.0.1-::1",
            "127.0.0.2,127.0.0.3,127.0.0.2",
            "127.0.0.2-127.0.0.4,127.0.0.3",
        ] {
            assert!(parse_source_ips(bad).is_err(), "{bad:?} should be rejected");
        }
        let twice = parse_source_ips("127.0.0.2,127.0.0.2").unwrap_err();
        assert!(twice.to_string().contains("127.0.0.2 is listed"), "{twice}");
    }

    #[test]
    fn every_address_must_be_local() {
        assert!(check_usable(&parse_source_ips("127.0.0.2-127.0.0.4").unwrap()).is_ok());
        // 192.0.2.0/24 is TEST-NET-1, never assigned to a host; it is second, so a check of
        // the first address alone would let it pass.
        let err = check_usable(&parse_source_ips("127.0.0.2,192.0.2.1").unwrap()).unwrap_err();
        assert_eq!(err.addr.to_string(), "192.0.2.1");
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
    }
}
