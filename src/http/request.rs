//! Parsing one request out of the connection's buffer, with every limit enforced.
//!
//! [`parse`] looks at the bytes received so far and answers one of three ways: the request
//! is complete (head parsed by `httparse`, body framed by `Content-Length`), more bytes are
//! needed (and how many, so the buffer can grow once to fit the body), or the request is
//! refused with the [`HttpError`] that says why. A refusal always maps to a status the
//! connection sends before closing: 400 for bad framing, 413 for a body over the limit,
//! 431 for a head over the limit, 400 for a `Transfer-Encoding` (only `Content-Length`
//! bodies are accepted, so a chunked body can never be mistaken for the next request).

use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// The most request headers accepted; browsers and proxies send twenty or thirty.
pub const MAX_HEADERS: usize = 100;

/// Size limits a request must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Why a request was refused before reaching the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request line and headers exceed {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than {MAX_HEADERS} request headers")]
    TooManyHeaders,
    #[error("request body of {length} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { length: u64, limit: usize },
    #[error("invalid Content-Length header")]
    InvalidContentLength,
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    #[error("Transfer-Encoding is not supported; send the body with a Content-Length")]
    UnsupportedTransferEncoding,
    #[error("Expect: {0} is not supported")]
    UnsupportedExpectation(String),
    #[error("request not received in time")]
    Timeout,
    #[error("the server is busy (request buffers are full); retry shortly")]
    Busy,
}

impl HttpError {
    /// The status the client is told.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_)
            | HttpError::InvalidContentLength
            | HttpError::ConflictingContentLength
            | HttpError::UnsupportedTransferEncoding => 400,
            HttpError::Timeout => 408,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedExpectation(_) => 417,
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders => 431,
            HttpError::Busy => 503,
        }
    }
}

/// A complete request, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: &'b str,
    /// The request target as sent: path plus optional `?query`.
    pub target: &'b str,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    pub headers: &'b [httparse::Header<'b>],
    pub body: &'b [u8],
    /// The TCP peer.
    pub peer: SocketAddr,
}

impl<'b> Request<'b> {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    }

    /// Every header with this name, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers
            .iter()
            .filter(move |header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value)
    }

    /// The path without the query string.
    pub fn path(&self) -> &'b str {
        // A byte search: `str::find` with a char pattern costs several times more on
        // targets this short, and this runs for every request.
        match self.target.bytes().position(|byte| byte == b'?') {
            Some(end) => &self.target[..end],
            None => self.target,
        }
    }
}

/// What the buffer holds so far.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// A whole request; `length` bytes of the buffer belong to it.
    Complete { request: Request<'b>, length: usize },
    /// The head is incomplete.
    NeedHead,
    /// The head is complete but the body is not: the request occupies `total` bytes.
    NeedBody {
        total: usize,
        expects_continue: bool,
    },
}

/// What the head says about the body, beyond httparse's fields.
struct Framing {
    body_length: usize,
    expects_continue: bool,
}

/// Whether the connection stays open after this request.
pub fn keeps_alive(request: &Request<'_>) -> bool {
    let (close, keep_alive) = connection_options(request.headers);
    if request.minor_version == 0 {
        keep_alive && !close
    } else {
        !close
    }
}

/// `Connection` header tokens: (close, keep-alive).
fn connection_options(headers: &[httparse::Header<'_>]) -> (bool, bool) {
    let mut close = false;
    let mut keep_alive = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    (close, keep_alive)
}

/// Room for a request's headers, left uninitialized: httparse fills only what it uses.
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh header slots (free: nothing is written until parsing).
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parses a request from `buffer` (which starts at a request boundary); the request's
/// headers live in `slots`.
pub fn parse<'b>(
    buffer: &'b [u8],
    slots: &'b mut HeaderSlots<'b>,
    peer: SocketAddr,
    limits: &Limits,
) -> Result<Parsed<'b>, HttpError> {
    let mut head = httparse::Request::new(&mut []);
    let head_length = match head.parse_with_uninit_headers(buffer, slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            return if buffer.len() > limits.max_head_bytes {
                Err(HttpError::HeadTooLarge {
                    limit: limits.max_head_bytes,
                })
            } else {
                Ok(Parsed::NeedHead)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(error) => return Err(HttpError::Malformed(describe(error))),
    };
    if head_length > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge {
            limit: limits.max_head_bytes,
        });
    }
    let (Some(method), Some(target), Some(minor_version)) = (head.method, head.path, head.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let target = origin_form(target, method)?;
    let headers: &'b [httparse::Header<'b>] = head.headers;
    let framing = framing(headers, limits)?;
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; a repeated one is refused
    // in any version (two hosts are two different requests to a proxy and to us).
    match headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("host"))
        .count()
    {
        0 if minor_version >= 1 => {
            return Err(HttpError::Malformed(
                "an HTTP/1.1 request needs a Host header",
            ))
        }
        0 | 1 => {}
        _ => return Err(HttpError::Malformed("more than one Host header")),
    }
    let total = head_length + framing.body_length;
    if buffer.len() < total {
        return Ok(Parsed::NeedBody {
            total,
            expects_continue: framing.expects_continue && minor_version >= 1,
        });
    }
    Ok(Parsed::Complete {
        request: Request {
            method,
            target,
            minor_version,
            headers,
            body: &buffer[head_length..total],
            peer,
        },
        length: total,
    })
}

