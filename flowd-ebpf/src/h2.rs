//! The HTTP/2 frame walker (`flowd_tc_h2`), a program of its own that the
//! TC full paths tail-call for the payload of an HTTP/2 flow direction
//! (or of a candidate: a connection's first payload, or a connection seen
//! from the middle on a configured HTTP/2 port). Its own program so that its
//! loops and helper calls have their own verifier budget and stack, and the
//! full paths stay as they were.
//!
//! Per flow direction (`FlowKey`: hook and interface included) `H2_WALK`
//! keeps where the next byte to walk is in TCP sequence space and what the
//! current frame still needs (header bytes, payload to copy, payload to
//! skip). Each packet is walked from there, one step per frame header,
//! payload piece to copy or payload to skip, in a `bpf_loop` (a 64 KiB GSO
//! buffer can hold thousands of frames). What the walk hands user space is
//! described on `flowd_common::H2Event`; it is built in the per-CPU scratch
//! and sent with `bpf_ringbuf_output` at its used length.
//!
//! Losing the walk is never silent: a sequence gap, an evicted state, a
//! full ring or a packet with more steps than `H2_MAX_STEPS` is counted by
//! cause and sets H2_F_LOST on the next event; the walker then waits for a
//! segment it can prove starts at a frame header ([`sync_check`]) and sends
//! H2_F_START from there. It never sends a piece it is not sure of.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering::Relaxed, atomic_and, atomic_cxchg, atomic_or},
    mem::{offset_of, size_of},
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::generated::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    programs::TcContext,
};
use flowd_common::{
    CNT_EVENTS_LOST, CNT_EVENTS_SUBMITTED, CNT_H2_BUSY, CNT_H2_EVENTS, CNT_H2_LOST_EVICTED,
    CNT_H2_LOST_GAP, CNT_H2_LOST_LIMIT, CNT_H2_LOST_RING, CNT_H2_START_PREFACE,
    CNT_H2_START_SETTINGS, CNT_H2_SYNCS, EV_H2, FLOW_L7_H2, FLOW_L7_NO_H2, FLOW_L7_OFF,
    FLOW_L7_PROBED, FlowKey, H2_DATA_COPY, H2_F_LOST, H2_F_PREFACE, H2_F_START, H2_GOAWAY_COPY,
    H2_MAX_BYTES, H2_MAX_PIECES, H2_MAX_STEPS, H2Event, H2W_RESTART, H2W_SYNCED, H2Walk,
    L7_PORT_H2, SLOT_F_L7_OFF, TCP_SYN, TRANSITION_SYN, TRANSITION_SYN_ACK,
};

use crate::{
    EVENTS, FLOWS, H2_SCRATCH, H2_WALK, L7_PORTS, cache_index, cache_slot, count, flags_word,
    header, l7, parse::L4, wake_flags_len,
};

/// The full path's note to the walker, in `skb->cb` (TC programs' scratch
/// space; it survives the tail call): zeroed before the full path's
/// `observe`, which writes it with context stores (no map lookup, no value
/// live across `observe`: either multiplies the states the verifier
/// explores in the full paths, which are close to its budget). The walker
/// reads it and zeroes it again, so a full-path run leaves `cb` zeroed.
/// `cb[0]`: 0 (nothing), NOTE_WALK (the flow is HTTP/2), or NOTE_SEEN with
/// the flags word's transitions (bits 0..16, NOTE_STARTED_MASK of them),
/// l7_state (bits 16..24) and NOTE_RECOGNISED; `cb[1..4]`: the payload's TCP
/// sequence number, packet offset and length; `cb[4]`: the packet's TCP
/// flags (a SYN restarts the flow's L7 state).
pub type Note = [u32; 5];
pub const NOTE_WALK: u32 = 1 << 31;
pub const NOTE_SEEN: u32 = 1 << 30;
pub const NOTE_RECOGNISED_SHIFT: u32 = 29;
pub const NOTE_STARTED_MASK: u32 = (TRANSITION_SYN | TRANSITION_SYN_ACK) as u32;
pub const NOTE_STATE_MASK: u32 = 0xff << 16;

/// `cb[0..4]` for a payload.
#[inline(always)]
pub fn note(word: u32, l4: &L4) -> [u32; 4] {
    [
        word,
        l4.tcp_seq,
        l4.payload_off as u32,
        l4.payload_len as u32,
    ]
}

#[inline(always)]
fn read_cb(skb: *mut __sk_buff) -> Note {
    // SAFETY: reads of __sk_buff context fields.
    unsafe { core::array::from_fn(|i| read_volatile(addr_of!((*skb).cb[i]))) }
}

