//! HTTP/2 byte streams and the kernel walker's records of them, for the
//! tests, the fuzzer (`cargo xtask fuzz-h2`) and the decoder benchmark.
//!
//! * [`huffman_encode`]: HPACK's Huffman code, derived at first use from
//!   loona-hpack's decoder (no code table is written out here);
//! * [`Encoder`]: an HPACK encoder with the choices real ones make
//!   (indexing, never-indexed `:path` like the `h2` crate, Huffman strings,
//!   table size updates);
//! * [`Conversation`]: gRPC calls and plain HTTP/2 requests on one
//!   connection as frames of both directions, interleaved, with what flowd
//!   must report for each ([`Expected`]);
//! * [`KernelModel`]: what the kernel frame walker sends for a direction's
//!   TCP segments, exactly as `flowd_common::H2Event` says (the one model of
//!   it, shared by every user).

use std::collections::VecDeque;
use std::sync::OnceLock;

use flowd_common::{
    EV_H2, EventHeader, FlowKey, H2_F_LOST, H2_F_PREFACE, H2_F_START, H2_MAX_BYTES, H2_MAX_PIECES,
};
use loona_hpack::huffman::HuffmanDecoder;

use super::hpack::STATIC_TABLE;
use super::stream_walk::{
    CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FRAME_HEADER_LEN,
    FrameHeader, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS, WINDOW_UPDATE, copy_len,
};
use crate::datapath::{H2Chunk, H2Record};

pub mod fuzz;
pub mod verify;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A small deterministic generator (SplitMix64): seeds give the same cases
/// on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// Huffman

/// Code and bit length of every byte value in HPACK's Huffman code, found by
/// walking the code tree with loona-hpack's decoder: a bit string `p` is a
/// code when `p`, then the code of '0' (00000), then EOS padding decodes to
/// exactly two symbols, the second being '0' (a shorter or longer split is
/// impossible for a prefix code).
fn huffman_codes() -> &'static [(u32, u8); 256] {
    static CODES: OnceLock<[(u32, u8); 256]> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut dec = HuffmanDecoder::new();
        let mut codes = [(0u32, 0u8); 256];
        let mut todo = vec![(0u32, 0u8)];
        while let Some((bits, len)) = todo.pop() {
            if len > 0 {
                let mut w = BitWriter::default();
                w.put(u64::from(bits), len);
                w.put(0, 5);
                if let Ok(v) = dec.decode(&w.finish())
                    && v.len() == 2
                    && v[1] == b'0'
                {
                    codes[usize::from(v[0])] = (bits, len);
                    continue;
                }
            }
            if len < 30 {
                todo.push((bits << 1, len + 1));
                todo.push((bits << 1 | 1, len + 1));
            }
        }
        codes
    })
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u8,
}

impl BitWriter {
    fn put(&mut self, bits: u64, len: u8) {
        for i in (0..len).rev() {
            self.acc = self.acc << 1 | (bits >> i & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    /// Pads the last byte with 1s (the start of EOS).
    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put((1u64 << pad) - 1, pad);
        }
        self.out
    }
}

/// `s` in HPACK's Huffman code.
pub fn huffman_encode(s: &[u8]) -> Vec<u8> {
    let codes = huffman_codes();
    let mut w = BitWriter::default();
    for &b in s {
        let (code, len) = codes[usize::from(b)];
        w.put(u64::from(code), len);
    }
    w.finish()
}

// ---------------------------------------------------------------------------
// HPACK encoder

/// An integer with an N-bit prefix; `first` holds the representation's
/// high bits.
pub fn hpack_integer(out: &mut Vec<u8>, first: u8, prefix: u8, v: usize) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK encoder: indexes what real encoders index, Huffman-codes the
/// strings Huffman makes shorter.
#[derive(Clone, Debug)]
pub struct Encoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    pending_update: Option<usize>,
    pub huffman: bool,
    /// Header names never added to the table (the `h2` crate never indexes
    /// `:path`; everyone keeps secrets out).
    pub no_index: Vec<String>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            pending_update: None,
            huffman: true,
            no_index: vec![":path".into(), "authorization".into()],
        }
    }
}

