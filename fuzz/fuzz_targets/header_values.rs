//! Everything parsed from a header value or a flag: `Authorization`, `If-None-Match`,
//! `Origin` against a list, `--cors-origins`, `--rate-limit`, `--trusted-proxies`, and the
//! media type that decides a folder token. The first byte picks which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::cors::CorsOrigins;
use video_server::http::conditional::none_match;
use video_server::http::Request;
use video_server::limiter::RateLimit;
use video_server::token::{is_streaming_manifest, ApiKeys, Grant};

fuzz_target!(|data: &[u8]| {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(value);
    match which % 7 {
        0 => {
            let keys = ApiKeys::parse("the-one-key", "fuzz").expect("a key");
            let _ = keys.check(Some(value));
        }
        1 => {
            let header = [httparse::Header {
                name: "If-None-Match",
                value,
            }];
            let request = Request {
                method: "GET",
                target: "/",
                minor_version: 1,
                headers: &header,
                body: b"",
                peer: ([127, 0, 0, 1], 9).into(),
            };
            let _ = none_match(&request, "\"abc\"");
        }
        2 => {
            let listed =
                CorsOrigins::parse("https://a.example,http://b.example:8080").expect("list");
            if let Some(origin) = listed.allowed_origin(Some(value)) {
                assert!(origin.as_bytes().eq_ignore_ascii_case(value.trim_ascii()));
            }
        }
        3 => {
            let _ = CorsOrigins::parse(&text);
        }
        4 => {
            if let Ok(limit) = RateLimit::parse(&text) {
                assert!(limit.per_second > 0.0 && limit.burst >= 1.0);
            }
        }
        5 => {
            let _ = video_server::api::parse_trusted_proxies(&text);
        }
        _ => {
            let grant = Grant::new(&text, &text, 0, 60, None);
            assert!(grant.path.len() <= text.len());
            if let Some(folder) = grant.folder {
                assert!(folder.ends_with('/') && is_streaming_manifest(&text));
            }
        }
    }
});
