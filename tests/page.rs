//! The player page over HTTP: `GET /` is HTML whose policy forbids scripts from anywhere but
//! the server and lets media come from the configured CDNs (re-read on `SIGHUP`), and every
//! file the page loads, followed from its HTML and its module imports, is served with its
//! type and a validator. What the page does in a browser is `tests/browser/` (Chromium).

mod common;

use common::{write_cdns, Server};
use serde_json::json;

/// The `/assets/…` paths a text names in `href="…"`, `src="…"` or `from '…'`.
fn asset_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for opener in ["href=\"", "src=\"", "from '"] {
        let closer = &opener[opener.len() - 1..];
        for (at, _) in text.match_indices(opener) {
            let rest = &text[at + opener.len()..];
            let Some(end) = rest.find(closer) else {
                continue;
            };
            if rest[..end].starts_with("/assets/") {
                paths.push(rest[..end].to_owned());
            }
        }
    }
    paths
}

#[test]
fn the_page_is_html_whose_policy_allows_only_the_server_and_its_cdns() {
    let server = Server::start(&[]);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.starts_with("default-src 'self'; "), "{policy}");
    assert!(
        !policy.contains("script-src"),
        "scripts fall back to 'self': {policy}"
    );
    // The contract's three CDNs, where signed URLs point by default.
    let cdns = common::DEFAULT_CDN_VECTORS
        .map(|(address, _, _)| address)
        .join(" ");
    assert!(
        policy.contains(&format!(
            "media-src 'self' {cdns}; connect-src 'self' {cdns};"
        )),
        "{policy}"
    );
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains("<script>"), "no inline script");

    // Revalidation: the same page is a 304 without a body, with the policy still on it.
    let etag = page.header("etag").expect("an ETag").to_owned();
    let again = server.get_with("/", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert!(again.header("content-security-policy").is_some());

    // HEAD announces the page without sending it; another method is refused with Allow.
    let mut client = server.connect();
    client.send_request("HEAD", "/", &[], None);
    let head = client.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    let post = server.request("POST", "/", Some("x"));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn every_file_the_page_loads_is_served_with_its_type_and_a_validator() {
    let server = Server::start(&[]);
    let mut pending = asset_paths(&server.get("/").text());
    let mut served = Vec::new();
    while let Some(path) = pending.pop() {
        if served.contains(&path) {
            continue;
        }
        let response = server.get(&path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let expected = match path.rsplit_once('.').map(|(_, extension)| extension) {
            Some("css") => "text/css; charset=utf-8",
            Some("mjs") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("{path}: an asset of unexpected kind {other:?}"),
        };
        assert_eq!(response.header("content-type"), Some(expected), "{path}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        let etag = response.header("etag").expect("an ETag");
        let again = server.get_with(&path, &[("If-None-Match", etag)]);
        assert_eq!(again.status, 304, "{path}");
        pending.extend(asset_paths(&response.text()));
        served.push(path);
    }
    served.sort();
    assert_eq!(
        served,
        [
            "/assets/icon.svg",
            "/assets/logic.mjs",
            "/assets/page.css",
            "/assets/page.mjs"
        ]
    );

    let missing = server.get("/assets/nope.js");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error(), "no asset \"nope.js\"");
    assert_eq!(
        server.get("/assets/index.html").status,
        404,
        "the page is at /"
    );
    let counted = |route: &str| {
        server.metric(&format!(
            "http_requests_total{{route=\"{route}\",status=\"200\"}}"
        ))
    };
    assert_eq!(counted("page"), 1.0);
    assert_eq!(counted("page_asset"), served.len() as f64);
}

#[test]
fn the_policy_follows_the_cdn_file_across_a_reload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdn = |address: &str| json!({"name": "origin", "address": address, "scheme": "nginx", "key": "k"});
    let cdns = write_cdns(dir.path(), &[cdn("http://127.0.0.1:8081/videos")]);
    let server = Server::start(&["--cdns", cdns.to_str().expect("UTF-8 path")]);
    let policy = |server: &Server| {
        server
            .get("/")
            .header("content-security-policy")
            .expect("a CSP")
            .to_owned()
    };
    assert!(
        policy(&server).contains(
            "media-src 'self' http://127.0.0.1:8081; connect-src 'self' http://127.0.0.1:8081;"
        ),
        "{}",
        policy(&server)
    );
    write_cdns(dir.path(), &[cdn("https://media.example.com")]);
    server.send_signal("HUP");
    assert!(server.wait_for_log("reloaded the CDN and API key files", 1));
    let reloaded = policy(&server);
    assert!(
        reloaded.contains("media-src 'self' https://media.example.com;"),
        "{reloaded}"
    );
    assert!(!reloaded.contains("8081"), "{reloaded}");
}
