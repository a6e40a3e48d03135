//! bunny.net token authentication, HMAC-SHA256 form: `?token=HS256-…[&token_path=…]&expires=…`.
//!
//! As bunny.net's own token-authentication repository implements it (its `e2e/vectors.json`
//! and reference code agree; its README's field order predates them): the HMAC-SHA256 of
//! `signature_path + expires + ip_bytes + signing_data`, keyed by the zone's security key,
//! base64url without padding, prefixed `HS256-`, or `HS256-1-` when the client's address
//! is bound (4 raw bytes for IPv4; IPv6 masked to its /64). `signing_data` is the URL's own
//! query parameters plus `token_path`, sorted by name, as `k=v` joined by `&` with raw
//! values; the URL carries them percent-encoded between `token` and `expires`. A streaming
//! manifest gets `token_path` = its folder, which then replaces the path in the signature,
//! so every segment under the folder passes.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

use super::url::append_base64;
use super::Grant;

/// What Python's `urllib.parse.quote(v, safe='')` leaves alone: letters, digits, `_.-~`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Signs bunny.net tokens.
pub struct BunnySigner {
    /// The pull zone's URL token authentication key.
    key: Box<str>,
}

impl BunnySigner {
    pub fn new(key: &str) -> Self {
        BunnySigner { key: key.into() }
    }

    /// Appends the source's path and the whole query (its own parameters, moved behind the
    /// token as bunny.net's signer does), as JSON string content.
    pub(crate) fn write_path_and_query(&self, out: &mut Vec<u8>, grant: &Grant<'_>) {
        let query = grant.src.split_once('?').map(|(_, query)| query);
        self.write_signed(
            out,
            grant.path,
            query,
            grant.folder,
            grant.expires(),
            grant.client_ip,
        );
    }

    fn write_signed(
        &self,
        out: &mut Vec<u8>,
        path: &str,
        query: Option<&str>,
        token_path: Option<&str>,
        expires: u64,
        ip: Option<IpAddr>,
    ) {
        let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(name), form_decode(value))
            })
            .collect();
        if let Some(token_path) = token_path {
            params.push((Cow::Borrowed("token_path"), Cow::Borrowed(token_path)));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));

        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.as_bytes()) else {
            return;
        };
        mac.update(token_path.unwrap_or(path).as_bytes());
        let mut digits = itoa::Buffer::new();
        let expires_text = digits.format(expires);
        mac.update(expires_text.as_bytes());
        match ip {
            Some(IpAddr::V4(v4)) => mac.update(&v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                mac.update(&octets);
            }
            None => {}
        }
        for (index, (name, value)) in params.iter().enumerate() {
            if index > 0 {
                mac.update(b"&");
            }
            mac.update(name.as_bytes());
            mac.update(b"=");
            mac.update(value.as_bytes());
        }

        crate::json::write_escaped(out, path);
        out.extend_from_slice(b"?token=HS256-");
        if ip.is_some() {
            out.extend_from_slice(b"1-");
        }
        append_base64(out, &URL_SAFE_NO_PAD, &mac.finalize().into_bytes());
        for (name, value) in &params {
            out.push(b'&');
            crate::json::write_escaped(out, name);
            out.push(b'=');
            for piece in utf8_percent_encode(value, QUERY_VALUE) {
                out.extend_from_slice(piece.as_bytes());
            }
        }
        out.extend_from_slice(b"&expires=");
        out.extend_from_slice(expires_text.as_bytes());
    }
}

/// A query name or value as a form decoder reads it (`+` is a space, `%xx` a byte).
fn form_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['+', '%']) {
        return Cow::Borrowed(text);
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // BunnyWay/BunnyCDN.TokenAuthentication, e2e/vectors.json (generated from python3/token.py):
    // key "SecurityKey", expires 1598024587, host https://token-tester.b-cdn.net.
    const HOST: &str = "https://token-tester.b-cdn.net";
    const EXPIRES: u64 = 1_598_024_587;

    fn signed(src: &str, token_path: Option<&str>, ip: Option<&str>) -> String {
        let signer = BunnySigner::new("SecurityKey");
        let (path, query) = match src.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (src, None),
        };
        let ip = ip.map(|ip| ip.parse().expect("ip"));
        let mut out = HOST.as_bytes().to_vec();
        signer.write_signed(&mut out, path, query, token_path, EXPIRES, ip);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn bunny_published_vectors() {
        // "plain"
        assert_eq!(
            signed("/300kb.jpg", None, None),
            "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-o10JRWlsAItyAsdKS6jJKjabHN4FrFsplDHPV1idcX4&expires=1598024587"
        );
        // "path_only"
        assert_eq!(
            signed("/abc/300kb.jpg", Some("/abc"), None),
            "https://token-tester.b-cdn.net/abc/300kb.jpg?token=HS256-uVZvT3SbEoVKYJyDJgbcsDmSFf73cv-uNUVaJiKWpbQ&token_path=%2Fabc&expires=1598024587"
        );
        // "ip_v4_only"
        assert_eq!(
            signed("/300kb.jpg", None, Some("1.2.3.4")),
            "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-1-L2rISTLcujMY9UFf2tbZ41d5i-Bme1g1oTK_Z2QMLJk&expires=1598024587"
        );
        // "ip_v6_only"
        assert_eq!(
            signed("/300kb.jpg", None, Some("2001:0db8:85a3:0000:0000:8a2e:0370:7334")),
            "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-1-Z1BaGdhTZdU4iANcyKpurFR2VgCNdqC6hlBv5x_TyaI&expires=1598024587"
        );
        // "ip_v4_path"
        assert_eq!(
            signed("/abc/300kb.jpg", Some("/abc"), Some("1.2.3.4")),
            "https://token-tester.b-cdn.net/abc/300kb.jpg?token=HS256-1-wag9tC0r1QWfg-2eMj5QcdzgPLCIdQb-D0WVU1Mhg2w&token_path=%2Fabc&expires=1598024587"
        );
    }

    /// python3/test_token.py in the same repository: the URL's own query is signed and
    /// moved behind the token.
    #[test]
    fn bunny_published_vector_with_a_query() {
        assert_eq!(
            signed("/300kb.jpg?v=123", None, None),
            "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-q6oRQr-5ccQ-piO1HSEQu1DVMy9UMppRxGlIQwoeM5Y&v=123&expires=1598024587"
        );
    }

    #[test]
    fn manifests_sign_their_folder() {
        let signer = BunnySigner::new("SecurityKey");
        let grant = Grant::new(
            "/hls/bbb/master.m3u8",
            "application/x-mpegURL",
            EXPIRES - 60,
            60,
            None,
        );
        let mut out = Vec::new();
        signer.write_path_and_query(&mut out, &grant);
        let url = String::from_utf8(out).expect("ASCII");
        assert!(
            url.starts_with("/hls/bbb/master.m3u8?token=HS256-"),
            "{url}"
        );
        assert!(
            url.ends_with("&token_path=%2Fhls%2Fbbb%2F&expires=1598024587"),
            "{url}"
        );
        // Any file under the folder has the same token: the path is not in the signature.
        let mut segment = Vec::new();
        signer.write_signed(
            &mut segment,
            "/hls/bbb/seg7.ts",
            None,
            Some("/hls/bbb/"),
            EXPIRES,
            None,
        );
        assert_eq!(url.replace("master.m3u8", "seg7.ts").into_bytes(), segment);
    }
}
