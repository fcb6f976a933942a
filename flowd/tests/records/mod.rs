//! Ring-buffer records encoded as the kernel submits them, for tests and
//! benches that feed the one decoder (`flowd::datapath::decode`).
use std::mem::size_of;

use flowd::datapath::L7Record;
use flowd_common::{FlowEvent, L7_MAX_PAYLOAD, L7Event};

/// The bytes of a repr(C) kernel event.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is one of flowd_common's repr(C) events with explicit
    // padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// The whole `L7Event` as the kernel submits it; payload bytes beyond
/// `payload_len` are zero.
#[allow(dead_code)]
pub fn encode_l7(r: &L7Record) -> Vec<u8> {
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
    bytes_of(&ev)
}

/// A flow event as the kernel submits it.
#[allow(dead_code)]
pub fn encode_flow(ev: &FlowEvent) -> Vec<u8> {
    bytes_of(ev)
}
