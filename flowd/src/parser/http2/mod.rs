//! HTTP/2 and gRPC from the kernel frame walker's records (EV_H2).
//!
//! Data flow, per record (one packet's pieces of one direction):
//!
//! 1. [`stream_walk`]: follow the direction's frames from the pieces and
//!    check each piece lands where the walk expects it (a mismatch is a
//!    loss, as is the kernel's `H2_F_LOST`);
//! 2. header blocks (HEADERS or PUSH_PROMISE plus CONTINUATIONs) are
//!    reassembled and decoded by the direction's [`hpack::Decoder`];
//! 3. [`streams`]: per stream, the request head, the response head and
//!    trailers, DATA bytes and gRPC message counts;
//! 4. [`flow`]: a REQUEST record when a request's header block is complete,
//!    a RESPONSE record when the response ends (END_STREAM, RST_STREAM, a
//!    GOAWAY that excludes the stream).
//!
//! A connection is the two directions of one TCP connection at one
//! observation point (ifindex), keyed like HTTP/1's pairing ([`ConnKey`]).
//! Which side is the client: the one the kernel saw send the preface
//! (`H2_F_PREFACE`), else the one whose header blocks carry request
//! pseudo-headers (or the peer of the one sending `:status`).
//!
//! Never guessing: header fields flowd could not decode (dynamic-table
//! entries it did not see, because it joined the connection in its middle or
//! lost bytes) stay empty and the record is flagged `partial`. State is
//! bounded ([`H2Limits`]) and every eviction is counted ([`H2Stats`]).

pub mod flow;
pub mod hpack;
pub mod stream_walk;
pub mod streams;
pub mod testkit;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use flowd_common::{
    DIR_EGRESS, DIR_INGRESS, FlowKey, H2_F_LOST, H2_F_PREFACE, H2_F_START, PROTO_TCP,
};
use flowd_proto::flow::Http;

use crate::datapath::H2Record;
use crate::parser::HttpConfig;
use crate::parser::pairing::ConnKey;
use flow::End;
use hpack::{Decoder, HuffmanDecoder};
use stream_walk::{
    CONTINUATION, DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY,
    Frame, FrameHeader, GOAWAY, HEADERS, PUSH_PROMISE, PieceOutcome, RST_STREAM, SETTINGS, Walk,
};
use streams::{Head, Request, Stream};

/// Bounds of the HTTP/2 state (`flowd-l7-http2-*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2Limits {
    /// Connections tracked (both directions, one observation point); the
    /// least recently used one is evicted.
    pub max_connections: usize,
    /// Open streams tracked per connection; the oldest (lowest id) is evicted.
    pub max_streams: usize,
    /// Longest header block (HEADERS + CONTINUATIONs) decoded; a longer one
    /// leaves its direction's HPACK state unknown (its message is partial).
    pub max_header_block: usize,
    /// Idle time (kernel clock) after which a connection is forgotten.
    pub max_age_ns: u64,
}

impl Default for H2Limits {
    fn default() -> Self {
        Self {
            max_connections: 8_192,
            max_streams: 256,
            max_header_block: 65_536,
            max_age_ns: 30_000_000_000,
        }
    }
}

/// Counters of the HTTP/2 parser (flowd's own metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    pub requests: u64,
    pub responses: u64,
    /// REQUEST/RESPONSE records flagged `partial`.
    pub partial_messages: u64,
    /// Walk losses the kernel flagged (H2_F_LOST).
    pub losses_kernel: u64,
    /// Walk losses flowd found itself (a piece out of place, an impossible
    /// frame, a connection start that is not HTTP/2's).
    pub losses_parser: u64,
    /// Pieces that repeated bytes already walked.
    pub duplicate_pieces: u64,
    /// Header blocks that gave no record, by reason.
    pub blocks_oversized: u64,
    pub blocks_hpack_error: u64,
    pub blocks_malformed: u64,
    /// Neither a request nor a response could be told (nothing decodable).
    pub blocks_unclassified: u64,
    pub connections_evicted_capacity: u64,
    pub connections_evicted_timeout: u64,
    /// Streams forgotten before their response ended (stream limit,
    /// connection evicted or expired, connection restarted).
    pub streams_evicted: u64,
    /// Current sizes.
    pub connections: u64,
    pub streams: u64,
}

