//! Writing JSON straight into a response buffer.
//!
//! The hot path never builds a `serde_json::Value` or an intermediate `String`: handlers
//! append JSON text to the connection's reusable body buffer. This module holds the few
//! primitives they need (string escaping, integers, the `{"error": …}` body every error
//! response uses), so that every endpoint escapes the same way.

use std::borrow::Cow;

/// Bytes that must be escaped inside a JSON string: controls, `"` and `\`.
#[inline]
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Appends `text` to `out` as the inside of a JSON string (no surrounding quotes).
///
/// Runs of bytes that need no escaping are copied in one `extend_from_slice`, so the
/// common case (URLs, titles) costs one scan and one copy.
pub fn write_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(&bytes[run_start..index]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            control => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(control >> 4)]);
                out.push(HEX[usize::from(control & 0x0f)]);
            }
        }
        run_start = index + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// Appends a string decoded from a JSON document, as JSON string content.
///
/// A borrowed string is the document's own bytes: serde_json borrows a string only when it
/// holds no escape sequence, and it refuses raw control characters, so such a string
/// contains nothing that needs escaping and is copied without a scan. An owned string
/// (it had escapes, or was built elsewhere) is escaped.
#[allow(clippy::ptr_arg)] // borrowed or owned is the information used
pub fn write_decoded(out: &mut Vec<u8>, text: &Cow<'_, str>) {
    match text {
        Cow::Borrowed(verbatim) => out.extend_from_slice(verbatim.as_bytes()),
        Cow::Owned(decoded) => write_escaped(out, decoded),
    }
}

/// Appends `text` as a complete JSON string, quotes included.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    write_escaped(out, text);
    out.push(b'"');
}

/// Appends an integer in decimal.
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(value).as_bytes());
}

/// Appends an unsigned integer in decimal.
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(value).as_bytes());
}

/// Appends the body every error response carries: `{"error":"<message>"}`.
pub fn write_error(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"error\":");
    write_string(out, message);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_strings_are_copied_when_borrowed_and_escaped_when_owned() {
        let document = r#"["plain é", "quote \" and \\ and \n"]"#;
        // A `&str` can only be deserialized by borrowing: the first string had no escapes.
        let (verbatim, decoded): (&str, String) = serde_json::from_str(document).expect("valid");
        let strings = [Cow::Borrowed(verbatim), Cow::Owned(decoded)];
        let mut out = Vec::new();
        write_decoded(&mut out, &strings[0]);
        assert_eq!(out, "plain é".as_bytes());
        out.clear();
        write_decoded(&mut out, &strings[1]);
        assert_eq!(out, br#"quote \" and \\ and \n"#);
    }

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text);
        String::from_utf8(out).expect("escaping keeps UTF-8 valid")
    }

    #[test]
    fn plain_text_is_copied_verbatim() {
        assert_eq!(escaped("/Big_Buck_Bunny.mp4"), "\"/Big_Buck_Bunny.mp4\"");
    }

    #[test]
    fn quotes_backslashes_and_controls_are_escaped() {
        assert_eq!(escaped("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn escaped_output_round_trips_through_serde_json() {
        let nasty = "tab\there \"quoted\" \\ back \u{7} bell é ünïcödé \u{1f600} \r\n\u{c}\u{8}";
        let decoded: String = serde_json::from_str(&escaped(nasty)).expect("valid JSON string");
        assert_eq!(decoded, nasty);
    }

    #[test]
    fn error_body_is_valid_json_naming_the_message() {
        let mut out = Vec::new();
        write_error(&mut out, "video.title is required");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["error"], "video.title is required");
    }
}
