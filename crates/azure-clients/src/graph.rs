//! Microsoft Graph v1.0: applications, passwords, service principals and groups.
//!
//! All methods take `&self`, are safe to call concurrently, and take a [`Deadline`].
//! Password writes (`addPassword`, `removePassword`) on one object are serialised by a
//! per-object lock inside the client, because Graph loses or refuses parallel writes to
//! the same object's credential collection.

use super::credential::TokenSource;
use super::error::{AzureError, Service};
use super::http::{
    join_path, lenient_datetime, null_default, odata_literal, same_origin, set_query, ApiResponse,
    Replay, ServiceClient,
};
use super::locks::KeyedLocks;
use super::retry::{sleep_within, Deadline, RetryPolicy};
use super::secret::SecretString;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use url::Url;

#[path = "graph_keys.rs"]
mod keys;
pub use keys::{parse_iso_duration, CredentialPolicy, KeyCredential, NewKeyCredential};

/// Every application this engine creates has a display name with this prefix.
pub const DISPLAY_NAME_PREFIX: &str = "vault-";

/// Pages followed at most when listing.
const MAX_PAGES: usize = 50;

/// A Graph application (only the fields the engine uses).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Object id.
    pub id: String,
    /// Application (client) id.
    pub app_id: String,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub display_name: String,
    /// Sign-in audience.
    #[serde(default)]
    pub sign_in_audience: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// When Entra ID created it.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub created_date_time: Option<DateTime<Utc>>,
    /// Passwords (never with `secret_text` on reads).
    #[serde(default, deserialize_with = "null_default")]
    pub password_credentials: Vec<PasswordCredential>,
    /// Key credentials (certificates; `key` only on `$select=keyCredentials` reads).
    #[serde(default, deserialize_with = "null_default")]
    pub key_credentials: Vec<KeyCredential>,
}

/// The tenant's directory object quota (`directorySizeQuota` of the organization).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct DirectorySizeQuota {
    /// Objects in the directory now.
    #[serde(default)]
    pub used: u64,
    /// Objects the tenant may hold.
    #[serde(default)]
    pub total: u64,
}

/// A password (client secret) of an application or service principal.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordCredential {
    /// Key id (GUID).
    pub key_id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Start of validity.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub start_date_time: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default, deserialize_with = "lenient_datetime")]
    pub end_date_time: Option<DateTime<Utc>>,
    /// The secret; only in the `addPassword` response.
    #[serde(default)]
    pub secret_text: Option<SecretString>,
    /// First characters of the secret.
    #[serde(default)]
    pub hint: Option<String>,
}

/// A service principal.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Object id (ARM `principalId`, group member id).
    pub id: String,
    /// Application (client) id.
    pub app_id: String,
}

/// A group.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Object id.
    pub id: String,
    /// Display name.
    #[serde(default, deserialize_with = "null_default")]
    pub display_name: String,
}

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The object existed and is now deleted.
    Deleted,
    /// The object was already gone (404 or equivalent).
    AlreadyGone,
}

/// The application to create.
#[derive(Clone, Debug)]
pub struct NewApplication {
    /// Display name; must start with [`DISPLAY_NAME_PREFIX`].
    pub display_name: String,
    /// `signInAudience`; Graph's default (`AzureADandPersonalMicrosoftAccount`) when `None`.
    pub sign_in_audience: Option<String>,
    /// Tags (omitted when empty).
    pub tags: Vec<String>,
}

impl NewApplication {
    /// A dynamic credential's application: `vault-<random UUID>`.
    pub fn dynamic() -> NewApplication {
        NewApplication {
            display_name: format!("{DISPLAY_NAME_PREFIX}{}", uuid::Uuid::new_v4()),
            sign_in_audience: None,
            tags: Vec::new(),
        }
    }

    /// A persisted role's application: `vault-<role>-<unix seconds>`.
    pub fn persisted(role: &str, now: DateTime<Utc>) -> NewApplication {
        NewApplication {
            display_name: format!("{DISPLAY_NAME_PREFIX}{role}-{}", now.timestamp()),
            sign_in_audience: None,
            tags: Vec::new(),
        }
    }
}

