//! TIME_WAIT sampling without the probe: once a second, list this network namespace's
//! TIME_WAIT sockets and count the ones that belong to the run, per side. The client side holds
//! the sockets whose remote address is the target; the server side (visible when the server is
//! in this namespace, as the embedded one is) holds those whose local address is the target.
//!
//! Sampling sees counts, not events: `entered` counts sockets first seen in a sample, so
//! sockets that enter and leave TIME_WAIT between two samples (reuse, kills) are missed. The
//! eBPF probe replaces all of this with exact figures.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::model::{Live, TimeWaitPoint};

/// Counts for one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwCount {
    /// Distinct TIME_WAIT sockets seen over the run.
    pub entered: u64,
    /// Largest count in one sample.
    pub peak: u64,
    /// Count in the last sample.
    pub open: u64,
}

/// What sampling saw over the run.
#[derive(Debug, Clone, Default)]
pub struct TwObserved {
    /// Where the counts came from, e.g. `proc` (/proc/net/tcp*) or `sock_diag`.
    pub source: &'static str,
    pub client: TwCount,
    pub server: TwCount,
    pub timeline: Vec<TimeWaitPoint>,
    /// Why sampling failed, if it did.
    pub error: Option<String>,
}

/// A TIME_WAIT socket as listed by the kernel; `key` identifies it across samples.
#[derive(Debug, Clone, Copy)]
pub struct TwEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub key: u64,
}

/// Lists the calling thread's network namespace's TIME_WAIT sockets (FIN_WAIT2 orphans, which
/// the kernel also keeps as timewait sockets, are left out: `ss` shows them as FIN-WAIT-2).
/// sock_diag is preferred: it is cheaper and its socket cookie identifies a socket exactly;
/// /proc/net/tcp* is the fallback where inet_diag is not available.
pub fn list_time_wait() -> io::Result<(&'static str, Vec<TwEntry>)> {
    if let Ok(sockets) = crate::diag::timewait_sockets() {
        let entries = sockets
            .into_iter()
            .filter(|tw| tw.substate == crate::model::Substate::TimeWait)
            .map(|tw| TwEntry {
                local: tw.local,
                remote: tw.remote,
                key: tw.cookie,
            })
            .collect();
        return Ok(("sock_diag", entries));
    }
    let mut out = Vec::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        match std::fs::read_to_string(file) {
            Ok(text) => parse_proc_net_tcp(&text, &mut out),
            // No IPv6 in this kernel: nothing to list there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(("proc", out))
}

/// Counts TIME_WAIT sockets per side for `target`, as `(client, server)`.
pub fn count_for(target: SocketAddr, entries: &[TwEntry]) -> (u64, u64) {
    let (mut client, mut server) = (0, 0);
    for e in entries {
        if e.remote == target {
            client += 1;
        } else if e.local == target {
            server += 1;
        }
    }
    (client, server)
}

/// Samples on a thread of its own (reading /proc is blocking work that has no place on the
/// runtime's workers) until [`TwSampler::finish`].
pub struct TwSampler {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<TwObserved>,
}

impl TwSampler {
    pub fn start(target: SocketAddr, live: Arc<Live>, interval: Duration) -> io::Result<TwSampler> {
        let (stop, stopped) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("tw-sampler".into())
            .spawn(move || sample_loop(target, &live, interval, stopped))?;
        Ok(TwSampler { stop, thread })
    }

    /// Takes a last sample and returns everything seen.
    pub fn finish(self) -> TwObserved {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_else(|_| TwObserved {
            error: Some("TIME_WAIT sampler panicked".into()),
            ..Default::default()
        })
    }
}

fn sample_loop(
    target: SocketAddr,
    live: &Live,
    interval: Duration,
    stopped: mpsc::Receiver<()>,
) -> TwObserved {
    let start = Instant::now();
    let mut obs = TwObserved::default();
    let mut seen = (HashSet::new(), HashSet::new());
    loop {
        let t = Instant::now();
        if let Err(e) = sample(target, start, &mut obs, &mut seen) {
            obs.error = Some(format!("listing TIME_WAIT sockets: {e}"));
            return obs;
        }
        live.tw_client.store(obs.client.open, Ordering::Relaxed);
        live.tw_server.store(obs.server.open, Ordering::Relaxed);
        // A large table makes a sample expensive; never spend more than ~10% of a core on it.
        let wait = interval.max(t.elapsed() * 10);
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Asked to stop (or the owner is gone): one last sample, then done.
            _ => break,
        }
    }
    if let Err(e) = sample(target, start, &mut obs, &mut seen) {
        obs.error = Some(format!("listing TIME_WAIT sockets: {e}"));
    }
    obs
}

/// Takes one sample into `obs`; `seen` holds the previous sample's keys per side.
fn sample(
    target: SocketAddr,
    start: Instant,
    obs: &mut TwObserved,
    seen: &mut (HashSet<u64>, HashSet<u64>),
) -> io::Result<()> {
    let (source, entries) = list_time_wait()?;
    obs.source = source;
    let (mut client, mut server) = (HashSet::new(), HashSet::new());
    for e in &entries {
        if e.remote == target {
            client.insert(e.key);
        } else if e.local == target {
            server.insert(e.key);
        }
    }
    update(&mut obs.client, &seen.0, &client);
    update(&mut obs.server, &seen.1, &server);
    obs.timeline.push(TimeWaitPoint {
        t_ms: start.elapsed().as_millis() as u64,
        client: obs.client.open,
        server: obs.server.open,
        ..TimeWaitPoint::default()
    });
    *seen = (client, server);
    Ok(())
}

fn update(count: &mut TwCount, before: &HashSet<u64>, now: &HashSet<u64>) {
    count.entered += now.iter().filter(|k| !before.contains(k)).count() as u64;
    count.open = now.len() as u64;
    count.peak = count.peak.max(count.open);
}

/// Appends the TIME_WAIT (state 06) lines of /proc/net/tcp or tcp6.
fn parse_proc_net_tcp(text: &str, out: &mut Vec<TwEntry>) {
    for line in text.lines().skip(1) {
        let mut fields = line.split_ascii_whitespace().skip(1);
        let (Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != "06" {
            continue;
        }
        if let (Some(local), Some(remote)) = (parse_hex_addr(local), parse_hex_addr(remote)) {
            out.push(TwEntry {
                local,
                remote,
                key: tuple_key(local, remote),
            });
        }
    }
}

/// `0100007F:1F90` → 127.0.0.1:8080. Addresses are printed as native-endian 32-bit words.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, word) in bytes.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                word.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn tuple_key(local: SocketAddr, remote: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one((local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A5E6 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n";
        let mut out = Vec::new();
        parse_proc_net_tcp(text, &mut out);
        assert_eq!(out.len(), 1);
        if cfg!(target_endian = "little") {
            assert_eq!(out[0].local, "127.0.0.1:42470".parse().unwrap());
            assert_eq!(out[0].remote, "127.0.0.1:8080".parse().unwrap());
        }
        let v6 = "00000000000000000000000001000000:1F90";
        if cfg!(target_endian = "little") {
            assert_eq!(parse_hex_addr(v6), Some("[::1]:8080".parse().unwrap()));
        }
    }
}
