//! Signed URLs checked by the verifiers themselves: a real nginx with `secure_link` serves
//! (or refuses) what our URLs point at, and OpenSSL verifies CloudFront's RSA signatures.
//! Then who may sign (API keys, the catalog policy), key rotation on SIGHUP and
//! `video-server sign`.
//!
//! nginx and openssl come from the machine (`scripts/test.sh` installs them); where one is
//! missing its test says so loudly and, under CI, fails.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::nginx::{Nginx, NginxSite};
use common::{
    assert_fails_saying, external_tool, fixture, run, write_cdns, write_file, Server,
    DEFAULT_CDN_VECTORS, SEED_SRC_1080,
};
use serde_json::json;

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token request for one video with these `(src, type)` sources.
fn token_body(video_id: &str, sources: &[(&str, &str)]) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|(src, media_type)| format!(r#"{{"src":"{src}","size":720,"type":"{media_type}"}}"#))
        .collect();
    format!(
        r#"{{"video":{{"videoId":"{video_id}","title":"t","sources":[{}]}}}}"#,
        sources.join(",")
    )
}

/// The signed `src` of each source in a token response.
fn signed_sources(response: &common::HttpResponse) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|source| source["src"].as_str().expect("src").to_owned())
        .collect()
}

/// A query parameter's value.
fn param<'u>(url: &'u str, name: &str) -> &'u str {
    let query = url.split_once('?').expect("a query").1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} missing from {url}"))
}

/// `video-server sign …`.
fn sign(args: &[&str]) -> Output {
    run(&[&["sign"], args].concat(), &[])
}

fn signed_by_cli(args: &[&str]) -> String {
    let output = sign(args);
    assert!(
        output.status.success(),
        "sign {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

// ---- nginx ---------------------------------------------------------------------------

/// The secret of the `secure_link_md5` lines in `fixtures/nginx-secure-link.conf`.
const NGINX_SECRET: &str = "nginx-secret";

/// Debian's nginx serving files under two `secure_link` locations (the README's blocks,
/// in `fixtures/nginx-secure-link.conf`): `/bound/` hashes the client's address, `/open/`
/// does not.
fn secure_link_nginx(binary: &Path) -> Nginx {
    let locations = include_str!("fixtures/nginx-secure-link.conf");
    assert_eq!(
        locations.matches(&format!(" {NGINX_SECRET}\";")).count(),
        2,
        "both locations hash NGINX_SECRET"
    );
    Nginx::start(
        binary,
        &NginxSite {
            files: &[
                ("bound/film.mp4", "bound film"),
                ("bound/other.mp4", "another file"),
                ("open/film.mp4", "open film"),
                ("open/my film.mp4", "a name with a space"),
            ],
            http: "",
            locations,
        },
    )
}

#[test]
fn nginx_serves_our_urls_and_refuses_tampered_expired_and_misbound_ones() {
    let Some(binary) = external_tool("nginx") else {
        return;
    };
    let nginx = secure_link_nginx(&binary);
    let dir = tempfile::tempdir().expect("temp dir");
    let cdns = write_cdns(
        dir.path(),
        &[
            json!({"name": "edge-bound", "address": nginx.base(), "scheme": "nginx",
                "key": NGINX_SECRET, "bind_ip": true, "ttl_seconds": 600}),
            json!({"name": "edge-open", "address": nginx.base(), "scheme": "nginx",
                "key": NGINX_SECRET}),
        ],
    );
    let cdns = cdns.to_str().expect("UTF-8");
    let server = Server::start(&["--cdns", cdns]);

    // Round robin: the first request is signed by edge-bound, for the client 127.0.0.1.
    let before = now();
    let body = token_body("v", &[("/bound/film.mp4", "video/mp4")]);
    let bound = signed_sources(&server.post_token(&body)).remove(0);
    let expires: u64 = param(&bound, "expires").parse().expect("expires");
    assert!((before + 600..=now() + 600).contains(&expires), "{bound}");
    assert_eq!(
        nginx.fetch(&bound, LOCALHOST),
        (200, "bound film".into()),
        "{bound}"
    );
    // Another client address: the hash no longer matches.
    assert_eq!(nginx.fetch(&bound, OTHER_LOOPBACK).0, 403, "{bound}");
    // The token of one file does not open another.
    let other = bound.replace("/bound/film.mp4", "/bound/other.mp4");
    assert_eq!(nginx.fetch(&other, LOCALHOST).0, 403, "{other}");
    // A changed hash, or an expiry pushed later, is refused.
    let md5 = param(&bound, "md5");
    let flipped = if md5.starts_with('A') { "B" } else { "A" };
    let tampered = bound.replace(
        &format!("md5={md5}"),
        &format!("md5={flipped}{}", &md5[1..]),
    );
    assert_eq!(nginx.fetch(&tampered, LOCALHOST).0, 403, "{tampered}");
    let later = bound.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 1),
    );
    assert_eq!(nginx.fetch(&later, LOCALHOST).0, 403, "{later}");

    // The second request goes to edge-open: no address in the hash, any client passes.
    let open =
        signed_sources(&server.post_token(&token_body("v", &[("/open/film.mp4", "video/mp4")])))
            .remove(0);
    assert_eq!(
        nginx.fetch(&open, OTHER_LOOPBACK),
        (200, "open film".into()),
        "{open}"
    );

    // `video-server sign`: a percent-encoded path is hashed as nginx's decoded $uri.
    let spaced = signed_by_cli(&["--cdns", cdns, "--cdn", "edge-open", "/open/my%20film.mp4"]);
    assert_eq!(
        nginx.fetch(&spaced, LOCALHOST),
        (200, "a name with a space".into()),
        "{spaced}"
    );
    // Signed two hours ago with a one-hour TTL: nginx says the link has expired (410).
    let two_hours_ago = (now() - 7200).to_string();
    let expired = signed_by_cli(&[
        "--cdns",
        cdns,
        "--cdn",
        "edge-bound",
        "--ip",
        "127.0.0.1",
        "--at",
        &two_hours_ago,
        "/bound/film.mp4",
    ]);
    assert_eq!(nginx.fetch(&expired, LOCALHOST).0, 410, "{expired}");
    let fresh = signed_by_cli(&[
        "--cdns",
        cdns,
        "--cdn",
        "edge-bound",
        "--ip",
        "127.0.0.2",
        "/bound/film.mp4",
    ]);
    assert_eq!(nginx.fetch(&fresh, OTHER_LOOPBACK).0, 200, "{fresh}");
    assert_eq!(nginx.fetch(&fresh, LOCALHOST).0, 403, "{fresh}");
}

