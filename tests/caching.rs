//! Caching headers, conditional requests and CORS, as caches and browsers read them: every
//! play must reach the server even behind a CDN. Checked by our own assertions, by REDbot
//! (the HTTP linter from the author of the caching RFC) and by a real caching proxy
//! (Debian's nginx with `proxy_cache` and a one-day default, as a CDN is configured).

mod common;

use common::nginx::{Nginx, NginxSite};
use common::{external_tool, Server, CONTRACT_BODY};

#[test]
fn every_route_says_how_caches_may_keep_it() {
    let server = Server::start(&[]);
    let cases = [
        (server.get("/video/12345"), "private, no-cache"),
        (server.get("/video/12345/views"), "no-cache"),
        (server.post_token(CONTRACT_BODY), "no-store"),
        (server.get("/healthz"), "no-store"),
        (server.get("/metrics"), "no-store"),
        (server.get("/plaintext"), "no-store"),
        // Errors, the router's and the HTTP layer's alike, are never stored.
        (server.get("/video/nope"), "no-store"),
        (server.get("/nowhere"), "no-store"),
        (server.request("DELETE", "/video/12345", None), "no-store"),
        (server.post_token("{"), "no-store"),
    ];
    for (index, (response, expected)) in cases.iter().enumerate() {
        assert_eq!(
            response.header("cache-control"),
            Some(*expected),
            "case {index}: {} {}",
            response.status,
            response.text()
        );
    }
    let mut client = server.connect();
    client.send_raw(b"POST /video/token HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n");
    let framing = client.read_response();
    assert_eq!(framing.status, 400);
    assert_eq!(framing.header("cache-control"), Some("no-store"));
    // The contract's headers stay exactly as they were.
    let video = server.get("/video/12345");
    assert_eq!(video.header("access-control-allow-origin"), Some("*"));
    assert_eq!(video.header("access-control-allow-headers"), Some("*"));
    assert_eq!(video.header("vary"), None);
    assert_eq!(video.text(), common::SEED_VIDEO);
}

#[test]
fn a_revalidated_play_is_a_304_and_still_counts_as_a_view() {
    let server = Server::start(&[]);
    let first = server.get("/video/12345");
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18,
        "{etag}"
    );
    // The tag belongs to the document: the same on every response and after a restart.
    assert_eq!(
        server.get("/video/12345").header("etag"),
        Some(etag.as_str())
    );

    let weak = format!("W/{etag}");
    let listed = format!("\"other\", {etag}");
    for matching in [etag.as_str(), &weak, &listed, "*"] {
        let revalidated = server.get_with("/video/12345", &[("If-None-Match", matching)]);
        assert_eq!(revalidated.status, 304, "{matching}");
        assert!(revalidated.body.is_empty());
        assert_eq!(revalidated.header("content-length"), None);
        assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
        assert_eq!(
            revalidated.header("cache-control"),
            Some("private, no-cache")
        );
    }
    let changed = server.get_with("/video/12345", &[("If-None-Match", "\"stale\"")]);
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), common::SEED_VIDEO);

    let mut client = server.connect();
    client.send_request("HEAD", "/video/12345", &[("If-None-Match", &etag)], None);
    assert_eq!(client.read_head_response().status, 304);
    // 2 plain GETs, 4 revalidations answered 304, 1 changed: 7 plays. HEAD is not a play.
    assert_eq!(server.wait_for_views("12345", 7), 7);
}

#[test]
fn counts_revalidate_until_a_view_changes_them() {
    let server = Server::start(&[]);
    // The tag is the count and the UTC day ("today" in the answer resets at midnight).
    let today = video_server::store::utc_day(video_server::store::epoch_millis());
    let (none, one) = (format!("\"v0d{today}\""), format!("\"v1d{today}\""));
    let count = server.get("/video/12345/views");
    assert_eq!(count.header("etag"), Some(none.as_str()));
    let same = server.get_with("/video/12345/views", &[("If-None-Match", &none)]);
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    server.get("/video/12345");
    server.wait_for_views("12345", 1);
    let moved = server.get_with("/video/12345/views", &[("If-None-Match", &none)]);
    assert_eq!(moved.status, 200);
    assert_eq!(moved.header("etag"), Some(one.as_str()));
    assert_eq!(moved.json()["views"], 1);
}

