//! Where one HTTP/1.1 response ends in the bytes received so far.
//!
//! The generator keeps one request in flight per connection, so responses arrive in
//! order; it only needs each response's status and length to match it to its request.
//! Bodies are framed by `Content-Length` (or are absent: 1xx, 204, 304, and `HEAD`, which
//! this tool does not send); a chunked response is refused, since the servers measured
//! never send one.

/// A complete response at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    pub status: u16,
    /// Bytes of head and body together.
    pub length: usize,
}

/// Why the bytes cannot be a response this tool understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    Malformed(String),
    Unsupported(&'static str),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::Malformed(why) => write!(f, "malformed response: {why}"),
            FramingError::Unsupported(what) => write!(f, "unsupported response: {what}"),
        }
    }
}

/// Parses the response at the start of `bytes`: `Ok(None)` while it is incomplete.
pub fn frame(bytes: &[u8]) -> Result<Option<Framed>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(FramingError::Malformed(error.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let mut body_length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok())
                .ok_or_else(|| FramingError::Malformed("bad Content-Length".into()))?;
            if body_length.is_some_and(|seen| seen != parsed) {
                return Err(FramingError::Malformed("conflicting Content-Length".into()));
            }
            body_length = Some(parsed);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(FramingError::Unsupported("Transfer-Encoding"));
        }
    }
    let body_length = match (status, body_length) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(length)) => length,
        (_, None) => return Err(FramingError::Unsupported("no Content-Length")),
    };
    let length = head_length + body_length;
    Ok((bytes.len() >= length).then_some(Framed { status, length }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn a_whole_response_is_framed_by_its_content_length() {
        assert_eq!(
            frame(OK),
            Ok(Some(Framed {
                status: 200,
                length: OK.len()
            }))
        );
    }

    #[test]
    fn an_incomplete_head_or_body_waits_for_more() {
        for cut in 1..OK.len() {
            assert_eq!(frame(&OK[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_bytes_after_the_response_are_left_for_the_next() {
        let mut two = OK.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let first = frame(&two).expect("valid").expect("complete");
        assert_eq!(first.length, OK.len());
        let second = frame(&two[first.length..])
            .expect("valid")
            .expect("complete");
        assert_eq!(second.status, 404);
        assert_eq!(first.length + second.length, two.len());
    }

    #[test]
    fn no_content_has_no_body_whatever_it_says() {
        let bytes = b"HTTP/1.1 204 No Content\r\nAllow: GET\r\n\r\n";
        assert_eq!(
            frame(bytes).expect("valid").expect("complete").length,
            bytes.len()
        );
    }

    #[test]
    fn unframeable_responses_are_errors() {
        assert!(frame(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(frame(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(
            frame(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err()
        );
        assert!(frame(b"garbage\r\n\r\n").is_err());
    }
}
