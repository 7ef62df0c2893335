//! The gRPC services the host calls on the main connection: `pb.Backend` (routed to the
//! backend instance named by the `multiplex_id` metadata), multiplexing, version, controller,
//! health, the broker's announcements and stdio; [`methods`] is their table.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::Notify;
use tonic::Status;

use super::broker::{self, Broker};
use super::convert;
use super::grpc::{Call, Methods};
use super::proto::logical as version_pb;
use super::proto::pb;
use super::proto::plugin as go_plugin;
use super::proto::pluginutil::multiplexing as mux;
use super::storage::HostStorage;
use super::system_view::HostSystemView;
use crate::logical::{self, Backend, BackendConfig, BackendType, Factory, Storage};

struct Instance {
    backend: Arc<dyn Backend>,
    storage: Arc<dyn Storage>,
}

/// Counts the handler calls under way (requests, and revocations of secrets whose caller
/// went away): a process whose host died says how many it abandons.
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// One call under way; dropping it ends the call.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// How many calls are under way.
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once no call is under way.
    #[cfg(test)]
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Backend instances of this process, keyed by the host's `multiplex_id`.
pub struct Backends {
    factory: Arc<dyn Factory>,
    broker: Arc<Broker>,
    tls: Arc<rustls::ClientConfig>,
    instances: RwLock<HashMap<String, Arc<Instance>>>,
    pub in_flight: Arc<InFlight>,
}

impl Backends {
    pub fn new(
        factory: Arc<dyn Factory>,
        broker: Arc<Broker>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            factory,
            broker,
            tls,
            instances: RwLock::new(HashMap::new()),
            in_flight: Arc::default(),
        }
    }

    /// The instance a call names (by its `multiplex_id`; none names the only instance of a
    /// host that does not multiplex, keyed by "").
    fn instance<M>(&self, call: &Call<M>) -> Result<Arc<Instance>, Status> {
        let id = call.multiplex_id.as_deref().unwrap_or_default();
        self.instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("no backend instance found for multiplex id {id:?}"))
            })
    }
}

/// Why a `HandleRequest` call runs no handler: the answer is the error (for the host to
/// see as the request's error), or the call fails.
enum NotRun {
    Refused(logical::LogicalError),
    Failed(Status),
}

/// `pb.Backend`: one method per call of the service, called from the method table.
pub struct BackendService(pub Arc<Backends>);

