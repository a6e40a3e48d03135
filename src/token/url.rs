//! Appending query parameters to a signed URL that is being written as JSON string content.
//!
//! A signed URL goes straight into the response buffer, inside a JSON string. The schemes
//! add their parameters through a [`QueryWriter`], which puts `?` before the first one (or
//! `&` when the source already had a query) and escapes text for JSON; encoded values
//! (hex, base64, digits) are written as they are.

use std::net::IpAddr;

use base64::Engine;

use super::Grant;

/// Adds `name=value` pairs after a URL already written to `out`.
pub(crate) struct QueryWriter<'o> {
    out: &'o mut Vec<u8>,
    /// `?` until the first parameter is written, then `&`.
    separator: u8,
}

impl<'o> QueryWriter<'o> {
    /// A writer for the URL of `grant` (whose `src` was just written to `out`).
    pub(crate) fn new(out: &'o mut Vec<u8>, grant: &Grant<'_>) -> Self {
        let separator = if grant.src.contains('?') { b'&' } else { b'?' };
        QueryWriter { out, separator }
    }

    /// Writes the separator, `name` and `=`, and hands back the buffer for the value,
    /// which the caller must write as JSON-safe text (hex, base64, digits).
    pub(crate) fn start(&mut self, name: &str) -> &mut Vec<u8> {
        self.out.push(self.separator);
        self.separator = b'&';
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'=');
        self.out
    }

    /// Where the next separator will be written, for [`QueryWriter::written_since`].
    pub(crate) fn position(&self) -> usize {
        self.out.len()
    }

    /// What was written since `position`.
    pub(crate) fn written_since(&self, position: usize) -> &[u8] {
        &self.out[position..]
    }

    /// Parameters already encoded as `a=1&b=2` (JSON-safe text), after the separator.
    pub(crate) fn raw(&mut self, parameters: &str) {
        self.out.push(self.separator);
        self.separator = b'&';
        self.out.extend_from_slice(parameters.as_bytes());
    }

    /// `name=value`, with `value` escaped for JSON.
    pub(crate) fn text(&mut self, name: &str, value: &str) {
        let out = self.start(name);
        crate::json::write_escaped(out, value);
    }

    /// `name=` and a decimal number.
    pub(crate) fn number(&mut self, name: &str, value: u64) {
        let out = self.start(name);
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(digits.format(value).as_bytes());
    }

    /// `name=` and `bytes` in the given base64 flavour.
    pub(crate) fn base64(&mut self, name: &str, engine: &impl Engine, bytes: &[u8]) {
        let out = self.start(name);
        append_base64(out, engine, bytes);
    }
}

/// Appends `bytes` encoded with `engine` (base64 never needs JSON escaping).
pub(crate) fn append_base64(out: &mut Vec<u8>, engine: &impl Engine, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + base64_len(bytes.len()), 0);
    let written = engine
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
}

/// Room for `len` bytes in base64 with padding (no flavour needs more).
fn base64_len(len: usize) -> usize {
    len.div_ceil(3) * 4
}

/// Lowercase hex of `bytes`, appended.
pub(crate) fn append_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Sized once and filled in place: a `push` per digit checks the capacity each time,
    // which cost about as much as the digits themselves (a token is 32 of them).
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    for (pair, &byte) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// An address in its usual text form, without allocating (IPv6 needs at most 45 bytes).
pub(crate) struct IpText {
    bytes: [u8; 48],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> Self {
        use std::io::Write;
        let mut bytes = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        // 48 bytes hold any address, so the write cannot run out of room.
        let _ = write!(cursor, "{ip}");
        let len = cursor.position() as usize;
        IpText { bytes, len }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only `Display` output of an address (ASCII) is ever stored.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    #[test]
    fn query_separators_follow_an_existing_query() {
        let mut out = b"/a.mp4".to_vec();
        let grant = Grant::new("/a.mp4", "video/mp4", 0, 1, None);
        let mut query = QueryWriter::new(&mut out, &grant);
        query.number("expires", 42);
        query.text("acl", "/a\"b/*");
        assert_eq!(out, br#"/a.mp4?expires=42&acl=/a\"b/*"#);

        let mut out = b"/a.mp4?v=1".to_vec();
        let grant = Grant::new("/a.mp4?v=1", "video/mp4", 0, 1, None);
        QueryWriter::new(&mut out, &grant).number("expires", 42);
        assert_eq!(out, b"/a.mp4?v=1&expires=42");
    }

    #[test]
    fn base64_and_hex_are_appended_exactly() {
        let mut out = b"x".to_vec();
        append_base64(&mut out, &STANDARD, b"hello world");
        assert_eq!(out, b"xaGVsbG8gd29ybGQ=");
        out.clear();
        append_base64(&mut out, &URL_SAFE_NO_PAD, &[0xfb, 0xff]);
        assert_eq!(out, b"-_8");
        out.clear();
        append_hex(&mut out, &[0x00, 0xab, 0xff]);
        assert_eq!(out, b"00abff");
    }

    #[test]
    fn addresses_print_as_usual() {
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(IpText::new(v6).as_str(), "2001:db8::1");
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("ip");
        assert_eq!(IpText::new(long).as_str(), long.to_string());
    }
}
