//! URL signing for CDNs: the schemes, the configured CDNs and the round robin over them.
//!
//! A token request picks one [`Cdn`] from the [`CdnRing`] (one atomic increment, so N
//! consecutive requests spread exactly evenly over N CDNs), then every source of the video
//! is rewritten to `{cdn.address}{src}?token={hex(hash(src + "?secret=" + cdn.key))}`.
//! The hash is fed the borrowed `src` slice and the key directly (no concatenated string),
//! and the hex digest is written straight into the response buffer.
//!
//! Keys are secrets: `Cdn`'s `Debug` output redacts them and no error message carries one.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::{Digest, Md5};
use serde::Deserialize;
use sha2::Sha256;

/// The hash a CDN verifies tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningScheme {
    /// MD5, the legacy contract every existing client and CDN relies on.
    #[default]
    Md5,
    /// SHA-256 over the same construction, for CDNs configured to expect it.
    Sha256,
}

/// One CDN: where signed URLs point and the shared secret that signs them.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cdn {
    /// Human-readable name, shown in logs (the key never is).
    pub name: String,
    /// Scheme and host prefixed to every error, e.g. `https://d2usdis6r1u782.cloudfront.net`.
    pub address: String,
    /// Shared secret appended to the source before hashing.
    pub key: String,
    /// Which hash the CDN checks; `md5` when omitted.
    #[serde(default)]
    pub scheme: SigningScheme,
}

impl fmt::Debug for Cdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cdn")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("key", &"<redacted>")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Cdn {
    fn new(name: &str, address: &str, key: &str) -> Self {
        Cdn {
            name: name.to_owned(),
            address: address.to_owned(),
            key: key.to_owned(),
            scheme: SigningScheme::Md5,
        }
    }

    /// Appends the signed URL for `src` to `out`, as JSON string content (escaped, no
    /// quotes): `{address}{src}?token={hex}`. `src` is a string decoded from the request
    /// (see [`crate::json::write_decoded`]).
    #[allow(clippy::ptr_arg)] // borrowed or owned is the information used
    pub fn write_signed_url(&self, out: &mut Vec<u8>, src: &Cow<'_, str>) {
        crate::json::write_escaped(out, &self.address);
        crate::json::write_decoded(out, src);
        out.extend_from_slice(b"?token=");
        write_token(out, self.scheme, src, &self.key);
    }
}

/// The CDNs the old service was configured with: the default when `--cdns` is not given.
pub fn default_cdns() -> Vec<Cdn> {
    vec![
        Cdn::new(
            "AWS CDN 1",
            "https://d2usdis6r1u782.cloudfront.net",
            "U5e0IskwtIfA",
        ),
        Cdn::new(
            "AWS CDN 2",
            "https://d2oukvvww2uoq.cloudfront.net",
            "9Weh3dv6QgDN",
        ),
        Cdn::new(
            "AWS CDN 3",
            "https://dbke9ww44or29.cloudfront.net",
            "7x1vGkO75i1Y",
        ),
    ]
}

/// Why a CDN configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CdnConfigError {
    #[error("cannot read CDN file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("CDN file {path} is not a JSON array of {{name, address, key, scheme}}: {reason}")]
    Parse { path: String, reason: String },
    #[error("CDN file {path} lists no CDN; at least one is required")]
    Empty { path: String },
    #[error("CDN file {path}: entry {index} ({name}) has an empty {field}")]
    EmptyField {
        path: String,
        index: usize,
        name: String,
        field: &'static str,
    },
}

