//! HTTP/2 frames (RFC 9113 §4 and §6): the nine-byte header, the frame types a gRPC server
//! meets, and the writers of the frames it sends. Header blocks this side sends are HPACK
//! literals that never touch the dynamic table (RFC 7541 §6.2.2), so the peer's table size
//! does not matter to the encoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The largest frame payload either side may send before the peer raises it.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// Flow-control windows before any SETTINGS or WINDOW_UPDATE.
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    Compression = 0x9,
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the nine-byte header at the start of `buf` (which holds at least that much).
    pub fn parse(buf: &[u8]) -> Self {
        let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
        let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
        Self {
            len,
            kind: buf[3],
            flags: buf[4],
            stream,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a frame header.
pub fn put_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    // Callers never build a payload over 2^24 - 1 bytes (frames are cut at the peer's
    // maximum frame size, at most 2^24 - 1).
    let len = len.min(0x00ff_ffff) as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

pub fn put_settings(out: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, SETTINGS, 0, 0);
    for (id, value) in settings {
        out.put_u16(*id);
        out.put_u32(*value);
    }
}

pub fn put_settings_ack(out: &mut BytesMut) {
    put_head(out, 0, SETTINGS, ACK, 0);
}

pub fn put_ping_ack(out: &mut BytesMut, payload: &[u8]) {
    put_head(out, payload.len(), PING, ACK, 0);
    out.put_slice(payload);
}

pub fn put_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    put_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & 0x7fff_ffff);
}

pub fn put_rst_stream(out: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(out, 4, RST_STREAM, 0, stream);
    out.put_u32(reason as u32);
}

pub fn put_goaway(out: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(out, 8, GOAWAY, 0, 0);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(reason as u32);
}

pub fn put_data(out: &mut BytesMut, stream: u32, payload: &[u8], end_stream: bool) {
    put_head(
        out,
        payload.len(),
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
    out.put_slice(payload);
}

/// A DATA frame of padding only: `len` flow-controlled bytes (the pad-length byte and
/// `len - 1` bytes of padding, 2 to 256), no data.
pub fn put_padding(out: &mut BytesMut, stream: u32, len: usize) {
    let len = len.clamp(2, 256);
    put_head(out, len, DATA, PADDED, stream);
    out.put_u8((len - 1) as u8);
    out.put_bytes(0, len - 1);
}

/// A header block, cut into a HEADERS frame and CONTINUATION frames of at most
/// `max_frame` bytes each.
pub fn put_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or_default();
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= END_HEADERS;
    }
    put_head(out, first.len(), HEADERS, flags, stream);
    out.put_slice(first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        put_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.put_slice(chunk);
    }
}

/// HPACK: an integer with an `n`-bit prefix whose high bits are `first` (RFC 7541 §5.1).
fn put_int(out: &mut BytesMut, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    value -= max;
    while value >= 128 {
        out.put_u8((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.put_u8(value as u8);
}

/// HPACK: a string literal without Huffman coding.
fn put_str(out: &mut BytesMut, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.put_slice(s);
}

/// HPACK: a field from the static table (RFC 7541 Appendix A), e.g. 8 for `:status: 200`.
pub fn hpack_indexed(out: &mut BytesMut, index: usize) {
    put_int(out, 0x80, 7, index);
}

/// HPACK: a literal field, not indexed, its name from the static table.
pub fn hpack_literal_indexed_name(out: &mut BytesMut, name_index: usize, value: &[u8]) {
    put_int(out, 0x00, 4, name_index);
    put_str(out, value);
}

/// HPACK: a literal field, not indexed, with a literal name.
pub fn hpack_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0x00);
    put_str(out, name);
    put_str(out, value);
}

/// The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, without
/// the priority fields): `None` when the padding is longer than the payload.
pub fn unpadded(head: &Head, mut payload: Bytes) -> Option<Bytes> {
    let mut pad = 0usize;
    if head.has(PADDED) && head.kind != CONTINUATION {
        if payload.is_empty() {
            return None;
        }
        pad = usize::from(payload.get_u8());
    }
    if head.kind == HEADERS && head.has(PRIORITY_FLAG) {
        if payload.len() < 5 {
            return None;
        }
        payload.advance(5);
    }
    if pad > payload.len() {
        return None;
    }
    payload.truncate(payload.len() - pad);
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips() {
        let mut out = BytesMut::new();
        put_head(
            &mut out,
            70_000,
            HEADERS,
            END_HEADERS | END_STREAM,
            0x8000_0003,
        );
        let head = Head::parse(&out);
        assert_eq!(
            head,
            Head {
                len: 70_000,
                kind: HEADERS,
                flags: END_HEADERS | END_STREAM,
                stream: 3
            }
        );
    }

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = BytesMut::new();
        put_int(&mut out, 0, 5, 10);
        assert_eq!(&out[..], [0b01010]);
        let mut out = BytesMut::new();
        put_int(&mut out, 0, 5, 1337);
        assert_eq!(&out[..], [31, 154, 10]);
    }

    #[test]
    fn literals_decode_with_an_independent_decoder() {
        let mut block = BytesMut::new();
        hpack_indexed(&mut block, 8);
        hpack_literal_indexed_name(&mut block, 31, b"application/grpc");
        hpack_literal(&mut block, b"grpc-status", b"0");
        let long = "m".repeat(300);
        hpack_literal(&mut block, b"grpc-message", long.as_bytes());
        let mut decoder = fluke_hpack::Decoder::new();
        let fields = decoder.decode(&block).expect("valid block");
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), "0".into()),
                ("grpc-message".into(), long),
            ]
        );
    }

    #[test]
    fn long_header_blocks_continue() {
        let block = vec![0u8; 40];
        let mut out = BytesMut::new();
        put_headers(&mut out, 1, &block, true, 16);
        let first = Head::parse(&out);
        assert_eq!((first.kind, first.len), (HEADERS, 16));
        assert!(first.has(END_STREAM) && !first.has(END_HEADERS));
        let second = Head::parse(&out[HEADER_LEN + 16..]);
        assert_eq!((second.kind, second.flags), (CONTINUATION, 0));
        let third = Head::parse(&out[2 * (HEADER_LEN + 16)..]);
        assert_eq!(
            (third.kind, third.flags, third.len),
            (CONTINUATION, END_HEADERS, 8)
        );
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let head = Head {
            len: 0,
            kind: HEADERS,
            flags: PADDED | PRIORITY_FLAG,
            stream: 1,
        };
        let payload = Bytes::from_static(&[2, 0, 0, 0, 0, 9, b'h', b'i', 0, 0]);
        assert_eq!(unpadded(&head, payload).unwrap(), Bytes::from_static(b"hi"));
        let bad = Bytes::from_static(&[9, 1]);
        assert!(unpadded(&head, bad).is_none());
    }
}
