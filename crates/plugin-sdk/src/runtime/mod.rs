//! The plugin runtime: go-plugin's handshake with AutoMTLS, the gRPC services the host
//! expects, and the callbacks into the host's storage and system view through the broker.
//! It serves any [`crate::logical::Factory`] and knows nothing of Azure.

mod broker;
mod convert;
mod grpc;
mod handshake;
mod http2;
mod logging;
pub mod proto;
mod server;
mod socket;
mod storage;
mod system_view;
mod tls;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;

pub use handshake::{HandshakeError, HostEnv, COOKIE_KEY, COOKIE_VALUE};
pub use logging::HclogJson;

use crate::logical::Factory;
use broker::{AsyncStream, Broker};
use grpc::Methods;
use handshake::Listener;
use tls::TlsIdentity;

/// How long the process waits for the host's first authenticated connection before it gives
/// up (hosts do not always kill a plugin whose connection failed).
const FIRST_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// How often the process checks that its host is still alive.
const HOST_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long calls under way may run on once the host is gone (their own deadlines are
/// shorter: a request finishes or undoes its work well within this).
const DRAIN_BOUND: Duration = Duration::from_secs(90);

/// How long a shutdown the host asked for waits for the connections to say goodbye.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);
/// Work the plugin runs once, off the request path.
type ReadyHook = Box<dyn FnOnce() + Send + 'static>;

/// Options of [`serve_with`].
#[derive(Default)]
pub struct ServeOptions {
    on_ready: Option<ReadyHook>,
    log_targets: Vec<String>,
}

impl ServeOptions {
    /// Logs of `target` (a crate name such as `my_plugin`) go to the host at the server's
    /// log level; other crates log only warnings and errors.
    pub fn log_target(mut self, target: impl Into<String>) -> Self {
        self.log_targets.push(target.into());
        self
    }

    /// Runs `hook` on a blocking thread once the plugin has announced itself to the host,
    /// concurrently with the host's first calls: for one-off work that would otherwise land
    /// on the first request (warming up a TLS library's random generator, for example).
    pub fn on_ready(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_ready = Some(Box::new(hook));
        self
    }
}

/// Serves `factory` to the host that launched this process; returns the exit code.
///
/// `version` is what the plugin reports to the host (`v<semver>`).
pub fn serve(factory: Arc<dyn Factory>, version: &str) -> ExitCode {
    serve_with(factory, version, ServeOptions::default())
}

/// [`serve`] with options.
pub fn serve_with(factory: Arc<dyn Factory>, version: &str, options: ServeOptions) -> ExitCode {
    logging::init(
        &logging::level_from_env(|k| std::env::var(k).ok()),
        &options.log_targets,
    );
    install_panic_hook();
    let host = match HostEnv::from_lookup(|k| std::env::var(k).ok()) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread: requests are short and I/O-bound, and a single thread keeps each gRPC
    // round trip on one core (no hand-off between workers) and the process small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(host, factory, version.to_string(), options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "plugin stopped");
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

async fn run(
    host: HostEnv,
    factory: Arc<dyn Factory>,
    version: String,
    options: ServeOptions,
) -> Result<(), RunError> {
    ignore_sigint();
    let identity = TlsIdentity::generate(&host.client_cert_pem)?;
    let acceptor = TlsAcceptor::from(Arc::new(identity.server_config()?));
    let client_tls = Arc::new(identity.client_config()?);
    let listener = Listener::bind(&host).await?;

    let line = handshake::handshake_line(&listener, &identity.cert_der)?;
    let socket_path = listener.socket_path();

    let shutdown = Arc::new(Notify::new());
    let broker = Broker::new();
    let backends = Arc::new(server::Backends::new(factory, broker.clone(), client_tls));
    tokio::spawn(exit_when_host_dies(
        backends.in_flight.clone(),
        socket_path.clone(),
    ));
    let methods = Arc::new(server::methods(backends, broker, shutdown.clone(), version));

    let connected = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(accept_loop(
        listener_stream(listener),
        acceptor,
        methods,
        stop_rx,
        connected.clone(),
    ));
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_CONNECTION_TIMEOUT).await;
        if !connected.load(Ordering::SeqCst) {
            tracing::error!("the host never connected; exiting");
            std::process::exit(1);
        }
    });

    handshake::announce(&line)?;
    tracing::debug!("plugin ready");
    if let Some(hook) = options.on_ready {
        tokio::task::spawn_blocking(hook);
    }

    shutdown.notified().await;
    // Each connection answers what it has, says goodbye and ends; the accept loop too.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_BOUND, stop_tx.closed()).await;
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The host launched this process and stays its parent while it lives. If the host is
/// killed (SIGKILL: no shutdown call, no signal here), the process is re-parented; it then
/// lets the calls under way finish (each within its own deadline, undoing what it made when
/// it fails) and exits, instead of lingering with nobody to serve.
async fn exit_when_host_dies(
    in_flight: Arc<server::InFlight>,
    socket_path: Option<std::path::PathBuf>,
) {
    let host = std::os::unix::process::parent_id();
    let mut tick = tokio::time::interval(HOST_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != host {
            break;
        }
    }
    tracing::warn!(
        host_pid = host,
        "the host process is gone; finishing the calls under way, then exiting"
    );
    if tokio::time::timeout(DRAIN_BOUND, in_flight.idle())
        .await
        .is_err()
    {
        tracing::error!("calls still under way after the drain bound; exiting anyway");
    }
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(0);
}

