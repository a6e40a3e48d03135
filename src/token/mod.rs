//! URL signing for CDNs: the schemes, the configured CDNs and the round robin over them.
//!
//! A token request picks one [`Cdn`] from the [`CdnRing`] (one atomic increment, so N
//! consecutive requests spread exactly evenly over N CDNs), reads the clock once, and
//! rewrites every source of the video into a URL that CDN's edge verifies:
//!
//! | scheme | query added to `{address}{src}` | verified by |
//! | --- | --- | --- |
//! | `md5` (default), `sha256` | `?token=hex(H(src + "?secret=" + key))` | the contract's clients |
//! | [`nginx`] | `?md5=…&expires=…` | nginx `secure_link_md5` |
//! | [`akamai`] | `?__token__=ip=…~st=…~exp=…~acl=…~hmac=…` | Akamai EdgeAuth 2.0 |
//! | [`cloudfront`] | `?Expires=…&Signature=…&Key-Pair-Id=…` (or `Policy=…`) | Amazon CloudFront |
//! | [`google`] | `?Expires=…&KeyName=…&Signature=…` (or `URLPrefix=…`) | Google Cloud CDN |
//! | [`bunny`] | `?token=HS256-…&expires=…` | bunny.net token authentication |
//!
//! Every scheme but the contract's two expires (`ttl_seconds` after the request); most
//! can bind the token to the client's address (`bind_ip`); and a source whose type is a
//! streaming manifest (HLS or DASH) gets a token for its whole folder, so that each
//! segment the player fetches passes too ([`Grant::folder`]).
//!
//! Hashes are fed the borrowed `src` slice and the key directly (no concatenated string),
//! and digests are encoded straight into the response buffer. The CDN file is parsed by
//! [`config`]; who may ask for a token at all is [`access`].
//!
//! Keys are secrets: `Cdn`'s `Debug` output redacts them and no error message carries one.

pub mod access;
pub mod akamai;
pub mod bunny;
pub mod cloudfront;
pub mod config;
pub mod google;
mod legacy;
pub mod nginx;
mod url;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use access::{ApiKeys, ApiKeysError, SigningPolicy};
pub use config::{default_cdns, load_cdns, parse_cdns, CdnConfigError};
pub use legacy::{write_token, ContractHash};

use url::QueryWriter;

/// The schemes a CDN entry can name in its `scheme` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeKind {
    /// MD5 of `src + "?secret=" + key`: the contract every existing client relies on.
    Md5,
    /// SHA-256 over the same construction.
    Sha256,
    /// nginx `secure_link_md5`.
    Nginx,
    /// Akamai Edge Authorization Token 2.0.
    Akamai,
    /// Amazon CloudFront signed URLs (RSA-SHA1).
    CloudFront,
    /// Google Cloud CDN signed URLs and URL prefixes.
    Google,
    /// bunny.net token authentication (HMAC-SHA256).
    Bunny,
}

impl SchemeKind {
    pub const ALL: [SchemeKind; 7] = [
        SchemeKind::Md5,
        SchemeKind::Sha256,
        SchemeKind::Nginx,
        SchemeKind::Akamai,
        SchemeKind::CloudFront,
        SchemeKind::Google,
        SchemeKind::Bunny,
    ];

