//! Packet access shared by the TC and XDP programs.
//!
//! Two ways in, both on every context:
//! - [`Packet::linear`]: the bounds of the linear data, for direct,
//!   bounds-checked reads at constant offsets. The parser's fast path uses it
//!   for the common header layouts (no helper call per header).
//! - [`Packet::load`] / [`Packet::copy_out`]: "copy N bytes at offset" through
//!   the load-bytes helper, which also reads what is not linear:
//!   `bpf_skb_load_bytes` reads paged/GSO skb data, `bpf_xdp_load_bytes` the
//!   fragments of multi-buffer XDP. The general parser and the L7 copy use it.
//!   Its offset is a plain helper argument, so the verifier does not need to
//!   follow every header-length combination separately (direct reads at
//!   variable offsets made the program too complex to verify).

use core::{
    mem::{MaybeUninit, size_of},
    num::NonZeroUsize,
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{
        bpf_check_mtu, bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
    },
    programs::{TcContext, XdpContext},
};
use flowd_common::L7_MAX_PAYLOAD;

/// Largest offset the parser ever reads at. Packets whose headers reach
/// further (more than 16 KiB of headers) are reported as truncated. The bound
/// also lets the verifier prove packet-pointer arithmetic safe.
pub const MAX_OFF: usize = 0x3fff;

pub trait Packet {
    /// Both hooks of the interface run this program type (TC ingress and
    /// egress; XDP has ingress only), so a flow's reverse is observed there.
    const BOTH_HOOKS: bool;
    /// HTTP/2 connections are walked (h2.rs): TC only.
    const H2: bool;

    /// Length of the whole packet (all fragments), from the first L2 byte.
    fn len(&self) -> usize;

    /// `(data, data_end)` of the linear part, for direct reads.
    fn linear(&self) -> (usize, usize);

    /// Copies `size_of::<T>()` bytes at `off`; `None` when they are not all in the packet.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;

    /// Copies `n` bytes (1..=L7_MAX_PAYLOAD) at `off` into `dst`; false when they are not all there.
    fn copy_out(&self, off: usize, dst: &mut [u8; L7_MAX_PAYLOAD], n: usize) -> bool;

    /// Wire packets this buffer stands for (GSO/GRO aggregates are several),
    /// given where the parser found the IP header and the L4 payload.
    fn segs(&self, l3_off: usize, payload_off: usize, payload_len: usize) -> u32;

    /// Leaves the HTTP/2 walker's note (`cb[0..4]` of `h2::Note`); TC only.
    #[inline(always)]
    fn note_h2(&self, _note: [u32; 4]) {}

    /// Leaves the packet's TCP flags (`cb[4]` of `h2::Note`); TC only.
    #[inline(always)]
    fn note_h2_flags(&self, _flags: u16) {}
}

/// IP packets up to this long count as one wire packet without asking the
/// device's MTU (a helper call); see [`xdp_segs`].
const XDP_SEGS_CHECK_ABOVE: usize = 1500;

/// Wire packets an XDP buffer stands for. Generic XDP runs after GRO, so a
/// buffer can be an aggregate of received segments, and XDP has no
/// `gso_segs`. GRO merges segments of one size (only the last may be
/// shorter), each at most what the device's MTU allows: ceil(payload ÷
/// (MTU − L3/L4 headers)) is a lower bound, exact when the sender's segments
/// were as large as the MTU allows (the usual case; a clamped MSS makes it
/// count short). IP packets up to 1500 bytes are not checked, so native XDP
/// at the usual MTU pays nothing: only a device with a smaller MTU receiving
/// an aggregate of small segments that short would count it as one.
#[inline(always)]
pub fn xdp_segs(ctx: *mut xdp_md, l3_off: usize, payload_off: usize, payload_len: usize) -> u32 {
    if payload_len == 0 || l3_off >= payload_off {
        return 1;
    }
    let hdr = payload_off - l3_off;
    if hdr + payload_len <= XDP_SEGS_CHECK_ABOVE {
        return 1;
    }
    let mut mtu: u32 = 0;
    // SAFETY: our own context; ifindex 0 is the receiving device, whose MTU
    // the helper writes to `mtu` (the return value is about a length check
    // we do not ask for).
    if unsafe { bpf_check_mtu(ctx.cast(), 0, &mut mtu, 0, 0) } < 0 {
        return 1;
    }
    let mtu = mtu as usize;
    if hdr + payload_len <= mtu {
        return 1;
    }
    match NonZeroUsize::new(mtu.saturating_sub(hdr)) {
        Some(seg) => ((payload_len + seg.get() - 1) / seg).min(u16::MAX as usize) as u32,
        None => 1,
    }
}

