//! The in-memory directory (Entra ID objects) and subscription (ARM objects), with the
//! JSON renderings Graph and ARM return. Secret texts live only here and are never
//! rendered except in the `addPassword` response.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Value};

/// Graph application permissions of the root and machine identities.
pub const ADMIN_GRAPH_ROLES: [&str; 5] = [
    "Application.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.ReadWrite.All",
    "Policy.Read.All",
    "Policy.ReadWrite.ApplicationConfiguration",
];

/// ISO 8601 in UTC with at most seven fractional digits, as Graph writes them.
pub fn fmt_time(t: &DateTime<Utc>) -> String {
    let ticks = t.timestamp_subsec_nanos() / 100;
    let base = t.format("%Y-%m-%dT%H:%M:%S");
    if ticks == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{ticks:07}Z")
    }
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A client secret in the style Entra ID generates: 40 characters.
pub fn new_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~";
    let mut rng = rand::rng();
    let mut s: String = (0..3)
        .map(|_| ALPHABET[rng.random_range(0..62)] as char)
        .collect();
    s.push_str("8Q~");
    s.extend((0..34).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char));
    s
}

/// Whether an object created at `created_at` is visible after `delay`.
pub fn settled(created_at: Option<Instant>, delay: Duration) -> bool {
    match created_at {
        None => true,
        Some(t) => t.elapsed() >= delay,
    }
}

/// A client secret. Its `Debug` output leaves the secret text out.
#[derive(Clone)]
pub struct Password {
    pub key_id: String,
    pub display_name: Option<String>,
    pub secret: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When it was added through the API (`None` for seeded ones): drives the credential delay.
    pub added_at: Option<Instant>,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("key_id", &self.key_id)
            .field("display_name", &self.display_name)
            .field("hint", &self.hint())
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Password {
    pub fn new(display_name: Option<String>, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Password {
            key_id: new_id(),
            display_name,
            secret: new_secret(),
            start,
            end,
            added_at: Some(Instant::now()),
        }
    }

    pub fn hint(&self) -> String {
        self.secret.chars().take(3).collect()
    }

    pub fn to_json(&self, with_secret: bool) -> Value {
        json!({
            "customKeyIdentifier": null,
            "displayName": self.display_name,
            "endDateTime": fmt_time(&self.end),
            "hint": self.hint(),
            "keyId": self.key_id,
            "secretText": if with_secret { Value::String(self.secret.clone()) } else { Value::Null },
            "startDateTime": fmt_time(&self.start),
        })
    }
}

/// A key credential (a certificate's public part). Only the public certificate is kept.
#[derive(Debug, Clone)]
pub struct KeyCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    pub custom_key_identifier: Vec<u8>,
    /// `AsymmetricX509Cert` (the only type the token service accepts).
    pub key_type: String,
    /// `Verify`.
    pub usage: String,
    pub cert: super::keys::CertInfo,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When it was added through the API (`None` for seeded ones): drives the credential delay.
    pub added_at: Option<Instant>,
}

impl KeyCredential {
    /// The JSON Graph returns; `key` (the certificate) only when `with_key`.
    pub fn to_json(&self, with_key: bool) -> Value {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        json!({
            "customKeyIdentifier": b64(&self.custom_key_identifier),
            "displayName": self.display_name,
            "endDateTime": fmt_time(&self.end),
            "key": if with_key { Value::String(b64(&self.cert.der)) } else { Value::Null },
            "keyId": self.key_id,
            "startDateTime": fmt_time(&self.start),
            "type": self.key_type,
            "usage": self.usage,
        })
    }

    /// Whether it can sign client assertions and proofs at `now`.
    pub fn valid_at(&self, now: DateTime<Utc>) -> bool {
        self.start <= now && now < self.end
    }
}

#[derive(Debug, Clone)]
pub struct FederatedCredential {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub description: Option<String>,
}

