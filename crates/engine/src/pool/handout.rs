//! Handing out a pooled credential: one entry taken under the role's lock.

use super::*;

/// What a handout found.
pub enum Taken {
    /// A pooled credential, as `creds` returns it (before the request's metadata).
    Credential(Box<Response>),
    /// None: issue normally, with this warning.
    Empty(String),
}

/// Takes one ready credential of role `name` from its pool, then starts a refill.
pub async fn take(
    b: &Arc<AzureBackend>,
    storage: &Arc<dyn Storage>,
    name: &str,
    role: &Role,
) -> Taken {
    let taken = take_entry(b, storage.as_ref(), name, role).await;
    refill_soon(b, storage.clone(), name.to_string());
    match taken {
        Ok(Some(entry)) => match pooled_response(b, role, entry).await {
            Ok(resp) => Taken::Credential(Box::new(resp)),
            Err(e) => Taken::Empty(format!(
                "the credential pool of role '{name}' could not be used ({e}); this credential was issued directly"
            )),
        },
        Ok(None) => Taken::Empty(match b.pool.last_error(name) {
            Some(err) => format!(
                "the credential pool of role '{name}' is empty because refilling it fails (last error: {err}); \
                 this credential was issued directly"
            ),
            None => format!(
                "the credential pool of role '{name}' was empty; this credential was issued directly \
                 while the pool refills"
            ),
        }),
        Err(e) => {
            tracing::warn!(role = %name, error = %e, "cannot read the credential pool; issuing directly");
            Taken::Empty(format!(
                "the credential pool of role '{name}' could not be read ({e}); this credential was issued directly"
            ))
        }
    }
}

pub(super) async fn take_entry(
    b: &AzureBackend,
    storage: &dyn Storage,
    name: &str,
    role: &Role,
) -> Result<Option<Entry>, LogicalError> {
    if b.pool.closed() {
        return Ok(None);
    }
    let config = store::get_config(storage).await?.unwrap_or_default();
    let (rh, ch) = (role_hash(role), config_hash(&config));
    let lock = b.pool.handout_lock(name);
    let _guard = lock.lock().await;
    let now = Utc::now();
    for key in role_keys(storage, name).await? {
        let Some(entry) = get_entry(storage, &key).await? else {
            continue;
        };
        if entry.state == State::Ready
            && entry.role_hash == rh
            && entry.config_hash == ch
            && entry.fresh(now)
        {
            storage.delete(&key).await?;
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// The response of a pooled credential: what an unpooled issuance returns, with the lease
/// capped at the credential's remaining life in Azure.
pub(super) async fn pooled_response(
    b: &AzureBackend,
    role: &Role,
    entry: Entry,
) -> Result<Response, LogicalError> {
    let now = Utc::now();
    let remaining = entry
        .key_end
        .and_then(|end| (end - now).to_std().ok())
        .unwrap_or(Duration::ZERO);
    let (mut ttl, mut max_ttl) = crate::path_creds::lease_ttls(role);
    if let Some(cap) = entry.max_ttl_cap_secs.map(Duration::from_secs) {
        ttl = if ttl.is_zero() { ttl } else { ttl.min(cap) };
        max_ttl = if max_ttl.is_zero() {
            cap
        } else {
            max_ttl.min(cap)
        };
    }
    max_ttl = if max_ttl.is_zero() {
        remaining
    } else {
        max_ttl.min(remaining)
    };
    if ttl.is_zero() {
        let default = b
            .system_view
            .default_lease_ttl()
            .await
            .map_err(|e| LogicalError::internal(e.to_string()))?;
        ttl = default.min(max_ttl);
    }
    ttl = ttl.min(max_ttl);
    let mut resp = secret_response(&entry.lease_type, entry.data, entry.internal);
    if let Some(secret) = resp.secret.as_mut() {
        secret.lease.ttl = ttl;
        secret.lease.max_ttl = max_ttl;
    }
    if let (Some(d), Some(ms)) = (resp.data.as_mut(), entry.ready_wait_ms) {
        d.insert("credential_ready_wait_ms".into(), json!(ms));
    }
    if let Some(w) = entry.policy_warning {
        resp.add_warning(w);
    }
    Ok(resp)
}