impl BackendService {
    async fn setup(&self, call: Call<pb::SetupArgs>) -> Result<pb::SetupReply, Status> {
        let id = call.multiplex_id.unwrap_or_default();
        let args = call.message;
        let backends = &self.0;
        let addr = backends.broker.take(args.broker_id).await?;
        let channel = broker::dial(addr, backends.tls.clone()).await?;
        let storage: Arc<dyn Storage> = Arc::new(HostStorage::new(channel.clone()));
        let config = BackendConfig {
            config: args.config,
            backend_uuid: args.backend_uuid,
            storage: storage.clone(),
            system_view: Arc::new(HostSystemView::new(channel)),
        };
        match backends.factory.create(config).await {
            Ok(backend) => {
                backends
                    .instances
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id.clone(), Arc::new(Instance { backend, storage }));
                tracing::debug!(multiplex_id = %id, "backend instance set up");
                Ok(pb::SetupReply { err: String::new() })
            }
            Err(err) => {
                tracing::error!(error = %err, "backend setup failed");
                Ok(pb::SetupReply {
                    err: err.to_string(),
                })
            }
        }
    }

    async fn r#type(&self, call: Call<pb::Empty>) -> Result<pb::TypeReply, Status> {
        let instance = self.0.instance(&call)?;
        let r#type = match instance.backend.backend_type() {
            BackendType::Secrets => 1,
            BackendType::Credential => 2,
        };
        Ok(pb::TypeReply { r#type })
    }

    async fn special_paths(&self, call: Call<pb::Empty>) -> Result<pb::SpecialPathsReply, Status> {
        let instance = self.0.instance(&call)?;
        let p = instance.backend.special_paths();
        Ok(pb::SpecialPathsReply {
            paths: Some(pb::Paths {
                root: p.root,
                unauthenticated: p.unauthenticated,
                local_storage: p.local_storage,
                seal_wrap_storage: p.seal_wrap_storage,
                write_forwarded_storage: Vec::new(),
            }),
        })
    }

    async fn initialize(
        &self,
        call: Call<pb::InitializeArgs>,
    ) -> Result<pb::InitializeReply, Status> {
        let instance = self.0.instance(&call)?;
        let err = contain_panic("initialize", instance.backend.initialize())
            .await
            .err()
            .map(|e| convert::error_to_proto(&e));
        Ok(pb::InitializeReply { err })
    }

    /// `HandleRequest`. Everything up to the handler happens before the first wait, so the
    /// call's future holds neither the wire request (large) nor the logical one.
    fn handle_request(
        &self,
        call: Call<pb::HandleRequestArgs>,
    ) -> impl std::future::Future<Output = Result<pb::HandleRequestReply, Status>> + Send + 'static
    {
        let run = self
            .prepare_request(call)
            .map(|(instance, req)| run_to_completion(instance, req, &self.0.in_flight));
        async move {
            let outcome = match run {
                Ok(run) => run.await?,
                Err(NotRun::Refused(e)) => Err(e),
                Err(NotRun::Failed(status)) => return Err(status),
            };
            Ok(match outcome {
                Ok(response) => pb::HandleRequestReply {
                    response: response.map(convert::response_to_proto),
                    err: None,
                },
                Err(e) => pb::HandleRequestReply {
                    response: None,
                    err: Some(convert::error_to_proto(&e)),
                },
            })
        }
    }

    /// The instance and the logical request of a `HandleRequest` call.
    fn prepare_request(
        &self,
        call: Call<pb::HandleRequestArgs>,
    ) -> Result<(Arc<Instance>, logical::Request), NotRun> {
        let instance = self.0.instance(&call).map_err(NotRun::Failed)?;
        let req = call.message.request.ok_or_else(|| {
            NotRun::Failed(Status::invalid_argument("HandleRequest without a request"))
        })?;
        if !instance
            .backend
            .handles(&logical::Operation::parse(&req.operation))
        {
            return Err(NotRun::Refused(logical::LogicalError::UnsupportedOperation));
        }
        let req =
            convert::request_from_proto(req, instance.storage.clone()).map_err(NotRun::Refused)?;
        Ok((instance, req))
    }

    async fn handle_existence_check(
        &self,
        call: Call<pb::HandleExistenceCheckArgs>,
    ) -> Result<pb::HandleExistenceCheckReply, Status> {
        let instance = self.0.instance(&call)?;
        let req = call
            .message
            .request
            .ok_or_else(|| Status::invalid_argument("HandleExistenceCheck without a request"))?;
        let req = match convert::request_from_proto(req, instance.storage.clone()) {
            Ok(req) => req,
            // A request the plugin cannot read (its data is not a JSON object the parser
            // accepts): no existence check, so that the host goes on to the request itself,
            // which fails with the same 400. The host turns any error of an existence check
            // into a 500, whatever its type.
            Err(e) => {
                tracing::debug!(error = %e, "existence check of an unreadable request skipped");
                return Ok(pb::HandleExistenceCheckReply::default());
            }
        };
        let outcome = contain_panic(
            "existence check",
            instance.backend.handle_existence_check(req),
        )
        .await;
        let reply = match outcome {
            Ok(None) => pb::HandleExistenceCheckReply::default(),
            Ok(Some(exists)) => pb::HandleExistenceCheckReply {
                check_found: true,
                exists,
                err: None,
            },
            Err(e) => pb::HandleExistenceCheckReply {
                check_found: false,
                exists: false,
                err: Some(convert::error_to_proto(&e)),
            },
        };
        Ok(reply)
    }

    async fn invalidate_key(&self, call: Call<pb::InvalidateKeyArgs>) -> Result<pb::Empty, Status> {
        let instance = self.0.instance(&call)?;
        instance.backend.invalidate_key(&call.message.key).await;
        Ok(pb::Empty {})
    }

    async fn cleanup(&self, call: Call<pb::Empty>) -> Result<pb::Empty, Status> {
        let id = call.multiplex_id.unwrap_or_default();
        let removed = self
            .0
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(instance) = removed {
            instance.backend.cleanup().await;
            tracing::debug!(multiplex_id = %id, "backend instance cleaned up");
        }
        Ok(pb::Empty {})
    }
}

/// Runs a request in a task of its own, so that a host cancelling the call (its client went
/// away) never stops a handler half-way. If the call is cancelled and the handler then
/// returns a secret, nobody will hold a lease for it: it is revoked at once, as the host
/// does when it cannot register a lease.
fn run_to_completion(
    instance: Arc<Instance>,
    req: logical::Request,
    in_flight: &Arc<InFlight>,
) -> impl std::future::Future<
    Output = Result<Result<Option<logical::Response>, logical::LogicalError>, Status>,
