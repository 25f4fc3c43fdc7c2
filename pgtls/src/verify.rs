//! The rustls client configuration for each [`Verification`], and the two certificate verifiers
//! rustls does not ship: none at all (`require` without a root certificate, as libpq), and the
//! chain without the host name (`verify-ca`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::{Error, TlsSettings, Verification};

/// libpq 17 sends this ALPN protocol; servers that predate it ignore it.
const ALPN: &[u8] = b"postgresql";

pub(crate) fn client_config(settings: &TlsSettings) -> Result<ClientConfig, Error> {
    // An explicit provider rather than the process-wide default, which would be whichever
    // backend another crate happened to install.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> =
        match (settings.verification(), settings.root_cert()) {
            (Verification::None, _) => Arc::new(NoHostName {
                roots: None,
                algorithms,
            }),
            (Verification::Chain, Some(path)) => Arc::new(NoHostName {
                roots: Some(Arc::new(load_roots(path)?)),
                algorithms,
            }),
            (Verification::Full, Some(path)) => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider)
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            (Verification::Chain | Verification::Full, None) => {
                return Err(Error::MissingRootCert {
                    mode: settings.mode(),
                });
            }
        };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_sni = settings.sni();
    Ok(config)
}

/// Every certificate in the PEM file `path`.
fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let unreadable = |detail: String| Error::RootCert {
        path: path.to_path_buf(),
        detail,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(unreadable(format!(
            "no usable CA certificate in it ({ignored} could not be parsed); expected PEM \
             (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(roots)
}

/// The verifier rustls does not ship, for the modes that do not check the host name. Without
/// roots it accepts whatever certificate the server shows (libpq's `require` without a root
/// certificate): the session is encrypted, but not authenticated. With roots (`verify-ca`) the
/// chain must end at a trusted CA and be valid now for server authentication, whatever host
/// name the certificate holds. Either way the handshake signatures are checked, so the server
/// at least holds the key of the certificate it shows.
#[derive(Debug)]
struct NoHostName {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
