//! The accept loop: a connection that does not complete its request head is closed after
//! the header timeout, connections past the limit are closed when accepted, and the server
//! goes on answering the others.

#![allow(clippy::unwrap_used)] // test helpers

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tidal_serving::http::listen::{Limits, serve};

fn start(
    limits: Limits,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let app = Router::new().route("/ok", get(|| async { "ok" }));
            serve(listener, app, limits, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), stop_tx, thread)
}

/// Seconds until the server closes `s` (reading what it sends), or `None` within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<f64> {
    let started = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed().as_secs_f64()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(started.elapsed().as_secs_f64()),
            Err(_) => return None,
        }
    }
}

fn get_ok(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn stalled_connections_are_closed_and_the_others_served() {
    let (addr, stop, thread) = start(Limits {
        max_connections: 8,
        header_timeout: Duration::from_millis(300),
    });
    // A request head that never ends, and a connection that sends nothing.
    let opened = Instant::now();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(b"POST /ok HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(get_ok(addr).ends_with("ok"), "served beside them");
    for (what, s) in [("a partial head", &mut partial), ("a silent connection", &mut silent)] {
        assert!(
            closed_within(s, Duration::from_secs(5)).is_some(),
            "{what} is never closed"
        );
        let t = opened.elapsed().as_secs_f64();
        assert!((0.2..3.0).contains(&t), "{what} closed {t:.2} s after it was opened");
    }
    let _ = stop.send(());
    thread.join().unwrap();
}

#[test]
fn connections_past_the_limit_are_closed_at_once() {
    let (addr, stop, thread) = start(Limits {
        max_connections: 3,
        header_timeout: Duration::from_secs(30),
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Each held connection is served (and so counted) before the next is tried.
    for s in &mut held {
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    let _ = extra.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
    let t = closed_within(&mut extra, Duration::from_secs(5)).expect("the fourth connection is closed");
    assert!(t < 1.0, "closed at once, not after {t:.2} s");
    drop(held);
    // The slots come back: a new connection is served.
    let started = Instant::now();
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        if s.read_to_string(&mut out).is_ok() && out.ends_with("ok") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slots are never given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stop.send(());
    thread.join().unwrap();
}
