//! CORS: which web origins may read our responses from a browser (`--cors-origins`).
//!
//! The default, `*`, is the contract: every response, the HTTP layer's own errors
//! included, carries exactly `Access-Control-Allow-Origin: *` and
//! `Access-Control-Allow-Headers: *`. A production team can name its own sites instead:
//! then a request whose `Origin` is on the list is answered with that origin, any other
//! with no `Access-Control-Allow-Origin` at all (the browser then hides the response), and
//! every response says `Vary: Origin`, so that a cache never hands one site's answer to
//! another.

/// The `--cors-origins` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsOrigins {
    /// `*`: any origin.
    #[default]
    Any,
    /// Only these origins (`scheme://host[:port]`, lowercase).
    Listed(Vec<Box<str>>),
}

impl CorsOrigins {
    /// `*`, or origins separated by commas: `https://app.example.com,https://admin.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "*" {
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::new();
        for origin in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            });
            if !valid {
                return Err(format!(
                    "{origin:?} is not an origin: scheme://host[:port], no path (e.g. https://app.example.com)"
                ));
            }
            origins.push(origin.to_ascii_lowercase().into());
        }
        if origins.is_empty() {
            return Err("give \"*\" or at least one origin".into());
        }
        Ok(CorsOrigins::Listed(origins))
    }

    /// The header lines every response carries.
    pub fn common_headers(&self, allow_authorization: bool) -> Vec<u8> {
        let mut lines = Vec::with_capacity(96);
        if *self == CorsOrigins::Any {
            lines.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n");
        }
        // A browser's `*` never covers Authorization: name it when the API needs it.
        lines.extend_from_slice(if allow_authorization {
            b"Access-Control-Allow-Headers: *, Authorization\r\n"
        } else {
            b"Access-Control-Allow-Headers: *\r\n"
        });
        if *self != CorsOrigins::Any {
            lines.extend_from_slice(b"Vary: Origin\r\n");
        }
        lines
    }

    /// With a list, the listed origin that matches the request's `Origin` header: the value
    /// of this response's `Access-Control-Allow-Origin`.
    pub fn allowed_origin(&self, request_origin: Option<&[u8]>) -> Option<&str> {
        let CorsOrigins::Listed(origins) = self else {
            return None;
        };
        let request_origin = request_origin?.trim_ascii();
        origins
            .iter()
            .find(|origin| origin.as_bytes().eq_ignore_ascii_case(request_origin))
            .map(|origin| &**origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_contracts_two_headers() {
        let any = CorsOrigins::parse("*").expect("valid");
        assert_eq!(
            any.common_headers(false),
            b"Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Headers: *\r\n"
        );
        assert_eq!(any.allowed_origin(Some(b"https://evil.example")), None);
    }

    #[test]
    fn a_list_answers_listed_origins_only_and_varies() {
        let listed =
            CorsOrigins::parse("https://App.example.com, http://localhost:8080").expect("valid");
        let headers = String::from_utf8(listed.common_headers(true)).expect("ASCII");
        assert!(!headers.contains("Allow-Origin"), "{headers}");
        assert!(headers.contains("Vary: Origin\r\n"), "{headers}");
        assert!(
            headers.contains("Allow-Headers: *, Authorization\r\n"),
            "{headers}"
        );
        assert_eq!(
            listed.allowed_origin(Some(b"https://app.example.com")),
            Some("https://app.example.com")
        );
        assert_eq!(
            listed.allowed_origin(Some(b"http://LOCALHOST:8080")),
            Some("http://localhost:8080")
        );
        assert_eq!(
            listed.allowed_origin(Some(b"https://app.example.com.evil")),
            None
        );
        assert_eq!(listed.allowed_origin(Some(b"null")), None);
        assert_eq!(listed.allowed_origin(None), None);
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in [
            "",
            " , ",
            "app.example.com",
            "https://a.example/path",
            "ftp://a",
            "https://",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad:?}");
        }
    }
}