/// Logs a panic's location but never its message, which may hold request data (secrets);
/// the request boundary turns the panic into that request's error.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = %location, "panic (message withheld)");
    }));
}

/// Ctrl-C in the operator's terminal reaches the whole process group; the host stops its
/// plugins itself, so SIGINT is ignored.
fn ignore_sigint() {
    if let Ok(mut sigint) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        tokio::spawn(async move {
            while sigint.recv().await.is_some() {
                tracing::debug!("ignoring SIGINT");
            }
        });
    }
}

type Accepted = std::io::Result<Box<dyn AsyncStream>>;

/// Turns the listener into a stream of raw connections.
fn listener_stream(listener: Listener) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(16);
    match listener {
        Listener::Unix { listener: l, .. } => {
            tokio::spawn(async move {
                loop {
                    let conn = l.accept().await.and_then(|(s, _)| {
                        let socket = socket::HostSocket::new(s)?;
                        Ok(Box::new(buffered(socket)) as Box<dyn AsyncStream>)
                    });
                    if tx.send(conn).await.is_err() {
                        break;
                    }
                }
            });
        }
        Listener::Tcp(l) => {
            tokio::spawn(async move {
                loop {
                    let conn = l.accept().await.and_then(|(s, _)| {
                        s.set_nodelay(true)?;
                        Ok(Box::new(buffered(s)) as Box<dyn AsyncStream>)
                    });
                    if tx.send(conn).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    rx
}

/// Buffers writes below TLS, so that the records of one HTTP/2 flush (headers, data,
/// trailers) leave in one system call instead of one each.
pub(crate) fn buffered<S: tokio::io::AsyncRead + AsyncWrite>(stream: S) -> tokio::io::BufWriter<S> {
    tokio::io::BufWriter::with_capacity(16 * 1024, stream)
}

/// Runs the TLS handshake of each connection in its own task, then serves gRPC on it until
/// the host closes it or the plugin stops.
async fn accept_loop(
    mut raw: mpsc::Receiver<Accepted>,
    acceptor: TlsAcceptor,
    methods: Arc<Methods>,
    mut stop: watch::Receiver<bool>,
    connected: Arc<AtomicBool>,
) {
    loop {
        let conn = tokio::select! {
            conn = raw.recv() => conn,
            _ = stop.changed() => None,
        };
        let Some(conn) = conn else {
            return;
        };
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let methods = methods.clone();
        let stop = stop.clone();
        let connected = connected.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::warn!(error = %e, "TLS handshake with the host failed");
                    return;
                }
            };
            connected.store(true, Ordering::SeqCst);
            if let Err(e) = http2::serve(tls, &methods, stop).await {
                tracing::warn!(error = %e, "the host's connection ended with an error");
            }
        });
    }
}
