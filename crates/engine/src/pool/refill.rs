//! Refilling a pool in the background: each credential issued and proven as `creds` does,
//! under a pending entry written first.

use super::*;

/// Starts a background refill of role `name`'s pool unless one is running, the mount is
/// going, or this node may not write.
pub fn refill_soon(b: &Arc<AzureBackend>, storage: Arc<dyn Storage>, name: String) {
    if b.pool.closed() {
        return;
    }
    {
        let mut running = locked(&b.pool.refilling);
        if let Some(again) = running.get_mut(&name) {
            *again = true;
            return;
        }
        running.insert(name.clone(), false);
    }
    let b = b.clone();
    tokio::spawn(async move {
        struct Done(Arc<AzureBackend>, String);
        impl Drop for Done {
            fn drop(&mut self) {
                locked(&self.0.pool.refilling).remove(&self.1);
            }
        }
        let _done = Done(b.clone(), name.clone());
        if !b.background_allowed().await {
            return;
        }
        loop {
            if let Err(e) = maintain(&b, storage.as_ref(), &name).await {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot drain stale entries; will retry");
            }
            refill(&b, storage.as_ref(), &name).await;
            let mut running = locked(&b.pool.refilling);
            match running.get_mut(&name) {
                Some(again) if *again && !b.pool.closed() => *again = false,
                _ => return,
            }
        }
    });
}

/// Tops the pool of `name` up to its size, a few credentials at a time, until full or a
/// creation fails (then backs off).
pub(super) async fn refill(b: &Arc<AzureBackend>, storage: &dyn Storage, name: &str) {
    loop {
        if b.pool.closed() || b.pool.backing_off(name) {
            return;
        }
        let role = match store::get_role(storage, name).await {
            Ok(Some(r)) if r.pool_size > 0 => r,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot read the role");
                return;
            }
        };
        let config = match store::get_config(storage).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot read the configuration");
                return;
            }
        };
        let (rh, ch) = (role_hash(&role), config_hash(&config));
        let have = match count_live(b, storage, name, &rh, &ch).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "credential pool: cannot list entries");
                return;
            }
        };
        let missing = role.pool_size.saturating_sub(have);
        if missing == 0 {
            return;
        }
        let client = match b.client(storage).await {
            Ok(c) => c,
            Err(e) => {
                b.pool.record_failure(name, e.to_string());
                return;
            }
        };
        let batch = missing.min(REFILL_PARALLELISM);
        let results =
            join_all((0..batch).map(|_| fill_one(b, storage, &client, name, &role, &rh, &ch)))
                .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            tracing::warn!(role = %name, error = %e, "credential pool: refill failed; creds issues directly until it succeeds");
            b.pool.record_failure(name, e);
            return;
        }
        b.pool.record_success(name);
    }
}

/// Entries of `name` that are or will be handed out: ready and current, or being created.
pub(super) async fn count_live(
    b: &AzureBackend,
    storage: &dyn Storage,
    name: &str,
    rh: &str,
    ch: &str,
) -> Result<u32, StorageError> {
    let now = Utc::now();
    let mut n = 0u32;
    for key in role_keys(storage, name).await? {
        let Some(e) = get_entry(storage, &key).await? else {
            continue;
        };
        let live = match e.state {
            State::Pending => b.pool.is_inflight(&key),
            State::Ready => e.role_hash == rh && e.config_hash == ch && e.fresh(now),
            State::Draining => false,
        };
        n += u32::from(live);
    }
    Ok(n)
}