    /// The name used in the CDN file.
    pub fn name(self) -> &'static str {
        match self {
            SchemeKind::Md5 => "md5",
            SchemeKind::Sha256 => "sha256",
            SchemeKind::Nginx => "nginx",
            SchemeKind::Akamai => "akamai",
            SchemeKind::CloudFront => "cloudfront",
            SchemeKind::Google => "google",
            SchemeKind::Bunny => "bunny",
        }
    }

    pub fn from_name(name: &str) -> Option<SchemeKind> {
        SchemeKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheme with its key material, ready to sign.
enum Signer {
    /// The contract's construction, keyed by the plain secret.
    Contract(ContractHash, Box<str>),
    Nginx(nginx::NginxSigner),
    Akamai(akamai::AkamaiSigner),
    CloudFront(Box<cloudfront::CloudFrontSigner>),
    Google(google::GoogleSigner),
    Bunny(bunny::BunnySigner),
}

impl Signer {
    fn kind(&self) -> SchemeKind {
        match self {
            Signer::Contract(ContractHash::Md5, _) => SchemeKind::Md5,
            Signer::Contract(ContractHash::Sha256, _) => SchemeKind::Sha256,
            Signer::Nginx(_) => SchemeKind::Nginx,
            Signer::Akamai(_) => SchemeKind::Akamai,
            Signer::CloudFront(_) => SchemeKind::CloudFront,
            Signer::Google(_) => SchemeKind::Google,
            Signer::Bunny(_) => SchemeKind::Bunny,
        }
    }
}

/// One CDN: where signed URLs point, and how its edge verifies them.
pub struct Cdn {
    /// Human-readable name, shown in logs (the key never is) and chosen by `video-server sign`.
    name: String,
    /// Scheme and host prefixed to every source, e.g. `https://d2usdis6r1u782.cloudfront.net`.
    address: String,
    /// `address` escaped as JSON string content once, at load: every signed URL starts
    /// with it, and escaping it per URL was a twentieth of a token request.
    address_json: Box<[u8]>,
    /// How long a token works, for the schemes that expire.
    ttl_seconds: u64,
    /// Whether tokens carry the client's address.
    bind_ip: bool,
    signer: Signer,
}

impl fmt::Debug for Cdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cdn")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("scheme", &self.scheme())
            .field("key", &"<redacted>")
            .field("ttl_seconds", &self.ttl_seconds)
            .field("bind_ip", &self.bind_ip)
            .finish()
    }
}

/// `text` as JSON string content.
fn json_escaped(text: &str) -> Box<[u8]> {
    let mut escaped = Vec::with_capacity(text.len());
    crate::json::write_escaped(&mut escaped, text);
    escaped.into_boxed_slice()
}

