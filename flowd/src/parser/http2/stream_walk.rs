//! Following one direction's HTTP/2 frames from the kernel walker's pieces.
//!
//! The kernel sends the 9-byte header of every frame and the part of its
//! payload [`copy_len`] says, as pieces `(tcp seq, bytes)` in stream order
//! (see `flowd_common::H2Event`). [`Walk`] keeps the sequence number of the
//! next byte it needs: a piece must start exactly there (a piece that lies
//! wholly before it is a copy of bytes already walked and is ignored); a
//! piece that starts later, or bytes the kernel was not to send, mean bytes
//! were lost, and the walk waits for the kernel to start it again
//! (`H2_F_START`). Frame headers are checked against RFC 9113's fixed
//! lengths and stream rules: one that breaks them means the walk is not on a
//! frame boundary (or the connection is no HTTP/2) and is a loss too.

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Frame flags.
pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const FRAME_HEADER_LEN: usize = 9;

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let l = self.len.to_be_bytes();
        let s = self.stream.to_be_bytes();
        [
            l[1], l[2], l[3], self.kind, self.flags, s[0], s[1], s[2], s[3],
        ]
    }

    pub fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether the header breaks a rule no HTTP/2 peer breaks (a fixed
    /// payload length, a frame on the wrong kind of stream): the walk is not
    /// on a frame boundary.
    pub fn plausible(self) -> bool {
        let on_stream = self.stream != 0;
        match self.kind {
            DATA | HEADERS | CONTINUATION | PUSH_PROMISE => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && (!self.has(FLAG_ACK) || self.len == 0)
            }
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            // Extension frames (RFC 9113 §5.5) are skipped.
            _ => true,
        }
    }
}

/// Bytes of a frame's payload the kernel walker copies (the contract of
/// `flowd_common::H2Event`).
pub fn copy_len(h: FrameHeader) -> u32 {
    match h.kind {
        HEADERS | CONTINUATION | PUSH_PROMISE | RST_STREAM => h.len,
        GOAWAY => h.len.min(flowd_common::H2_GOAWAY_COPY),
        DATA => h.len.min(flowd_common::H2_DATA_COPY),
        _ => 0,
    }
}

/// A frame the walk completed: its header and the copied part of its
/// payload (all of it for HEADERS, CONTINUATION, PUSH_PROMISE, RST_STREAM).
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub payload: &'a [u8],
    /// The payload was longer than the walk keeps (`max_payload`): `payload`
    /// is empty.
    pub oversized: bool,
}

/// Why the walk lost its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// A piece started after the next byte the walk needed.
    Gap,
    /// A piece held bytes the kernel does not copy.
    Unexpected,
    /// A frame header no HTTP/2 peer sends.
    Implausible,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for H2_F_START.
    Lost,
    /// Reading a frame header, `have` bytes of it so far.
    Header { have: u8 },
    /// Reading the copied part of `header`'s payload, `got` bytes of `copy` so far.
    Payload {
        header: FrameHeader,
        copy: u32,
        got: u32,
    },
}

/// The walk of one direction.
#[derive(Debug)]
pub struct Walk {
    state: State,
    /// TCP sequence number of the next byte the walk needs.
    next: u32,
    head: [u8; FRAME_HEADER_LEN],
    payload: Vec<u8>,
    max_payload: usize,
}

/// What a piece did to the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceOutcome {
    Walked,
    /// A copy of bytes already walked.
    Duplicate,
    /// The walk is lost (waiting for H2_F_START): the piece was ignored.
    Ignored,
    /// The walk lost its place at this piece.
    Lost(Loss),
}

impl Walk {
    /// A walk that waits for its start. `max_payload`: longest copied
    /// payload kept (the header-block limit).
    pub fn new(max_payload: usize) -> Self {
        Self {
            state: State::Lost,
            next: 0,
            head: [0; FRAME_HEADER_LEN],
            payload: Vec::new(),
            max_payload,
        }
    }

