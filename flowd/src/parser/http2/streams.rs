//! What flowd keeps of one HTTP/2 stream between its request and the end of
//! its response: the decoded heads, DATA bytes and gRPC message counts.

use super::hpack::Field;
use crate::parser::HttpConfig;

/// The fields of one header block flowd reports or needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub grpc_status: Option<String>,
    pub grpc_message: Option<String>,
    /// Headers reported in the flow (allow-listed, plus grpc-status and
    /// grpc-message), values redacted as configured.
    pub headers: Vec<(String, String)>,
    /// Fields that could not be decoded (see [`Field::Unknown`]).
    pub unknown: u32,
    /// A pseudo-header twice, a bad `:status`, request and response
    /// pseudo-headers together: no HTTP/2 peer sends it.
    pub malformed: bool,
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl Head {
    /// Adds one decoded field.
    pub fn add(&mut self, field: Field<'_>, cfg: &HttpConfig) {
        let (name, value) = match field {
            Field::Known { name, value } => (name, value),
            Field::Unknown => {
                self.unknown += 1;
                return;
            }
        };
        let set = |slot: &mut Option<String>, malformed: &mut bool| {
            if slot.is_some() {
                *malformed = true;
            }
            *slot = Some(text(value));
        };
        match name {
            b":method" => set(&mut self.method, &mut self.malformed),
            b":scheme" => set(&mut self.scheme, &mut self.malformed),
            b":authority" => set(&mut self.authority, &mut self.malformed),
            b":path" => set(&mut self.path, &mut self.malformed),
            b":status" => {
                let code = std::str::from_utf8(value)
                    .ok()
                    .filter(|s| s.len() == 3)
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|c| (100..=999).contains(c));
                if self.status.is_some() || code.is_none() {
                    self.malformed = true;
                }
                self.status = code;
            }
            n if n.first() == Some(&b':') => {} // :protocol (RFC 8441) and unknown pseudo-headers
            n => {
                // HTTP/2 field names are lower case (RFC 9113 §8.2.1); one
                // that is not UTF-8 is on no allow-list.
                let lname = std::str::from_utf8(n).unwrap_or_default();
                let report = match n {
                    b"content-type" => {
                        self.content_type = Some(text(value));
                        cfg.captures(lname)
                    }
                    b"grpc-status" => {
                        self.grpc_status = Some(text(value));
                        true
                    }
                    b"grpc-message" => {
                        self.grpc_message = Some(text(value));
                        true
                    }
                    _ => !lname.is_empty() && cfg.captures(lname),
                };
                if report {
                    let v = cfg.header_value(lname, value);
                    self.headers.push((text(n), v));
                }
            }
        }
    }

    pub fn has_request_pseudo(&self) -> bool {
        self.method.is_some()
            || self.path.is_some()
            || self.scheme.is_some()
            || self.authority.is_some()
    }

    pub fn is_grpc(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"))
    }
}

/// DATA bytes and gRPC messages one side of a stream sent.
///
/// gRPC frames each message with a 5-byte prefix (compressed flag, length).
/// The kernel copies the start of every DATA frame, so a message prefix is
/// seen when a message starts at a frame's start: counting stays exact while
/// every frame either continues the current message or starts a new one and
/// holds no other message start (`rest` is what the current message still
/// needs). A frame where a second message would start is not seen: the
/// count is no longer exact. Whether the side sent more than one message is
/// still known once its bytes exceed its first message (`first`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataCount {
    pub bytes: u64,
    pub messages: u32,
    pub exact: bool,
    rest: u64,
    /// Prefix and length of the side's first message, when it was seen.
    first: Option<u64>,
}

impl Default for DataCount {
    fn default() -> Self {
        Self {
            bytes: 0,
            messages: 0,
            exact: true,
            rest: 0,
            first: None,
        }
    }
}

/// gRPC's message prefix.
const GRPC_PREFIX: usize = 5;

impl DataCount {
    /// A count that is not exact from the start (a stream seen from its
    /// middle).
    pub fn inexact() -> Self {
        Self {
            exact: false,
            ..Self::default()
        }
    }

