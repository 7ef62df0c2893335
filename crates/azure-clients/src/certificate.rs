//! Certificate credentials: an X.509 certificate and its RSA private key, signing client
//! assertions for the token endpoint (RFC 7523, Entra ID's "certificate credentials") and
//! proof-of-possession tokens for Graph `addKey`/`removeKey`.
//!
//! Only PEM is read: the certificate (`CERTIFICATE`) and an unencrypted RSA key
//! (`PRIVATE KEY` = PKCS#8, or `RSA PRIVATE KEY` = PKCS#1), either as two texts or as one
//! file holding both (the Azure SDKs' `AZURE_CLIENT_CERTIFICATE_PATH` convention). PKCS#12
//! (PFX) files are refused with a message saying to convert them.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;

use super::error::AzureError;
use super::secret::SecretString;

/// The audience of proof-of-possession tokens (the legacy Azure AD Graph application id).
pub const PROOF_AUDIENCE: &str = "00000002-0000-0000-c000-000000000000";

/// Lifetime of the assertions and proofs this module signs (Entra ID: at most 10 minutes
/// for proofs).
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// Smallest RSA key Entra ID accepts for client assertions.
pub const MIN_RSA_BITS: usize = 2048;

/// A certificate and its private key. `Debug` shows only the thumbprint.
pub struct ClientCertificate {
    cert_der: Vec<u8>,
    key: RsaKeyPair,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("thumbprint", &self.thumbprint_hex())
            .finish_non_exhaustive()
    }
}

fn op() -> &'static str {
    "load client certificate"
}

fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
        {
            label = Some(l.to_owned());
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take() {
                if let Ok(der) = STANDARD.decode(body.as_bytes()) {
                    out.push((l, der));
                }
            }
            body.clear();
        } else if label.is_some() && !line.contains(':') {
            body.push_str(line);
        }
    }
    out
}

