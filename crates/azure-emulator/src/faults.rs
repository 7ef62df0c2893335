//! Fault-injection rules and the request log, both driven by the admin API.

use serde::{Deserialize, Serialize};

/// One fault rule, as posted to `POST /faults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Substring of the request path plus query; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// Service to match (`token`, `graph`, `arm`, `arc`, `imds`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Status to answer with, in the service's own error shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` header value in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// How many matching calls to affect; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Close the connection without answering.
    #[serde(default)]
    pub drop: bool,
    /// Extra delay before answering (applied to matching calls), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl FaultRule {
    /// Checks that the rule does something and names a sensible status.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status {
            if !(100..=599).contains(&status) {
                return Err(format!("status {status} is not an HTTP status"));
            }
        }
        if self.status.is_none() && !self.drop && self.delay_ms.is_none() {
            return Err("a fault needs `status`, `drop: true` or `delay_ms`".to_string());
        }
        if let Some(service) = &self.service {
            if !["token", "graph", "arm", "arc", "imds"].contains(&service.as_str()) {
                return Err(format!("unknown service '{service}'"));
            }
        }
        Ok(())
    }

    fn matches(&self, service: &str, method: &str, path_and_query: &str) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(method) {
                return false;
            }
        }
        if let Some(s) = &self.service {
            if s != service {
                return false;
            }
        }
        if let Some(p) = &self.path_contains {
            if !path_and_query.contains(p.as_str()) {
                return false;
            }
        }
        !matches!(self.times, Some(0))
    }
}

/// What the server must do for one request.
#[derive(Debug, Clone, Default)]
pub struct FaultAction {
    pub drop: bool,
    pub status: Option<u16>,
    pub retry_after_secs: Option<u64>,
    pub delay_ms: u64,
}

/// The list of active rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    /// Finds the first matching rule with calls left, consumes one call and returns its action.
    pub fn take(
        &mut self,
        service: &str,
        method: &str,
        path_and_query: &str,
    ) -> Option<FaultAction> {
        let rule = self
            .rules
            .iter_mut()
            .find(|r| r.matches(service, method, path_and_query))?;
        if let Some(times) = rule.times.as_mut() {
            *times = times.saturating_sub(1);
        }
        Some(FaultAction {
            drop: rule.drop,
            status: rule.status,
            retry_after_secs: rule.retry_after_secs,
            delay_ms: rule.delay_ms.unwrap_or(0),
        })
    }
}

/// One entry of `GET /requests`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub service: &'static str,
    /// Token requests: the replica that answered (see `replicas`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<usize>,
    /// Token requests: the client id asked for (never the credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn times_counts_matching_calls() {
        let mut f = Faults::default();
        f.add(rule(
            r#"{"method":"put","path_contains":"roleAssignments","status":429,"times":2}"#,
        ));
        assert!(f.take("arm", "GET", "/x/roleAssignments/1").is_none());
        assert_eq!(
            f.take("arm", "PUT", "/x/roleAssignments/1").unwrap().status,
            Some(429)
        );
        assert!(f.take("arm", "PUT", "/x/roleAssignments/1").is_some());
        assert!(f.take("arm", "PUT", "/x/roleAssignments/1").is_none());
    }

    #[test]
    fn validation() {
        assert!(rule(r#"{"status":700}"#).validate().is_err());
        assert!(rule(r#"{}"#).validate().is_err());
        assert!(rule(r#"{"drop":true}"#).validate().is_ok());
    }
}
