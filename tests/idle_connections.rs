//! Idle keep-alive connections are parked: no coroutine and no buffers while they wait,
//! served again when their client writes, closed at the idle timeout, at the connection
//! cap and at a graceful stop like any other, and cheap in memory.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{poll_value, Client, Server};

/// Waits until `/metrics` shows `expected` parked connections; the last value read.
fn wait_for_parked(server: &Server, expected: f64) -> f64 {
    poll_value(
        Duration::from_secs(10),
        || server.metric("http_connections_parked"),
        |&parked| parked == expected,
    )
}

/// A connection that made one request and is now idle.
fn answered_once(server: &Server) -> Client {
    let mut client = server.connect();
    client.send_request("GET", "/video/12345", &[], None);
    assert_eq!(client.read_response().status, 200);
    client
}

#[test]
fn a_parked_connection_is_served_again_when_its_client_writes() {
    let server = Server::start(&["--park-idle-ms", "100", "--idle-timeout-ms", "30000"]);
    let mut clients: Vec<Client> = (0..3).map(|_| answered_once(&server)).collect();
    // The /metrics requests come on connections of their own, which close at once.
    assert_eq!(
        wait_for_parked(&server, 3.0),
        3.0,
        "all three idle ones parked"
    );
    for (round, client) in clients.iter_mut().enumerate() {
        // Pipelined, on a socket that has waited in the keeper: both answered, in order.
        client.send_raw(
            b"GET /video/12345 HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        assert_eq!(client.read_response().status, 200, "connection {round}");
        assert_eq!(client.read_response().status, 404, "connection {round}");
    }
    // Served, then idle again: back in the keeper.
    assert_eq!(wait_for_parked(&server, 3.0), 3.0);
}

#[test]
fn a_parked_connection_is_closed_at_the_idle_timeout() {
    let server = Server::start(&["--park-idle-ms", "100", "--idle-timeout-ms", "1500"]);
    let mut client = answered_once(&server);
    let idle_from = Instant::now();
    assert_eq!(wait_for_parked(&server, 1.0), 1.0);
    assert!(client.closed_within(Duration::from_secs(10)));
    let waited = idle_from.elapsed();
    assert!(
        waited >= Duration::from_millis(1300),
        "closed before its idle timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(3000),
        "the keeper let it idle long past its timeout: {waited:?}"
    );
    assert_eq!(wait_for_parked(&server, 0.0), 0.0);
}

#[test]
fn at_the_connection_cap_a_parked_connection_makes_room() {
    let server = Server::start(&[
        "--park-idle-ms",
        "100",
        "--idle-timeout-ms",
        "30000",
        "--max-connections",
        "2",
    ]);
    let mut first = answered_once(&server);
    std::thread::sleep(Duration::from_millis(50));
    let _second = answered_once(&server);
    // Both parked: asking /metrics would take the third slot, so give them time instead.
    std::thread::sleep(Duration::from_millis(400));
    // A newcomer at the cap: the longest-idle (parked) connection is closed for it.
    let newcomer = answered_once(&server);
    assert!(
        first.closed_within(Duration::from_secs(5)),
        "the longest-idle parked connection was closed to make room"
    );
    drop(newcomer);
}

#[test]
fn a_graceful_stop_closes_parked_connections_at_once() {
    let mut server = Server::start(&["--park-idle-ms", "100", "--idle-timeout-ms", "60000"]);
    let mut clients: Vec<Client> = (0..5).map(|_| answered_once(&server)).collect();
    assert_eq!(wait_for_parked(&server, 5.0), 5.0);
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "stopped cleanly: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "parked connections held the stop: {:?}",
        started.elapsed()
    );
    for client in &mut clients {
        assert!(client.closed_within(Duration::from_secs(1)));
    }
}

/// Opens `count` more connections that each make one request, and checks every answer.
fn open_answered(server: &Server, sockets: &mut Vec<TcpStream>, count: usize) {
    use std::io::Write;
    let first = sockets.len();
    for _ in 0..count {
        let mut socket = TcpStream::connect(server.addr).expect("connect");
        socket
            .write_all(b"GET /video/12345 HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        sockets.push(socket);
    }
    for socket in &mut sockets[first..] {
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).expect("a response");
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}

/// Resident memory (KiB) once `count` more connections are open, answered and parked.
fn rss_with_more_idle(server: &Server, sockets: &mut Vec<TcpStream>, count: usize) -> u64 {
    open_answered(server, sockets, count);
    let parked = sockets.len() as f64;
    assert_eq!(wait_for_parked(server, parked), parked);
    server.memory_kib("VmRSS")
}

#[test]
fn an_idle_connection_costs_a_small_fraction_of_an_unparked_one() {
    // The marginal cost: memory with 3,000 idle connections less memory with 1,000, so
    // the fixed costs (runtime, pools, catalog) cancel out. The release build holds about
    // 1 KiB each (bench/idle_connections.py); this debug build a little more, and the
    // bound leaves room for the allocator's page granularity at these small counts.
    let server = Server::start(&["--park-idle-ms", "100", "--idle-timeout-ms", "60000"]);
    let mut sockets = Vec::new();
    let before = rss_with_more_idle(&server, &mut sockets, 1_000);
    let after = rss_with_more_idle(&server, &mut sockets, 2_000);
    let per_connection = after.saturating_sub(before) as f64 / 2_000.0;
    eprintln!("resident memory per parked connection: {per_connection:.2} KiB");
    assert!(
        per_connection <= 4.0,
        "an idle connection holds {per_connection:.2} KiB ({before} KiB -> {after} KiB)"
    );
}

#[test]
fn without_parking_an_idle_connection_keeps_its_stack_and_buffers() {
    // The same measure with parking off: what the test above would see if parking
    // broke (so that one can fail).
    let server = Server::start(&["--park-idle-ms", "0", "--idle-timeout-ms", "60000"]);
    let mut sockets = Vec::new();
    let before = rss_without_parking(&server, &mut sockets, 500);
    let after = rss_without_parking(&server, &mut sockets, 1_000);
    let per_connection = after.saturating_sub(before) as f64 / 1_000.0;
    eprintln!("resident memory per unparked idle connection: {per_connection:.2} KiB");
    assert!(
        per_connection > 4.0,
        "an unparked idle connection holds its stack and a 4 KiB read buffer: {per_connection:.2} KiB"
    );
    assert_eq!(server.metric("http_connections_parked"), 0.0);
}

fn rss_without_parking(server: &Server, sockets: &mut Vec<TcpStream>, count: usize) -> u64 {
    open_answered(server, sockets, count);
    server.memory_kib("VmRSS")
}
