//! [`TlsConfig`]: HTTPS for the exporter, from a PEM certificate and key.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{ServerConfig, crypto};

use crate::error::MetricsError;

/// A certificate chain and private key to serve HTTPS with, the
/// `cert_file` and `key_file` of exporter-toolkit's `tls_server_config`.
///
/// The server then speaks TLS 1.2 and 1.3 only (rustls' safe defaults on
/// the aws-lc-rs provider, the one the API client already uses) and asks
/// for no client certificate. The files are read once, by
/// [`TlsConfig::from_pem_files`]: a renewed certificate takes a restart.
/// `Debug` shows the paths, never the key.
#[derive(Clone)]
pub struct TlsConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain (server certificate first, then any
    /// intermediates; other PEM sections are skipped, so a combined file
    /// works) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`MetricsError::TlsFile`], naming the file, if one cannot be read or
    /// holds no usable PEM item; [`MetricsError::TlsKeyPair`] if the key
    /// does not belong to the certificate or its type is not supported.
    pub fn from_pem_files(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Result<Self, MetricsError> {
        let (cert_file, key_file) = (cert_file.into(), key_file.into());
        let certs = read_certs(&cert_file)?;
        let key = read_key(&key_file)?;
        let provider = Arc::new(crypto::aws_lc_rs::default_provider());
        let pair_error = |source: tokio_rustls::rustls::Error| MetricsError::TlsKeyPair {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            source: Box::new(source),
        };
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(pair_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(pair_error)?;
        // The server speaks HTTP/1.1 only; saying so spares clients a guess.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig { cert_file, key_file, server: Arc::new(server) })
    }

    /// The certificate file loaded.
    #[must_use]
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The private key file loaded.
    #[must_use]
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server))
    }
}

fn file_error(
    what: &'static str,
    path: &Path,
    source: impl Into<Box<dyn StdError + Send + Sync>>,
) -> MetricsError {
    MetricsError::TlsFile { what, path: path.to_owned(), source: source.into() }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MetricsError> {
    const WHAT: &str = "certificate";
    let pem = std::fs::read(path).map_err(|source| file_error(WHAT, path, source))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| file_error(WHAT, path, source))?;
    if certs.is_empty() {
        return Err(file_error(
            WHAT,
            path,
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, MetricsError> {
    const WHAT: &str = "private key";
    let pem = std::fs::read(path).map_err(|source| file_error(WHAT, path, source))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => file_error(
            WHAT,
            path,
            "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ),
        other => file_error(WHAT, path, other),
    })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn chain(error: &MetricsError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    }

    #[test]
    fn loads_a_pair_and_names_the_file_that_is_wrong() {
        let dir = std::env::temp_dir().join(format!("plumline-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let cert = write("cert.pem", &one.cert.pem());
        let key = write("key.pem", &one.signing_key.serialize_pem());
        let other_key = write("other-key.pem", &other.signing_key.serialize_pem());
        let combined =
            write("combined.pem", &format!("{}{}", one.signing_key.serialize_pem(), one.cert.pem()));
        let garbage = write("garbage.pem", "not pem at all\n");
        let truncated = write("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let missing = dir.join("missing.pem");

        let tls = TlsConfig::from_pem_files(&cert, &key).expect("a matching pair loads");
        assert_eq!((tls.cert_file(), tls.key_file()), (cert.as_path(), key.as_path()));
        assert!(!format!("{tls:?}").contains("PRIVATE"), "{tls:?}");
        TlsConfig::from_pem_files(&combined, &combined).expect("a combined file loads");

        // (cert file, key file, the path the error must name, needle)
        let cases = [
            (&missing, &key, &missing, "cannot load the TLS certificate"),
            (&cert, &missing, &missing, "cannot load the TLS private key"),
            (&garbage, &key, &garbage, "no PEM certificate"),
            (&truncated, &key, &truncated, "cannot load the TLS certificate"),
            (&cert, &garbage, &garbage, "no PEM private key"),
            (&cert, &cert, &cert, "no PEM private key"),
            (&key, &key, &key, "no PEM certificate"),
            (&cert, &other_key, &other_key, "cannot use the TLS certificate"),
        ];
        for (cert_file, key_file, named, needle) in cases {
            let error = TlsConfig::from_pem_files(cert_file, key_file).expect_err("must fail");
            let text = chain(&error);
            assert!(text.contains(needle), "{cert_file:?} {key_file:?}: {text}");
            assert!(text.contains(&named.display().to_string()), "{cert_file:?} {key_file:?}: {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
