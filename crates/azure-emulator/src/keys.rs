//! Certificates and RSA-signed JWTs: key credentials, client assertions,
//! proof-of-possession tokens (`addKey`/`removeKey`), the built-in cluster OIDC issuer used
//! for workload identity federation tests, and ISO 8601 durations of app management
//! policies.

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::errors::EmulatorError;

/// What the emulator keeps of a registered X.509 certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub sha1: Vec<u8>,
    pub sha256: Vec<u8>,
    /// The subject public key (PKCS#1 `RSAPublicKey` for RSA keys).
    pub public_key: Vec<u8>,
    pub rsa: bool,
    pub key_bits: usize,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Parses a DER certificate; `None` when it is not one.
pub fn parse_certificate(der: &[u8]) -> Option<CertInfo> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let spki = cert.public_key();
    let rsa = spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
    let key_bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
    let validity = cert.validity();
    Some(CertInfo {
        der: der.to_vec(),
        sha1: digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)
            .as_ref()
            .to_vec(),
        sha256: digest::digest(&digest::SHA256, der).as_ref().to_vec(),
        public_key: spki.subject_public_key.data.to_vec(),
        rsa,
        key_bits,
        not_before: DateTime::from_timestamp(validity.not_before.timestamp(), 0)?,
        not_after: DateTime::from_timestamp(validity.not_after.timestamp(), 0)?,
    })
}

/// Decodes the `key` of a keyCredential: base64 of the DER certificate (a PEM body is
/// accepted too, as Graph does for certificates pasted with their armour).
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body.trim()).ok()
}

/// A compact JWS split into its parts.
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

/// Parses a JWT (base64url without padding); `None` when malformed.
pub fn parse_jwt(token: &str) -> Option<Jwt> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header = serde_json::from_slice(&decode(h)?).ok()?;
    let claims = serde_json::from_slice(&decode(p)?).ok()?;
    Some(Jwt {
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature: decode(s)?,
    })
}

impl Jwt {
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    pub fn claim_i64(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }

    /// `aud` as a list (a string or an array of strings).
    pub fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The certificate thumbprint named by the header: (`x5t` SHA-1, `x5t#S256` SHA-256).
    pub fn thumbprints(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let dec = |n: &str| {
            self.header_str(n)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
        };
        (dec("x5t"), dec("x5t#S256"))
    }

    /// Verifies an RS256 or PS256 signature with an RSA public key (PKCS#1 DER).
    pub fn verify_rsa(&self, public_key: &[u8]) -> bool {
        let alg: &'static dyn signature::VerificationAlgorithm = match self.header_str("alg") {
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            _ => return false,
        };
        UnparsedPublicKey::new(alg, public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }
}

/// A stand-in for a Kubernetes cluster's service-account token issuer (what AKS publishes
/// as its OIDC issuer): it signs projected-token-shaped JWTs with its own RSA key, and the
/// token service verifies federated assertions from this issuer against that key.
pub struct ClusterIssuer {
    key: RsaKeyPair,
    kid: String,
    /// The issuer URL (with a trailing slash, as AKS writes it).
    pub issuer: String,
}

impl std::fmt::Debug for ClusterIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ClusterIssuer {
    pub fn generate(issuer: String) -> Result<Self, EmulatorError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| EmulatorError::Crypto("RSA key generation failed".to_string()))?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| EmulatorError::Crypto("RSA public key encoding failed".to_string()))?;
        let kid =
            URL_SAFE_NO_PAD.encode(&digest::digest(&digest::SHA256, spki.as_ref()).as_ref()[..16]);
        Ok(ClusterIssuer { key, kid, issuer })
    }

    /// The JSON Web Key Set of the issuer.
    pub fn jwks(&self) -> Value {
        let public = self.key.public_key();
        json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }]})
    }

    /// Signs `claims` (RS256, with this issuer's `kid`).
    pub fn sign(&self, claims: &Value) -> Result<String, EmulatorError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| EmulatorError::Crypto("RSA signing failed".to_string()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Whether `jwt` carries a valid signature of this issuer.
    pub fn verifies(&self, jwt: &Jwt) -> bool {
        jwt.header_str("alg") == Some("RS256") && jwt.verify_rsa(self.key.public_key().as_ref())
    }
}

/// Parses an ISO 8601 duration (`P90D`, `P4DT12H30M5S`, `P1Y`, `P2W`); years count 365
/// days and months 30, as Graph's lifetime checks do for whole days.
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let rest = text.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let mut secs: i64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' => number.push(c),
            unit => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                let factor = match (in_time, unit) {
                    (false, 'Y') => 365 * 86_400,
                    (false, 'M') => 30 * 86_400,
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return None,
                };
                secs = secs.checked_add((n * factor as f64) as i64)?;
                any = true;
            }
        }
    }
    (number.is_empty() && any).then(|| chrono::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("P90D"), Some(chrono::Duration::days(90)));
        assert_eq!(
            parse_duration("P4DT12H30M5S"),
            Some(chrono::Duration::seconds(
                4 * 86_400 + 12 * 3_600 + 30 * 60 + 5
            ))
        );
        assert_eq!(parse_duration("PT1H"), Some(chrono::Duration::hours(1)));
        assert_eq!(parse_duration("P1Y"), Some(chrono::Duration::days(365)));
        for bad in ["", "P", "90D", "P90", "PT", "P1H", "PxD"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn cluster_issuer_signs_and_verifies() {
        let issuer = ClusterIssuer::generate("https://127.0.0.1:1/cluster-issuer/".into()).unwrap();
        let t = issuer
            .sign(&json!({"iss": issuer.issuer, "sub": "s"}))
            .unwrap();
        let jwt = parse_jwt(&t).unwrap();
        assert!(issuer.verifies(&jwt));
        let other = ClusterIssuer::generate("x".into()).unwrap();
        assert!(!other.verifies(&jwt));
        let mut tampered = t.clone();
        tampered.insert(tampered.len() - 2, 'A');
        assert!(parse_jwt(&tampered).is_none_or(|j| !issuer.verifies(&j)));
        assert_eq!(issuer.jwks()["keys"][0]["kty"], "RSA");
    }

    #[test]
    fn parses_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let info = parse_certificate(cert.der()).unwrap();
        assert!(!info.rsa);
        assert_eq!(info.sha1.len(), 20);
        assert!(parse_certificate(b"junk").is_none());
        assert_eq!(decode_key(&cert.pem()).unwrap(), cert.der().to_vec());
    }
}
