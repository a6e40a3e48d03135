//! The contract's token: `hex(H(src + "?secret=" + key))` with MD5 (the default) or SHA-256.
//!
//! This is how the old service signed, and every existing client expects exactly these
//! bytes for the same inputs (the contract's test vectors are the tests below). It never
//! expires and covers one file; the other schemes in [`super`] are what CDN edges verify.

use md5::{Digest, Md5};
use sha2::Sha256;

use super::url::append_hex;

/// The hash of the contract's construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractHash {
    Md5,
    Sha256,
}

/// Appends the lowercase hex token for `src` under `key` to `out`.
#[inline]
pub fn write_token(out: &mut Vec<u8>, hash: ContractHash, src: &str, key: &str) {
    match hash {
        ContractHash::Md5 => write_digest::<Md5>(out, src, key),
        ContractHash::Sha256 => write_digest::<Sha256>(out, src, key),
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
    append_hex(out, &digest);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::token::{default_cdns, Cdn, RequestSigner};

    const SRC_1080: &str = "/Big_Buck_Bunny_1080p_surround_FrostWire.com.mp4";
    const SRC_720: &str = "/Big_Buck_Bunny_720p_surround_FrostWire.com.mp4";

    fn token(hash: ContractHash, src: &str, key: &str) -> String {
        let mut out = Vec::new();
        write_token(&mut out, hash, src, key);
        String::from_utf8(out).expect("hex is ASCII")
    }

    #[test]
    fn contract_vector_big_buck_bunny() {
        assert_eq!(
            token(ContractHash::Md5, "/big_buck_bunny.mp4", "U5e0IskwtIfA"),
            "666906502bbc3550b95d561fa14af3ae"
        );
        let cdn = Cdn::md5("test", "http://www.cdn.com", "U5e0IskwtIfA");
        let mut url = Vec::new();
        RequestSigner::new(&cdn, 1_700_000_000, None).write_signed_url(
            &mut url,
            &Cow::Borrowed("/big_buck_bunny.mp4"),
            "video/mp4",
        );
        assert_eq!(
            url,
            b"http://www.cdn.com/big_buck_bunny.mp4?token=666906502bbc3550b95d561fa14af3ae"
        );
    }

    #[test]
    fn contract_vectors_key_0000_and_1111() {
        assert_eq!(
            token(ContractHash::Md5, SRC_1080, "0000"),
            "a3b44a7c71a89adfb06cc383f8e00243"
        );
        assert_eq!(
            token(ContractHash::Md5, SRC_720, "0000"),
            "38e67683cae0e1a71565b363fcaa13ef"
        );
        assert_eq!(
            token(ContractHash::Md5, SRC_1080, "1111"),
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
            // The default CDNs sign with the contract's MD5, whatever the time or client.
            let signer = RequestSigner::new(cdn, 1_700_000_000, Some([10, 0, 0, 1].into()));
            let url = |src: &str| signer.signed_url(src, "video/mp4");
            assert_eq!(
                url(SRC_1080),
                format!("{}{SRC_1080}?token={hd}", cdn.address())
            );
            assert_eq!(
                url(SRC_720),
                format!("{}{SRC_720}?token={sd}", cdn.address())
            );
        }
    }

    #[test]
    fn contract_vector_sha256() {
        assert_eq!(
            token(ContractHash::Sha256, "/big_buck_bunny.mp4", "U5e0IskwtIfA"),
            "31817cbe296a7a575348047df3f9d3d29a17f268668858a67a9f5994c2c7661f"
        );
    }

    #[test]
    fn contract_tokens_ignore_manifests_and_existing_queries() {
        // The old service appended `?token=` whatever the source looked like.
        let cdn = Cdn::md5("test", "http://www.cdn.com", "0000");
        let url =
            RequestSigner::new(&cdn, 0, None).signed_url("/a.m3u8?v=1", "application/x-mpegURL");
        let token = token(ContractHash::Md5, "/a.m3u8?v=1", "0000");
        assert_eq!(url, format!("http://www.cdn.com/a.m3u8?v=1?token={token}"));
    }
}