/// Direct read of `T` at `data + off` if it lies within the linear data.
/// Meant for constant (or small, bounded) offsets.
#[inline(always)]
pub fn direct<T: Copy>(lin: (usize, usize), off: usize) -> Option<T> {
    let (data, data_end) = lin;
    let p = data + off;
    if p + size_of::<T>() > data_end {
        return None;
    }
    // SAFETY: checked above to lie within the linear packet data.
    Some(unsafe { (p as *const T).read_unaligned() })
}

/// `n` (already checked to be 1..=L7_MAX_PAYLOAD) in a form whose range the
/// verifier sees: LLVM may turn the caller's check into one the verifier
/// cannot follow into the helper's size argument ("invalid zero-sized read").
#[inline(always)]
fn verifier_len(n: usize) -> usize {
    const _: () = assert!(L7_MAX_PAYLOAD.is_power_of_two());
    ((core::hint::black_box(n).wrapping_sub(1)) & (L7_MAX_PAYLOAD - 1)) + 1
}

pub struct Skb {
    skb: *mut __sk_buff,
    data: usize,
    data_end: usize,
    len: usize,
    gso_segs: u32,
}

impl Skb {
    /// `gso_segs`: the skb's segment count (the caller reads it with the
    /// other context fields).
    #[inline(always)]
    pub fn new(ctx: &TcContext, gso_segs: u32) -> Self {
        Self {
            skb: ctx.skb.skb,
            data: ctx.data(),
            data_end: ctx.data_end(),
            len: ctx.len() as usize,
            gso_segs,
        }
    }
}

impl Packet for Skb {
    const BOTH_HOOKS: bool = true;
    const H2: bool = true;

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data, self.data_end)
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        if off > MAX_OFF {
            return None;
        }
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes or fails.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.skb.cast(),
                off as u32,
                v.as_mut_ptr().cast(),
                size_of::<T>() as u32,
            )
        };
        if ret == 0 {
            // SAFETY: fully written by the helper.
            Some(unsafe { v.assume_init() })
        } else {
            None
        }
    }

    #[inline(always)]
    fn copy_out(&self, off: usize, dst: &mut [u8; L7_MAX_PAYLOAD], n: usize) -> bool {
        if off > MAX_OFF || n == 0 || n > L7_MAX_PAYLOAD {
            return false;
        }
        let n = verifier_len(n);
        // SAFETY: dst holds L7_MAX_PAYLOAD bytes and n <= L7_MAX_PAYLOAD.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.skb.cast(),
                off as u32,
                dst.as_mut_ptr().cast(),
                n as u32,
            )
        };
        ret == 0
    }

    #[inline(always)]
    fn segs(&self, _l3_off: usize, _payload_off: usize, _payload_len: usize) -> u32 {
        self.gso_segs
    }

    #[inline(always)]
    fn note_h2(&self, note: [u32; 4]) {
        crate::h2::write_cb(self.skb, note);
    }

    #[inline(always)]
    fn note_h2_flags(&self, flags: u16) {
        crate::h2::write_cb_flags(self.skb, flags);
    }
}

pub struct Xdp {
    ctx: *mut xdp_md,
    data: usize,
    data_end: usize,
    len: usize,
}

impl Xdp {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        // SAFETY: plain helper on our own context. Includes the fragments of
        // multi-buffer frames; equals data_end - data otherwise.
        let len = unsafe { bpf_xdp_get_buff_len(ctx.as_ptr().cast()) } as usize;
        Self {
            ctx: ctx.ctx,
            data: ctx.data(),
            data_end: ctx.data_end(),
            len,
        }
    }
}

impl Packet for Xdp {
    const BOTH_HOOKS: bool = false;
    const H2: bool = false;

    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn linear(&self) -> (usize, usize) {
        (self.data, self.data_end)
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        if off > MAX_OFF {
            return None;
        }
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes or fails.
        let ret = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                off as u32,
                v.as_mut_ptr().cast(),
                size_of::<T>() as u32,
            )
        };
        if ret == 0 {
            // SAFETY: fully written by the helper.
            Some(unsafe { v.assume_init() })
        } else {
            None
        }
    }

    #[inline(always)]
    fn copy_out(&self, off: usize, dst: &mut [u8; L7_MAX_PAYLOAD], n: usize) -> bool {
        if off > MAX_OFF || n == 0 || n > L7_MAX_PAYLOAD {
            return false;
        }
        let n = verifier_len(n);
        // SAFETY: dst holds L7_MAX_PAYLOAD bytes and n <= L7_MAX_PAYLOAD.
        let ret =
            unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, dst.as_mut_ptr().cast(), n as u32) };
        ret == 0
    }

    #[inline(always)]
    fn segs(&self, l3_off: usize, payload_off: usize, payload_len: usize) -> u32 {
        xdp_segs(self.ctx, l3_off, payload_off, payload_len)
    }
}
