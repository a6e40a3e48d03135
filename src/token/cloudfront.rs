//! Amazon CloudFront signed URLs: a canned policy for one file, a custom policy for a
//! folder or an IP-bound token; RSA-SHA1 (PKCS#1 v1.5) with the key pair's private key.
//!
//! - Canned: `?Expires=<unix>&Signature=<sig>&Key-Pair-Id=<id>`, where the signature covers
//!   `{"Statement":[{"Resource":"<url>","Condition":{"DateLessThan":{"AWS:EpochTime":<unix>}}}]}`.
//! - Custom: `?Policy=<policy>&Signature=<sig>&Key-Pair-Id=<id>`, the policy (sent and signed)
//!   with `Resource` = `https://host/hls/bbb/*` for a streaming manifest, and an
//!   `IpAddress` condition when the token is bound to the client.
//!
//! Policies are written without whitespace with botocore's key order; `Policy` and
//! `Signature` use CloudFront's URL-safe base64 (`+`→`-`, `=`→`_`, `/`→`~`).
//!
//! An RSA-2048 signature costs milliseconds (the `rsa` crate is constant-time, and slow):
//! a thousand times an MD5 token. So expiries are rounded up to a window (a tenth of the
//! TTL, at least a minute), and within a window every request for the same resource (and
//! client, when bound) reuses one signature from a bounded cache (`SignatureCache`).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use parking_lot::Mutex;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::PrivateKey;
use sha1::Sha1;

use super::url::{append_base64, IpText, QueryWriter};
use super::Grant;

/// Signatures kept per CloudFront CDN (each entry a few hundred bytes: ~2 MiB at most).
const CACHE_SLOTS: usize = 4096;

/// Signs CloudFront URLs.
pub struct CloudFrontSigner {
    key: SigningKey<Sha1>,
    /// The public key's ID in CloudFront (`Key-Pair-Id`).
    key_pair_id: Box<str>,
    cache: SignatureCache,
}

impl CloudFrontSigner {
    /// `pem` is the private key of a key pair whose public key CloudFront holds under
    /// `key_pair_id`: PKCS#1 (`BEGIN RSA PRIVATE KEY`, as CloudFront key pairs come) or
    /// PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes).
    pub fn new(pem: &str, key_pair_id: &str) -> Result<Self, String> {
        let pem = pem.trim();
        let key = if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            PrivateKey::from_pkcs1_pem(pem)
                .map_err(|error| format!("the PKCS#1 key does not parse ({error})"))?
        } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            PrivateKey::from_pkcs8_pem(pem)
                .map_err(|error| format!("the PKCS#8 key does not parse or is not RSA ({error})"))?
        } else if pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("the key is encrypted; give the decrypted PEM \
                        (openssl pkey -in key.pem -out plain.pem)"
                .into());
        } else if pem.contains("PUBLIC KEY-----") || pem.contains("CERTIFICATE-----") {
            return Err(
                "this is a public key or certificate; CloudFront URLs are signed \
                        with the key pair's private key"
                    .into(),
            );
        } else {
            return Err(
                "not an RSA private key in PEM (\"-----BEGIN RSA PRIVATE KEY-----\" \
                        or \"-----BEGIN PRIVATE KEY-----\")"
                    .into(),
            );
        };
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(format!(
                "the key has {bits} bits; CloudFront accepts 2048-bit RSA keys"
            ));
        }
        let valid_id =
            !key_pair_id.is_empty() && key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_id {
            return Err(format!(
                "\"key_id\" {key_pair_id:?} is not a CloudFront key ID (letters and digits, e.g. K2JCJMDEHXQW5F)"
            ));
        }
        Ok(CloudFrontSigner {
            key: SigningKey::new(key),
            key_pair_id: key_pair_id.into(),
            cache: SignatureCache::new(CACHE_SLOTS),
        })
    }

    pub(crate) fn write_query(
        &self,
        query: &mut QueryWriter<'_>,
        grant: &Grant<'_>,
        address: &str,
    ) {
        let statement = Statement {
            address,
            path: grant.folder.unwrap_or(grant.src),
            wildcard: grant.folder.is_some(),
            expires: rounded_expiry(grant.now, grant.ttl_seconds),
            client_ip: grant.client_ip,
        };
        if self.cache.write_hit(query, &statement) {
            return;
        }
        let signed = self.sign(&statement);
        query.raw(&signed);
        self.cache.store(&statement, signed);
    }

    /// The query parameters for `statement` (without the leading separator).
    fn sign(&self, statement: &Statement<'_>) -> Box<str> {
        let policy = statement.policy_json();
        let signature = self.key.sign(&policy).to_bytes();
        let mut out = Vec::with_capacity(700);
        if statement.is_canned() {
            out.extend_from_slice(b"Expires=");
            out.extend_from_slice(itoa::Buffer::new().format(statement.expires).as_bytes());
        } else {
            out.extend_from_slice(b"Policy=");
            append_cloudfront_base64(&mut out, &policy);
        }
        out.extend_from_slice(b"&Signature=");
        append_cloudfront_base64(&mut out, &signature);
        out.extend_from_slice(b"&Key-Pair-Id=");
        out.extend_from_slice(self.key_pair_id.as_bytes());
        // Base64, digits and the checked key ID: ASCII.
        String::from_utf8_lossy(&out).into()
    }
}

