//! Two hosts on one machine: a client and a server network namespace joined by a veth pair.
//!
//! Tuning has to be measured over a real link, not loopback: `tcp_tw_reuse=2` (the default)
//! applies to loopback only, so a loopback test would show reuse where production gets none. Each
//! namespace has its own sysctls (docs/kernel.md §5), so the client's `tcp_tw_reuse` and the server's
//! `tcp_max_tw_buckets` can be set apart, and the host's own settings are never touched: the veth
//! is created directly inside the two namespaces and nothing is configured in the host's.
//!
//! Namespaces are named `<prefix>-c` and `<prefix>-s` (visible in `ip netns list`) and are deleted
//! when the [`Topology`] is dropped. A crashed run can leave them behind; [`cleanup_stale`] removes
//! them. Drop does not run on a fatal signal, so a command using this must catch Ctrl-C itself.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use super::TuneError;
use crate::kernel;
use crate::model::Side;

/// Where `ip netns add` puts its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// The veth end in the client namespace (named after where it leads).
pub const CLIENT_IF: &str = "to-server";
/// The veth end in the server namespace.
pub const SERVER_IF: &str = "to-client";
/// Prefix length of the veth subnet: exactly two hosts.
pub const PREFIX_LEN: u8 = 30;

/// The namespace name's ending for one end of the topology.
fn suffix(side: Side) -> &'static str {
    match side {
        Side::Client => "c",
        Side::Server => "s",
    }
}

/// A client and a server namespace joined by veth, deleted on drop.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    client_addr: Ipv4Addr,
    server_addr: Ipv4Addr,
    /// Namespaces this value created, so drop never deletes one it did not make.
    created: Vec<String>,
}

impl Topology {
    /// Creates `<prefix>-c` and `<prefix>-s` with `lo` up and a veth pair between them,
    /// addressed from a private /30 (`10.213.x.1` client, `.2` server) that overlaps no address
    /// of the host. Fails with [`TuneError::Exists`] rather than reusing namespaces of the same
    /// name, which may belong to a concurrent run. Anything created before an error is removed.
    pub fn create(prefix: &str) -> Result<Topology, TuneError> {
        validate_prefix(prefix)?;
        if !has_cap_sys_admin() {
            return Err(TuneError::NeedsRoot);
        }
        let (client_addr, server_addr) = pick_subnet(&host_ipv4_networks()?)?;
        let mut topology = Topology {
            prefix: prefix.to_string(),
            client_addr,
            server_addr,
            created: Vec::new(),
        };
        for host in [Side::Client, Side::Server] {
            let name = topology.name(host);
            if netns_path(&name).exists() {
                return Err(TuneError::Exists(name));
            }
            ip(&["netns", "add", &name])?;
            topology.created.push(name);
        }
        let (client, server) = (topology.name(Side::Client), topology.name(Side::Server));
        // Both ends are born inside their namespaces: no interface ever appears in the host's.
        ip(&[
            "link", "add", CLIENT_IF, "netns", &client, "type", "veth", "peer", "name", SERVER_IF,
            "netns", &server,
        ])?;
        for (name, ifname, addr) in [
            (&client, CLIENT_IF, client_addr),
            (&server, SERVER_IF, server_addr),
        ] {
            let cidr = format!("{addr}/{PREFIX_LEN}");
            ip(&["-n", name, "addr", "add", &cidr, "dev", ifname])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            ip(&["-n", name, "link", "set", ifname, "up"])?;
        }
        Ok(topology)
    }

    /// The namespace name of `host` (`<prefix>-c` or `<prefix>-s`).
    pub fn name(&self, host: Side) -> String {
        ns_name(&self.prefix, host)
    }

    /// The client's address on the veth.
    pub fn client_addr(&self) -> Ipv4Addr {
        self.client_addr
    }

