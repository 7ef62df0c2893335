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

/// How often the process checks that its host is still its parent (the fallback when its
/// standard streams are not pipes to the host).
const HOST_CHECK_INTERVAL: Duration = Duration::from_millis(200);

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

/// The host launched this process, stays its parent and reads its standard output and
/// error (go-plugin's pipes) while it lives. If the host is killed (SIGKILL: no shutdown
/// call, no signal here), the pipes lose their reader at once and the process is
/// re-parented; either way the process exits at once, as a Go plugin dies of SIGPIPE on its
/// next log line. It must not go on: whatever it would still create in Azure lands after the
/// next active node has rolled the work back, with nothing left to cover it. Calls already
/// sent may still land; the rollback waits for them before it forgets an entry.
async fn exit_when_host_dies(
    in_flight: Arc<server::InFlight>,
    socket_path: Option<std::path::PathBuf>,
) {
    let host = std::os::unix::process::parent_id();
    let reparented = async {
        let mut tick = tokio::time::interval(HOST_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            if std::os::unix::process::parent_id() != host {
                return "the host process is gone (re-parented)";
            }
        }
    };
    tokio::select! {
        why = reparented => tracing::warn!(host_pid = host, "{why}; exiting"),
        () = host_pipes_closed() => tracing::warn!(host_pid = host, "the host closed its end of the plugin's output pipes; exiting"),
    }
    let under_way = in_flight.count();
    if under_way > 0 {
        tracing::warn!(
            calls = under_way,
            "calls under way are abandoned; the next active node rolls their work back"
        );
    }
    if let Some(path) = socket_path {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(0);
}

/// Returns once the reader of this process's standard output or error (a pipe to the host)
/// is gone; never, when neither is a pipe (a file, a terminal: nothing tells then).
async fn host_pipes_closed() {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let watches: Vec<_> = [stdout.as_fd(), stderr.as_fd()]
        .into_iter()
        .filter_map(|fd| reader_gone(fd).ok().flatten())
        .collect();
    if watches.is_empty() {
        return futures::future::pending().await;
    }
    futures::future::select_all(watches).await;
}

/// A future that completes when the pipe `fd` writes to has lost its reader (epoll reports
/// an error on the write end then); `None` when `fd` is not a pipe. The watch only waits for
/// that event: it never writes, and leaves the descriptor's flags as they are.
fn reader_gone(
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Option<futures::future::BoxFuture<'static, ()>>> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(fd.try_clone_to_owned()?);
    if !file.metadata()?.file_type().is_fifo() {
        return Ok(None);
    }
    let pipe = tokio::net::unix::pipe::Sender::from_file_unchecked(file)?;
    Ok(Some(Box::pin(async move {
        match pipe.ready(tokio::io::Interest::ERROR).await {
            Ok(ready) if ready.is_error() || ready.is_write_closed() => {}
            // The reactor is shutting down: nothing more to watch.
            _ => futures::future::pending().await,
        }
    })))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_watch_on_an_output_pipe_fires_when_its_reader_goes() {
        use std::os::fd::AsFd;
        let (writer, reader) = tokio::net::unix::pipe::pipe().expect("pipe");
        let gone = reader_gone(writer.as_fd())
            .expect("watch")
            .expect("a pipe is watched");
        tokio::pin!(gone);
        // The reader is there: nothing yet.
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut gone)
            .await
            .is_err());
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the watch fired once the reader was gone");

        // A regular file is not watched (nothing would ever tell).
        let file = tempfile::tempfile().expect("temp file");
        assert!(reader_gone(file.as_fd()).expect("metadata").is_none());
    }
}