/// Rounds `now + ttl` up to a window of a tenth of the TTL (at least a minute), so that
/// requests within one window share signatures. Never earlier than `now + ttl`.
pub fn rounded_expiry(now: u64, ttl_seconds: u64) -> u64 {
    let window = (ttl_seconds / 10).max(60);
    now.saturating_add(ttl_seconds)
        .div_ceil(window)
        .saturating_mul(window)
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
struct Statement<'a> {
    address: &'a str,
    /// The source (canned), or its folder (custom, with `wildcard`).
    path: &'a str,
    wildcard: bool,
    expires: u64,
    client_ip: Option<IpAddr>,
}

impl Statement<'_> {
    fn is_canned(&self) -> bool {
        !self.wildcard && self.client_ip.is_none()
    }

    /// The policy, exactly as signed: no whitespace, botocore's key order.
    fn policy_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(256);
        json.extend_from_slice(br#"{"Statement":[{"Resource":""#);
        crate::json::write_escaped(&mut json, self.address);
        crate::json::write_escaped(&mut json, self.path);
        if self.wildcard {
            json.push(b'*');
        }
        json.extend_from_slice(br#"","Condition":{"DateLessThan":{"AWS:EpochTime":"#);
        json.extend_from_slice(itoa::Buffer::new().format(self.expires).as_bytes());
        json.push(b'}');
        if let Some(ip) = self.client_ip {
            json.extend_from_slice(br#","IpAddress":{"AWS:SourceIp":""#);
            json.extend_from_slice(IpText::new(ip).as_str().as_bytes());
            json.extend_from_slice(if ip.is_ipv4() { b"/32" } else { b"/128" });
            json.extend_from_slice(b"\"}");
        }
        json.extend_from_slice(b"}}]}");
        json
    }
}

/// Standard base64 with CloudFront's substitutions, appended.
fn append_cloudfront_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    append_base64(out, &STANDARD, bytes);
    for byte in &mut out[start..] {
        *byte = match *byte {
            b'+' => b'-',
            b'=' => b'_',
            b'/' => b'~',
            other => other,
        };
    }
}

/// Signatures by statement: a fixed number of slots, each holding the last statement that
/// hashed to it. Bounded by construction; a new window or a colliding statement replaces.
struct SignatureCache {
    slots: Box<[Mutex<Option<CachedSignature>>]>,
    hasher: std::hash::RandomState,
}

struct CachedSignature {
    /// The statement's identity: address + path (+ `*`), expiry and client.
    resource: Box<str>,
    wildcard: bool,
    expires: u64,
    client_ip: Option<IpAddr>,
    /// The query parameters to send.
    query: Box<str>,
}

impl CachedSignature {
    fn matches(&self, statement: &Statement<'_>) -> bool {
        self.expires == statement.expires
            && self.wildcard == statement.wildcard
            && self.client_ip == statement.client_ip
            && self.resource.len() == statement.address.len() + statement.path.len()
            && self.resource.starts_with(statement.address)
            && self.resource.ends_with(statement.path)
    }
}

