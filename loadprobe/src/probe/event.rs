//! Decoding of the kernel's events into socket addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use loadprobe_common::{AF_INET6, Event, OwnedEvent, Owner};

/// Copies an event out of the ring buffer, with its owner when the record is an
/// [`OwnedEvent`]; `None` for a record of another size.
pub fn decode(bytes: &[u8]) -> Option<(Event, Option<Owner>)> {
    if bytes.len() == size_of::<OwnedEvent>() {
        // SAFETY: `OwnedEvent` is plain `#[repr(C)]` data (aya::Pod); any bytes are valid and
        // read_unaligned copes with the ring buffer's 8-byte alignment either way.
        let o = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<OwnedEvent>()) };
        return Some((o.event, Some(o.owner)));
    }
    (bytes.len() == size_of::<Event>()).then(|| {
        // SAFETY: as above, for `Event`.
        (
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) },
            None,
        )
    })
}

/// The local (`sport`, `saddr`) and remote (`dport`, `daddr`) ends of an event's socket.
/// IPv4-mapped IPv6 addresses become IPv4, so both ends of a dual-stack connection compare equal.
pub fn endpoints(e: &Event) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(ip(e.family, &e.saddr), e.sport),
        SocketAddr::new(ip(e.family, &e.daddr), e.dport),
    )
}

fn ip(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        let v6 = Ipv6Addr::from(*bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadprobe_common::AF_INET;

    #[test]
    fn v4_mapped_addresses_become_v4() {
        let mut e = Event {
            family: AF_INET6,
            sport: 80,
            dport: 40000,
            ..Event::default()
        };
        e.saddr = Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        e.daddr = Ipv6Addr::LOCALHOST.octets();
        let (local, remote) = endpoints(&e);
        assert_eq!(local, "127.0.0.1:80".parse().unwrap());
        assert_eq!(remote, "[::1]:40000".parse().unwrap());
    }

    #[test]
    fn v4_uses_the_first_four_bytes() {
        let mut e = Event {
            family: AF_INET,
            sport: 1,
            dport: 2,
            ..Event::default()
        };
        e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(endpoints(&e).1, "10.0.0.2:2".parse().unwrap());
    }

    #[test]
    fn wrong_sizes_are_rejected() {
        assert!(decode(&[0u8; 7]).is_none());
        assert!(decode(&[0u8; 80]).is_none());
        assert_eq!(decode(&[0u8; size_of::<Event>()]).unwrap().1, None);
    }

    #[test]
    fn an_owned_event_carries_its_owner() {
        let mut bytes = [0u8; size_of::<OwnedEvent>()];
        bytes[20..22].copy_from_slice(&8080u16.to_ne_bytes());
        bytes[64..72].copy_from_slice(&77u64.to_ne_bytes());
        bytes[72..76].copy_from_slice(&1234u32.to_ne_bytes());
        bytes[80..84].copy_from_slice(b"curl");
        let (e, owner) = decode(&bytes).unwrap();
        let owner = owner.unwrap();
        assert_eq!(e.sport, 8080);
        assert_eq!((owner.cgroup_id, owner.pid), (77, 1234));
        assert_eq!(&owner.comm[..5], b"curl\0");
    }
}
