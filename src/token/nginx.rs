//! nginx `secure_link` / `secure_link_md5`: `?md5=<base64url MD5, no padding>&expires=<unix>`.
//!
//! nginx hashes an expression the operator writes in its config, e.g.
//!
//! ```nginx
//! secure_link     $arg_md5,$arg_expires;
//! secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
//! ```
//!
//! so ours is a template of the same shape (`expression` in the CDN file), with
//! `{expires}` for `$secure_link_expires`, `{path}` for `$uri`, `{client_ip}` for
//! `$remote_addr` and `{key}` for the secret. The two must list the same pieces in the same
//! order. `$uri` is the percent-decoded path, so `{path}` is the source's path up to its
//! query, decoded. nginx checks one file per token: streaming manifests are signed per
//! file here too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};

use super::url::{IpText, QueryWriter};
use super::Grant;

/// The expression of nginx's documentation, for a token bound to the client's address.
pub const DEFAULT_EXPRESSION_WITH_IP: &str = "{expires}{path}{client_ip} {key}";
/// The same without the address.
pub const DEFAULT_EXPRESSION: &str = "{expires}{path} {key}";

/// One piece of the hashed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Expires,
    Path,
    ClientIp,
    Key,
}

/// Signs for nginx's `secure_link_md5`.
pub struct NginxSigner {
    key: Box<str>,
    expression: Box<[Piece]>,
}

impl NginxSigner {
    /// Parses `expression` (or the default for `bind_ip`). The error says what is wrong
    /// with the expression; it never contains the key.
    pub fn new(key: &str, expression: Option<&str>, bind_ip: bool) -> Result<Self, String> {
        let text = expression.unwrap_or(if bind_ip {
            DEFAULT_EXPRESSION_WITH_IP
        } else {
            DEFAULT_EXPRESSION
        });
        let expression = parse_expression(text)?;
        let has = |piece: &Piece| expression.contains(piece);
        if !has(&Piece::Key) {
            return Err("\"expression\" must contain {key}, or anyone could sign".into());
        }
        if !has(&Piece::Expires) {
            return Err("\"expression\" must contain {expires}, or tokens never expire".into());
        }
        match (bind_ip, has(&Piece::ClientIp)) {
            (true, false) => {
                return Err("\"bind_ip\" is true but \"expression\" has no {client_ip}".into())
            }
            (false, true) => {
                return Err("\"expression\" uses {client_ip} but \"bind_ip\" is not true".into())
            }
            _ => {}
        }
        Ok(NginxSigner {
            key: key.into(),
            expression: expression.into_boxed_slice(),
        })
    }

    pub(crate) fn write_query(&self, query: &mut QueryWriter<'_>, grant: &Grant<'_>) {
        let expires = grant.expires();
        let digest = self.digest(grant, expires);
        query.base64("md5", &URL_SAFE_NO_PAD, &digest);
        query.number("expires", expires);
    }

    fn digest(&self, grant: &Grant<'_>, expires: u64) -> [u8; 16] {
        let mut md5 = Md5::new();
        for piece in self.expression.iter() {
            match piece {
                Piece::Literal(text) => md5.update(text.as_bytes()),
                Piece::Expires => md5.update(itoa::Buffer::new().format(expires).as_bytes()),
                Piece::Path => {
                    // nginx's $uri is decoded; a path without `%` is its own decoding.
                    let decoded = percent_encoding::percent_decode_str(grant.path);
                    md5.update(std::borrow::Cow::<[u8]>::from(decoded));
                }
                Piece::ClientIp => {
                    if let Some(ip) = grant.client_ip {
                        md5.update(IpText::new(ip).as_str().as_bytes());
                    }
                }
                Piece::Key => md5.update(self.key.as_bytes()),
            }
        }
        md5.finalize().into()
    }
}

fn parse_expression(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(open) = rest.find(['{', '}']) else {
            pieces.push(Piece::Literal(rest.into()));
            break;
        };
        if rest[open..].starts_with('}') {
            return Err("\"expression\" has a '}' that closes nothing".into());
        }
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].into()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or("\"expression\" has a '{' that is never closed")?;
        pieces.push(match &after[..close] {
            "expires" => Piece::Expires,
            "path" => Piece::Path,
            "client_ip" => Piece::ClientIp,
            "key" => Piece::Key,
            other => {
                return Err(format!(
                    "\"expression\" has an unknown placeholder {{{other}}} \
                     (known: {{expires}}, {{path}}, {{client_ip}}, {{key}})"
                ))
            }
        });
        rest = &after[close + 1..];
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(signer: &NginxSigner, grant: &Grant<'_>) -> String {
        let mut out = grant.src.as_bytes().to_vec();
        signer.write_query(&mut QueryWriter::new(&mut out, grant), grant);
        String::from_utf8(out).expect("ASCII")
    }

    /// nginx's own documentation (ngx_http_secure_link_module, "secure_link_md5"):
    /// `echo -n '2147483647/s/link127.0.0.1 secret' | openssl md5 -binary | openssl base64
    /// | tr +/ -_ | tr -d =` prints `_e4Nc3iduzkWRm01TBBNYw`.
    #[test]
    fn nginx_documentation_vector() {
        let signer = NginxSigner::new("secret", None, true).expect("default expression");
        let grant = Grant {
            src: "/s/link",
            path: "/s/link",
            now: 2_147_483_647 - 3600,
            ttl_seconds: 3600,
            client_ip: Some([127, 0, 0, 1].into()),
            folder: None,
        };
        assert_eq!(
            signed(&signer, &grant),
            "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647"
        );
        // The same, written out as an explicit expression.
        let explicit = NginxSigner::new("secret", Some("{expires}{path}{client_ip} {key}"), true)
            .expect("valid");
        assert_eq!(signed(&explicit, &grant), signed(&signer, &grant));
    }

    #[test]
    fn path_is_hashed_decoded_and_without_its_query_like_uri() {
        let signer = NginxSigner::new("k", None, false).expect("valid");
        let grant = |src: &'static str| Grant::new(src, "video/mp4", 100, 10, None);
        let md5 = |src: &'static str| {
            let url = signed(&signer, &grant(src));
            url[url.find("md5=").expect("md5")..].to_owned()
        };
        assert_eq!(md5("/my%20film.mp4"), md5("/my film.mp4"));
        assert_eq!(md5("/a.mp4?v=2"), md5("/a.mp4"));
        assert_ne!(md5("/a.mp4"), md5("/b.mp4"));
        assert!(signed(&signer, &grant("/a.mp4?v=2")).starts_with("/a.mp4?v=2&md5="));
    }

    #[test]
    fn expressions_are_checked() {
        let cases = [
            ("{expires}{path}", false, "must contain {key}"),
            ("{path} {key}", false, "must contain {expires}"),
            ("{expires}{path} {key}", true, "has no {client_ip}"),
            (
                "{expires}{path}{client_ip} {key}",
                false,
                "\"bind_ip\" is not true",
            ),
            ("{expires}{uri} {key}", false, "unknown placeholder {uri}"),
            ("{expires {key}", false, "unknown placeholder"),
            ("{expires}{path} {key", false, "never closed"),
            ("{expires}} {key}", false, "closes nothing"),
        ];
        for (expression, bind_ip, expected) in cases {
            let error = NginxSigner::new("secret-key", Some(expression), bind_ip)
                .err()
                .unwrap_or_else(|| panic!("{expression} accepted"));
            assert!(error.contains(expected), "{expression}: {error}");
            assert!(!error.contains("secret-key"));
        }
    }
}