> + Send
       + 'static {
    let backend = instance.backend.clone();
    let call = in_flight.enter();
    // The request moves into the handler's box here: the future returned holds the box.
    let handler = Box::pin(async move {
        let _call = call;
        contain_panic("request", backend.handle_request(req)).await
    });
    let in_flight = in_flight.clone();
    async move {
        let mut handler = handler;
        // Most requests (reads answered from the cache, the host's resolve-path calls)
        // finish without waiting for anything: they run here, on the call's own task. Only
        // a handler that has to wait gets a task of its own, which a cancelled call cannot
        // stop.
        if let std::task::Poll::Ready(outcome) = futures::poll!(&mut handler) {
            return Ok(outcome);
        }
        let storage = instance.storage.clone();
        let task = tokio::spawn(handler);
        let mut guard = CancelGuard {
            task: Some(task),
            instance,
            storage,
            in_flight,
        };
        let outcome = guard
            .task
            .as_mut()
            .ok_or_else(|| Status::internal("request task missing"))?
            .await;
        guard.task = None;
        outcome.map_err(|e| Status::internal(format!("request handler failed: {e}")))
    }
}

/// Runs a handler future, turning a panic inside it into an internal error for that call
/// alone: the process, and every other mount it serves, keeps running. The panic's message
/// may hold request data, so only the fact and the kind of call are logged (the panic hook
/// logs where it happened, also without the message).
pub(crate) async fn contain_panic<T>(
    kind: &'static str,
    fut: impl std::future::Future<Output = Result<T, logical::LogicalError>>,
) -> Result<T, logical::LogicalError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(
                call = kind,
                "a handler panicked; the call fails with an internal error"
            );
            Err(logical::LogicalError::internal("internal error"))
        }
    }
}

/// Revokes the secret of a request whose caller went away before it finished.
struct CancelGuard {
    task: Option<tokio::task::JoinHandle<Result<Option<logical::Response>, logical::LogicalError>>>,
    instance: Arc<Instance>,
    storage: Arc<dyn Storage>,
    in_flight: Arc<InFlight>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let backend = self.instance.backend.clone();
        let storage = self.storage.clone();
        // Entered before the request's own call can end, so the count never drops to zero
        // between the request and the revocation of what it issued.
        let call = self.in_flight.enter();
        tokio::spawn(async move {
            let _call = call;
            let Ok(Ok(Some(resp))) = task.await else {
                return;
            };
            let Some(secret) = resp.secret else {
                return;
            };
            tracing::warn!("the host cancelled a request that issued a secret; revoking it");
            let mut revoke = logical::Request::new(logical::Operation::Revoke, "", storage);
            revoke.data = resp.data.unwrap_or_default();
            revoke.secret = Some(secret);
            if let Err(e) = contain_panic("revoke", backend.handle_request(revoke)).await {
                tracing::error!(error = %e, "revoking the secret of a cancelled request failed");
            }
        });
    }
}