impl Encoder {
    pub fn new(huffman: bool) -> Self {
        Self {
            huffman,
            ..Self::default()
        }
    }

    /// Announces a new table size at the start of the next block.
    pub fn set_max_size(&mut self, max: usize) {
        self.max = max;
        self.pending_update = Some(max);
        self.evict(0);
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn string(&self, out: &mut Vec<u8>, s: &[u8]) {
        let h = huffman_encode(s);
        if self.huffman && h.len() < s.len() {
            hpack_integer(out, 0x80, 7, h.len());
            out.extend_from_slice(&h);
        } else {
            hpack_integer(out, 0, 7, s.len());
            out.extend_from_slice(s);
        }
    }

    /// One header block.
    pub fn encode(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(size) = self.pending_update.take() {
            hpack_integer(&mut out, 0x20, 5, size);
        }
        for (name, value) in headers {
            let (n, v) = (name.as_bytes(), value.as_bytes());
            let mut full = None;
            let mut by_name = None;
            let entries = STATIC_TABLE
                .iter()
                .map(|(a, b)| (a.as_bytes(), b.as_bytes()))
                .chain(self.table.iter().map(|(a, b)| (a.as_slice(), b.as_slice())));
            for (i, (en, ev)) in entries.enumerate() {
                if en == n {
                    if ev == v {
                        full = Some(i + 1);
                        break;
                    }
                    by_name.get_or_insert(i + 1);
                }
            }
            if let Some(i) = full {
                hpack_integer(&mut out, 0x80, 7, i);
                continue;
            }
            let size = n.len() + v.len() + 32;
            let index = !self.no_index.iter().any(|x| x == name) && size <= self.max;
            let (first, prefix) = if index { (0x40, 6) } else { (0x00, 4) };
            match by_name {
                Some(i) => hpack_integer(&mut out, first, prefix, i),
                None => {
                    hpack_integer(&mut out, first, prefix, 0);
                    self.string(&mut out, n);
                }
            }
            self.string(&mut out, v);
            if index {
                self.evict(size);
                self.size += size;
                self.table.push_front((n.to_vec(), v.to_vec()));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Frames

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    };
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame (empty: the defaults).
pub fn settings() -> Vec<u8> {
    frame(SETTINGS, 0, 0, &[])
}

/// A header block as HEADERS plus CONTINUATIONs of at most `max_frame`
/// bytes of block each; `pad` bytes of padding on the HEADERS frame.
pub fn header_frames(
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
    pad: u8,
) -> Vec<u8> {
    let max_frame = max_frame.max(1);
    let mut out = Vec::new();
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or_default();
    let last = chunks.peek().is_none();
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if last {
        flags |= FLAG_END_HEADERS;
    }
    let mut payload = Vec::new();
    if pad > 0 {
        flags |= FLAG_PADDED;
        payload.push(pad);
    }
    payload.extend_from_slice(first);
    payload.extend(std::iter::repeat_n(0, usize::from(pad)));
    out.extend(frame(HEADERS, flags, stream, &payload));
    while let Some(c) = chunks.next() {
        let f = if chunks.peek().is_none() {
            FLAG_END_HEADERS
        } else {
            0
        };
        out.extend(frame(CONTINUATION, f, stream, c));
    }
    out
}

/// A DATA frame, padded with `pad` bytes when `pad` > 0.
pub fn data_frame(stream: u32, data: &[u8], end_stream: bool, pad: u8) -> Vec<u8> {
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    let mut payload = Vec::new();
    if pad > 0 {
        flags |= FLAG_PADDED;
        payload.push(pad);
    }
    payload.extend_from_slice(data);
    payload.extend(std::iter::repeat_n(0, usize::from(pad)));
    frame(DATA, flags, stream, &payload)
}

/// gRPC's length-prefixed message of `len` bytes.
pub fn grpc_message(len: usize, fill: u8) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend(std::iter::repeat_n(fill, len));
    m
}

// ---------------------------------------------------------------------------
// Conversations

/// One request/response exchange on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub authority: String,
    /// content-type application/grpc (else a plain HTTP/2 request).
    pub grpc: bool,
    /// Message sizes each way (gRPC), or body sizes (plain: at most one).
    pub request_messages: Vec<usize>,
    pub response_messages: Vec<usize>,
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// Percent-encoded on the wire.
    pub grpc_message: Option<String>,
    /// The response is one HEADERS frame with the status (gRPC errors).
    pub trailers_only: bool,
    /// The server resets the stream with this code instead of ending it.
    pub reset: Option<u32>,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
}

impl Call {
    pub fn unary(path: &str, grpc_status: u32) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            authority: "inventory:50051".into(),
            grpc: true,
            request_messages: vec![12],
            response_messages: if grpc_status == 0 { vec![30] } else { vec![] },
            status: 200,
            grpc_status: Some(grpc_status),
            grpc_message: (grpc_status != 0).then(|| "item not found".into()),
            trailers_only: grpc_status != 0,
            reset: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }

    pub fn plain(method: &str, path: &str, status: u16, body: usize) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            authority: "frontend:8080".into(),
            grpc: false,
            request_messages: Vec::new(),
            response_messages: if body > 0 { vec![body] } else { vec![] },
            status,
            grpc_status: None,
            grpc_message: None,
            trailers_only: false,
            reset: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        }
    }
}