/// Writes `cb[0..N]`.
#[inline(always)]
pub fn write_cb<const N: usize>(skb: *mut __sk_buff, v: [u32; N]) {
    for (i, v) in v.into_iter().enumerate() {
        // SAFETY: writes of __sk_buff.cb, scratch space for TC programs.
        unsafe { write_volatile(addr_of_mut!((*skb).cb[i]), v) };
    }
}

#[inline(always)]
pub fn write_cb_flags(skb: *mut __sk_buff, flags: u16) {
    // SAFETY: a write of __sk_buff.cb, scratch space for TC programs.
    unsafe { write_volatile(addr_of_mut!((*skb).cb[4]), flags as u32) };
}

/// Whether the full path's note calls for the walker ([`mode`] is Some),
/// in arithmetic rather than branches (it runs in the full paths, where
/// each branch multiplies the verifier's states): HTTP/1.x keep-alive
/// payloads and flows already decided do not pay the tail call.
#[inline(always)]
pub fn wanted(skb: *mut __sk_buff) -> bool {
    let cb = read_cb(skb);
    let w = cb[0];
    let decided = (w >> 16) & (FLOW_L7_PROBED | FLOW_L7_OFF | FLOW_L7_NO_H2) as u32;
    // 1 when any of those bits is set (decided ≤ 0xff).
    let decided = (decided + 0xff) >> 8;
    let recognised = w >> NOTE_RECOGNISED_SHIFT & 1;
    let seen = w >> 30 & 1;
    let walk = w >> 31;
    let syn = cb[4] >> 1 & 1;
    const _: () = assert!(NOTE_WALK == 1 << 31 && NOTE_SEEN == 1 << 30 && TCP_SYN == 2);
    walk | syn | seen & ((recognised | decided) ^ 1) != 0
}

/// Copies the flow key into the scratch for the walker; false if there is
/// no scratch (cannot happen for a per-CPU array with one entry).
#[inline(always)]
pub fn stash_key(key: &FlowKey) -> bool {
    let Some(sc) = H2_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch, this run's alone (see Scratch).
    unsafe {
        copy_words::<6>(
            addr_of_mut!((*sc).key).cast(),
            (key as *const FlowKey).cast(),
        )
    };
    true
}

/// What the note asks of the walker: `MODE_*`, or None.
#[inline(always)]
fn mode(cb: &Note) -> Option<u8> {
    let w = cb[0];
    let state = (w >> 16) as u8;
    if cb[4] & TCP_SYN as u32 != 0 {
        Some(MODE_NEW)
    } else if w & NOTE_WALK != 0 {
        Some(MODE_WALK)
    } else if w & NOTE_SEEN == 0
        || state & (FLOW_L7_PROBED | FLOW_L7_OFF | FLOW_L7_NO_H2) != 0
        || w >> NOTE_RECOGNISED_SHIFT & 1 != 0
    {
        None
    } else if w & NOTE_STARTED_MASK != 0 {
        Some(MODE_RECOGNISE)
    } else {
        Some(MODE_SYNC)
    }
}

/// What the full path's note asks of the walker ([`mode`]).
/// The flow is HTTP/2 (FLOW_L7_H2): walk the payload.
pub const MODE_WALK: u8 = 1;
/// The first payload of a connection whose start was seen, neither HTTP/1.x
/// nor DNS: the client preface or a server SETTINGS frame starts a walk;
/// anything else (long enough to tell) marks the flow FLOW_L7_OFF.
pub const MODE_RECOGNISE: u8 = 2;
/// A payload of a connection seen from the middle on an HTTP/2 port: a walk
/// starts if its frames can be followed ([`sync_check`]).
pub const MODE_SYNC: u8 = 3;
/// A SYN or SYN-ACK: a new connection, maybe on the 4-tuple of an earlier
/// one whose flow entry lives on. Its l7_state and walk are forgotten.
pub const MODE_NEW: u8 = 4;

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 section 3.4) as three
/// little-endian words (immediates, no read-only data section).
const PREFACE: [u64; 3] = [
    u64::from_le_bytes(*b"PRI * HT"),
    u64::from_le_bytes(*b"TP/2.0\r\n"),
    u64::from_le_bytes(*b"\r\nSM\r\n\r\n"),
];
const PREFACE_LEN: u32 = 24;
pub const FRAME_HDR: u32 = 9;
/// Most bytes of a server's first SETTINGS frame taken as one: 40
/// parameters (RFC 9113 defines 6, extensions a few more).
const SETTINGS_MAX_LEN: u32 = 40 * 6;
/// Largest frame a resynchronisation accepts: the default (and minimum)
/// SETTINGS_MAX_FRAME_SIZE. Peers may raise it; a segment with a larger
/// frame only does not serve as a point to resynchronise at.
const SYNC_MAX_FRAME: u32 = 16384;
/// Bytes loaded at a frame header: the header and the DATA prefix after it
/// (one helper call for a small DATA frame).
const HDR_LOAD: u32 = FRAME_HDR + H2_DATA_COPY;

