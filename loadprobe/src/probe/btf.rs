//! Field offsets of the running kernel, read from its BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs read kernel memory at offsets they are given; these come from here, so the
//! same binary works on kernels built with other configs (lockdep, IPv6, netns change them).

use btf_rs::{Btf, Type};
use loadprobe_common::Offsets;

use super::ProbeError;

/// The kernel's BTF, as the running kernel exports it.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Offsets for the full-socket events (`inet_sock_set_state`, resets): always needed.
pub fn socket_offsets(btf: &Btf) -> Result<Offsets, ProbeError> {
    for (tracepoint, args) in SOCKET_TRACEPOINTS {
        check_tracepoint(btf, tracepoint, args)?;
    }
    let sk = |path: &str| offset(btf, "sock_common", path);
    // The programs read these pairs in one go (a probe read costs about as much as the rest of
    // a program): check that they really sit side by side, as they have since Linux 2.6.
    let adjacent = |first: &str, then: &[(&str, u16)]| -> Result<u16, ProbeError> {
        let start = sk(first)?;
        for &(name, at) in then {
            if sk(name)? != start + at {
                return Err(ProbeError::Btf(format!(
                    "sock_common.{name} is not {at} bytes after {first}"
                )));
            }
        }
        Ok(start)
    };
    Ok(Offsets {
        skc_addrpair: adjacent("skc_daddr", &[("skc_rcv_saddr", 4)])?,
        skc_portpair: adjacent("skc_dport", &[("skc_num", 2), ("skc_family", 4)])?,
        skc_state: sk("skc_state")?,
        skc_net: sk("skc_net")?,
        skc_v6_daddr: sk("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        net_inum: offset(btf, "net", "ns.inum")?,
        sk_protocol: offset(btf, "sock", "sk_protocol")?,
        inet_sport: offset(btf, "inet_sock", "inet_sport")?,
        tcp_write_seq: offset(btf, "tcp_sock", "write_seq")?,
        tcp_snd_nxt: offset(btf, "tcp_sock", "snd_nxt")?,
        sk_lock_owned: int_offset(btf, "sock", "sk_lock.owned")?,
        ..Offsets::default()
    })
}

/// [`offset`] of a member the programs read as a C `int` (4 bytes): another type there would
/// be read wrongly, not fail.
fn int_offset(btf: &Btf, name: &str, path: &str) -> Result<u16, ProbeError> {
    let (at, ty) = member_at(btf, name, path)?;
    match strip(btf, ty)? {
        Type::Int(i) if i.size() == 4 => Ok(at),
        other => Err(ProbeError::Btf(format!(
            "{name}.{path} is a {}, not an int",
            describe(btf, other)?
        ))),
    }
}

/// Adds the offsets for the timewait timer events. A kernel whose timewait socket has no
/// `tw_timer` (a `delayed_work` replaced it in an RFC patch) fails here, and the probe carries
/// on without TIME_WAIT tracking.
pub fn timewait_offsets(btf: &Btf, offsets: &mut Offsets) -> Result<(), ProbeError> {
    for (tracepoint, args) in TIMER_TRACEPOINTS {
        check_tracepoint(btf, tracepoint, args)?;
    }
    let timer_list = member_type_name(btf, "inet_timewait_sock", "tw_timer")?;
    if timer_list != "timer_list" {
        return Err(ProbeError::Btf(format!(
            "inet_timewait_sock.tw_timer is a {timer_list}, not a timer_list"
        )));
    }
    offsets.tw_substate = offset(btf, "inet_timewait_sock", "tw_substate")?;
    offsets.tw_timer = offset(btf, "inet_timewait_sock", "tw_timer")?;
    offsets.timer_function = offset(btf, "timer_list", "function")?;
    Ok(())
}

/// The raw tracepoints the socket programs attach to, with the leading arguments they read
/// (`ctx.arg(n)` in `loadprobe-ebpf`), as BTF spells their types.
pub const SOCKET_TRACEPOINTS: &[(&str, &[&str])] = &[
    ("inet_sock_set_state", &["struct sock *", "int", "int"]),
    ("tcp_send_reset", &["struct sock *"]),
    ("tcp_receive_reset", &["struct sock *"]),
];

/// The raw tracepoints of the timewait timer programs; all pass the timer first.
pub const TIMER_TRACEPOINTS: &[(&str, &[&str])] = &[
    ("timer_start", &["struct timer_list *"]),
    ("timer_cancel", &["struct timer_list *"]),
    ("timer_expire_entry", &["struct timer_list *"]),
];

/// Checks that a raw tracepoint passes the arguments the program reads. Raw tracepoint programs
/// see the tracepoint's C arguments, which are not a stable ABI: the kernel describes them in
/// BTF as `typedef void (*btf_trace_<name>)(void *, <arguments>)`.
pub fn check_tracepoint(btf: &Btf, name: &str, expected: &[&str]) -> Result<(), ProbeError> {
    let actual = tracepoint_args(btf, name)?;
    if actual.len() < expected.len() || actual[..expected.len()] != *expected {
        return Err(ProbeError::Btf(format!(
            "tracepoint {name} passes ({}), the probe expects ({}, ...)",
            actual.join(", "),
            expected.join(", ")
        )));
    }
    Ok(())
}

/// The argument types of raw tracepoint `name`, without the leading `void *` every one has.
fn tracepoint_args(btf: &Btf, name: &str) -> Result<Vec<String>, ProbeError> {
    let typedef = format!("btf_trace_{name}");
    let missing = || ProbeError::Btf(format!("the kernel has no tracepoint {name}"));
    let ty = btf
        .resolve_types_by_name(&typedef)
        .map_err(|_| missing())?
        .into_iter()
        .find(|t| matches!(t, Type::Typedef(_)))
        .ok_or_else(missing)?;
    let Type::Ptr(ptr) = strip(btf, ty)? else {
        return Err(missing());
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr).map_err(btf_err)? else {
        return Err(missing());
    };
    proto
        .parameters
        .iter()
        .skip(1)
        .map(|p| describe(btf, btf.resolve_chained_type(p).map_err(btf_err)?))
        .collect()
}

/// A C-like spelling of a type, through typedefs and qualifiers: `struct sock *`, `int`.
fn describe(btf: &Btf, ty: Type) -> Result<String, ProbeError> {
    Ok(match strip(btf, ty)? {
        Type::Ptr(p) => {
            let pointee = btf.resolve_chained_type(&p).map_err(btf_err)?;
            format!("{} *", describe(btf, pointee)?)
        }
        Type::Struct(s) => format!("struct {}", btf.resolve_name(&s).map_err(btf_err)?),
        Type::Union(u) => format!("union {}", btf.resolve_name(&u).map_err(btf_err)?),
        Type::Enum(e) => format!("enum {}", btf.resolve_name(&e).map_err(btf_err)?),
        Type::Enum64(e) => format!("enum {}", btf.resolve_name(&e).map_err(btf_err)?),
        Type::Int(i) => btf.resolve_name(&i).map_err(btf_err)?,
        Type::Void => "void".to_string(),
        other => other.name().to_string(),
    })
}

/// Byte offset of `path` (dot-separated members) inside `struct name`. Members of anonymous
/// structs and unions are found as if they were direct members, as in C.
pub fn offset(btf: &Btf, name: &str, path: &str) -> Result<u16, ProbeError> {
    member_at(btf, name, path).map(|(at, _)| at)
}

/// [`offset`] and the member's type.
fn member_at(btf: &Btf, name: &str, path: &str) -> Result<(u16, Type), ProbeError> {
    let mut ty = named_struct(btf, name)?;
    let mut bits = 0u32;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, member_ty) = find_member(btf, &ty, part)?
            .ok_or_else(|| ProbeError::Btf(format!("struct {name} has no member {path}")))?;
        bits += off;
        ty = member_ty;
        if parts.peek().is_some() {
            ty = strip(btf, ty)?;
        }
    }
    if !bits.is_multiple_of(8) {
        return Err(ProbeError::Btf(format!("{name}.{path} is a bitfield")));
    }
    let at = u16::try_from(bits / 8)
        .map_err(|_| ProbeError::Btf(format!("{name}.{path} is too far in")))?;
    Ok((at, ty))
}

