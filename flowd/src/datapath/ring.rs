//! Reads the EVENTS ring buffer with tokio's AsyncFd and decodes records.
//!
//! Before each read the reader notes how many bytes wait in the ring
//! ([`Positions`]); the highest since the last [`super::Datapath::ring_fill`]
//! is flowd_ring_buffer_used_bytes: how close the ring came to full, that is
//! to losing events.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    DatapathEvent, Error, FlowRecord, L7Event, ReaderStats,
    clock::KernelClock,
    decode::{Record, decode},
};

/// Records taken from the ring per wake-up before yielding to the runtime.
const BATCH: usize = 1024;

/// The programs wake the reader only when a record fills the ring past a
/// quarter mark (a wake-up per record costs microseconds in the kernel and a
/// context switch here), so the reader also drains the ring this often: the
/// most a record waits at low rates.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

pub(super) fn spawn(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<DatapathEvent>,
    clock: Arc<KernelClock>,
    stats: Arc<ReaderStats>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(JoinHandle<()>, Arc<Positions>), Error> {
    let positions = Arc::new(Positions::map(ring.as_fd())?);
    let pos = positions.clone();
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd (which owns the RingBuf) lives.
    let mut fd =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
            Error::Io {
                what: "registering the EVENTS ring buffer with the runtime".into(),
                source: e.into(),
            }
        })?;
    let task = tokio::spawn(async move {
        let positions = pos;
        let mut batch = Vec::with_capacity(BATCH);
        let mut timer = tokio::time::interval(DRAIN_INTERVAL);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Woken by the kernel (a quarter mark crossed), by the timer, or
            // told to stop (the programs are detached by then, or the
            // Datapath is gone): then take everything left and finish.
            let (mut drained, stopping) = tokio::select! {
                ready = fd.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            tracing::error!(error = %e, "polling the ring buffer failed; no more events");
                            return;
                        }
                    };
                    stats.note_ring_used(positions.used());
                    let drained = drain(guard.get_inner_mut(), &mut batch, &clock, &stats);
                    // Only clear readiness once the ring is empty: epoll on a
                    // ring buffer is edge-like, records left behind would wait.
                    if drained {
                        guard.clear_ready();
                    }
                    (drained, false)
                }
                _ = timer.tick() => {
                    stats.note_ring_used(positions.used());
                    (drain(fd.get_mut(), &mut batch, &clock, &stats), false)
                }
                _ = &mut stop => (drain(fd.get_mut(), &mut batch, &clock, &stats), true),
            };
            loop {
                if !hand_over(&tx, &mut batch).await {
                    return; // receiver gone: the daemon is shutting down
                }
                if drained {
                    break;
                }
                // A full batch: more is waiting, and maybe no wake-up will
                // come for it. Let the runtime run, then go on.
                tokio::task::yield_now().await;
                drained = drain(fd.get_mut(), &mut batch, &clock, &stats);
            }
            if stopping {
                return;
            }
        }
    });
    Ok((task, positions))
}

/// Hands `batch` to the pipeline as one unit: permits for the whole batch
/// (or as many as the channel holds) are taken at once, so the pipeline,
/// which takes everything queued per wake-up, is woken once per batch rather
/// than once per record. Waits while the channel is full (the ring keeps
/// filling meanwhile and counts what it cannot hold). False when the
/// receiver is gone.
async fn hand_over(tx: &mpsc::Sender<DatapathEvent>, batch: &mut Vec<DatapathEvent>) -> bool {
    while !batch.is_empty() {
        let n = batch.len().min(tx.max_capacity());
        let Ok(permits) = tx.reserve_many(n).await else {
            return false;
        };
        for (permit, ev) in permits.zip(batch.drain(..n)) {
            permit.send(ev);
        }
    }
    true
}

/// The ring buffer's consumer and producer positions, mapped read-only:
/// `producer - consumer` bytes (records and their headers) wait in the ring.
pub(crate) struct Positions {
    base: NonNull<u8>,
    page: usize,
}

// SAFETY: the mapping is read-only shared memory that lives until Drop; its
// two positions are only read, with atomic loads.
unsafe impl Send for Positions {}
// SAFETY: as above: concurrent readers only perform atomic loads.
unsafe impl Sync for Positions {}

impl Positions {
    fn map(fd: BorrowedFd<'_>) -> Result<Self, Error> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: a new mapping (no address given, so nothing existing is
        // replaced) of the ring buffer map's first two pages: the consumer
        // page at offset 0 and the producer page after it (the kernel's BPF
        // ring buffer layout), both of which it allows to map read-only.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: "mapping the EVENTS ring buffer's positions".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| Error::Io {
            what: "mapping the EVENTS ring buffer's positions".into(),
            source: std::io::Error::other("mmap returned a null address"),
        })?;
        Ok(Positions { base, page })
    }

    /// Bytes waiting in the ring now.
    pub(crate) fn used(&self) -> u64 {
        // SAFETY: each position is an unsigned long at the start of its page,
        // inside the mapping (2 pages), page-aligned hence aligned for
        // AtomicUsize; the kernel and the consumer only store to them atomically.
        let (consumer, producer) = unsafe {
            (
                (*self.base.as_ptr().cast::<AtomicUsize>()).load(Ordering::Acquire),
                (*self.base.as_ptr().add(self.page).cast::<AtomicUsize>()).load(Ordering::Acquire),
            )
        };
        producer.wrapping_sub(consumer) as u64
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), 2 * self.page);
        }
    }
}

/// Takes up to BATCH records into `batch`; true when the ring is empty.
fn drain(
    ring: &mut RingBuf<MapData>,
    batch: &mut Vec<DatapathEvent>,
    clock: &KernelClock,
    stats: &ReaderStats,
) -> bool {
    clock.refresh_if_stale();
    while let Some(item) = ring.next() {
        stats.records_read.fetch_add(1, Ordering::Relaxed);
        match decode(&item) {
            Ok(r) => batch.push(to_event(r, clock)),
            Err(e) => {
                stats.records_malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "skipping ring buffer record");
            }
        }
        if batch.len() >= BATCH {
            return false;
        }
    }
    true
}

fn to_event(r: Record, clock: &KernelClock) -> DatapathEvent {
    match r {
        Record::Flow(kind, ev) => DatapathEvent::Flow(FlowRecord {
            kind,
            time: clock.to_system_time(ev.header.ts_ns),
            event: ev,
        }),
        Record::L7(record) => DatapathEvent::L7(L7Event {
            time: clock.to_system_time(record.header.ts_ns),
            record,
        }),
        Record::H2(record) => DatapathEvent::H2(super::H2Event {
            time: clock.to_system_time(record.header.ts_ns),
            record,
        }),
        Record::Drop(ev) => DatapathEvent::Drop(super::drops::record(&ev, clock)),
    }
}
