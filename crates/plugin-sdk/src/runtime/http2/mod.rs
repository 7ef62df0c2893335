//! The server side of the host's HTTP/2 connection, for gRPC.
//!
//! The host (go-plugin's gRPC client in OpenBao or Vault) opens one connection and sends
//! every call on it; a read through a plugin is two unary calls. A general HTTP/2 server
//! (hyper under tonic) spends most of a quick call on machinery this connection does not
//! need: a task per call, boxed service layers, header maps, buffered body channels, a flush
//! per frame. This one is a single task per connection that
//!
//! * reads whatever the host sent and handles every complete frame,
//! * runs each call's future once, right there: a call that completes at once (a read
//!   answered from the cache, OpenBao's `resolve-path`) is answered in the same turn, and
//!   only a call that has to wait becomes a task (which reports back through a channel,
//!   and which the host's `RST_STREAM` aborts, exactly as dropping the call did under
//!   tonic),
//! * then writes all it has to say (acknowledgements, headers, messages, trailers) in one
//!   write.
//!
//! It implements what RFC 9113 asks of a server talking to one trusted, authenticated
//! client: SETTINGS, PING, flow control in both directions (replies larger than the host's
//! windows wait for its `WINDOW_UPDATE`), header blocks split over CONTINUATION, padding,
//! RST_STREAM and GOAWAY. It never pushes and never indexes the headers it sends.
//!
//! One thing it does for the host's sake: grpc-go's client (go-plugin leaves its windows
//! dynamic) estimates the connection's bandwidth-delay product by sending a PING whenever a
//! DATA frame arrives while none of its pings is outstanding, and sends a `WINDOW_UPDATE`
//! with it. Replies are small, so the estimate never grows and every reply costs both sides
//! that extra exchange, for the life of the connection. The estimator stops for good once
//! its estimate reaches its limit (16 MiB), which takes one sample of half that many bytes
//! received before the PING's acknowledgement. So, the first time the host pings while the
//! broker's stream is open, this side sends that much padding on the stream (DATA frames
//! that carry no message, RFC 9113 §6.1) and acknowledges the PING after it: a one-off
//! cost of about 8.5 MB over the loopback socket at start, after which the host no longer
//! pings after each reply (see `docs/benchmarks/notes.md`). A host that never pings, or
//! does not estimate, gets no padding.

mod frame;

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tonic::Status;

use super::grpc::{self, CallFuture, InboundFn, Method, Methods};
use frame::{Head, Reason};

/// The stream and connection windows this side announces: a request of up to this size
/// arrives without waiting for an acknowledgement.
const RECV_WINDOW: u32 = 1 << 20;
/// The largest request message accepted.
const MAX_MESSAGE: usize = 256 << 20;
/// The largest header block accepted (HEADERS and its CONTINUATION frames).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Padding sent once to settle the host's bandwidth estimator: grpc-go sets its estimate to
/// twice the bytes of a sample, capped at 16 MiB, after which it stops sampling.
const ESTIMATOR_FILL: usize = 8_500_000;
/// The flow-controlled length of one padding frame: the pad-length byte and 255 bytes of
/// padding (padding is at most 255 bytes a frame, and a frame of padding carries no data).
const PADDING_FRAME: usize = 256;

/// The once-a-connection padding for the host's bandwidth estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Not started: the host has not pinged yet while a stream could carry it.
    Waiting,
    /// Padding still to send on the stream; PING acknowledgements wait until it is sent.
    Running {
        stream: u32,
        left: usize,
        since: std::time::Instant,
    },
    Finished,
}

#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the host did not open the connection with the HTTP/2 preface")]
    Preface,
    #[error("HTTP/2 protocol error ({0:?}): {1}")]
    Protocol(Reason, &'static str),
}

/// A call that had to wait, finished.
struct Done {
    stream: u32,
    outcome: Result<Bytes, Status>,
}

enum Kind {
    /// A unary call: the request's bytes until the host ends its side.
    Unary(grpc::UnaryFn),
    /// A stream the host keeps open; its messages go to the function.
    Inbound(InboundFn),
    /// Answered already (an error); whatever else arrives on it is dropped.
    Answered,
}