// ---- CloudFront, verified by OpenSSL ----------------------------------------------------

struct OpenSsl {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl OpenSsl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl")
    }

    fn ok(&self, args: &[&str]) {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Whether OpenSSL finds `signature` to be the RSA-SHA1 signature of `policy`.
    fn verifies(&self, policy: &[u8], signature: &[u8]) -> bool {
        std::fs::write(self.dir.path().join("policy"), policy).expect("write policy");
        std::fs::write(self.dir.path().join("signature"), signature).expect("write signature");
        let output = self.run(&[
            "dgst",
            "-sha1",
            "-verify",
            "public.pem",
            "-signature",
            "signature",
            "policy",
        ]);
        let verdict = String::from_utf8_lossy(&output.stdout);
        output.status.success() && verdict.contains("Verified OK")
    }

    /// OpenSSL's own RSA-SHA1 signature of `policy` (PKCS#1 v1.5 is deterministic).
    fn signature_of(&self, policy: &[u8]) -> Vec<u8> {
        std::fs::write(self.dir.path().join("policy"), policy).expect("write policy");
        self.ok(&[
            "dgst",
            "-sha1",
            "-sign",
            "private.pem",
            "-out",
            "expected",
            "policy",
        ]);
        std::fs::read(self.dir.path().join("expected")).expect("read signature")
    }
}

/// CloudFront's URL-safe base64, decoded.
fn cloudfront_base64(text: &str) -> Vec<u8> {
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            other => other,
        })
        .collect();
    STANDARD.decode(standard).expect("CloudFront base64")
}

/// The policy a URL's signature covers: the `Policy` parameter, or for a canned policy the
/// statement AWS documents ("Create a signed URL using a canned policy"), written out here.
fn signed_policy(url: &str) -> Vec<u8> {
    if url.contains("Policy=") {
        return cloudfront_base64(param(url, "Policy"));
    }
    let resource = url.split_once("?Expires=").expect("canned").0;
    format!(
        r#"{{"Statement":[{{"Resource":"{resource}","Condition":{{"DateLessThan":{{"AWS:EpochTime":{}}}}}}}]}}"#,
        param(url, "Expires")
    )
    .into_bytes()
}

