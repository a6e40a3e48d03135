//! The player page: `GET /` and its assets under `/assets/`, compiled into the binary.
//!
//! What a person sees when they open the server: the catalog, a `<video>` element that
//! plays a source through the URL `POST /video/token` signed, that video's views today and
//! per day (an SVG chart), and the day's top videos. The HTML, CSS and JavaScript are the
//! files under `web/`, taken in at build time (`include_str!`): nothing is fetched from
//! elsewhere at run time and there is no build step. The JavaScript is plain ES modules;
//! `web/logic.mjs` holds what has logic (formatting, chart scales, reading a signed URL)
//! and has unit tests of its own (`node --test web/`).
//!
//! In: an asset name from the path. Out: the [`Asset`] (body, media type, entity tag) and
//! the `Content-Security-Policy` the page is served with ([`content_security_policy`]).
//! The policy lets scripts, styles and images come from this server only; media (and the
//! page's check of why a video failed) may also come from the configured CDNs, which is
//! where signed URLs point.

use std::sync::LazyLock;

/// A file of the page, as served.
#[derive(Debug)]
pub struct Asset {
    /// Its name: under `/assets/`, or [`INDEX`], which is served at `/` only.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The bytes, compiled in.
    pub body: &'static str,
    /// A strong entity tag: a hash of the bytes, so it changes exactly when the file does.
    pub etag: String,
}

/// The page's own file, served at `/`.
pub const INDEX: &str = "index.html";

/// Every file of the page, the page first: (name, media type, contents).
const FILES: [(&str, &str, &str); 5] = [
    (
        INDEX,
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "page.css",
        "text/css; charset=utf-8",
        include_str!("../web/page.css"),
    ),
    (
        "page.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/page.mjs"),
    ),
    (
        "logic.mjs",
        "text/javascript; charset=utf-8",
        include_str!("../web/logic.mjs"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("../web/icon.svg")),
];

/// The assets with their tags, hashed once, on first use.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| Asset {
            name,
            content_type,
            body,
            etag: entity_tag(body.as_bytes()),
        })
        .collect()
});

/// The page itself, served at `/`.
pub fn index() -> &'static Asset {
    &ASSETS[0]
}

/// The file served at `/assets/{name}`, if there is one (the page is not one of them).
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS[1..].iter().find(|asset| asset.name == name)
}

/// The names of the files under `/assets/`.
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    FILES[1..].iter().map(|&(name, _, _)| name)
}

/// A strong entity tag for `bytes`: the first 8 bytes of their SHA-256, in hex and quotes.
pub fn entity_tag(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// The `Content-Security-Policy` of the page: everything from this server only (no
/// external script can run, nothing inline), except media, which signed URLs load from
/// the CDNs at `cdn_addresses`, and requests to them (the page asks a CDN why a video
/// failed: refused or expired). An address that is not an absolute `http(s)` URL is left
/// out: a relative one resolves to this server, which `'self'` already allows.
pub fn content_security_policy<'a>(cdn_addresses: impl IntoIterator<Item = &'a str>) -> String {
    let mut origins = String::new();
    for address in cdn_addresses {
        if let Some(origin) = web_origin(address) {
            if !origins.split(' ').any(|known| known == origin) {
                origins.push(' ');
                origins.push_str(origin);
            }
        }
    }
    format!(
        "default-src 'self'; media-src 'self'{origins}; connect-src 'self'{origins}; \
         object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The origin (`scheme://host[:port]`) of an absolute `http` or `https` URL, if it is one
/// whose host a policy can name; `None` otherwise.
fn web_origin(address: &str) -> Option<&str> {
    let scheme_end = if address.starts_with("https://") {
        "https://".len()
    } else if address.starts_with("http://") {
        "http://".len()
    } else {
        return None;
    };
    let authority_end = address[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(address.len(), |at| scheme_end + at);
    let authority = &address[scheme_end..authority_end];
    // A host, an optional port, an IPv6 literal in brackets: nothing that could end the
    // source expression or the header (spaces, `;`, `,`, quotes, CR/LF), and no userinfo.
    let plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then(|| &address[..authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_with_its_type_and_a_strong_tag() {
        for name in asset_names() {
            let asset = asset(name).expect("listed asset");
            assert!(!asset.body.is_empty(), "{name} is empty");
            assert!(asset.etag.starts_with('"') && asset.etag.len() == 18);
        }
        assert_eq!(index().name, INDEX);
        assert_eq!(index().content_type, "text/html; charset=utf-8");
        assert!(asset(INDEX).is_none(), "the page is served at / only");
        assert!(asset("missing.js").is_none());
        assert!(asset("").is_none());
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = index().body;
        // logic.mjs is imported by page.mjs, not named by the page.
        for name in asset_names().filter(|&name| name != "logic.mjs") {
            assert!(
                page.contains(&format!("/assets/{name}")),
                "index.html does not use {name}"
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains("style="), "no inline style");
    }

    #[test]
    fn the_policy_names_cdn_origins_once_and_nothing_else() {
        let policy = content_security_policy([
            "https://d2usdis6r1u782.cloudfront.net",
            "http://127.0.0.1:8080/prefix",
            "https://d2usdis6r1u782.cloudfront.net",
            "http://[::1]:9000",
            "relative",
            "https://evil.example; script-src *",
            "https://user@host.example",
            "ftp://files.example",
        ]);
        assert_eq!(
            policy,
            "default-src 'self'; \
             media-src 'self' https://d2usdis6r1u782.cloudfront.net http://127.0.0.1:8080 http://[::1]:9000; \
             connect-src 'self' https://d2usdis6r1u782.cloudfront.net http://127.0.0.1:8080 http://[::1]:9000; \
             object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert!(content_security_policy([]).starts_with("default-src 'self'; media-src 'self';"));
    }
}
