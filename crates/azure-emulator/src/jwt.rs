//! JWT-shaped access tokens, HS256-signed with a per-process random key.
//!
//! SHA-256 comes from the rustls crypto provider (aws-lc-rs) already linked into the binary;
//! HMAC is built on top of it (RFC 2104).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rustls::crypto::hash::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::EmulatorError;

/// Claims the emulator puts into (and reads back from) its access tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub appid: String,
    pub azp: String,
    pub idtyp: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub ver: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token signature is invalid")]
    BadSignature,
}

/// Signs and verifies tokens.
pub struct JwtKey {
    key: [u8; 32],
    hash: &'static dyn Hash,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

const BLOCK: usize = 64;

impl JwtKey {
    pub fn generate() -> Result<Self, EmulatorError> {
        let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
        let hash = suite
            .tls13()
            .map(|s| s.common.hash_provider)
            .ok_or_else(|| EmulatorError::Crypto("SHA-256 is not available".to_string()))?;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Ok(JwtKey { key, hash })
    }

    fn hmac(&self, data: &[u8]) -> Vec<u8> {
        let mut k = [0u8; BLOCK];
        k[..self.key.len()].copy_from_slice(&self.key);
        let mut inner = Vec::with_capacity(BLOCK + data.len());
        inner.extend(k.iter().map(|b| b ^ 0x36));
        inner.extend_from_slice(data);
        let inner_hash = self.hash.hash(&inner);
        let mut outer = Vec::with_capacity(BLOCK + 32);
        outer.extend(k.iter().map(|b| b ^ 0x5c));
        outer.extend_from_slice(inner_hash.as_ref());
        self.hash.hash(&outer).as_ref().to_vec()
    }

    /// Serializes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": "azure-emulator"});
        let payload = serde_json::to_value(claims).unwrap_or(Value::Null);
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self.hmac(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks the signature and returns the claims (expiry and audience are the caller's job).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(TokenError::BadSignature);
        }
        let expected = self.hmac(format!("{h}.{p}").as_bytes());
        if !constant_time_eq(&expected, &sig) {
            return Err(TokenError::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
    }
}

/// Compares two byte strings without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes the payload of any JWT without checking its signature (used for the external
/// assertions of workload identity federation, whose issuers the emulator cannot reach).
pub fn decode_unverified(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (Some(_), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let payload = URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            aud: "https://127.0.0.1:1".into(),
            iss: "iss".into(),
            iat: 1,
            nbf: 1,
            exp: 2,
            tid: "t".into(),
            oid: "o".into(),
            sub: "o".into(),
            appid: "a".into(),
            azp: "a".into(),
            idtyp: "app".into(),
            roles: vec!["Application.ReadWrite.All".into()],
            ver: "1.0".into(),
        }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; emulate by zero-padding (HMAC pads keys).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let k = JwtKey {
            key,
            hash: JwtKey::generate().unwrap().hash,
        };
        // With trailing zero bytes the padded key equals the RFC key, so results must agree.
        let mac = k.hmac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = JwtKey::generate().unwrap();
        let t = k.sign(&claims());
        assert_eq!(k.verify(&t).unwrap(), claims());
        let other = JwtKey::generate().unwrap();
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));
        assert_eq!(k.verify("abc"), Err(TokenError::Malformed));
        assert!(decode_unverified(&t).is_some());
    }
}
