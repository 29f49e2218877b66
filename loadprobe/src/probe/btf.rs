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
    let sk = |path: &str| offset(btf, "sock_common", path);
    let sss = |path: &str| offset(btf, "trace_event_raw_inet_sock_set_state", path);
    Ok(Offsets {
        skc_daddr: sk("skc_daddr")?,
        skc_rcv_saddr: sk("skc_rcv_saddr")?,
        skc_dport: sk("skc_dport")?,
        skc_num: sk("skc_num")?,
        skc_family: sk("skc_family")?,
        skc_net: sk("skc_net")?,
        skc_v6_daddr: sk("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        net_inum: offset(btf, "net", "ns.inum")?,
        sss_skaddr: sss("skaddr")?,
        sss_oldstate: sss("oldstate")?,
        sss_newstate: sss("newstate")?,
        sss_sport: sss("sport")?,
        sss_dport: sss("dport")?,
        sss_family: sss("family")?,
        sss_protocol: sss("protocol")?,
        sss_saddr: sss("saddr")?,
        sss_daddr: sss("daddr")?,
        sss_saddr_v6: sss("saddr_v6")?,
        sss_daddr_v6: sss("daddr_v6")?,
        rst_sent_skaddr: offset(btf, "trace_event_raw_tcp_send_reset", "skaddr")?,
        rst_received_skaddr: offset(btf, "trace_event_raw_tcp_event_sk", "skaddr")?,
        ..Offsets::default()
    })
}

/// Adds the offsets for the timewait timer events. A kernel whose timewait socket has no
/// `tw_timer` (a `delayed_work` replaced it in an RFC patch) fails here, and the probe carries
/// on without TIME_WAIT tracking.
pub fn timewait_offsets(btf: &Btf, offsets: &mut Offsets) -> Result<(), ProbeError> {
    let timer_list = member_type_name(btf, "inet_timewait_sock", "tw_timer")?;
    if timer_list != "timer_list" {
        return Err(ProbeError::Btf(format!(
            "inet_timewait_sock.tw_timer is a {timer_list}, not a timer_list"
        )));
    }
    offsets.tw_substate = offset(btf, "inet_timewait_sock", "tw_substate")?;
    offsets.tw_timer = offset(btf, "inet_timewait_sock", "tw_timer")?;
    offsets.timer_function = offset(btf, "timer_list", "function")?;
    offsets.timer_expires = offset(btf, "timer_list", "expires")?;
    let start = |path: &str| offset(btf, "trace_event_raw_timer_start", path);
    offsets.start_timer = start("timer")?;
    offsets.start_function = start("function")?;
    offsets.start_expires = start("expires")?;
    offsets.start_bucket_expiry = start("bucket_expiry")?;
    offsets.start_now = start("now")?;
    offsets.cancel_timer = offset(btf, "trace_event_raw_timer_class", "timer")?;
    let expire = |path: &str| offset(btf, "trace_event_raw_timer_expire_entry", path);
    offsets.expire_timer = expire("timer")?;
    offsets.expire_now = expire("now")?;
    offsets.expire_function = expire("function")?;
    Ok(())
}

/// Byte offset of `path` (dot-separated members) inside `struct name`. Members of anonymous
/// structs and unions are found as if they were direct members, as in C.
pub fn offset(btf: &Btf, name: &str, path: &str) -> Result<u16, ProbeError> {
    let mut ty = named_struct(btf, name)?;
    let mut bits = 0u32;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (off, member_ty) = find_member(btf, &ty, part)?
            .ok_or_else(|| ProbeError::Btf(format!("struct {name} has no member {path}")))?;
        bits += off;
        if parts.peek().is_some() {
            ty = strip(btf, member_ty)?;
        }
    }
    if !bits.is_multiple_of(8) {
        return Err(ProbeError::Btf(format!("{name}.{path} is a bitfield")));
    }
    u16::try_from(bits / 8).map_err(|_| ProbeError::Btf(format!("{name}.{path} is too far in")))
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

fn btf_err(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Btf(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinux() -> Option<Btf> {
        Btf::from_file(VMLINUX_BTF).ok()
    }

    /// Checked against `bpftool btf dump` on 6.18 (see shared/kernel/TIME_WAIT.md section 4):
    /// the resolver must find members inside anonymous unions and nested structs.
    #[test]
    fn resolves_nested_and_anonymous_members() {
        let Some(btf) = vmlinux() else {
            eprintln!("skip: no {VMLINUX_BTF}");
            return;
        };
        let mut o = socket_offsets(&btf).expect("socket offsets");
        timewait_offsets(&btf, &mut o).expect("timewait offsets");
        // sock_common starts with the address pair (an anonymous union/struct in C).
        assert_eq!(o.skc_daddr, 0);
        assert_eq!(o.skc_rcv_saddr, 4);
        assert_eq!(o.skc_num, o.skc_dport + 2);
        // trace_event_raw_* start with an 8-byte struct trace_entry.
        assert_eq!(o.start_timer, 8);
        assert_eq!(o.cancel_timer, 8);
        assert_eq!(o.sss_skaddr, 8);
        assert!(o.tw_timer > o.tw_substate);
        assert_eq!(o.timer_function, o.timer_expires + 8);
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