    /// The server's address on the veth.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.server_addr
    }

    /// The namespace's inode, as `/proc/thread-self/ns/net` shows it inside and the probe
    /// filters by.
    pub fn inode(&self, host: Side) -> Result<u64, TuneError> {
        let name = self.name(host);
        std::fs::metadata(netns_path(&name))
            .map(|m| m.ino())
            .map_err(|error| TuneError::Enter { name, error })
    }

    /// Runs `f` on a new thread inside `host`'s namespace and returns its result.
    ///
    /// Sockets created by `f` stay in that namespace for their whole life, whichever thread uses
    /// them later, so a listener bound here can be accepted from on any thread. Panics in `f`
    /// propagate with their original message.
    pub fn run_in<T: Send>(
        &self,
        host: Side,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, TuneError> {
        thread::scope(|s| {
            let handle = s.spawn(|| {
                self.enter(host)?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Moves the calling thread into `host`'s namespace for good (setns only moves the calling
    /// thread). For threads that live long, such as one running a server's runtime; for one-off
    /// work use [`Topology::run_in`].
    pub fn enter(&self, host: Side) -> Result<(), TuneError> {
        let name = self.name(host);
        let ns = self.open(host)?;
        // SAFETY: ns is an open nsfs file; setns only changes the calling thread's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let error = io::Error::last_os_error();
            return Err(TuneError::Enter { name, error });
        }
        Ok(())
    }

    /// Spawns `command` inside `host`'s namespace, keeping its arguments, environment and stdio.
    ///
    /// The child calls setns() between fork and exec, which is all `ip netns exec` does for the
    /// network namespace; unlike it, /sys is not remounted (so /sys/class/net shows the host's
    /// interfaces) and /etc/netns is not applied. Use [`Topology::command`] when that matters.
    /// Kill children before dropping the topology: a process inside keeps its namespace (and the
    /// veth) alive after the name is gone.
    pub fn spawn_in(&self, host: Side, mut command: Command) -> Result<Child, TuneError> {
        let ns = self.open(host)?;
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child and makes one async-signal-safe syscall on
        // an fd that stays open in the parent (`ns` lives until spawn returns).
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|error| TuneError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            error,
        });
        drop(ns);
        child
    }

    /// `ip netns exec <ns> <program>`: a command to add arguments and stdio to and spawn, for
    /// programs that need the full `ip netns exec` environment (its own /sys).
    pub fn command(&self, host: Side, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.name(host))
            .arg(program);
        command
    }

    /// Writes a sysctl in `host`'s namespace only (from a thread inside it; /proc/sys resolves
    /// per thread). Rejected values come back as [`kernel::KernelError::Rejected`].
    pub fn set_sysctl(&self, host: Side, key: &str, value: &str) -> Result<(), TuneError> {
        Ok(self.run_in(host, || kernel::write_sysctl(key, value))??)
    }

    /// Reads a sysctl in `host`'s namespace.
    pub fn sysctl(&self, host: Side, key: &str) -> Result<String, TuneError> {
        Ok(self.run_in(host, || kernel::read_sysctl(key))??)
    }

    fn open(&self, host: Side) -> Result<File, TuneError> {
        let name = self.name(host);
        File::open(netns_path(&name)).map_err(|error| TuneError::Enter { name, error })
    }
}

impl Drop for Topology {
    /// Deletes both namespaces; each takes its veth end (and so the pair) with it.
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "delete", &name]) {
                log::warn!("removing network namespace {name}: {e}");
            }
        }
    }
}

/// Removes `<prefix>-c` and `<prefix>-s` if they exist (left over from a crashed run) and returns
/// the names removed. Only these two exact names, so other runs' namespaces are never touched.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>, TuneError> {
    validate_prefix(prefix)?;
    let mut removed = Vec::new();
    for host in [Side::Client, Side::Server] {
        let name = ns_name(prefix, host);
        if netns_path(&name).exists() {
            ip(&["netns", "delete", &name])?;
            removed.push(name);
        }
    }
    Ok(removed)
}

fn ns_name(prefix: &str, host: Side) -> String {
    format!("{prefix}-{}", suffix(host))
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Names end up as files in /run/netns and in `ip` command lines: keep them plain.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), TuneError> {
    let why = if prefix.is_empty() || prefix.len() > 32 {
        Some("must be 1 to 32 characters")
    } else if !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with a letter or digit")
    } else if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Some("only letters, digits, '-' and '_' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(TuneError::InvalidPrefix {
            prefix: prefix.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Runs `ip ARGS`, turning a failure into its first stderr line.
fn ip(args: &[&str]) -> Result<(), TuneError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => TuneError::IpMissing,
            _ => TuneError::Spawn {
                program: "ip".to_string(),
                error,
            },
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .map_or_else(|| output.status.to_string(), |l| l.trim().to_string());
    Err(TuneError::Command {
        command: format!("ip {}", args.join(" ")),
        detail,
    })
}