const TYPE_DATA: u8 = 0;
const TYPE_HEADERS: u8 = 1;
const TYPE_PRIORITY: u8 = 2;
const TYPE_RST_STREAM: u8 = 3;
const TYPE_SETTINGS: u8 = 4;
const TYPE_PUSH_PROMISE: u8 = 5;
const TYPE_PING: u8 = 6;
const TYPE_GOAWAY: u8 = 7;
const TYPE_WINDOW_UPDATE: u8 = 8;
const TYPE_CONTINUATION: u8 = 9;

/// Per-CPU scratch: the full path's request, the walk being done and the
/// event being built. Programs do not migrate and TC runs do not nest on a
/// CPU, so between the full path's tail call and the end of the walker it
/// is this packet's alone.
#[repr(C)]
pub struct Scratch {
    /// Written by the full path ([`stash_key`]).
    key: FlowKey,
    /// Event time, read once per run when the first event is sent.
    ts: u64,
    // The walk of this packet.
    /// Working copy of the direction's H2_WALK entry (`busy` unused).
    w: H2Walk,
    /// Packet offsets of the next byte to walk and of the payload's end.
    pos: u32,
    end: u32,
    /// sync_check: frame headers seen, and the verdict (`SYNC_*`).
    frames: u32,
    verdict: u32,
    /// Frame header bytes of a sync_check and of a recognition (words:
    /// aligned for the preface comparison).
    tmp: [u64; 4],
    ev: H2Event,
    /// Room for loads at the end of `ev.bytes` whose length the verifier
    /// only knows to be at most H2_MAX_BYTES.
    _slack: [u8; H2_MAX_BYTES + 16],
}

const SYNC_UNDECIDED: u32 = 0;
const SYNC_OK: u32 = 1;
const SYNC_FAIL: u32 = 2;

/// The bpf_loop callbacks' context, on the walker's stack.
#[repr(C)]
struct Cx {
    skb: *mut __sk_buff,
    sc: *mut Scratch,
}

/// Copies `n` (1..=H2_MAX_BYTES, checked by the caller) payload bytes at
/// packet offset `off` to `dst`. The mask keeps the size's range visible
/// to the verifier.
///
/// # Safety
/// `dst` must have room for H2_MAX_BYTES bytes.
#[inline(always)]
unsafe fn load(skb: *mut __sk_buff, off: u32, dst: *mut u8, n: u32) -> bool {
    let n = ((core::hint::black_box(n).wrapping_sub(1)) & (H2_MAX_BYTES as u32 - 1)) + 1;
    // SAFETY: caller's contract; the helper writes at most `n` bytes.
    unsafe { bpf_skb_load_bytes(skb.cast(), off, dst.cast(), n) == 0 }
}

/// `ev.bytes` at offset `at` (masked: the verifier sees at most 1023 of the
/// 1040 bytes of `bytes` and the slack after it).
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn ev_bytes(sc: *mut Scratch, at: u32) -> *mut u8 {
    // SAFETY: caller's contract; within bytes + _slack.
    unsafe {
        addr_of_mut!((*sc).ev.bytes)
            .cast::<u8>()
            .add((at & (H2_MAX_BYTES as u32 - 1)) as usize)
    }
}

/// Frame length, type and flags of the 9-byte header at `h`; the stream id
/// with its reserved bit.
///
/// # Safety
/// `h` must point to 9 readable bytes.
#[inline(always)]
unsafe fn frame_header(h: *const u8) -> (u32, u8, u8, u32) {
    // SAFETY: caller's contract.
    unsafe {
        let b = |i: usize| read_volatile(h.add(i));
        let len = (b(0) as u32) << 16 | (b(1) as u32) << 8 | b(2) as u32;
        let sid = (b(5) as u32) << 24 | (b(6) as u32) << 16 | (b(7) as u32) << 8 | b(8) as u32;
        (len, b(3), b(4), sid)
    }
}

/// Payload bytes of a frame the walker copies (the rest is skipped).
#[inline(always)]
fn copied(ty: u8, len: u32) -> u32 {
    match ty {
        TYPE_HEADERS | TYPE_CONTINUATION | TYPE_PUSH_PROMISE | TYPE_RST_STREAM => len,
        TYPE_GOAWAY => len.min(H2_GOAWAY_COPY),
        TYPE_DATA => len.min(H2_DATA_COPY),
        _ => 0,
    }
}