/// A record the tracker completed, before it becomes a flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The key of the packets' direction: client → server for a request,
    /// server → client for a response.
    pub key: FlowKey,
    pub response: bool,
    pub http: Http,
    pub exchange_id: u64,
    /// Responses: request HEADERS to the end of the response (kernel clock).
    pub latency_ns: u64,
    /// A response whose request flowd did not see.
    pub unpaired: bool,
}

/// A header block being reassembled.
#[derive(Debug)]
struct Block {
    stream: u32,
    push: bool,
    end_stream: bool,
    buf: Vec<u8>,
    oversized: bool,
}

/// HPACK and header-block state of one direction.
#[derive(Debug)]
struct Dir {
    hpack: Decoder,
    block: Option<Block>,
    /// The walk started at the connection's start: its first frame must be
    /// a SETTINGS frame (the connection preface).
    awaiting_settings: bool,
    /// Started at the server's first SETTINGS, no header block since: a
    /// client preface seen after it opens the same connection.
    fresh: bool,
}

impl Dir {
    fn new() -> Self {
        Self {
            hpack: Decoder::new(false),
            block: None,
            awaiting_settings: false,
            fresh: false,
        }
    }
}

/// What both directions share.
#[derive(Debug)]
struct Shared {
    /// Side (0 or 1, see [`canonical`]) of the client, once known.
    client: Option<usize>,
    streams: BTreeMap<u32, Stream>,
    /// Highest client stream id seen: a client header block on a lower id
    /// that is not open is a stream's trailers, not a request.
    max_client_stream: u32,
}

struct Conn {
    walks: [Walk; 2],
    dirs: [Dir; 2],
    shared: Shared,
    /// The last key seen of each side's packets.
    keys: [Option<FlowKey>; 2],
    last_ts_ns: u64,
    tick: u64,
    /// Kernel and wall-clock time of the TCP FIN or RST that ends the
    /// connection: its open streams end without a status once
    /// [`CLOSE_GRACE_NS`] passed (records of the packets before the FIN may
    /// still be on their way).
    closing: Option<(u64, u64)>,
}

/// How long after its FIN or RST a connection's open streams are ended.
pub const CLOSE_GRACE_NS: u64 = 500_000_000;

impl Conn {
    fn new(limits: &H2Limits, ts_ns: u64) -> Self {
        Self {
            walks: [
                Walk::new(limits.max_header_block),
                Walk::new(limits.max_header_block),
            ],
            dirs: [Dir::new(), Dir::new()],
            shared: Shared {
                client: None,
                streams: BTreeMap::new(),
                max_client_stream: 0,
            },
            keys: [None, None],
            last_ts_ns: ts_ns,
            tick: 0,
            closing: None,
        }
    }
}

/// The connection key in a fixed orientation (lower endpoint first) and
/// which side (0: the lower endpoint) sent `k`'s packets.
fn canonical(k: &FlowKey) -> (ConnKey, usize) {
    let a = (k.src_addr, k.src_port);
    let b = (k.dst_addr, k.dst_port);
    let (lo, hi, side) = if a <= b { (a, b, 0) } else { (b, a, 1) };
    (
        ConnKey {
            ifindex: k.ifindex,
            protocol: k.protocol,
            client: lo,
            server: hi,
        },
        side,
    )
}

/// The key of the reverse direction at the same observation point.
fn reversed(k: &FlowKey) -> FlowKey {
    FlowKey {
        src_addr: k.dst_addr,
        dst_addr: k.src_addr,
        src_port: k.dst_port,
        dst_port: k.src_port,
        direction: if k.direction == DIR_INGRESS {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        },
        ..*k
    }
}

