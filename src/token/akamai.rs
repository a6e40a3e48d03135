//! Akamai Edge Authorization Token 2.0, in the query parameter `token_name` (`__token__`).
//!
//! The token is `[ip=<client>~]st=<now>~exp=<expiry>[~acl=<folder>*]~hmac=<hex>`, where the
//! HMAC-SHA256 (keyed by the hex-decoded key) covers every field before it and, for a
//! single file, `~url=<path>`, which is hashed but not sent (the edge adds the path it
//! serves). A streaming manifest gets `acl=/hls/bbb/*`, valid for every segment beside it.
//! Field order, delimiters and what is hashed follow Akamai's EdgeAuth-Token SDKs, whose
//! published vectors are the tests below. Values are not escaped (the SDKs' default,
//! `escape_early` off), so paths should not contain `~`, `!` or `&`.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::url::{append_hex, IpText, QueryWriter};
use super::Grant;

/// The query parameter the edge reads unless the CDN entry names another.
pub const DEFAULT_TOKEN_NAME: &str = "__token__";

/// What the token lets through.
#[derive(Debug, Clone, Copy)]
enum Access<'a> {
    /// Every path that starts with the first part (followed by the second, e.g. `*`).
    Acl(&'a str, &'a str),
    /// Exactly this path (hashed, not sent).
    Url(&'a str),
}

/// Signs EdgeAuth 2.0 tokens.
pub struct AkamaiSigner {
    /// The hex-decoded key.
    key: Box<[u8]>,
    token_name: Box<str>,
}

impl AkamaiSigner {
    /// `hex_key` as Akamai's property configuration shows it (an even number of hex digits).
    pub fn new(hex_key: &str, token_name: Option<&str>) -> Result<Self, String> {
        let key = decode_hex(hex_key.trim())
            .ok_or("\"key\" must be hex digits (an EdgeAuth key is hex-encoded)")?;
        let token_name = token_name.unwrap_or(DEFAULT_TOKEN_NAME);
        let valid_name = !token_name.is_empty()
            && token_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid_name {
            return Err(format!(
                "\"token_name\" {token_name:?} is not a query parameter name (letters, digits, _ - .)"
            ));
        }
        Ok(AkamaiSigner {
            key: key.into_boxed_slice(),
            token_name: token_name.into(),
        })
    }

    pub(crate) fn write_query(&self, query: &mut QueryWriter<'_>, grant: &Grant<'_>) {
        let access = match grant.folder {
            Some(folder) => Access::Acl(folder, "*"),
            None => Access::Url(grant.path),
        };
        let out = query.start(&self.token_name);
        self.write_token(out, grant.client_ip, grant.now, grant.expires(), access);
    }

    /// Appends the token (without its name) to `out`, as JSON string content.
    fn write_token(
        &self,
        out: &mut Vec<u8>,
        ip: Option<IpAddr>,
        start: u64,
        expires: u64,
        access: Access<'_>,
    ) {
        // The key was checked when the CDN file was read; HMAC takes a key of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return;
        };
        let mut fields = Fields {
            mac: &mut mac,
            out,
            first: true,
        };
        if let Some(ip) = ip {
            fields.sent("ip=", IpText::new(ip).as_str(), "");
        }
        fields.sent("st=", itoa::Buffer::new().format(start), "");
        fields.sent("exp=", itoa::Buffer::new().format(expires), "");
        match access {
            Access::Acl(prefix, suffix) => fields.sent("acl=", prefix, suffix),
            Access::Url(path) => fields.hashed("url=", path, ""),
        }
        let digest = mac.finalize().into_bytes();
        out.extend_from_slice(b"~hmac=");
        append_hex(out, &digest);
    }
}

/// The `~`-delimited fields: each goes into the HMAC raw and, unless hashed only, into the
/// URL escaped for JSON. Hashed-only fields come last, so both see the same delimiters.
struct Fields<'m, 'o> {
    mac: &'m mut Hmac<Sha256>,
    out: &'o mut Vec<u8>,
    first: bool,
}

impl Fields<'_, '_> {
    fn sent(&mut self, name: &str, value: &str, suffix: &str) {
        if !self.first {
            self.out.push(b'~');
        }
        self.out.extend_from_slice(name.as_bytes());
        crate::json::write_escaped(self.out, value);
        crate::json::write_escaped(self.out, suffix);
        self.hashed(name, value, suffix);
    }