/// Whether a frame header is one a peer following RFC 9113 sends, as far
/// as the header alone tells: a known type, only its defined flags, the
/// stream id it needs, its fixed length, at most SYNC_MAX_FRAME bytes.
/// Only used to find a place to start a walk in the middle of a
/// connection; a walk already in step follows every frame.
#[inline(always)]
fn plausible(len: u32, ty: u8, flags: u8, sid: u32) -> bool {
    if sid & 0x8000_0000 != 0 || len > SYNC_MAX_FRAME {
        return false;
    }
    let stream0 = sid == 0;
    // (flags allowed, stream 0 required (1) / forbidden (2) / either (0), length rule)
    let (allowed, stream, ok_len) = match ty {
        TYPE_DATA => (0x09, 2, true),
        TYPE_HEADERS => (0x2d, 2, true),
        TYPE_PRIORITY => (0, 2, len == 5),
        TYPE_RST_STREAM => (0, 2, len == 4),
        TYPE_SETTINGS => (0x01, 1, len.is_multiple_of(6) && (flags == 0 || len == 0)),
        TYPE_PUSH_PROMISE => (0x0c, 2, len >= 4),
        TYPE_PING => (0x01, 1, len == 8),
        TYPE_GOAWAY => (0, 1, len >= 8),
        TYPE_WINDOW_UPDATE => (0, 0, len == 4),
        TYPE_CONTINUATION => (0x04, 2, true),
        _ => return false,
    };
    ok_len
        && flags & !allowed == 0
        && match stream {
            1 => stream0,
            2 => !stream0,
            _ => true,
        }
}

/// One step of [`sync_check`]: the frame header at `pos` must be plausible;
/// the walk must end exactly at the segment's end, or in a frame that
/// continues after it once at least one whole frame came before.
unsafe extern "C" fn sync_step(_i: u64, cx: *mut c_void) -> i64 {
    // SAFETY: `cx` is the walker's Cx; its pointers are valid for the run.
    unsafe {
        let cx = cx.cast::<Cx>();
        let (skb, sc) = ((*cx).skb, (*cx).sc);
        let (pos, end) = ((*sc).pos, (*sc).end);
        if pos == end {
            (*sc).verdict = SYNC_OK;
            return 1;
        }
        // A header cut by the segment's end cannot be checked.
        if pos > end || end - pos < FRAME_HDR {
            (*sc).verdict = SYNC_FAIL;
            return 1;
        }
        let h = addr_of_mut!((*sc).tmp).cast::<u8>();
        if !load(skb, pos, h, FRAME_HDR) {
            (*sc).verdict = SYNC_FAIL;
            return 1;
        }
        let (len, ty, flags, sid) = frame_header(h);
        if !plausible(len, ty, flags, sid) {
            (*sc).verdict = SYNC_FAIL;
            return 1;
        }
        (*sc).frames += 1;
        let next = pos + FRAME_HDR + len;
        if next > end {
            (*sc).verdict = if (*sc).frames >= 2 {
                SYNC_OK
            } else {
                SYNC_FAIL
            };
            return 1;
        }
        (*sc).pos = next;
        0
    }
}

/// Whether the payload from `pos` is a run of plausible frames (see
/// [`sync_step`]). Leaves `pos` changed.
///
/// # Safety
/// `cx` must hold the run's skb and scratch.
#[inline(always)]
unsafe fn sync_check(cx: &mut Cx) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        let sc = cx.sc;
        (*sc).frames = 0;
        (*sc).verdict = SYNC_UNDECIDED;
        bpf_loop(
            H2_MAX_STEPS,
            sync_step as *const () as *mut c_void,
            (cx as *mut Cx).cast(),
            0,
        );
        (*sc).verdict == SYNC_OK
    }
}

/// Sends the event being built, if it holds anything, and empties it. A full
/// ring loses the walk's bytes from here to the next frame header
/// (H2W_RESTART), where an event with H2_F_START | H2_F_LOST starts.
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn flush(sc: *mut Scratch) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        let ev = addr_of_mut!((*sc).ev);
        if (*ev).pieces == 0 {
            return true;
        }
        let n = ((*ev).bytes_len as usize) & (H2_MAX_BYTES * 2 - 1);
        let size = offset_of!(H2Event, bytes) + n;
        if (*sc).ts == 0 {
            (*sc).ts = bpf_ktime_get_ns();
        }
        (*ev).header = header(EV_H2, (*sc).ts);
        let rec = core::slice::from_raw_parts(ev.cast::<u8>(), size);
        let ok = EVENTS.output::<[u8]>(rec, wake_flags_len(size)).is_ok();
        let flags = (*ev).flags;
        (*ev).pieces = 0;
        (*ev).bytes_len = 0;
        (*ev).flags = 0;
        if ok {
            count(CNT_EVENTS_SUBMITTED, 1);
            count(CNT_H2_EVENTS, 1);
        } else {
            count(CNT_EVENTS_LOST, 1);
            count(CNT_H2_LOST_RING, 1);
            (*sc).w.state |= H2W_RESTART;
            (*sc).w.flags |= H2_F_LOST | (flags & H2_F_PREFACE);
        }
        ok
    }
}