impl FederatedCredential {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "issuer": self.issuer,
            "subject": self.subject,
            "audiences": self.audiences,
            "description": self.description,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Application {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    pub sign_in_audience: String,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub created: DateTime<Utc>,
    pub created_at: Option<Instant>,
    pub seq: u64,
    pub passwords: Vec<Password>,
    pub keys: Vec<KeyCredential>,
    pub federated: Vec<FederatedCredential>,
    /// The id of the app management policy assigned to it.
    pub policy: Option<String>,
    /// Object ids of the service principals that own it.
    pub owners: Vec<String>,
    pub deleted: Option<DateTime<Utc>>,
}

impl Application {
    pub fn to_json(&self, publisher_domain: &str) -> Value {
        json!({
            "id": self.id,
            "deletedDateTime": self.deleted.as_ref().map(fmt_time),
            "appId": self.app_id,
            "applicationTemplateId": null,
            "disabledByMicrosoftStatus": null,
            "createdDateTime": fmt_time(&self.created),
            "displayName": self.display_name,
            "description": self.description,
            "groupMembershipClaims": null,
            "identifierUris": [],
            "isDeviceOnlyAuthSupported": null,
            "isFallbackPublicClient": null,
            "notes": null,
            "publisherDomain": publisher_domain,
            "serviceManagementReference": null,
            "signInAudience": self.sign_in_audience,
            "tags": self.tags,
            "tokenEncryptionKeyId": null,
            "defaultRedirectUri": null,
            "certification": null,
            "optionalClaims": null,
            "addIns": [],
            "api": {
                "acceptMappedClaims": null,
                "knownClientApplications": [],
                "requestedAccessTokenVersion": null,
                "oauth2PermissionScopes": [],
                "preAuthorizedApplications": []
            },
            "appRoles": [],
            "info": {
                "logoUrl": null, "marketingUrl": null, "privacyStatementUrl": null,
                "supportUrl": null, "termsOfServiceUrl": null
            },
            "keyCredentials": self.keys.iter().map(|k| k.to_json(false)).collect::<Vec<_>>(),
            "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
            "passwordCredentials": self.passwords.iter().map(|p| p.to_json(false)).collect::<Vec<_>>(),
            "publicClient": {"redirectUris": []},
            "requiredResourceAccess": [],
            "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null},
            "web": {
                "homePageUrl": null, "logoutUrl": null, "redirectUris": [],
                "implicitGrantSettings": {"enableAccessTokenIssuance": false, "enableIdTokenIssuance": false},
                "redirectUriSettings": []
            },
            "spa": {"redirectUris": []},
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServicePrincipal {
    pub id: String,
    pub app_id: String,
    pub display_name: String,
    /// `Application` or `ManagedIdentity`.
    pub sp_type: String,
    pub sign_in_audience: String,
    pub tags: Vec<String>,
    pub alternative_names: Vec<String>,
    pub app_owner_tenant: String,
    pub created: DateTime<Utc>,
    pub created_at: Option<Instant>,
    pub seq: u64,
    pub passwords: Vec<Password>,
    pub keys: Vec<KeyCredential>,
    /// The id of the app management policy assigned to it.
    pub policy: Option<String>,
    /// Graph application permissions granted to this principal.
    pub graph_roles: Vec<String>,
    /// Object ids of the service principals that own it.
    pub owners: Vec<String>,
    pub deleted: Option<DateTime<Utc>>,
}

impl ServicePrincipal {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "deletedDateTime": self.deleted.as_ref().map(fmt_time),
            "accountEnabled": true,
            "alternativeNames": self.alternative_names,
            "appDisplayName": self.display_name,
            "appDescription": null,
            "appId": self.app_id,
            "applicationTemplateId": null,
            "appOwnerOrganizationId": self.app_owner_tenant,
            "appRoleAssignmentRequired": false,
            "createdDateTime": fmt_time(&self.created),
            "description": null,
            "disabledByMicrosoftStatus": null,
            "displayName": self.display_name,
            "homepage": null,
            "loginUrl": null,
            "logoutUrl": null,
            "notes": null,
            "notificationEmailAddresses": [],
            "preferredSingleSignOnMode": null,
            "preferredTokenSigningKeyThumbprint": null,
            "replyUrls": [],
            "servicePrincipalNames": [self.app_id],
            "servicePrincipalType": self.sp_type,
            "signInAudience": self.sign_in_audience,
            "tags": self.tags,
            "tokenEncryptionKeyId": null,
            "samlSingleSignOnSettings": null,
            "addIns": [],
            "appRoles": [],
            "info": {
                "logoUrl": null, "marketingUrl": null, "privacyStatementUrl": null,
                "supportUrl": null, "termsOfServiceUrl": null
            },
            "keyCredentials": self.keys.iter().map(|k| k.to_json(false)).collect::<Vec<_>>(),
            "oauth2PermissionScopes": [],
            "passwordCredentials": self.passwords.iter().map(|p| p.to_json(false)).collect::<Vec<_>>(),
            "resourceSpecificApplicationPermissions": [],
            "verifiedPublisher": {"displayName": null, "verifiedPublisherId": null, "addedDateTime": null},
        })
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    pub description: Option<String>,
    pub mail_nickname: String,
    pub mail_enabled: bool,
    pub security_enabled: bool,
    pub group_types: Vec<String>,
    pub created: DateTime<Utc>,
    pub seq: u64,
    pub members: Vec<String>,
    pub deleted: Option<DateTime<Utc>>,
}

impl Group {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "deletedDateTime": self.deleted.as_ref().map(fmt_time),
            "classification": null,
            "createdDateTime": fmt_time(&self.created),
            "creationOptions": [],
            "description": self.description,
            "displayName": self.display_name,
            "expirationDateTime": null,
            "groupTypes": self.group_types,
            "isAssignableToRole": null,
            "mail": null,
            "mailEnabled": self.mail_enabled,
            "mailNickname": self.mail_nickname,
            "membershipRule": null,
            "membershipRuleProcessingState": null,
            "onPremisesDomainName": null,
            "onPremisesLastSyncDateTime": null,
            "onPremisesNetBiosName": null,
            "onPremisesSamAccountName": null,
            "onPremisesSecurityIdentifier": null,
            "onPremisesSyncEnabled": null,
            "preferredDataLocation": null,
            "preferredLanguage": null,
            "proxyAddresses": [],
            "renewedDateTime": fmt_time(&self.created),
            "resourceBehaviorOptions": [],
            "resourceProvisioningOptions": [],
            "securityEnabled": self.security_enabled,
            "securityIdentifier": format!("S-1-12-1-{}", self.id.bytes().map(u32::from).sum::<u32>()),
            "theme": null,
            "visibility": null,
            "onPremisesProvisioningErrors": [],
            "serviceProvisioningErrors": [],
        })
    }
}