/// The HTTP/2 state of one parser.
pub struct Tracker {
    limits: H2Limits,
    conns: HashMap<ConnKey, Conn, ahash::RandomState>,
    /// Connections by last use (tick): the first is the least recently used.
    lru: BTreeMap<u64, ConnKey>,
    tick: u64,
    huffman: HuffmanDecoder,
    stats: H2Stats,
}

/// What a frame handler needs, borrowed from the tracker and the connection.
struct Ctx<'a> {
    side: usize,
    ts_ns: u64,
    dir: &'a mut Dir,
    shared: &'a mut Shared,
    huffman: &'a mut HuffmanDecoder,
    cfg: &'a HttpConfig,
    limits: &'a H2Limits,
    stats: &'a mut H2Stats,
    next_exchange: &'a mut u64,
    out: &'a mut Vec<Done>,
}

#[derive(Debug)]
struct Done {
    response: bool,
    http: Http,
    exchange_id: u64,
    latency_ns: u64,
    unpaired: bool,
}

impl Tracker {
    pub fn new(limits: H2Limits) -> Self {
        Self {
            limits: H2Limits {
                max_connections: limits.max_connections.max(1),
                max_streams: limits.max_streams.max(1),
                ..limits
            },
            conns: HashMap::default(),
            lru: BTreeMap::new(),
            tick: 0,
            huffman: HuffmanDecoder::new(),
            stats: H2Stats::default(),
        }
    }

    pub fn limits(&self) -> &H2Limits {
        &self.limits
    }

    pub fn stats(&self) -> H2Stats {
        H2Stats {
            connections: self.conns.len() as u64,
            streams: self
                .conns
                .values()
                .map(|c| c.shared.streams.len() as u64)
                .sum(),
            ..self.stats
        }
    }

    /// Walks one record; the records it completes are appended to `out`.
    pub fn record(
        &mut self,
        rec: &H2Record,
        cfg: &HttpConfig,
        next_exchange: &mut u64,
        out: &mut Vec<Message>,
    ) {
        if rec.key.protocol != PROTO_TCP {
            return;
        }
        let (ck, side) = canonical(&rec.key);
        let ts = rec.header.ts_ns;
        let start = rec.flags & H2_F_START != 0;
        let lost = rec.flags & H2_F_LOST != 0;
        let preface = rec.flags & H2_F_PREFACE != 0;
        if !self.conns.contains_key(&ck) && !start {
            // A direction that never started: nothing to follow.
            return;
        }
        let tick = self.next_tick();
        if !self.conns.contains_key(&ck) && self.conns.len() >= self.limits.max_connections {
            self.evict_lru();
        }
        let limits = self.limits;
        let conn = self
            .conns
            .entry(ck)
            .or_insert_with(|| Conn::new(&limits, ts));
        if conn.tick != 0 {
            self.lru.remove(&conn.tick);
        }
        conn.tick = tick;
        conn.last_ts_ns = conn.last_ts_ns.max(ts);
        self.lru.insert(tick, ck);
        // The client's preface on a connection flowd already knew is a new
        // connection on the old one's 4-tuple, unless all flowd knew was
        // the server's first SETTINGS (servers often send it first).
        let server_start_only = conn.keys[side].is_none()
            && conn.shared.client.is_none()
            && conn.shared.streams.is_empty();
        if start && preface && !lost && !server_start_only {
            let mut old = std::mem::replace(conn, Conn::new(&limits, ts));
            conn.tick = tick;
            self.stats.streams_evicted += old.shared.streams.len() as u64;
            // The server's SETTINGS can reach the hook before the client's
            // preface: that start is the new connection's, not the old one's.
            let other = 1 - side;
            if old.dirs[other].fresh {
                std::mem::swap(&mut conn.walks[other], &mut old.walks[other]);
                std::mem::swap(&mut conn.dirs[other], &mut old.dirs[other]);
                conn.keys[other] = old.keys[other];
            }
        }
        conn.keys[side] = Some(rec.key);
        if lost {
            self.stats.losses_kernel += 1;
            side_lost(conn, side);
        }
        if start {
            if let Some(first) = rec.chunks.first() {
                conn.walks[side].start(first.seq);
            }
            let dir = &mut conn.dirs[side];
            dir.block = None;
            // After the client's preface comes its SETTINGS (RFC 9113
            // §3.4). A start without H2_F_LOST is a connection's start (the
            // client's preface or the server's first SETTINGS, which the
            // kernel checked); with it, a place the kernel proved is a frame
            // header in the middle of a connection, whose table is unknown.
            dir.hpack = Decoder::new(!lost);
            dir.awaiting_settings = !lost;
            dir.fresh = !lost && !preface;
            if preface {
                conn.shared.client = Some(side);
            }
        } else if lost {
            conn.walks[side].lose();
        }
        let mut done = Vec::new();
        let Conn {
            walks,
            dirs,
            shared,
            ..
        } = conn;
        let mut ctx = Ctx {
            side,
            ts_ns: ts,
            dir: &mut dirs[side],
            shared,
            huffman: &mut self.huffman,
            cfg,
            limits: &self.limits,
            stats: &mut self.stats,
            next_exchange,
            out: &mut done,
        };
        let mut lost_here = false;
        for c in &rec.chunks {
            let outcome = walks[side].piece(c.seq, &c.bytes, &mut |f| ctx.frame(f));
            match outcome {
                PieceOutcome::Walked | PieceOutcome::Ignored => {}
                PieceOutcome::Duplicate => ctx.stats.duplicate_pieces += 1,
                PieceOutcome::Lost(_) => {
                    ctx.stats.losses_parser += 1;
                    lost_here = true;
                    break;
                }
            }
        }
        if lost_here {
            side_lost(conn, side);
        }
        self.emit(&ck, side, rec.key, done, out);
    }

