use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends raw requests on one blocking connection and returns everything read until EOF.
fn exchange(addr: SocketAddr, requests: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(requests).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn honours_connection_close_and_close_after() {
    let rt = runtime();
    let config = ServerConfig {
        body_bytes: 10,
        close_after: Some(2),
        ..ServerConfig::default()
    };
    let server = Server::bind(&config).unwrap();
    let addr = server.local_addr();
    let handle = rt.block_on(async { server.spawn() });

    // Connection: close → one response, then EOF from the server.
    let out = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("content-length: 10\r\n"), "{out}");
    assert!(out.ends_with("xxxxxxxxxx"), "{out}");

    // Keep-alive, close after 2: two pipelined requests get answers, then the server closes.
    let two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(addr, two);
    assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{out}");
    assert!(out.contains("HTTP/1.1 404 Not Found"), "{out}");
    assert!(out.contains("connection: close"), "{out}");

    assert_eq!(handle.stats().requests(), 3);
    assert_eq!(handle.stats().connections(), 2);
    rt.block_on(handle.stop()).unwrap();
}

#[test]
fn adds_latency_and_serves_post_bodies() {
    let rt = runtime();
    let config = ServerConfig {
        latency: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = Server::bind(&config).unwrap();
    let addr = server.local_addr();
    let handle = rt.block_on(async { server.spawn() });
    let t = Instant::now();
    let out = exchange(
        addr,
        b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    rt.block_on(handle.stop()).unwrap();
}

#[test]
fn bind_errors_are_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ServerConfig {
        listen: taken.local_addr().unwrap(),
        ..ServerConfig::default()
    };
    // SO_REUSEADDR does not allow two listeners on one port.
    let err = Server::bind(&config).err().expect("second bind must fail");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
}

/// A client that connects to the TLS server and sends nothing is closed once the handshake
/// timeout is over, instead of holding its task and socket for ever.
#[test]
fn a_silent_tls_client_is_closed_after_the_handshake_timeout() {
    let rt = runtime();
    let tls = tls::self_signed().unwrap();
    let config = ServerConfig {
        tls: Some(tls.config),
        tls_handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = Server::bind(&config).unwrap();
    let addr = server.local_addr();
    let handle = rt.block_on(async { server.spawn() });
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    let took = t.elapsed();
    assert!(matches!(read, Ok(0)), "{read:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    rt.block_on(handle.stop()).unwrap();
}
