//! The CDN file (`--cdns`): a JSON array of CDN entries, read at start and on `SIGHUP`.
//!
//! ```json
//! [{"name": "edge", "address": "https://media.example.com", "scheme": "nginx",
//!   "key": "secret", "ttl_seconds": 3600, "bind_ip": true}]
//! ```
//!
//! | field | schemes | meaning |
//! | --- | --- | --- |
//! | `name`, `address` | all | shown in logs; prefixed to every source |
//! | `scheme` | all | `md5` (default), `sha256`, `nginx`, `akamai`, `cloudfront`, `google`, `bunny` |
//! | `key` or `key_file` | all | the secret, inline or in a file (relative to the CDN file) |
//! | `key_id` | cloudfront, google | `Key-Pair-Id` / `KeyName` |
//! | `ttl_seconds` | all but md5, sha256 | how long a token works (default 3600) |
//! | `bind_ip` | nginx, akamai, cloudfront, bunny | tokens carry the client's address |
//! | `token_name` | akamai | the query parameter (default `__token__`) |
//! | `expression` | nginx | what `secure_link_md5` hashes (see [`super::nginx`]) |
//!
//! Each entry is checked field by field: a field its scheme does not use, a missing one it
//! needs, a key that does not decode, are errors that name the entry and the field. The
//! parser reads fields itself (not `serde` derive) so that no message can quote a key.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Map, Value};

use super::akamai::AkamaiSigner;
use super::bunny::BunnySigner;
use super::cloudfront::CloudFrontSigner;
use super::google::GoogleSigner;
use super::nginx::NginxSigner;
use super::{Cdn, ContractHash, SchemeKind, Signer};

/// How long a token works when the entry does not say.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// The longest `ttl_seconds` accepted: a year.
pub const MAX_TTL_SECONDS: u64 = 365 * 86_400;

/// Every field an entry may have.
const FIELDS: [&str; 10] = [
    "name",
    "address",
    "scheme",
    "key",
    "key_file",
    "key_id",
    "ttl_seconds",
    "bind_ip",
    "token_name",
    "expression",
];

/// Why a CDN file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CdnConfigError {
    #[error("cannot read CDN file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CDN file {path} is not valid JSON: {reason}")]
    Syntax { path: String, reason: String },
    #[error(
        "CDN file {path} must be a JSON array of CDN objects \
         ({{\"name\", \"address\", \"scheme\", \"key\" or \"key_file\", ...}})"
    )]
    NotAnArray { path: String },
    #[error("CDN file {path} lists no CDN; at least one is required")]
    Empty { path: String },
    #[error("CDN file {path}: entry {index} ({name}): {problem}")]
    Entry {
        path: String,
        index: usize,
        name: String,
        problem: String,
    },
}

/// The CDNs the old service was configured with: the default when `--cdns` is not given.
pub fn default_cdns() -> Vec<Cdn> {
    vec![
        Cdn::md5(
            "AWS CDN 1",
            "https://d2usdis6r1u782.cloudfront.net",
            "U5e0IskwtIfA",
        ),
        Cdn::md5(
            "AWS CDN 2",
            "https://d2oukvvww2uoq.cloudfront.net",
            "9Weh3dv6QgDN",
        ),
        Cdn::md5(
            "AWS CDN 3",
            "https://dbke9ww44or29.cloudfront.net",
            "7x1vGkO75i1Y",
        ),
    ]
}

/// Reads and checks a CDN file; `key_file` paths are relative to its folder.
pub fn load_cdns(path: &Path) -> Result<Vec<Cdn>, CdnConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CdnConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let key_dir = path.parent().unwrap_or(Path::new("."));
    parse_cdns(&bytes, key_dir, &shown)
}

