//! The HTTP layer against real clients and hostile ones: limits, framing, keep-alive,
//! pipelining, timeouts. Each refused request must get its error response, and the
//! server must keep serving afterwards.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server, CONTRACT_BODY, SEED_VIDEO};

/// After a hostile request, the server still answers others.
fn assert_still_serving(server: &mut Server) {
    assert!(server.is_running(), "server died:\n{}", server.log());
    assert_eq!(server.get("/video/12345").status, 200);
}

fn header_block(count: usize) -> String {
    (0..count)
        .map(|i| format!("X-Header-{i}: value-{i}\r\n"))
        .collect()
}

#[test]
fn sixty_four_headers_are_served() {
    let mut server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(
        format!(
            "GET /video/12345 HTTP/1.1\r\nHost: t\r\n{}\r\n",
            header_block(64)
        )
        .as_bytes(),
    );
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), SEED_VIDEO);
    assert_still_serving(&mut server);
}

#[test]
fn too_many_headers_is_431_and_reaches_the_client() {
    let mut server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(format!("GET /video/12345 HTTP/1.1\r\n{}\r\n", header_block(150)).as_bytes());
    let response = client.read_response();
    assert_eq!(response.status, 431);
    assert!(response.error().contains("headers"), "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed_within(Duration::from_secs(5)));
    assert_still_serving(&mut server);
}

#[test]
fn oversized_head_is_431() {
    let mut server = Server::start(&[]);
    let mut client = server.connect();
    let cookie = "c".repeat(17 * 1024);
    client.send_raw(format!("GET /video/12345 HTTP/1.1\r\nCookie: {cookie}\r\n\r\n").as_bytes());
    let response = client.read_response();
    assert_eq!(response.status, 431);
    assert!(response.error().contains("16384"), "{}", response.text());
    assert_still_serving(&mut server);
}

#[test]
fn oversized_body_is_413_before_it_is_read() {
    let mut server = Server::start(&["--max-body-bytes", "1000"]);
    let mut client = server.connect();
    client.send_raw(
        b"POST /video/token HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n",
    );
    let response = client.read_response();
    assert_eq!(response.status, 413);
    assert!(response.error().contains("1000"), "{}", response.text());
    assert_still_serving(&mut server);
}

#[test]
fn default_body_limit_is_one_mebibyte() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(
        format!(
            "POST /video/token HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            1024 * 1024 + 1
        )
        .as_bytes(),
    );
    assert_eq!(client.read_response().status, 413);
    // A body just under the limit is read and judged on its content.
    let padding = " ".repeat(1024 * 1024 - CONTRACT_BODY.len() - 10);
    let body = format!("{CONTRACT_BODY}{padding}");
    assert_eq!(server.post_token(&body).status, 200);
}

