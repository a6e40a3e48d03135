//! The connection coroutine's stack and the workers' hot stacks are big enough, with a
//! measured margin.
//!
//! The server runs with a stack of an odd number of machine words (`--stack-bytes`), which
//! makes the `may` runtime fill each stack with a pattern and print, as each coroutine
//! ends, how much of it was touched (`coroutine name = …, stack size = W, used size = U`,
//! in words). Every request path that could run deepest is driven on a connection of its
//! own that then closes: the largest accepted body, the deepest refused nesting, every
//! error the HTTP layer and the API produce, the ScyllaDB store. An
//! overflow would end the server process, not this test: each step checks it is still
//! running, so an overflow fails the test with the step that caused it.
//!
//! Requests are answered on each worker's hot stack (src/http/hot_stack.rs), which
//! reports each use in the same format when tracking is on; the coroutine's own stack then
//! holds the connection loop and its wait for the socket. Both have the default size
//! (`--stack-bytes`, 64 KiB), which must be at least [`MARGIN`] times the deepest use
//! of each measured here. Without a hot stack (`--no-hot-stack`, or a worker whose hot
//! stack could not be mapped) requests are answered in place, on the coroutine's stack,
//! which must then hold the whole path with the same margin: measured in a run of its
//! own. Each path's use is printed (`--nocapture`).

mod common;

use std::time::Duration;

use common::{Client, Server, CONTRACT_BODY, SEED_VIDEO};

/// 8,193 words: 64 KiB and one word, an odd count that turns on the runtime's tracking.
const TRACKED_STACK_BYTES: &str = "65544";
/// The default `--stack-bytes`.
const DEFAULT_STACK_BYTES: usize = 64 * 1024;
/// How many times the deepest path the default stack must hold. Measured on the build
/// under test: a debug build (what `cargo test` runs) uses about three times the stack
/// of the release build, so the release binary's real margin is far larger (README,
/// "Memory"); `VIDEO_SERVER_TEST_BINARY=target/release/video-server` measures it.
const MARGIN: usize = 2;

/// One request on a connection of its own, closed after the answer: its coroutine ends
/// and reports its stack. Returns the status (0 when the server closed without one).
fn drive(server: &mut Server, what: &str, raw: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(server.addr).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // A refused request may be answered before all of it is sent.
    let _ = socket.write_all(raw);
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    drop(socket);
    assert!(
        server.is_running(),
        "the server died on {what}: a stack overflow?\n{}",
        server.log()
    );
    // "HTTP/1.1 200 …": the status, or 0 when the server closed without an answer.
    std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|status| status.parse().ok())
        .unwrap_or(0)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

fn post_json(path: &str, body: &str) -> Vec<u8> {
    request("POST", path, &[("Content-Type", "application/json")], body)
}

/// The largest token request the default body limit (1 MiB) accepts: the seed video with
/// as many sources as fit.
fn largest_token_body() -> String {
    let video: serde_json::Value = serde_json::from_str(SEED_VIDEO).expect("seed JSON");
    let source = video["sources"][0].clone();
    let one = serde_json::to_string(&source).expect("source JSON").len() + 1;
    let count = (1 << 20) / one - 16;
    let mut big = video;
    big["sources"] = serde_json::Value::Array(vec![source; count]);
    let body = serde_json::json!({ "video": big }).to_string();
    assert!(body.len() <= 1 << 20, "{} bytes", body.len());
    body
}