/// Makes room in the event for `n` more bytes at `seq` (a new piece
/// unless it continues the last one). False if a flush was needed and the
/// ring was full.
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn room(sc: *mut Scratch, seq: u32, n: u32) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        let ev = addr_of_mut!((*sc).ev);
        let p = (*ev).pieces as usize;
        let full = (*ev).bytes_len as u32 + n > H2_MAX_BYTES as u32
            || p >= H2_MAX_PIECES && !continues(sc, seq);
        !full || flush(sc)
    }
}

/// Whether bytes at `seq` continue the event's last piece.
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn continues(sc: *mut Scratch, seq: u32) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        let ev = addr_of_mut!((*sc).ev);
        let p = (*ev).pieces as usize;
        if p == 0 {
            return false;
        }
        let last = addr_of!((*ev).piece[(p - 1) & (H2_MAX_PIECES - 1)]);
        (*last).seq.wrapping_add((*last).len as u32) == seq
    }
}

/// Records `n` bytes at `seq`, already copied to the end of `ev.bytes`, as
/// a piece (merged into the last one if they continue it). The caller made
/// room. An event's first piece takes the walk's pending `H2_F_*` flags.
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn add_piece(sc: *mut Scratch, seq: u32, n: u32) {
    // SAFETY: caller's contract.
    unsafe {
        let ev = addr_of_mut!((*sc).ev);
        let p = (*ev).pieces as usize;
        if continues(sc, seq) {
            let last = addr_of_mut!((*ev).piece[(p - 1) & (H2_MAX_PIECES - 1)]);
            (*last).len += n as u16;
        } else {
            if p == 0 {
                (*ev).flags = (*sc).w.flags;
                (*sc).w.flags = 0;
            }
            let piece = addr_of_mut!((*ev).piece[p & (H2_MAX_PIECES - 1)]);
            (*piece).seq = seq;
            (*piece).len = n as u16;
            (*piece)._pad = 0;
            (*ev).pieces = p as u8 + 1;
        }
        (*ev).bytes_len += n as u16;
    }
}

/// Moves the walk `n` bytes on.
///
/// # Safety
/// `sc` must point to the scratch.
#[inline(always)]
unsafe fn advance(sc: *mut Scratch, n: u32) {
    // SAFETY: caller's contract.
    unsafe {
        (*sc).pos += n;
        (*sc).w.next_seq = (*sc).w.next_seq.wrapping_add(n);
    }
}

/// Steps a packet waits for its direction's walk (a few tens of µs at most,
/// then the packet is left and counted, as before the wait).
const WAIT_STEPS: u32 = 1 << 13;

/// [`wait_step`]'s context, on the walker's stack.
#[repr(C)]
struct WaitCx {
    st: *mut H2Walk,
    seq: u32,
    /// 1 once this run holds the walk.
    held: u32,
}

/// One step of waiting for the direction's walk. TCP sends a connection's
/// segments from several CPUs at once (the writer's, and the one that
/// handles the ACKs), so a segment can reach the hook while another CPU
/// walks the one before it, or just before that CPU starts to: wait until
/// the walk is free and has reached this segment, rather than lose the
/// walk. The last step takes a free walk even if bytes before this segment
/// are still missing (a gap).
unsafe extern "C" fn wait_step(i: u64, cx: *mut c_void) -> i64 {
    // SAFETY: `cx` is the walker's WaitCx; `st` its H2_WALK entry.
    unsafe {
        let cx = &mut *(cx as *mut WaitCx);
        let st = cx.st;
        let busy = addr_of_mut!((*st).busy);
        if read_volatile(busy) != 0 || !atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(busy, 0, 1).1
        {
            return 0;
        }
        let synced = read_volatile(addr_of!((*st).state)) & H2W_SYNCED != 0;
        let ahead = cx.seq.wrapping_sub(read_volatile(addr_of!((*st).next_seq))) as i32 > 0;
        if synced && ahead && i + 1 < u64::from(WAIT_STEPS) {
            write_volatile(busy, 0);
            return 0;
        }
        cx.held = 1;
        1
    }
}