    /// Turns completed records of connection `ck` into messages with the
    /// keys of their directions (`side`/`key`: the direction being walked).
    fn emit(
        &mut self,
        ck: &ConnKey,
        side: usize,
        key: FlowKey,
        done: Vec<Done>,
        out: &mut Vec<Message>,
    ) {
        let Some(conn) = self.conns.get(ck) else {
            return;
        };
        if done.is_empty() {
            return;
        }
        let client = conn.shared.client.unwrap_or(side);
        let server = 1 - client;
        let client_key = conn.keys[client]
            .or_else(|| conn.keys[server].as_ref().map(reversed))
            .unwrap_or(key);
        let server_key = conn.keys[server].unwrap_or_else(|| reversed(&client_key));
        for d in done {
            if d.response {
                self.stats.responses += 1;
            } else {
                self.stats.requests += 1;
            }
            if d.http.partial {
                self.stats.partial_messages += 1;
            }
            out.push(Message {
                key: if d.response { server_key } else { client_key },
                response: d.response,
                http: d.http,
                exchange_id: d.exchange_id,
                latency_ns: d.latency_ns,
                unpaired: d.unpaired,
            });
        }
    }

    /// A TCP FIN or RST of the connection of `key` at kernel time `ts_ns`
    /// (`time_unix_ns` on the wall clock): see [`Tracker::ended`].
    pub fn tcp_end(&mut self, key: &FlowKey, ts_ns: u64, time_unix_ns: u64) {
        let (ck, _) = canonical(key);
        if let Some(c) = self.conns.get_mut(&ck) {
            c.closing.get_or_insert((ts_ns, time_unix_ns));
        }
    }

