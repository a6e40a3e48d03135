//! The contract (docs/api.md: the two routes of the old service, its tokens and test
//! vectors), checked over HTTP against the real binary.

mod common;

use common::{Server, CONTRACT_BODY, DEFAULT_CDN_VECTORS, SEED_SRC_1080, SEED_SRC_720, SEED_VIDEO};

fn assert_cors(response: &common::HttpResponse) {
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(response.header("access-control-allow-headers"), Some("*"));
}

#[test]
fn get_video_returns_the_seeded_document() {
    let server = Server::start(&[]);
    let response = server.get("/video/12345");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_cors(&response);
    assert_eq!(response.text(), SEED_VIDEO);
}

#[test]
fn unknown_video_is_404_with_a_json_message() {
    let server = Server::start(&[]);
    let response = server.get("/video/99999");
    assert_eq!(response.status, 404);
    assert_cors(&response);
    assert!(response.error().contains("99999"), "{}", response.text());
}

#[test]
fn token_requests_follow_the_vectors_round_robin() {
    let server = Server::start(&[]);
    // Six consecutive requests visit the three CDNs twice, in configured order.
    for round in 0..6 {
        let response = server.post_token(CONTRACT_BODY);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_cors(&response);
        let (address, hd, sd) = DEFAULT_CDN_VECTORS[round % 3];
        let video = response.json();
        assert_eq!(video["_id"], "6213a7299fa2604f1b188ee0");
        assert_eq!(video["videoId"], "12345");
        assert_eq!(video["title"], "Big Buck Bunny");
        assert_eq!(
            video["sources"][0]["src"],
            format!("{address}{SEED_SRC_1080}?token={hd}")
        );
        assert_eq!(video["sources"][0]["size"], 1080);
        assert_eq!(video["sources"][0]["type"], "video/mp4");
        assert_eq!(
            video["sources"][1]["src"],
            format!("{address}{SEED_SRC_720}?token={sd}")
        );
        assert!(video.get("video").is_none(), "the video is not wrapped");
    }
}

#[test]
fn round_robin_spreads_exactly_over_concurrent_clients() {
    let server = Server::start(&[]);
    let addresses: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = server.connect();
                    (0..30)
                        .map(|_| {
                            client.send_request(
                                "POST",
                                "/video/token",
                                &[("Content-Type", "application/json")],
                                Some(CONTRACT_BODY),
                            );
                            let video = client.read_response().json();
                            let src = video["sources"][0]["src"].as_str().expect("src").to_owned();
                            src.split(SEED_SRC_1080).next().expect("address").to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("client thread"))
            .collect()
    });
    for (address, _, _) in DEFAULT_CDN_VECTORS {
        let count = addresses.iter().filter(|a| *a == address).count();
        assert_eq!(count, 40, "{address}");
    }
}

#[test]
fn configured_cdns_with_md5_and_sha256() {
    // The contract's example key, U5e0IskwtIfA, on http://www.cdn.com: md5 then sha256.
    let server = Server::start(&["--cdns", &common::fixture("cdns-md5-sha256.json")]);
    let body = r#"{"video":{"videoId":"1","title":"t","sources":[{"src":"/big_buck_bunny.mp4","size":1,"type":"video/mp4"}]}}"#;
    let md5 = server.post_token(body).json();
    assert_eq!(
        md5["sources"][0]["src"],
        "http://www.cdn.com/big_buck_bunny.mp4?token=666906502bbc3550b95d561fa14af3ae"
    );
    let sha = server.post_token(body).json();
    assert_eq!(
        sha["sources"][0]["src"],
        "http://www.cdn.com/big_buck_bunny.mp4?token=31817cbe296a7a575348047df3f9d3d29a17f268668858a67a9f5994c2c7661f"
    );
    assert!(!server.log().contains("U5e0IskwtIfA"), "a key was logged");
}