#[test]
fn malformed_framing_gets_a_400_that_reaches_the_client() {
    let mut server = Server::start(&[]);
    let cases: [(&str, &str); 7] = [
        ("POST /video/token HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
        ("POST /video/token HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "Content-Length"),
        ("POST /video/token HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", "Content-Length"),
        ("POST /video/token HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "conflicting"),
        ("POST /video/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding"),
        ("GARBAGE\r\n\r\n", "malformed"),
        ("GET /video/12345 HTTP/1.1\r\nBad Header Name: x\r\n\r\n", "malformed"),
    ];
    for (request, expected) in cases {
        let mut client = server.connect();
        client.send_raw(request.as_bytes());
        let response = client
            .try_read_response()
            .unwrap_or_else(|| panic!("no response to {request:?}"));
        assert_eq!(response.status, 400, "{request:?}: {}", response.text());
        assert!(
            response.error().contains(expected),
            "{request:?}: {}",
            response.text()
        );
        assert_eq!(response.header("connection"), Some("close"));
        assert!(client.closed_within(Duration::from_secs(5)), "{request:?}");
    }
    assert_still_serving(&mut server);
}

#[test]
fn a_body_cut_short_gets_a_400() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(b"POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"vid");
    client
        .stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let response = client.read_response();
    assert_eq!(response.status, 400);
    assert!(
        response.error().contains("before the whole request"),
        "{}",
        response.text()
    );
}

#[test]
fn a_chunked_body_is_never_parsed_as_the_next_request() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    // The "body" is a complete GET; a server that ignored Transfer-Encoding would answer it.
    client.send_raw(
        b"POST /video/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nGET /video/12345 HTTP/1.1\r\n\r\n",
    );
    assert_eq!(client.read_response().status, 400);
    assert!(
        client.try_read_response().is_none(),
        "a second response was sent"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let mut batch = String::new();
    for i in 0..20 {
        match i % 4 {
            0 => batch.push_str("GET /video/12345 HTTP/1.1\r\nHost: t\r\n\r\n"),
            1 => batch.push_str(&format!(
                "POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CONTRACT_BODY}",
                CONTRACT_BODY.len()
            )),
            2 => batch.push_str("GET /video/404 HTTP/1.1\r\nHost: t\r\n\r\n"),
            _ => batch.push_str("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"),
        }
    }
    client.send_raw(batch.as_bytes());
    for i in 0..20 {
        let response = client.read_response();
        let expected = [200, 200, 404, 200][i % 4];
        assert_eq!(response.status, expected, "response {i}");
        match i % 4 {
            0 => assert_eq!(response.text(), SEED_VIDEO),
            1 => assert_eq!(response.json()["videoId"], "12345"),
            3 => assert_eq!(response.json()["status"], "ok"),
            _ => {}
        }
    }
}

#[test]
fn a_request_split_across_many_writes_is_assembled() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let request = format!(
        "POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CONTRACT_BODY}",
        CONTRACT_BODY.len()
    );
    for chunk in request.as_bytes().chunks(7) {
        client.send_raw(chunk);
        std::thread::sleep(Duration::from_millis(1));
    }
    let response = client.read_response();
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn connection_close_and_http_1_0_are_honoured() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(b"GET /video/12345 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed_within(Duration::from_secs(5)));

    let mut client = server.connect();
    client.send_raw(b"GET /video/12345 HTTP/1.0\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
    assert!(client.closed_within(Duration::from_secs(5)));

    let mut client = server.connect();
    client.send_raw(b"GET /video/12345 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.header("connection"), Some("keep-alive"));
    client.send_raw(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send_raw(
        format!(
            "POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            CONTRACT_BODY.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.read_response().status, 100);
    client.send_raw(CONTRACT_BODY.as_bytes());
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout-ms", "300"]);
    let mut client = server.connect();
    client.send_request("GET", "/healthz", &[], None);
    assert_eq!(client.read_response().status, 200);
    let started = Instant::now();
    assert!(client.closed_within(Duration::from_secs(5)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "closed too early: {waited:?}"
    );
}

#[test]
fn slow_headers_get_408() {
    let mut server = Server::start(&["--request-timeout-ms", "300"]);
    let mut client = server.connect();
    client.send_raw(b"GET /video/12345 HTTP/1.1\r\nHost: t\r\n");
    // Keep trickling header bytes: the timeout counts from the first byte, not per read.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        client.send_raw(b"X-Slow: 1\r\n");
    }
    let response = client.read_response();
    assert_eq!(response.status, 408);
    assert!(client.closed_within(Duration::from_secs(5)));
    assert_still_serving(&mut server);
}

#[test]
fn ten_thousand_levels_of_nesting_are_a_400_not_a_crash() {
    let mut server = Server::start(&[]);
    let deep = |open: &str, close: &str| open.repeat(10_000) + &close.repeat(10_000);
    let bodies = [
        deep("[", "]"),
        deep("{\"video\":", "}"),
        format!(r#"{{"video":{}}}"#, deep("[", "]")),
        format!(
            r#"{{"video":{{"videoId":"1","title":"t","sources":{}}}}}"#,
            deep("[", "]")
        ),
        format!(
            r#"{{"video":{{"videoId":"1","title":"t","sources":[{{"src":"/a","type":"v","size":{}}}]}}}}"#,
            deep("{\"a\":", "}")
        ),
    ];
    for body in &bodies {
        let response = server.post_token(body);
        assert_eq!(response.status, 400, "{}", response.text());
        assert!(!response.error().is_empty());
    }
    assert_still_serving(&mut server);
}

#[test]
fn random_garbage_never_crashes_the_server() {
    let mut server = Server::start(&[]);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..50 {
        let length = (seed % 600) as usize + 1;
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let mut client = server.connect();
        client.send_raw(&bytes);
        let _ = client.stream.shutdown(std::net::Shutdown::Write);
        if let Some(response) = client.try_read_response() {
            assert!(response.status < 500, "garbage got {}", response.status);
        }
    }
    assert_still_serving(&mut server);
}

#[test]
fn many_concurrent_keep_alive_clients() {
    let server = Server::start(&[]);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                let mut client: Client = server.connect();
                for _ in 0..50 {
                    client.send_request("GET", "/video/12345", &[], None);
                    assert_eq!(client.read_response().status, 200);
                }
            });
        }
    });
}

#[test]
fn host_is_required_once_and_absolute_form_targets_are_served() {
    let mut server = Server::start(&[]);
    for (request, expected) in [
        ("GET /video/12345 HTTP/1.1\r\n\r\n", "needs a Host header"),
        (
            "GET /video/12345 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "more than one Host",
        ),
    ] {
        let mut client = server.connect();
        client.send_raw(request.as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 400, "{request:?}");
        assert!(
            response.error().contains(expected),
            "{request:?}: {}",
            response.text()
        );
    }
    // RFC 9112 §3.2.2: a server must accept the absolute form (proxies send it).
    let mut client = server.connect();
    client.send_raw(
        b"GET http://video.example.com/video/12345 HTTP/1.1\r\nHost: video.example.com\r\n\r\n",
    );
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), SEED_VIDEO);
    // HTTP/1.0 never required Host.
    let mut old = server.connect();
    old.send_raw(b"GET /video/12345 HTTP/1.0\r\n\r\n");
    assert_eq!(old.read_response().status, 200);
    assert_still_serving(&mut server);
}

#[test]
fn every_response_is_counted_once_whichever_worker_answers() {
    // Two workers (the test servers' default), clients on eight connections at once, each
    // pipelining: the request metrics are kept per worker thread and summed on /metrics,
    // and a count lost or doubled between the shards shows here.
    const CLIENTS: usize = 8;
    const BATCHES: usize = 100;
    const DEPTH: usize = 16;
    let server = Server::start(&[]);
    let batch = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n".repeat(DEPTH);
    std::thread::scope(|scope| {
        for _ in 0..CLIENTS {
            let mut client = server.connect();
            let batch = batch.as_bytes();
            scope.spawn(move || {
                for _ in 0..BATCHES {
                    client.send_raw(batch);
                    for _ in 0..DEPTH {
                        assert_eq!(client.read_response().status, 200);
                    }
                }
            });
        }
    });
    let sent = (CLIENTS * BATCHES * DEPTH) as f64;
    assert_eq!(
        server.metric(r#"http_requests_total{route="plaintext",status="200"}"#),
        sent
    );
    assert_eq!(
        server.metric(r#"http_request_duration_seconds_count{route="plaintext"}"#),
        sent
    );
}