    fn hashed(&mut self, name: &str, value: &str, suffix: &str) {
        if !self.first {
            self.mac.update(b"~");
        }
        self.first = false;
        self.mac.update(name.as_bytes());
        self.mac.update(value.as_bytes());
        self.mac.update(suffix.as_bytes());
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |byte: u8| char::from(byte).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // akamai/EdgeAuth-Token-Node, test/test_local.json (checked by test/localtest.js):
    // every vector shares this key, start time 1492404013 and the token name `_token_`.
    const KEY: &str = "7a5c2be9f42a1f32cd889d1cf775f05d0cd162bd2871d00fe705ab28c9bba5a5";
    const START: u64 = 1_492_404_013;

    fn token(ip: Option<IpAddr>, expires: u64, access: Access<'_>) -> String {
        let signer = AkamaiSigner::new(KEY, Some("_token_")).expect("valid key");
        let mut out = b"_token_=".to_vec();
        signer.write_token(&mut out, ip, START, expires, access);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn edgeauth_node_published_vectors() {
        // atk2: windowSeconds 604800, accessList ["/*"].
        assert_eq!(
            token(None, START + 604_800, Access::Acl("/", "*")),
            "_token_=st=1492404013~exp=1493008813~acl=/*~hmac=57cef6aa3c30939b3f599ee7b1bda3bd63c58937ff713d605d5139e449e09a3c"
        );
        // atk3: windowSeconds 604800, accessList ["/path1", "/path2"] (joined with `!`).
        assert_eq!(
            token(None, START + 604_800, Access::Acl("/path1!/path2", "")),
            "_token_=st=1492404013~exp=1493008813~acl=/path1!/path2~hmac=17f163a7cb8d38e2bb97849375674758cc47a5937764c4b2e82678f23cee6380"
        );
        // atk4: endTime 1492405000, the same access list.
        assert_eq!(
            token(None, 1_492_405_000, Access::Acl("/path1!/path2", "")),
            "_token_=st=1492404013~exp=1492405000~acl=/path1!/path2~hmac=918aa0dbc9a471967c4996b66e9c7e32b75f9784e4cec520fb45c4c1a56f8253"
        );
        // atk5: endTime 1492405000, url "/target/url" (hashed, not sent).
        assert_eq!(
            token(None, 1_492_405_000, Access::Url("/target/url")),
            "_token_=st=1492404013~exp=1492405000~hmac=637d42fd0739315be4129508f9d3cbeba15c7ab561d767844f1fd468c4fb0694"
        );
    }

    #[test]
    fn grants_become_acl_for_folders_and_url_for_files() {
        let signer = AkamaiSigner::new(KEY, None).expect("valid key");
        let ip = Some(IpAddr::from([192, 168, 0, 1]));
        let sign = |src: &str, media_type: &str| {
            let grant = Grant::new(src, media_type, START, 3600, ip);
            let mut out = src.as_bytes().to_vec();
            signer.write_query(&mut QueryWriter::new(&mut out, &grant), &grant);
            String::from_utf8(out).expect("ASCII")
        };
        let hls = sign("/hls/bbb/master.m3u8", "application/x-mpegURL");
        assert!(
            hls.starts_with(
                "/hls/bbb/master.m3u8?__token__=ip=192.168.0.1~st=1492404013~exp=1492407613~acl=/hls/bbb/*~hmac="
            ),
            "{hls}"
        );
        let file = sign("/a.mp4", "video/mp4");
        assert!(
            file.starts_with("/a.mp4?__token__=ip=192.168.0.1~st=1492404013~exp=1492407613~hmac="),
            "{file}"
        );
        // The hidden url= field is what makes two files' tokens differ.
        assert_ne!(file[7..], sign("/b.mp4", "video/mp4")[7..]);
    }

    #[test]
    fn keys_and_token_names_are_checked() {
        assert!(AkamaiSigner::new("abc", None).is_err());
        assert!(AkamaiSigner::new("zz", None).is_err());
        assert!(AkamaiSigner::new("", None).is_err());
        assert!(AkamaiSigner::new("00ff", Some("bad name")).is_err());
        assert!(AkamaiSigner::new("00FF", Some("hdnts")).is_ok());
    }
}