impl ClientCertificate {
    /// From a PEM certificate and a PEM private key (the first certificate of `cert_pem`
    /// is the one registered on the application).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClientCertificate, AzureError> {
        let cert = pem_blocks(cert_pem)
            .into_iter()
            .find(|(l, _)| l == "CERTIFICATE")
            .map(|(_, d)| d)
            .ok_or_else(|| {
                AzureError::config(
                    "client_certificate: no PEM 'CERTIFICATE' block found".to_string(),
                )
            })?;
        Self::from_der_and_key_pem(cert, key_pem)
    }

    /// From one PEM text holding the certificate and its key (e.g. the file named by
    /// `AZURE_CLIENT_CERTIFICATE_PATH`).
    pub fn from_combined_pem(pem: &str) -> Result<ClientCertificate, AzureError> {
        Self::from_pem(pem, pem)
    }

    fn from_der_and_key_pem(
        cert_der: Vec<u8>,
        key_pem: &str,
    ) -> Result<ClientCertificate, AzureError> {
        let blocks = pem_blocks(key_pem);
        if blocks.iter().any(|(l, _)| l == "ENCRYPTED PRIVATE KEY") {
            return Err(AzureError::config(
                "client certificate key: encrypted private keys are not supported; decrypt it first (openssl pkey -in key.pem -out plain.pem)",
            ));
        }
        let key = if let Some((_, der)) = blocks.iter().find(|(l, _)| l == "PRIVATE KEY") {
            RsaKeyPair::from_pkcs8(der).map_err(|e| {
                AzureError::config(format!(
                    "client certificate key: not an RSA PKCS#8 private key ({e})"
                ))
            })?
        } else if let Some((_, der)) = blocks.iter().find(|(l, _)| l == "RSA PRIVATE KEY") {
            RsaKeyPair::from_der(der).map_err(|e| {
                AzureError::config(format!(
                    "client certificate key: not an RSA PKCS#1 private key ({e})"
                ))
            })?
        } else {
            return Err(AzureError::config(
                "client certificate key: no PEM 'PRIVATE KEY' or 'RSA PRIVATE KEY' block found",
            ));
        };
        if key.public_modulus_len() * 8 < MIN_RSA_BITS {
            return Err(AzureError::config(format!(
                "client certificate key: RSA keys must have at least {MIN_RSA_BITS} bits"
            )));
        }
        // The certificate's SubjectPublicKeyInfo holds the key's PKCS#1 public key verbatim.
        let public = key.public_key().as_ref().to_vec();
        if public.is_empty() || !cert_der.windows(public.len()).any(|w| w == public) {
            return Err(AzureError::config(
                "client certificate: the private key does not belong to the certificate",
            ));
        }
        Ok(ClientCertificate { cert_der, key })
    }

    /// Reads a PEM file holding the certificate and the key. PKCS#12 files are refused.
    pub fn from_file(
        path: &std::path::Path,
        password: Option<&SecretString>,
    ) -> Result<ClientCertificate, AzureError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| AzureError::credential(op(), format!("'{shown}': {e}")))?;
        let text = String::from_utf8(bytes)
            .ok()
            .filter(|t| t.contains("-----BEGIN "));
        let Some(text) = text else {
            return Err(AzureError::config(format!(
                "AZURE_CLIENT_CERTIFICATE_PATH '{shown}' is not a PEM file; PKCS#12 (PFX) is not supported: convert it with `openssl pkcs12 -in cert.pfx -nodes -out cert.pem`"
            )));
        };
        if password.is_some_and(|p| !p.is_empty()) {
            return Err(AzureError::config(
                "AZURE_CLIENT_CERTIFICATE_PASSWORD is set, but only unencrypted PEM files are supported",
            ));
        }
        Self::from_combined_pem(&text)
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate as the base64 a Graph `keyCredential.key` takes.
    pub fn certificate_base64(&self) -> String {
        STANDARD.encode(&self.cert_der)
    }

    /// SHA-1 of the DER certificate (the thumbprint Entra ID shows).
    pub fn thumbprint_sha1(&self) -> Vec<u8> {
        digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &self.cert_der)
            .as_ref()
            .to_vec()
    }

    /// The thumbprint in upper-case hex, as the portal shows it.
    pub fn thumbprint_hex(&self) -> String {
        self.thumbprint_sha1()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// `x5t`: base64url SHA-1 thumbprint.
    pub fn x5t(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.thumbprint_sha1())
    }

    /// `x5t#S256`: base64url SHA-256 thumbprint.
    pub fn x5t_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &self.cert_der).as_ref())
    }

    fn sign_jwt(&self, claims: serde_json::Value) -> Result<SecretString, AzureError> {
        let header = json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t(),
            "x5t#S256": self.x5t_s256(),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| AzureError::credential("sign client assertion", "RSA signing failed"))?;
        Ok(SecretString::new(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }

    /// A client assertion for `client_id` at the token endpoint `token_endpoint`
    /// (`aud`), valid for 10 minutes.
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
    ) -> Result<SecretString, AzureError> {
        let now = unix_now();
        self.sign_jwt(json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        }))
    }

    /// A proof-of-possession token for Graph `addKey`/`removeKey` on the object
    /// `object_id` (an application or service principal object id, not the app id).
    pub fn proof_of_possession(&self, object_id: &str) -> Result<SecretString, AzureError> {
        let now = unix_now();
        self.sign_jwt(json!({
            "aud": PROOF_AUDIENCE,
            "iss": object_id,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        }))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;

    fn make() -> (String, String) {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = key.as_der().unwrap().as_ref().to_vec();
        let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&signer)
            .unwrap();
        (cert.pem(), signer.serialize_pem())
    }

    #[test]
    fn loads_signs_and_verifies() {
        let (cert, key) = make();
        let c = ClientCertificate::from_pem(&cert, &key).unwrap();
        let combined = ClientCertificate::from_combined_pem(&format!("{key}\n{cert}")).unwrap();
        assert_eq!(c.thumbprint_hex(), combined.thumbprint_hex());
        assert_eq!(c.thumbprint_hex().len(), 40);
        assert!(!format!("{c:?}").contains("PRIVATE"));
        let a = c
            .client_assertion("client", "https://login/t/oauth2/v2.0/token")
            .unwrap();
        let parts: Vec<&str> = a.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["x5t"], c.x5t());
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://login/t/oauth2/v2.0/token");
        assert_eq!(claims["iss"], "client");
        assert_eq!(claims["sub"], "client");
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = c.key.public_key().as_ref().to_vec();
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .unwrap();
        let p = c.proof_of_possession("obj").unwrap();
        assert!(!p.expose().contains('='));
    }

    #[test]
    fn reads_a_combined_pem_file_and_refuses_pfx_and_passwords() {
        let (cert, key) = make();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("cert.pem");
        std::fs::write(&pem, format!("{cert}{key}")).unwrap();
        let c = ClientCertificate::from_file(&pem, None).unwrap();
        assert_eq!(
            c.thumbprint_hex(),
            ClientCertificate::from_pem(&cert, &key)
                .unwrap()
                .thumbprint_hex()
        );
        let e = ClientCertificate::from_file(&pem, Some(&SecretString::new("pw"))).unwrap_err();
        assert!(
            e.to_string().contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{e}"
        );
        let pfx = dir.path().join("cert.pfx");
        std::fs::write(&pfx, [0x30u8, 0x82, 0x0a, 0x00, 0xff, 0xfe]).unwrap();
        let e = ClientCertificate::from_file(&pfx, None).unwrap_err();
        assert!(e.to_string().contains("PKCS#12"), "{e}");
    }

    #[test]
    fn refuses_mismatched_and_malformed() {
        let (cert, _) = make();
        let (_, other_key) = make();
        let e = ClientCertificate::from_pem(&cert, &other_key).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert!(ClientCertificate::from_pem("junk", &other_key).is_err());
        assert!(ClientCertificate::from_pem(&cert, "junk").is_err());
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(ClientCertificate::from_pem(&cert, enc)
            .unwrap_err()
            .to_string()
            .contains("encrypted"));
    }
}