/// A directory object in the deleted-items container.
#[derive(Debug, Clone)]
pub enum DeletedObject {
    Application(Application),
    ServicePrincipal(ServicePrincipal),
    Group(Group),
}

impl DeletedObject {
    pub fn odata_type(&self) -> &'static str {
        match self {
            DeletedObject::Application(_) => "#microsoft.graph.application",
            DeletedObject::ServicePrincipal(_) => "#microsoft.graph.servicePrincipal",
            DeletedObject::Group(_) => "#microsoft.graph.group",
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            DeletedObject::Application(a) => a.seq,
            DeletedObject::ServicePrincipal(s) => s.seq,
            DeletedObject::Group(g) => g.seq,
        }
    }

    pub fn to_json(&self, domain: &str) -> Value {
        let mut v = match self {
            DeletedObject::Application(a) => a.to_json(domain),
            DeletedObject::ServicePrincipal(s) => s.to_json(),
            DeletedObject::Group(g) => g.to_json(),
        };
        v["@odata.type"] = json!(self.odata_type());
        v
    }
}

#[derive(Debug, Clone)]
pub struct ResourceGroup {
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub seq: u64,
}

impl ResourceGroup {
    pub fn to_json(&self, sub: &str) -> Value {
        json!({
            "id": format!("/subscriptions/{sub}/resourceGroups/{}", self.name),
            "name": self.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.location,
            "tags": self.tags,
            "properties": {"provisioningState": "Succeeded"},
        })
    }
}

#[derive(Debug, Clone)]
pub struct RoleAssignment {
    pub name: String,
    pub scope: String,
    pub role_guid: String,
    pub principal_id: String,
    pub principal_type: String,
    pub description: Option<String>,
    pub condition: Option<String>,
    pub condition_version: Option<String>,
    pub created: DateTime<Utc>,
    pub created_by: Option<String>,
    /// When it was created through the API (`None` for seeded ones).
    pub created_at: Option<Instant>,
    pub seq: u64,
}

