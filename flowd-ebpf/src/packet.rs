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

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use flowd_common::L7_MAX_PAYLOAD;

/// Largest offset the parser ever reads at. Packets whose headers reach
/// further (more than 16 KiB of headers) are reported as truncated. The bound
/// also lets the verifier prove packet-pointer arithmetic safe.
pub const MAX_OFF: usize = 0x3fff;

pub trait Packet {
    /// Length of the whole packet (all fragments), from the first L2 byte.
    fn len(&self) -> usize;

    /// `(data, data_end)` of the linear part, for direct reads.
    fn linear(&self) -> (usize, usize);

    /// Copies `size_of::<T>()` bytes at `off`; `None` when they are not all in the packet.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;

    /// Copies `n` bytes (1..=L7_MAX_PAYLOAD) at `off` into `dst`; false when they are not all there.
    fn copy_out(&self, off: usize, dst: &mut [u8; L7_MAX_PAYLOAD], n: usize) -> bool;
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
}

impl Skb {
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        Self {
            skb: ctx.skb.skb,
            data: ctx.data(),
            data_end: ctx.data_end(),
            len: ctx.len() as usize,
        }
    }
}

impl Packet for Skb {
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
}