/// The path (and query) a target names. The origin form (`/video/1?x`) is what clients
/// send; the absolute form (`http://host/video/1`), which proxies send and RFC 9112 §3.2.2
/// says a server must accept, is reduced to its path; `*` is for `OPTIONS` only.
fn origin_form<'t>(target: &'t str, method: &str) -> Result<&'t str, HttpError> {
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok(target);
    }
    let scheme_length = ["http://", "https://"]
        .iter()
        .find(|scheme| {
            target
                .get(..scheme.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
        })
        .map(|scheme| scheme.len())
        .ok_or(HttpError::Malformed(
            "request target must be a path or an absolute http(s) URL",
        ))?;
    let after_scheme = &target[scheme_length..];
    let path_start = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    if path_start == 0 {
        return Err(HttpError::Malformed("request target has no host"));
    }
    match &after_scheme[path_start..] {
        path if path.starts_with('/') => Ok(path),
        // `http://host` and `http://host?q` name the root.
        _ => Ok("/"),
    }
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "unsupported HTTP version",
    }
}

/// Reads the body framing, refusing anything ambiguous: a
/// request smuggled past a proxy through two disagreeing lengths is the classic case.
fn framing(headers: &[httparse::Header<'_>], limits: &Limits) -> Result<Framing, HttpError> {
    let mut content_length: Option<u64> = None;
    let mut expects_continue = false;
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A list of equal values ("5, 5") is allowed by RFC 9110; anything else is not.
            for item in header.value.split(|&b| b == b',') {
                let value = parse_decimal(item.trim_ascii())?;
                if content_length.is_some_and(|known| known != value) {
                    return Err(HttpError::ConflictingContentLength);
                }
                content_length = Some(value);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::UnsupportedTransferEncoding);
        } else if name.eq_ignore_ascii_case("expect") {
            if header
                .value
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue")
            {
                expects_continue = true;
            } else {
                return Err(HttpError::UnsupportedExpectation(
                    String::from_utf8_lossy(header.value).into_owned(),
                ));
            }
        }
    }
    let length = content_length.unwrap_or(0);
    let body_length = usize::try_from(length)
        .ok()
        .filter(|&length| length <= limits.max_body_bytes)
        .ok_or(HttpError::BodyTooLarge {
            length,
            limit: limits.max_body_bytes,
        })?;
    Ok(Framing {
        body_length,
        expects_continue: expects_continue && body_length > 0,
    })
}

/// `1*DIGIT`, at most 18 digits (no sign, no spaces, no overflow).
fn parse_decimal(digits: &[u8]) -> Result<u64, HttpError> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    Ok(digits
        .iter()
        .fold(0u64, |value, &digit| value * 10 + u64::from(digit - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// Parses `text`; the slots are leaked, which is fine in a test.
    fn parse_str(text: &str) -> Result<Parsed<'_>, HttpError> {
        let slots = Box::leak(Box::new(header_slots()));
        parse(text.as_bytes(), slots, peer(), &Limits::default())
    }

    #[test]
    fn complete_request_with_body() {
        let text = "POST /video/token?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbodyGET";
        match parse_str(text).expect("valid") {
            Parsed::Complete { request, length } => {
                assert_eq!(request.method, "POST");
                assert_eq!(request.path(), "/video/token");
                assert_eq!(request.body, b"body");
                assert_eq!(length, text.len() - 3);
                assert!(keeps_alive(&request));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn partial_head_and_partial_body() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHo"),
            Ok(Parsed::NeedHead)
        ));
        let head =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
        match parse_str(&format!("{head}12345")).expect("valid") {
            Parsed::NeedBody {
                total,
                expects_continue,
            } => {
                assert_eq!(total, head.len() + 10);
                assert!(expects_continue);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sixty_four_headers_are_fine_and_too_many_is_431() {
        let many = |count: usize| {
            let headers: String = (0..count).map(|i| format!("X-H{i}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n")
        };
        assert!(matches!(parse_str(&many(64)), Ok(Parsed::Complete { .. })));
        let error = parse_str(&many(MAX_HEADERS + 1)).expect_err("too many");
        assert_eq!(error.status(), 431);
    }

    #[test]
    fn oversized_head_is_431_even_when_incomplete() {
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(17 * 1024));
        assert_eq!(parse_str(&big).expect_err("too big").status(), 431);
        let complete = format!("{big}\r\n\r\n");
        assert_eq!(parse_str(&complete).expect_err("too big").status(), 431);
    }

    #[test]
    fn framing_errors() {
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
            ("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
            ("GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http:///video/1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /video/1 HTTP/1.1\r\n\r\n", 400),
            ("GET /video/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET /video/1 HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("G\0T / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        ];
        for (text, status) in cases {
            let error = parse_str(text).expect_err(text);
            assert_eq!(error.status(), status, "{text:?}: {error}");
        }
    }

    #[test]
    fn absolute_form_targets_are_served_by_their_path() {
        let cases = [
            (
                "GET http://example.com/video/1?x=2 HTTP/1.1\r\nHost: example.com\r\n\r\n",
                "/video/1?x=2",
            ),
            (
                "GET HTTPS://example.com:8443/a HTTP/1.1\r\nHost: example.com\r\n\r\n",
                "/a",
            ),
            (
                "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
                "/",
            ),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "*"),
            // HTTP/1.0 needs no Host.
            ("GET /video/1 HTTP/1.0\r\n\r\n", "/video/1"),
        ];
        for (text, target) in cases {
            match parse_str(text).expect(text) {
                Parsed::Complete { request, .. } => assert_eq!(request.target, target, "{text:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn equal_repeated_lengths_are_accepted() {
        let text =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok";
        assert!(matches!(parse_str(text), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn keep_alive_rules_for_1_0_and_1_1() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (text, expected) in cases {
            match parse_str(text).expect(text) {
                Parsed::Complete { request, .. } => {
                    assert_eq!(keeps_alive(&request), expected, "{text:?}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
