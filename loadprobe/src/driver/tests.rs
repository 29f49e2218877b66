//! The driver against the embedded server over real loopback sockets. Each test runs in a
//! network namespace of its own when root (so the TIME_WAIT counts are this test's alone),
//! otherwise on the host's loopback, filtered by the test's server port.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::timewait::{count_for, list_time_wait};
use super::*;
use crate::server::{Server, ServerConfig};

fn isolated<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    if crate::testing::require_root(name) {
        crate::testing::in_fresh_netns(f)
    } else {
        f()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct Outcome {
    result: DriverResult,
    /// (client, server) TIME_WAIT counts right after the run.
    tw: (u64, u64),
    /// Local addresses of the client-side TIME_WAIT sockets.
    client_tw_ips: HashSet<IpAddr>,
}

/// Runs `config` (its target replaced by a fresh embedded server on `listen`).
fn run_against_server(
    listen: &str,
    server: ServerConfig,
    edit: impl FnOnce(&mut DriverConfig),
) -> Outcome {
    let rt = runtime();
    rt.block_on(async {
        let server = Server::bind(&ServerConfig {
            listen: listen.parse().expect("listen addr"),
            ..server
        })
        .expect("bind")
        .spawn();
        let target = Target::from_addr(server.local_addr());
        let mut config = client_close(target.addr, 8, 400);
        edit(&mut config);
        let result = drive(config, Arc::new(Live::default()), Stop::default())
            .await
            .expect("drive");
        // Let the last closes finish their handshakes before looking.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, entries) = list_time_wait().expect("list TIME_WAIT");
        let tw = count_for(target.addr, &entries);
        let client_tw_ips = entries
            .iter()
            .filter(|e| e.remote == target.addr)
            .map(|e| e.local.ip())
            .collect();
        server.stop().await.expect("server stop");
        Outcome {
            result,
            tw,
            client_tw_ips,
        }
    })
}

/// `users` closed-model users making `requests` client-close requests in all to `addr`.
fn client_close(addr: SocketAddr, users: u32, requests: u64) -> DriverConfig {
    let mut config = DriverConfig::new(
        Target::from_addr(addr),
        Mode::ClientClose,
        Workload::Closed {
            users,
            think_time: Duration::ZERO,
        },
    );
    config.duration = None;
    config.requests = Some(requests);
    config
}

fn assert_counts_add_up(r: &DriverResult, expected_total: u64) {
    let errors: u64 = r.errors.values().sum();
    assert_eq!(r.total, expected_total, "errors: {:?}", r.errors);
    assert_eq!(r.ok + errors, r.total);
    assert_eq!(r.ok, r.total, "errors: {:?}", r.errors);
    assert_eq!(r.histograms.total.len(), r.ok);
}

#[test]
fn client_close_leaves_time_wait_on_client() {
    let o = isolated("client_close_leaves_time_wait_on_client", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |_| {})
    });
    assert_counts_add_up(&o.result, 400);
    assert_eq!(o.result.connections_opened, 400);
    let (client, server) = o.tw;
    assert!(client >= 396, "client TIME_WAIT {client}, server {server}");
    assert!(server <= 4, "client TIME_WAIT {client}, server {server}");
}

#[test]
fn server_close_leaves_time_wait_on_server() {
    let o = isolated("server_close_leaves_time_wait_on_server", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.mode = Mode::ServerClose
        })
    });
    assert_counts_add_up(&o.result, 400);
    assert_eq!(o.result.server_fin_missing, 0);
    let (client, server) = o.tw;
    assert!(server >= 396, "client TIME_WAIT {client}, server {server}");
    assert!(client <= 4, "client TIME_WAIT {client}, server {server}");
}

#[test]
fn reset_leaves_no_time_wait() {
    let o = isolated("reset_leaves_no_time_wait", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.mode = Mode::Reset
        })
    });
    assert_counts_add_up(&o.result, 400);
    assert_eq!(o.tw, (0, 0));
}

#[test]
fn keep_alive_reuses_connections() {
    let o = isolated("keep_alive_reuses_connections", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.mode = Mode::KeepAlive;
            c.requests_per_conn = Some(10);
        })
    });
    assert_counts_add_up(&o.result, 400);
    // 8 users sharing 400 requests, 10 per connection: 40 connections, a few more where a
    // user's share is not a multiple of 10; all closed by the client.
    let opened = o.result.connections_opened;
    assert!((40..=48).contains(&opened), "{opened}");
    let (client, server) = o.tw;
    assert!(client + 1 >= opened, "client {client}, server {server}");
    assert!(server <= 2, "client {client}, server {server}");
}