/// How a conversation is framed.
#[derive(Clone, Debug)]
pub struct Framing {
    /// Largest DATA payload per frame (messages larger span frames).
    pub max_data_frame: usize,
    /// Largest header block fragment per frame (larger blocks use
    /// CONTINUATION).
    pub max_header_fragment: usize,
    /// Pad every HEADERS and DATA frame with this many bytes.
    pub pad: u8,
    /// Put all of a call's messages of one direction into one DATA frame
    /// when they fit (gRPC counts are then not exact).
    pub pack_messages: bool,
    /// Interleave the calls' frames (else one call after the other).
    pub interleave: bool,
    /// Send PING / WINDOW_UPDATE frames between the others.
    pub control_frames: bool,
    /// Huffman-code strings.
    pub huffman: bool,
    /// HPACK table size the encoders announce at the start (None: 4096).
    pub table_size: Option<usize>,
    /// The server's SETTINGS goes out before the client's preface.
    pub server_first: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            max_data_frame: 16_384,
            max_header_fragment: 16_384,
            pad: 0,
            pack_messages: false,
            interleave: false,
            control_frames: false,
            huffman: true,
            table_size: None,
            server_first: true,
        }
    }
}

/// Which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// A connection's byte streams and the order their parts were sent in.
#[derive(Clone, Debug, Default)]
pub struct Wire {
    pub client: Vec<u8>,
    pub server: Vec<u8>,
    /// (side, end offset in that side's stream) in time order: each entry
    /// is one send (one or a few frames).
    pub sends: Vec<(Side, usize)>,
}

impl Wire {
    fn push(&mut self, side: Side, bytes: &[u8]) {
        let s = match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        };
        s.extend_from_slice(bytes);
        let end = s.len();
        self.sends.push((side, end));
    }
}

/// What flowd must report of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub stream: u32,
    pub call: Call,
    /// Index of the send that completed the request head and of the one
    /// that ended the response.
    pub request_send: usize,
    pub response_send: usize,
    /// gRPC message counts are exact as framed.
    pub messages_exact: bool,
}

/// Calls on one connection, framed.
pub struct Conversation {
    pub wire: Wire,
    pub expected: Vec<Expected>,
}

/// One thing a side sends on a stream; header blocks are encoded when
/// sent, so HPACK's tables follow the send order whatever the interleaving.
#[derive(Clone, Debug)]
enum Item {
    Head(Vec<(String, String)>, bool),
    Data(Vec<u8>, bool),
    Reset(u32),
}

/// A side's items for a body of `messages` and optional trailers.
fn side_items(
    head: Vec<(String, String)>,
    messages: &[Vec<u8>],
    trailers: Option<Vec<(String, String)>>,
    f: &Framing,
) -> VecDeque<Item> {
    let mut items = VecDeque::new();
    let no_body = messages.is_empty() && trailers.is_none();
    items.push_back(Item::Head(head, no_body));
    if !messages.is_empty() {
        let step = f.max_data_frame.max(1);
        let chunks: Vec<Vec<u8>> = if f.pack_messages {
            messages.concat().chunks(step).map(<[u8]>::to_vec).collect()
        } else {
            // Each message starts a frame; large ones span several.
            messages
                .iter()
                .flat_map(|m| m.chunks(step).map(<[u8]>::to_vec))
                .collect()
        };
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            items.push_back(Item::Data(c, i + 1 == n && trailers.is_none()));
        }
    }
    if let Some(t) = trailers {
        items.push_back(Item::Head(t, true));
    }
    items
}

