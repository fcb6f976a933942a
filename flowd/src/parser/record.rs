//! Decoding ring-buffer records, with length checks, and building them as
//! the kernel would.
//!
//! Records come from the kernel; we still never trust their length or their
//! length fields: a short or inconsistent record is an error, not a crash.

use core::mem::{offset_of, size_of};

use flowd_common::{
    EV_L7, EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE, EventHeader, FlowEvent, FlowKey, L7_DNS,
    L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_MAX_PAYLOAD, L7Event,
};

use crate::datapath::L7Record;

/// A ring-buffer record that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} bytes a {what} needs")]
    Short {
        what: &'static str,
        got: usize,
        need: usize,
    },
    #[error("record kind {0} is not the expected kind {1}")]
    WrongKind(u8, u8),
    #[error("L7 payload_len {0} exceeds the {L7_MAX_PAYLOAD}-byte payload")]
    PayloadLen(u16),
    #[error("unknown L7 kind {0}")]
    L7Kind(u8),
}

fn read<T: Copy>(buf: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            got: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: the length was checked; T is a repr(C) struct of integers and
    // integer arrays (valid for every bit pattern); read_unaligned copes with
    // the record's alignment.
    Ok(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// The kind (`EV_*`) of a record, from its header.
pub fn record_kind(buf: &[u8]) -> Result<u8, DecodeError> {
    Ok(read::<EventHeader>(buf, "event header")?.kind)
}

/// Decodes an L3/L4 flow event (EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE).
pub fn decode_flow_event(buf: &[u8]) -> Result<FlowEvent, DecodeError> {
    let ev = read::<FlowEvent>(buf, "flow event")?;
    match ev.header.kind {
        EV_NEW_FLOW | EV_TCP_FLAGS | EV_UPDATE => Ok(ev),
        k => Err(DecodeError::WrongKind(k, EV_NEW_FLOW)),
    }
}

/// Decodes an L7 event strictly: the record may hold the whole struct or stop
/// right after the valid payload bytes (a variable-length submit), but a
/// `payload_len` beyond the array or the record, or an unknown L7 kind, is an
/// error. (The ring reader, `datapath::decode`, is lenient instead: it bounds
/// the payload by what the record holds.)
pub fn decode_l7_event(buf: &[u8]) -> Result<L7Record, DecodeError> {
    const FIXED: usize = offset_of!(L7Event, payload);
    if buf.len() < FIXED {
        return Err(DecodeError::Short {
            what: "L7 event",
            got: buf.len(),
            need: FIXED,
        });
    }
    let header = read::<EventHeader>(buf, "event header")?;
    if header.kind != EV_L7 {
        return Err(DecodeError::WrongKind(header.kind, EV_L7));
    }
    let plen_at = offset_of!(L7Event, payload_len);
    let payload_len = u16::from_ne_bytes([buf[plen_at], buf[plen_at + 1]]);
    if usize::from(payload_len) > L7_MAX_PAYLOAD {
        return Err(DecodeError::PayloadLen(payload_len));
    }
    let need = FIXED + usize::from(payload_len);
    if buf.len() < need {
        return Err(DecodeError::Short {
            what: "L7 event with its payload",
            got: buf.len(),
            need,
        });
    }
    let kind = buf[offset_of!(L7Event, l7_kind)];
    if !matches!(kind, L7_HTTP_REQUEST | L7_HTTP_RESPONSE | L7_DNS) {
        return Err(DecodeError::L7Kind(kind));
    }
    let u32_at =
        |off: usize| u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
    Ok(L7Record {
        header,
        key: read::<FlowKey>(&buf[offset_of!(L7Event, key)..], "flow key")?,
        l7_kind: kind,
        transport_tcp: buf[offset_of!(L7Event, transport_tcp)] != 0,
        l4_payload_len: u32_at(offset_of!(L7Event, l4_payload_len)),
        tcp_seq: u32_at(offset_of!(L7Event, tcp_seq)),
        payload: buf[FIXED..need].to_vec(),
    })
}

/// Builds a record as the kernel would capture it: the first
/// `L7_MAX_PAYLOAD` bytes of `l4_payload` (tests, benches, fuzzing, replay tools).
pub fn l7_event(
    key: FlowKey,
    l7_kind: u8,
    ts_ns: u64,
    tcp_seq: u32,
    l4_payload: &[u8],
) -> L7Record {
    let n = l4_payload.len().min(L7_MAX_PAYLOAD);
    L7Record {
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

/// Encodes a record as the kernel submits it: the whole `L7Event`, payload
/// bytes beyond `payload_len` zero (tests, benches, fuzzing).
pub fn encode_l7_event(r: &L7Record) -> Vec<u8> {
    let n = r.payload.len().min(L7_MAX_PAYLOAD);
    let mut ev = L7Event {
        header: r.header,
        key: r.key,
        l7_kind: r.l7_kind,
        transport_tcp: u8::from(r.transport_tcp),
        payload_len: n as u16,
        l4_payload_len: r.l4_payload_len,
        tcp_seq: r.tcp_seq,
        _pad: [0; 4],
        payload: [0; L7_MAX_PAYLOAD],
    };
    ev.payload[..n].copy_from_slice(&r.payload[..n]);
    // SAFETY: L7Event is repr(C) with explicit padding fields: every byte is initialised.
    let bytes = unsafe {
        core::slice::from_raw_parts((&ev as *const L7Event).cast::<u8>(), size_of::<L7Event>())
    };
    bytes.to_vec()
}

/// Encodes a flow event as the kernel would submit it.
pub fn encode_flow_event(ev: &FlowEvent) -> Vec<u8> {
    // SAFETY: as above, repr(C) with explicit padding.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (ev as *const FlowEvent).cast::<u8>(),
            size_of::<FlowEvent>(),
        )
    };
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l7(kind: u8, payload: &[u8]) -> L7Record {
        l7_event(FlowKey::default(), kind, 42, 7, payload)
    }

    #[test]
    fn roundtrip_and_short_records() {
        let ev = l7(L7_HTTP_REQUEST, b"GET / HTTP/1.1\r\n\r\n");
        let bytes = encode_l7_event(&ev);
        assert_eq!(decode_l7_event(&bytes).unwrap(), ev);
        // Variable-length record: fixed part + payload only.
        let fixed = offset_of!(L7Event, payload);
        assert_eq!(decode_l7_event(&bytes[..fixed + 18]).unwrap(), ev);
        assert_eq!(
            decode_l7_event(&bytes[..fixed + 17]),
            Err(DecodeError::Short {
                what: "L7 event with its payload",
                got: fixed + 17,
                need: fixed + 18
            })
        );
        for n in 0..fixed {
            assert!(decode_l7_event(&bytes[..n]).is_err());
        }
        let mut bad = bytes.clone();
        bad[offset_of!(L7Event, payload_len)..][..2].copy_from_slice(&600u16.to_ne_bytes());
        assert_eq!(decode_l7_event(&bad), Err(DecodeError::PayloadLen(600)));
        let mut bad = bytes.clone();
        bad[offset_of!(L7Event, l7_kind)] = 9;
        assert_eq!(decode_l7_event(&bad), Err(DecodeError::L7Kind(9)));
        bad[0] = EV_NEW_FLOW;
        assert_eq!(
            decode_l7_event(&bad),
            Err(DecodeError::WrongKind(EV_NEW_FLOW, EV_L7))
        );
    }

    #[test]
    fn flow_event() {
        let ev = FlowEvent {
            header: EventHeader {
                kind: EV_TCP_FLAGS,
                ..EventHeader::default()
            },
            pkt_len: 60,
            ..FlowEvent::default()
        };
        let b = encode_flow_event(&ev);
        assert_eq!(decode_flow_event(&b).unwrap(), ev);
        assert!(decode_flow_event(&b[..119]).is_err());
        assert_eq!(record_kind(&b).unwrap(), EV_TCP_FLAGS);
        assert!(record_kind(&b[..15]).is_err());
    }
}
