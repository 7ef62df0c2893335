//! Listeners: the accept loop (plain or TLS), and the per-request wrapper that applies
//! latency and faults, adds the service's correlation headers, records the request and
//! logs one line per request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::errors::{fault_response, Service};
use super::faults::RequestRecord;
use super::throttle::Take;
use super::Shared;

/// Identifiers of the request being handled, reachable from error renderers.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub client_request_id: String,
    pub correlation_id: String,
}

impl RequestCtx {
    fn fresh() -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        RequestCtx {
            request_id: id.clone(),
            client_request_id: id.clone(),
            correlation_id: id,
        }
    }

    fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .map(str::to_string)
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = get("client-request-id")
            .or_else(|| get("x-ms-client-request-id"))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let correlation_id =
            get("x-ms-correlation-request-id").unwrap_or_else(|| client_request_id.clone());
        RequestCtx {
            request_id,
            client_request_id,
            correlation_id,
        }
    }
}

tokio::task_local! {
    static CTX: RequestCtx;
}

/// The identifiers of the request being handled (fresh ones outside a request).
pub fn current_request() -> RequestCtx {
    CTX.try_with(|c| c.clone())
        .unwrap_or_else(|_| RequestCtx::fresh())
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Accepts connections until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Service,
    router: Router,
    shared: Arc<Shared>,
) {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(service = service.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses go out at once: with Nagle's algorithm a response split over two
        // segments waits for the client's delayed ACK (about 40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(service = service.as_str(), error = %e, "cannot set TCP_NODELAY");
        }
        let tls = tls.clone();
        let router = router.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(req, service, router.clone(), shared.clone())
            });
            let builder = Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        builder
                            .serve_connection(TokioIo::new(tls_stream), svc)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(service = service.as_str(), error = %e, "TLS handshake failed");
                        return;
                    }
                },
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
            };
            if let Err(e) = result {
                tracing::debug!(service = service.as_str(), error = %e, "connection ended");
            }
        });
    }
}

/// The largest request body the services accept (Graph and ARM bodies are a few KB).
const MAX_BODY_BYTES: usize = 4 << 20;

/// Receives a request whole, then carries it out in a task of its own: like Azure, the
/// emulator completes a request that has arrived even when its client gives up waiting
/// (a client timeout during the simulated latency), so the request may still land after
/// the client retried or moved on. A request whose body never arrived is not carried out.
async fn handle(
    req: Request<Incoming>,
    service: Service,
    router: Router,
    shared: Arc<Shared>,
) -> Result<Response<Body>, DroppedByFault> {
    let started_ms = shared.now_ms();
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Ok(fault_response(service, 413, None));
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::info!(service = service.as_str(), method = %parts.method, path = %parts.uri.path(), error = %e, "request body not received whole (client gone, or over the size limit); not carried out");
            return Ok(fault_response(service, 400, None));
        }
    };
    let req = Request::from_parts(parts, Body::from(body));
    let work = tokio::spawn(carry_out(req, started_ms, service, router, shared));
    match work.await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(service = service.as_str(), error = %e, "request handler failed");
            Ok(fault_response(service, 500, None))
        }
    }
}

/// Applies latency, faults and throttling to a received request, routes it, and records
/// and logs the outcome.
async fn carry_out(
    req: Request<Body>,
    started_ms: u64,
    service: Service,
    router: Router,
    shared: Arc<Shared>,
) -> Result<Response<Body>, DroppedByFault> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let ctx = RequestCtx::from_headers(req.headers());

    let latency = shared.settings().latency_ms;
    let fault = shared
        .faults()
        .take(service.as_str(), &method, &path_and_query);
    let delay = latency.saturating_add(fault.as_ref().map(|f| f.delay_ms).unwrap_or(0));
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    if let Some(f) = &fault {
        if f.drop {
            shared.record(RequestRecord {
                method: method.clone(),
                path: path_and_query,
                status: 0,
                started_ms,
                finished_ms: shared.now_ms(),
                service: service.as_str(),
                replica: None,
                client_id: None,
            });
            tracing::info!(service = service.as_str(), %method, %path, status = 0, "request dropped by fault");
            return Err(DroppedByFault);
        }
    }

    // An injected status wins; otherwise writes may be throttled.
    let mut forced = fault.and_then(|f| f.status.map(|s| (s, f.retry_after_secs)));
    let mut remaining_writes = None;
    if forced.is_none() && is_write(&method) {
        match shared.take_write_token(service) {
            Some(Take::Throttled(wait)) => {
                forced = Some((429, Some(wait.ceil().max(1.0) as u64)));
                remaining_writes = Some(0);
            }
            Some(Take::Allowed(left)) => remaining_writes = Some(left),
            None => {}
        }
    }

    let ctx2 = ctx.clone();
    let mut resp = CTX
        .scope(ctx.clone(), async move {
            match forced {
                Some((status, retry_after)) => fault_response(service, status, retry_after),
                None => {
                    let r: Result<Response<Body>, Infallible> = router.oneshot(req).await;
                    match r {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                }
            }
        })
        .await;

    add_service_headers(service, &ctx2, resp.headers_mut());
    if let (Service::Arm, Some(left)) = (service, remaining_writes) {
        insert(
            resp.headers_mut(),
            "x-ms-ratelimit-remaining-subscription-writes",
            &left.to_string(),
        );
    }
    let status = resp.status().as_u16();
    let finished_ms = shared.now_ms();
    let call = resp.extensions_mut().remove::<super::replicas::TokenCall>();
    shared.record(RequestRecord {
        method: method.clone(),
        path: path_and_query,
        status,
        started_ms,
        finished_ms,
        service: service.as_str(),
        replica: call.as_ref().map(|c| c.replica),
        client_id: call.and_then(|c| c.client_id),
    });
    tracing::info!(
        service = service.as_str(),
        %method,
        %path,
        status,
        elapsed_ms = finished_ms.saturating_sub(started_ms),
        "request"
    );
    Ok(resp)
}

fn is_write(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn add_service_headers(service: Service, ctx: &RequestCtx, headers: &mut HeaderMap) {
    match service {
        Service::Graph => {
            insert(headers, "request-id", &ctx.request_id);
            insert(headers, "client-request-id", &ctx.client_request_id);
            insert(
                headers,
                "x-ms-ags-diagnostic",
                r#"{"ServerInfo":{"DataCenter":"Emulator","Slice":"E","Ring":"0","ScaleUnit":"000","RoleInstance":"azure-emulator"}}"#,
            );
        }
        Service::Arm => {
            insert(headers, "x-ms-request-id", &ctx.request_id);
            insert(headers, "x-ms-correlation-request-id", &ctx.correlation_id);
            insert(
                headers,
                "x-ms-routing-request-id",
                &format!("EMULATOR:{}", ctx.request_id),
            );
        }
        Service::Token => {
            insert(headers, "x-ms-request-id", &ctx.request_id);
            insert(headers, "client-request-id", &ctx.client_request_id);
        }
        Service::Arc | Service::Imds => {}
    }
}