    /// Connections whose FIN or RST is older than [`CLOSE_GRACE_NS`] at
    /// kernel time `now_ns` are forgotten; their open streams' responses end
    /// without a status (appended to `out` with the wall-clock time of the
    /// FIN or RST).
    pub fn ended(&mut self, now_ns: u64, cfg: &HttpConfig, out: &mut Vec<(Message, u64)>) {
        let ended: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.closing
                    .is_some_and(|(ts, _)| ts.saturating_add(CLOSE_GRACE_NS) <= now_ns)
            })
            .map(|(k, _)| *k)
            .collect();
        for ck in ended {
            let Some(conn) = self.conns.get_mut(&ck) else {
                continue;
            };
            let Some((ts, wall)) = conn.closing else {
                continue;
            };
            let streams = std::mem::take(&mut conn.shared.streams);
            let done: Vec<Done> = streams.into_values().map(|s| gone(s, ts, cfg)).collect();
            let side = conn.shared.client.unwrap_or(0);
            let key = conn.keys[side].or(conn.keys[1 - side]);
            let mut msgs = Vec::new();
            if let Some(key) = key {
                self.emit(&ck, side, key, done, &mut msgs);
            }
            out.extend(msgs.into_iter().map(|m| (m, wall)));
            if let Some(c) = self.conns.remove(&ck) {
                self.lru.remove(&c.tick);
            }
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn evict_lru(&mut self) {
        if let Some((_, victim)) = self.lru.pop_first()
            && let Some(c) = self.conns.remove(&victim)
        {
            self.stats.connections_evicted_capacity += 1;
            self.stats.streams_evicted += c.shared.streams.len() as u64;
        }
    }

    /// Forgets connections idle for longer than the age limit at kernel
    /// time `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(self.limits.max_age_ns);
        while let Some((&tick, key)) = self.lru.first_key_value() {
            let key = *key;
            match self.conns.get(&key) {
                Some(c) if c.last_ts_ns >= cutoff => break,
                Some(_) => {
                    if let Some(c) = self.conns.remove(&key) {
                        self.stats.connections_evicted_timeout += 1;
                        self.stats.streams_evicted += c.shared.streams.len() as u64;
                    }
                }
                None => {}
            }
            self.lru.remove(&tick);
        }
    }
}

/// The RESPONSE record of a stream whose connection ended at `ts_ns`.
fn gone(mut s: Stream, ts_ns: u64, cfg: &HttpConfig) -> Done {
    s.client.end();
    s.server.end();
    let http = flow::response(&s, End::Gone, cfg);
    let (exchange_id, latency_ns) = s
        .request
        .as_ref()
        .map_or((0, 0), |r| (r.exchange_id, ts_ns.saturating_sub(r.ts_ns)));
    Done {
        response: true,
        http,
        exchange_id,
        latency_ns,
        unpaired: s.request.is_none(),
    }
}

/// Bytes of `side` were lost: its HPACK state and the header block in
/// progress are gone, its DATA counts are no longer exact, and a response
/// head may have been lost with them.
fn side_lost(conn: &mut Conn, side: usize) {
    let dir = &mut conn.dirs[side];
    dir.hpack.restart();
    dir.block = None;
    dir.awaiting_settings = false;
    dir.fresh = false;
    let client = conn.shared.client;
    for s in conn.shared.streams.values_mut() {
        match client {
            Some(c) if c == side => s.client.lose(),
            Some(_) => {
                s.server.lose();
                s.response_partial = true;
            }
            None => {
                s.client.lose();
                s.server.lose();
                s.response_partial = true;
            }
        }
    }
}