/// Whether counting message prefixes at frame starts sees every message.
fn counts_exact(messages: &[Vec<u8>], f: &Framing) -> bool {
    if !f.pack_messages {
        return true;
    }
    // Packed: exact only if every message starts a frame.
    let step = f.max_data_frame.max(1);
    let mut off = 0usize;
    messages.iter().all(|m| {
        let ok = off.is_multiple_of(step);
        off += m.len();
        ok
    })
}

struct Pending {
    stream: u32,
    client: VecDeque<Item>,
    server: VecDeque<Item>,
    request_send: Option<usize>,
    response_send: Option<usize>,
}

impl Conversation {
    /// Frames `calls` on one connection (streams 1, 3, 5, …).
    pub fn new(calls: &[Call], f: &Framing, rng: &mut Rng) -> Self {
        Self::new_with(calls, f, rng, |_| {})
    }

    /// [`Conversation::new`] with both HPACK encoders adjusted by `tune`.
    pub fn new_with(
        calls: &[Call],
        f: &Framing,
        rng: &mut Rng,
        tune: impl Fn(&mut Encoder),
    ) -> Self {
        let mut wire = Wire::default();
        let mut enc = [
            Encoder {
                huffman: f.huffman,
                ..Encoder::default()
            },
            Encoder {
                huffman: f.huffman,
                ..Encoder::default()
            },
        ];
        for e in &mut enc {
            tune(e);
            if let Some(size) = f.table_size {
                e.set_max_size(size);
            }
        }
        let mut preface = PREFACE.to_vec();
        preface.extend(settings());
        // Servers often send their SETTINGS as soon as they accept, before
        // the client's preface arrives.
        if f.server_first {
            wire.push(Side::Server, &settings());
            wire.push(Side::Client, &preface);
            wire.push(Side::Server, &frame(SETTINGS, 1, 0, &[]));
        } else {
            wire.push(Side::Client, &preface);
            wire.push(
                Side::Server,
                &[settings(), frame(SETTINGS, 1, 0, &[])].concat(),
            );
        }
        wire.push(Side::Client, &frame(SETTINGS, 1, 0, &[]));

        let mut pending = Vec::new();
        let mut expected = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let mut head = vec![
                (":method".to_string(), call.method.clone()),
                (":scheme".to_string(), "http".to_string()),
                (":path".to_string(), call.path.clone()),
                (":authority".to_string(), call.authority.clone()),
            ];
            if call.grpc {
                head.push(("content-type".into(), "application/grpc".into()));
                head.push(("te".into(), "trailers".into()));
                head.push(("user-agent".into(), "grpc-rust/0.14".into()));
            }
            head.extend(call.request_headers.iter().cloned());
            let body = |sizes: &[usize], fill: u8| -> Vec<Vec<u8>> {
                sizes
                    .iter()
                    .map(|&n| {
                        if call.grpc {
                            grpc_message(n, fill)
                        } else {
                            vec![fill; n]
                        }
                    })
                    .collect()
            };
            let req_msgs = body(&call.request_messages, b'q');
            let resp_msgs = body(&call.response_messages, b'r');
            let mut rhead = vec![(":status".to_string(), call.status.to_string())];
            if call.grpc {
                rhead.push(("content-type".into(), "application/grpc".into()));
            }
            rhead.extend(call.response_headers.iter().cloned());
            let mut trailers = Vec::new();
            if let Some(s) = call.grpc_status {
                trailers.push(("grpc-status".to_string(), s.to_string()));
            }
            if let Some(m) = &call.grpc_message {
                trailers.push(("grpc-message".to_string(), percent_encode(m)));
            }
            let client = side_items(head, &req_msgs, None, f);
            let server = if let Some(code) = call.reset {
                let mut v = side_items(rhead, &resp_msgs, Some(Vec::new()), f);
                v.pop_back(); // a reset instead of trailers
                v.push_back(Item::Reset(code));
                v
            } else if call.trailers_only {
                rhead.extend(trailers);
                VecDeque::from([Item::Head(rhead, true)])
            } else if call.grpc {
                side_items(rhead, &resp_msgs, Some(trailers), f)
            } else {
                side_items(rhead, &resp_msgs, None, f)
            };
            pending.push(Pending {
                stream,
                client,
                server,
                request_send: None,
                response_send: None,
            });
            expected.push(Expected {
                stream,
                call: call.clone(),
                request_send: 0,
                response_send: 0,
                messages_exact: call.reset.is_none()
                    && counts_exact(&req_msgs, f)
                    && counts_exact(&resp_msgs, f),
            });
        }
        loop {
            // Calls with something to send now: the server answers after
            // the request's head was sent.
            // Streams open in id order (RFC 9113 §5.1.1).
            let next_open = pending
                .iter()
                .position(|p| p.request_send.is_none())
                .unwrap_or(usize::MAX);
            let ready: Vec<(usize, Side)> = pending
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    let c = (!p.client.is_empty() && (p.request_send.is_some() || i == next_open))
                        .then_some((i, Side::Client));
                    let s = (!p.server.is_empty() && p.request_send.is_some())
                        .then_some((i, Side::Server));
                    [c, s].into_iter().flatten()
                })
                .collect();
            // A call's last response frame waits for the end of its request.
            let ready: Vec<(usize, Side)> = ready
                .into_iter()
                .filter(|&(i, side)| {
                    side == Side::Client
                        || pending[i].server.len() > 1
                        || pending[i].client.is_empty()
                })
                .collect();
            let Some(&first) = ready.first() else { break };
            let (i, side) = if f.interleave {
                ready[rng.below(ready.len())]
            } else {
                first
            };
            let p = &mut pending[i];
            let q = match side {
                Side::Client => &mut p.client,
                Side::Server => &mut p.server,
            };
            let Some(item) = q.pop_front() else { break };
            let is_head = matches!(item, Item::Head(..));
            let bytes = match item {
                Item::Head(h, end) => {
                    let block = enc[side as usize].encode(&h);
                    header_frames(p.stream, &block, end, f.max_header_fragment, f.pad)
                }
                Item::Data(d, end) => data_frame(p.stream, &d, end, f.pad),
                Item::Reset(code) => frame(RST_STREAM, 0, p.stream, &code.to_be_bytes()),
            };
            if f.control_frames && rng.chance(20) {
                wire.push(side, &frame(PING, 0, 0, &rng.bytes(8)));
                wire.push(side, &frame(WINDOW_UPDATE, 0, 0, &65_535u32.to_be_bytes()));
            }
            wire.push(side, &bytes);
            let send = wire.sends.len() - 1;
            match side {
                Side::Client if is_head && p.request_send.is_none() => p.request_send = Some(send),
                Side::Server if p.server.is_empty() => p.response_send = Some(send),
                _ => {}
            }
        }
        for (e, p) in expected.iter_mut().zip(&pending) {
            e.request_send = p.request_send.unwrap_or(0);
            e.response_send = p.response_send.unwrap_or(0);
        }
        Self { wire, expected }
    }

    /// A GOAWAY from the server excluding streams above `last`.
    pub fn goaway(&mut self, last: u32) {
        let mut p = last.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        self.wire.push(Side::Server, &frame(GOAWAY, 0, 0, &p));
    }
}