impl RoleAssignment {
    pub fn id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            self.scope, self.name
        )
    }

    pub fn to_json(&self, sub: &str) -> Value {
        json!({
            "id": self.id(),
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": format!(
                    "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
                    self.role_guid
                ),
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "scope": self.scope,
                "condition": self.condition,
                "conditionVersion": self.condition_version,
                "createdOn": fmt_time(&self.created),
                "updatedOn": fmt_time(&self.created),
                "createdBy": self.created_by,
                "updatedBy": self.created_by,
                "delegatedManagedIdentityResourceId": null,
                "description": self.description,
            }
        })
    }
}

/// Everything the emulator knows.
#[derive(Debug)]
pub struct Directory {
    pub tenant_id: String,
    pub domain: String,
    pub subscription_id: String,
    pub subscription_name: String,
    seq: u64,
    pub applications: HashMap<String, Application>,
    pub service_principals: HashMap<String, ServicePrincipal>,
    pub groups: HashMap<String, Group>,
    pub deleted: HashMap<String, DeletedObject>,
    pub resource_groups: HashMap<String, ResourceGroup>,
    pub role_assignments: HashMap<String, RoleAssignment>,
    pub management_groups: Vec<String>,
    /// The machine (Arc / VM) system-assigned identity's service principal id.
    pub machine_sp_id: String,
    /// A user-assigned identity attached to the VM: (service principal id, resource id).
    pub user_assigned: Vec<(String, String)>,
    /// The tenant's default app management policy (`tenantAppManagementPolicy`).
    pub default_policy: Value,
    /// App management policies by id.
    pub policies: std::collections::BTreeMap<String, Value>,
}

impl Directory {
    pub fn new(tenant_id: String, subscription_id: String, domain: String) -> Self {
        Directory {
            tenant_id,
            domain,
            subscription_id,
            subscription_name: "Azure Emulator Subscription".to_string(),
            seq: 0,
            applications: HashMap::new(),
            service_principals: HashMap::new(),
            groups: HashMap::new(),
            deleted: HashMap::new(),
            resource_groups: HashMap::new(),
            role_assignments: HashMap::new(),
            management_groups: Vec::new(),
            machine_sp_id: String::new(),
            user_assigned: Vec::new(),
            default_policy: super::policy::initial_default(),
            policies: std::collections::BTreeMap::new(),
        }
    }

    /// Directory objects counted against the tenant's quota: applications, service
    /// principals and groups, live or in deleted items (a soft-deleted object keeps its
    /// place until it is permanently deleted).
    pub fn directory_objects_used(&self) -> usize {
        self.applications.len()
            + self.service_principals.len()
            + self.groups.len()
            + self.deleted.len()
    }

