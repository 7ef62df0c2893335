//! Draining: deleting the Azure objects of stale, dying or orphaned pool entries, then the
//! entries; recovery of entries whose creator died.

use super::*;

/// Deletes a just-made entry's objects, then the entry (left for the next drain if the
/// deletion fails).
pub(super) async fn discard(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: &AzureClient,
    key: &str,
    entry: Entry,
) {
    let deadline = Deadline::after(DRAIN_DEADLINE);
    match delete_objects(b, client, &entry, true, deadline).await {
        Ok(true) => forget(storage, key).await,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(role = %entry.role, error = %e, "credential pool: cannot delete a discarded credential; the next drain retries");
            let mut entry = entry;
            entry.state = State::Draining;
            if let Err(e) = put_entry(storage, key, &entry).await {
                tracing::warn!(key, error = %e, "credential pool: cannot mark an entry draining; its display name still finds it");
            }
        }
    }
}

pub(super) async fn forget(storage: &dyn Storage, key: &str) {
    if let Err(e) = storage.delete(key).await {
        tracing::warn!(key, error = %e, "credential pool: cannot delete an entry");
    }
}

/// Deletes the Azure objects of `entry`; `Ok(false)` when a pending entry's objects cannot
/// be found yet but may still appear.
pub(super) async fn delete_objects(
    b: &AzureBackend,
    client: &AzureClient,
    entry: &Entry,
    fresh: bool,
    deadline: Deadline,
) -> Result<bool, AzureError> {
    let strs = |k: &str| crate::lease::strings_at(&entry.internal, k);
    let str_of = |k: &str| {
        entry
            .internal
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let settle = if fresh {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    if entry.internal.is_empty() {
        return recover_pending(b, client, entry, deadline).await;
    }
    if entry.lease_type == SERVICE_PRINCIPAL {
        let sp = str_of("sp_object_id");
        let ras = strs("role_assignment_ids");
        let groups = strs("group_membership_ids");
        let ra_errors = provision::undo_role_assignments(client, &ras, deadline).await;
        let group_errors = provision::remove_memberships(client, &sp, &groups, deadline).await;
        if let Some(e) = ra_errors.into_iter().chain(group_errors).next() {
            return Err(e);
        }
        let app = str_of("app_object_id");
        provision::persist(deadline, || async {
            client
                .graph()
                .delete_application_settled(&app, settle, deadline)
                .await?;
            client
                .graph()
                .permanently_delete(&app, Duration::from_secs(10), deadline)
                .await
        })
        .await?;
    } else {
        let app = str_of("app_object_id");
        let key_id = str_of("key_id");
        let lock = b.app_lock(&app);
        let _guard = lock.lock().await;
        provision::persist(deadline, || {
            client
                .graph()
                .remove_application_password(&app, &key_id, deadline)
        })
        .await
        .or_else(|e| {
            if e.is_not_found() {
                Ok(azure_clients::DeleteOutcome::AlreadyGone)
            } else {
                Err(e)
            }
        })?;
    }
    Ok(true)
}

/// Finds and deletes what a pending entry may have created (its process died): the
/// application with its display name, that application's role assignments at the role's
/// scopes and its memberships, or the password with its display name.
pub(super) async fn recover_pending(
    b: &AzureBackend,
    client: &AzureClient,
    entry: &Entry,
    deadline: Deadline,
) -> Result<bool, AzureError> {
    let young = Utc::now() - entry.created < PENDING_GRACE;
    if !entry.app_object_id.is_empty() {
        let lock = b.app_lock(&entry.app_object_id);
        let _guard = lock.lock().await;
        let passwords = match client
            .graph()
            .list_application_passwords(&entry.app_object_id, deadline)
            .await
        {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(true),
            Err(e) => return Err(e),
        };
        let mine: Vec<_> = passwords
            .into_iter()
            .filter(|p| p.display_name.as_deref() == Some(entry.display_name.as_str()))
            .collect();
        if mine.is_empty() {
            return Ok(!young);
        }
        for p in mine {
            client
                .graph()
                .remove_application_password(&entry.app_object_id, &p.key_id, deadline)
                .await?;
        }
        return Ok(true);
    }
    let apps: Vec<_> = client
        .graph()
        .find_applications_by_display_name(&entry.display_name, deadline)
        .await?
        .into_iter()
        .filter(|a| a.display_name == entry.display_name)
        .collect();
    if apps.is_empty() {
        return Ok(!young);
    }
    for app in apps {
        if let Some(sp) = client
            .graph()
            .find_service_principal_by_app_id(&app.app_id, deadline)
            .await?
        {
            let mut ras = Vec::new();
            for scope in &entry.scopes {
                for ra in client
                    .arm()
                    .list_role_assignments_for_principal(scope, &sp.id, deadline)
                    .await?
                {
                    ras.push(ra.id);
                }
            }
            ras.sort();
            ras.dedup();
            if let Some(e) = provision::undo_role_assignments(client, &ras, deadline)
                .await
                .into_iter()
                .next()
            {
                return Err(e);
            }
            if let Some(e) = provision::remove_memberships(client, &sp.id, &entry.groups, deadline)
                .await
                .into_iter()
                .next()
            {
                return Err(e);
            }
        }
        provision::delete_app(client, &app.id, true, deadline).await?;
    }
    Ok(true)
}

/// Drains what must go from the pool of `name`: entries already draining, pending entries
/// whose creator is gone, and ready entries that are stale (role or configuration changed,
/// too old, role deleted or no longer pooled).
pub(super) async fn maintain(
    b: &AzureBackend,
    storage: &dyn Storage,
    name: &str,
) -> Result<(), String> {
    let role = store::get_role(storage, name)
        .await
        .map_err(|e| e.to_string())?;
    let config = store::get_config(storage)
        .await
        .map_err(|e| e.to_string())?;
    let rh = role.as_ref().filter(|r| r.pool_size > 0).map(role_hash);
    let ch = config.as_ref().map(config_hash);
    let now = Utc::now();
    drain_role(b, storage, None, name, |e| {
        e.state == State::Pending
            || Some(&e.role_hash) != rh.as_ref()
            || Some(&e.config_hash) != ch.as_ref()
            || !e.fresh(now)
    })
    .await
}

/// Drains the entries of `name` that `doomed` picks (and those already draining); entries
/// being created by this process are left to their creator, which sees the change. With
/// `client`, the objects are deleted through it (the previous configuration's).
pub(super) async fn drain_role(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: Option<Arc<AzureClient>>,
    name: &str,
    doomed: impl Fn(&Entry) -> bool,
) -> Result<(), String> {
    let mut todo = Vec::new();
    {
        let lock = b.pool.handout_lock(name);
        let _guard = lock.lock().await;
        for key in role_keys(storage, name).await.map_err(|e| e.to_string())? {
            if b.pool.is_inflight(&key) {
                continue;
            }
            let Some(mut entry) = get_entry(storage, &key).await.map_err(|e| e.to_string())? else {
                continue;
            };
            if entry.state != State::Draining {
                if !doomed(&entry) {
                    continue;
                }
                entry.state = State::Draining;
                put_entry(storage, &key, &entry)
                    .await
                    .map_err(|e| format!("cannot mark a pool entry draining: {e}"))?;
            }
            todo.push((key, entry));
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let client = match client {
        Some(c) => c,
        None => b.client(storage).await.map_err(|e| e.to_string())?,
    };
    let deadline = Deadline::after(DRAIN_DEADLINE);
    let results = join_all(todo.iter().map(|(key, entry)| {
        let client = client.clone();
        async move {
            match delete_objects(b, &client, entry, false, deadline).await {
                Ok(true) => {
                    forget(storage, key).await;
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if let Some(e) = failed.first() {
        return Err(format!(
            "{} pooled credential(s) of role '{name}' not yet deleted: {e}",
            failed.len()
        ));
    }
    tracing::info!(role = %name, drained = todo.len(), "credential pool: drained entries");
    Ok(())
}

/// Drains every pool entry (all roles), through `client` when given.
pub(super) async fn drain_all(
    b: &AzureBackend,
    storage: &dyn Storage,
    client: Option<Arc<AzureClient>>,
) -> Result<(), String> {
    let roles = pooled_roles(storage).await.map_err(|e| e.to_string())?;
    let results = join_all(
        roles
            .iter()
            .map(|r| drain_role(b, storage, client.clone(), r, |_| true)),
    )
    .await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// After a role write or delete: drains the role's stale entries and refills it.
pub fn role_changed(b: &Arc<AzureBackend>, storage: Arc<dyn Storage>, name: &str) {
    refill_soon(b, storage, name.to_string());
}

/// Before a configuration write that changes the tenant, the identity, its credentials or
/// the cloud: drains every pool with the current (previous) client, in the background.
pub async fn config_changing(
    b: &Arc<AzureBackend>,
    storage: &Arc<dyn Storage>,
    previous: Option<&Config>,
    next: &Config,
) {
    let Some(prev) = previous else {
        return;
    };
    let same = prev.tenant_id == next.tenant_id
        && prev.client_id == next.client_id
        && prev.client_secret == next.client_secret
        && prev.client_certificate == next.client_certificate
        && prev.environment == next.environment
        && prev.subscription_id == next.subscription_id;
    if same {
        return;
    }
    match pooled_roles(storage.as_ref()).await {
        Ok(roles) if roles.is_empty() => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "credential pool: cannot list pools before a configuration change");
            return;
        }
    }
    let client = match b.client(storage.as_ref()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "credential pool: no client to drain pools before a configuration change");
            return;
        }
    };
    let (b, storage) = (b.clone(), storage.clone());
    tokio::spawn(async move {
        if let Err(e) = drain_all(&b, storage.as_ref(), Some(client)).await {
            tracing::warn!(error = %e, "credential pool: draining after a configuration change is incomplete; the periodic drain retries");
        }
        tick(&b, storage).await;
    });
}

/// The mount is going: no new refills; wait for those in flight; drain every pool.
pub(super) async fn close_and_drain(b: &AzureBackend, storage: &dyn Storage) {
    b.pool.closed.store(true, Ordering::SeqCst);
    let waited = Instant::now();
    while !locked(&b.pool.inflight).is_empty() && waited.elapsed() < CLOSE_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = drain_all(b, storage, None).await {
        tracing::warn!(error = %e, "credential pool: could not drain every pool while the mount is removed");
    }
}