/// Checks a CDN file's bytes; `shown` names the file in errors.
pub fn parse_cdns(bytes: &[u8], key_dir: &Path, shown: &str) -> Result<Vec<Cdn>, CdnConfigError> {
    // serde_json's syntax errors give a position, never the text around it.
    let value: Value = serde_json::from_slice(bytes).map_err(|error| CdnConfigError::Syntax {
        path: shown.into(),
        reason: error.to_string(),
    })?;
    let Value::Array(entries) = value else {
        return Err(CdnConfigError::NotAnArray { path: shown.into() });
    };
    if entries.is_empty() {
        return Err(CdnConfigError::Empty { path: shown.into() });
    }
    let mut names = HashSet::new();
    let mut cdns = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let refuse = |name: &str, problem: String| CdnConfigError::Entry {
            path: shown.into(),
            index,
            name: name.into(),
            problem,
        };
        let Value::Object(fields) = entry else {
            return Err(refuse("?", "must be an object".into()));
        };
        let reader = EntryReader { fields, key_dir };
        let name = reader
            .required_string("name")
            .map_err(|problem| refuse("unnamed", problem))?;
        let cdn = reader.cdn(name).map_err(|problem| refuse(name, problem))?;
        if !names.insert(name) {
            return Err(refuse(name, "another entry has the same name".into()));
        }
        cdns.push(cdn);
    }
    Ok(cdns)
}

/// The fields of one entry, read one at a time with messages that name them.
struct EntryReader<'a> {
    fields: &'a Map<String, Value>,
    key_dir: &'a Path,
}

impl<'a> EntryReader<'a> {
    fn cdn(&self, name: &str) -> Result<Cdn, String> {
        let scheme = match self.string("scheme")? {
            None => SchemeKind::Md5,
            Some(scheme) => SchemeKind::from_name(scheme).ok_or_else(|| {
                let known: Vec<&str> = SchemeKind::ALL.iter().map(|kind| kind.name()).collect();
                format!(
                    "unknown \"scheme\" {scheme:?} (known: {})",
                    known.join(", ")
                )
            })?,
        };
        self.check_fields(scheme)?;
        let address = self.required_string("address")?;
        if matches!(scheme, SchemeKind::CloudFront | SchemeKind::Google)
            && !(address.starts_with("https://") || address.starts_with("http://"))
        {
            return Err(format!(
                "\"address\" must start with https:// or http://: scheme {scheme} signs the whole URL"
            ));
        }
        let key = self.key()?;
        let ttl_seconds = match self.unsigned("ttl_seconds")? {
            None => DEFAULT_TTL_SECONDS,
            Some(ttl) if (1..=MAX_TTL_SECONDS).contains(&ttl) => ttl,
            Some(_) => {
                return Err(format!(
                    "\"ttl_seconds\" must be between 1 and {MAX_TTL_SECONDS} (a year)"
                ))
            }
        };
        let bind_ip = self.boolean("bind_ip")?.unwrap_or(false);
        let signer = match scheme {
            SchemeKind::Md5 => Signer::Contract(ContractHash::Md5, key.into()),
            SchemeKind::Sha256 => Signer::Contract(ContractHash::Sha256, key.into()),
            SchemeKind::Nginx => {
                Signer::Nginx(NginxSigner::new(&key, self.string("expression")?, bind_ip)?)
            }
            SchemeKind::Akamai => {
                Signer::Akamai(AkamaiSigner::new(&key, self.string("token_name")?)?)
            }
            SchemeKind::CloudFront => Signer::CloudFront(Box::new(CloudFrontSigner::new(
                &key,
                self.required_string("key_id")?,
            )?)),
            SchemeKind::Google => {
                if bind_ip {
                    return Err("\"bind_ip\" cannot be true: Google Cloud CDN signed URLs \
                                cannot carry the client's address"
                        .into());
                }
                Signer::Google(GoogleSigner::new(&key, self.required_string("key_id")?)?)
            }
            SchemeKind::Bunny => Signer::Bunny(BunnySigner::new(&key)),
        };
        Ok(Cdn {
            name: name.into(),
            address_json: super::json_escaped(address),
            address: address.into(),
            ttl_seconds,
            bind_ip,
            signer,
        })
    }

