//! gRPC on the host's connection: the table of methods the plugin serves, the framing of
//! messages (a flag byte and a four-byte length before each, gRPC over HTTP/2 §"Length-Prefixed
//! Message") and the statuses sent in trailers.
//!
//! A method is either unary (one message each way: everything the host calls on
//! `pb.Backend`, the controller, version, multiplexing and health), or a stream the host
//! opens and keeps open for the life of the connection, whose messages are handed to a
//! function and on which the plugin never sends (the broker's announcements, stdio).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use tonic::{Code, Status};

/// The metadata key that names the backend instance of a call (Vault's multiplexing).
pub const MULTIPLEX_ID: &[u8] = b"multiplex_id";

/// A unary call as its method sees it: the decoded request and its `multiplex_id`
/// metadata, the only metadata the services read.
#[derive(Debug)]
pub struct Call<M> {
    pub message: M,
    pub multiplex_id: Option<String>,
}

/// A unary call under way: the reply message, framed.
pub type CallFuture = BoxFuture<'static, Result<Bytes, Status>>;
/// A unary method: the request message (unframed) and its `multiplex_id`, to the call.
pub type UnaryFn = Arc<dyn Fn(Bytes, Option<String>) -> CallFuture + Send + Sync>;
/// A kept-open stream's handler of each message the host sends on it (unframed).
pub type InboundFn = Arc<dyn Fn(Bytes) + Send + Sync>;

#[derive(Clone)]
pub enum Method {
    Unary(UnaryFn),
    Inbound(InboundFn),
}

/// The methods, by their HTTP/2 path (`/<package>.<Service>/<Method>`).
#[derive(Default)]
pub struct Methods {
    by_path: HashMap<&'static str, Method>,
}

impl Methods {
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path)
    }

    /// Adds a unary method served by `f`, which gets the decoded request.
    pub fn unary<M, R, F, Fut>(mut self, path: &'static str, f: F) -> Self
    where
        M: prost::Message + Default + Send + 'static,
        R: prost::Message + 'static,
        F: Fn(Call<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
    {
        let call = move |body: Bytes, multiplex_id: Option<String>| -> CallFuture {
            let message = match M::decode(body) {
                Ok(m) => m,
                Err(e) => {
                    let status = Status::internal(format!("cannot decode the request: {e}"));
                    return Box::pin(futures::future::ready(Err(status)));
                }
            };
            let reply = f(Call {
                message,
                multiplex_id,
            });
            Box::pin(async move { reply.await.map(|r| frame_message(&r)) })
        };
        self.by_path.insert(path, Method::Unary(Arc::new(call)));
        self
    }

    /// Adds a stream the host keeps open; each message it sends goes to `f`.
    pub fn inbound(
        mut self,
        path: &'static str,
        f: impl Fn(Bytes) + Send + Sync + 'static,
    ) -> Self {
        self.by_path.insert(path, Method::Inbound(Arc::new(f)));
        self
    }
}

/// A message with its length prefix (never compressed).
pub fn frame_message(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has room for the whole message.
    let _ = message.encode(&mut out);
    out.freeze()
}

/// Takes the complete messages at the front of `buf` (a stream's bytes so far).
pub fn take_messages(buf: &mut BytesMut) -> Result<Vec<Bytes>, Status> {
    let mut messages = Vec::new();
    while buf.len() >= 5 {
        if buf[0] != 0 {
            return Err(compressed());
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        messages.push(buf.split_to(len).freeze());
    }
    Ok(messages)
}

/// The one message of a unary request.
pub fn single_message(mut buf: BytesMut) -> Result<Bytes, Status> {
    let mut messages = take_messages(&mut buf)?;
    if messages.len() != 1 || !buf.is_empty() {
        return Err(Status::internal(format!(
            "a unary request must hold exactly one message (got {}, {} bytes left over)",
            messages.len(),
            buf.len()
        )));
    }
    Ok(messages.remove(0))
}

fn compressed() -> Status {
    Status::unimplemented("compressed messages are not supported")
}

/// `grpc-message`: percent-encoded as gRPC over HTTP/2 asks (every byte outside printable
/// ASCII, and `%`).
pub fn encode_grpc_message(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The `grpc-status` value of a code.
pub fn status_code(code: Code) -> Vec<u8> {
    (code as i32).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::proto::pb;
    use super::*;

    #[test]
    fn messages_are_framed_and_taken_back() {
        let framed = frame_message(&pb::InvalidateKeyArgs { key: "k".into() });
        assert_eq!(framed[0], 0);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&framed);
        buf.extend_from_slice(&framed[..4]);
        let got = take_messages(&mut buf).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            <pb::InvalidateKeyArgs as prost::Message>::decode(got[0].clone())
                .unwrap()
                .key,
            "k"
        );
        assert_eq!(buf.len(), 4, "the partial message waits for the rest");
        buf.extend_from_slice(&framed[4..]);
        assert_eq!(take_messages(&mut buf).unwrap().len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_unary_request_holds_one_uncompressed_message() {
        let framed = frame_message(&pb::Empty {});
        let mut two = BytesMut::new();
        two.extend_from_slice(&framed);
        two.extend_from_slice(&framed);
        assert!(single_message(two).is_err());
        let mut compressed = BytesMut::from(&framed[..]);
        compressed[0] = 1;
        assert_eq!(
            single_message(compressed).unwrap_err().code(),
            Code::Unimplemented
        );
        assert!(single_message(BytesMut::from(&framed[..])).is_ok());
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(
            encode_grpc_message("50% naïve\n"),
            b"50%25 na%C3%AFve%0A".to_vec()
        );
    }

    #[tokio::test]
    async fn unary_methods_decode_call_and_frame() {
        let methods = Methods::default().unary(
            "/pb.Backend/InvalidateKey",
            |call: Call<pb::InvalidateKeyArgs>| async move {
                let id = call.multiplex_id.unwrap_or_default();
                Ok(pb::InvalidateKeyArgs {
                    key: format!("{id}:{}", call.message.key),
                })
            },
        );
        let Some(Method::Unary(call)) = methods.get("/pb.Backend/InvalidateKey") else {
            panic!("registered");
        };
        let body = frame_message(&pb::InvalidateKeyArgs { key: "k".into() }).slice(5..);
        let reply = call(body, Some("m1".into())).await.unwrap();
        let reply = single_message(BytesMut::from(&reply[..])).unwrap();
        let reply = <pb::InvalidateKeyArgs as prost::Message>::decode(reply).unwrap();
        assert_eq!(reply.key, "m1:k");
        let bad = call(Bytes::from_static(&[0xff, 0xff]), None).await;
        assert_eq!(bad.unwrap_err().code(), Code::Internal);
        assert!(methods.get("/pb.Backend/Nope").is_none());
    }
}
