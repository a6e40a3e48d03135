//! The generator against a small blocking server in the test process, whose answers can
//! be stalled on purpose: checks the rate it keeps, and that a stall is charged to every
//! request scheduled during it (the latency correction), not only to the few in flight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use openloop::{run, Plan};

/// Answers every request with 200 `hello`, except that a request arriving during
/// `[stall_from, stall_until)` (from the server's start) is answered at `stall_until`.
fn serve(stall_from: Duration, stall_until: Duration) -> SocketAddr {
    serve_with(stall_from, stall_until, false)
}

/// As [`serve`]; with `close_after_each`, every connection is closed after one response.
fn serve_with(stall_from: Duration, stall_until: Duration, close_after_each: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let started = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let Ok(count) = stream.read(&mut buffer) else {
                        return;
                    };
                    if count == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buffer[..count]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let elapsed = started.elapsed();
                        if elapsed >= stall_from && elapsed < stall_until {
                            std::thread::sleep(stall_until - elapsed);
                        }
                        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
                        if stream.write_all(response).is_err() || close_after_each {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

fn plan(address: SocketAddr, rate: f64, connections: usize, seconds: f64) -> Plan {
    Plan {
        address,
        request: b"GET / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(),
        rate,
        connections,
        warmup: Duration::ZERO,
        duration: Duration::from_secs_f64(seconds),
        drain: Duration::from_millis(500),
    }
}

#[test]
fn keeps_the_rate_and_counts_every_response() {
    let address = serve(Duration::MAX, Duration::MAX);
    let mut plan = plan(address, 2000.0, 20, 1.0);
    plan.warmup = Duration::from_millis(200);
    let report = run(&plan).expect("run");
    assert!(
        (1990..=2010).contains(&report.sent),
        "2,000 req/s for 1 s, sent {}",
        report.sent
    );
    assert_eq!(report.completed, report.sent);
    assert_eq!(report.statuses.get(&200), Some(&report.sent));
    assert_eq!((report.errors, report.unanswered), (0, 0));
    assert!(report.latency_us.value_at_percentile(50.0) < 5_000);
}

#[test]
fn a_stall_is_charged_to_every_request_scheduled_during_it() {
    // 1,000 req/s over 10 connections; the server answers nothing for 300 ms. A closed-loop
    // tool would see 10 slow requests (1 %); from the schedule, the ~300 requests due in the
    // stall waited 0–300 ms, so about a fifth of all requests waited over 100 ms.
    let address = serve(Duration::from_millis(420), Duration::from_millis(720));
    let report = run(&plan(address, 1000.0, 10, 1.0)).expect("run");
    assert_eq!(report.completed, report.sent);
    let p50 = report.latency_us.value_at_percentile(50.0);
    let p90 = report.latency_us.value_at_percentile(90.0);
    let max = report.latency_us.max();
    assert!(p50 < 10_000, "p50 {p50} µs: most requests were not stalled");
    assert!(p90 >= 80_000, "p90 {p90} µs: the stall must reach the tail");
    assert!(
        (250_000..400_000).contains(&max),
        "max {max} µs ≈ the stall"
    );
}

#[test]
fn requests_never_answered_are_reported_not_hidden() {
    let address = serve(Duration::ZERO, Duration::from_secs(3600));
    let mut plan = plan(address, 100.0, 5, 0.5);
    plan.drain = Duration::from_millis(200);
    let report = run(&plan).expect("run");
    assert_eq!(report.completed, 0);
    assert_eq!(report.unanswered, 5, "one request stuck on each connection");
    assert!(report.sent >= 5);
}

#[test]
fn closed_connections_are_reopened_and_every_request_is_accounted_for() {
    let address = serve_with(Duration::MAX, Duration::MAX, true);
    let report = run(&plan(address, 500.0, 5, 0.5)).expect("run");
    assert!(report.sent >= 240, "sent {}", report.sent);
    assert_eq!(
        report.completed + report.errors + report.unanswered,
        report.sent,
        "each request answered, failed or unanswered"
    );
    assert!(
        report.completed > report.sent / 2,
        "reconnected connections keep being answered: {} of {}",
        report.completed,
        report.sent
    );
}
