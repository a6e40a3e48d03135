//! Conditional requests (RFC 9110 §13): does an `If-None-Match` request already hold the
//! representation we would send?
//!
//! A cache or browser that stored a response with an `ETag` revalidates it by sending the
//! tag back in `If-None-Match`; when it still matches, the answer is a `304 Not Modified`
//! without a body. `If-None-Match` uses the weak comparison (a `W/` prefix is ignored), may
//! list several tags, may be split over several header lines, and `*` matches any current
//! representation. The check is a scan of the header bytes: nothing is allocated.

use super::Request;

/// Whether the request's `If-None-Match` matches `etag` (a quoted entity tag, e.g.
/// `"a1b2"`, strong or weak). False when the request has no `If-None-Match`.
pub fn none_match(request: &Request<'_>, etag: &str) -> bool {
    let ours = opaque_tag(etag.as_bytes());
    request
        .headers_named("if-none-match")
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|candidate| candidate == b"*" || opaque_tag(candidate) == ours)
}

/// The quoted part of an entity tag, without any `W/` (weak comparison).
fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(values: &[&str], etag: &str) -> bool {
        let headers: Vec<httparse::Header<'_>> = values
            .iter()
            .map(|value| httparse::Header {
                name: "If-None-Match",
                value: value.as_bytes(),
            })
            .collect();
        let request = Request {
            method: "GET",
            target: "/video/1",
            minor_version: 1,
            headers: &headers,
            body: b"",
            peer: ([127, 0, 0, 1], 9).into(),
        };
        none_match(&request, etag)
    }

    #[test]
    fn rfc_9110_if_none_match() {
        assert!(matches(&["\"abc\""], "\"abc\""));
        assert!(matches(&["W/\"abc\""], "\"abc\""), "weak comparison");
        assert!(matches(&["\"abc\""], "W/\"abc\""));
        assert!(matches(&["\"x\", \"abc\" ,\"y\""], "\"abc\""), "a list");
        assert!(
            matches(&["\"x\"", "\"abc\""], "\"abc\""),
            "several header lines"
        );
        assert!(matches(&["*"], "\"abc\""));
        assert!(!matches(&["\"abd\""], "\"abc\""));
        assert!(
            !matches(&["abc"], "\"abc\""),
            "unquoted is not the same tag"
        );
        assert!(!matches(&[], "\"abc\""));
        assert!(!matches(&[""], "\"abc\""));
    }
}