/// Every path worth measuring, with a name for the failure message.
fn deep_paths() -> Vec<(String, Vec<u8>)> {
    let deep = |open: &str, close: &str| open.repeat(10_000) + &close.repeat(10_000);
    let mut paths: Vec<(String, Vec<u8>)> = vec![
        (
            "the largest accepted token body".into(),
            post_json("/video/token", &largest_token_body()),
        ),
        (
            "the contract's token request".into(),
            post_json("/video/token", CONTRACT_BODY),
        ),
        (
            "a video, with its view".into(),
            request("GET", "/video/12345", &[], ""),
        ),
        (
            "a conditional video request".into(),
            request(
                "GET",
                "/video/12345",
                &[
                    ("If-None-Match", "\"x\""),
                    ("X-Forwarded-For", "203.0.113.9"),
                ],
                "",
            ),
        ),
        ("a HEAD".into(), request("HEAD", "/video/12345", &[], "")),
        (
            "a view count".into(),
            request("GET", "/video/12345/views", &[], ""),
        ),
        (
            "the top videos".into(),
            request("GET", "/videos/top?days=7&limit=100", &[], ""),
        ),
        (
            "the catalog".into(),
            request("GET", "/videos?limit=100", &[], ""),
        ),
        ("the metrics".into(), request("GET", "/metrics", &[], "")),
        (
            "the health check".into(),
            request("GET", "/healthz", &[], ""),
        ),
        (
            "the page".into(),
            request("GET", "/", &[("Accept-Encoding", "gzip")], ""),
        ),
        (
            "the OpenAPI document".into(),
            request("GET", "/openapi.json", &[], ""),
        ),
        (
            "a CORS preflight".into(),
            request(
                "OPTIONS",
                "/video/token",
                &[
                    ("Origin", "https://example.com"),
                    ("Access-Control-Request-Method", "POST"),
                ],
                "",
            ),
        ),
        (
            "a missing video".into(),
            request("GET", "/video/nope", &[], ""),
        ),
        (
            "a wrong method".into(),
            request("DELETE", "/video/token", &[], ""),
        ),
        (
            "a wrong content type".into(),
            request(
                "POST",
                "/video/token",
                &[("Content-Type", "text/plain")],
                CONTRACT_BODY,
            ),
        ),
        (
            "invalid JSON".into(),
            post_json("/video/token", "{\"video\":"),
        ),
        (
            "a payload missing fields".into(),
            post_json("/video/token", r#"{"video":{"videoId":"1"}}"#),
        ),
        (
            "a body over the limit".into(),
            b"POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n".to_vec(),
        ),
        (
            "a head over the limit".into(),
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
                "a".repeat(20_000)
            )
            .into_bytes(),
        ),
        (
            "too many headers".into(),
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
                "X-A: b\r\n".repeat(200)
            )
            .into_bytes(),
        ),
        ("a malformed request line".into(), b"GET\r\n\r\n".to_vec()),
        (
            "a bad Content-Length".into(),
            b"POST /video/token HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "a chunked body".into(),
            b"POST /video/token HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "binary garbage".into(),
            (0..=255u8).cycle().take(4096).collect(),
        ),
    ];
    let nestings = [
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
    for (depth, body) in nestings.iter().enumerate() {
        paths.push((
            format!("refused nesting #{depth}"),
            post_json("/video/token", body),
        ));
    }
    paths
}

/// What a path used, in bytes: of the connection coroutine's own stack, and of the
/// worker's hot stack, where requests are answered (src/http/hot_stack.rs).
#[derive(Clone, Copy, Default)]
struct StackUse {
    coroutine: usize,
    hot: usize,
}

/// Where the server under test answers requests.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answering {
    /// On each worker's hot stack (the default).
    OnHotStack,
    /// On the connection's own coroutine stack (`--no-hot-stack`).
    InPlace,
}

/// Every stack report printed so far, in words, in order: each ended coroutine's (the
/// runtime's `… used size = U`) and each hot stack use's (`hot stack: … used size = U`),
/// flagged `true`.
fn reports(server: &Server) -> Vec<(bool, usize)> {
    server
        .stdout()
        .lines()
        .filter_map(|line| {
            let used = line.rsplit_once("used size = ")?.1.trim().parse().ok()?;
            Some((line.starts_with("hot stack:"), used))
        })
        .collect()
}

/// Waits for the coroutine of a connection just closed to report, and returns the deepest
/// use since the reports already `seen`. Hot stack uses are printed before the work
/// returns, so before the coroutine that ran it ends.
fn next_report(server: &Server, seen: &mut usize, what: &str) -> StackUse {
    let ended = |all: &[(bool, usize)]| all.iter().filter(|(hot, _)| !hot).count();
    let before = ended(&reports(server)[..*seen]);
    let all = common::poll_value(
        Duration::from_secs(10),
        || reports(server),
        |all| ended(all) > before,
    );
    assert!(
        ended(&all) > before,
        "no stack report after {what}: is the runtime's tracking on?\n{}",
        server.stdout()
    );
    let deepest = |hot: bool| {
        all[*seen..]
            .iter()
            .filter(|report| report.0 == hot)
            .map(|report| report.1 * std::mem::size_of::<usize>())
            .max()
            .unwrap_or(0)
    };
    let used = StackUse {
        coroutine: deepest(false),
        hot: deepest(true),
    };
    *seen = all.len();
    used
}