fn member_type_name(btf: &Btf, name: &str, member: &str) -> Result<String, ProbeError> {
    let ty = named_struct(btf, name)?;
    let (_, member_ty) = find_member(btf, &ty, member)?
        .ok_or_else(|| ProbeError::Btf(format!("struct {name} has no member {member}")))?;
    match strip(btf, member_ty)? {
        Type::Struct(s) | Type::Union(s) => btf.resolve_name(&s).map_err(btf_err),
        other => Ok(other.name().to_string()),
    }
}

fn named_struct(btf: &Btf, name: &str) -> Result<Type, ProbeError> {
    btf.resolve_types_by_name(name)
        .map_err(|_| ProbeError::Btf(format!("the kernel has no type {name}")))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(|| ProbeError::Btf(format!("the kernel has no struct {name}")))
}

/// Searches `ty` (a struct or union) for `name`, descending into anonymous members.
/// Returns the member's bit offset from the start of `ty` and its type.
fn find_member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u32, Type)>, ProbeError> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return Ok(None);
    };
    for member in &s.members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let member_ty = btf.resolve_chained_type(member).map_err(btf_err)?;
        if member_name == name {
            return Ok(Some((member.bit_offset(), member_ty)));
        }
        if member_name.is_empty()
            && let Some((off, found)) = find_member(btf, &strip(btf, member_ty)?, name)?
        {
            return Ok(Some((member.bit_offset() + off, found)));
        }
    }
    Ok(None)
}