#[test]
fn openssl_verifies_cloudfront_signatures_canned_custom_and_ip_bound() {
    let Some(binary) = external_tool("openssl") else {
        return;
    };
    let openssl = OpenSsl {
        binary,
        dir: tempfile::tempdir().expect("temp dir"),
    };
    // A fresh key pair: PKCS#8 as openssl writes it, PKCS#1 as CloudFront hands them out.
    openssl.ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "private.pem",
    ]);
    openssl.ok(&[
        "pkey",
        "-in",
        "private.pem",
        "-pubout",
        "-out",
        "public.pem",
    ]);
    openssl.ok(&[
        "rsa",
        "-in",
        "private.pem",
        "-traditional",
        "-out",
        "private-pkcs1.pem",
    ]);
    let pkcs1 = std::fs::read_to_string(openssl.dir.path().join("private-pkcs1.pem")).expect("key");
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let base = "https://d111111abcdef8.cloudfront.net";
    // Key files are found next to the CDN file.
    let cdns = write_cdns(
        openssl.dir.path(),
        &[
            json!({"name": "cf", "address": base, "scheme": "cloudfront",
                "key_file": "private.pem", "key_id": "K2JCJMDEHXQW5F"}),
            json!({"name": "cf-bound", "address": base, "scheme": "cloudfront",
                "key_file": "private-pkcs1.pem", "key_id": "K2JCJMDEHXQW5F",
                "bind_ip": true, "ttl_seconds": 7200}),
        ],
    );
    let server = Server::start(&["--cdns", cdns.to_str().expect("UTF-8")]);
    let body = token_body(
        "v",
        &[
            ("/films/a.mp4", "video/mp4"),
            ("/hls/bbb/master.m3u8", "application/x-mpegURL"),
        ],
    );

    let before = now();
    let first = signed_sources(&server.post_token(&body));
    let second = signed_sources(&server.post_token(&body));
    let third = signed_sources(&server.post_token(&body));
    let after = now();

    // cf, one file: a canned policy.
    let canned = &first[0];
    assert!(
        canned.starts_with(&format!("{base}/films/a.mp4?Expires=")),
        "{canned}"
    );
    assert_eq!(param(canned, "Key-Pair-Id"), "K2JCJMDEHXQW5F");
    let expires: u64 = param(canned, "Expires").parse().expect("Expires");
    // Rounded up to a 360 s window (a tenth of the default hour), never below now + ttl.
    assert!(
        expires >= before + 3600 && expires < after + 3600 + 360,
        "{expires}"
    );
    assert_eq!(expires % 360, 0);

    // cf, a manifest: a custom policy for its folder. cf-bound: the client's address too.
    let folder = serde_json::json!({"Statement":[{"Resource":format!("{base}/hls/bbb/*"),
        "Condition":{"DateLessThan":{"AWS:EpochTime":expires}}}]});
    let policy: serde_json::Value =
        serde_json::from_slice(&signed_policy(&first[1])).expect("policy JSON");
    assert_eq!(policy, folder, "{}", first[1]);
    for (url, resource) in [
        (&second[0], format!("{base}/films/a.mp4")),
        (&second[1], format!("{base}/hls/bbb/*")),
    ] {
        let policy: serde_json::Value =
            serde_json::from_slice(&signed_policy(url)).expect("policy JSON");
        let condition = &policy["Statement"][0]["Condition"];
        assert_eq!(
            policy["Statement"][0]["Resource"],
            resource.as_str(),
            "{url}"
        );
        assert_eq!(
            condition["IpAddress"]["AWS:SourceIp"], "127.0.0.1/32",
            "{url}"
        );
        let bound_expiry = condition["DateLessThan"]["AWS:EpochTime"]
            .as_u64()
            .expect("expiry");
        assert!(
            bound_expiry >= before + 7200 && bound_expiry < after + 7200 + 720,
            "{url}"
        );
    }

    // Every signature verifies with the public key, and is byte for byte OpenSSL's own.
    for url in first.iter().chain(&second) {
        let policy = signed_policy(url);
        let signature = cloudfront_base64(param(url, "Signature"));
        assert!(openssl.verifies(&policy, &signature), "not verified: {url}");
        assert_eq!(signature, openssl.signature_of(&policy), "{url}");
        // A policy changed after signing (a later expiry) does not verify.
        let mut forged = policy.clone();
        let digit = forged
            .iter()
            .rposition(u8::is_ascii_digit)
            .expect("a digit");
        forged[digit] = if forged[digit] == b'9' {
            b'8'
        } else {
            forged[digit] + 1
        };
        assert!(
            !openssl.verifies(&forged, &signature),
            "forged policy verified: {url}"
        );
    }

    // Within one window the signature is reused: the third request (cf again) is identical.
    if param(&third[0], "Expires") == param(canned, "Expires") {
        assert_eq!(third, first);
    }
}

