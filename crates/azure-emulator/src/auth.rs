//! Resources (audiences), token minting and bearer-token validation for Graph and ARM.

use axum::http::HeaderMap;

use super::jwt::{Claims, TokenError};
use super::state::ServicePrincipal;
use super::{Shared, Urls};

/// The two resources the emulator issues tokens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Graph,
    Arm,
}

const GRAPH_WELL_KNOWN: [&str; 2] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
];
const ARM_WELL_KNOWN: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];

fn norm(s: &str) -> String {
    s.trim_end_matches('/').to_ascii_lowercase()
}

/// Audiences a service accepts.
pub fn audiences(urls: &Urls, resource: Resource) -> Vec<String> {
    let (base, known) = match resource {
        Resource::Graph => (&urls.graph, GRAPH_WELL_KNOWN),
        Resource::Arm => (&urls.arm, ARM_WELL_KNOWN),
    };
    let mut v = vec![norm(base)];
    v.extend(known.iter().map(|k| norm(k)));
    v
}

/// Maps a v1 resource (or a v2 scope with its `/.default` removed) to a resource.
pub fn resolve_resource(urls: &Urls, resource: &str) -> Option<Resource> {
    let r = norm(resource);
    if r.is_empty() {
        return None;
    }
    if audiences(urls, Resource::Graph).contains(&r) {
        Some(Resource::Graph)
    } else if audiences(urls, Resource::Arm).contains(&r) {
        Some(Resource::Arm)
    } else {
        None
    }
}

/// A freshly minted access token.
pub struct Minted {
    pub token: String,
    pub iat: i64,
    pub exp: i64,
    pub lifetime: u64,
}

/// Issues a token for `sp` with audience `aud`.
pub fn mint(
    shared: &Shared,
    tenant: &str,
    sp: &ServicePrincipal,
    resource: Resource,
    aud: &str,
) -> Minted {
    let lifetime = shared.settings().token_lifetime_secs;
    let iat = chrono::Utc::now().timestamp();
    let exp = iat.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX / 2));
    let claims = Claims {
        aud: aud.to_string(),
        iss: format!("{}{tenant}/v2.0", shared.urls.authority),
        iat,
        nbf: iat,
        exp,
        tid: tenant.to_string(),
        oid: sp.id.clone(),
        sub: sp.id.clone(),
        appid: sp.app_id.clone(),
        azp: sp.app_id.clone(),
        idtyp: "app".to_string(),
        roles: match resource {
            Resource::Graph => sp.graph_roles.clone(),
            Resource::Arm => Vec::new(),
        },
        ver: "1.0".to_string(),
    };
    Minted {
        token: shared.jwt.sign(&claims),
        iat,
        exp,
        lifetime,
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    BadSignature,
    WrongAudience,
    WrongTenant,
    Expired { exp: i64, now: i64 },
    NotYetValid,
}

/// Validates the `Authorization: Bearer` token of a request for `resource`.
pub fn validate(
    shared: &Shared,
    headers: &HeaderMap,
    resource: Resource,
) -> Result<Claims, AuthFailure> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(AuthFailure::Missing)?;
    let token = match value.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(AuthFailure::Malformed),
    };
    if token.is_empty() {
        return Err(AuthFailure::Missing);
    }
    let claims = shared.jwt.verify(token).map_err(|e| match e {
        TokenError::Malformed => AuthFailure::Malformed,
        TokenError::BadSignature => AuthFailure::BadSignature,
    })?;
    if !audiences(&shared.urls, resource).contains(&norm(&claims.aud)) {
        return Err(AuthFailure::WrongAudience);
    }
    let tenant = shared.dir().tenant_id.clone();
    if !claims.tid.eq_ignore_ascii_case(&tenant) {
        return Err(AuthFailure::WrongTenant);
    }
    let now = chrono::Utc::now().timestamp();
    if now >= claims.exp {
        return Err(AuthFailure::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.nbf > now + 300 {
        return Err(AuthFailure::NotYetValid);
    }
    Ok(claims)
}
