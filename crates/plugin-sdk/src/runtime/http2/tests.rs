//! The server against an independent HTTP/2 and gRPC client (tonic's channel on hyper's
//! `h2`), over an in-memory pipe: the calls the host makes, flow control both ways,
//! statuses, cancellation and the kept-open broker stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

use super::super::grpc::{Call, Methods};
use super::super::proto::pb;
use super::super::proto::pb::backend_client::BackendClient;
use super::super::proto::plugin::grpc_broker_client::GrpcBrokerClient;
use super::super::proto::plugin::ConnInfo;

/// Starts `methods` on one end of a pipe; returns a client channel on the other end and the
/// server's stop switch.
async fn start(methods: Methods) -> (Channel, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(async move {
        super::serve(server_io, &methods, stop_rx)
            .await
            .expect("the connection ends cleanly");
    });
    let client_io = Mutex::new(Some(client_io));
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.lock().unwrap().take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("one connection only"))
            }
        }))
        .await
        .expect("connect");
    (channel, stop_tx, server)
}

fn echo_methods() -> Methods {
    Methods::default()
        .unary(
            "/pb.Backend/InvalidateKey",
            |call: Call<pb::InvalidateKeyArgs>| async move {
                let id = call.multiplex_id.unwrap_or_else(|| "none".into());
                let key = call.message.key;
                if key == "fail" {
                    return Err(Status::permission_denied("refusé: 100%"));
                }
                Err::<pb::Empty, _>(Status::already_exists(format!("{id}:{}", key.len())))
            },
        )
        .unary(
            "/pb.Backend/HandleExistenceCheck",
            |call: Call<pb::HandleExistenceCheckArgs>| async move {
                // Echoes the request's size back in a reply of the same size.
                let n = call
                    .message
                    .request
                    .map(|r| r.path.len())
                    .unwrap_or_default();
                tokio::task::yield_now().await;
                Ok(pb::HandleExistenceCheckReply {
                    check_found: true,
                    exists: n > 0,
                    err: Some(pb::ProtoError {
                        err_type: 0,
                        err_msg: "x".repeat(n),
                        err_code: 0,
                    }),
                })
            },
        )
}

