//! The driver against the embedded server over real loopback sockets. Each test runs in a
//! network namespace of its own when root (so the TIME_WAIT counts are this test's alone),
//! otherwise on the host's loopback, filtered by the test's server port.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::diag::timewait::{count_for, list_time_wait};
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
            c.mix.first_mut().path = "/status/503".into();
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
        assert!(
            matches!(
                err,
                DriverError::Invalid {
                    field: Field::Users,
                    ..
                }
            ),
            "{err}"
        );
    });
}

/// The check of an http target refuses a TLS server (the embedded one with `--tls`: rustls
/// answers the request's first line with an alert) and lets a plain one through, without it
/// seeing a request.
#[test]
fn an_http_target_on_a_tls_server_is_refused_before_load() {
    let rt = runtime();
    rt.block_on(async {
        let tls = crate::server::tls::self_signed().expect("certificate");
        for with_tls in [true, false] {
            let server = Server::bind(&ServerConfig {
                tls: with_tls.then(|| tls.config.clone()),
                ..ServerConfig::default()
            })
            .expect("bind")
            .spawn();
            let config = client_close(server.local_addr(), 1, 1);
            let checked = preflight(&config).await;
            match (with_tls, checked) {
                (true, Err(DriverError::TlsServer { addr })) => {
                    assert_eq!(addr, server.local_addr())
                }
                (false, Ok(())) => assert_eq!(server.stats().requests(), 0),
                (_, other) => panic!("tls {with_tls}: {other:?}"),
            }
            server.stop().await.expect("server stop");
        }
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

/// 100 ports without tcp_tw_reuse, one event loop: once the ports are spent, the users whose
/// connect fails must pause, so the ones that still have a request in flight get their answer
/// when the server gives it (3 ms), not when the failing users are done (the deadline).
#[test]
fn failing_connects_leave_the_other_users_their_latency() {
    if !crate::testing::require_root("failing_connects_leave_the_other_users_their_latency") {
        return;
    }
    let r = crate::testing::in_fresh_netns(|| {
        crate::kernel::write_sysctl("net.ipv4.ip_local_port_range", "40000 40099").unwrap();
        crate::kernel::write_sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
        let server = ServerConfig {
            latency: Duration::from_millis(3),
            ..ServerConfig::default()
        };
        run_against_server("127.0.0.1:0", server, |c| {
            c.workers = 1;
            c.requests = None;
            c.duration = Some(Duration::from_secs(2));
            c.workload = Workload::Closed {
                users: 8,
                think_time: Duration::ZERO,
            };
        })
    })
    .result;
    let exhausted = r.errors.get("EADDRNOTAVAIL").copied().unwrap_or(0);
    assert!(exhausted > 0, "{:?}", r.errors);
    assert!((90..=100).contains(&r.ok), "ok {}", r.ok);
    // A failed connect opened no connection.
    assert_eq!(r.connections_opened, r.ok);
    let p99 = r.histograms.total.value_at_quantile(0.99);
    assert!(p99 < 100_000, "p99 {p99} µs for a 3 ms server");
}

/// A response that is wholly in the socket when the run's end cuts its request is a completed
/// response, even when the event loop has not yet been told the socket is readable: the cut
/// comes while the loop is busy (here: a task that blocks it), so the loop's next step is the
/// woken request, before it looks at its sockets again.
#[test]
fn a_response_already_received_at_the_cut_is_ok() {
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::time::Instant;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (go, answer) = mpsc::channel::<()>();
    let (written, was_written) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut chunk).expect("read request");
            assert!(n > 0, "EOF before the request");
            head.extend_from_slice(&chunk[..n]);
        }
        answer.recv().expect("go");
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .expect("write response");
        written.send(()).expect("written");
        // No FIN: the client's close (or its end) ends the connection.
        let _ = conn.read(&mut chunk);
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stats = rt.block_on(async {
        let config = DriverConfig::new(
            Target::from_addr(addr),
            Mode::ServerClose,
            Workload::Closed {
                users: 1,
                think_time: Duration::ZERO,
            },
        );
        let ctx = Arc::new(
            task::Ctx::new(
                config,
                Arc::new(Live::default()),
                Stop::default(),
                Instant::now(),
            )
            .expect("ctx"),
        );
        let user = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                let (mut slot, mut buf) = (None, Vec::new());
                ctx.run_one(0, 0, &mut slot, &mut buf, Instant::now(), true)
                    .await
            }
        });
        // The user connects, sends its request and waits for the response.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Now the loop is busy: the response arrives, then the end of the run.
        go.send(()).expect("go");
        was_written.recv().expect("written");
        // On loopback the bytes are in the client's socket once the write returns; a moment
        // more for a slow machine.
        std::thread::sleep(Duration::from_millis(20));
        ctx.cut.stop();
        user.await.expect("user task");
        ctx.recorder.collect()
    });
    server.join().expect("server thread");
    assert_eq!(
        (stats.ok, stats.unfinished, stats.fin_missing),
        (1, 0, 1),
        "(ok, unfinished, server FIN missing)"
    );
}