// ---- who may sign ---------------------------------------------------------------------

#[test]
fn api_keys_guard_the_token_route_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = write_file(
        dir.path(),
        "api-keys",
        "# the player team\nplayer-key-0123456789\n",
    );
    let server = Server::start(&["--api-keys", keys.to_str().expect("UTF-8")]);

    let missing = server.post_token(common::CONTRACT_BODY);
    assert_eq!(missing.status, 401);
    assert!(
        missing.error().contains("Authorization: Bearer"),
        "{}",
        missing.text()
    );
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"video-server\"")
    );
    for (value, expected) in [
        ("Bearer player-key-9999999999", "not valid"),
        ("Basic cGxheWVyOmtleQ==", "must be \"Bearer <key>\""),
        ("player-key-0123456789", "must be \"Bearer <key>\""),
    ] {
        let refused = server.post_token_with(common::CONTRACT_BODY, &[("Authorization", value)]);
        assert_eq!(refused.status, 401, "{value}");
        assert!(
            refused.error().contains(expected),
            "{value}: {}",
            refused.text()
        );
    }
    // A refused request learns nothing about its body: 401 comes before validation.
    let invalid = server.post_token_with("{", &[]);
    assert_eq!(invalid.status, 401);

    let allowed = server.post_token_with(
        common::CONTRACT_BODY,
        &[("Authorization", "bearer player-key-0123456789")],
    );
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    // Browsers never let `*` cover Authorization: it is named on every response.
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("*, Authorization")
    );
    // The catalog and the preflight stay open.
    assert_eq!(server.get("/video/12345").status, 200);
    let preflight = server.request("OPTIONS", "/video/token", None);
    assert_eq!(preflight.status, 204);
    assert_eq!(
        server.metric("http_requests_total{route=\"token\",status=\"401\"}"),
        5.0
    );
}

#[test]
fn the_catalog_policy_signs_only_catalog_sources() {
    let server = Server::start(&["--signing-policy", "catalog"]);
    let signed = server.post_token(common::CONTRACT_BODY);
    assert_eq!(signed.status, 200, "{}", signed.text());

    let stranger = token_body(
        "12345",
        &[
            (SEED_SRC_1080, "video/mp4"),
            ("/secret/premium.mp4", "video/mp4"),
        ],
    );
    let refused = server.post_token(&stranger);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.error(),
        "video.sources[1].src \"/secret/premium.mp4\" is not a source of video \"12345\" in the catalog"
    );
    let unknown = server.post_token(&token_body("999", &[(SEED_SRC_1080, "video/mp4")]));
    assert_eq!(unknown.status, 403);
    assert!(
        unknown
            .error()
            .contains("video \"999\" is not in the catalog"),
        "{}",
        unknown.text()
    );
    // The default stays the contract's: anything valid is signed.
    let open = Server::start(&[]);
    assert_eq!(open.post_token(&stranger).status, 200);
}

// ---- key rotation ----------------------------------------------------------------------

