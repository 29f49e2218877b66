//! The HTTPS rows of `cargo xtask bench --tls`.
//!
//! nginx speaks TLS 1.3 only, with one cipher suite and one key-exchange group, so every client
//! negotiates the same handshake whatever it prefers; an ECDSA P-256 certificate is made for the
//! run with the openssl CLI. Session tickets and the session cache are on, so a client that
//! keeps its sessions resumes. No client verifies the certificate (wrk never does; loadprobe and
//! oha get `--insecure`), so none pays for a chain the others skip.
//!
//! Whether a peer resumes is its own choice, not something it can be told, so it is measured
//! before the bench: a short server-close run of each against a second nginx server that logs
//! `$ssl_session_reused` per connection (the measured server logs nothing). Each peer is then
//! held against the loadprobe row doing the same kind of handshake (`--tls-resume off` for full
//! handshakes, `on` for resumed ones). loadprobe is calibrated too, with both settings, so the
//! log's verdict can be checked against its record's counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Ctx, Median, Row, Sample, Tool, median_of, ratio, run_child, thousands};

/// The one cipher suite and group nginx accepts.
const CIPHER_SUITE: &str = "TLS_AES_128_GCM_SHA256";
const GROUP: &str = "X25519";
/// Seconds of each calibration run.
const CALIBRATION_S: u64 = 2;
/// The peers, in the order of the table.
const PEERS: [Tool; 2] = [Tool::Wrk, Tool::Oha];

/// The run's certificate and the calibration server.
pub(super) struct Setup {
    cert: PathBuf,
    key: PathBuf,
    /// The port of the nginx server that logs each connection's handshake.
    log_port: u16,
    log: PathBuf,
}

impl Setup {
    /// A self-signed ECDSA P-256 certificate for 127.0.0.1 in `dir`.
    pub(super) fn new(dir: &Path, log_port: u16) -> Result<Setup> {
        let setup = Setup {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            log_port,
            log: dir.join("tls-access.log"),
        };
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&setup.key)
            .arg("-out")
            .arg(&setup.cert)
            .output()
            .context("cannot run openssl to make the bench's certificate")?;
        if !out.status.success() {
            bail!(
                "openssl req (the bench's certificate) failed: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(setup)
    }

    /// nginx's `http` directives for TLS, and the calibration server with `location`.
    pub(super) fn nginx_http(&self, location: &str) -> String {
        format!(
            "    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {CIPHER_SUITE};
    ssl_ecdh_curve {GROUP};
    ssl_session_tickets on;
    ssl_session_cache shared:bench:16m;
    ssl_session_timeout 1h;
    log_format handshakes '$connection $ssl_session_reused';
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        access_log {log} handshakes;
        {location}
    }}
",
            cert = self.cert.display(),
            key = self.key.display(),
            port = self.log_port,
            log = self.log.display(),
        )
    }

    /// `openssl`: what `openssl version` says (the system's library, nginx's and wrk's).
    pub(super) fn headline(&self, openssl: &str) -> String {
        let openssl = openssl
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "HTTPS: TLS 1.3 only, {CIPHER_SUITE}, {GROUP}, an ECDSA P-256 certificate, session \
             tickets and cache on; no client verifies the certificate (loadprobe and oha \
             --insecure, wrk never does); {openssl} (nginx, wrk)"
        )
    }
}

/// Connections seen by the calibration server and how many of them resumed.
#[derive(Clone, Copy, Debug)]
struct Share {
    connections: u64,
    resumed: u64,
    /// loadprobe's own count of resumed handshakes, beside the log's.
    record_resumed: Option<u64>,
}

impl Share {
    fn resumes(self) -> bool {
        2 * self.resumed > self.connections
    }

    fn percent(self) -> f64 {
        100.0 * self.resumed as f64 / self.connections.max(1) as f64
    }
}

/// What each contender's new connections did, from nginx's log.
pub(super) struct Calibration {
    shares: BTreeMap<Tool, Share>,
}

impl Ctx<'_> {
    /// A short server-close run of loadprobe (both resumption settings) and of each peer
    /// against the logging server: the share of each one's connections that resumed.
    pub(super) fn calibrate(&self, setup: &Setup) -> Result<Calibration> {
        let mut tools = vec![Tool::NoProbe, Tool::NoProbeResume, Tool::Wrk];
        tools.extend(self.oha.is_some().then_some(Tool::Oha));
        let mut shares = BTreeMap::new();
        for tool in tools {
            let name = format!("calibration-{tool:?}");
            let record = self.dir.join(format!("{name}.json"));
            // nginx appends (O_APPEND): emptied, the log holds this run's lines alone.
            std::fs::File::create(&setup.log).context("emptying nginx's handshake log")?;
            let mut cmd =
                self.command("server-close", tool, setup.log_port, CALIBRATION_S, &record)?;
            run_child(
                &mut cmd,
                self.dir,
                &name,
                Duration::from_secs(CALIBRATION_S + 60),
            )?
            .succeeded(&format!("calibration of {}", tool.label()))?;
            let log = std::fs::read_to_string(&setup.log).context("nginx's handshake log")?;
            let (connections, resumed) = reused(&log);
            if connections == 0 {
                bail!("calibration of {}: nginx logged no request", tool.label());
            }
            let record_resumed = tool
                .is_loadprobe()
                .then(|| std::fs::read(&record).ok())
                .flatten()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["tls"]["resumed_handshakes"].as_u64());
            let share = Share {
                connections,
                resumed,
                record_resumed,
            };
            println!(
                "bench: calibration: {:<34} {:5.1} % of {} connections resumed{}",
                tool.label_in(true),
                share.percent(),
                thousands(connections as f64),
                record_resumed.map_or(String::new(), |r| format!(" (its record: {r})")),
            );
            shares.insert(tool, share);
            std::thread::sleep(Duration::from_millis(500));
            super::check_interrupted()?;
        }
        Ok(Calibration { shares })
    }
}