/// One step of the walk: a frame header (with the DATA prefix after it),
/// a payload piece to copy, or payload to skip.
unsafe extern "C" fn walk_step(_i: u64, cx: *mut c_void) -> i64 {
    // SAFETY: `cx` is the walker's Cx; its pointers are valid for the run.
    unsafe {
        let cx = cx.cast::<Cx>();
        let (skb, sc) = ((*cx).skb, (*cx).sc);
        let (pos, end) = ((*sc).pos, (*sc).end);
        if pos >= end {
            return 1;
        }
        let avail = end - pos;
        let seq = (*sc).w.next_seq;
        let copy = (*sc).w.copy;
        if copy > 0 {
            let mut n = copy.min(avail);
            // After a lost event: skipped up to the next frame header.
            if (*sc).w.state & H2W_RESTART == 0 {
                let left = H2_MAX_BYTES as u32 - (*sc).ev.bytes_len as u32;
                if left == 0 || !continues(sc, seq) && (*sc).ev.pieces as usize >= H2_MAX_PIECES {
                    flush(sc);
                    return 0;
                }
                n = n.min(left);
                if !load(skb, pos, ev_bytes(sc, (*sc).ev.bytes_len as u32), n) {
                    return 1;
                }
                add_piece(sc, seq, n);
            }
            (*sc).w.copy = copy - n;
            advance(sc, n);
            return 0;
        }
        let skip = (*sc).w.skip;
        if skip > 0 {
            let n = skip.min(avail);
            (*sc).w.skip = skip - n;
            advance(sc, n);
            return 0;
        }
        header_step(skb, sc, pos, avail, seq)
    }
}

/// The frame-header step of [`walk_step`]; `avail` > 0 bytes from `pos`.
///
/// # Safety
/// `skb` and `sc` as in walk_step.
#[inline(always)]
unsafe fn header_step(
    skb: *mut __sk_buff,
    sc: *mut Scratch,
    pos: u32,
    avail: u32,
    seq: u32,
) -> i64 {
    // SAFETY: caller's contract.
    unsafe {
        let w = addr_of_mut!((*sc).w);
        let have = ((*w).hdr_len as u32).min(FRAME_HDR - 1);
        if have == 0 && (*w).state & H2W_RESTART != 0 {
            (*w).state &= !H2W_RESTART;
            (*w).flags |= H2_F_START | H2_F_LOST;
        }
        let need = FRAME_HDR - have;
        // A fresh header loads the DATA prefix along (valid stream bytes
        // whatever the frame; only what the frame calls for is sent).
        let take = if have == 0 { HDR_LOAD } else { need }.min(avail);
        let mut emit = (*w).state & H2W_RESTART == 0;
        if emit && !room(sc, seq, take) {
            // Lost an event: a header that starts here starts anew;
            // the rest of a header begun earlier is only followed.
            if have == 0 {
                (*w).state &= !H2W_RESTART;
                (*w).flags |= H2_F_START | H2_F_LOST;
            } else {
                emit = false;
            }
        }
        let at = (*sc).ev.bytes_len as u32;
        let dst = ev_bytes(sc, at);
        if !load(skb, pos, dst, take) {
            return 1;
        }
        let hdr_part = take.min(need);
        // The header in one piece here, or its bytes gathered in the walk
        // state across segments.
        let h: *const u8 = if have == 0 && take >= FRAME_HDR {
            dst
        } else {
            let kept = addr_of_mut!((*w).hdr).cast::<u8>();
            for i in 0..FRAME_HDR {
                if i < hdr_part {
                    let b = read_volatile(dst.add(i as usize));
                    write_volatile(kept.add((have + i).min(FRAME_HDR - 1) as usize), b);
                }
            }
            kept
        };
        if emit {
            add_piece(sc, seq, hdr_part);
        }
        advance(sc, hdr_part);
        if hdr_part < need {
            (*w).hdr_len = (have + hdr_part) as u8;
            return 0;
        }
        (*w).hdr_len = 0;
        let (len, ty, _, _) = frame_header(h);
        let copy = copied(ty, len);
        // Bytes of the payload loaded along with the header.
        let extra = (take - hdr_part).min(copy);
        if extra > 0 {
            if emit {
                add_piece(sc, seq.wrapping_add(hdr_part), extra);
            }
            advance(sc, extra);
        }
        (*w).copy = copy - extra;
        (*w).skip = len - copy;
        0
    }
}

/// Whether the payload starts with the client preface (`Some(true)`), a
/// server's first SETTINGS frame (`Some(false)`), or neither (`None`).
///
/// # Safety
/// `cx` must hold the run's skb and scratch.
#[inline(always)]
unsafe fn recognise(cx: &Cx, off: u32, len: u32) -> Option<bool> {
    // SAFETY: caller's contract.
    unsafe {
        let words = addr_of_mut!((*cx.sc).tmp).cast::<u64>();
        let t = words.cast::<u8>();
        if len >= PREFACE_LEN && load(cx.skb, off, t, PREFACE_LEN) {
            if read_volatile(words) == PREFACE[0]
                && read_volatile(words.add(1)) == PREFACE[1]
                && read_volatile(words.add(2)) == PREFACE[2]
            {
                return Some(true);
            }
        } else if len < FRAME_HDR || !load(cx.skb, off, t, FRAME_HDR) {
            return None;
        }
        let (flen, ty, flags, sid) = frame_header(t);
        (ty == TYPE_SETTINGS
            && flags == 0
            && sid == 0
            && flen.is_multiple_of(6)
            && flen <= SETTINGS_MAX_LEN)
            .then_some(false)
    }
}