#[test]
fn listed_cors_origins_get_their_own_name_and_vary() {
    let server = Server::start(&[
        "--cors-origins",
        "https://app.example.com,http://localhost:8080",
    ]);
    let allowed = server.get_with("/video/12345", &[("Origin", "https://app.example.com")]);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    let other = server.get_with("/video/12345", &[("Origin", "https://evil.example")]);
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("vary"), Some("Origin"));
    let none = server.get("/video/12345");
    assert_eq!(none.header("access-control-allow-origin"), None);

    let mut client = server.connect();
    client.send_request(
        "OPTIONS",
        "/video/token",
        &[
            ("Origin", "http://localhost:8080"),
            ("Access-Control-Request-Method", "POST"),
        ],
        None,
    );
    let preflight = client.read_response();
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://localhost:8080")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("86400"));
    assert_eq!(preflight.header("vary"), Some("Origin"));

    // The default is the contract's: any origin, no Vary.
    let open = Server::start(&[]);
    let any = open.get_with("/video/12345", &[("Origin", "https://evil.example")]);
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    assert_eq!(any.header("vary"), None);
}

/// REDbot's notes for one URL (its text report).
fn redbot(binary: &std::path::Path, url: &str) -> String {
    let output = std::process::Command::new(binary)
        .arg(url)
        .output()
        .expect("run redbot");
    assert!(
        output.status.success(),
        "redbot {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn redbot_finds_plays_revalidated_and_private_routes_unstorable() {
    let Some(binary) = external_tool("redbot") else {
        return;
    };
    let server = Server::start(&[]);
    let base = format!("http://{}", server.addr);
    let play = redbot(&binary, &format!("{base}/video/12345"));
    for expected in [
        "This response allows only private caches to store it.",
        "This response cannot be served from cache without validation.",
        // REDbot sends the ETag back and checks for a 304.
        "If-None-Match conditional requests are supported.",
        "The Content-Length header is correct.",
    ] {
        assert!(
            play.contains(expected),
            "/video/12345 lacks {expected:?}:\n{play}"
        );
    }
    let count = redbot(&binary, &format!("{base}/video/12345/views"));
    for expected in [
        "This response cannot be served from cache without validation.",
        "If-None-Match conditional requests are supported.",
    ] {
        assert!(
            count.contains(expected),
            "views lacks {expected:?}:\n{count}"
        );
    }
    for path in ["/healthz", "/metrics", "/plaintext", "/video/nope"] {
        let report = redbot(&binary, &format!("{base}{path}"));
        assert!(
            report.contains("t be stored by caches."),
            "{path}:\n{report}"
        );
        assert!(
            !report.contains("allows all caches to store it"),
            "{path}:\n{report}"
        );
    }
    // A play must reach us: no shared cache may keep it. A count may be kept, revalidated.
    assert!(!play.contains("allows all caches to store it"), "{play}");
    for report in [&play, &count] {
        assert!(!report.contains("assign their own freshness"), "{report}");
    }
}

#[test]
fn a_caching_proxy_in_front_records_every_play() {
    let Some(binary) = external_tool("nginx") else {
        return;
    };
    let server = Server::start(&[]);
    // A CDN's usual setup: cache what the origin lets it, for a day by default.
    let locations = format!(
        r#"
        location / {{
            proxy_pass http://{};
            proxy_cache edge;
            proxy_cache_valid 200 1d;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}"#,
        server.addr
    );
    let cdn = Nginx::start(
        &binary,
        &NginxSite {
            files: &[],
            http: "proxy_cache_path {prefix}/cache keys_zone=edge:1m max_size=10m inactive=1d;",
            locations: &locations,
        },
    );
    let from = std::net::IpAddr::from([127, 0, 0, 1]);
    for _ in 0..100 {
        let (status, body) = cdn.fetch(&format!("{}/video/12345", cdn.base()), from);
        assert_eq!((status, body.as_str()), (200, common::SEED_VIDEO));
    }
    assert_eq!(server.wait_for_views("12345", 100), 100);
    // The count through the proxy is current too.
    let (status, body) = cdn.fetch(&format!("{}/video/12345/views", cdn.base()), from);
    assert_eq!(status, 200);
    assert!(body.contains("\"views\":100"), "{body}");
}