/// (connections, resumed ones) in a log of `$connection $ssl_session_reused` lines (`r` when
/// the session was reused, `.` when not); a kept-alive connection's later requests count once.
fn reused(log: &str) -> (u64, u64) {
    let by_connection: BTreeMap<&str, bool> = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(conn, flag)| (conn, flag.trim() == "r"))
        .collect();
    let resumed = by_connection.values().filter(|&&r| r).count();
    (by_connection.len() as u64, resumed as u64)
}

/// "resume on" or "resume off".
fn kind(resumes: bool) -> &'static str {
    if resumes { "resume on" } else { "resume off" }
}

/// loadprobe with the probe, doing this kind of handshake.
fn probe_row(resumes: bool) -> Tool {
    if resumes {
        Tool::ProbeResume
    } else {
        Tool::Probe
    }
}

impl Calibration {
    /// Whether a peer's new connections resumed in its calibration.
    fn resumes(&self, peer: Tool) -> Option<bool> {
        self.shares.get(&peer).map(|s| s.resumes())
    }

    /// The table's two TLS cells (leading space, trailing `|`): the median handshakes with the
    /// resumed share (a peer's from its calibration), and the client CPU per handshake.
    pub(super) fn cells(&self, tool: Tool, s: &[Sample]) -> String {
        let handshakes = median_of(s.iter().filter_map(|s| s.handshakes));
        let total: f64 = s.iter().filter_map(|s| s.handshakes).sum();
        let resumed: Option<f64> = s.iter().map(|s| s.resumed).sum();
        let share = match (resumed, self.shares.get(&tool)) {
            (Some(r), _) if tool.is_loadprobe() => {
                format!("{:.1} %", 100.0 * r / total.max(1.0))
            }
            (_, Some(c)) if !tool.is_loadprobe() => format!("{:.1} % in calibration", c.percent()),
            _ => "?".into(),
        };
        let cpu = median_of(s.iter().filter_map(|s| s.cpu_us_per_handshake));
        format!(
            " {} ({share}) | {} |",
            handshakes.map_or("?".into(), thousands),
            cpu.map_or("—".into(), |c| format!("{c:.1} µs")),
        )
    }

    /// The targets: loadprobe with the probe against the best peer doing the same kind of
    /// handshake in server-close, and the probe's cost with either kind in every mode.
    pub(super) fn targets(&self, m: &Median<'_>) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for resumes in [false, true] {
            let best = PEERS
                .into_iter()
                .filter(|&p| self.resumes(p) == Some(resumes))
                .filter_map(|p| Some((p, m("server-close", p)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let (peer, value) = match best {
                Some((p, v)) => (p.label(), Some(v)),
                None => ("none did", None),
            };
            rows.push((
                format!(
                    "loadprobe (probe, {}) / best peer with {} handshakes ({peer}), server-close",
                    kind(resumes),
                    if resumes { "resumed" } else { "full" },
                ),
                ratio(m("server-close", probe_row(resumes)), value),
                "≥ 1.0",
                |r| r >= 1.0,
            ));
        }
        for mode in super::MODES {
            for (on, off) in [
                (Tool::Probe, Tool::NoProbe),
                (Tool::ProbeResume, Tool::NoProbeResume),
            ] {
                rows.push((
                    format!("probe on / off, https {mode}, {}", kind(on.resume())),
                    ratio(m(mode, on), m(mode, off)),
                    "≥ 0.97",
                    |r| r >= 0.97,
                ));
            }
        }
        rows
    }

    /// Rows without a target (loadprobe against each peer, same handshakes, every mode the
    /// peer ran), then what the calibration saw.
    pub(super) fn note(&self, m: &Median<'_>) -> String {
        let mut t = String::new();
        for peer in PEERS {
            let Some(resumes) = self.resumes(peer) else {
                continue;
            };
            for mode in ["server-close", "keep-alive"] {
                if let Some(r) = ratio(m(mode, probe_row(resumes)), m(mode, peer)) {
                    let _ = writeln!(
                        t,
                        "| loadprobe (probe, {}) / {}, {mode} | {r:.3} | (none) | |",
                        kind(resumes),
                        peer.label()
                    );
                }
            }
        }
        let _ = write!(
            t,
            "\nCalibration (server-close, {CALIBRATION_S} s each, nginx logging \
             `$ssl_session_reused` per connection):"
        );
        for (tool, s) in &self.shares {
            let compared = if tool.is_loadprobe() {
                s.record_resumed
                    .map_or(String::new(), |r| format!(", its record {r} resumed"))
            } else {
                format!(", compared with loadprobe {}", kind(s.resumes()))
            };
            let _ = write!(
                t,
                " {}: {:.1} % of {} connections resumed{compared};",
                tool.label_in(true),
                s.percent(),
                thousands(s.connections as f64),
            );
        }
        t.pop();
        t.push_str(".\n");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::reused;

    #[test]
    fn a_connection_counts_once_and_resumed_only_when_flagged() {
        let log = "1 .\n2 r\n2 r\n3 .\n3 .\n4 r\n";
        assert_eq!(reused(log), (4, 2));
        assert_eq!(reused(""), (0, 0));
    }
}