/// grpc-message's percent-encoding (gRPC over HTTP/2 spec).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The kernel walker

/// What the kernel frame walker sends of one direction: for each TCP
/// segment, the parts of it that are frame headers or copied payload
/// ([`copy_len`]), as pieces in records of at most `H2_MAX_PIECES` pieces
/// and `H2_MAX_BYTES` bytes; the first record starts at the first frame
/// header with `H2_F_START` (and `H2_F_PREFACE` after the client preface).
#[derive(Clone, Debug)]
pub struct KernelModel {
    key: FlowKey,
    base_seq: u32,
    /// Copied byte ranges of the stream, merged where contiguous.
    regions: Vec<(usize, usize)>,
    /// Stream offsets of frame headers.
    headers: Vec<usize>,
    preface: bool,
    started: bool,
    /// After a loss the kernel noticed, or when it joins a connection in
    /// its middle: the next record starts at the first frame header at or
    /// after this offset, with `resync_flags`.
    resync_from: Option<usize>,
    resync_flags: u8,
    /// Split pieces at random points (the kernel may cut them anywhere).
    pub split_pieces: bool,
}

impl KernelModel {
    /// The model of a direction whose whole byte stream (from the
    /// connection's start) is `stream`, its first byte at `base_seq`.
    pub fn new(stream: &[u8], key: FlowKey, base_seq: u32) -> Self {
        let preface = stream.starts_with(PREFACE);
        let mut off = if preface { PREFACE.len() } else { 0 };
        let mut regions: Vec<(usize, usize)> = Vec::new();
        let mut headers = Vec::new();
        let add = |a: usize, b: usize, regions: &mut Vec<(usize, usize)>| {
            if a >= b {
                return;
            }
            match regions.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => regions.push((a, b)),
            }
        };
        while off < stream.len() {
            headers.push(off);
            let Some(h) = stream.get(off..off + FRAME_HEADER_LEN) else {
                add(off, stream.len(), &mut regions);
                break;
            };
            let mut b = [0u8; FRAME_HEADER_LEN];
            b.copy_from_slice(h);
            let h = FrameHeader::parse(&b);
            let copy = copy_len(h) as usize;
            let p = off + FRAME_HEADER_LEN;
            add(off, (p + copy).min(stream.len()), &mut regions);
            off = p + h.len as usize;
        }
        Self {
            key,
            base_seq,
            regions,
            headers,
            preface,
            started: false,
            resync_from: None,
            resync_flags: 0,
            split_pieces: false,
        }
    }

    /// The kernel starts walking at byte `at` (flowd started while the
    /// connection was open, a configured HTTP/2 port): its first record is
    /// flagged H2_F_START|H2_F_LOST at the first frame header from there, as
    /// the kernel's synchronisation on a connection seen from the middle is
    /// (what came before, the HPACK tables' contents, is unknown).
    pub fn join(&mut self, at: usize) {
        self.started = true;
        self.resync_from = Some(at);
        self.resync_flags = H2_F_START | H2_F_LOST;
    }

    /// The segment `[start, end)` of `stream` was lost before the kernel
    /// walked it (`noticed`: the kernel knows, and flags its next record);
    /// call instead of [`KernelModel::segment`].
    pub fn lose(&mut self, _start: usize, end: usize, noticed: bool) {
        if noticed && self.started {
            self.resync_from = Some(end);
            self.resync_flags = H2_F_START | H2_F_LOST;
        }
    }

    /// The records of segment `[start, end)` of `stream`, sent at `ts_ns`.
    pub fn segment(
        &mut self,
        stream: &[u8],
        start: usize,
        end: usize,
        ts_ns: u64,
        rng: &mut Rng,
    ) -> Vec<H2Record> {
        let mut from = start;
        let mut flags = 0u8;
        if !self.started {
            // The walk starts at the first frame header.
            let Some(&first) = self.headers.first() else {
                return Vec::new();
            };
            if !(start..end).contains(&first) {
                return Vec::new();
            }
            from = first;
            flags = H2_F_START | if self.preface { H2_F_PREFACE } else { 0 };
        } else if let Some(r) = self.resync_from {
            let at = self.headers.partition_point(|&h| h < r.max(start));
            let Some(&h) = self.headers.get(at) else {
                return Vec::new();
            };
            if h >= end {
                return Vec::new();
            }
            from = h;
            flags = self.resync_flags;
        }
        let first = self.regions.partition_point(|&(_, b)| b <= from);
        let mut pieces: Vec<(usize, usize)> = self.regions[first..]
            .iter()
            .take_while(|&&(a, _)| a < end)
            .filter_map(|&(a, b)| {
                let (a, b) = (a.max(from), b.min(end));
                (a < b).then_some((a, b))
            })
            .collect();
        if pieces.is_empty() {
            return Vec::new();
        }
        self.started = true;
        self.resync_from = None;
        if self.split_pieces {
            let mut split = Vec::new();
            for (a, b) in pieces {
                let mut a = a;
                while b - a > 1 && rng.chance(30) {
                    let cut = a + 1 + rng.below(b - a - 1);
                    split.push((a, cut));
                    a = cut;
                }
                split.push((a, b));
            }
            pieces = split;
        }
        let mut out = Vec::new();
        let mut rec = self.record(ts_ns, flags);
        let mut bytes = 0usize;
        for (mut a, b) in pieces {
            while a < b {
                if rec.chunks.len() == H2_MAX_PIECES || bytes == H2_MAX_BYTES {
                    out.push(std::mem::replace(&mut rec, self.record(ts_ns, 0)));
                    bytes = 0;
                }
                let n = (b - a).min(H2_MAX_BYTES - bytes);
                rec.chunks.push(H2Chunk {
                    seq: self.base_seq.wrapping_add(a as u32),
                    bytes: stream[a..a + n].to_vec(),
                });
                bytes += n;
                a += n;
            }
        }
        out.push(rec);
        out
    }

    fn record(&self, ts_ns: u64, flags: u8) -> H2Record {
        H2Record {
            header: EventHeader {
                kind: EV_H2,
                ts_ns,
                ..EventHeader::default()
            },
            key: self.key,
            flags,
            chunks: Vec::new(),
        }
    }
}

