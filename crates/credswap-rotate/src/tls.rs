//! [`SslMode`]: libpq's `sslmode`, and (feature `rustls`) the rustls client configurations
//! behind [`Database::rustls`](crate::Database::rustls).

use std::fmt;
use std::str::FromStr;

/// How a connection uses TLS, as libpq's `sslmode` names it.
///
/// With [`Database::rustls`](crate::Database::rustls) and no CA file, `prefer` and `require`
/// encrypt without verifying the server's certificate (as libpq does without a root
/// certificate); with a CA file they verify its chain, as `verify-ca` does (as libpq does when
/// a root certificate exists). `verify-ca` and `verify-full` need a CA file; `verify-full` also
/// checks that the certificate names the host the connection was made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else plaintext (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS, and the server's certificate chain must lead to the CA.
    VerifyCa,
    /// TLS, the chain must lead to the CA, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// Every mode, from the weakest.
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// libpq's name: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode verifies the server's certificate whatever the CA file
    /// (`verify-ca`, `verify-full`).
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `sslmode` that is not one of libpq's five (`allow` is not supported: it would try
/// plaintext first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sslmode {0:?} (expected disable, prefer, require, verify-ca or verify-full)")]
pub struct UnknownSslMode(String);

impl FromStr for SslMode {
    type Err = UnknownSslMode;

    /// Parses libpq's names (`verify-full`, ...).
    fn from_str(s: &str) -> Result<SslMode, UnknownSslMode> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| UnknownSslMode(s.to_owned()))
    }
}

#[cfg(feature = "rustls")]
pub(crate) use self::rustls_config::client_config;

#[cfg(feature = "rustls")]
mod rustls_config {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

    use super::SslMode;
    use crate::Error;

    /// The rustls client config for `mode` (not `disable`) and the CA file, if any.
    pub(crate) fn client_config(
        mode: SslMode,
        ca_file: Option<&Path>,
    ) -> Result<rustls::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?;
        let config = match ca_file {
            None if mode.verifies() => {
                return Err(Error::config(format!(
                    "sslmode {mode} needs a CA file to verify the server's certificate with \
                     (libpq's sslrootcert)"
                )));
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(
                    provider.signature_verification_algorithms,
                ))),
            Some(path) => {
                let roots = roots(path)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| Error::config(format!("TLS: the CA file {}: {e}", path.display())))?;
                if mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(webpki)
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                }
            }
        };
        Ok(config.with_no_client_auth())
    }

    /// The certificates of a PEM file.
    fn roots(path: &Path) -> Result<RootCertStore, Error> {
        let bad =
            |what: String| Error::config(format!("TLS: the CA file {}: {what}", path.display()));
        let mut store = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            store
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
        }
        if store.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        Ok(store)
    }

    /// `prefer`/`require` without a CA file: encrypted, the certificate not verified (libpq's
    /// behaviour); the handshake's signatures are still checked.
    #[derive(Debug)]
    struct Unverified(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// `verify-ca` (and `prefer`/`require` with a CA file): the chain must lead to the CA; the
    /// name in the certificate is not checked.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in SslMode::ALL {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert!("allow".parse::<SslMode>().is_err());
        assert!("VERIFY-FULL".parse::<SslMode>().is_err());
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn verifying_modes_need_a_ca_file() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let err = client_config(mode, None).unwrap_err();
            assert!(err.is_config(), "{err:?}");
            assert!(err.to_string().contains(mode.as_str()), "{err}");
        }
        client_config(SslMode::Require, None).unwrap();
        let missing = std::path::Path::new("/nonexistent/credswap-ca.pem");
        let err = client_config(SslMode::VerifyFull, Some(missing)).unwrap_err();
        assert!(
            err.is_config() && err.to_string().contains("credswap-ca.pem"),
            "{err}"
        );
    }
}