#[test]
fn server_close_after_n_is_followed_in_keep_alive() {
    let o = isolated("server_close_after_n_is_followed_in_keep_alive", || {
        let server = ServerConfig {
            close_after: Some(5),
            ..ServerConfig::default()
        };
        run_against_server("127.0.0.1:0", server, |c| c.mode = Mode::KeepAlive)
    });
    assert_counts_add_up(&o.result, 400);
    let opened = o.result.connections_opened;
    assert!((80..=88).contains(&opened), "{opened}");
    // Connections the server ended after 5 requests leave TIME_WAIT on the server; the users'
    // last, partly used connections are closed by the client.
    let (client, server) = o.tw;
    assert!(
        server + 8 >= opened && client <= 8,
        "client {client}, server {server}"
    );
}

#[test]
fn ipv6_and_http_errors_are_counted() {
    let o = isolated("ipv6_and_http_errors_are_counted", || {
        run_against_server("[::1]:0", ServerConfig::default(), |c| {
            c.request.path = "/status/503".into();
            c.requests = Some(50);
        })
    });
    let r = &o.result;
    assert_eq!((r.total, r.ok), (50, 0));
    assert_eq!(r.errors.get("http_5xx"), Some(&50));
    // HTTP errors got a response: their latency counts.
    assert_eq!(r.histograms.total.len(), 50);
    assert!(o.tw.0 >= 49, "{:?}", o.tw);
}

#[test]
fn source_ips_spread_connections() {
    let o = isolated("source_ips_spread_connections", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.source_ips = parse_source_ips("127.0.0.2-127.0.0.4").unwrap();
            c.requests = Some(60);
        })
    });
    assert_counts_add_up(&o.result, 60);
    let want: HashSet<IpAddr> = parse_source_ips("127.0.0.2-127.0.0.4")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(o.client_tw_ips, want);
}

#[test]
fn open_model_holds_its_rate() {
    let o = isolated("open_model_holds_its_rate", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.workload = Workload::Open {
                rate: 200.0,
                max_in_flight: 1000,
            };
            c.requests = None;
            c.duration = Some(Duration::from_secs(3));
        })
    });
    let r = &o.result;
    assert_counts_add_up(r, r.total);
    let rate = r.total as f64 / 3.0;
    assert!(
        (rate - 200.0).abs() <= 2.0,
        "rate {rate}: {} in {:?}",
        r.total,
        r.elapsed
    );
    // Every full second of the window got its share.
    for (i, s) in r.timeline.iter().take(3).enumerate() {
        assert!((198..=202).contains(&s.ok), "second {i}: {s:?}");
    }
}

#[test]
fn open_model_charges_stalls_to_latency() {
    // 50 ms server latency with at most 2 requests in flight at 100/s: the schedule cannot be
    // met, and the corrected latency must show the queueing the uncorrected one hides.
    let o = isolated("open_model_charges_stalls_to_latency", || {
        let server = ServerConfig {
            latency: Duration::from_millis(50),
            ..ServerConfig::default()
        };
        run_against_server("127.0.0.1:0", server, |c| {
            c.workload = Workload::Open {
                rate: 100.0,
                max_in_flight: 2,
            };
            c.requests = Some(60);
        })
    });
    let h = &o.result.histograms;
    assert!(
        h.total_uncorrected.max() < 200_000,
        "{}",
        h.total_uncorrected.max()
    );
    assert!(h.total.max() > 500_000, "{}", h.total.max());
}

#[test]
fn warmup_is_not_measured() {
    let o = isolated("warmup_is_not_measured", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.workload = Workload::Open {
                rate: 100.0,
                max_in_flight: 100,
            };
            c.warmup = Duration::from_millis(500);
            c.requests = None;
            c.duration = Some(Duration::from_secs(1));
        })
    });
    let r = &o.result;
    assert!((99..=101).contains(&r.total), "{}", r.total);
    // The warmup's connections were real, though: TIME_WAIT shows them all.
    assert!(o.tw.0 >= 148, "{:?}", o.tw);
}