#[test]
fn sighup_rotates_keys_and_a_broken_file_keeps_the_running_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdn_with_key = |key: &str| {
        write_cdns(
            dir.path(),
            &[json!({"name": "edge", "address": "http://www.cdn.com", "key": key})],
        )
    };
    let cdns = cdn_with_key("0000");
    let keys = write_file(dir.path(), "api-keys", "first-key-0000000\n");
    let mut server = Server::start(&[
        "--cdns",
        cdns.to_str().expect("UTF-8"),
        "--api-keys",
        keys.to_str().expect("UTF-8"),
    ]);
    let token_with = |api_key: &str| {
        let response = server.post_token_with(
            common::CONTRACT_BODY,
            &[("Authorization", &format!("Bearer {api_key}"))],
        );
        match response.status {
            200 => signed_sources(&response).remove(0),
            status => format!("status {status}"),
        }
    };
    // The contract's vectors for keys 0000 and 1111.
    let with_0000 =
        format!("http://www.cdn.com{SEED_SRC_1080}?token=a3b44a7c71a89adfb06cc383f8e00243");
    let with_1111 =
        format!("http://www.cdn.com{SEED_SRC_1080}?token=8aa62616c28f90dbddebb2a4eb498975");
    assert_eq!(token_with("first-key-0000000"), with_0000);

    cdn_with_key("1111");
    write_file(dir.path(), "api-keys", "second-key-111111\n");
    server.send_signal("HUP");
    assert!(
        server.wait_for_log("reloaded the CDN and API key files", 1),
        "{}",
        server.log()
    );
    assert_eq!(token_with("second-key-111111"), with_1111);
    assert_eq!(token_with("first-key-0000000"), "status 401");

    // A CDN file that does not load is refused; the running keys stay.
    write_cdns(
        dir.path(),
        &[
            json!({"name": "edge", "address": "http://www.cdn.com", "key": "2222",
            "ttl_seconds": 5}),
        ],
    );
    server.send_signal("HUP");
    assert!(
        server.wait_for_log("the new configuration was refused", 1),
        "{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("\"ttl_seconds\" is not used by scheme md5"),
        "{}",
        server.log()
    );
    assert_eq!(token_with("second-key-111111"), with_1111);
    // So is an API key file that went missing.
    cdn_with_key("0000");
    std::fs::remove_file(&keys).expect("remove keys");
    server.send_signal("HUP");
    assert!(
        server.wait_for_log("the new configuration was refused", 2),
        "{}",
        server.log()
    );
    assert_eq!(token_with("second-key-111111"), with_1111);
    // No key ever reaches the log.
    let log = server.log();
    for secret in ["0000\"", "1111\"", "first-key", "second-key"] {
        assert!(!log.contains(secret), "{secret} logged:\n{log}");
    }
    assert!(server.terminate().success());
}

// ---- video-server sign -------------------------------------------------------------------

#[test]
fn the_sign_command_prints_urls_and_names_what_is_missing() {
    // Without --cdns: the contract's CDNs and their vector.
    let (address, token, _) = DEFAULT_CDN_VECTORS[0];
    assert_eq!(
        signed_by_cli(&["--cdn", "AWS CDN 1", SEED_SRC_1080]),
        format!("{address}{SEED_SRC_1080}?token={token}")
    );
    // One akamai CDN on https://a.example, binding tokens to the client's address, for a week.
    let cdns = &fixture("cdns-akamai-bound.json");
    // A manifest's token covers its folder; the clock is the one given.
    let url = signed_by_cli(&[
        "--cdns",
        cdns,
        "--cdn",
        "akamai",
        "--ip",
        "192.168.0.1",
        "--at",
        "1492404013",
        "/hls/a/master.m3u8",
    ]);
    assert!(
        url.starts_with("https://a.example/hls/a/master.m3u8?__token__=ip=192.168.0.1~st=1492404013~exp=1493008813~acl=/hls/a/*~hmac="),
        "{url}"
    );
    for (args, expected) in [
        (
            vec!["--cdns", cdns, "--cdn", "nope", "/a.mp4"],
            "no CDN named \"nope\" (the CDNs are: akamai)",
        ),
        (
            vec!["--cdns", cdns, "--cdn", "akamai", "/a.mp4"],
            "binds tokens to the client's address: give --ip",
        ),
        (
            vec!["--cdns", "/definitely/missing.json", "--cdn", "x", "/a.mp4"],
            "cannot read CDN file",
        ),
    ] {
        assert_fails_saying(&sign(&args), &format!("sign {args:?}"), expected);
    }
}

#[test]
fn bound_tokens_carry_the_forwarded_client_behind_a_trusted_proxy() {
    // One akamai CDN on https://a.example, binding tokens to the client's address.
    let cdns = &fixture("cdns-akamai-bound.json");
    let body = token_body("v", &[("/films/a.mp4", "video/mp4")]);
    let forwarded = [("X-Forwarded-For", "203.0.113.9, 127.0.0.1")];

    // The peer 127.0.0.1 is a trusted proxy: the address it forwards is the client's.
    let behind_proxy = Server::start(&["--cdns", cdns, "--trusted-proxies", "127.0.0.1"]);
    let url = signed_sources(&behind_proxy.post_token_with(&body, &forwarded)).remove(0);
    assert!(url.contains("?__token__=ip=203.0.113.9~st="), "{url}");
    // Without the header, the peer itself.
    let url = signed_sources(&behind_proxy.post_token(&body)).remove(0);
    assert!(url.contains("?__token__=ip=127.0.0.1~st="), "{url}");

    // An untrusted peer cannot choose the address its token is bound to.
    let direct = Server::start(&["--cdns", cdns]);
    let url = signed_sources(&direct.post_token_with(&body, &forwarded)).remove(0);
    assert!(url.contains("?__token__=ip=127.0.0.1~st="), "{url}");
}
