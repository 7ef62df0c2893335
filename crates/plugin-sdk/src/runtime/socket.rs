//! The host's connection on the Unix socket, watched for reads only.
//!
//! A Unix socket tells its writer that there is room again every time the peer reads from
//! it. Registered for writes as well as reads (what `tokio::net::UnixStream` does), the
//! plugin's thread is woken once per response the host reads, for nothing: the socket's
//! buffer is almost never full. [`HostSocket`] registers the socket for reads only and
//! writes straight to it; only a write that finds the buffer full waits for room, through
//! a second descriptor of the same socket registered for writes while it waits.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix socket, woken by the reactor only when there is something to read (or
/// while a write waits for room).
pub(crate) struct HostSocket {
    read: AsyncFd<UnixStream>,
    /// Registered for writes only while a write waits for room.
    write: Option<AsyncFd<UnixStream>>,
}

impl HostSocket {
    /// Takes over a connection accepted by tokio's listener.
    pub(crate) fn new(stream: tokio::net::UnixStream) -> io::Result<Self> {
        // Non-blocking already; `into_std` removes it from the reactor.
        let stream = stream.into_std()?;
        Ok(Self {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    fn write_waiter(&mut self) -> io::Result<&AsyncFd<UnixStream>> {
        match &mut self.write {
            Some(waiter) => Ok(waiter),
            slot @ None => {
                // Registering reports the socket's state at once: room freed since the
                // failed write is not missed.
                let dup = self.read.get_ref().try_clone()?;
                Ok(slot.insert(register(dup, Interest::WRITABLE)?))
            }
        }
    }
}

/// Registers `socket` with the reactor for `interest`.
fn register(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the `UnixStream`, which owns its descriptor: the descriptor
    // stays open, and the same, until the `AsyncFd` is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

impl AsyncRead for HostSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match guard.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is drained (as tokio's own streams
                    // assume), so the next read waits for the reactor instead of trying.
                    if n > 0 && n < wanted {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for HostSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.read.get_ref().write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => {
                self.write = None;
                return Poll::Ready(done);
            }
        }
        loop {
            let waiter = self.write_waiter()?;
            let mut guard = ready!(waiter.poll_write_ready(cx))?;
            let attempt = guard.try_io(|socket| socket.get_ref().write(buf));
            drop(guard);
            if let Ok(done) = attempt {
                // Room again: stop listening for it.
                self.write = None;
                return Poll::Ready(done);
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "current_thread")]
    async fn reads_and_writes_including_past_a_full_buffer() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = HostSocket::new(ours).unwrap();
        let mut theirs = theirs;

        theirs.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // Far more than a socket buffer holds: the writer has to wait for room.
        let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.unwrap();
            all
        });
        ours.write_all(&big).await.unwrap();
        assert!(
            ours.write.is_none(),
            "the write waiter is gone once there is room"
        );
        ours.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_after_a_drained_socket_waits_for_more() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut ours = HostSocket::new(ours).unwrap();
        theirs.write_all(b"a").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(ours.read(&mut buf).await.unwrap(), 1);
        let later = tokio::spawn(async move {
            tokio::task::yield_now().await;
            theirs.write_all(b"bc").await.unwrap();
            theirs
        });
        assert_eq!(ours.read(&mut buf).await.unwrap(), 2);
        assert_eq!(&buf[..2], b"bc");
        drop(later.await.unwrap());
        assert_eq!(ours.read(&mut buf).await.unwrap(), 0, "end of stream");
    }
}