/// How a conversation's sends are cut into TCP segments and what happens
/// to them.
#[derive(Clone, Debug)]
pub struct Segmenting {
    /// Largest segment (a send longer than this is cut at random points).
    pub mss: usize,
    /// Split the kernel's pieces at random points too.
    pub split_pieces: bool,
    /// Repeat this percentage of records (retransmitted segments walked again).
    pub duplicate_percent: usize,
}

impl Default for Segmenting {
    fn default() -> Self {
        Self {
            mss: 1448,
            split_pieces: false,
            duplicate_percent: 0,
        }
    }
}

/// The client and server keys of a connection at one observation point:
/// 10.0.0.1:40000 → 10.0.0.2:50051 on interface `ifindex`.
pub fn keys(ifindex: u32, client_port: u16) -> (FlowKey, FlowKey) {
    let mut c = FlowKey {
        ifindex,
        src_port: client_port,
        dst_port: 50051,
        protocol: flowd_common::PROTO_TCP,
        family: flowd_common::FAMILY_IPV4,
        direction: flowd_common::DIR_INGRESS,
        ..FlowKey::default()
    };
    c.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    c.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
    let s = super::reversed(&c);
    (c, s)
}

/// Kernel time of send `i` (every record of a send carries it).
pub fn send_ts(i: usize) -> u64 {
    1_000_000_000 + i as u64 * 1_000_000
}