    /// One DATA frame: `data_len` bytes of data (padding excluded), of which
    /// `prefix` are the first (at most 5) the kernel copied.
    pub fn frame(&mut self, data_len: u32, prefix: &[u8]) {
        let len = u64::from(data_len);
        self.bytes += len;
        if !self.exact || len == 0 {
            return;
        }
        if self.rest >= len {
            self.rest -= len;
            return;
        }
        if self.rest > 0 || prefix.len() < GRPC_PREFIX {
            // A message starts inside the frame, or the prefix is split
            // across frames: not seen.
            self.exact = false;
            return;
        }
        let msg = u64::from(u32::from_be_bytes([
            prefix[1], prefix[2], prefix[3], prefix[4],
        ]));
        let total = GRPC_PREFIX as u64 + msg;
        if self.messages == 0 {
            self.first = Some(total);
        }
        self.messages = self.messages.saturating_add(1);
        if total >= len {
            self.rest = total - len;
        } else {
            self.exact = false;
        }
    }

    /// The side ended: a message still incomplete makes the count inexact.
    pub fn end(&mut self) {
        if self.rest > 0 {
            self.exact = false;
        }
    }

    /// Bytes were lost on this side.
    pub fn lose(&mut self) {
        self.exact = false;
    }

    /// Whether the side sent more than one message, if known: from the
    /// exact count once the side `ended`, or (at any time) from bytes
    /// beyond its first message (the bytes counted are never more than
    /// were sent).
    pub fn many(&self, ended: bool) -> Option<bool> {
        if self.first.is_some_and(|f| self.bytes > f) {
            Some(true)
        } else if self.exact && ended {
            Some(self.messages > 1)
        } else {
            None
        }
    }
}

/// A request seen on a stream.
#[derive(Clone, Debug)]
pub struct Request {
    pub head: Head,
    /// Kernel time of the event that completed the request's header block.
    pub ts_ns: u64,
    pub exchange_id: u64,
    /// Its header block was not wholly decoded.
    pub partial: bool,
}

/// One stream's state.
#[derive(Clone, Debug)]
pub struct Stream {
    /// None: the stream started before flowd saw it (or its request was
    /// not decoded); its response is reported unpaired.
    pub request: Option<Request>,
    /// The final response head (1xx heads are skipped) and trailers.
    pub response: Option<Head>,
    pub trailers: Option<Head>,
    pub response_partial: bool,
    pub client: DataCount,
    pub server: DataCount,
    pub client_ended: bool,
}

impl Stream {
    pub fn new(request: Option<Request>) -> Self {
        let counts = if request.is_some() {
            DataCount::default()
        } else {
            DataCount::inexact()
        };
        Self {
            request,
            response: None,
            trailers: None,
            response_partial: false,
            client: counts,
            server: counts,
            client_ended: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DataCount;

    fn prefix(len: u32) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn one_message_or_more_is_known_where_counts_are_not() {
        // One message over three frames: exact.
        let mut one = DataCount::default();
        for (n, p) in [(16_384, prefix(40_000)), (16_384, vec![]), (7_237, vec![])] {
            one.frame(n, &p);
        }
        one.end();
        assert_eq!(
            (one.exact, one.messages, one.many(true)),
            (true, 1, Some(false))
        );
        // Not ended yet: one so far, more may come.
        assert_eq!(one.many(false), None);
        // Two 10-byte messages batched in one frame (as tonic writes small
        // streamed messages): the count is hidden, "more than one" is not.
        let mut batched = DataCount::default();
        batched.frame(30, &prefix(10));
        assert!(!batched.exact);
        assert_eq!(batched.many(false), Some(true));
        // A stream seen from its middle: nothing is known.
        let mut joined = DataCount::inexact();
        joined.frame(30, &prefix(10));
        assert_eq!(joined.many(true), None);
        // A loss: bytes beyond the first message still prove a second one.
        let mut lost = DataCount::default();
        lost.frame(15, &prefix(10));
        lost.lose();
        assert_eq!(lost.many(true), None);
        lost.frame(16, &prefix(11));
        assert_eq!(lost.many(true), Some(true));
    }
}