/// Drives every path; returns the deepest use of each stack, in bytes, and the paths.
fn deepest_use(server: &mut Server, answering: Answering) -> (StackUse, [String; 2]) {
    let mut seen = reports(server).len();
    let mut deepest = StackUse::default();
    let mut paths = [String::new(), String::new()];
    let mut note = |used: StackUse, what: &str| {
        if used.coroutine > deepest.coroutine {
            deepest.coroutine = used.coroutine;
            paths[0] = what.to_string();
        }
        if used.hot > deepest.hot {
            deepest.hot = used.hot;
            paths[1] = what.to_string();
        }
    };
    for (what, raw) in deep_paths() {
        let status = drive(server, &what, &raw);
        // The status shows the path went where it should (so this measured what it says).
        assert!(
            status >= 200 || what == "binary garbage",
            "{what}: status {status}"
        );
        let used = next_report(server, &mut seen, &what);
        eprintln!(
            "{:>6} + {:>6} bytes of stack (coroutine + hot): {what} ({status})",
            used.coroutine, used.hot
        );
        note(used, &what);
    }
    // A slow request: the request timeout's 408 path.
    let mut slow = Client::connect(server.addr);
    slow.send_raw(b"GET /video/12345 HTTP/1.1\r\nHost: t\r\n");
    let timed_out = slow.try_read_response().map(|response| response.status);
    assert_eq!(timed_out, Some(408), "the request timeout's answer");
    drop(slow);
    assert!(server.is_running(), "the server died on a request timeout");
    note(
        next_report(server, &mut seen, "a request timeout"),
        "a request timeout",
    );
    match answering {
        Answering::OnHotStack => assert!(
            deepest.hot > 0,
            "no hot stack use was reported: are requests answered on it?\n{}",
            server.stdout()
        ),
        Answering::InPlace => assert_eq!(
            deepest.hot, 0,
            "a hot stack was used although --no-hot-stack was given"
        ),
    }
    (deepest, paths)
}

/// Runs every path against a server started with `extra` and checks the margin.
fn check_margin(store: &str, answering: Answering, extra: &[&str]) {
    let mut args = vec![
        "--stack-bytes",
        TRACKED_STACK_BYTES,
        "--park-idle-ms",
        "0",
        "--request-timeout-ms",
        "300",
    ];
    if answering == Answering::InPlace {
        args.push("--no-hot-stack");
    }
    args.extend_from_slice(extra);
    let mut server = Server::start(&args);
    let (deepest, [coroutine_path, hot_path]) = deepest_use(&mut server, answering);
    let margin = |used: usize| DEFAULT_STACK_BYTES as f64 / used.max(1) as f64;
    let hot = match answering {
        Answering::OnHotStack => format!(
            "hot stack {} bytes ({:.1}x), by {hot_path}",
            deepest.hot,
            margin(deepest.hot)
        ),
        Answering::InPlace => "no hot stack".to_string(),
    };
    eprintln!(
        "deepest stack use ({store}, {answering:?}): coroutine {} bytes ({:.1}x), by \
         {coroutine_path}; {hot}; the default stack is {DEFAULT_STACK_BYTES} bytes",
        deepest.coroutine,
        margin(deepest.coroutine),
    );
    // Each stack has the default size and must hold its own deepest use with the margin.
    for (stack, used, path) in [
        ("coroutine", deepest.coroutine, &coroutine_path),
        ("hot", deepest.hot, &hot_path),
    ] {
        assert!(
            used * MARGIN <= DEFAULT_STACK_BYTES,
            "{path} used {used} bytes of the {stack} stack: the default \
             {DEFAULT_STACK_BYTES} is less than {MARGIN}x that"
        );
    }
}

#[test]
fn the_default_stack_holds_the_deepest_request_path_with_a_margin() {
    check_margin(
        "embedded store",
        Answering::OnHotStack,
        &["--log-level", "debug"],
    );
}

#[test]
fn without_a_hot_stack_the_coroutine_stack_holds_the_whole_path_with_a_margin() {
    // What a worker whose hot stack could not be mapped does too: answer in place.
    check_margin(
        "embedded store",
        Answering::InPlace,
        &["--log-level", "debug"],
    );
}

#[test]
fn the_default_stack_holds_the_deepest_path_with_the_scylla_store() {
    // No cluster answers at this address: views go to the outbox, counts are served from
    // what the server holds, and the request paths are the ScyllaDB store's.
    check_margin(
        "ScyllaDB store",
        Answering::OnHotStack,
        &["--store", "scylla", "--scylla-nodes", "127.0.0.1:1"],
    );
}