/// Whether either port is a configured HTTP/2 port.
#[inline(always)]
fn h2_port(key: &FlowKey) -> bool {
    let h2 = |port: u16| {
        // SAFETY: a map value, valid for this run.
        L7_PORTS
            .get_ptr(port)
            .is_some_and(|v| unsafe { *v } & L7_PORT_H2 != 0)
    };
    h2(key.dst_port) || h2(key.src_port)
}

/// ORs `bits` into the flow's l7_state.
#[inline(always)]
fn set_flow_bits(key: &FlowKey, bits: u8) {
    if let Some(s) = FLOWS.get_ptr_mut(key) {
        // SAFETY: `s` points to the flow's map value; the flags word is
        // updated atomically (see FlowStats::tcp_transitions).
        unsafe { atomic_or::<u64, u64, { Relaxed }>(flags_word(s), (bits as u64) << 32) };
    }
}

/// A new connection on the flow's 4-tuple: its l7_state (bits 32..40 of
/// the flags word) and its walk go. This CPU's flow-cache slot may hold the
/// flow with FLOW_L7_OFF from before: cleared too (the full path that
/// tail-called the walker filled it, on this CPU).
#[inline(always)]
fn forget(key: &FlowKey) {
    let Some(s) = FLOWS.get_ptr_mut(key) else {
        return;
    };
    let fw = flags_word(s);
    // SAFETY: `s` points to the flow's map value; the flags word is
    // updated atomically (see FlowStats::tcp_transitions).
    unsafe {
        // Most SYNs start a flow that has learnt nothing yet: no walk
        // either (a walk exists only while FLOW_L7_H2 is set).
        if read_volatile(fw) >> 32 & 0xff == 0 {
            return;
        }
        atomic_and::<u64, u64, { Relaxed }>(fw, !(0xffu64 << 32));
    }
    let _ = H2_WALK.remove(key);
    if let Some(c) = cache_slot(cache_index(key)) {
        // SAFETY: this CPU's slot; the key's 6 words compared.
        unsafe {
            let a = addr_of!((*c).key).cast::<u64>();
            let b = (key as *const FlowKey).cast::<u64>();
            let mut diff = 0;
            for i in 0..6 {
                diff |= read_volatile(a.add(i)) ^ read_volatile(b.add(i));
            }
            if diff == 0 {
                (*c).flags &= !SLOT_F_L7_OFF;
            }
        }
    }
}

/// A new walk state: in step at `next_seq`, or (None) waiting to resynchronise.
#[inline(always)]
fn new_state(next_seq: Option<u32>, flags: u8) -> H2Walk {
    H2Walk {
        next_seq: next_seq.unwrap_or(0),
        copy: 0,
        skip: 0,
        hdr_len: 0,
        state: if next_seq.is_some() { H2W_SYNCED } else { 0 },
        flags,
        _pad: 0,
        hdr: [0; 9],
        _pad2: [0; 7],
        busy: 0,
    }
}