#[tokio::test(flavor = "current_thread")]
async fn unary_calls_carry_metadata_and_statuses() {
    let (channel, _stop, _server) = start(echo_methods()).await;
    let mut client = BackendClient::new(channel);
    let mut req = Request::new(pb::InvalidateKeyArgs { key: "abc".into() });
    req.metadata_mut()
        .insert("multiplex_id", "m-1".parse().unwrap());
    let status = client.invalidate_key(req).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.message(), "m-1:3");
    let status = client
        .invalidate_key(pb::InvalidateKeyArgs { key: "fail".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "refusé: 100%");
    // An unknown method.
    let status = client.cleanup(pb::Empty {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "current_thread")]
async fn large_requests_and_replies_cross_the_flow_control_windows() {
    let (channel, _stop, _server) = start(echo_methods()).await;
    let mut client = BackendClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    for size in [0usize, 1, 70_000, 3 << 20] {
        let reply = client
            .handle_existence_check(pb::HandleExistenceCheckArgs {
                request: Some(pb::Request {
                    path: "p".repeat(size),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.err.unwrap().err_msg.len(), size);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn many_concurrent_calls_that_wait_are_all_answered() {
    let (channel, _stop, _server) = start(echo_methods()).await;
    let calls = (0..200).map(|i| {
        let mut client = BackendClient::new(channel.clone());
        async move {
            client
                .handle_existence_check(pb::HandleExistenceCheckArgs {
                    request: Some(pb::Request {
                        path: "q".repeat(i * 97),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().err.unwrap().err_msg.len())
        }
    });
    let sizes = futures::future::join_all(calls).await;
    for (i, size) in sizes.into_iter().enumerate() {
        assert_eq!(size.unwrap(), i * 97);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_call_is_dropped() {
    let started = Arc::new(Notify::new());
    let dropped = Arc::new(AtomicUsize::new(0));
    struct OnDrop(Arc<AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let (s, d) = (started.clone(), dropped.clone());
    let methods = Methods::default().unary("/pb.Backend/Cleanup", move |_: Call<pb::Empty>| {
        let (s, d) = (s.clone(), d.clone());
        async move {
            let _guard = OnDrop(d);
            s.notify_one();
            futures::future::pending::<()>().await;
            Ok(pb::Empty {})
        }
    });
    let (channel, _stop, _server) = start(methods).await;
    let mut client = BackendClient::new(channel);
    let call = tokio::spawn(async move { client.cleanup(pb::Empty {}).await });
    started.notified().await;
    call.abort();
    tokio::time::timeout(Duration::from_secs(5), async {
        while dropped.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the call's future was dropped after the host reset the stream");
}

#[tokio::test(flavor = "current_thread")]
async fn the_broker_stream_delivers_every_announcement_and_stays_open() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let got = seen.clone();
    let methods = Methods::default()
        .inbound("/plugin.GRPCBroker/StartStream", move |m| {
            let info = <ConnInfo as prost::Message>::decode(m).unwrap();
            got.lock().unwrap().push(info.service_id);
        })
        .unary("/pb.Backend/Cleanup", |_: Call<pb::Empty>| async {
            Ok(pb::Empty {})
        });
    let (channel, stop, server) = start(methods).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut broker = GrpcBrokerClient::new(channel.clone());
    let opened = tokio::spawn(async move {
        broker
            .start_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for id in 1..=3u32 {
        tx.send(ConnInfo {
            service_id: id,
            network: "unix".into(),
            address: format!("/tmp/{id}"),
            knock: None,
        })
        .await
        .unwrap();
    }
    let response = opened.await.unwrap().expect("stream open");
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.lock().unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("announcements");
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
    // Other calls go on beside the open stream.
    BackendClient::new(channel)
        .cleanup(pb::Empty {})
        .await
        .expect("a call beside the stream");
    // Shut down: the connection says goodbye and the server ends.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server ended")
        .unwrap();
    drop(response);
}

/// A raw HTTP/2 peer: writes frames, reads the server's frames back.
struct RawPeer {
    io: tokio::io::DuplexStream,
    buf: bytes::BytesMut,
}

impl RawPeer {
    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame from the server (header, payload); `None` at the end of the stream.
    async fn frame(&mut self) -> Option<(super::frame::Head, bytes::Bytes)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= super::frame::HEADER_LEN {
                let head = super::frame::Head::parse(&self.buf);
                if self.buf.len() >= super::frame::HEADER_LEN + head.len {
                    let mut f = self.buf.split_to(super::frame::HEADER_LEN + head.len);
                    let payload = f.split_off(super::frame::HEADER_LEN).freeze();
                    return Some((head, payload));
                }
            }
            if self.io.read_buf(&mut self.buf).await.unwrap() == 0 {
                return None;
            }
        }
    }

    /// Frames until one of `kind` arrives.
    async fn until(&mut self, kind: u8) -> Option<(super::frame::Head, bytes::Bytes)> {
        while let Some((head, payload)) = self.frame().await {
            if head.kind == kind {
                return Some((head, payload));
            }
        }
        None
    }
}

async fn raw(
    methods: Methods,
) -> (
    RawPeer,
    tokio::task::JoinHandle<Result<(), super::Http2Error>>,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _keep = _stop_tx;
        super::serve(server, &methods, stop_rx).await
    });
    let mut peer = RawPeer {
        io: client,
        buf: bytes::BytesMut::new(),
    };
    let mut hello = bytes::BytesMut::new();
    hello.extend_from_slice(super::frame::PREFACE);
    super::frame::put_settings(&mut hello, &[]);
    peer.send(&hello).await;
    (peer, task)
}

#[tokio::test(flavor = "current_thread")]
async fn a_ping_is_acknowledged_with_its_payload() {
    let (mut peer, _task) = raw(Methods::default()).await;
    let mut ping = bytes::BytesMut::new();
    super::frame::put_head(&mut ping, 8, super::frame::PING, 0, 0);
    ping.extend_from_slice(b"12345678");
    peer.send(&ping).await;
    let (head, payload) =
        tokio::time::timeout(Duration::from_secs(5), peer.until(super::frame::PING))
            .await
            .expect("acknowledged")
            .expect("a frame");
    assert!(head.has(super::frame::ACK));
    assert_eq!(&payload[..], b"12345678");
}

#[tokio::test(flavor = "current_thread")]
async fn protocol_errors_end_the_connection_with_goaway() {
    // A frame larger than the maximum frame size.
    let (mut peer, task) = raw(Methods::default()).await;
    let mut big = bytes::BytesMut::new();
    super::frame::put_head(&mut big, 20_000, super::frame::DATA, 0, 1);
    big.extend_from_slice(&vec![0u8; 20_000]);
    peer.send(&big).await;
    let (_, payload) = peer.until(super::frame::GOAWAY).await.expect("GOAWAY");
    assert_eq!(payload[7], super::frame::Reason::FrameSize as u8);
    assert!(task.await.unwrap().is_err());

    // CONTINUATION without HEADERS.
    let (mut peer, task) = raw(Methods::default()).await;
    let mut cont = bytes::BytesMut::new();
    super::frame::put_head(
        &mut cont,
        1,
        super::frame::CONTINUATION,
        super::frame::END_HEADERS,
        1,
    );
    cont.extend_from_slice(&[0x82]);
    peer.send(&cont).await;
    let (_, payload) = peer.until(super::frame::GOAWAY).await.expect("GOAWAY");
    assert_eq!(payload[7], super::frame::Reason::Protocol as u8);
    assert!(task.await.unwrap().is_err());

    // Garbage instead of the preface.
    let (client, server) = tokio::io::duplex(1024);
    let (_stop, stop_rx) = watch::channel(false);
    let mut client = client;
    tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let outcome = super::serve(server, &Methods::default(), stop_rx).await;
    assert!(matches!(outcome, Err(super::Http2Error::Preface)));
}

#[tokio::test(flavor = "current_thread")]
async fn an_undecodable_header_block_is_a_compression_error() {
    let (mut peer, task) = raw(Methods::default()).await;
    let mut headers = bytes::BytesMut::new();
    // Index 0 is not a valid indexed field (RFC 7541 §6.1).
    super::frame::put_headers(&mut headers, 1, &[0x80], true, 16_384);
    peer.send(&headers).await;
    let (_, payload) = peer.until(super::frame::GOAWAY).await.expect("GOAWAY");
    assert_eq!(payload[7], super::frame::Reason::Compression as u8);
    assert!(task.await.unwrap().is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn a_ping_acknowledgement_follows_the_reply_it_arrived_with() {
    let methods = Methods::default().unary("/pb.Backend/Cleanup", |_: Call<pb::Empty>| async {
        Ok(pb::Empty {})
    });
    let (mut peer, _task) = raw(methods).await;
    // A PING, then a whole call, in one write (what the host sends when its bandwidth
    // estimator and its next call meet).
    let mut batch = bytes::BytesMut::new();
    super::frame::put_head(&mut batch, 8, super::frame::PING, 0, 0);
    batch.extend_from_slice(b"abcdefgh");
    let mut block = bytes::BytesMut::new();
    super::frame::hpack_literal(&mut block, b":path", b"/pb.Backend/Cleanup");
    super::frame::put_headers(&mut batch, 1, &block, false, 16_384);
    let message = super::super::grpc::frame_message(&pb::Empty {});
    super::frame::put_data(&mut batch, 1, &message, true);
    peer.send(&batch).await;
    let mut kinds = Vec::new();
    while let Some((head, _)) = peer.frame().await {
        if head.kind == super::frame::PING {
            kinds.push("ping-ack");
            break;
        }
        if head.stream == 1 {
            kinds.push(match head.kind {
                super::frame::HEADERS if head.has(super::frame::END_STREAM) => "trailers",
                super::frame::HEADERS => "headers",
                super::frame::DATA => "data",
                _ => "other",
            });
        }
    }
    assert_eq!(kinds, ["headers", "data", "trailers", "ping-ack"]);
}

/// The host opening the broker's stream (stream 1), then a PING with `payload`.
fn broker_stream_then_ping(payload: &[u8; 8]) -> bytes::BytesMut {
    use super::frame;
    let mut out = bytes::BytesMut::new();
    let mut block = bytes::BytesMut::new();
    frame::hpack_literal(&mut block, b":path", b"/plugin.GRPCBroker/StartStream");
    frame::put_headers(&mut out, 1, &block, false, 16_384);
    frame::put_head(&mut out, 8, frame::PING, 0, 0);
    out.extend_from_slice(payload);
    out
}

/// The host's first PING while the broker's stream is open gets the estimator's padding
/// first: DATA frames of padding only on that stream, within the windows the peer grants
/// (it grants like grpc-go: a WINDOW_UPDATE per quarter window read), then the
/// acknowledgement. A later PING is acknowledged at once, with no more padding; calls
/// beside the padding are answered.
#[tokio::test(flavor = "current_thread")]
async fn the_first_ping_beside_the_broker_stream_gets_the_estimator_padding_first() {
    use super::frame::{self, Head};
    let methods = Methods::default()
        .inbound("/plugin.GRPCBroker/StartStream", |_| {})
        .unary("/pb.Backend/Cleanup", |_: Call<pb::Empty>| async {
            Ok(pb::Empty {})
        });
    let (mut peer, _task) = raw(methods).await;
    let mut open = broker_stream_then_ping(b"bdp-ping");
    // A call in the same batch: its reply goes out before the padding.
    let mut call = bytes::BytesMut::new();
    frame::hpack_literal(&mut call, b":path", b"/pb.Backend/Cleanup");
    frame::put_headers(&mut open, 3, &call, false, 16_384);
    frame::put_data(
        &mut open,
        3,
        &super::super::grpc::frame_message(&pb::Empty {}),
        true,
    );
    peer.send(&open).await;

    let window = frame::DEFAULT_WINDOW;
    let (mut conn_window, mut stream_window) = (window, window);
    let (mut conn_unacked, mut stream_unacked) = (0i64, 0i64);
    let mut padding = 0usize;
    let mut reply_trailers_at = None;
    let mut first_padding_at = None;
    let mut frames = 0usize;
    let ack = loop {
        let (head, payload): (Head, bytes::Bytes) =
            tokio::time::timeout(Duration::from_secs(20), peer.frame())
                .await
                .expect("the server keeps sending")
                .expect("a frame");
        frames += 1;
        match (head.kind, head.stream) {
            (frame::PING, 0) => break (head, payload),
            (frame::HEADERS, 3) if head.has(frame::END_STREAM) => {
                reply_trailers_at.get_or_insert(frames);
            }
            (frame::DATA, 1) => {
                assert!(head.has(frame::PADDED), "only padding on the broker stream");
                assert!(
                    frame::unpadded(&head, payload).expect("valid").is_empty(),
                    "padding carries no message"
                );
                first_padding_at.get_or_insert(frames);
                padding += head.len;
                let len = head.len as i64;
                conn_window -= len;
                stream_window -= len;
                assert!(conn_window >= 0 && stream_window >= 0, "within the windows");
                conn_unacked += len;
                stream_unacked += len;
                let mut grant = bytes::BytesMut::new();
                if conn_unacked >= window / 4 {
                    frame::put_window_update(&mut grant, 0, conn_unacked as u32);
                    conn_window += conn_unacked;
                    conn_unacked = 0;
                }
                if stream_unacked >= window / 4 {
                    frame::put_window_update(&mut grant, 1, stream_unacked as u32);
                    stream_window += stream_unacked;
                    stream_unacked = 0;
                }
                if !grant.is_empty() {
                    peer.send(&grant).await;
                }
            }
            (frame::DATA, 3) => {
                conn_window -= head.len as i64;
                conn_unacked += head.len as i64;
            }
            _ => {}
        }
    };
    assert!(ack.0.has(frame::ACK));
    assert_eq!(&ack.1[..], b"bdp-ping");
    assert!(
        padding >= 8 * 1024 * 1024,
        "{padding} bytes: at least half of grpc-go's 16 MiB estimate limit"
    );
    assert!(
        reply_trailers_at.expect("the call was answered") < first_padding_at.expect("padding"),
        "the reply went out before the padding"
    );

    // The next PING: acknowledged at once, no more padding.
    let mut ping = bytes::BytesMut::new();
    frame::put_head(&mut ping, 8, frame::PING, 0, 0);
    ping.extend_from_slice(b"second!!");
    peer.send(&ping).await;
    let (head, payload) = peer.frame().await.expect("a frame");
    assert_eq!((head.kind, &payload[..]), (frame::PING, &b"second!!"[..]));
}

/// The broker's stream goes away while the padding is under way (the host reset it): the
/// padding stops and the held acknowledgement goes out.
#[tokio::test(flavor = "current_thread")]
async fn a_ping_held_for_the_padding_is_acknowledged_when_its_stream_goes() {
    use super::frame;
    let methods = Methods::default().inbound("/plugin.GRPCBroker/StartStream", |_| {});
    let (mut peer, _task) = raw(methods).await;
    peer.send(&broker_stream_then_ping(b"held-one")).await;
    // The server sends padding up to the default windows, then waits for more room.
    let (head, _) = peer.until(frame::DATA).await.expect("padding");
    assert!(head.has(frame::PADDED));
    let mut reset = bytes::BytesMut::new();
    frame::put_rst_stream(&mut reset, 1, frame::Reason::NoError);
    peer.send(&reset).await;
    let (head, payload) = tokio::time::timeout(Duration::from_secs(5), peer.until(frame::PING))
        .await
        .expect("acknowledged once the stream is gone")
        .expect("a frame");
    assert!(head.has(frame::ACK));
    assert_eq!(&payload[..], b"held-one");
}