struct Stream {
    kind: Kind,
    multiplex_id: Option<String>,
    recv: BytesMut,
    recv_closed: bool,
    recv_unacked: u32,
    send_window: i64,
    headers_sent: bool,
    /// Reply bytes waiting for room in the host's windows.
    pending: VecDeque<Bytes>,
    /// The trailers' header block, sent once `pending` is empty.
    trailers: Option<BytesMut>,
    sent_end: bool,
    task: Option<AbortHandle>,
}

/// The connection's state; frames in, bytes out (in `out`).
struct Conn<'m> {
    methods: &'m Methods,
    decoder: fluke_hpack::Decoder<'static>,
    out: BytesMut,
    streams: HashMap<u32, Stream>,
    last_stream: u32,
    /// PING acknowledgements of this turn, written after everything else of the turn. grpc-go's
    /// client sends a bandwidth-estimation PING when a DATA frame arrives and none of its
    /// pings is outstanding: an acknowledgement that reaches it after the reply it travels
    /// with spares the host (and this side) the next PING, its WINDOW_UPDATE and their reads.
    acks: BytesMut,
    fill: Fill,
    /// PING acknowledgements held while the padding goes out.
    held_acks: BytesMut,
    /// A header block still waiting for its CONTINUATION frames: stream, END_STREAM, block.
    continuation: Option<(u32, bool, BytesMut)>,
    send_window: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    recv_unacked: u32,
    done: mpsc::UnboundedSender<Done>,
    closing: Option<Http2Error>,
}

/// Serves gRPC on one connection until the host closes it, a protocol error, or
/// `shutdown` turns true.
pub async fn serve<IO>(
    mut io: IO,
    methods: &Methods,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Http2Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbuf = BytesMut::with_capacity(32 * 1024);
    while inbuf.len() < frame::PREFACE.len() {
        if io.read_buf(&mut inbuf).await? == 0 {
            return Ok(());
        }
    }
    if &inbuf[..frame::PREFACE.len()] != frame::PREFACE {
        return Err(Http2Error::Preface);
    }
    inbuf.advance(frame::PREFACE.len());

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut conn = Conn::new(methods, done_tx);
    conn.start();
    // One future for the whole connection (not one per turn).
    let stop = async {
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                return;
            }
        }
    };
    tokio::pin!(stop);
    let outcome = loop {
        std::future::poll_fn(|cx| {
            conn.process(&mut inbuf, cx);
            Poll::Ready(())
        })
        .await;
        while let Ok(done) = done_rx.try_recv() {
            conn.complete(done);
        }
        conn.fill_more();
        if !conn.acks.is_empty() {
            conn.out.extend_from_slice(&conn.acks);
            conn.acks.clear();
        }
        if !conn.out.is_empty() {
            let written = async {
                io.write_all(&conn.out).await?;
                io.flush().await
            };
            if let Err(e) = written.await {
                break Err(e.into());
            }
            conn.out.clear();
        }
        if let Some(e) = conn.closing.take() {
            break Err(e);
        }
        tokio::select! {
            biased;
            read = io.read_buf(&mut inbuf) => match read {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e.into()),
            },
            Some(done) = done_rx.recv() => conn.complete(done),
            () = &mut stop => {
                frame::put_goaway(&mut conn.out, conn.last_stream, Reason::NoError);
                let _ = io.write_all(&conn.out).await;
                let _ = io.flush().await;
                break Ok(());
            }
        }
    };
    conn.abort_calls();
    outcome
}

impl<'m> Conn<'m> {
    fn new(methods: &'m Methods, done: mpsc::UnboundedSender<Done>) -> Self {
        Self {
            methods,
            decoder: fluke_hpack::Decoder::new(),
            out: BytesMut::with_capacity(16 * 1024),
            streams: HashMap::new(),
            last_stream: 0,
            acks: BytesMut::new(),
            fill: Fill::Waiting,
            held_acks: BytesMut::new(),
            continuation: None,
            send_window: frame::DEFAULT_WINDOW,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            recv_unacked: 0,
            done,
            closing: None,
        }
    }