/// Loads a JSON array of `{name, address, key, scheme}` objects.
pub fn load_cdns(path: &Path) -> Result<Vec<Cdn>, CdnConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| CdnConfigError::Read {
        path: shown.clone(),
        error,
    })?;
    // serde_json's messages quote the offending token; for a key that would leak the
    // secret only if the file's shape is wrong around it, which is the operator's own file.
    let cdns: Vec<Cdn> = serde_json::from_slice(&bytes).map_err(|error| CdnConfigError::Parse {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    if cdns.is_empty() {
        return Err(CdnConfigError::Empty { path: shown });
    }
    for (index, cdn) in cdns.iter().enumerate() {
        let empty_field = [
            ("name", &cdn.name),
            ("address", &cdn.address),
            ("key", &cdn.key),
        ]
        .into_iter()
        .find(|(_, value)| value.trim().is_empty());
        if let Some((field, _)) = empty_field {
            return Err(CdnConfigError::EmptyField {
                path: shown,
                index,
                name: cdn.name.clone(),
                field,
            });
        }
    }
    Ok(cdns)
}

/// The configured CDNs and the round-robin cursor over them.
#[derive(Debug)]
pub struct CdnRing {
    /// Never empty: [`CdnRing::new`] refuses an empty list.
    cdns: Box<[Cdn]>,
    /// Requests served so far; `next % len` is the CDN of the next request.
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
}

/// Appends the lowercase hex token for `src` under `key` to `out`.
#[inline]
pub fn write_token(out: &mut Vec<u8>, scheme: SigningScheme, src: &str, key: &str) {
    match scheme {
        SigningScheme::Md5 => write_digest::<Md5>(out, src, key),
        SigningScheme::Sha256 => write_digest::<Sha256>(out, src, key),
    }
}

/// The token construction, for any hash: hex(H(src + "?secret=" + key)), fed in pieces.
#[inline]
fn write_digest<D: Digest>(out: &mut Vec<u8>, src: &str, key: &str) {
    let digest = D::new()
        .chain_update(src.as_bytes())
        .chain_update(b"?secret=")
        .chain_update(key.as_bytes())
        .finalize();
    write_hex(out, &digest);
}

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0x0f)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC_1080: &str = "/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4";
    const SRC_720: &str = "/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4";

    fn token(scheme: SigningScheme, src: &str, key: &str) -> String {
        let mut out = Vec::new();
        write_token(&mut out, scheme, src, key);
        String::from_utf8(out).expect("hex is ASCII")
    }

    #[test]
    fn contract_vector_big_buck_bunny() {
        assert_eq!(
            token(SigningScheme::Md5, "/big_buck_bunny.mp4", "U5e0IskwtIfA"),
            "666906502bbc3550b95d561fa14af3ae"
        );
        let cdn = Cdn::new("test", "http://www.cdn.com", "U5e0IskwtIfA");
        let mut url = Vec::new();
        cdn.write_signed_url(&mut url, &Cow::Borrowed("/big_buck_bunny.mp4"));
        assert_eq!(
            url,
            b"http://www.cdn.com/big_buck_bunny.mp4?token=666906502bbc3550b95d561fa14af3ae"
        );
    }

    #[test]
    fn contract_vectors_key_0000_and_1111() {
        assert_eq!(
            token(SigningScheme::Md5, SRC_1080, "0000"),
            "a3b44a7c71a89adfb06cc383f8e00243"
        );
        assert_eq!(
            token(SigningScheme::Md5, SRC_720, "0000"),
            "38e67683cae0e1a71565b363fcaa13ef"
        );
        assert_eq!(
            token(SigningScheme::Md5, SRC_1080, "1111"),
            "8aa62616c28f90dbddebb2a4eb498975"
        );
    }

    #[test]
    fn contract_vectors_default_cdns() {
        let expected = [
            (
                "c6346e68c6808c506faa8851ca0f6aef",
                "32f18240383a86ea77cd060475ab3c0d",
            ),
            (
                "39ccd96eb02069a97a9cca39980e4c12",
                "cd358d0e3ae68b6268004dfb2e161c11",
            ),
            (
                "5b52cf86a609afedc6b6a4a110f22325",
                "885c1e6f3d0e6cb191d3b73e8cc7f01a",
            ),
        ];
        for (cdn, (hd, sd)) in default_cdns().iter().zip(expected) {
            assert_eq!(token(cdn.scheme, SRC_1080, &cdn.key), hd, "{}", cdn.name);
            assert_eq!(token(cdn.scheme, SRC_720, &cdn.key), sd, "{}", cdn.name);
        }
    }

    #[test]
    fn contract_vector_sha256() {
        assert_eq!(
            token(SigningScheme::Sha256, "/big_buck_bunny.mp4", "U5e0IskwtIfA"),
            "31817cbe296a7a575348047df3f9d3d29a17f268668858a67a9f5994c2c7661f"
        );
    }

    #[test]
    fn ring_spreads_exactly_evenly_in_order() {
        let ring = CdnRing::new(default_cdns()).expect("non-empty");
        let names: Vec<&str> = (0..6).map(|_| ring.next().name.as_str()).collect();
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
                            let name = &ring.next().name;
                            let slot = ring.cdns().iter().position(|c| &c.name == name);
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
    fn cdn_file_loads_schemes_and_defaults_to_md5() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cdns.json");
        std::fs::write(
            &path,
            r#"[{"name":"a","address":"https://a.example","key":"k1"},
                {"name":"b","address":"https://b.example","key":"k2","scheme":"sha256"}]"#,
        )
        .expect("write fixture");
        let cdns = load_cdns(&path).expect("valid file");
        assert_eq!(cdns[0].scheme, SigningScheme::Md5);
        assert_eq!(cdns[1].scheme, SigningScheme::Sha256);
    }

    #[test]
    fn cdn_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cdns.json");
        let cases = [
            ("[]", "lists no CDN"),
            (r#"[{"name":"a","address":"","key":"k"}]"#, "empty address"),
            (
                r#"[{"name":"a","address":"x","key":"k","scheme":"crc32"}]"#,
                "unknown variant",
            ),
            (
                r#"[{"name":"a","address":"x","key":"k","extra":1}]"#,
                "unknown field",
            ),
        ];
        for (content, expected) in cases {
            std::fs::write(&path, content).expect("write fixture");
            let message = load_cdns(&path).expect_err(content).to_string();
            assert!(message.contains(expected), "{content}: {message}");
        }
        let missing = load_cdns(&dir.path().join("absent.json")).expect_err("missing file");
        assert!(missing.to_string().contains("cannot read CDN file"));
    }
}