    /// The walk (re)starts with a frame header at `seq` (H2_F_START).
    pub fn start(&mut self, seq: u32) {
        self.state = State::Header { have: 0 };
        self.next = seq;
        self.payload.clear();
    }

    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Stops the walk until the next start (the caller found a loss).
    pub fn lose(&mut self) {
        self.state = State::Lost;
        self.payload = Vec::new();
    }

    fn lost(&mut self, why: Loss) -> PieceOutcome {
        self.lose();
        PieceOutcome::Lost(why)
    }

    /// Walks one piece, calling `on_frame` for each frame it completes.
    /// `on_frame` returns false when the frame makes no sense where it is
    /// (the walk is then lost, as for an implausible header).
    pub fn piece(
        &mut self,
        seq: u32,
        mut bytes: &[u8],
        on_frame: &mut impl FnMut(&Frame<'_>) -> bool,
    ) -> PieceOutcome {
        if self.state == State::Lost {
            return PieceOutcome::Ignored;
        }
        // Serial-number arithmetic: a piece before `next` is a copy.
        let ahead = seq.wrapping_sub(self.next) as i32;
        if ahead > 0 {
            return self.lost(Loss::Gap);
        }
        if ahead < 0 {
            let behind = ahead.unsigned_abs() as usize;
            if behind >= bytes.len() {
                return PieceOutcome::Duplicate;
            }
            bytes = &bytes[behind..];
        }
        while !bytes.is_empty() {
            let mut skipped = false;
            match self.state {
                State::Lost => return PieceOutcome::Lost(Loss::Unexpected),
                State::Header { have } => {
                    let have = usize::from(have);
                    let n = (FRAME_HEADER_LEN - have).min(bytes.len());
                    self.head[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.next = self.next.wrapping_add(n as u32);
                    if have + n < FRAME_HEADER_LEN {
                        self.state = State::Header {
                            have: (have + n) as u8,
                        };
                        continue;
                    }
                    let header = FrameHeader::parse(&self.head);
                    if !header.plausible() {
                        return self.lost(Loss::Implausible);
                    }
                    self.payload.clear();
                    let copy = copy_len(header);
                    self.state = State::Payload {
                        header,
                        copy,
                        got: 0,
                    };
                    if copy == 0 {
                        match self.finish(header, copy, on_frame) {
                            Some(s) => skipped = s,
                            None => return self.lost(Loss::Implausible),
                        }
                    }
                }
                State::Payload { header, copy, got } => {
                    let n = ((copy - got) as usize).min(bytes.len());
                    if self.payload.len() + n <= self.max_payload {
                        self.payload.extend_from_slice(&bytes[..n]);
                    }
                    bytes = &bytes[n..];
                    self.next = self.next.wrapping_add(n as u32);
                    let got = got + n as u32;
                    self.state = State::Payload { header, copy, got };
                    if got == copy {
                        match self.finish(header, copy, on_frame) {
                            Some(s) => skipped = s,
                            None => return self.lost(Loss::Implausible),
                        }
                    }
                }
            }
            // After a frame whose payload is not all copied, the next piece
            // starts at the next frame header: more bytes here are a loss.
            if skipped && !bytes.is_empty() {
                return self.lost(Loss::Unexpected);
            }
        }
        PieceOutcome::Walked
    }

    /// Hands a completed frame over and moves to the next frame header.
    /// Some(skipped): whether payload bytes were skipped; None: `on_frame`
    /// refused the frame.
    fn finish(
        &mut self,
        header: FrameHeader,
        copy: u32,
        on_frame: &mut impl FnMut(&Frame<'_>) -> bool,
    ) -> Option<bool> {
        let oversized = copy as usize > self.max_payload;
        let frame = Frame {
            header,
            payload: if oversized { &[] } else { &self.payload },
            oversized,
        };
        if !on_frame(&frame) {
            return None;
        }
        let skip = header.len - copy;
        self.next = self.next.wrapping_add(skip);
        self.state = State::Header { have: 0 };
        self.payload.clear();
        Some(skip > 0)
    }
}