    /// The server's preface: its settings, and the connection window raised to match.
    fn start(&mut self) {
        frame::put_settings(
            &mut self.out,
            &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, RECV_WINDOW)],
        );
        frame::put_window_update(&mut self.out, 0, RECV_WINDOW - frame::DEFAULT_WINDOW as u32);
    }

    fn fail(&mut self, reason: Reason, why: &'static str) {
        if self.closing.is_none() {
            frame::put_goaway(&mut self.out, self.last_stream, reason);
            self.closing = Some(Http2Error::Protocol(reason, why));
        }
    }

    /// Handles every complete frame in `inbuf`.
    fn process(&mut self, inbuf: &mut BytesMut, cx: &mut Context<'_>) {
        while self.closing.is_none() && inbuf.len() >= frame::HEADER_LEN {
            let head = Head::parse(inbuf);
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE {
                self.fail(
                    Reason::FrameSize,
                    "frame larger than the maximum frame size",
                );
                return;
            }
            if inbuf.len() < frame::HEADER_LEN + head.len {
                inbuf.reserve(frame::HEADER_LEN + head.len - inbuf.len());
                return;
            }
            inbuf.advance(frame::HEADER_LEN);
            let payload = inbuf.split_to(head.len).freeze();
            self.frame(head, payload, cx);
        }
    }

    fn frame(&mut self, head: Head, payload: Bytes, cx: &mut Context<'_>) {
        if self.continuation.is_some() && head.kind != frame::CONTINUATION {
            return self.fail(Reason::Protocol, "header block interrupted");
        }
        match head.kind {
            frame::DATA => self.data(head, payload, cx),
            frame::HEADERS => self.headers(head, payload, cx),
            frame::CONTINUATION => self.continuation(head, payload, cx),
            frame::SETTINGS => self.settings(head, &payload),
            frame::PING => {
                if head.stream != 0 || payload.len() != 8 {
                    return self.fail(Reason::Protocol, "malformed PING");
                }
                if !head.has(frame::ACK) {
                    self.ping(&payload);
                }
            }
            frame::WINDOW_UPDATE => self.window_update(head, &payload),
            frame::RST_STREAM => {
                if let Some(stream) = self.streams.remove(&head.stream) {
                    if let Some(task) = stream.task {
                        task.abort();
                    }
                }
            }
            frame::GOAWAY => {
                // The host opens no new calls; the ones under way finish, then it closes.
            }
            frame::PUSH_PROMISE => self.fail(Reason::Protocol, "a client cannot push"),
            // PRIORITY is advisory; unknown frame types are ignored (RFC 9113 §4.1).
            _ => {}
        }
    }

    /// A PING from the host: acknowledged after this turn's replies, or after the padding
    /// for its bandwidth estimator (which its first PING starts, when a stream can carry it).
    fn ping(&mut self, payload: &[u8]) {
        if self.fill == Fill::Waiting {
            let carrier = self.streams.iter().find_map(|(id, s)| {
                (matches!(s.kind, Kind::Inbound(_)) && s.headers_sent && !s.sent_end).then_some(*id)
            });
            if let Some(stream) = carrier {
                self.fill = Fill::Running {
                    stream,
                    left: ESTIMATOR_FILL,
                    since: std::time::Instant::now(),
                };
            }
        }
        match self.fill {
            Fill::Running { .. } => frame::put_ping_ack(&mut self.held_acks, payload),
            _ => frame::put_ping_ack(&mut self.acks, payload),
        }
    }

    /// Sends as much of the estimator's padding as the windows leave after the replies;
    /// once it is all sent (or its stream is gone), the held acknowledgements follow it.
    fn fill_more(&mut self) {
        let Fill::Running {
            stream: id,
            left,
            since,
        } = &mut self.fill
        else {
            return;
        };
        match self.streams.get_mut(id).filter(|s| !s.sent_end) {
            Some(stream) => {
                while *left > 0 && self.send_window.min(stream.send_window) >= PADDING_FRAME as i64
                {
                    frame::put_padding(&mut self.out, *id, PADDING_FRAME);
                    self.send_window -= PADDING_FRAME as i64;
                    stream.send_window -= PADDING_FRAME as i64;
                    *left = left.saturating_sub(PADDING_FRAME);
                }
            }
            None => *left = 0,
        }
        if *left > 0 {
            return;
        }
        tracing::debug!(
            bytes = %ESTIMATOR_FILL,
            elapsed_ms = since.elapsed().as_millis() as u64,
            "padding for the host's bandwidth estimator sent"
        );
        self.fill = Fill::Finished;
        self.acks.extend_from_slice(&self.held_acks);
        self.held_acks = BytesMut::new();
    }

    fn settings(&mut self, head: Head, payload: &[u8]) {
        if head.stream != 0 {
            return self.fail(Reason::Protocol, "SETTINGS on a stream");
        }
        if head.has(frame::ACK) {
            return;
        }
        if payload.len() % 6 != 0 {
            return self.fail(Reason::FrameSize, "SETTINGS length not a multiple of 6");
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > frame::MAX_WINDOW {
                        return self.fail(Reason::FlowControl, "initial window too large");
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return self.fail(Reason::Protocol, "invalid maximum frame size");
                    }
                    self.peer_max_frame = value as usize;
                }
                // HEADER_TABLE_SIZE (0x1): this side never indexes what it sends. Others do
                // not change what this server does.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.out);
        self.send_all();
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) {
        if payload.len() != 4 {
            return self.fail(Reason::FrameSize, "WINDOW_UPDATE length");
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if head.stream == 0 {
            if increment == 0 {
                return self.fail(Reason::Protocol, "zero window increment");
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return self.fail(Reason::FlowControl, "connection window overflow");
            }
            self.send_all();
        } else if let Some(stream) = self.streams.get_mut(&head.stream) {
            stream.send_window += increment;
            if increment == 0 || stream.send_window > frame::MAX_WINDOW {
                self.reset(head.stream, Reason::FlowControl);
                return;
            }
            self.send(head.stream);
        }
    }

    fn headers(&mut self, head: Head, payload: Bytes, cx: &mut Context<'_>) {
        if head.stream == 0 || head.stream % 2 == 0 {
            return self.fail(Reason::Protocol, "HEADERS on an invalid stream");
        }
        let Some(block) = frame::unpadded(&head, payload) else {
            return self.fail(Reason::Protocol, "padding longer than the frame");
        };
        let block = BytesMut::from(&block[..]);
        if head.has(frame::END_HEADERS) {
            self.header_block(head.stream, head.has(frame::END_STREAM), &block, cx);
        } else {
            self.continuation = Some((head.stream, head.has(frame::END_STREAM), block));
        }
    }

    fn continuation(&mut self, head: Head, payload: Bytes, cx: &mut Context<'_>) {
        let Some((stream, end_stream, mut block)) = self.continuation.take() else {
            return self.fail(Reason::Protocol, "CONTINUATION without HEADERS");
        };
        if head.stream != stream {
            return self.fail(Reason::Protocol, "CONTINUATION on another stream");
        }
        block.extend_from_slice(&payload);
        if block.len() > MAX_HEADER_BLOCK {
            return self.fail(Reason::Protocol, "header block too large");
        }
        if head.has(frame::END_HEADERS) {
            self.header_block(stream, end_stream, &block, cx);
        } else {
            self.continuation = Some((stream, end_stream, block));
        }
    }

    /// A complete header block: a new call, or (on a stream already open) the host's
    /// trailers, which end its side.
    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8], cx: &mut Context<'_>) {
        let methods = self.methods;
        // The method, or the path no method has ("" without a path).
        let mut method: Result<Method, String> = Err(String::new());
        let mut multiplex_id = None;
        let mut encoding = None;
        // Every block is decoded, even one whose call is refused: the host's encoder
        // and this decoder share a table.
        let decoded = self
            .decoder
            .decode_with_cb(block, |name, value| match &name[..] {
                b":path" => {
                    let known = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|p| methods.get(p));
                    method = known
                        .cloned()
                        .ok_or_else(|| String::from_utf8_lossy(&value).into_owned());
                }
                n if n == grpc::MULTIPLEX_ID => {
                    multiplex_id = Some(String::from_utf8_lossy(&value).into_owned())
                }
                b"grpc-encoding" => encoding = Some(value.into_owned()),
                _ => {}
            });
        if decoded.is_err() {
            return self.fail(Reason::Compression, "undecodable header block");
        }
        if self.streams.contains_key(&id) {
            if end_stream {
                self.end_of_request(id, cx);
            }
            return;
        }
        if id <= self.last_stream {
            // A stream this side already finished or reset: nothing to do.
            return;
        }
        self.last_stream = id;
        let mut stream = Stream {
            kind: Kind::Answered,
            multiplex_id,
            recv: BytesMut::new(),
            recv_closed: end_stream,
            recv_unacked: 0,
            send_window: self.peer_initial_window,
            headers_sent: false,
            pending: VecDeque::new(),
            trailers: None,
            sent_end: false,
            task: None,
        };
        let refused = match (&method, encoding.as_deref()) {
            (Err(path), _) => Some(Status::unimplemented(format!("unknown method {path:?}"))),
            (Ok(_), Some(e)) if e != b"identity" => Some(Status::unimplemented(
                "compressed messages are not supported",
            )),
            _ => None,
        };
        match (method, refused) {
            (_, Some(status)) => {
                self.streams.insert(id, stream);
                self.answer(id, Err(status));
            }
            (Ok(Method::Unary(call)), None) => {
                stream.kind = Kind::Unary(call);
                self.streams.insert(id, stream);
                if end_stream {
                    self.end_of_request(id, cx);
                }
            }
            (Ok(Method::Inbound(f)), None) => {
                stream.kind = Kind::Inbound(f);
                self.streams.insert(id, stream);
                self.put_response_headers(id);
            }
            (Err(_), None) => {}
        }
    }

    fn data(&mut self, head: Head, payload: Bytes, cx: &mut Context<'_>) {
        if head.stream == 0 {
            return self.fail(Reason::Protocol, "DATA on stream 0");
        }
        // Flow control counts the whole payload, padding included.
        let len = payload.len() as u32;
        self.recv_unacked += len;
        if self.recv_unacked >= RECV_WINDOW / 2 {
            frame::put_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_unacked = 0;
        }
        let Some(data) = frame::unpadded(&head, payload) else {
            return self.fail(Reason::Protocol, "padding longer than the frame");
        };
        let end_stream = head.has(frame::END_STREAM);
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            return;
        };
        if stream.recv_closed {
            self.reset(head.stream, Reason::StreamClosed);
            return;
        }
        stream.recv_unacked += len;
        if !end_stream && stream.recv_unacked >= RECV_WINDOW / 2 {
            frame::put_window_update(&mut self.out, head.stream, stream.recv_unacked);
            stream.recv_unacked = 0;
        }
        match &stream.kind {
            Kind::Unary(_) => {
                stream.recv.extend_from_slice(&data);
                if stream.recv.len() > MAX_MESSAGE + 5 {
                    stream.kind = Kind::Answered;
                    stream.recv = BytesMut::new();
                    self.answer(
                        head.stream,
                        Err(Status::resource_exhausted("request message too large")),
                    );
                    return;
                }
            }
            Kind::Inbound(f) => {
                let f = f.clone();
                stream.recv.extend_from_slice(&data);
                match grpc::take_messages(&mut stream.recv) {
                    Ok(messages) => messages.into_iter().for_each(|m| f(m)),
                    Err(status) => {
                        stream.kind = Kind::Answered;
                        self.answer(head.stream, Err(status));
                        return;
                    }
                }
            }
            Kind::Answered => {}
        }
        if end_stream {
            self.end_of_request(head.stream, cx);
        }
    }

    /// The host ended its side of stream `id`: a unary call runs now.
    fn end_of_request(&mut self, id: u32, cx: &mut Context<'_>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.recv_closed = true;
        let Kind::Unary(call) = &stream.kind else {
            if stream.sent_end {
                self.streams.remove(&id);
            }
            return;
        };
        let call = call.clone();
        stream.kind = Kind::Answered;
        let request = std::mem::take(&mut stream.recv);
        let multiplex_id = stream.multiplex_id.take();
        let mut future: CallFuture = match grpc::single_message(request) {
            Ok(message) => call(message, multiplex_id),
            Err(status) => return self.answer(id, Err(status)),
        };
        match future.as_mut().poll(cx) {
            Poll::Ready(outcome) => self.answer(id, outcome),
            Poll::Pending => {
                let done = self.done.clone();
                let task = tokio::spawn(async move {
                    let outcome = future.await;
                    let _ = done.send(Done {
                        stream: id,
                        outcome,
                    });
                });
                if let Some(stream) = self.streams.get_mut(&id) {
                    stream.task = Some(task.abort_handle());
                }
            }
        }
    }

    fn complete(&mut self, done: Done) {
        if let Some(stream) = self.streams.get_mut(&done.stream) {
            stream.task = None;
            self.answer(done.stream, done.outcome);
        }
    }

    fn put_response_headers(&mut self, id: u32) {
        let mut block = BytesMut::with_capacity(32);
        put_response_head(&mut block);
        frame::put_headers(&mut self.out, id, &block, false, self.peer_max_frame);
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.headers_sent = true;
        }
    }

    /// Queues a call's reply (a framed message, or an error status) and sends what the
    /// windows allow.
    fn answer(&mut self, id: u32, outcome: Result<Bytes, Status>) {
        let Some(headers_sent) = self.streams.get(&id).map(|s| s.headers_sent) else {
            return;
        };
        let (message, status) = match outcome {
            Ok(message) => (Some(message), None),
            Err(status) => (None, Some(status)),
        };
        let mut trailers = BytesMut::with_capacity(64);
        if !headers_sent {
            if message.is_some() {
                self.put_response_headers(id);
            } else {
                // Trailers-only: one header block carries the status too.
                put_response_head(&mut trailers);
            }
        }
        let code = status.as_ref().map_or(tonic::Code::Ok, Status::code);
        frame::hpack_literal(&mut trailers, b"grpc-status", &grpc::status_code(code));
        if let Some(status) = status.filter(|s| !s.message().is_empty()) {
            frame::hpack_literal(
                &mut trailers,
                b"grpc-message",
                &grpc::encode_grpc_message(status.message()),
            );
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.pending.extend(message);
            stream.headers_sent = true;
            stream.trailers = Some(trailers);
        }
        self.send(id);
    }

    /// Sends as much of stream `id`'s reply as the windows allow, then its trailers.
    fn send(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        while let Some(front) = stream.pending.front_mut() {
            let room = self.send_window.min(stream.send_window).max(0) as usize;
            let n = front.len().min(room).min(self.peer_max_frame);
            if n == 0 && !front.is_empty() {
                return;
            }
            let chunk = front.split_to(n);
            frame::put_data(&mut self.out, id, &chunk, false);
            self.send_window -= n as i64;
            stream.send_window -= n as i64;
            if front.is_empty() {
                stream.pending.pop_front();
            }
        }
        if let Some(trailers) = stream.trailers.take() {
            frame::put_headers(&mut self.out, id, &trailers, true, self.peer_max_frame);
            stream.sent_end = true;
        }
        if stream.sent_end {
            if stream.recv_closed {
                self.streams.remove(&id);
            } else {
                // The reply is complete before the host finished its request (an error
                // answered early): the rest of the request is not wanted.
                frame::put_rst_stream(&mut self.out, id, Reason::NoError);
                self.streams.remove(&id);
            }
        }
    }

    /// Sends what waited for a window (after the host raised one).
    fn send_all(&mut self) {
        let waiting: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send(id);
        }
    }

    fn reset(&mut self, id: u32, reason: Reason) {
        frame::put_rst_stream(&mut self.out, id, reason);
        if let Some(stream) = self.streams.remove(&id) {
            if let Some(task) = stream.task {
                task.abort();
            }
        }
    }

    /// The connection is gone: the calls still waiting are dropped, as the host dropping
    /// them would (a request's handler itself runs on; see `server::run_to_completion`).
    fn abort_calls(&mut self) {
        for (_, stream) in self.streams.drain() {
            if let Some(task) = stream.task {
                task.abort();
            }
        }
    }
}

/// The header fields that open every reply: `:status: 200` (static table entry 8) and
/// `content-type: application/grpc` (its name is static table entry 31).
fn put_response_head(block: &mut BytesMut) {
    frame::hpack_indexed(block, 8);
    frame::hpack_literal_indexed_name(block, 31, b"application/grpc");
}

#[cfg(test)]
mod tests;
