//! TLS to the cluster: the certificate authorities the nodes are checked against and,
//! optionally, the certificate this server presents (`--scylla-tls-ca`, `--scylla-tls-cert`,
//! `--scylla-tls-key`).
//!
//! The files are read once, at start, into a rustls client configuration that the driver
//! uses for every connection (the driver's `rustls-023` feature: no system OpenSSL). A file
//! that cannot be read or holds no usable PEM item stops the start with the flag and the
//! path, rather than leaving a server that can never reach its cluster.
//!
//! Only the given authorities are trusted, not the system's: a cluster's certificates are
//! usually signed by a private CA, and trusting every public CA would let any certificate
//! bought for the node's address pass. Each node's certificate is verified, and against
//! the node's IP address: the driver reaches nodes by the addresses the cluster advertises
//! (the contact points only bootstrap it), so every node's certificate needs its address
//! as an IP subject alternative name. There is no switch to skip the check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The PEM files TLS is set up from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate authorities the nodes' certificates must chain to (`--scylla-tls-ca`).
    pub ca: PathBuf,
    /// This server's certificate chain and its private key, for clusters that require
    /// client certificates (`--scylla-tls-cert`, `--scylla-tls-key`).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Why TLS could not be set up from the files given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: cannot read it: {source}")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag} {path}: not a valid PEM file: {source}")]
    Pem {
        flag: &'static str,
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{flag} {path}: {missing}")]
    Missing {
        flag: &'static str,
        path: String,
        missing: &'static str,
    },
    #[error("--scylla-tls-ca {path}: a certificate in it is not usable as an authority: {source}")]
    Authority {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("--scylla-tls-cert and --scylla-tls-key: {source}")]
    ClientCertificate {
        #[source]
        source: rustls::Error,
    },
}

impl TlsFiles {
    /// Reads the files into the driver's TLS configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        const CA: &str = "--scylla-tls-ca";
        let mut roots = RootCertStore::empty();
        for certificate in certificates(CA, &self.ca)? {
            roots
                .add(certificate)
                .map_err(|source| TlsError::Authority {
                    path: self.ca.display().to_string(),
                    source,
                })?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::ClientCertificate { source })?
            .with_root_certificates(roots);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                const KEY: &str = "--scylla-tls-key";
                let chain = certificates("--scylla-tls-cert", cert)?;
                let bytes = read(KEY, key)?;
                let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
                    rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
                        flag: KEY,
                        path: key.display().to_string(),
                        missing: "no PEM private key in it",
                    },
                    source => TlsError::Pem {
                        flag: KEY,
                        path: key.display().to_string(),
                        source,
                    },
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsError::ClientCertificate { source })?
            }
        };
        Ok(Arc::new(config))
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            flag,
            path: path.display().to_string(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Missing {
            flag,
            path: path.display().to_string(),
            missing: "no PEM certificate in it",
        });
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    fn error_of(files: TlsFiles) -> String {
        files.client_config().expect_err("refused").to_string()
    }

    #[test]
    fn a_ca_alone_or_with_a_client_certificate_loads() {
        let ca_only = TlsFiles {
            ca: fixture("ca.pem"),
            client: None,
        };
        assert!(ca_only.client_config().is_ok());
        let with_client = TlsFiles {
            ca: fixture("ca.pem"),
            client: Some((fixture("client.pem"), fixture("client-key.pem"))),
        };
        assert!(with_client
            .client_config()
            .expect("loads")
            .client_auth_cert_resolver
            .has_certs());
    }

    #[test]
    fn unusable_files_are_refused_naming_the_flag_and_the_file() {
        let missing = error_of(TlsFiles {
            ca: fixture("absent.pem"),
            client: None,
        });
        assert!(missing.starts_with("--scylla-tls-ca "), "{missing}");
        assert!(missing.contains("absent.pem: cannot read it"), "{missing}");

        // A key is no certificate.
        let key_as_ca = error_of(TlsFiles {
            ca: fixture("client-key.pem"),
            client: None,
        });
        assert!(
            key_as_ca.contains("--scylla-tls-ca") && key_as_ca.contains("no PEM certificate"),
            "{key_as_ca}"
        );

        let cert_as_key = error_of(TlsFiles {
            ca: fixture("ca.pem"),
            client: Some((fixture("client.pem"), fixture("client.pem"))),
        });
        assert!(
            cert_as_key.starts_with("--scylla-tls-key ")
                && cert_as_key.contains("no PEM private key"),
            "{cert_as_key}"
        );

        // The CA's key does not belong to the client certificate.
        let mismatched = error_of(TlsFiles {
            ca: fixture("ca.pem"),
            client: Some((fixture("client.pem"), fixture("ca-key.pem"))),
        });
        assert!(
            mismatched.starts_with("--scylla-tls-cert and --scylla-tls-key"),
            "{mismatched}"
        );
    }
}
