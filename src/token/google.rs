//! Google Cloud CDN signed URLs (`Expires`, `KeyName`, `Signature`) and signed URL prefixes.
//!
//! For one file the signature is a base64url (padded) HMAC-SHA1 of the whole URL up to
//! and including `&KeyName=…`, keyed by the 16-byte key Cloud CDN gives out base64url
//! encoded. For a streaming manifest the token covers a URL prefix instead: the signed
//! string is `URLPrefix=<base64url(address + folder)>&Expires=…&KeyName=…` alone, so every
//! segment under the folder passes. Cloud CDN cannot bind a signed URL to a client
//! address, so `bind_ip` is refused for this scheme. The tests reproduce the vectors of
//! Google's own samples.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::write::EncoderWriter;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::io::Write;

use super::url::QueryWriter;
use super::Grant;

/// Signs Cloud CDN URLs and URL prefixes.
pub struct GoogleSigner {
    key: [u8; 16],
    key_name: Box<str>,
}

impl GoogleSigner {
    /// `key` as Cloud CDN shows it (base64url, 16 bytes); `key_name` is the key's name in
    /// the backend's configuration.
    pub fn new(key: &str, key_name: &str) -> Result<Self, String> {
        let key = key.trim();
        let decoded = [URL_SAFE, URL_SAFE_NO_PAD, STANDARD]
            .iter()
            .find_map(|engine| engine.decode(key).ok())
            .ok_or("\"key\" must be base64url (as Cloud CDN shows a signing key)")?;
        let key: [u8; 16] = decoded.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "\"key\" decodes to {} bytes; a Cloud CDN signing key has 16",
                bytes.len()
            )
        })?;
        let valid_name = !key_name.is_empty()
            && key_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!(
                "\"key_id\" {key_name:?} is not a Cloud CDN key name (letters, digits, - and _)"
            ));
        }
        Ok(GoogleSigner {
            key,
            key_name: key_name.into(),
        })
    }

    pub(crate) fn write_query(
        &self,
        query: &mut QueryWriter<'_>,
        grant: &Grant<'_>,
        address: &str,
    ) {
        // HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&self.key) else {
            return;
        };
        let signed_from = query.position();
        match grant.folder {
            Some(folder) => {
                {
                    let mut prefix = EncoderWriter::new(query.start("URLPrefix"), &URL_SAFE);
                    // Writing into a Vec cannot fail.
                    let _ = prefix.write_all(address.as_bytes());
                    let _ = prefix.write_all(folder.as_bytes());
                    let _ = prefix.finish();
                }
                // Only the policy is signed: `URLPrefix=…&Expires=…&KeyName=…`.
                self.write_policy(query, grant);
                let policy = query.written_since(signed_from);
                mac.update(&policy[1..]);
            }
            None => {
                // The whole URL is signed, as written (these values need no escaping).
                mac.update(address.as_bytes());
                mac.update(grant.src.as_bytes());
                self.write_policy(query, grant);
                mac.update(query.written_since(signed_from));
            }
        }
        query.base64("Signature", &URL_SAFE, &mac.finalize().into_bytes());
    }

    fn write_policy(&self, query: &mut QueryWriter<'_>, grant: &Grant<'_>) {
        query.number("Expires", grant.expires());
        query.text("KeyName", &self.key_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "nZtRohdNF9m3cKM24IcK4w==";

    fn sign(address: &str, src: &str, folder: Option<&str>, expires: u64) -> String {
        let signer = GoogleSigner::new(KEY, "my-key").expect("valid key");
        let mut grant = Grant::new(src, "video/mp4", expires - 60, 60, None);
        grant.folder = folder;
        let mut out = format!("{address}{src}").into_bytes();
        signer.write_query(&mut QueryWriter::new(&mut out, &grant), &grant, address);
        String::from_utf8(out).expect("ASCII")
    }

    /// GoogleCloudPlatform/python-docs-samples, cdn/snippets_test.py: sign_url.
    #[test]
    fn python_samples_signed_urls() {
        assert_eq!(
            sign("http://35.186.234.33", "/index.html", None, 1_549_751_401),
            "http://35.186.234.33/index.html?Expires=1549751401&KeyName=my-key&Signature=CRFqQnVfFyiUyR63OQf-HRUpIwc="
        );
        assert_eq!(
            sign("http://www.example.com", "/", None, 1_549_751_401),
            "http://www.example.com/?Expires=1549751401&KeyName=my-key&Signature=OqDUFfHpN5Vxga6r80bhsgxKves="
        );
        assert_eq!(
            sign("http://www.example.com", "/some/path?some=query&another=param", None, 1_549_751_401),
            "http://www.example.com/some/path?some=query&another=param&Expires=1549751401&KeyName=my-key&Signature=9Q9TCxSju8-W5nUkk5CuTrun2_o="
        );
    }

    /// The same file: sign_url_prefix.
    #[test]
    fn python_samples_signed_url_prefixes() {
        assert_eq!(
            sign("http://35.186.234.33", "/index.html", Some("/"), 1_549_751_401),
            "http://35.186.234.33/index.html?URLPrefix=aHR0cDovLzM1LjE4Ni4yMzQuMzMv&Expires=1549751401&KeyName=my-key&Signature=j7HYgoQ8dIOVsW3Rw4cpkjWfRMA="
        );
        assert_eq!(
            sign("http://www.example.com", "/", Some("/"), 1_549_751_401),
            "http://www.example.com/?URLPrefix=aHR0cDovL3d3dy5leGFtcGxlLmNvbS8=&Expires=1549751401&KeyName=my-key&Signature=UdT5nVks6Hh8QFMJI9kmXuXYBk0="
        );
        assert_eq!(
            sign("http://www.example.com", "/some/path?some=query&another=param", Some("/some/"), 1_549_751_401),
            "http://www.example.com/some/path?some=query&another=param&URLPrefix=aHR0cDovL3d3dy5leGFtcGxlLmNvbS9zb21lLw==&Expires=1549751401&KeyName=my-key&Signature=3th4ThmpS95I1TAKYyYSCSq3dnQ="
        );
    }

    /// GoogleCloudPlatform/golang-samples, cdn/signedurls/signurl_test.go.
    #[test]
    fn go_samples_signed_urls_and_prefixes() {
        assert_eq!(
            sign("http://35.186.234.33", "/index.html", None, 1_558_131_350),
            "http://35.186.234.33/index.html?Expires=1558131350&KeyName=my-key&Signature=fm6JZSmKNsB5sys8VGr-JE4LiiE="
        );
        assert_eq!(
            sign("https://www.google.com", "/", None, 1_549_751_401),
            "https://www.google.com/?Expires=1549751401&KeyName=my-key&Signature=M_QO7BGHi2sGqrJO-MDr0uhDFuc="
        );
        assert_eq!(
            sign("https://www.example.com", "/some/path?some=query&another=param", None, 1_549_751_461),
            "https://www.example.com/some/path?some=query&another=param&Expires=1549751461&KeyName=my-key&Signature=sTqqGX5hUJmlRJ84koAIhWW_c3M="
        );
        // signURLWithPrefix returns the query alone.
        let segments = sign(
            "https://media.example.com",
            "/segments/x.m3u8",
            Some("/segments/"),
            1_558_131_350,
        );
        assert!(segments.ends_with("?URLPrefix=aHR0cHM6Ly9tZWRpYS5leGFtcGxlLmNvbS9zZWdtZW50cy8=&Expires=1558131350&KeyName=my-key&Signature=HWE5tBTZgnYVoZzVLG7BtRnOsgk="), "{segments}");
        let root = sign(
            "https://www.google.com",
            "/x.m3u8",
            Some("/"),
            1_549_751_401,
        );
        assert!(root.ends_with("?URLPrefix=aHR0cHM6Ly93d3cuZ29vZ2xlLmNvbS8=&Expires=1549751401&KeyName=my-key&Signature=o0zZ77jb7BgtGRPQEaXmX3cCLh8="), "{root}");
    }

    #[test]
    fn keys_and_names_are_checked_without_echoing_the_key() {
        // Go's TestReadKeyFile: the key decodes to these 16 bytes.
        let signer = GoogleSigner::new(KEY, "my-key").expect("valid");
        assert_eq!(
            signer.key,
            [
                0x9d, 0x9b, 0x51, 0xa2, 0x17, 0x4d, 0x17, 0xd9, 0xb7, 0x70, 0xa3, 0x36, 0xe0, 0x87,
                0x0a, 0xe3
            ]
        );
        assert!(GoogleSigner::new("nZtRohdNF9m3cKM24IcK4w", "my-key").is_ok());
        let short = GoogleSigner::new("c2VjcmV0LWtleQ==", "k")
            .err()
            .expect("too short");
        assert!(
            short.contains("10 bytes") && !short.contains("c2VjcmV0"),
            "{short}"
        );
        assert!(GoogleSigner::new("not base64!", "k").is_err());
        assert!(GoogleSigner::new(KEY, "").is_err());
        assert!(GoogleSigner::new(KEY, "a&b").is_err());
    }
}