/// Looks through typedefs and qualifiers to the underlying type.
fn strip(btf: &Btf, mut ty: Type) -> Result<Type, ProbeError> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(btf_err)?;
    }
}

/// A type lookup in the kernel's BTF (always [`VMLINUX_BTF`]) failed.
fn btf_err(source: btf_rs::Error) -> ProbeError {
    ProbeError::BtfRead {
        path: VMLINUX_BTF,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinux() -> Option<Btf> {
        Btf::from_file(VMLINUX_BTF).ok()
    }

    /// Checked against `bpftool btf dump` on 6.18 (docs/kernel.md §4):
    /// the resolver must find members inside anonymous unions and nested structs.
    #[test]
    fn resolves_nested_and_anonymous_members() {
        let Some(btf) = vmlinux() else {
            eprintln!("skip: no {VMLINUX_BTF}");
            return;
        };
        let mut o = socket_offsets(&btf).expect("socket offsets");
        timewait_offsets(&btf, &mut o).expect("timewait offsets");
        // sock_common starts with the address pair (an anonymous union/struct in C), then the
        // hash and the port pair.
        assert_eq!(o.skc_addrpair, 0);
        assert_eq!(o.skc_portpair, 12);
        // struct sock starts with its sock_common.
        assert!(usize::from(o.sk_protocol) > usize::from(o.skc_v6_rcv_saddr) + 16);
        // ... and struct inet_sock with its struct sock.
        assert!(o.inet_sport > o.sk_protocol);
        assert!(o.tw_timer > o.tw_substate);
        // sk_lock follows sock_common; its `owned` follows the spinlock.
        assert!(usize::from(o.sk_lock_owned) > usize::from(o.skc_v6_rcv_saddr) + 16);
        assert!(int_offset(&btf, "sock", "sk_protocol").is_err());
        // timer_list: entry (two pointers), expires, then function.
        assert_eq!(o.timer_function, 24);
    }

    /// The prototypes as 6.18 declares them (include/trace/events/{sock,tcp,timer}.h).
    #[test]
    fn reads_tracepoint_prototypes() {
        let Some(btf) = vmlinux() else {
            return;
        };
        assert_eq!(
            tracepoint_args(&btf, "inet_sock_set_state").unwrap(),
            ["struct sock *", "int", "int"]
        );
        assert_eq!(
            tracepoint_args(&btf, "timer_start").unwrap(),
            ["struct timer_list *", "long unsigned int"]
        );
        assert_eq!(
            tracepoint_args(&btf, "tcp_send_reset").unwrap()[..2],
            ["struct sock *", "struct sk_buff *"]
        );
        let err = check_tracepoint(&btf, "timer_cancel", &["struct sock *"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel type information (BTF): tracepoint timer_cancel passes (struct timer_list *), \
             the probe expects (struct sock *, ...); run `loadprobe doctor`"
        );
        assert!(tracepoint_args(&btf, "no_such_tracepoint").is_err());
    }

    #[test]
    fn missing_members_are_errors_not_zero() {
        let Some(btf) = vmlinux() else {
            return;
        };
        assert!(offset(&btf, "sock_common", "no_such_member").is_err());
        assert!(offset(&btf, "no_such_struct_here", "x").is_err());
    }
}