#[test]
fn bad_config_and_unreachable_target_are_errors() {
    let rt = runtime();
    rt.block_on(async {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = unused.local_addr().unwrap();
        drop(unused);
        let config = DriverConfig::new(
            Target::from_addr(addr),
            Mode::ClientClose,
            Workload::Closed {
                users: 1,
                think_time: Duration::ZERO,
            },
        );
        let err = preflight(&config).await.unwrap_err();
        assert!(
            matches!(
                err,
                DriverError::Unreachable {
                    class: ErrorClass::Errno(libc::ECONNREFUSED),
                    ..
                }
            ),
            "{err}"
        );
        let mut zero_users = config.clone();
        zero_users.workload = Workload::Closed {
            users: 0,
            think_time: Duration::ZERO,
        };
        let err = drive(zero_users, Arc::default(), Stop::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--users"), "{err}");
    });
}

#[test]
fn stop_ends_a_run_early_and_keeps_results() {
    let rt = runtime();
    let r = rt.block_on(async {
        let server = Server::bind(&ServerConfig::default()).unwrap().spawn();
        let mut config = DriverConfig::new(
            Target::from_addr(server.local_addr()),
            Mode::KeepAlive,
            Workload::Closed {
                users: 2,
                think_time: Duration::from_millis(1),
            },
        );
        config.duration = Some(Duration::from_secs(60));
        let stop = Stop::default();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.stop();
        });
        let started = std::time::Instant::now();
        let r = drive(config, Arc::default(), stop).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        r
    });
    assert!(r.interrupted);
    assert!(r.ok > 10, "{}", r.ok);
    assert_eq!(r.ok, r.total);
}

#[test]
fn hyper_client_ends_connections_like_the_lean_one() {
    for (mode, client_side) in [(Mode::ClientClose, true), (Mode::ServerClose, false)] {
        let o = isolated("hyper_client_ends_connections_like_the_lean_one", || {
            run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
                c.mode = mode;
                c.http_client = HttpClient::Hyper;
                c.requests = Some(200);
            })
        });
        assert_counts_add_up(&o.result, 200);
        let (client, server) = o.tw;
        let (expected, other) = if client_side {
            (client, server)
        } else {
            (server, client)
        };
        assert!(
            expected >= 198 && other <= 2,
            "{mode}: client {client}, server {server}"
        );
    }
}

/// A 100-port range without tcp_tw_reuse: after ~100 connections every connect() fails with
/// EADDRNOTAVAIL, which must be counted as such (and not crash or stall the run).
#[test]
fn port_exhaustion_is_counted_as_eaddrnotavail() {
    if !crate::testing::require_root("port_exhaustion_is_counted_as_eaddrnotavail") {
        return;
    }
    let r = crate::testing::in_fresh_netns(|| {
        crate::kernel::write_sysctl("net.ipv4.ip_local_port_range", "40000 40099").unwrap();
        crate::kernel::write_sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.requests = Some(300);
            c.workload = Workload::Closed {
                users: 2,
                think_time: Duration::ZERO,
            };
        })
    });
    let r = r.result;
    let exhausted = r.errors.get("EADDRNOTAVAIL").copied().unwrap_or(0);
    assert_eq!(r.ok + exhausted, 300, "{:?}", r.errors);
    // 100 ports, less the one the embedded server's listener may hold: about 100 succeed.
    assert!((95..=100).contains(&r.ok), "ok {}", r.ok);
}

#[test]
fn open_model_keep_alive_pools_connections() {
    let o = isolated("open_model_keep_alive_pools_connections", || {
        run_against_server("127.0.0.1:0", ServerConfig::default(), |c| {
            c.mode = Mode::KeepAlive;
            c.workload = Workload::Open {
                rate: 500.0,
                max_in_flight: 100,
            };
            c.requests = Some(500);
        })
    });
    assert_counts_add_up(&o.result, 500);
    // At 500/s against a fast server few requests overlap, so few connections serve them all.
    assert!(
        o.result.connections_opened <= 20,
        "{}",
        o.result.connections_opened
    );
}

/// A connect whose handshake does not complete inside `connect()`: the listener's accept
/// queue is full, so the SYN is dropped and retransmitted a second later, after the queue was
/// emptied. The driver must wait for the handshake and then send its whole request.
#[test]
fn a_handshake_that_completes_late_still_carries_the_request() {
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let listener: std::net::TcpListener = listener.into();
    // Fills the accept queue (backlog 0 holds one).
    let fillers: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)))
        .collect();
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // The fillers first, then the driver's connection once its SYN comes again.
        loop {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            conn.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !request.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if request.starts_with(b"GET ") {
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
                return request;
            }
        }
    });
    let result = runtime().block_on(async {
        drive(client_close(addr, 1, 1), Arc::default(), Stop::default())
            .await
            .expect("drive")
    });
    let request = server.join().expect("server");
    drop(fillers);
    assert_eq!((result.ok, result.total), (1, 1), "{:?}", result.errors);
    assert!(request.ends_with(b"\r\n\r\n"), "{request:?}");
    // The retransmitted SYN, not the first one, opened the connection.
    let connect_us = result.histograms.connect.max();
    assert!(connect_us >= 500_000, "connect took {connect_us} µs");
}
