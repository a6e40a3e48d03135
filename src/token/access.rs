//! Who may sign: the signing policy and the API keys of `POST /video/token`.
//!
//! By default (the contract) anyone may ask for a token for any source. Two settings close
//! that door, for a production deployment:
//!
//! - `--signing-policy catalog` signs only sources that belong to that `videoId` in the
//!   catalog, so a client cannot mint a token for a file it was never offered (a 403 names
//!   the source);
//! - `--api-keys FILE` makes the route require `Authorization: Bearer <key>` (a 401
//!   otherwise). The keys are kept as SHA-256 digests and compared in constant time, all of
//!   them every time, so neither a key nor its length leaks through response timing.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which sources `POST /video/token` signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SigningPolicy {
    /// Any source of any video, as the old service did.
    #[default]
    Open,
    /// Only the sources the catalog lists for that videoId.
    Catalog,
}

/// Why an API key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    #[error("cannot read API key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("API key file {path} holds no key (one per line; # starts a comment)")]
    Empty { path: String },
    #[error("API key file {path}, line {line}: a key cannot contain spaces")]
    Spaces { path: String, line: usize },
}

/// Why a request was refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <key>`.
    NotBearer,
    /// A key we do not know.
    UnknownKey,
}

impl Refusal {
    /// The message the client sees.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "POST /video/token needs an API key: Authorization: Bearer <key>",
            Refusal::NotBearer => "the Authorization header must be \"Bearer <key>\"",
            Refusal::UnknownKey => "the API key is not valid",
        }
    }
}

/// The keys that may sign, as digests.
pub struct ApiKeys {
    digests: Box<[[u8; 32]]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// Reads one key per line; blank lines and lines starting with `#` are skipped.
    pub fn load(path: &Path) -> Result<Self, ApiKeysError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeysError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, shown: &str) -> Result<Self, ApiKeysError> {
        let mut digests = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.contains(char::is_whitespace) {
                return Err(ApiKeysError::Spaces {
                    path: shown.into(),
                    line: index + 1,
                });
            }
            digests.push(Sha256::digest(key.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err(ApiKeysError::Empty { path: shown.into() });
        }
        Ok(ApiKeys {
            digests: digests.into_boxed_slice(),
        })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?;
        let value = value.trim_ascii();
        let scheme_end = value
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .ok_or(Refusal::NotBearer)?;
        if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
            return Err(Refusal::NotBearer);
        }
        let key = value[scheme_end..].trim_ascii();
        if key.is_empty() {
            return Err(Refusal::NotBearer);
        }
        let presented: [u8; 32] = Sha256::digest(key).into();
        let known = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, digest| {
                found | digest.ct_eq(&presented)
            });
        if bool::from(known) {
            Ok(())
        } else {
            Err(Refusal::UnknownKey)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_one_per_line_with_comments() {
        let keys =
            ApiKeys::parse("# team A\nalpha-key-1\n\n  beta-key-2  \n", "keys").expect("valid");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(b"Bearer alpha-key-1")), Ok(()));
        assert_eq!(keys.check(Some(b"bearer   beta-key-2 ")), Ok(()));
        assert!(!format!("{keys:?}").contains("alpha"));
    }

    #[test]
    fn refusals_say_why() {
        let keys = ApiKeys::parse("alpha-key-1", "keys").expect("valid");
        assert_eq!(keys.check(None), Err(Refusal::Missing));
        assert_eq!(keys.check(Some(b"alpha-key-1")), Err(Refusal::NotBearer));
        assert_eq!(
            keys.check(Some(b"Basic YWxhZGRpbjpvcGVu")),
            Err(Refusal::NotBearer)
        );
        assert_eq!(keys.check(Some(b"Bearer ")), Err(Refusal::NotBearer));
        assert_eq!(
            keys.check(Some(b"Bearer alpha-key-2")),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(
            keys.check(Some(b"Bearer alpha-key-1x")),
            Err(Refusal::UnknownKey)
        );
        assert_eq!(keys.check(Some(b"Bearer alpha")), Err(Refusal::UnknownKey));
    }

    #[test]
    fn bad_files_are_refused() {
        let empty = ApiKeys::parse("# nothing\n\n", "keys").expect_err("empty");
        assert!(empty.to_string().contains("holds no key"));
        let spaced = ApiKeys::parse("ok\nhas space\n", "keys").expect_err("space");
        assert!(spaced.to_string().contains("line 2"));
        let missing = ApiKeys::load(Path::new("/nonexistent/keys")).expect_err("missing");
        assert!(missing.to_string().contains("cannot read API key file"));
    }
}
