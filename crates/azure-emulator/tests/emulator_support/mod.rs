//! Helpers for the black-box tests of the `azure-emulator` binary.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A running emulator process, killed on drop.
pub struct Emu {
    pub process: azure_emulator::testing::EmulatorProcess,
    pub env: HashMap<String, String>,
    pub lines: Vec<String>,
    pub http: reqwest::Client,
    pub token_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Emu {
    pub fn start(extra: &[&str]) -> Emu {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_dir = dir.path().join("tokens");
        let token_arg = token_dir.to_string_lossy().into_owned();
        let mut args = vec!["--arc-token-dir", token_arg.as_str()];
        args.extend_from_slice(extra);
        let process = azure_emulator::testing::EmulatorProcess::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_azure-emulator")),
            &args,
        );
        let env: HashMap<String, String> = process.env.iter().cloned().collect();
        let lines = process.lines.clone();
        let pem = std::fs::read(&env["SSL_CERT_FILE"]).expect("read CA");
        let cert = reqwest::Certificate::from_pem(&pem).expect("CA pem");
        let http = reqwest::Client::builder()
            .tls_certs_only([cert])
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Emu {
            process,
            env,
            lines,
            http,
            token_dir,
            _dir: dir,
        }
    }

    pub fn var(&self, k: &str) -> &str {
        self.env
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k}"))
    }

    pub fn graph_url(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.var("AZURE_GRAPH_ENDPOINT"))
    }

    pub fn arm_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{sep}api-version=2022-04-01",
            self.var("AZURE_RESOURCE_MANAGER_ENDPOINT")
        )
    }

    pub fn sub_scope(&self) -> String {
        format!("/subscriptions/{}", self.var("AZURE_SUBSCRIPTION_ID"))
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!(
            "{}{tenant}/oauth2/v2.0/token",
            self.var("AZURE_AUTHORITY_HOST")
        )
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self.http.request(method, url);
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().await.expect("request");
        to_resp(r).await
    }

    pub async fn post_form(&self, url: &str, body: String) -> Resp {
        let r = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        to_resp(r).await
    }

    /// Client-credentials token request.
    pub async fn token(&self, client_id: &str, secret: &str, scope: &str) -> Resp {
        let tenant = self.var("AZURE_TENANT_ID").to_string();
        self.post_form(
            &self.token_url(&tenant),
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ]),
        )
        .await
    }

    pub fn graph_scope(&self) -> String {
        format!("{}/.default", self.var("AZURE_GRAPH_ENDPOINT"))
    }

    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.var("AZURE_RESOURCE_MANAGER_ENDPOINT"))
    }

    pub async fn token_for(&self, client_id: &str, secret: &str, scope: &str) -> String {
        let r = self.token(client_id, secret, scope).await;
        assert_eq!(r.status, StatusCode::OK, "token: {}", r.text);
        r.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub async fn root_graph(&self) -> String {
        self.token_for(
            self.var("AZURE_CLIENT_ID"),
            self.var("AZURE_CLIENT_SECRET"),
            &self.graph_scope(),
        )
        .await
    }

    pub async fn root_arm(&self) -> String {
        self.token_for(
            self.var("AZURE_CLIENT_ID"),
            self.var("AZURE_CLIENT_SECRET"),
            &self.arm_scope(),
        )
        .await
    }

    pub async fn graph(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Resp {
        self.send(method, &self.graph_url(path), Some(token), body.as_ref())
            .await
    }

    pub async fn arm(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
        self.send(method, &self.arm_url(path), Some(token), body.as_ref())
            .await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = format!("{}{path}", self.var("EMULATOR_ADMIN"));
        self.send(method, &url, None, body.as_ref()).await
    }

    /// Creates an application, its service principal and an SP password; returns
    /// (app object id, client id, sp id, secret).
    pub async fn new_principal(&self, graph: &str, name: &str) -> (String, String, String, String) {
        let app = self
            .graph(
                Method::POST,
                "/applications",
                graph,
                Some(serde_json::json!({"displayName": name, "signInAudience": "AzureADMyOrg"})),
            )
            .await;
        assert_eq!(app.status, StatusCode::CREATED, "{}", app.text);
        let app_id = app.body["appId"].as_str().unwrap().to_string();
        let id = app.body["id"].as_str().unwrap().to_string();
        let sp = self
            .graph(
                Method::POST,
                "/servicePrincipals",
                graph,
                Some(serde_json::json!({ "appId": app_id })),
            )
            .await;
        assert_eq!(sp.status, StatusCode::CREATED, "{}", sp.text);
        let sp_id = sp.body["id"].as_str().unwrap().to_string();
        let pw = self
            .graph(
                Method::POST,
                &format!("/servicePrincipals/{sp_id}/addPassword"),
                graph,
                Some(serde_json::json!({"passwordCredential": {"displayName": "t"}})),
            )
            .await;
        assert_eq!(pw.status, StatusCode::OK, "{}", pw.text);
        let secret = pw.body["secretText"].as_str().unwrap().to_string();
        (id, app_id, sp_id, secret)
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.process
            .terminate(Duration::from_secs(5))
            .expect("emulator did not exit after SIGTERM")
    }
}

pub async fn to_resp(r: reqwest::Response) -> Resp {
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

/// Waits until `check` holds, polling every 50 ms, for at most 20 s: what a test awaits
/// instead of sleeping for a fixed time (the emulator's delays run on its own clock).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