impl Cdn {
    /// A CDN with the contract's MD5 scheme.
    pub fn md5(name: &str, address: &str, key: &str) -> Self {
        Cdn {
            name: name.to_owned(),
            address: address.to_owned(),
            address_json: json_escaped(address),
            ttl_seconds: config::DEFAULT_TTL_SECONDS,
            bind_ip: false,
            signer: Signer::Contract(ContractHash::Md5, key.into()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn scheme(&self) -> SchemeKind {
        self.signer.kind()
    }

    /// Whether this CDN's tokens carry the client's address (so a request must find it).
    pub fn binds_ip(&self) -> bool {
        self.bind_ip
    }

    pub fn ttl_seconds(&self) -> u64 {
        self.ttl_seconds
    }

    /// One line for the start-up log: name, scheme, address, expiry; never the key.
    pub fn summary(&self) -> String {
        match self.signer {
            Signer::Contract(..) => {
                format!("{} ({}, {})", self.name, self.scheme(), self.address)
            }
            _ => format!(
                "{} ({}, {}, ttl {} s{})",
                self.name,
                self.scheme(),
                self.address,
                self.ttl_seconds,
                if self.bind_ip {
                    ", bound to the client IP"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What one source's token depends on, besides the CDN.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The source as the client sent it (decoded JSON string): a path, maybe with a query.
    pub src: &'a str,
    /// `src` without its query string.
    pub path: &'a str,
    /// The request's clock reading, in Unix seconds.
    pub now: u64,
    /// The CDN's `ttl_seconds`.
    pub ttl_seconds: u64,
    /// The client's address, when the CDN binds tokens to it.
    pub client_ip: Option<IpAddr>,
    /// For a streaming manifest, the folder its token covers (`/hls/bbb/` for
    /// `/hls/bbb/master.m3u8`); `None` for a single file.
    pub folder: Option<&'a str>,
}

impl<'a> Grant<'a> {
    /// The grant for `src` of the given media type.
    pub fn new(
        src: &'a str,
        media_type: &str,
        now: u64,
        ttl_seconds: u64,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let path = src.split_once('?').map_or(src, |(path, _)| path);
        let folder = if is_streaming_manifest(media_type) {
            path.rfind('/').map(|slash| &path[..=slash])
        } else {
            None
        };
        Grant {
            src,
            path,
            now,
            ttl_seconds,
            client_ip,
            folder,
        }
    }

    /// Exactly `now + ttl_seconds`: the expiry of every hash and HMAC scheme.
    pub fn expires(&self) -> u64 {
        self.now.saturating_add(self.ttl_seconds)
    }
}

/// Whether a source of this `type` is an HLS or DASH manifest, whose token must cover the
/// segments beside it.
pub fn is_streaming_manifest(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    [
        "application/x-mpegurl",
        "application/vnd.apple.mpegurl",
        "application/dash+xml",
    ]
    .iter()
    .any(|manifest| essence.eq_ignore_ascii_case(manifest))
}

/// One token request's signing: the CDN chosen for it, the clock read once, and the
/// client's address when that CDN binds tokens to it.
#[derive(Debug, Clone, Copy)]
pub struct RequestSigner<'c> {
    cdn: &'c Cdn,
    now: u64,
    client_ip: Option<IpAddr>,
}

impl<'c> RequestSigner<'c> {
    /// `now` is in Unix seconds; `client_ip` is only used by CDNs that bind tokens to it.
    pub fn new(cdn: &'c Cdn, now: u64, client_ip: Option<IpAddr>) -> Self {
        RequestSigner {
            cdn,
            now,
            client_ip,
        }
    }

    pub fn cdn(&self) -> &'c Cdn {
        self.cdn
    }

    /// Appends the signed URL for one source to `out`, as JSON string content (escaped, no
    /// quotes). `src` is a string decoded from the request (see [`crate::json::write_decoded`]).
    #[allow(clippy::ptr_arg)] // borrowed or owned is the information used
    pub fn write_signed_url(&self, out: &mut Vec<u8>, src: &Cow<'_, str>, media_type: &str) {
        let cdn = self.cdn;
        out.extend_from_slice(&cdn.address_json);
        if let Signer::Contract(hash, key) = &cdn.signer {
            // The contract: `?token=` even after an existing query, exactly as the old service.
            crate::json::write_decoded(out, src);
            out.extend_from_slice(b"?token=");
            legacy::write_token(out, *hash, src, key);
            return;
        }
        let client_ip = if cdn.bind_ip { self.client_ip } else { None };
        let grant = Grant::new(src, media_type, self.now, cdn.ttl_seconds, client_ip);
        if let Signer::Bunny(signer) = &cdn.signer {
            // Bunny moves the source's own query parameters behind its token.
            return signer.write_path_and_query(out, &grant);
        }
        crate::json::write_decoded(out, src);
        let query = &mut QueryWriter::new(out, &grant);
        match &cdn.signer {
            Signer::Nginx(signer) => signer.write_query(query, &grant),
            Signer::Akamai(signer) => signer.write_query(query, &grant),
            Signer::CloudFront(signer) => signer.write_query(query, &grant, &cdn.address),
            Signer::Google(signer) => signer.write_query(query, &grant, &cdn.address),
            // Written above.
            Signer::Contract(..) | Signer::Bunny(_) => {}
        }
    }

    /// The signed URL as a plain string (for `video-server sign`).
    pub fn signed_url(&self, src: &str, media_type: &str) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_signed_url(&mut out, &Cow::Owned(src.to_owned()), media_type);
        // `out` is JSON string content; decoding it gives the URL itself.
        let mut quoted = Vec::with_capacity(out.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(&out);
        quoted.push(b'"');
        serde_json::from_slice(&quoted).unwrap_or_else(|_| String::from_utf8_lossy(&out).into())
    }
}

/// What `POST /video/token` signs with: the CDNs and, if any, the API keys. Read from the
/// `--cdns` and `--api-keys` files at start and again on `SIGHUP`, and swapped whole, so a
/// request in flight finishes with the keys it started with.
#[derive(Debug)]
pub struct SigningSetup {
    pub cdns: CdnRing,
    pub api_keys: Option<ApiKeys>,
}

/// The setup as the server holds it: read without a lock, replaced on reload.
pub type SharedSigning = std::sync::Arc<arc_swap::ArcSwap<SigningSetup>>;

/// Why the signing setup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SigningSetupError {
    #[error(transparent)]
    Cdns(#[from] CdnConfigError),
    #[error(transparent)]
    ApiKeys(#[from] ApiKeysError),
}

impl SigningSetup {
    /// Reads the CDN file (the contract's three CDNs without one) and the API key file.
    pub fn load(
        cdns: Option<&std::path::Path>,
        api_keys: Option<&std::path::Path>,
    ) -> Result<Self, SigningSetupError> {
        let cdns = match cdns {
            Some(path) => load_cdns(path)?,
            None => default_cdns(),
        };
        let api_keys = api_keys.map(ApiKeys::load).transpose()?;
        Ok(SigningSetup {
            // Neither load_cdns nor default_cdns returns an empty list.
            cdns: CdnRing::new(cdns).ok_or_else(|| CdnConfigError::Empty {
                path: "(built-in)".into(),
            })?,
            api_keys,
        })
    }

    /// The CDNs for the log, one summary each (never a key).
    pub fn summary(&self) -> Vec<String> {
        self.cdns.cdns().iter().map(Cdn::summary).collect()
    }
}

/// The clock reading every token of one request shares, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The configured CDNs and the round-robin cursor over them.
#[derive(Debug)]
pub struct CdnRing {
    /// Never empty: [`CdnRing::new`] refuses an empty list.
    cdns: Box<[Cdn]>,
    /// Requests served so far; `cursor % len` is the CDN of the next request.
    cursor: AtomicUsize,
}

impl CdnRing {
    /// Builds a ring; `None` if `cdns` is empty.
    pub fn new(cdns: Vec<Cdn>) -> Option<Self> {
        if cdns.is_empty() {
            return None;
        }
        Some(CdnRing {
            cdns: cdns.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
        })
    }

    /// The CDN for the next request, in configured order.
    #[inline]
    pub fn next(&self) -> &Cdn {
        // Relaxed is enough: only the counter's own sequence matters, and fetch_add
        // hands every caller a distinct value, so the spread stays exact under contention.
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        &self.cdns[turn % self.cdns.len()]
    }

    pub fn cdns(&self) -> &[Cdn] {
        &self.cdns
    }

    /// The CDN of that name.
    pub fn find(&self, name: &str) -> Option<&Cdn> {
        self.cdns.iter().find(|cdn| cdn.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_spreads_exactly_evenly_in_order() {
        let ring = CdnRing::new(default_cdns()).expect("non-empty");
        let names: Vec<&str> = (0..6).map(|_| ring.next().name()).collect();
        assert_eq!(
            names,
            [
                "AWS CDN 1",
                "AWS CDN 2",
                "AWS CDN 3",
                "AWS CDN 1",
                "AWS CDN 2",
                "AWS CDN 3"
            ]
        );
    }

    #[test]
    fn ring_spread_is_exact_across_threads() {
        let ring = CdnRing::new(default_cdns()).expect("non-empty");
        let counts = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut counts = [0usize; 3];
                        for _ in 0..3_000 {
                            let name = ring.next().name();
                            let slot = ring.cdns().iter().position(|c| c.name() == name);
                            counts[slot.expect("cdn from the ring")] += 1;
                        }
                        counts
                    })
                })
                .collect();
            workers.into_iter().fold([0usize; 3], |mut total, worker| {
                let counts = worker.join().expect("worker thread");
                for (sum, count) in total.iter_mut().zip(counts) {
                    *sum += count;
                }
                total
            })
        });
        assert_eq!(counts, [4_000, 4_000, 4_000]);
    }

    #[test]
    fn empty_ring_is_refused() {
        assert!(CdnRing::new(Vec::new()).is_none());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let shown = format!("{:?}", default_cdns());
        assert!(!shown.contains("U5e0IskwtIfA"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn manifests_get_folder_grants_and_files_do_not() {
        let hls = Grant::new("/hls/bbb/master.m3u8", "application/x-mpegURL", 10, 5, None);
        assert_eq!(hls.folder, Some("/hls/bbb/"));
        assert_eq!(hls.expires(), 15);
        let apple = Grant::new("/a/b.m3u8?v=2", "application/vnd.apple.mpegurl", 0, 1, None);
        assert_eq!((apple.path, apple.folder), ("/a/b.m3u8", Some("/a/")));
        let dash = Grant::new(
            "/dash/x.mpd",
            "Application/DASH+XML; charset=utf-8",
            0,
            1,
            None,
        );
        assert_eq!(dash.folder, Some("/dash/"));
        let mp4 = Grant::new("/hls/bbb/file.mp4", "video/mp4", 0, 1, None);
        assert_eq!(mp4.folder, None);
        let rootless = Grant::new("master.m3u8", "application/x-mpegURL", 0, 1, None);
        assert_eq!(rootless.folder, None);
    }

    #[test]
    fn signed_url_decodes_the_json_content() {
        let cdn = Cdn::md5("test", "http://www.cdn.com", "U5e0IskwtIfA");
        let url = RequestSigner::new(&cdn, 0, None).signed_url("/big_buck_bunny.mp4", "video/mp4");
        assert_eq!(
            url,
            "http://www.cdn.com/big_buck_bunny.mp4?token=666906502bbc3550b95d561fa14af3ae"
        );
    }
}