#[test]
fn every_validation_rule_is_a_400_naming_the_field() {
    let server = Server::start(&[]);
    let video = |inner: &str| format!(r#"{{"video":{{{inner}}}}}"#);
    let base = r#""videoId":"1","title":"t","sources":[]"#;
    let source = |fields: &str| {
        video(&format!(
            r#""videoId":"1","title":"t","sources":[{{{fields}}}]"#
        ))
    };
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "request body is empty"),
        ("not json".into(), "not valid JSON"),
        ("[1,2]".into(), "request body must be a JSON object"),
        ("{}".into(), "video is required"),
        (
            format!(r#"{{"video":{{{base}}},"other":1}}"#),
            "unexpected key \"other\"",
        ),
        (
            video(r#""title":"t","sources":[]"#),
            "video.videoId is required",
        ),
        (
            video(r#""videoId":" ","title":"t","sources":[]"#),
            "video.videoId must not be empty",
        ),
        (
            video(r#""videoId":"1","sources":[]"#),
            "video.title is required",
        ),
        (
            video(r#""videoId":"1","title":"  ","sources":[]"#),
            "video.title must not be empty",
        ),
        (
            video(r#""videoId":"1","title":"t""#),
            "video.sources is required",
        ),
        (
            video(r#""videoId":"1","title":"t","sources":"x""#),
            "video.sources must be an array",
        ),
        (
            video(&format!(r#""_id":"123",{base}"#)),
            "video._id must be a string of 24 hex digits",
        ),
        (
            video(&format!(r#"{base},"extra":true"#)),
            "video.extra is not allowed",
        ),
        (
            source(r#""size":1,"type":"v""#),
            "video.sources[0].src is required",
        ),
        (
            source(r#""src":"","size":1,"type":"v""#),
            "video.sources[0].src must not be empty",
        ),
        (
            source(r#""src":"/a","type":"v""#),
            "video.sources[0].size is required",
        ),
        (
            source(r#""src":"/a","size":"1080","type":"v""#),
            "video.sources[0].size must be an integer",
        ),
        (
            source(r#""src":"/a","size":1.5,"type":"v""#),
            "video.sources[0].size must be an integer",
        ),
        (
            source(r#""src":"/a","size":1"#),
            "video.sources[0].type is required",
        ),
        (
            source(r#""src":"/a","size":1,"type":"""#),
            "video.sources[0].type must not be empty",
        ),
        (
            source(r#""src":"/a","size":1,"type":"v","bitrate":5"#),
            "video.sources[0].bitrate is not allowed",
        ),
    ];
    for (body, expected) in cases {
        let response = server.post_token(&body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_cors(&response);
        let message = response.error();
        assert!(
            message.contains(expected),
            "{body}\n got: {message}\n want: {expected}"
        );
    }
}

#[test]
fn non_json_content_type_is_415() {
    let server = Server::start(&[]);
    let response = server.request_with(
        "POST",
        "/video/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(CONTRACT_BODY),
    );
    assert_eq!(response.status, 415);
    assert!(response.error().contains("application/json"));
}

#[test]
fn preflight_wrong_method_and_unknown_route() {
    let server = Server::start(&[]);
    for path in ["/video/token", "/video/12345"] {
        let response = server.request("OPTIONS", path, None);
        assert_eq!(response.status, 204, "{path}");
        assert_cors(&response);
        let methods = response
            .header("access-control-allow-methods")
            .expect("allow-methods");
        assert!(methods.contains("OPTIONS"), "{methods}");
        assert!(response.body.is_empty());
    }
    let response = server.request("DELETE", "/video/12345", None);
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert!(response.error().contains("DELETE"));
    let response = server.request("PUT", "/video/token", Some("{}"));
    assert_eq!(response.status, 405);
    assert!(response.header("allow").expect("allow").contains("POST"));
    let response = server.get("/nothing/here");
    assert_eq!(response.status, 404);
    assert_cors(&response);
    assert!(response.error().contains("/nothing/here"));
}

#[test]
fn health_and_head_requests() {
    let server = Server::start(&[]);
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let mut client = server.connect();
    client.send_request("HEAD", "/video/12345", &[], None);
    let head = client.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SEED_VIDEO.len().to_string().as_str())
    );
    // No body followed: the next response on the same connection parses cleanly.
    client.send_request("GET", "/healthz", &[], None);
    assert_eq!(client.read_response().json()["status"], "ok");
}

#[test]
fn trailing_slash_query_string_and_percent_encoding_reach_the_video() {
    let server = Server::start(&[]);
    for path in ["/video/12345/", "/video/12345?autoplay=1", "/video/1234%35"] {
        let response = server.get(path);
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.text(), SEED_VIDEO);
    }
}

/// The cells of the rows of the first Markdown table after `heading` in docs/api.md.
fn api_reference_table(heading: &str) -> Vec<Vec<String>> {
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("read docs/api.md");
    let (_, section) = reference
        .split_once(heading)
        .unwrap_or_else(|| panic!("docs/api.md has no {heading:?}"));
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|row| {
            row.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_api_reference_states_the_vectors_the_token_code_computes() {
    let vectors = api_reference_table("### Test vectors");
    assert!(vectors.len() >= 5, "{vectors:?}");
    for row in &vectors {
        let [input, hash, token] = row.as_slice() else {
            panic!("a vector row has three cells: {row:?}");
        };
        let (src, key) = input.split_once("?secret=").expect("src?secret=key");
        let hash = match hash.as_str() {
            "MD5" => video_server::token::ContractHash::Md5,
            "SHA-256" => video_server::token::ContractHash::Sha256,
            other => panic!("unknown hash {other}"),
        };
        let mut computed = Vec::new();
        video_server::token::write_token(&mut computed, hash, src, key);
        assert_eq!(String::from_utf8_lossy(&computed), *token, "{input}");
    }
    // The default CDNs' table is the one this suite checks the server against.
    let default_cdns = api_reference_table("the seeded video's two sources sign to:");
    let documented: Vec<(&str, &str)> = default_cdns
        .iter()
        .map(|row| (row[1].as_str(), row[2].as_str()))
        .collect();
    let tested: Vec<(&str, &str)> = DEFAULT_CDN_VECTORS
        .iter()
        .map(|&(_, hd, sd)| (hd, sd))
        .collect();
    assert_eq!(documented, tested);
}