/// Whether the process has CAP_SYS_ADMIN in its effective set: what `ip netns add` and setns
/// need.
pub fn has_cap_sys_admin() -> bool {
    crate::privileges::has_cap(crate::privileges::CAP_SYS_ADMIN)
}

/// The host's IPv4 networks (`ip -o -4 addr`), as (address, prefix length).
fn host_ipv4_networks() -> Result<Vec<(Ipv4Addr, u8)>, TuneError> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => TuneError::IpMissing,
            _ => TuneError::Spawn {
                program: "ip".to_string(),
                error,
            },
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "4: eth0    inet 192.0.2.2/24 brd ..." -> the word after "inet".
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let (addr, len) = words.next()?.split_once('/')?;
            Some((addr.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?))
        })
        .collect())
}

/// Topologies made by this process, so consecutive ones get different subnets.
static NEXT_SUBNET: AtomicUsize = AtomicUsize::new(0);

/// Picks `10.213.x.0/30` overlapping none of `taken`, and returns its `.1` and `.2`.
///
/// The namespaces are isolated, so two topologies could share a subnet; distinct ones just keep
/// traces and `ss` output unambiguous. The starting `x` depends on the pid and a counter.
fn pick_subnet(taken: &[(Ipv4Addr, u8)]) -> Result<(Ipv4Addr, Ipv4Addr), TuneError> {
    let start = std::process::id() as usize + NEXT_SUBNET.fetch_add(1, Ordering::Relaxed);
    (0..256)
        .map(|i| ((start + i) % 256) as u8)
        .map(|x| Ipv4Addr::new(10, 213, x, 0))
        .find(|net| {
            !taken
                .iter()
                .any(|&(a, len)| overlaps(*net, PREFIX_LEN, a, len))
        })
        .map(|net| {
            let [a, b, c, _] = net.octets();
            (Ipv4Addr::new(a, b, c, 1), Ipv4Addr::new(a, b, c, 2))
        })
        .ok_or(TuneError::NoFreeSubnet)
}