/// A stop wakes its waiters one group after another (a watch channel spreads them over several
/// notifiers), so a task woken by the first group can poll its other waits before their own
/// wake-up comes. Those must see the stop all the same: this is the end of a run cutting a
/// finished exchange whose FIN wait was still asleep, and counting it unfinished.
#[test]
fn a_stop_is_seen_by_every_wait_polled_after_it() {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Wake, Waker};

    type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;
    /// On its first wake, while the stop is still waking the others, polls every wait.
    struct PollAllOnWake {
        stop: Stop,
        waits: Arc<Mutex<Vec<Wait>>>,
        missed: Arc<AtomicBool>,
        polled: Arc<AtomicBool>,
    }
    impl Wake for PollAllOnWake {
        fn wake(self: Arc<Self>) {
            if self.polled.swap(true, Ordering::SeqCst) {
                return;
            }
            assert!(self.stop.is_stopped());
            let mut cx = Context::from_waker(Waker::noop());
            let mut waits = self.waits.lock().unwrap();
            for wait in waits.iter_mut() {
                if wait.as_mut().poll(&mut cx).is_pending() {
                    self.missed.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    let stop = Stop::default();
    // Many waits, so that they are spread over all the channel's notifiers.
    let waits: Vec<Wait> = (0..64)
        .map(|_| {
            let stop = stop.clone();
            Box::pin(async move { stop.wait().await }) as Wait
        })
        .collect();
    let waits = Arc::new(Mutex::new(waits));
    let (missed, polled) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let waker = Waker::from(Arc::new(PollAllOnWake {
        stop: stop.clone(),
        waits: waits.clone(),
        missed: missed.clone(),
        polled: polled.clone(),
    }));
    let mut cx = Context::from_waker(&waker);
    for wait in waits.lock().unwrap().iter_mut() {
        assert!(wait.as_mut().poll(&mut cx).is_pending());
    }
    stop.stop();
    assert!(polled.load(Ordering::SeqCst), "the stop woke no wait");
    assert!(
        !missed.load(Ordering::SeqCst),
        "a wait polled after the stop did not see it"
    );
}

/// Validation errors name the configuration field and what is wrong with its value, never a
/// command-line flag: the command line puts its own flags on them.
#[test]
fn validation_errors_name_fields_not_flags() {
    let target = Target::from_addr(([127, 0, 0, 1], 9).into());
    let closed = |users| Workload::Closed {
        users,
        think_time: Duration::ZERO,
    };
    let mut no_workers = DriverConfig::new(target.clone(), Mode::ClientClose, closed(1));
    no_workers.workers = 0;
    let mut keep_alive_hyper = DriverConfig::new(target.clone(), Mode::KeepAlive, closed(1));
    keep_alive_hyper.http_client = HttpClient::Hyper;
    let mut bad_method = DriverConfig::new(target.clone(), Mode::ClientClose, closed(1));
    bad_method.mix.first_mut().method = "G T".into();
    for (config, field, text) in [
        (
            no_workers,
            Some(Field::Workers),
            "workers must be at least 1",
        ),
        (
            DriverConfig::new(target, Mode::ClientClose, closed(0)),
            Some(Field::Users),
            "users must be at least 1",
        ),
        (
            keep_alive_hyper,
            Some(Field::HttpClient),
            "http_client hyper is only for connection-per-request modes",
        ),
        (bad_method, None, "must be an HTTP token like GET or POST"),
    ] {
        let err = validate(&config).unwrap_err();
        assert_eq!(err.to_string(), text);
        match (&err, field) {
            (DriverError::Invalid { field: got, .. }, Some(want)) => assert_eq!(*got, want),
            (DriverError::Request(RequestError::Method(m)), None) => assert_eq!(m, "G T"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
