//! `POST /video/token` bodies: any bytes are refused with a message or accepted; what is
//! accepted renders back to JSON that parses to the same video, and every signing scheme
//! writes valid JSON whatever the sources contain.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use video_server::token::{default_cdns, parse_cdns, Cdn, RequestSigner};
use video_server::video::{parse_stored_video, parse_token_request};

/// One CDN of each scheme that needs no key file.
fn cdns() -> &'static [Cdn] {
    static CDNS: OnceLock<Vec<Cdn>> = OnceLock::new();
    CDNS.get_or_init(|| {
        let file = br#"[
            {"name":"nginx","address":"https://n.example","scheme":"nginx","key":"k","bind_ip":true},
            {"name":"akamai","address":"https://a.example","scheme":"akamai","key":"0a1b","bind_ip":true},
            {"name":"google","address":"https://g.example","scheme":"google","key":"nZtRohdNF9m3cKM24IcK4w==","key_id":"k"},
            {"name":"bunny","address":"https://b.example","scheme":"bunny","key":"k","bind_ip":true},
            {"name":"sha","address":"https://s.example","scheme":"sha256","key":"k"}
        ]"#;
        let mut cdns = parse_cdns(file, Path::new("/nonexistent"), "fuzz").expect("fuzz CDNs");
        cdns.extend(default_cdns());
        cdns
    })
}

fuzz_target!(|data: &[u8]| {
    let video = match parse_token_request(data) {
        Ok(video) => video,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let mut stored = Vec::new();
    video.write_json(&mut stored, None);
    let again = parse_stored_video(&stored).expect("a rendered video parses");
    assert_eq!(again.video_id, video.video_id);
    assert_eq!(again.title, video.title);
    assert_eq!(again.sources, video.sources);
    for cdn in cdns() {
        let signer = RequestSigner::new(cdn, 1_700_000_000, Some([192, 0, 2, 1].into()));
        let mut out = Vec::new();
        video.write_json(&mut out, Some(&signer));
        let value: serde_json::Value = serde_json::from_slice(&out)
            .unwrap_or_else(|error| panic!("{} wrote invalid JSON: {error}", cdn.name()));
        assert_eq!(
            value["sources"].as_array().map(Vec::len),
            Some(video.sources.len())
        );
    }
});