/// Whether two IPv4 prefixes share any address: they do iff they agree on the shorter prefix.
fn overlaps(a: Ipv4Addr, a_len: u8, b: Ipv4Addr, b_len: u8) -> bool {
    let len = u32::from(a_len.min(b_len));
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::require_root;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::Stdio;

    /// A prefix no other test (or concurrent test run) uses.
    fn unique_prefix() -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "lpt{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn netns_list() -> String {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn listed(list: &str, name: &str) -> bool {
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }

    #[test]
    fn subnet_choice_avoids_host_addresses() {
        assert!(overlaps(
            "10.213.5.0".parse().unwrap(),
            30,
            "10.0.0.1".parse().unwrap(),
            8
        ));
        assert!(overlaps(
            "10.213.5.0".parse().unwrap(),
            30,
            "10.213.5.2".parse().unwrap(),
            32
        ));
        assert!(!overlaps(
            "10.213.5.0".parse().unwrap(),
            30,
            "10.213.5.4".parse().unwrap(),
            30
        ));
        assert!(overlaps(
            "10.213.5.0".parse().unwrap(),
            30,
            "1.2.3.4".parse().unwrap(),
            0
        ));
        // All of 10.213/16 taken but one /30.
        let taken = [
            ("10.213.0.0".parse().unwrap(), 17),
            ("10.213.128.0".parse().unwrap(), 18),
        ];
        let (c, s) = pick_subnet(&taken).unwrap();
        assert!(c.octets()[2] >= 192, "{c}");
        assert_eq!((c.octets()[3], s.octets()[3]), (1, 2));
        assert!(matches!(
            pick_subnet(&[("10.0.0.0".parse().unwrap(), 8)]),
            Err(TuneError::NoFreeSubnet)
        ));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        let long = "x".repeat(33);
        for bad in ["", "a/b", "-x", "a b", &long, "../x"] {
            let err = Topology::create(bad).unwrap_err();
            assert!(
                matches!(err, TuneError::InvalidPrefix { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    /// Only meaningful unprivileged (e.g. under `setpriv --reuid=65534`); as root it passes.
    #[test]
    fn unprivileged_create_is_one_clear_line() {
        if has_cap_sys_admin() {
            return;
        }
        let err = Topology::create(&unique_prefix()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "creating network namespaces needs root (CAP_SYS_ADMIN)"
        );
    }

    #[test]
    fn topology_connects_over_veth_and_keeps_sysctls_apart() {
        if !require_root("tune::netns::topology_connects_over_veth_and_keeps_sysctls_apart") {
            return;
        }
        const KEY: &str = "net.ipv4.tcp_tw_reuse";
        let host_before = kernel::read_sysctl(KEY).unwrap();
        let prefix = unique_prefix();
        let topo = Topology::create(&prefix).unwrap();
        let (client, server) = (topo.name(Side::Client), topo.name(Side::Server));
        let list = netns_list();
        assert!(listed(&list, &client) && listed(&list, &server), "{list}");
        assert_ne!(
            topo.inode(Side::Client).unwrap(),
            topo.inode(Side::Server).unwrap()
        );

        // TCP from the client namespace to the server namespace, over the veth.
        let listener = topo
            .run_in(Side::Server, || {
                TcpListener::bind(SocketAddr::new(topo.server_addr().into(), 0))
            })
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stream = topo
            .run_in(Side::Client, || TcpStream::connect(addr))
            .unwrap()
            .unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::from(topo.client_addr()));
        stream.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        // A sysctl set in the client namespace stays there.
        let value = if host_before == "0" { "1" } else { "0" };
        topo.set_sysctl(Side::Client, KEY, value).unwrap();
        assert_eq!(topo.sysctl(Side::Client, KEY).unwrap(), value);
        assert_eq!(topo.sysctl(Side::Server, KEY).unwrap(), "2");
        assert_eq!(kernel::read_sysctl(KEY).unwrap(), host_before);
        let err = topo.set_sysctl(Side::Client, KEY, "3").unwrap_err();
        assert!(err.to_string().contains("rejected by the kernel"), "{err}");

        // Processes: setns'd child (stdio kept) and `ip netns exec`.
        let child = topo
            .spawn_in(Side::Client, {
                let mut c = Command::new("cat");
                c.arg("/proc/net/dev").stdout(Stdio::piped());
                c
            })
            .unwrap();
        let dev = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
        assert!(dev.contains(CLIENT_IF) && !dev.contains(SERVER_IF), "{dev}");
        let out = topo
            .command(Side::Server, "ip")
            .args(["-o", "-4", "addr"])
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(
            addrs.contains(&format!("{}/30", topo.server_addr())),
            "{addrs}"
        );

        drop((stream, accepted, listener));
        drop(topo);
        let list = netns_list();
        assert!(!listed(&list, &client) && !listed(&list, &server), "{list}");
        assert_eq!(kernel::read_sysctl(KEY).unwrap(), host_before);
    }

    #[test]
    fn existing_namespace_is_not_reused_and_stale_ones_are_cleaned() {
        if !require_root("tune::netns::existing_namespace_is_not_reused_and_stale_ones_are_cleaned")
        {
            return;
        }
        let prefix = unique_prefix();
        let client = ns_name(&prefix, Side::Client);
        ip(&["netns", "add", &client]).unwrap();

        let err = Topology::create(&prefix).unwrap_err();
        assert!(
            matches!(&err, TuneError::Exists(n) if *n == client),
            "{err}"
        );
        // The failed create removed nothing it did not make, and left nothing of its own.
        let list = netns_list();
        assert!(listed(&list, &client), "{list}");
        assert!(!listed(&list, &ns_name(&prefix, Side::Server)), "{list}");

        assert_eq!(cleanup_stale(&prefix).unwrap(), vec![client.clone()]);
        assert!(!listed(&netns_list(), &client));
        assert_eq!(cleanup_stale(&prefix).unwrap(), Vec::<String>::new());
    }
}