impl SignatureCache {
    fn new(slots: usize) -> Self {
        SignatureCache {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn slot(&self, statement: &Statement<'_>) -> &Mutex<Option<CachedSignature>> {
        let mut hasher = self.hasher.build_hasher();
        statement.address.hash(&mut hasher);
        statement.path.hash(&mut hasher);
        statement.wildcard.hash(&mut hasher);
        statement.expires.hash(&mut hasher);
        statement.client_ip.hash(&mut hasher);
        &self.slots[(hasher.finish() as usize) % self.slots.len()]
    }

    /// Writes the cached parameters for `statement`, if any; whether it did.
    fn write_hit(&self, query: &mut QueryWriter<'_>, statement: &Statement<'_>) -> bool {
        let slot = self.slot(statement).lock();
        match slot.as_ref() {
            Some(cached) if cached.matches(statement) => {
                query.raw(&cached.query);
                true
            }
            _ => false,
        }
    }

    fn store(&self, statement: &Statement<'_>, query: Box<str>) {
        let mut resource = String::with_capacity(statement.address.len() + statement.path.len());
        resource.push_str(statement.address);
        resource.push_str(statement.path);
        *self.slot(statement).lock() = Some(CachedSignature {
            resource: resource.into(),
            wildcard: statement.wildcard,
            expires: statement.expires,
            client_ip: statement.client_ip,
            query,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(json: &[u8]) -> String {
        let mut out = Vec::new();
        append_cloudfront_base64(&mut out, json);
        String::from_utf8(out).expect("ASCII")
    }

    fn canned(address: &str, path: &str, expires: u64) -> Statement<'static> {
        Statement {
            address: Box::leak(address.into()),
            path: Box::leak(path.into()),
            wildcard: false,
            expires,
            client_ip: None,
        }
    }

    /// aws/aws-sdk-go, service/cloudfront/sign/policy_test.go: TestEncodePolicy and
    /// TestEncodePolicyWithQueryParams (a canned policy, its JSON and its encoding).
    #[test]
    fn aws_sdk_go_policy_encoding_vectors() {
        let plain = canned("https://example.com", "/a", 1_257_894_000).policy_json();
        assert_eq!(
            plain,
            br#"{"Statement":[{"Resource":"https://example.com/a","Condition":{"DateLessThan":{"AWS:EpochTime":1257894000}}}]}"#
        );
        assert_eq!(
            encoded(&plain),
            "eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hIiwiQ29uZGl0aW9uIjp7IkRhdGVMZXNzVGhhbiI6eyJBV1M6RXBvY2hUaW1lIjoxMjU3ODk0MDAwfX19XX0_"
        );
        let query = canned("https://example.com", "/a?b=1&c=2", 1_257_894_000).policy_json();
        assert_eq!(
            query,
            br#"{"Statement":[{"Resource":"https://example.com/a?b=1&c=2","Condition":{"DateLessThan":{"AWS:EpochTime":1257894000}}}]}"#
        );
        assert_eq!(
            encoded(&query),
            "eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hP2I9MSZjPTIiLCJDb25kaXRpb24iOnsiRGF0ZUxlc3NUaGFuIjp7IkFXUzpFcG9jaFRpbWUiOjEyNTc4OTQwMDB9fX1dfQ__"
        );
    }

    /// boto/botocore, tests/unit/test_signers.py: test_build_canned_policy.
    #[test]
    fn botocore_canned_policy_vector() {
        assert_eq!(
            canned("", "foo", 1_451_606_400).policy_json(),
            br#"{"Statement":[{"Resource":"foo","Condition":{"DateLessThan":{"AWS:EpochTime":1451606400}}}]}"#
        );
    }

    /// aws-sdk-go-v2, feature/cloudfront/sign/policy_test.go: TestAWSEscape maps `a+b=c/`
    /// to `a-b_c~`; the bytes fb ff encode to `+/8=` in standard base64.
    #[test]
    fn url_safe_substitutions() {
        assert_eq!(encoded(&[0xfb, 0xff]), "-~8_");
    }

    #[test]
    fn custom_policies_cover_folders_and_bind_addresses() {
        let statement = Statement {
            address: "https://d111111abcdef8.cloudfront.net",
            path: "/hls/bbb/",
            wildcard: true,
            expires: 1_357_034_400,
            client_ip: Some([192, 0, 2, 10].into()),
        };
        assert!(!statement.is_canned());
        assert_eq!(
            String::from_utf8(statement.policy_json()).expect("UTF-8"),
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/hls/bbb/*","Condition":{"DateLessThan":{"AWS:EpochTime":1357034400},"IpAddress":{"AWS:SourceIp":"192.0.2.10/32"}}}]}"#
        );
    }

    #[test]
    fn expiry_is_rounded_up_by_less_than_a_window() {
        // ttl 3600: window 360 s.
        assert_eq!(rounded_expiry(1_000_000, 3600), 1_003_680);
        assert_eq!(rounded_expiry(999_720, 3600), 1_003_320);
        for now in (1_700_000_000..1_700_000_400).step_by(7) {
            let expiry = rounded_expiry(now, 3600);
            assert!(expiry >= now + 3600 && expiry < now + 3600 + 360, "{now}");
            // ttl 120: window is the one-minute floor.
            let short = rounded_expiry(now, 120);
            assert!(short >= now + 120 && short < now + 180, "{now}");
        }
    }

    #[test]
    fn keys_are_checked_with_messages_that_name_the_problem() {
        let cases = [
            ("not a key", "not an RSA private key"),
            (
                "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                "public key",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----",
                "encrypted",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                "does not parse",
            ),
        ];
        for (pem, expected) in cases {
            let error = CloudFrontSigner::new(pem, "K2JCJMDEHXQW5F")
                .err()
                .expect(pem);
            assert!(error.contains(expected), "{pem}: {error}");
        }
    }
}
