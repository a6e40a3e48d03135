//! Building a response in reusable buffers and serializing it onto the connection's
//! output.
//!
//! A connection borrows a [`Response`] from its worker's pool while it answers: a handler
//! sets the status, adds headers and writes the body into `body` directly (JSON straight
//! into the buffer); the connection then appends status line, standard headers and body to
//! its output buffer and clears the response for the next request. Nothing is allocated
//! per request once the pooled buffers have grown to their working size.

use super::date::write_date;

/// A response under construction.
#[derive(Debug)]
pub struct Response {
    status: u16,
    content_type: Option<&'static str>,
    /// How caches may keep the response; errors are always `no-store`.
    cache_control: Option<&'static str>,
    /// Extra header lines, each `Name: value\r\n`.
    headers: Vec<u8>,
    /// The body, written by the handler.
    pub body: Vec<u8>,
}

impl Default for Response {
    fn default() -> Self {
        Response {
            status: 200,
            content_type: None,
            cache_control: None,
            headers: Vec::with_capacity(128),
            body: Vec::with_capacity(1024),
        }
    }
}

/// The status codes this server sends, with their reason phrases: one list, from which
/// both [`reason`] and the ready-made status lines of [`Response::write_to`] are made.
macro_rules! statuses {
    ($($code:literal => $reason:literal,)*) => {
        /// The reason phrase sent with a status code.
        pub fn reason(status: u16) -> &'static str {
            match status {
                $($code => $reason,)*
                _ => "Unknown",
            }
        }

        /// `HTTP/1.1 <code> <reason>\r\nDate: `, the fixed start of every response with a
        /// known status: one copy instead of five pieces.
        fn status_line_to_date(status: u16) -> Option<&'static [u8]> {
            match status {
                $($code => Some(concat!("HTTP/1.1 ", $code, " ", $reason, "\r\nDate: ").as_bytes()),)*
                _ => None,
            }
        }
    };
}

statuses! {
    100 => "Continue",
    200 => "OK",
    204 => "No Content",
    304 => "Not Modified",
    400 => "Bad Request",
    401 => "Unauthorized",
    403 => "Forbidden",
    404 => "Not Found",
    405 => "Method Not Allowed",
    408 => "Request Timeout",
    413 => "Content Too Large",
    415 => "Unsupported Media Type",
    417 => "Expectation Failed",
    429 => "Too Many Requests",
    431 => "Request Header Fields Too Large",
    500 => "Internal Server Error",
    501 => "Not Implemented",
    503 => "Service Unavailable",
}

