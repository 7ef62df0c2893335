//! Routes each gRPC call to its service by the first segment of its path
//! (`/<package>.<Service>/<Method>`). tonic's own router is built on axum; this one keeps a
//! plugin free of an HTTP framework.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

type GrpcService = BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The gRPC services of the plugin, by name.
#[derive(Clone, Default)]
pub(crate) struct Services {
    routes: Vec<(&'static str, GrpcService)>,
}

impl Services {
    /// Adds `svc` under its gRPC service name.
    pub fn add<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.push((S::NAME, BoxCloneService::new(svc)));
        self
    }
}

impl Service<http::Request<Body>> for Services {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let name = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match self.routes.iter().find(|(n, _)| *n == name) {
            Some((_, svc)) => Box::pin(svc.clone().oneshot(req)),
            None => {
                let status = tonic::Status::unimplemented(format!("unknown service {name:?}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Named;

    impl NamedService for Named {
        const NAME: &'static str = "test.Echo";
    }

    impl Service<http::Request<Body>> for Named {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
            Box::pin(async { Ok(http::Response::new(Body::empty())) })
        }
    }

    fn call(path: &str) -> http::Response<Body> {
        let mut services = Services::default().add(Named);
        let req = http::Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap();
        futures::executor::block_on(services.call(req)).unwrap()
    }

    #[test]
    fn routes_by_service_name() {
        let hit = call("/test.Echo/Say");
        assert!(hit.headers().get("grpc-status").is_none());
        let miss = call("/test.Other/Say");
        assert_eq!(miss.headers()["grpc-status"], "12", "Unimplemented");
    }
}