    /// Whether service principal `oid` owns application or service principal `object_id`.
    pub fn owns(&self, object_id: &str, oid: &str) -> bool {
        let object_id = object_id.to_ascii_lowercase();
        let oid = oid.to_ascii_lowercase();
        self.applications
            .get(&object_id)
            .map(|a| &a.owners)
            .or_else(|| self.service_principals.get(&object_id).map(|s| &s.owners))
            .is_some_and(|o| o.contains(&oid))
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn subscription_scope(&self) -> String {
        format!("/subscriptions/{}", self.subscription_id)
    }

    /// Creates an application (no service principal).
    pub fn create_application(
        &mut self,
        display_name: &str,
        sign_in_audience: &str,
        tags: Vec<String>,
        created_at: Option<Instant>,
    ) -> Application {
        let seq = self.next_seq();
        let app = Application {
            id: new_id(),
            app_id: new_id(),
            display_name: display_name.to_string(),
            sign_in_audience: sign_in_audience.to_string(),
            tags,
            description: None,
            created: Utc::now(),
            created_at,
            seq,
            passwords: Vec::new(),
            keys: Vec::new(),
            federated: Vec::new(),
            policy: None,
            owners: Vec::new(),
            deleted: None,
        };
        self.applications.insert(app.id.clone(), app.clone());
        app
    }

    /// Creates the service principal of an existing application.
    pub fn create_service_principal(
        &mut self,
        app_object_id: &str,
        created_at: Option<Instant>,
    ) -> Option<ServicePrincipal> {
        let app = self.applications.get(app_object_id)?.clone();
        let seq = self.next_seq();
        let sp = ServicePrincipal {
            id: new_id(),
            app_id: app.app_id.clone(),
            display_name: app.display_name.clone(),
            sp_type: "Application".to_string(),
            sign_in_audience: app.sign_in_audience.clone(),
            tags: app.tags.clone(),
            alternative_names: Vec::new(),
            app_owner_tenant: self.tenant_id.clone(),
            created: Utc::now(),
            created_at,
            seq,
            passwords: Vec::new(),
            keys: Vec::new(),
            policy: None,
            graph_roles: Vec::new(),
            owners: Vec::new(),
            deleted: None,
        };
        self.service_principals.insert(sp.id.clone(), sp.clone());
        Some(sp)
    }

    /// Creates a managed identity's service principal (no application in this tenant).
    pub fn create_managed_identity(&mut self, display_name: &str, resource_id: &str) -> String {
        let seq = self.next_seq();
        let sp = ServicePrincipal {
            id: new_id(),
            app_id: new_id(),
            display_name: display_name.to_string(),
            sp_type: "ManagedIdentity".to_string(),
            sign_in_audience: "AzureADMyOrg".to_string(),
            tags: Vec::new(),
            alternative_names: vec!["isExplicit=False".to_string(), resource_id.to_string()],
            app_owner_tenant: "f8cdef31-a31e-4b4a-93e4-5f571e91255a".to_string(),
            created: Utc::now(),
            created_at: None,
            seq,
            passwords: Vec::new(),
            keys: Vec::new(),
            policy: None,
            graph_roles: Vec::new(),
            owners: Vec::new(),
            deleted: None,
        };
        let id = sp.id.clone();
        self.service_principals.insert(id.clone(), sp);
        id
    }

    pub fn create_group(&mut self, display_name: &str, description: Option<String>) -> Group {
        let seq = self.next_seq();
        let nick: String = display_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let g = Group {
            id: new_id(),
            display_name: display_name.to_string(),
            description,
            mail_nickname: if nick.is_empty() {
                "group".to_string()
            } else {
                nick
            },
            mail_enabled: false,
            security_enabled: true,
            group_types: Vec::new(),
            created: Utc::now(),
            seq,
            members: Vec::new(),
            deleted: None,
        };
        self.groups.insert(g.id.clone(), g.clone());
        g
    }

    pub fn add_resource_group(&mut self, name: &str, location: &str) {
        let seq = self.next_seq();
        self.resource_groups.insert(
            name.to_ascii_lowercase(),
            ResourceGroup {
                name: name.to_string(),
                location: location.to_string(),
                tags: json!({}),
                seq,
            },
        );
    }

    pub fn add_role_assignment(
        &mut self,
        scope: &str,
        role_guid: &str,
        principal_id: &str,
        principal_type: &str,
        created_by: Option<String>,
    ) -> RoleAssignment {
        let seq = self.next_seq();
        let ra = RoleAssignment {
            name: new_id(),
            scope: scope.to_string(),
            role_guid: role_guid.to_string(),
            principal_id: principal_id.to_string(),
            principal_type: principal_type.to_string(),
            description: None,
            condition: None,
            condition_version: None,
            created: Utc::now(),
            created_by,
            created_at: None,
            seq,
        };
        self.role_assignments
            .insert(ra.name.to_ascii_lowercase(), ra.clone());
        ra
    }

    pub fn app_by_client_id(&self, client_id: &str) -> Option<&Application> {
        self.applications
            .values()
            .find(|a| a.app_id.eq_ignore_ascii_case(client_id))
    }

    pub fn sp_by_client_id(&self, client_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals
            .values()
            .find(|s| s.app_id.eq_ignore_ascii_case(client_id))
    }

    /// The kind of a live directory object (`ServicePrincipal`, `Group`, `Application`).
    pub fn object_kind(&self, id: &str) -> Option<&'static str> {
        let id = id.to_ascii_lowercase();
        if self.service_principals.contains_key(&id) {
            Some("ServicePrincipal")
        } else if self.groups.contains_key(&id) {
            Some("Group")
        } else if self.applications.contains_key(&id) {
            Some("Application")
        } else {
            None
        }
    }

    /// Soft-deletes a service principal: it leaves every group and goes to deleted items.
    pub fn delete_service_principal(&mut self, id: &str) -> bool {
        let Some(mut sp) = self.service_principals.remove(id) else {
            return false;
        };
        for g in self.groups.values_mut() {
            g.members.retain(|m| m != id);
        }
        sp.deleted = Some(Utc::now());
        self.deleted
            .insert(sp.id.clone(), DeletedObject::ServicePrincipal(sp));
        true
    }

