//! Certificates in the black-box tests: PEM helpers, a self-signed test certificate, and a
//! client assertion signed the way any SDK would, independently of the engine.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::Emulator;

pub fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("PEM begin") + begin.len();
    let stop = pem[start..].find(&end).expect("PEM end") + start;
    let body: String = pem[start..stop].split_whitespace().collect();
    STANDARD.decode(body).expect("PEM base64")
}

/// A middle line of a PEM body: what a leak of the key would contain.
pub fn pem_body_line(pem: &str) -> String {
    let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    lines[lines.len() / 2].to_string()
}

/// Signs a client assertion for `client_id` with the PKCS#8 `key_pem` of `cert_pem`, the
/// way any SDK would, independently of the engine.
pub fn client_assertion(cert_pem: &str, key_pem: &str, client_id: &str, aud: &str) -> String {
    let der = pem_der(cert_pem, "CERTIFICATE");
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pem_der(key_pem, "PRIVATE KEY"))
        .expect("PKCS#8 RSA key");
    assert!(key.public_modulus_len() * 8 >= 2048, "RSA 2048 or larger");
    let x5t = URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref(),
    );
    let now = chrono::Utc::now().timestamp();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": x5t});
    let claims = json!({"aud": aud, "iss": client_id, "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 300});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub fn token_url(emu: &Emulator) -> String {
    format!(
        "{}{}/oauth2/v2.0/token",
        emu.var("AZURE_AUTHORITY_HOST"),
        emu.var("AZURE_TENANT_ID")
    )
}

/// A test-made self-signed RSA certificate and key (PEM), valid for `days`.
pub fn make_certificate(days: i64) -> (String, String) {
    use aws_lc_rs::encoding::AsDer;
    let key =
        aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    let pkcs8 = key.as_der().expect("pkcs8").as_ref().to_vec();
    let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("rcgen key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    let now = chrono::Utc::now().timestamp();
    if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(now - 60) {
        params.not_before = t;
    }
    if let Ok(t) = time::OffsetDateTime::from_unix_timestamp(now + days * 86_400) {
        params.not_after = t;
    }
    let cert = params.self_signed(&signer).expect("self-signed");
    (cert.pem(), signer.serialize_pem())
}

pub fn app_state(emu: &Emulator, object_id: &str) -> Value {
    emu.state()["applications"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == object_id).cloned())
        .unwrap_or(Value::Null)
}