/// Every method the host calls on the main connection.
///
/// Two are streams the host opens once and keeps open: the broker's, on which it announces
/// where its storage and system-view server listens for each backend instance, and stdio,
/// on which this plugin never writes (it logs through stderr as hclog JSON).
pub fn methods(
    backends: Arc<Backends>,
    broker: Arc<Broker>,
    shutdown: Arc<Notify>,
    version: String,
) -> Methods {
    let backend = Arc::new(BackendService(backends));
    // One entry per `pb.Backend` method: the service's own async method, called directly.
    macro_rules! backend {
        ($methods:expr, $path:literal, $method:ident) => {{
            let backend = backend.clone();
            $methods.unary($path, move |call| {
                let backend = backend.clone();
                async move { backend.$method(call).await }
            })
        }};
    }
    // `handle_request` prepares the request before it returns its future: registered without
    // an enclosing `async` block, which would keep the wire request in the call's future.
    let methods = Methods::default().unary("/pb.Backend/HandleRequest", {
        let backend = backend.clone();
        move |call| backend.handle_request(call)
    });
    let methods = backend!(methods, "/pb.Backend/SpecialPaths", special_paths);
    let methods = backend!(
        methods,
        "/pb.Backend/HandleExistenceCheck",
        handle_existence_check
    );
    let methods = backend!(methods, "/pb.Backend/Cleanup", cleanup);
    let methods = backend!(methods, "/pb.Backend/InvalidateKey", invalidate_key);
    let methods = backend!(methods, "/pb.Backend/Setup", setup);
    let methods = backend!(methods, "/pb.Backend/Initialize", initialize);
    let methods = backend!(methods, "/pb.Backend/Type", r#type);
    methods
        .unary(
            "/pluginutil.multiplexing.PluginMultiplexing/MultiplexingSupport",
            |_: Call<mux::MultiplexingSupportRequest>| async {
                Ok(mux::MultiplexingSupportResponse { supported: true })
            },
        )
        .unary(
            "/logical.PluginVersion/Version",
            move |_: Call<version_pb::Empty>| {
                let plugin_version = version.clone();
                async move { Ok(version_pb::VersionReply { plugin_version }) }
            },
        )
        .unary(
            "/plugin.GRPCController/Shutdown",
            move |_: Call<go_plugin::Empty>| {
                tracing::debug!("shutdown requested by the host");
                shutdown.notify_one();
                async { Ok(go_plugin::Empty {}) }
            },
        )
        .unary(
            "/grpc.health.v1.Health/Check",
            |_: Call<tonic_health::pb::HealthCheckRequest>| async {
                Ok(tonic_health::pb::HealthCheckResponse {
                    status: tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                })
            },
        )
        .inbound("/plugin.GRPCBroker/StartStream", move |message| {
            match <go_plugin::ConnInfo as prost::Message>::decode(message) {
                Ok(info) => {
                    let broker = broker.clone();
                    tokio::spawn(async move { broker.record(info).await });
                }
                Err(e) => tracing::warn!(error = %e, "undecodable broker announcement"),
            }
        })
        .inbound("/plugin.GRPCStdio/StreamStdio", |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{handler, BackendBuilder, OperationHandler, Path};
    use crate::logical::{InmemStorage, Operation, Response};

    fn instance() -> Arc<Instance> {
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let backend = BackendBuilder::new("test")
            .path(Path::new("boom").operation(
                Operation::Read,
                OperationHandler::new(
                    handler(|_, _| async move {
                        let v: Vec<u8> = Vec::new();
                        // An out-of-bounds index: a panic no test can mistake for an error.
                        let _ = v[usize::from(v.is_empty())];
                        Ok(None)
                    }),
                    "panics",
                    "boom",
                ),
            ))
            .path(Path::new("ok").operation(
                Operation::Read,
                OperationHandler::new(
                    handler(|_, _| async move {
                        Ok(Some(Response::with_data(crate::framework::object(
                            serde_json::json!({"fine": true}),
                        ))))
                    }),
                    "works",
                    "ok",
                ),
            ))
            .build(&crate::logical::BackendConfig {
                storage: storage.clone(),
                ..crate::testing::backend_config(
                    Arc::new(crate::testing::TestSystemView::default()),
                )
            })
            .unwrap();
        Arc::new(Instance {
            backend: Arc::new(backend),
            storage,
        })
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_its_request_alone() {
        let instance = instance();
        let read =
            |path: &str| logical::Request::new(Operation::Read, path, instance.storage.clone());
        let in_flight = Arc::new(InFlight::default());
        let outcome = run_to_completion(instance.clone(), read("boom"), &in_flight)
            .await
            .expect("the call itself completes");
        assert_eq!(
            outcome.unwrap_err(),
            logical::LogicalError::internal("internal error")
        );
        // The process and the backend still serve the next requests, the same one included.
        let ok = run_to_completion(instance.clone(), read("ok"), &in_flight)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ok.data.unwrap()["fine"], true);
        let again = run_to_completion(instance.clone(), read("boom"), &in_flight)
            .await
            .unwrap();
        assert!(again.is_err());
        // Every call, the panicked ones too, has ended.
        tokio::time::timeout(std::time::Duration::from_secs(5), in_flight.idle())
            .await
            .expect("no call left under way");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_handler_finishes_after_its_call_is_cancelled() {
        let go_on = Arc::new(tokio::sync::Notify::new());
        let storage: Arc<dyn Storage> = Arc::new(InmemStorage::new());
        let waiting = go_on.clone();
        let backend = BackendBuilder::new("test")
            .path(Path::new("slow").operation(
                Operation::Read,
                OperationHandler::new(
                    handler(move |req, _| {
                        let waiting = waiting.clone();
                        async move {
                            waiting.notified().await;
                            let done = crate::logical::StorageEntry::json(
                                "done",
                                &serde_json::json!(true),
                            )?;
                            req.storage.put(done).await?;
                            Ok(None)
                        }
                    }),
                    "waits",
                    "slow",
                ),
            ))
            .build(&crate::logical::BackendConfig {
                storage: storage.clone(),
                ..crate::testing::backend_config(
                    Arc::new(crate::testing::TestSystemView::default()),
                )
            })
            .unwrap();
        let instance = Arc::new(Instance {
            backend: Arc::new(backend),
            storage: storage.clone(),
        });
        let in_flight = Arc::new(InFlight::default());
        let read = logical::Request::new(Operation::Read, "slow", storage.clone());
        let mut call = Box::pin(run_to_completion(instance, read, &in_flight));
        assert!(futures::poll!(&mut call).is_pending(), "the handler waits");
        // The host cancels the call; the handler, now a task of its own, runs on.
        drop(call);
        go_on.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(5), in_flight.idle())
            .await
            .expect("the handler finished");
        assert!(storage.get("done").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn idle_waits_for_the_calls_under_way() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.idle().await;
        let call = in_flight.enter();
        let second = in_flight.enter();
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.idle().await })
        };
        drop(call);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one call is still under way");
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("idle once both ended")
            .unwrap();
    }
}