/// A new password's attributes.
#[derive(Clone, Debug, Default)]
pub struct NewPassword {
    /// Display name (the engine marks its passwords with a `vault-` name).
    pub display_name: Option<String>,
    /// Start of validity (Graph: now when omitted).
    pub start: Option<DateTime<Utc>>,
    /// End of validity (Graph: start + 2 years when omitted).
    pub end: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// Microsoft Graph client.
pub struct GraphClient {
    svc: ServiceClient,
    base: Url,
    graph_root: String,
}

/// Password-write locks, shared by every client of the process (the engine rebuilds its
/// client periodically; two instances must still not write one object's passwords at
/// once).
fn password_locks() -> &'static KeyedLocks {
    static LOCKS: OnceLock<KeyedLocks> = OnceLock::new();
    LOCKS.get_or_init(KeyedLocks::default)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl GraphClient {
    /// A client for `graph_endpoint` (e.g. `https://graph.microsoft.com`), calling
    /// `<graph_endpoint>/v1.0` with tokens for scope `<graph_endpoint>/.default`.
    pub fn new(
        graph_endpoint: &Url,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        policy: RetryPolicy,
    ) -> Result<GraphClient, AzureError> {
        let root = graph_endpoint.as_str().trim_end_matches('/').to_owned();
        let base = Url::parse(&format!("{root}/v1.0"))
            .map_err(|e| AzureError::config(format!("invalid Graph endpoint '{root}': {e}")))?;
        Ok(GraphClient {
            svc: ServiceClient {
                http,
                tokens,
                scope: format!("{root}/.default"),
                service: Service::Graph,
                policy,
            },
            base,
            graph_root: root,
        })
    }

    fn url(&self, path: &str) -> Result<Url, AzureError> {
        join_path(&self.base, path)
    }

    fn policy(&self) -> &RetryPolicy {
        &self.svc.policy
    }

    async fn send(
        &self,
        op: &str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        replay: Replay,
        deadline: Deadline,
    ) -> Result<ApiResponse, AzureError> {
        self.svc.send(op, method, url, body, replay, deadline).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        url: Url,
        deadline: Deadline,
    ) -> Result<T, AzureError> {
        self.send(op, Method::GET, url, None, Replay::Idempotent, deadline)
            .await?
            .json(op, Service::Graph)
    }

    /// GETs a collection, following `@odata.nextLink` (same origin only) up to `max_pages`.
    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        op: &str,
        mut url: Url,
        max_pages: usize,
        deadline: Deadline,
    ) -> Result<Vec<T>, AzureError> {
        let mut out = Vec::new();
        for _ in 0..max_pages {
            let page: Page<T> = self.get_json(op, url.clone(), deadline).await?;
            out.extend(page.value);
            match page.next_link {
                Some(next) => {
                    let next = Url::parse(&next).map_err(|e| {
                        AzureError::invalid_response(
                            op,
                            Service::Graph,
                            format!("bad nextLink: {e}"),
                        )
                    })?;
                    if !same_origin(&self.base, &next) {
                        return Err(AzureError::invalid_response(
                            op,
                            Service::Graph,
                            "nextLink points to another host",
                        ));
                    }
                    url = next;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Retries `f` while `is_propagating` says the failure is Entra ID's replication lag,
    /// until the propagation timeout or the deadline.
    async fn retry_propagation<T, F, Fut>(
        &self,
        op: &str,
        deadline: Deadline,
        is_propagating: fn(&AzureError) -> bool,
        mut f: F,
    ) -> Result<T, AzureError>
    where
        F: FnMut(Deadline) -> Fut,
        Fut: std::future::Future<Output = Result<T, AzureError>>,
    {
        let budget = deadline.capped(self.policy().propagation_timeout);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match f(deadline).await {
                Err(e) if is_propagating(&e) => {
                    tracing::debug!(operation = op, attempt, error = %e, "waiting for propagation");
                    if !sleep_within(budget, self.policy().propagation_delay(attempt)).await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    // ----------------------------------------------------------------- applications

    /// `POST /applications`. The display name must start with `vault-`.
    ///
    /// Creates are not blindly replayed: after an ambiguous failure (response lost, 5xx)
    /// the application is looked up by its display name and returned if it exists; only
    /// otherwise is the create repeated.
    pub async fn create_application(
        &self,
        app: &NewApplication,
        deadline: Deadline,
    ) -> Result<Application, AzureError> {
        self.create_application_with_keys(app, &[], deadline).await
    }

    /// [`GraphClient::create_application`] with key credentials (certificates) registered
    /// in the same call.
    pub async fn create_application_with_keys(
        &self,
        app: &NewApplication,
        keys: &[NewKeyCredential],
        deadline: Deadline,
    ) -> Result<Application, AzureError> {
        let op = "create application";
        if !app.display_name.starts_with(DISPLAY_NAME_PREFIX) {
            return Err(AzureError::invalid_input(
                op,
                format!("display name must start with '{DISPLAY_NAME_PREFIX}'"),
            ));
        }
        let mut body = json!({ "displayName": app.display_name });
        if let Some(aud) = &app.sign_in_audience {
            body["signInAudience"] = json!(aud);
        }
        if !app.tags.is_empty() {
            body["tags"] = json!(app.tags);
        }
        if !keys.is_empty() {
            body["keyCredentials"] = json!(keys
                .iter()
                .map(NewKeyCredential::to_json)
                .collect::<Vec<_>>());
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let url = self.url("applications")?;
            match self
                .send(
                    op,
                    Method::POST,
                    url,
                    Some(&body),
                    Replay::NotIdempotent,
                    deadline,
                )
                .await
            {
                Ok(r) => return r.json(op, Service::Graph),
                Err(e) if is_ambiguous(&e) && attempt < self.policy().max_attempts => {
                    tracing::debug!(error = %e, "create application: outcome unknown, looking it up");
                    let found = self
                        .find_applications_by_display_name(&app.display_name, deadline)
                        .await
                        .unwrap_or_default();
                    if let Some(existing) = found.into_iter().next() {
                        return Ok(existing);
                    }
                    if !sleep_within(deadline, self.policy().backoff(attempt)).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The tenant's directory object quota: `GET {graph}/beta/organization/{tenant}?$select=directorySizeQuota`
    /// (the property exists in the beta API only; needs `Organization.Read.All` or
    /// `Directory.Read.All`). `None` when the tenant does not report it.
    pub async fn directory_size_quota(
        &self,
        tenant_id: &str,
        deadline: Deadline,
    ) -> Result<Option<DirectorySizeQuota>, AzureError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Org {
            #[serde(default)]
            directory_size_quota: Option<DirectorySizeQuota>,
        }
        let beta = Url::parse(&format!("{}/beta", self.graph_root))
            .map_err(|e| AzureError::config(format!("invalid Graph endpoint: {e}")))?;
        let mut url = join_path(&beta, &format!("organization/{tenant_id}"))?;
        url.query_pairs_mut()
            .append_pair("$select", "directorySizeQuota");
        let org: Org = self.get_json("get directory quota", url, deadline).await?;
        Ok(org.directory_size_quota)
    }

    /// Object ids (lower case) of the owners of application `object_id`:
    /// `GET /applications/{id}/owners`.
    pub async fn list_application_owner_ids(
        &self,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<String>, AzureError> {
        #[derive(Deserialize)]
        struct Owner {
            id: String,
        }
        let url = self.url(&format!("applications/{object_id}/owners"))?;
        let owners: Vec<Owner> = self
            .list("list application owners", url, MAX_PAGES, deadline)
            .await?;
        Ok(owners.into_iter().map(|o| o.id.to_lowercase()).collect())
    }

    /// `GET /applications/{id}`.
    pub async fn get_application(
        &self,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<Application, AzureError> {
        let url = self.url(&format!("applications/{object_id}"))?;
        self.get_json("get application", url, deadline).await
    }

    /// `GET /applications?$filter=appId eq '{app_id}'`: the application with this client
    /// id, or `None`.
    pub async fn find_application_by_app_id(
        &self,
        app_id: &str,
        deadline: Deadline,
    ) -> Result<Option<Application>, AzureError> {
        let mut url = self.url("applications")?;
        let filter = format!("appId eq {}", odata_literal(app_id));
        set_query(&mut url, &[("$filter", &filter)]);
        let apps: Vec<Application> = self
            .list("find application by appId", url, MAX_PAGES, deadline)
            .await?;
        Ok(apps
            .into_iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id)))
    }

    /// `GET /applications?$filter=displayName eq '{name}'`.
    pub async fn find_applications_by_display_name(
        &self,
        display_name: &str,
        deadline: Deadline,
    ) -> Result<Vec<Application>, AzureError> {
        let mut url = self.url("applications")?;
        let filter = format!("displayName eq {}", odata_literal(display_name));
        set_query(&mut url, &[("$filter", &filter)]);
        let apps: Vec<Application> = self
            .list("find applications by name", url, MAX_PAGES, deadline)
            .await?;
        Ok(apps
            .into_iter()
            .filter(|a| a.display_name == display_name)
            .collect())
    }

    /// `GET /applications?$filter=tags/any(t:t eq '{tag}')`: every application carrying
    /// `tag` (Graph compares tags case-insensitively).
    pub async fn list_applications_tagged(
        &self,
        tag: &str,
        deadline: Deadline,
    ) -> Result<Vec<Application>, AzureError> {
        let mut url = self.url("applications")?;
        let filter = format!("tags/any(t:t eq {})", odata_literal(tag));
        set_query(&mut url, &[("$filter", &filter), ("$top", "999")]);
        let apps: Vec<Application> = self
            .list("list applications by tag", url, MAX_PAGES, deadline)
            .await?;
        Ok(apps
            .into_iter()
            .filter(|a| a.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
            .collect())
    }

    /// `GET /applications?$filter=startswith(displayName,'{prefix}')`.
    pub async fn list_applications_named_with_prefix(
        &self,
        prefix: &str,
        deadline: Deadline,
    ) -> Result<Vec<Application>, AzureError> {
        let mut url = self.url("applications")?;
        let filter = format!("startswith(displayName,{})", odata_literal(prefix));
        set_query(&mut url, &[("$filter", &filter), ("$top", "999")]);
        let apps: Vec<Application> = self
            .list("list applications by name prefix", url, MAX_PAGES, deadline)
            .await?;
        Ok(apps
            .into_iter()
            .filter(|a| a.display_name.starts_with(prefix))
            .collect())
    }

    /// `DELETE /applications/{id}` (soft delete; its service principal goes with it).
    /// A 404 counts as [`DeleteOutcome::AlreadyGone`] at once; for an application created
    /// moments ago use [`GraphClient::delete_application_settled`].
    pub async fn delete_application(
        &self,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        self.delete_application_settled(object_id, Duration::ZERO, deadline)
            .await
    }

    /// [`GraphClient::delete_application`], retrying a 404 for up to `settle`.
    ///
    /// Entra ID gives no read-your-writes guarantee: an object created moments ago can
    /// answer 404, and treating that as "already gone" would leave it behind. Use a few
    /// seconds when rolling back an application just created.
    pub async fn delete_application_settled(
        &self,
        object_id: &str,
        settle: Duration,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let url = self.url(&format!("applications/{object_id}"))?;
        self.delete_settled("delete application", url, settle, deadline)
            .await
    }

    /// `DELETE /directory/deletedItems/{id}`: purges a soft-deleted application or service
    /// principal. Right after a delete the item may not be listed yet; a 404 is retried for
    /// up to `settle` (zero: one attempt) before counting as already gone.
    pub async fn permanently_delete(
        &self,
        object_id: &str,
        settle: Duration,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let url = self.url(&format!("directory/deletedItems/{object_id}"))?;
        self.delete_settled("permanently delete directory object", url, settle, deadline)
            .await
    }

    /// DELETE, retrying a 404 for up to `settle`.
    async fn delete_settled(
        &self,
        op: &str,
        url: Url,
        settle: Duration,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let budget = deadline.capped(settle);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.delete(op, url.clone(), deadline).await? {
                DeleteOutcome::Deleted => return Ok(DeleteOutcome::Deleted),
                DeleteOutcome::AlreadyGone => {
                    if !sleep_within(budget, self.policy().propagation_delay(attempt)).await {
                        return Ok(DeleteOutcome::AlreadyGone);
                    }
                }
            }
        }
    }

    async fn delete(
        &self,
        op: &str,
        url: Url,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        match self
            .send(op, Method::DELETE, url, None, Replay::Idempotent, deadline)
            .await
        {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.status() == Some(404) => Ok(DeleteOutcome::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    // ----------------------------------------------------------------- passwords

    /// `POST /applications/{id}/addPassword`, serialised per application. The result
    /// carries `secret_text`.
    pub async fn add_application_password(
        &self,
        object_id: &str,
        password: &NewPassword,
        deadline: Deadline,
    ) -> Result<PasswordCredential, AzureError> {
        let _guard = self
            .lock(&format!("applications/{object_id}"), deadline)
            .await?;
        self.add_password(
            "add application password",
            "applications",
            object_id,
            password,
            deadline,
        )
        .await
    }

    /// `POST /applications/{id}/removePassword`, serialised per application. A key (or
    /// application) that is already gone counts as success (`AlreadyGone`).
    pub async fn remove_application_password(
        &self,
        object_id: &str,
        key_id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let body = json!({ "keyId": key_id });
        self.remove_application_credential(
            "remove application password",
            object_id,
            "removePassword",
            &body,
            deadline,
        )
        .await
    }

    /// `POST /applications/{id}/{action}` (removePassword, removeKey) with `body`,
    /// serialised per application. A key (or application) already gone counts as success.
    pub(crate) async fn remove_application_credential(
        &self,
        op: &str,
        object_id: &str,
        action: &str,
        body: &serde_json::Value,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let _guard = self
            .lock(&format!("applications/{object_id}"), deadline)
            .await?;
        let url = self.url(&format!("applications/{object_id}/{action}"))?;
        match self
            .send(
                op,
                Method::POST,
                url,
                Some(body),
                Replay::Idempotent,
                deadline,
            )
            .await
        {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) if e.status() == Some(404) || is_no_such_key(&e) => {
                Ok(DeleteOutcome::AlreadyGone)
            }
            Err(e) => Err(e),
        }
    }

    /// The application's passwords (`secret_text` is always `None`).
    pub async fn list_application_passwords(
        &self,
        object_id: &str,
        deadline: Deadline,
    ) -> Result<Vec<PasswordCredential>, AzureError> {
        Ok(self
            .get_application(object_id, deadline)
            .await?
            .password_credentials)
    }

    /// `POST /servicePrincipals/{id}/addPassword`, serialised per service principal.
    /// Right after the service principal was created Graph may answer 404; that is
    /// retried within the propagation timeout.
    pub async fn add_service_principal_password(
        &self,
        sp_id: &str,
        password: &NewPassword,
        deadline: Deadline,
    ) -> Result<PasswordCredential, AzureError> {
        let op = "add service principal password";
        let _guard = self
            .lock(&format!("servicePrincipals/{sp_id}"), deadline)
            .await?;
        self.retry_propagation(
            op,
            deadline,
            |e| e.status() == Some(404),
            |d| self.add_password(op, "servicePrincipals", sp_id, password, d),
        )
        .await
    }

    async fn lock(
        &self,
        key: &str,
        deadline: Deadline,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, AzureError> {
        let key = format!("{}/{key}", self.graph_root);
        tokio::time::timeout_at(deadline.instant(), password_locks().lock(&key))
            .await
            .map_err(|_| AzureError::deadline(format!("wait for the password lock of {key}"), None))
    }

    async fn add_password(
        &self,
        op: &str,
        collection: &str,
        object_id: &str,
        password: &NewPassword,
        deadline: Deadline,
    ) -> Result<PasswordCredential, AzureError> {
        let url = self.url(&format!("{collection}/{object_id}/addPassword"))?;
        let mut cred = serde_json::Map::new();
        if let Some(n) = &password.display_name {
            cred.insert("displayName".into(), json!(n));
        }
        if let Some(s) = password.start {
            cred.insert("startDateTime".into(), json!(rfc3339(s)));
        }
        if let Some(e) = password.end {
            cred.insert("endDateTime".into(), json!(rfc3339(e)));
        }
        let body = json!({ "passwordCredential": cred });
        let resp = self
            .send(
                op,
                Method::POST,
                url,
                Some(&body),
                Replay::NotIdempotent,
                deadline,
            )
            .await?;
        let cred: PasswordCredential = resp.json(op, Service::Graph)?;
        if cred.secret_text.as_ref().is_none_or(|s| s.is_empty()) {
            return Err(AzureError::invalid_response(
                op,
                Service::Graph,
                "no secretText in the response",
            ));
        }
        Ok(cred)
    }

    // ----------------------------------------------------------------- service principals

    /// `POST /servicePrincipals {appId}`. While Graph does not yet see the new application
    /// (`NoBackingApplicationObject`, 403 `Authorization_RequestDenied` with
    /// `Application.ReadWrite.OwnedBy`, 404) the call is retried within the propagation
    /// timeout. If a service principal for the appId already exists (409, e.g. after a
    /// lost response) that one is returned.
    pub async fn create_service_principal(
        &self,
        app_id: &str,
        deadline: Deadline,
    ) -> Result<ServicePrincipal, AzureError> {
        let op = "create service principal";
        let body = json!({ "appId": app_id });
        let body = &body;
        let mut ambiguous_attempts = 0u32;
        loop {
            let result = self
                .retry_propagation(op, deadline, is_sp_propagation, |d| async move {
                    let url = self.url("servicePrincipals")?;
                    self.send(op, Method::POST, url, Some(body), Replay::NotIdempotent, d)
                        .await?
                        .json::<ServicePrincipal>(op, Service::Graph)
                })
                .await;
            match result {
                Ok(sp) => return Ok(sp),
                Err(e) if e.status() == Some(409) => {
                    return match self
                        .find_service_principal_by_app_id(app_id, deadline)
                        .await?
                    {
                        Some(sp) => Ok(sp),
                        None => Err(e),
                    };
                }
                Err(e)
                    if is_ambiguous(&e) && ambiguous_attempts + 1 < self.policy().max_attempts =>
                {
                    ambiguous_attempts += 1;
                    if let Ok(Some(sp)) = self
                        .find_service_principal_by_app_id(app_id, deadline)
                        .await
                    {
                        return Ok(sp);
                    }
                    if !sleep_within(deadline, self.policy().backoff(ambiguous_attempts)).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /servicePrincipals?$filter=appId eq '{app_id}'`.
    pub async fn find_service_principal_by_app_id(
        &self,
        app_id: &str,
        deadline: Deadline,
    ) -> Result<Option<ServicePrincipal>, AzureError> {
        let mut url = self.url("servicePrincipals")?;
        let filter = format!("appId eq {}", odata_literal(app_id));
        set_query(&mut url, &[("$filter", &filter)]);
        let sps: Vec<ServicePrincipal> = self
            .list("find service principal by appId", url, MAX_PAGES, deadline)
            .await?;
        Ok(sps
            .into_iter()
            .find(|s| s.app_id.eq_ignore_ascii_case(app_id)))
    }

    /// `GET /servicePrincipals/{id}`.
    pub async fn get_service_principal(
        &self,
        sp_id: &str,
        deadline: Deadline,
    ) -> Result<ServicePrincipal, AzureError> {
        let url = self.url(&format!("servicePrincipals/{sp_id}"))?;
        self.get_json("get service principal", url, deadline).await
    }

    /// Whether the service principal `sp_id` exists (`GET /servicePrincipals/{id}`; a 404
    /// is `false`).
    pub async fn service_principal_exists(
        &self,
        sp_id: &str,
        deadline: Deadline,
    ) -> Result<bool, AzureError> {
        match self.get_service_principal(sp_id, deadline).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /servicePrincipals/{id}`; a 404 counts as [`DeleteOutcome::AlreadyGone`].
    pub async fn delete_service_principal(
        &self,
        sp_id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        self.delete_service_principal_settled(sp_id, Duration::ZERO, deadline)
            .await
    }

    /// [`GraphClient::delete_service_principal`], retrying a 404 for up to `settle` (see
    /// [`GraphClient::delete_application_settled`]).
    pub async fn delete_service_principal_settled(
        &self,
        sp_id: &str,
        settle: Duration,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let url = self.url(&format!("servicePrincipals/{sp_id}"))?;
        self.delete_settled("delete service principal", url, settle, deadline)
            .await
    }

    // ----------------------------------------------------------------- groups

    /// `GET /groups/{id}`.
    pub async fn get_group(&self, group_id: &str, deadline: Deadline) -> Result<Group, AzureError> {
        let url = self.url(&format!("groups/{group_id}"))?;
        self.get_json("get group", url, deadline).await
    }

    /// `GET /groups?$filter=displayName eq '{name}'`, requiring exactly one match
    /// ([`AzureError::NoMatch`] / [`AzureError::MultipleMatches`] otherwise). The name
    /// comparison is Graph's (`eq` on `displayName`).
    pub async fn find_group_by_name(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<Group, AzureError> {
        let mut url = self.url("groups")?;
        let filter = format!("displayName eq {}", odata_literal(name));
        set_query(&mut url, &[("$filter", &filter)]);
        let mut groups: Vec<Group> = self
            .list("find group by name", url, MAX_PAGES, deadline)
            .await?;
        match groups.len() {
            0 => Err(AzureError::NoMatch {
                kind: "group",
                name: name.to_owned(),
            }),
            1 => Ok(groups.remove(0)),
            count => Err(AzureError::MultipleMatches {
                kind: "group",
                name: name.to_owned(),
                count,
            }),
        }
    }

    /// `POST /groups/{id}/members/$ref` with the member's `@odata.id` on this cloud's Graph
    /// host. A member already in the group counts as success; a member Graph does not see
    /// yet (404 right after creation) is retried within the propagation timeout.
    pub async fn add_group_member(
        &self,
        group_id: &str,
        member_id: &str,
        deadline: Deadline,
    ) -> Result<(), AzureError> {
        let op = "add group member";
        let body = json!({
            "@odata.id": format!("{}/v1.0/directoryObjects/{member_id}", self.graph_root)
        });
        let result = self
            .retry_propagation(
                op,
                deadline,
                |e| e.status() == Some(404),
                |d| {
                    let body = &body;
                    async move {
                        let url = self.url(&format!("groups/{group_id}/members/$ref"))?;
                        self.send(op, Method::POST, url, Some(body), Replay::Idempotent, d)
                            .await
                            .map(|_| ())
                    }
                },
            )
            .await;
        match result {
            Err(e) if e.is_already_exists() => Ok(()),
            other => other,
        }
    }

    /// `DELETE /groups/{id}/members/{memberId}/$ref` (never without `$ref`, which would
    /// delete the member object). A member not in the group counts as `AlreadyGone`.
    pub async fn remove_group_member(
        &self,
        group_id: &str,
        member_id: &str,
        deadline: Deadline,
    ) -> Result<DeleteOutcome, AzureError> {
        let op = "remove group member";
        let url = self.url(&format!("groups/{group_id}/members/{member_id}/$ref"))?;
        match self.delete(op, url, deadline).await {
            Err(e)
                if e.status() == Some(400)
                    && e.message()
                        .to_ascii_lowercase()
                        .contains("removed object references do not exist") =>
            {
                Ok(DeleteOutcome::AlreadyGone)
            }
            other => other,
        }
    }
}

/// An error after which a create may or may not have happened.
fn is_ambiguous(e: &AzureError) -> bool {
    e.outcome_unknown()
}

/// Graph's "No password credential found with keyId" (generic code, stable text).
fn is_no_such_key(e: &AzureError) -> bool {
    matches!(e.status(), Some(400..=499))
        && e.message()
            .to_ascii_lowercase()
            .contains("no password credential found")
}

/// Replication lag when creating a service principal right after its application.
fn is_sp_propagation(e: &AzureError) -> bool {
    e.is_no_backing_application()
        || e.status() == Some(404)
        || (e.status() == Some(400)
            && e.message()
                .to_ascii_lowercase()
                .contains("does not reference a valid application object"))
        || (e.status() == Some(403) && e.code() == Some("Authorization_RequestDenied"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_graph_objects() {
        let app: Application = serde_json::from_str(
            r#"{"id":"o","appId":"a","displayName":"vault-x","tags":null,"signInAudience":"AzureADMyOrg",
                "passwordCredentials":[{"keyId":"k","displayName":null,"endDateTime":"2030-01-01T00:00:00.1234567Z",
                "startDateTime":"2024-01-01T00:00:00","secretText":null,"hint":"abc"}]}"#,
        )
        .unwrap();
        assert_eq!(app.password_credentials.len(), 1);
        let p = &app.password_credentials[0];
        assert!(p.secret_text.is_none());
        assert_eq!(p.end_date_time.unwrap().timestamp(), 1893456000);
        assert!(p.start_date_time.is_some());
        assert!(app.tags.is_empty());
        let p: PasswordCredential =
            serde_json::from_str(r#"{"keyId":"k","secretText":"s3cr3t"}"#).unwrap();
        assert!(!format!("{p:?}").contains("s3cr3t"));
    }

    #[test]
    fn new_application_names() {
        assert!(NewApplication::dynamic().display_name.starts_with("vault-"));
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            NewApplication::persisted("web", t).display_name,
            "vault-web-1700000000"
        );
    }
}