    /// Soft-deletes an application and its service principal.
    pub fn delete_application(&mut self, id: &str) -> bool {
        let Some(mut app) = self.applications.remove(id) else {
            return false;
        };
        let sp_ids: Vec<String> = self
            .service_principals
            .values()
            .filter(|s| s.app_id == app.app_id)
            .map(|s| s.id.clone())
            .collect();
        for sp in sp_ids {
            self.delete_service_principal(&sp);
        }
        app.deleted = Some(Utc::now());
        self.deleted
            .insert(app.id.clone(), DeletedObject::Application(app));
        true
    }

    pub fn delete_group(&mut self, id: &str) -> bool {
        let Some(mut g) = self.groups.remove(id) else {
            return false;
        };
        for other in self.groups.values_mut() {
            other.members.retain(|m| m != id);
        }
        g.deleted = Some(Utc::now());
        self.deleted.insert(g.id.clone(), DeletedObject::Group(g));
        true
    }

    /// Dumps every object, without secret texts.
    pub fn dump(&self) -> Value {
        let mut apps: Vec<&Application> = self.applications.values().collect();
        apps.sort_by_key(|a| a.seq);
        let mut sps: Vec<&ServicePrincipal> = self.service_principals.values().collect();
        sps.sort_by_key(|s| s.seq);
        let mut groups: Vec<&Group> = self.groups.values().collect();
        groups.sort_by_key(|g| g.seq);
        let mut deleted: Vec<&DeletedObject> = self.deleted.values().collect();
        deleted.sort_by_key(|d| d.seq());
        let mut ras: Vec<&RoleAssignment> = self.role_assignments.values().collect();
        ras.sort_by_key(|r| r.seq);
        let mut rgs: Vec<&ResourceGroup> = self.resource_groups.values().collect();
        rgs.sort_by_key(|r| r.seq);
        json!({
            "tenantId": self.tenant_id,
            "tenantDomain": self.domain,
            "subscriptionId": self.subscription_id,
            "machineIdentity": self.machine_sp_id,
            "applications": apps.iter().map(|a| {
                let mut v = a.to_json(&self.domain);
                v["federatedIdentityCredentials"] =
                    Value::Array(a.federated.iter().map(FederatedCredential::to_json).collect());
                v
            }).collect::<Vec<_>>(),
            "servicePrincipals": sps.iter().map(|s| {
                let mut v = s.to_json();
                v["graphAppRoles"] = json!(s.graph_roles);
                v
            }).collect::<Vec<_>>(),
            "deletedItems": deleted.iter().map(|d| d.to_json(&self.domain)).collect::<Vec<_>>(),
            "groups": groups.iter().map(|g| {
                let mut v = g.to_json();
                v["members"] = json!(g.members);
                v
            }).collect::<Vec<_>>(),
            "roleAssignments": ras.iter().map(|r| r.to_json(&self.subscription_id)).collect::<Vec<_>>(),
            "resourceGroups": rgs.iter().map(|r| r.to_json(&self.subscription_id)).collect::<Vec<_>>(),
            "managementGroups": self.management_groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_at_most_seven_fractional_digits() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(fmt_time(&t), "2024-01-02T03:04:05.1234567Z");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(fmt_time(&t), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn secrets_look_like_entra_secrets() {
        let s = new_secret();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[3..6], "8Q~");
        assert_ne!(new_secret(), s);
    }

    #[test]
    fn deleting_an_application_deletes_its_service_principal() {
        let mut d = Directory::new(new_id(), new_id(), "x.onmicrosoft.com".into());
        let app = d.create_application("a", "AzureADMyOrg", vec![], None);
        let sp = d.create_service_principal(&app.id, None).unwrap();
        let g = d.create_group("g", None);
        d.groups.get_mut(&g.id).unwrap().members.push(sp.id.clone());
        assert!(d.delete_application(&app.id));
        assert!(d.service_principals.is_empty());
        assert!(d.groups[&g.id].members.is_empty());
        assert!(d.deleted.contains_key(&app.id) && d.deleted.contains_key(&sp.id));
        let dump = d.dump().to_string();
        assert!(!dump.contains("8Q~"));
        let mut p = Password::new(None, Utc::now(), Utc::now());
        p.secret = "super-secret-text".to_string();
        assert!(!format!("{p:?} {d:?}").contains("super-secret-text"));
    }
}