/// The header block fragment of a HEADERS or PUSH_PROMISE frame: padding,
/// priority and the promised stream id removed. None: the frame's lengths
/// contradict each other.
fn fragment(h: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let mut start = 0usize;
    let mut end = payload.len();
    if h.has(FLAG_PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if h.kind == HEADERS && h.has(FLAG_PRIORITY) {
        start += 5;
    }
    if h.kind == PUSH_PROMISE {
        start += 4;
    }
    payload.get(start..end)
}

impl Ctx<'_> {
    /// One frame of this direction; false: the frame cannot be where the
    /// walk put it (the walk is then lost).
    fn frame(&mut self, f: &Frame<'_>) -> bool {
        let h = f.header;
        if self.dir.awaiting_settings {
            self.dir.awaiting_settings = false;
            if h.kind != SETTINGS || h.has(FLAG_ACK) {
                return false;
            }
        }
        if let Some(block) = &mut self.dir.block {
            // RFC 9113 §6.10: nothing but CONTINUATIONs of the same stream
            // until END_HEADERS.
            if h.kind != CONTINUATION || h.stream != block.stream {
                return false;
            }
            if f.oversized || block.buf.len() + f.payload.len() > self.limits.max_header_block {
                block.oversized = true;
                block.buf = Vec::new();
            } else {
                block.buf.extend_from_slice(f.payload);
            }
            if h.has(FLAG_END_HEADERS)
                && let Some(b) = self.dir.block.take()
            {
                self.block(b);
            }
            return true;
        }
        match h.kind {
            HEADERS | PUSH_PROMISE => {
                self.dir.fresh = false;
                let (buf, oversized) = if f.oversized {
                    (Vec::new(), true)
                } else {
                    match fragment(h, f.payload) {
                        Some(frag) => (frag.to_vec(), false),
                        None => return false,
                    }
                };
                let b = Block {
                    stream: h.stream,
                    push: h.kind == PUSH_PROMISE,
                    end_stream: h.kind == HEADERS && h.has(FLAG_END_STREAM),
                    buf,
                    oversized,
                };
                if h.has(FLAG_END_HEADERS) {
                    self.block(b);
                } else {
                    self.dir.block = Some(b);
                }
            }
            CONTINUATION => return false,
            DATA => return self.data(h, f.payload),
            RST_STREAM => {
                let code = f
                    .payload
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if self.shared.streams.contains_key(&h.stream) {
                    self.finish(h.stream, End::Reset(code));
                }
            }
            GOAWAY => {
                if let Some(b) = f.payload.get(..4) {
                    let last = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                    self.goaway(last);
                }
            }
            _ => {}
        }
        true
    }

    fn data(&mut self, h: FrameHeader, payload: &[u8]) -> bool {
        let (data_len, prefix) = if h.has(FLAG_PADDED) {
            let Some(&pad) = payload.first() else {
                return false;
            };
            match h.len.checked_sub(1 + u32::from(pad)) {
                Some(n) => (n, &payload[1..]),
                None => return false,
            }
        } else {
            (h.len, payload)
        };
        let prefix = &prefix[..prefix.len().min(data_len as usize)];
        let Some(client) = self.shared.client else {
            return true;
        };
        let Some(s) = self.shared.streams.get_mut(&h.stream) else {
            return true;
        };
        let end = h.has(FLAG_END_STREAM);
        if self.side == client {
            s.client.frame(data_len, prefix);
            if end {
                s.client_ended = true;
                s.client.end();
            }
        } else {
            s.server.frame(data_len, prefix);
            if end {
                self.finish(h.stream, End::Complete);
            }
        }
        true
    }

    /// A GOAWAY from this side: the peer's streams above `last` were not
    /// processed and end without a status.
    fn goaway(&mut self, last: u32) {
        let Some(client) = self.shared.client else {
            return;
        };
        if self.side == client {
            return; // the client's GOAWAY concerns server-initiated (pushed) streams
        }
        let gone: Vec<u32> = self
            .shared
            .streams
            .range(last.saturating_add(1)..)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.finish(id, End::Gone);
        }
    }

    /// A complete header block of this direction.
    fn block(&mut self, b: Block) {
        let mut head = Head::default();
        if b.oversized {
            self.stats.blocks_oversized += 1;
            self.dir.hpack.restart();
            head.unknown = 1;
        } else {
            let cfg = self.cfg;
            let r = self
                .dir
                .hpack
                .decode(&b.buf, self.huffman, |f| head.add(f, cfg));
            if r.is_err() {
                self.stats.blocks_hpack_error += 1;
                head = Head {
                    unknown: 1,
                    ..Head::default()
                };
            }
        }
        if b.push {
            return; // decoded to keep the table in step; pushes are not reported
        }
        let request_shape = head.has_request_pseudo();
        if head.malformed || (request_shape && head.status.is_some()) {
            self.stats.blocks_malformed += 1;
            return;
        }
        if self.shared.client.is_none() {
            if request_shape {
                self.shared.client = Some(self.side);
            } else if head.status.is_some() {
                self.shared.client = Some(1 - self.side);
            }
        }
        match self.shared.client {
            Some(c) if c == self.side => self.client_block(b.stream, head, b.end_stream),
            Some(_) => self.server_block(b.stream, head, b.end_stream),
            None => self.stats.blocks_unclassified += 1,
        }
    }

    fn insert_stream(&mut self, id: u32, s: Stream) {
        if self.shared.streams.len() >= self.limits.max_streams
            && self.shared.streams.pop_first().is_some()
        {
            self.stats.streams_evicted += 1;
        }
        self.shared.streams.insert(id, s);
    }

    fn client_block(&mut self, id: u32, head: Head, end_stream: bool) {
        if id.is_multiple_of(2) {
            self.stats.blocks_malformed += 1;
            return;
        }
        if let Some(s) = self.shared.streams.get_mut(&id) {
            // The request's trailers.
            if end_stream {
                s.client_ended = true;
                s.client.end();
            }
            return;
        }
        if id <= self.shared.max_client_stream {
            return; // trailers of a stream already answered
        }
        self.shared.max_client_stream = id;
        if !head.has_request_pseudo() {
            // Nothing of the request decoded (or the trailers of a stream
            // that began before flowd saw the connection): its response is
            // reported unpaired.
            self.stats.blocks_unclassified += 1;
            let mut s = Stream::new(None);
            s.client_ended = end_stream;
            self.insert_stream(id, s);
            return;
        }
        *self.next_exchange += 1;
        let req = Request {
            partial: head.unknown > 0,
            head,
            ts_ns: self.ts_ns,
            exchange_id: *self.next_exchange,
        };
        self.out.push(Done {
            response: false,
            http: flow::request(&req, self.cfg),
            exchange_id: req.exchange_id,
            latency_ns: 0,
            unpaired: false,
        });
        let mut s = Stream::new(Some(req));
        if end_stream {
            s.client_ended = true;
        }
        self.insert_stream(id, s);
    }

    fn server_block(&mut self, id: u32, head: Head, end_stream: bool) {
        if !self.shared.streams.contains_key(&id) {
            if id.is_multiple_of(2) {
                return; // a pushed stream's response
            }
            self.insert_stream(id, Stream::new(None));
        }
        let Some(s) = self.shared.streams.get_mut(&id) else {
            return;
        };
        s.response_partial |= head.unknown > 0;
        if s.response.is_none() {
            match head.status {
                // 1xx heads precede the final one.
                Some(c) if c < 200 => return,
                Some(_) => s.response = Some(head),
                // Trailers whose response head flowd did not see.
                None if end_stream => s.trailers = Some(head),
                // A head whose :status was not decoded.
                None if head.unknown > 0 => s.response = Some(head),
                None => {
                    self.stats.blocks_malformed += 1;
                    return;
                }
            }
        } else {
            s.trailers = Some(head);
        }
        if end_stream {
            self.finish(id, End::Complete);
        }
    }

    /// The response of stream `id` ended: its RESPONSE record.
    fn finish(&mut self, id: u32, end: End) {
        let Some(mut s) = self.shared.streams.remove(&id) else {
            return;
        };
        s.client.end();
        s.server.end();
        let http = flow::response(&s, end, self.cfg);
        let (exchange_id, latency_ns) = s.request.as_ref().map_or((0, 0), |r| {
            (r.exchange_id, self.ts_ns.saturating_sub(r.ts_ns))
        });
        self.out.push(Done {
            response: true,
            http,
            exchange_id,
            latency_ns,
            unpaired: s.request.is_none(),
        });
    }
}
