//! `loadprobe serve`: the embedded target server on its own, until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use loadprobe::driver::limits;
use loadprobe::server::{Server, ServerConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (IPv4 or [IPv6]); port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Size of every response body.
    #[arg(long, value_name = "N", default_value_t = 64)]
    body_bytes: usize,
    /// Added delay before each response, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency: u64,
    /// Close each connection (server FIN first) after N requests.
    #[arg(long, value_name = "N")]
    close_after: Option<u32>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    limits::raise_nofile_limit().context("cannot raise RLIMIT_NOFILE")?;
    let config = ServerConfig {
        listen: args.listen,
        body_bytes: args.body_bytes,
        latency: Duration::from_millis(args.latency),
        close_after: args.close_after.filter(|n| *n > 0),
    };
    let runtime = super::runtime(args.threads)?;
    runtime.block_on(async {
        let server = Server::bind(&config)?;
        let stats = server.stats();
        println!("listening on http://{}/", server.local_addr());
        let shutdown = shutdown_signal()?;
        server.serve_until(shutdown).await?;
        println!(
            "served {} requests on {} connections",
            stats.requests(),
            stats.connections()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves at the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