/// How the connection frames what follows this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 default: say nothing.
    Default,
    /// The connection closes after this response.
    Close,
    /// An HTTP/1.0 client asked to keep the connection.
    KeepAlive,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn set_status(&mut self, status: u16) -> &mut Self {
        self.status = status;
        self
    }

    pub fn set_content_type(&mut self, content_type: &'static str) -> &mut Self {
        self.content_type = Some(content_type);
        self
    }

    /// Sets `Cache-Control` (one directive list per response).
    pub fn set_cache_control(&mut self, directives: &'static str) -> &mut Self {
        self.cache_control = Some(directives);
        self
    }

    /// Adds a header line. `name` and `value` must not contain CR or LF; callers pass
    /// constants or values they produced.
    pub fn add_header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.headers.extend_from_slice(name.as_bytes());
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value);
        self.headers.extend_from_slice(b"\r\n");
        self
    }

    /// Replaces the response with a JSON error: `{"error": message}`, which no cache may
    /// keep (a cached 404 or 503 would hide a recovered server).
    pub fn set_json_error(&mut self, status: u16, message: &str) -> &mut Self {
        self.status = status;
        self.content_type = Some("application/json");
        self.cache_control = Some("no-store");
        self.body.clear();
        crate::json::write_error(&mut self.body, message);
        self
    }

    /// The larger of the header and body buffers' capacities, in bytes.
    pub fn capacity(&self) -> usize {
        self.headers.capacity().max(self.body.capacity())
    }

    /// Empties the response for the next request, keeping the buffers.
    pub fn clear(&mut self) {
        self.status = 200;
        self.content_type = None;
        self.cache_control = None;
        self.headers.clear();
        self.body.clear();
    }

    /// Appends the serialized response to `out`. `common_headers` are complete header
    /// lines sent on every response (CORS); with `head_only` the body is left out but its
    /// length still announced, as HEAD requires.
    ///
    /// This runs once per response, so it appends few, large pieces: each append costs
    /// a capacity check and a `memcpy` call whatever its length. Header lines after the
    /// date are written as `\r\nName: value`, so one `\r\n` before the extra lines ends
    /// them all.
    pub fn write_to(
        &self,
        out: &mut Vec<u8>,
        common_headers: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        let mut digits = itoa::Buffer::new();
        match status_line_to_date(self.status) {
            Some(line) => out.extend_from_slice(line),
            None => {
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(digits.format(self.status).as_bytes());
                out.push(b' ');
                out.extend_from_slice(reason(self.status).as_bytes());
                out.extend_from_slice(b"\r\nDate: ");
            }
        }
        write_date(out);
        // 1xx, 204 and 304 carry no body; a 304's Content-Length would have to be the
        // length of the representation it stands for, so none is sent.
        let has_body = self.status >= 200 && self.status != 204 && self.status != 304;
        if has_body {
            out.extend_from_slice(b"\r\nContent-Length: ");
            out.extend_from_slice(digits.format(self.body.len()).as_bytes());
        }
        if let Some(content_type) = self.content_type {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(content_type.as_bytes());
        }
        if let Some(directives) = self.cache_control {
            out.extend_from_slice(b"\r\nCache-Control: ");
            out.extend_from_slice(directives.as_bytes());
        }
        out.extend_from_slice(match connection {
            ConnectionHeader::Default => b"\r\n",
            ConnectionHeader::Close => b"\r\nConnection: close\r\n",
            ConnectionHeader::KeepAlive => b"\r\nConnection: keep-alive\r\n",
        });
        if !common_headers.is_empty() {
            out.extend_from_slice(common_headers);
        }
        if !self.headers.is_empty() {
            out.extend_from_slice(&self.headers);
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && has_body {
            out.extend_from_slice(&self.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize(response: &Response, connection: ConnectionHeader, head_only: bool) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, b"X-Common: 1\r\n", connection, head_only);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn json_response_has_length_type_and_common_headers() {
        let mut response = Response::default();
        response.set_content_type("application/json");
        response.body.extend_from_slice(b"{}");
        let text = serialize(&response, ConnectionHeader::Default, false);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{text}");
        assert!(text.contains("\r\nContent-Length: 2\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json\r\n"));
        assert!(text.contains("\r\nX-Common: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        let mut response = Response::default();
        response.set_status(204).add_header("Allow", b"GET");
        response.body.extend_from_slice(b"ignored");
        let text = serialize(&response, ConnectionHeader::Close, false);
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("Allow: GET\r\n\r\n"));
    }

    #[test]
    fn head_announces_the_length_without_the_body() {
        let mut response = Response::default();
        response.body.extend_from_slice(b"12345");
        let text = serialize(&response, ConnectionHeader::KeepAlive, true);
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn not_modified_has_its_validators_and_no_body_or_length() {
        let mut response = Response::default();
        response.set_status(304).set_cache_control("no-cache");
        response.add_header("ETag", b"\"abc\"");
        let text = serialize(&response, ConnectionHeader::Default, false);
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.contains("\r\nCache-Control: no-cache\r\n"), "{text}");
        assert!(text.ends_with("ETag: \"abc\"\r\n\r\n"), "{text}");
    }

    #[test]
    fn every_status_line_and_header_parses_as_http_with_its_body_framed() {
        // Checked by httparse's response parser, not by our own reading of the bytes.
        for status in [100, 200, 204, 304, 404, 418, 429, 503] {
            let mut response = Response::default();
            response.set_status(status).set_content_type("text/plain");
            response.set_cache_control("no-store");
            response.add_header("Retry-After", b"1");
            response.body.extend_from_slice(b"hello");
            for connection in [
                ConnectionHeader::Default,
                ConnectionHeader::Close,
                ConnectionHeader::KeepAlive,
            ] {
                let mut out = Vec::new();
                response.write_to(&mut out, b"Vary: Origin\r\n", connection, false);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut parsed = httparse::Response::new(&mut headers);
                let httparse::Status::Complete(head) = parsed.parse(&out).expect("valid HTTP")
                else {
                    panic!("incomplete head: {:?}", String::from_utf8_lossy(&out));
                };
                assert_eq!(parsed.code, Some(status));
                assert_eq!(parsed.reason, Some(reason(status)));
                let header = |name: &str| {
                    parsed
                        .headers
                        .iter()
                        .find(|header| header.name.eq_ignore_ascii_case(name))
                        .map(|header| header.value.to_vec())
                };
                assert_eq!(header("date").map(|date| date.len()), Some(29));
                assert_eq!(header("content-type").as_deref(), Some(&b"text/plain"[..]));
                assert_eq!(header("cache-control").as_deref(), Some(&b"no-store"[..]));
                assert_eq!(header("vary").as_deref(), Some(&b"Origin"[..]));
                assert_eq!(header("retry-after").as_deref(), Some(&b"1"[..]));
                let connection_value = header("connection");
                match connection {
                    ConnectionHeader::Default => assert_eq!(connection_value, None),
                    ConnectionHeader::Close => {
                        assert_eq!(connection_value.as_deref(), Some(&b"close"[..]))
                    }
                    ConnectionHeader::KeepAlive => {
                        assert_eq!(connection_value.as_deref(), Some(&b"keep-alive"[..]))
                    }
                }
                let with_body = status >= 200 && status != 204 && status != 304;
                if with_body {
                    assert_eq!(header("content-length").as_deref(), Some(&b"5"[..]));
                    assert_eq!(&out[head..], b"hello");
                } else {
                    assert_eq!(header("content-length"), None);
                    assert_eq!(out.len(), head, "status {status} has no body");
                }
            }
        }
        assert_eq!(reason(418), "Unknown");
    }

    #[test]
    fn errors_are_json_no_store_and_clear_resets() {
        let mut response = Response::default();
        response.body.extend_from_slice(b"partial");
        response.set_json_error(413, "too big");
        assert_eq!(response.body, br#"{"error":"too big"}"#);
        let text = serialize(&response, ConnectionHeader::Default, false);
        assert!(text.contains("\r\nCache-Control: no-store\r\n"), "{text}");
        response.clear();
        assert_eq!(response.status(), 200);
        assert!(response.body.is_empty());
    }
}