/// A conversation's records in send order, as the kernel sends them, and
/// the send each record belongs to.
pub fn records(
    wire: &Wire,
    client_key: FlowKey,
    server_key: FlowKey,
    seg: &Segmenting,
    rng: &mut Rng,
) -> Vec<(usize, H2Record)> {
    let mut models = [
        KernelModel::new(&wire.client, client_key, 0x1000_0000),
        KernelModel::new(&wire.server, server_key, 0xffff_ff00),
    ];
    for m in &mut models {
        m.split_pieces = seg.split_pieces;
    }
    let mut at = [0usize; 2];
    let mut out = Vec::new();
    for (i, &(side, end)) in wire.sends.iter().enumerate() {
        let si = side as usize;
        let stream = match side {
            Side::Client => &wire.client,
            Side::Server => &wire.server,
        };
        while at[si] < end {
            let n = if end - at[si] > seg.mss {
                1 + rng.below(seg.mss)
            } else {
                end - at[si]
            };
            for r in models[si].segment(stream, at[si], at[si] + n, send_ts(i), rng) {
                let copy = rng.chance(seg.duplicate_percent).then(|| H2Record {
                    flags: 0,
                    ..r.clone()
                });
                out.push((i, r));
                // A retransmitted segment walked again: the same pieces.
                if let Some(c) = copy {
                    out.push((i, c));
                }
            }
            at[si] += n;
        }
    }
    out
}
