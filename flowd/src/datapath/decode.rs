//! Length-checked decoding of ring-buffer records.
//!
//! A record shorter than its kind's layout or of an unknown kind is an
//! error the reader counts and skips: kernel data never panics user space.
use std::mem::{offset_of, size_of};

use flowd_common::{
    DropEvent, EV_DROP, EV_H2, EV_L7, EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE, EventHeader, FlowEvent,
    H2_MAX_BYTES, H2_MAX_PIECES, H2Event, H2Piece, L7_MAX_PAYLOAD, L7Event,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {need}-byte {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
}

/// Why the kernel sent a flow event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowEventKind {
    NewFlow,
    TcpFlags,
    Update,
}

impl FlowEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewFlow => "new_flow",
            Self::TcpFlags => "tcp_flags",
            Self::Update => "update",
        }
    }
}

/// The first payload bytes of an L7 message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Record {
    pub header: EventHeader,
    pub key: flowd_common::FlowKey,
    pub l7_kind: u8,
    pub transport_tcp: bool,
    pub l4_payload_len: u32,
    pub tcp_seq: u32,
    /// Only the valid bytes (≤ payload_len, ≤ what the record really held).
    pub payload: Vec<u8>,
}

impl L7Record {
    /// A record as the kernel would capture it: the first `L7_MAX_PAYLOAD`
    /// bytes of `l4_payload` (tests, benches, replay tools).
    pub fn captured(
        key: flowd_common::FlowKey,
        l7_kind: u8,
        ts_ns: u64,
        tcp_seq: u32,
        l4_payload: &[u8],
    ) -> Self {
        let n = l4_payload.len().min(L7_MAX_PAYLOAD);
        Self {
            header: EventHeader {
                kind: EV_L7,
                ts_ns,
                ..EventHeader::default()
            },
            key,
            l7_kind,
            transport_tcp: key.protocol == flowd_common::PROTO_TCP,
            l4_payload_len: u32::try_from(l4_payload.len()).unwrap_or(u32::MAX),
            tcp_seq,
            payload: l4_payload[..n].to_vec(),
        }
    }
}

/// One piece of an HTTP/2 frame stream (see [`H2Event`]), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Chunk {
    /// TCP sequence number of `bytes[0]`.
    pub seq: u32,
    pub bytes: Vec<u8>,
}

/// An HTTP/2 frame-walker record (EV_H2), owned: the pieces in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Record {
    pub header: EventHeader,
    pub key: flowd_common::FlowKey,
    /// `H2_F_*` bits.
    pub flags: u8,
    pub chunks: Vec<H2Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Flow(FlowEventKind, FlowEvent),
    L7(L7Record),
    H2(H2Record),
    Drop(DropEvent),
}

