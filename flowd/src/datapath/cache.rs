//! User space's view of FLOW_CACHE: every CPU's slots, read for the pending
//! counts that are not in FLOWS or COUNTERS yet.
//!
//! The map is created `BPF_F_MMAPABLE` and read through a shared read-only
//! mapping: a read is a memory copy, not one `BPF_MAP_LOOKUP_ELEM` syscall per
//! slot (possible CPUs × 256 of them, 32,768 on a 128-CPU node, on every
//! daemon tick). Objects without the flag (benchmark variants) are read with
//! lookups.
use std::{
    borrow::Borrow,
    ffi::c_void,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::{Array, IterableMap, MapData};
use flowd_common::CacheSlot;

pub enum FlowCache<T = MapData> {
    /// Read through the mapping. The array keeps the map's fd open: programs
    /// loaded later refer to the map by it.
    Mapped(Mapping, Array<T, CacheSlot>),
    /// Read with one lookup per slot.
    Lookups(Array<T, CacheSlot>),
}

impl<T: Borrow<MapData>> FlowCache<T> {
    /// Maps `array` when the kernel allows it (the object created it
    /// mmapable), else keeps it for lookups.
    pub fn new(array: Array<T, CacheSlot>) -> Self {
        match Mapping::new(array.map()) {
            Ok(m) => Self::Mapped(m, array),
            Err(e) => {
                tracing::debug!(error = %e, "FLOW_CACHE is not mappable; reading it with lookups");
                Self::Lookups(array)
            }
        }
    }

    /// Every slot, in index order. Slots are read while the programs write
    /// them: each field is read whole, a slot may mix two moments (as a
    /// lookup's copy may), and a count seen here is seen again only until the
    /// slot's next flush moves it to FLOWS.
    pub fn slots(&self) -> Vec<CacheSlot> {
        match self {
            Self::Mapped(m, _) => m.slots(),
            Self::Lookups(a) => a
                .iter()
                .filter_map(|r| {
                    r.inspect_err(|e| tracing::debug!(error = %e, "flow cache slot unreadable"))
                        .ok()
                })
                .collect(),
        }
    }

    /// Sum of the slots' pending program runs.
    pub fn pending_runs(&self) -> u64 {
        match self {
            Self::Mapped(m, _) => (0..m.entries)
                .map(|i| {
                    // SAFETY: i < entries, inside the mapping (see Mapping::slot).
                    let p = unsafe { &raw const (*m.slot(i)).pending_runs };
                    // SAFETY: an aligned u16 in the live mapping; the kernel
                    // writes it concurrently, hence the volatile read.
                    u64::from(unsafe { p.read_volatile() })
                })
                .fold(0u64, u64::wrapping_add),
            Self::Lookups(_) => self
                .slots()
                .iter()
                .fold(0u64, |a, s| a.wrapping_add(s.pending_runs.into())),
        }
    }
}

/// A read-only shared mapping of an mmapable array of CacheSlot.
pub struct Mapping {
    base: NonNull<c_void>,
    len: usize,
    entries: usize,
}

// SAFETY: the mapping is read-only and only read with volatile reads; it
// stays valid until Drop unmaps it.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared reads of the mapping need no synchronisation.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(map: &MapData) -> std::io::Result<Self> {
        let info = map
            .info()
            .map_err(|e| std::io::Error::other(format!("FLOW_CACHE info: {e}")))?;
        // BPF_F_MMAPABLE (include/uapi/linux/bpf.h).
        const BPF_F_MMAPABLE: u32 = 1 << 10;
        if info.map_flags() & BPF_F_MMAPABLE == 0 {
            return Err(std::io::Error::other(
                "FLOW_CACHE was created without BPF_F_MMAPABLE",
            ));
        }
        // The kernel stores array values at a stride of value_size rounded up
        // to 8; CacheSlot's size is a multiple of 64.
        if info.value_size() as usize != size_of::<CacheSlot>() {
            return Err(std::io::Error::other(format!(
                "FLOW_CACHE values are {} bytes, CacheSlot is {}",
                info.value_size(),
                size_of::<CacheSlot>()
            )));
        }
        let entries = info.max_entries() as usize;
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(4096);
        let len = (entries * size_of::<CacheSlot>()).div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of the map's fd; the kernel
        // checks the length against the map. Nothing else aliases it mutably
        // in this process.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { base, len, entries })
    }

    /// Pointer to slot `i`.
    ///
    /// # Safety
    /// `i < self.entries`.
    unsafe fn slot(&self, i: usize) -> *const CacheSlot {
        // SAFETY: the caller keeps i in bounds; the mapping holds `entries`
        // slots at a stride of size_of::<CacheSlot>() from a page boundary.
        unsafe { self.base.as_ptr().cast::<CacheSlot>().add(i) }
    }

    fn slots(&self) -> Vec<CacheSlot> {
        (0..self.entries)
            // SAFETY: i < entries; CacheSlot is plain data (any bit pattern is
            // valid) and aligned by the page-aligned mapping.
            .map(|i| unsafe { self.slot(i).read_volatile() })
            .collect()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in new(); no reference
        // into it outlives self.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}
