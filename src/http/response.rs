//! Building a response in reusable buffers and serializing it onto the connection's
//! output.
//!
//! A connection owns one [`Response`] for its whole life: a handler sets the status, adds
//! headers and writes the body into `body` directly (JSON straight into the buffer); the
//! connection then appends status line, standard headers and body to its output buffer
//! and clears the response for the next request. Nothing is allocated per request once
//! the buffers have grown to their working size.

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

/// The reason phrase sent with a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
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
        _ => "Unknown",
    }
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
    pub fn write_to(
        &self,
        out: &mut Vec<u8>,
        common_headers: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        out.extend_from_slice(b"HTTP/1.1 ");
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(digits.format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
        // 1xx, 204 and 304 carry no body; a 304's Content-Length would have to be the
        // length of the representation it stands for, so none is sent.
        let has_body = self.status >= 200 && self.status != 204 && self.status != 304;
        if has_body {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(digits.format(self.body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(content_type) = self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(directives) = self.cache_control {
            out.extend_from_slice(b"Cache-Control: ");
            out.extend_from_slice(directives.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match connection {
            ConnectionHeader::Default => {}
            ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
            ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        }
        out.extend_from_slice(common_headers);
        out.extend_from_slice(&self.headers);
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