/// Copies a `T` out of `buf` after checking the length.
fn read<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            len: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length is checked above; every `T` used here is a repr(C)
    // struct of integers and byte arrays, valid for any bit pattern, and
    // read_unaligned makes no alignment assumption about the ring buffer.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let header: EventHeader = read(buf, "event header")?;
    let flow_kind = match header.kind {
        EV_NEW_FLOW => Some(FlowEventKind::NewFlow),
        EV_TCP_FLAGS => Some(FlowEventKind::TcpFlags),
        EV_UPDATE => Some(FlowEventKind::Update),
        _ => None,
    };
    if let Some(kind) = flow_kind {
        return Ok(Record::Flow(kind, read(buf, "flow event")?));
    }
    match header.kind {
        EV_L7 => decode_l7(buf),
        EV_H2 => decode_h2(buf),
        EV_DROP => Ok(Record::Drop(read(buf, "drop event")?)),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// L7 records may be cut after the valid payload bytes, so only the fixed
/// part is required and the payload is bounded by what was really received.
fn decode_l7(buf: &[u8]) -> Result<Record, DecodeError> {
    let fixed = offset_of!(L7Event, payload);
    if buf.len() < fixed {
        return Err(DecodeError::Short {
            what: "L7 event",
            len: buf.len(),
            need: fixed,
        });
    }
    let header: EventHeader = read(buf, "event header")?;
    let key = read(&buf[offset_of!(L7Event, key)..], "flow key")?;
    let byte = |off: usize| buf.get(off).copied().unwrap_or(0);
    let u16_at = |off: usize| u16::from_ne_bytes([byte(off), byte(off + 1)]);
    let u32_at =
        |off: usize| u32::from_ne_bytes([byte(off), byte(off + 1), byte(off + 2), byte(off + 3)]);
    let payload_len = usize::from(u16_at(offset_of!(L7Event, payload_len)));
    let available = buf.len() - fixed;
    let n = payload_len.min(L7_MAX_PAYLOAD).min(available);
    Ok(Record::L7(L7Record {
        header,
        key,
        l7_kind: byte(offset_of!(L7Event, l7_kind)),
        transport_tcp: byte(offset_of!(L7Event, transport_tcp)) != 0,
        l4_payload_len: u32_at(offset_of!(L7Event, l4_payload_len)),
        tcp_seq: u32_at(offset_of!(L7Event, tcp_seq)),
        payload: buf[fixed..fixed + n].to_vec(),
    }))
}

/// H2 records may be cut after their valid bytes too. Pieces claiming more
/// bytes than the record holds are an error: their stream positions would lie.
fn decode_h2(buf: &[u8]) -> Result<Record, DecodeError> {
    let fixed = offset_of!(H2Event, bytes);
    if buf.len() < fixed {
        return Err(DecodeError::Short {
            what: "HTTP/2 event",
            len: buf.len(),
            need: fixed,
        });
    }
    let header: EventHeader = read(buf, "event header")?;
    let key = read(&buf[offset_of!(H2Event, key)..], "flow key")?;
    let flags = buf[offset_of!(H2Event, flags)];
    let pieces = usize::from(buf[offset_of!(H2Event, pieces)]).min(H2_MAX_PIECES);
    let data = &buf[fixed..buf.len().min(fixed + H2_MAX_BYTES)];
    let mut chunks = Vec::with_capacity(pieces);
    let mut at = 0usize;
    for i in 0..pieces {
        let p: H2Piece = read(
            &buf[offset_of!(H2Event, piece) + i * size_of::<H2Piece>()..],
            "HTTP/2 piece",
        )?;
        let end = at + usize::from(p.len);
        let Some(bytes) = data.get(at..end) else {
            return Err(DecodeError::Short {
                what: "HTTP/2 event's pieces",
                len: buf.len(),
                need: fixed + end,
            });
        };
        chunks.push(H2Chunk {
            seq: p.seq,
            bytes: bytes.to_vec(),
        });
        at = end;
    }
    Ok(Record::H2(H2Record {
        header,
        key,
        flags,
        chunks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_common::{FlowKey, L7_HTTP_REQUEST};

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) POD value as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn every_truncation_of_a_flow_event_is_an_error_not_a_panic() {
        let mut ev = FlowEvent::default();
        ev.header.kind = EV_NEW_FLOW;
        ev.key.src_port = 1234;
        ev.stats.packets = 7;
        let b = bytes_of(&ev);
        for len in 0..b.len() {
            assert!(decode(&b[..len]).is_err(), "len {len}");
        }
        assert_eq!(
            decode(&b),
            Ok(Record::Flow(FlowEventKind::NewFlow, ev)),
            "full record"
        );
    }

    #[test]
    fn a_captured_record_survives_the_ring() {
        let r = L7Record::captured(
            FlowKey::default(),
            L7_HTTP_REQUEST,
            42,
            7,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let mut ev = L7Event {
            header: r.header,
            key: r.key,
            l7_kind: r.l7_kind,
            transport_tcp: u8::from(r.transport_tcp),
            payload_len: r.payload.len() as u16,
            l4_payload_len: r.l4_payload_len,
            tcp_seq: r.tcp_seq,
            _pad: [0; 4],
            payload: [0; L7_MAX_PAYLOAD],
        };
        ev.payload[..r.payload.len()].copy_from_slice(&r.payload);
        assert_eq!(decode(&bytes_of(&ev)), Ok(Record::L7(r)));
    }

    #[test]
    fn h2_pieces_are_split_in_order_and_bounded_by_the_record() {
        let mut ev = H2Event {
            header: EventHeader {
                kind: EV_H2,
                ..Default::default()
            },
            key: FlowKey::default(),
            flags: flowd_common::H2_F_START,
            pieces: 2,
            bytes_len: 12,
            _pad: 0,
            piece: [H2Piece::default(); H2_MAX_PIECES],
            bytes: [0; H2_MAX_BYTES],
        };
        ev.piece[0] = H2Piece {
            seq: 100,
            len: 9,
            _pad: 0,
        };
        ev.piece[1] = H2Piece {
            seq: 200,
            len: 3,
            _pad: 0,
        };
        ev.bytes[..12].copy_from_slice(b"123456789abc");
        let b = bytes_of(&ev);
        let Ok(Record::H2(r)) = decode(&b) else {
            panic!("not decoded")
        };
        assert_eq!(r.flags, flowd_common::H2_F_START);
        assert_eq!(
            r.chunks,
            vec![
                H2Chunk {
                    seq: 100,
                    bytes: b"123456789".to_vec()
                },
                H2Chunk {
                    seq: 200,
                    bytes: b"abc".to_vec()
                },
            ]
        );
        let fixed = offset_of!(H2Event, bytes);
        // Cut inside the second piece: an error, not a shorter piece.
        assert!(decode(&b[..fixed + 10]).is_err());
        assert!(decode(&b[..fixed - 1]).is_err());
        // More pieces than the array holds are clamped, lengths still checked.
        ev.pieces = 200;
        ev.piece = [H2Piece {
            seq: 1,
            len: 100,
            _pad: 0,
        }; H2_MAX_PIECES];
        assert!(decode(&bytes_of(&ev)).is_err());
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let h = EventHeader {
            kind: 200,
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(200)));
    }

    #[test]
    fn l7_payload_is_bounded_by_len_field_and_record() {
        let mut ev = L7Event {
            header: EventHeader {
                kind: EV_L7,
                ..Default::default()
            },
            key: FlowKey::default(),
            l7_kind: L7_HTTP_REQUEST,
            transport_tcp: 1,
            payload_len: 14,
            l4_payload_len: 100,
            tcp_seq: 9,
            _pad: [0; 4],
            payload: [0; L7_MAX_PAYLOAD],
        };
        ev.payload[..14].copy_from_slice(b"GET / HTTP/1.1");
        let b = bytes_of(&ev);
        let Ok(Record::L7(r)) = decode(&b) else {
            panic!("not decoded")
        };
        assert_eq!(r.payload, b"GET / HTTP/1.1");
        // Record cut after 5 payload bytes: only those 5 are returned.
        let fixed = offset_of!(L7Event, payload);
        let Ok(Record::L7(r)) = decode(&b[..fixed + 5]) else {
            panic!("not decoded")
        };
        assert_eq!(r.payload, b"GET /");
        // A lying length field cannot read past the record.
        ev.payload_len = u16::MAX;
        let Ok(Record::L7(r)) = decode(&bytes_of(&ev)) else {
            panic!("not decoded")
        };
        assert_eq!(r.payload.len(), L7_MAX_PAYLOAD);
        assert!(decode(&b[..fixed - 1]).is_err());
    }
}