    /// Refuses fields that are unknown, or that this scheme would silently ignore.
    fn check_fields(&self, scheme: SchemeKind) -> Result<(), String> {
        let used: &[&str] = match scheme {
            SchemeKind::Md5 | SchemeKind::Sha256 => &[],
            SchemeKind::Nginx => &["ttl_seconds", "bind_ip", "expression"],
            SchemeKind::Akamai => &["ttl_seconds", "bind_ip", "token_name"],
            SchemeKind::CloudFront | SchemeKind::Google => &["key_id", "ttl_seconds", "bind_ip"],
            SchemeKind::Bunny => &["ttl_seconds", "bind_ip"],
        };
        const COMMON: [&str; 5] = ["name", "address", "scheme", "key", "key_file"];
        for field in self.fields.keys() {
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "unknown field {field:?} (known: {})",
                    FIELDS.join(", ")
                ));
            }
            if !COMMON.contains(&field.as_str()) && !used.contains(&field.as_str()) {
                return Err(format!("field {field:?} is not used by scheme {scheme}"));
            }
        }
        Ok(())
    }

    /// The key, inline or from `key_file`.
    fn key(&self) -> Result<String, String> {
        let inline = self.string("key")?;
        let file = self.string("key_file")?;
        let key = match (inline, file) {
            (Some(_), Some(_)) => return Err("give \"key\" or \"key_file\", not both".into()),
            (None, None) => return Err("\"key\" or \"key_file\" is required".into()),
            (Some(key), None) => key.to_owned(),
            (None, Some(file)) => {
                let path = self.key_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    format!("cannot read \"key_file\" {}: {error}", path.display())
                })?;
                // A key written with `echo` ends with a newline that is not part of it.
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
        };
        if key.trim().is_empty() {
            return Err("the key is empty".into());
        }
        Ok(key)
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>, String> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("{field:?} must be a string")),
        }
    }

    fn required_string(&self, field: &str) -> Result<&'a str, String> {
        match self.string(field)? {
            None => Err(format!("{field:?} is required")),
            Some(text) if text.trim().is_empty() => Err(format!("{field:?} must not be empty")),
            Some(text) => Ok(text),
        }
    }

    fn unsigned(&self, field: &str) -> Result<Option<u64>, String> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{field:?} must be a whole number of seconds")),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, String> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(format!("{field:?} must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Cdn>, CdnConfigError> {
        parse_cdns(json.as_bytes(), Path::new("/nonexistent"), "cdns.json")
    }

    fn error(json: &str) -> String {
        parse(json)
            .err()
            .unwrap_or_else(|| panic!("accepted: {json}"))
            .to_string()
    }

    #[test]
    fn contract_entries_load_and_default_to_md5() {
        let cdns = parse(
            r#"[{"name":"a","address":"https://a.example","key":"k1"},
                {"name":"b","address":"https://b.example","key":"k2","scheme":"sha256"}]"#,
        )
        .expect("valid");
        assert_eq!(cdns[0].scheme(), SchemeKind::Md5);
        assert_eq!(cdns[1].scheme(), SchemeKind::Sha256);
    }

    #[test]
    fn every_scheme_loads_with_its_fields() {
        let cdns = parse(
            r#"[{"name":"n","address":"http://127.0.0.1:8080","scheme":"nginx","key":"secret","bind_ip":true,"ttl_seconds":60},
                {"name":"a","address":"https://a.example","scheme":"akamai","key":"0a1b","token_name":"hdnts"},
                {"name":"g","address":"https://g.example","scheme":"google","key":"nZtRohdNF9m3cKM24IcK4w==","key_id":"my-key"},
                {"name":"b","address":"https://b.example","scheme":"bunny","key":"SecurityKey","bind_ip":false}]"#,
        )
        .expect("valid");
        let kinds: Vec<SchemeKind> = cdns.iter().map(Cdn::scheme).collect();
        assert_eq!(
            kinds,
            [
                SchemeKind::Nginx,
                SchemeKind::Akamai,
                SchemeKind::Google,
                SchemeKind::Bunny
            ]
        );
        assert!(cdns[0].binds_ip());
        assert_eq!(cdns[0].ttl_seconds(), 60);
        assert_eq!(cdns[1].ttl_seconds(), DEFAULT_TTL_SECONDS);
    }

    #[test]
    fn errors_name_the_entry_and_the_field_and_never_the_key() {
        let cases = [
            ("{}", "must be a JSON array"),
            ("[]", "lists no CDN"),
            ("[1,", "not valid JSON"),
            ("[7]", "entry 0 (?): must be an object"),
            (
                r#"[{"address":"x","key":"sekrit"}]"#,
                "entry 0 (unnamed): \"name\" is required",
            ),
            (
                r#"[{"name":"a","address":"","key":"sekrit"}]"#,
                "(a): \"address\" must not be empty",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"crc32"}]"#,
                "unknown \"scheme\" \"crc32\"",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","extra":1}]"#,
                "unknown field \"extra\"",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","ttl_seconds":60}]"#,
                "field \"ttl_seconds\" is not used by scheme md5",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"nginx","key_id":"k"}]"#,
                "field \"key_id\" is not used by scheme nginx",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"bunny","expression":"e"}]"#,
                "field \"expression\" is not used by scheme bunny",
            ),
            (
                r#"[{"name":"a","address":"x","scheme":"nginx"}]"#,
                "\"key\" or \"key_file\" is required",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","key_file":"f"}]"#,
                "not both",
            ),
            (
                r#"[{"name":"a","address":"x","key":"   "}]"#,
                "the key is empty",
            ),
            (
                r#"[{"name":"a","address":"x","key":12345}]"#,
                "\"key\" must be a string",
            ),
            (
                r#"[{"name":"a","address":"x","key_file":"absent.pem"}]"#,
                "cannot read \"key_file\" /nonexistent/absent.pem",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"nginx","ttl_seconds":0}]"#,
                "\"ttl_seconds\" must be between 1",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"nginx","ttl_seconds":"60"}]"#,
                "whole number of seconds",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"nginx","bind_ip":"yes"}]"#,
                "\"bind_ip\" must be true or false",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"nginx","bind_ip":true,"expression":"{expires}{path} {key}"}]"#,
                "has no {client_ip}",
            ),
            (
                r#"[{"name":"a","address":"x","key":"sekrit","scheme":"akamai"}]"#,
                "(a): \"key\" must be hex digits",
            ),
            (
                r#"[{"name":"g","address":"https://g","key":"c2Vrcml0","key_id":"k","scheme":"google"}]"#,
                "(g): \"key\" decodes to 6 bytes",
            ),
            (
                r#"[{"name":"g","address":"https://g","key":"sekrit!","key_id":"k","scheme":"google"}]"#,
                "(g): \"key\" must be base64url",
            ),
            (
                r#"[{"name":"g","address":"https://g","key":"nZtRohdNF9m3cKM24IcK4w==","scheme":"google"}]"#,
                "\"key_id\" is required",
            ),
            (
                r#"[{"name":"g","address":"https://g","key":"nZtRohdNF9m3cKM24IcK4w==","key_id":"k","scheme":"google","bind_ip":true}]"#,
                "\"bind_ip\" cannot be true",
            ),
            (
                r#"[{"name":"g","address":"g.example","key":"nZtRohdNF9m3cKM24IcK4w==","key_id":"k","scheme":"google"}]"#,
                "must start with https://",
            ),
            (
                r#"[{"name":"c","address":"https://c","key":"sekrit","key_id":"K1","scheme":"cloudfront"}]"#,
                "(c): not an RSA private key",
            ),
            (
                r#"[{"name":"a","address":"x","key":"k1"},{"name":"a","address":"y","key":"k2"}]"#,
                "entry 1 (a): another entry has the same name",
            ),
        ];
        for (json, expected) in cases {
            let message = error(json);
            assert!(message.contains(expected), "{json}\n  gave: {message}");
            assert!(message.contains("cdns.json"), "{message}");
            assert!(!message.contains("sekrit"), "key echoed: {message}");
            assert!(!message.contains("c2Vrcml0"), "key echoed: {message}");
        }
    }

    #[test]
    fn key_files_are_read_relative_to_the_cdn_file_without_their_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("edge.key"), "U5e0IskwtIfA\n").expect("key file");
        let path = dir.path().join("cdns.json");
        std::fs::write(
            &path,
            r#"[{"name":"a","address":"http://www.cdn.com","key_file":"edge.key"}]"#,
        )
        .expect("cdn file");
        let cdns = load_cdns(&path).expect("valid");
        let url = super::super::RequestSigner::new(&cdns[0], 0, None)
            .signed_url("/big_buck_bunny.mp4", "video/mp4");
        // The contract's vector for key U5e0IskwtIfA: the newline was not part of the key.
        assert!(
            url.ends_with("?token=666906502bbc3550b95d561fa14af3ae"),
            "{url}"
        );
        let missing = load_cdns(&dir.path().join("absent.json")).expect_err("missing file");
        assert!(missing.to_string().contains("cannot read CDN file"));
    }
}