/// The walker program's body.
#[inline(always)]
pub fn walk(ctx: &TcContext) {
    let Some(sc) = H2_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let mut cx = Cx {
        skb: ctx.as_ptr().cast(),
        sc,
    };
    let cb = read_cb(cx.skb);
    write_cb(cx.skb, [0; 5]);
    let Some(mode) = mode(&cb) else {
        return;
    };
    let (seq, off, len) = (cb[1], cb[2], cb[3]);
    // SAFETY: `sc` is this CPU's scratch, its key written by the full path
    // that tail-called this program for the same packet.
    unsafe {
        let key = &*addr_of!((*sc).key);
        if mode == MODE_NEW {
            forget(key);
            return;
        }
        let end = off.wrapping_add(len);
        (*sc).end = end;
        (*sc).ts = 0;
        (*sc).ev.pieces = 0;
        (*sc).ev.bytes_len = 0;
        (*sc).ev.flags = 0;
        (*sc).ev._pad = 0;
        copy_words::<6>(
            addr_of_mut!((*sc).ev.key).cast(),
            (key as *const FlowKey).cast(),
        );

        let mut st = H2_WALK.get_ptr_mut(key);
        // Where this packet's walk starts, for a walk that starts here.
        let mut start: Option<(u32, u8)> = None;
        match mode {
            // Decided by the first payload long enough to tell.
            MODE_RECOGNISE => match recognise(&cx, off, len) {
                Some(client) => {
                    let (skip, flags, cnt) = if client {
                        (PREFACE_LEN, H2_F_START | H2_F_PREFACE, CNT_H2_START_PREFACE)
                    } else {
                        (0, H2_F_START, CNT_H2_START_SETTINGS)
                    };
                    count(cnt, 1);
                    start = Some((skip, flags));
                    set_flow_bits(key, FLOW_L7_PROBED | FLOW_L7_H2);
                }
                None => {
                    if len as usize >= l7::DECIDE_LEN {
                        set_flow_bits(key, FLOW_L7_PROBED | FLOW_L7_OFF);
                    }
                    return;
                }
            },
            MODE_SYNC => {
                if !h2_port(key) {
                    set_flow_bits(key, FLOW_L7_NO_H2);
                    return;
                }
                if len < FRAME_HDR {
                    return;
                }
                (*sc).pos = off;
                if !sync_check(&mut cx) {
                    return;
                }
                count(CNT_H2_SYNCS, 1);
                // Begun in the middle: what came before (the HPACK tables'
                // contents) is as unknown as after a loss.
                start = Some((0, H2_F_START | H2_F_LOST));
                set_flow_bits(key, FLOW_L7_H2);
            }
            _ => {
                if st.is_none() {
                    // Known as HTTP/2, its walk evicted (table too small).
                    count(CNT_H2_LOST_EVICTED, 1);
                    let _ = H2_WALK.insert(key, new_state(None, H2_F_LOST), 0);
                    st = H2_WALK.get_ptr_mut(key);
                }
            }
        }
        if let Some((skip, flags)) = start {
            let _ = H2_WALK.insert(key, new_state(Some(seq.wrapping_add(skip)), flags), 0);
            st = H2_WALK.get_ptr_mut(key);
        }
        let Some(st) = st else {
            // Insert failed (out of memory): the next packet counts it.
            return;
        };
        let busy = addr_of_mut!((*st).busy);
        let mut wait = WaitCx { st, seq, held: 0 };
        bpf_loop(
            WAIT_STEPS,
            wait_step as *const () as *mut c_void,
            (&mut wait as *mut WaitCx).cast(),
            0,
        );
        if wait.held == 0 {
            count(CNT_H2_BUSY, 1);
            return;
        }
        let w = addr_of_mut!((*sc).w);
        copy_words::<5>(w.cast(), st.cast());

        let mut pos = off;
        if (*w).state & H2W_SYNCED != 0 {
            let d = seq.wrapping_sub((*w).next_seq) as i32;
            if d > 0 {
                count(CNT_H2_LOST_GAP, 1);
                (*w).state = 0;
                (*w).flags |= H2_F_LOST;
            } else {
                let old = d.unsigned_abs();
                if old >= len {
                    // A retransmission of bytes already walked.
                    write_volatile(busy, 0);
                    return;
                }
                pos = off + old;
            }
        }
        if (*w).state & H2W_SYNCED == 0 {
            (*sc).pos = off;
            if !sync_check(&mut cx) {
                write_back(st, w);
                return;
            }
            count(CNT_H2_SYNCS, 1);
            (*w).next_seq = seq;
            (*w).copy = 0;
            (*w).skip = 0;
            (*w).hdr_len = 0;
            (*w).state = H2W_SYNCED;
            (*w).flags |= H2_F_START;
        }
        (*sc).pos = pos;
        bpf_loop(
            H2_MAX_STEPS,
            walk_step as *const () as *mut c_void,
            (&mut cx as *mut Cx).cast(),
            0,
        );
        flush(sc);
        if (*sc).pos < end {
            // More steps than one run takes (or a load the bounds made
            // impossible): resynchronise later.
            count(CNT_H2_LOST_LIMIT, 1);
            (*w).state = 0;
            (*w).flags |= H2_F_LOST;
        }
        write_back(st, w);
    }
}

/// Copies `N` 8-byte words (FlowKey and H2Walk are 8-byte aligned):
/// a plain struct copy may become a call to a byte-wise memcpy.
///
/// # Safety
/// Both pointers must be valid and 8-byte aligned for `N` words.
#[inline(always)]
unsafe fn copy_words<const N: usize>(dst: *mut u64, src: *const u64) {
    for i in 0..N {
        // SAFETY: caller's contract.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
}

/// Writes the walk back to its map entry and releases it (busy last).
///
/// # Safety
/// `st` must point to the H2_WALK entry this run holds, `w` to the scratch's copy.
#[inline(always)]
unsafe fn write_back(st: *mut H2Walk, w: *const H2Walk) {
    // SAFETY: caller's contract.
    unsafe {
        (*st).next_seq = (*w).next_seq;
        (*st).copy = (*w).copy;
        (*st).skip = (*w).skip;
        (*st).hdr = (*w).hdr;
        (*st).hdr_len = (*w).hdr_len;
        (*st).state = (*w).state;
        (*st).flags = (*w).flags;
        write_volatile(addr_of_mut!((*st).busy), 0);
    }
}

const _: () = assert!(size_of::<Scratch>() < 4096);