/// Creates one pooled credential: the entry first, then the objects (through the normal
/// issuance), then the entry made ready, unless the role or configuration changed meanwhile.
pub(super) async fn fill_one(
    b: &Arc<AzureBackend>,
    storage: &dyn Storage,
    client: &Arc<AzureClient>,
    name: &str,
    role: &Role,
    rh: &str,
    ch: &str,
) -> Result<(), String> {
    let id = uuid::Uuid::new_v4().to_string();
    let key = entry_key(name, &id);
    let dynamic = role.application_object_id.is_empty();
    let app = role.new_application();
    let display_name = if dynamic {
        app.display_name.clone()
    } else {
        format!("{PASSWORD_DISPLAY_NAME}-{id}")
    };
    let mut entry = Entry {
        state: State::Pending,
        role: name.to_string(),
        role_hash: rh.to_string(),
        config_hash: ch.to_string(),
        created: Utc::now(),
        display_name: display_name.clone(),
        app_object_id: role.application_object_id.clone(),
        scopes: role
            .azure_roles
            .iter()
            .flatten()
            .map(|r| r.scope.clone())
            .collect(),
        groups: role
            .azure_groups
            .iter()
            .flatten()
            .map(|g| g.object_id.clone())
            .collect(),
        lease_type: String::new(),
        data: Map::new(),
        internal: Map::new(),
        key_end: None,
        ready_wait_ms: None,
        max_ttl_cap_secs: None,
        policy_warning: None,
    };
    locked(&b.pool.inflight).insert(key.clone());
    let _inflight = Inflight(&b.pool, key.clone());
    put_entry(storage, &key, &entry)
        .await
        .map_err(|e| format!("cannot store the pool entry: {e}"))?;

    let deadline = Deadline::after(REFILL_DEADLINE);
    let issued = async {
        if !dynamic {
            b.refuse_own_application(
                client,
                &role.application_id,
                &role.application_object_id,
                deadline,
            )
            .await?;
        }
        let now = Utc::now();
        let end = b.password_end(role, now).await?;
        let policy = b
            .credential_policy_for(client, role, now, end, deadline)
            .await?;
        let end = policy.end.unwrap_or(end);
        let (resp, readiness) = if dynamic {
            b.issue_service_principal(storage, client, name, role, app, end, deadline)
                .await?
        } else {
            b.issue_password(storage, client, name, role, display_name, end, deadline)
                .await?
        };
        Ok::<_, LogicalError>((resp, readiness, policy))
    }
    .await;
    let (resp, readiness, policy) = match issued {
        Ok(v) => v,
        Err(e) => {
            // The issuance undid its objects (or left them to its write-ahead log).
            forget(storage, &key).await;
            return Err(e.to_string());
        }
    };
    let secret = resp.secret.clone().unwrap_or_default();
    entry.lease_type = secret
        .internal_data
        .get(SECRET_TYPE_KEY)
        .and_then(Value::as_str)
        .unwrap_or(SERVICE_PRINCIPAL)
        .to_string();
    entry.internal = secret.internal_data;
    entry.data = resp.data.unwrap_or_default();
    entry.key_end = entry
        .internal
        .get("key_end_date")
        .and_then(Value::as_str)
        .and_then(|t| go_time::parse(t).ok().flatten());
    entry.ready_wait_ms = readiness.waited_ms();
    entry.max_ttl_cap_secs = policy.max_ttl_cap.map(|d| d.as_secs());
    entry.policy_warning = policy.warning;

    if let Readiness::TimedOut { last_error, .. } = &readiness {
        let err = format!("the new credential did not prove usable: {last_error}");
        discard(b, storage, client, &key, entry).await;
        return Err(err);
    }

    // Made ready under the handout lock, unless the role, configuration or mount changed.
    let lock = b.pool.handout_lock(name);
    let guard = lock.lock().await;
    let current = store::get_role(storage, name).await.ok().flatten();
    let config = store::get_config(storage).await.ok().flatten();
    let still = !b.pool.closed()
        && current.as_ref().map(role_hash).as_deref() == Some(rh)
        && config.as_ref().map(config_hash).as_deref() == Some(ch);
    if !still {
        drop(guard);
        discard(b, storage, client, &key, entry).await;
        return Ok(());
    }
    entry.state = State::Ready;
    if let Err(e) = put_entry(storage, &key, &entry).await {
        drop(guard);
        let err = format!("cannot store the pooled credential: {e}");
        entry.state = State::Draining;
        discard(b, storage, client, &key, entry).await;
        return Err(err);
    }
    tracing::info!(role = %name, "credential pool: added a credential");
    Ok(())
}
