//! Conversions between the wire messages of `pb` and the logical model.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::proto::logical as plogical;
use super::proto::pb;
use crate::logical::{
    Alias, Auth, LeaseOptions, LogicalError, Map, Operation, Request, Response, Secret, Storage,
};

/// Error kinds of `pb.ProtoError.err_type`.
mod err_type {
    pub const UNKNOWN: u32 = 0;
    pub const CODED: u32 = 3;
    pub const BAD_REQUEST: u32 = 4;
    pub const UNSUPPORTED_OPERATION: u32 = 5;
    pub const UNSUPPORTED_PATH: u32 = 6;
    pub const PERMISSION_DENIED: u32 = 8;
}

/// Go's zero `time.Time`, what Go plugins send for an unset issue time.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

fn duration_from_ns(v: i64) -> Duration {
    Duration::from_nanos(u64::try_from(v).unwrap_or(0))
}

fn duration_to_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Parses a JSON object carried as text; `""` and `null` are an empty object.
pub fn json_object(text: &str, what: &str) -> Result<Map, LogicalError> {
    if text.is_empty() || text == "null" {
        return Ok(Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(serde_json::Value::Null) => Ok(Map::new()),
        Ok(_) => Err(LogicalError::bad_request(format!(
            "{what} is not a JSON object"
        ))),
        Err(e) => Err(LogicalError::bad_request(format!(
            "{what} is not valid JSON: {e}"
        ))),
    }
}

fn time_from_proto(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    if ts.seconds == GO_ZERO_TIME_SECONDS && ts.nanos == 0 {
        return None;
    }
    Utc.timestamp_opt(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
        .single()
}

fn time_to_proto(t: Option<DateTime<Utc>>) -> prost_types::Timestamp {
    match t {
        Some(t) => prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
        },
        None => prost_types::Timestamp {
            seconds: GO_ZERO_TIME_SECONDS,
            nanos: 0,
        },
    }
}

pub fn secret_from_proto(s: &pb::Secret) -> Result<Secret, LogicalError> {
    let lease = s.lease_options.as_ref().map(|o| LeaseOptions {
        ttl: duration_from_ns(o.ttl),
        max_ttl: duration_from_ns(o.max_ttl),
        renewable: o.renewable,
        increment: duration_from_ns(o.increment),
        issue_time: o.issue_time.as_ref().and_then(time_from_proto),
    });
    Ok(Secret {
        lease: lease.unwrap_or_default(),
        internal_data: json_object(&s.internal_data, "secret internal data")?,
        lease_id: s.lease_id.clone(),
    })
}

fn lease_to_proto(lease: &LeaseOptions) -> pb::LeaseOptions {
    pb::LeaseOptions {
        ttl: duration_to_ns(lease.ttl),
        renewable: lease.renewable,
        increment: duration_to_ns(lease.increment),
        // Must be present whenever lease options are (the host fails on a nil timestamp).
        issue_time: Some(time_to_proto(lease.issue_time)),
        max_ttl: duration_to_ns(lease.max_ttl),
    }
}

fn secret_to_proto(s: Secret) -> pb::Secret {
    pb::Secret {
        lease_options: Some(lease_to_proto(&s.lease)),
        internal_data: serde_json::Value::Object(s.internal_data).to_string(),
        lease_id: s.lease_id,
    }
}

fn alias_to_proto(a: Alias) -> plogical::Alias {
    plogical::Alias {
        mount_accessor: a.mount_accessor,
        name: a.name,
        metadata: a.metadata,
        ..plogical::Alias::default()
    }
}

fn auth_to_proto(a: Auth) -> pb::Auth {
    pb::Auth {
        lease_options: Some(lease_to_proto(&a.lease)),
        internal_data: serde_json::Value::Object(a.internal_data).to_string(),
        display_name: a.display_name,
        policies: a.policies,
        metadata: a.metadata,
        client_token: a.client_token,
        accessor: a.accessor,
        period: duration_to_ns(a.period),
        num_uses: a.num_uses,
        entity_id: a.entity_id,
        alias: a.alias.map(alias_to_proto),
        group_aliases: a.group_aliases.into_iter().map(alias_to_proto).collect(),
        bound_cidrs: a.bound_cidrs,
        token_policies: a.token_policies,
        identity_policies: a.identity_policies,
        explicit_max_ttl: duration_to_ns(a.explicit_max_ttl),
        token_type: a.token_type.as_u32(),
        no_default_policy: a.no_default_policy,
    }
}

/// A host request as a logical request on `storage`.
pub fn request_from_proto(
    r: pb::Request,
    storage: Arc<dyn Storage>,
) -> Result<Request, LogicalError> {
    let data = json_object(&r.data, "request data")?;
    let secret = r.secret.as_ref().map(secret_from_proto).transpose()?;
    Ok(Request {
        id: r.id,
        operation: Operation::parse(&r.operation),
        path: r.path,
        data,
        secret,
        client_token_accessor: r.client_token_accessor,
        display_name: r.display_name,
        mount_point: r.mount_point,
        mount_type: r.mount_type,
        entity_id: r.entity_id,
        unauthenticated: r.unauthenticated,
        headers: r.headers.into_iter().map(|(k, v)| (k, v.header)).collect(),
        remote_addr: r.connection.map(|c| c.remote_addr).unwrap_or_default(),
        storage,
    })
}

pub fn response_to_proto(r: Response) -> pb::Response {
    pb::Response {
        secret: r.secret.map(secret_to_proto),
        auth: r.auth.map(auth_to_proto),
        data: match r.data {
            // Cannot fail: a map of JSON values with string keys always serializes.
            Some(d) => serde_json::to_string(&d).unwrap_or_else(|_| "{}".to_string()),
            None => "null".to_string(),
        },
        redirect: r.redirect,
        warnings: r.warnings,
        wrap_info: None,
        headers: Default::default(),
    }
}

pub fn error_to_proto(e: &LogicalError) -> pb::ProtoError {
    let (err_type, err_code) = match e {
        LogicalError::BadRequest(_) => (err_type::BAD_REQUEST, 0),
        LogicalError::Internal(_) => (err_type::UNKNOWN, 0),
        LogicalError::Coded { status, .. } => (err_type::CODED, i64::from(*status)),
        LogicalError::UnsupportedOperation => (err_type::UNSUPPORTED_OPERATION, 0),
        LogicalError::UnsupportedPath => (err_type::UNSUPPORTED_PATH, 0),
        LogicalError::PermissionDenied => (err_type::PERMISSION_DENIED, 0),
        // The host recognises `logical.ErrReadOnly` by its text, as Go plugins send it.
        LogicalError::ReadOnly => (err_type::UNKNOWN, 0),
    };
    pb::ProtoError {
        err_type,
        err_msg: e.to_string(),
        err_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_data_are_empty_objects() {
        assert!(json_object("null", "x").unwrap().is_empty());
        assert!(json_object("", "x").unwrap().is_empty());
        assert_eq!(json_object(r#"{"a":1}"#, "x").unwrap()["a"], 1);
        assert!(json_object("[1]", "x").is_err());
    }

    #[test]
    fn secret_round_trip_keeps_issue_time_present() {
        let mut internal = Map::new();
        internal.insert("secret_type".into(), "service_principal".into());
        let s = Secret {
            lease: LeaseOptions {
                ttl: Duration::from_secs(60),
                ..Default::default()
            },
            internal_data: internal,
            lease_id: String::new(),
        };
        let p = secret_to_proto(s.clone());
        let opts = p.lease_options.as_ref().unwrap();
        assert_eq!(opts.ttl, 60_000_000_000);
        assert_eq!(
            opts.issue_time.as_ref().unwrap().seconds,
            GO_ZERO_TIME_SECONDS
        );
        assert_eq!(secret_from_proto(&p).unwrap(), s);
    }

    #[test]
    fn response_without_data_is_null_text() {
        assert_eq!(response_to_proto(Response::default()).data, "null");
    }

    #[test]
    fn auth_crosses_with_its_fields() {
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("team".to_string(), "blue".to_string());
        let auth = Auth {
            lease: LeaseOptions {
                ttl: Duration::from_secs(30),
                renewable: true,
                ..Default::default()
            },
            display_name: "alice".into(),
            policies: vec!["default".into(), "dev".into()],
            metadata: metadata.clone(),
            period: Duration::from_secs(60),
            alias: Some(Alias {
                name: "alice".into(),
                ..Alias::default()
            }),
            token_type: crate::logical::TokenType::Batch,
            ..Auth::default()
        };
        let p = response_to_proto(Response {
            auth: Some(auth),
            ..Response::default()
        })
        .auth
        .unwrap();
        assert_eq!(p.display_name, "alice");
        assert_eq!(p.policies, vec!["default", "dev"]);
        assert_eq!(p.metadata, metadata);
        assert_eq!(p.period, 60_000_000_000);
        assert_eq!(p.token_type, 2);
        assert_eq!(p.alias.unwrap().name, "alice");
        let lease = p.lease_options.unwrap();
        assert_eq!((lease.ttl, lease.renewable), (30_000_000_000, true));
        assert!(lease.issue_time.is_some());
        assert_eq!(p.internal_data, "{}");
        assert!(response_to_proto(Response::default()).auth.is_none());
    }

    #[test]
    fn read_only_keeps_the_hosts_text() {
        let e = error_to_proto(&LogicalError::ReadOnly);
        assert_eq!(e.err_type, 0);
        assert_eq!(e.err_msg, "cannot write to readonly storage");
    }

    #[test]
    fn errors_map_to_types() {
        assert_eq!(error_to_proto(&LogicalError::bad_request("x")).err_type, 4);
        assert_eq!(
            error_to_proto(&LogicalError::UnsupportedOperation).err_type,
            5
        );
        let coded = error_to_proto(&LogicalError::Coded {
            status: 418,
            message: "teapot".into(),
        });
        assert_eq!((coded.err_type, coded.err_code), (3, 418));
    }
}
