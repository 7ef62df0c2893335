//! AutoMTLS: the plugin's own certificate and the pinned trust of the host's certificate.
//!
//! The host hands its certificate in `PLUGIN_CLIENT_CERT`; it is an ECDSA P-521 certificate
//! with `CA:TRUE`, which webpki refuses as an end entity. Both directions therefore pin it by
//! its exact DER bytes and verify handshake signatures with aws-lc-rs's algorithms (ring has
//! no P-521). Everything that needs randomness (our key, key exchange, signing) uses ring:
//! aws-lc seeds its random generator from CPU jitter on first use, which costs about 100 ms
//! of CPU, and that would sit between exec and the handshake line.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot generate the plugin certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("PLUGIN_CLIENT_CERT does not hold a PEM certificate")]
    NoHostCertificate,
    #[error("cannot read PLUGIN_CLIENT_CERT: {0}")]
    HostCertificate(std::io::Error),
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
}

/// The plugin's certificate and key, and the host's pinned certificate.
pub struct TlsIdentity {
    pub cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
    host_cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    /// A fresh self-signed certificate for `localhost`, and the host's certificate from PEM.
    pub fn generate(host_cert_pem: &str) -> Result<Self, TlsError> {
        let host_cert = rustls_pemfile::certs(&mut host_cert_pem.as_bytes())
            .next()
            .ok_or(TlsError::NoHostCertificate)?
            .map_err(TlsError::HostCertificate)?;

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "HashiCorp");
        dn.push(rcgen::DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyAgreement,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = now + time::Duration::hours(262_980);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let cert = params.self_signed(&key)?;

        Ok(Self {
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
            host_cert,
            provider: Arc::new(provider()),
        })
    }

    fn pinned(&self) -> Arc<PinnedHost> {
        Arc::new(PinnedHost {
            host_cert: self.host_cert.clone(),
            provider: self.provider.clone(),
            hints: Vec::new(),
        })
    }

    /// Server side of the main connection: client authentication required, ALPN `h2`.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(self.pinned())
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(self.key_der.clone_key()),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Client side of the callback connections to the host's storage and system view.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(self.pinned())
            .with_client_auth_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(self.key_der.clone_key()),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// ring for randomness, key exchange and our signatures; aws-lc-rs's verification algorithms
/// (which include ECDSA P-521 with SHA-512, the host's key) for the peer's signatures.
fn provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.signature_verification_algorithms =
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    provider
}

/// Accepts exactly the host's certificate, in both directions.
#[derive(Debug)]
struct PinnedHost {
    host_cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    hints: Vec<DistinguishedName>,
}

impl PinnedHost {
    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.host_cert.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for PinnedHost {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ServerCertVerifier for PinnedHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_builds_both_configs() {
        // Use a certificate of our own as the "host" one.
        let host = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let id = TlsIdentity::generate(&host.cert.pem()).unwrap();
        assert!(id.cert_der.len() > 100);
        let server = id.server_config().unwrap();
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        id.client_config().unwrap();
    }

    #[test]
    fn pinning_rejects_other_certificates() {
        let host = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let id = TlsIdentity::generate(&host.cert.pem()).unwrap();
        let pin = id.pinned();
        assert!(pin.check(host.cert.der()).is_ok());
        assert!(pin.check(other.cert.der()).is_err());
    }

    #[test]
    fn host_signatures_with_p521_can_be_verified() {
        let schemes = provider()
            .signature_verification_algorithms
            .supported_schemes();
        assert!(
            schemes.contains(&SignatureScheme::ECDSA_NISTP521_SHA512),
            "{schemes:?}"
        );
    }

    #[test]
    fn missing_host_certificate_is_an_error() {
        assert!(matches!(
            TlsIdentity::generate("not a pem"),
            Err(TlsError::NoHostCertificate)
        ));
    }
}
