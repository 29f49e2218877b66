//! `loadprobe serve`: the embedded target server on its own, until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use loadprobe::driver::{Stop, limits};
use loadprobe::server::{Server, ServerConfig, tls};

use super::out::Stdout;
use super::parse;
use super::signals::Interrupts;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (IPv4 or [IPv6]); port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Size of every response body (at most 256 MiB; it is built once, up front).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=parse::MAX_BODY_BYTES))]
    body_bytes: usize,
    /// Added delay before each response, in milliseconds (at most an hour).
    #[arg(long, value_name = "MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_LATENCY_MS))]
    latency: u64,
    /// Close each connection (server FIN first) after N requests.
    #[arg(long, value_name = "N")]
    close_after: Option<u32>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = parse::threads)]
    threads: Option<usize>,
    /// Speak HTTPS: with a self-signed certificate made in memory (for localhost, 127.0.0.1
    /// and ::1), or the one of --cert and --key.
    #[arg(long)]
    tls: bool,
    /// --tls: the certificate chain to show (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// --tls: the private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
}

/// Longest `--latency`: an hour, longer than any client waits for an answer.
const MAX_LATENCY_MS: u64 = 3_600_000;

pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let config = ServerConfig {
        listen: args.listen,
        body_bytes: args.body_bytes,
        latency: Duration::from_millis(args.latency),
        close_after: args.close_after.filter(|n| *n > 0),
        tls: match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Some(tls::from_files(cert, key)?.config),
            _ if args.tls => Some(tls::self_signed()?.config),
            _ => None,
        },
        ..ServerConfig::default()
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let runtime = super::runtime(args.threads)?;
    runtime.block_on(async {
        let server = Server::bind(&config)?;
        let stats = server.stats();
        // Nobody reading stdout (a closed pipe) does not stop the server.
        let mut out = Stdout::new();
        writeln!(out, "listening on {scheme}://{}/", server.local_addr())?;
        out.flush()?;
        if args.tls && args.cert.is_none() {
            // Nothing trusts a certificate made in memory; a client has to be told.
            let _ = writeln!(
                std::io::stderr(),
                "serve: a self-signed certificate made in memory (localhost, 127.0.0.1, ::1): \
                 clients must skip verification (loadprobe run --insecure)"
            );
        }
        let shutdown = shutdown_signal()?;
        server.serve_until(shutdown).await?;
        writeln!(
            out,
            "served {} requests on {} connections",
            stats.requests(),
            stats.connections()
        )?;
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves at the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let stop = Stop::default();
    let stopped = stop.clone();
    Interrupts::catch()?.on_each(move |_| stop.stop())?;
    Ok(async move { stopped.wait().await })
}
