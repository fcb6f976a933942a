//! The flow buffer: a ring of the last `capacity` events, one writer, many
//! readers.
//!
//! Every event gets a sequence number (0, 1, 2, …). Slot `seq & mask` holds
//! the event with that number until the writer wraps around. Each slot has
//! its own small lock (held only to swap or clone an `Arc`), so readers never
//! contend with each other and the writer only ever waits for a reader that
//! is cloning that very slot. A reader that fell more than `capacity` events
//! behind finds a newer sequence number in its slot (or a write position too
//! far ahead) and learns exactly how many events it lost.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use flowd_proto::Timestamp;
use flowd_proto::flow::{Flow, LostEvent};
use parking_lot::RwLock;
use prost::Message;
use tokio::sync::Notify;

/// Largest capacity accepted (Hubble's limit).
pub const MAX_CAPACITY: usize = 65_535;
/// Hubble's default `hubble-event-buffer-capacity`.
pub const DEFAULT_CAPACITY: usize = 4_095;

/// One buffered event.
#[derive(Clone, Debug)]
pub enum Event {
    /// Stored protobuf-encoded: a decoded `Flow` takes ~1.8 KiB of heap
    /// (the struct alone is ~1.1 KiB), its encoding ~0.3–0.5 KiB. Readers
    /// decode what they read.
    Flow(Arc<[u8]>),
    /// Events lost before they reached the buffer (e.g. in the kernel's
    /// ring buffer), with the time they were reported.
    Lost(Arc<(LostEvent, Timestamp)>),
}

struct Entry {
    seq: u64,
    event: Event,
}

impl Event {
    pub(crate) fn flow(flow: &Flow) -> Self {
        Event::Flow(Arc::from(flow.encode_to_vec()))
    }
}

/// Decodes a stored flow (only this module encodes them, so failure would
/// be a bug; callers skip such a flow).
pub(crate) fn decode(bytes: &[u8]) -> Option<Flow> {
    Flow::decode(bytes).ok()
}

/// Result of reading one sequence number.
#[derive(Debug)]
pub enum Read {
    /// The event with that sequence number.
    Event(Event),
    /// Not written yet.
    Pending,
    /// Overwritten; the oldest event still buffered has this sequence number.
    Lapped { oldest: u64 },
}

/// Checks a capacity against Hubble's rule: 2^n − 1 with 1 ≤ n ≤ 16.
pub fn validate_capacity(capacity: usize) -> Result<(), String> {
    if capacity == 0 || capacity > MAX_CAPACITY || !(capacity + 1).is_power_of_two() {
        return Err(format!(
            "{capacity} is not a valid buffer capacity: expected 2^n-1 between 1 and {MAX_CAPACITY} (e.g. 4095)"
        ));
    }
    Ok(())
}

pub struct Ring {
    // capacity + 1 slots (a power of two): the slot the writer fills next is
    // never part of the readable window, as in Hubble's ring.
    slots: Box<[RwLock<Option<Entry>>]>,
    mask: u64,
    capacity: u64,
    /// Sequence number of the next event to be written (= events written).
    write_seq: AtomicU64,
    notify: Notify,
    /// Readers about to wait or waiting: the writer takes Notify's internal
    /// lock only when someone may be waiting.
    waiting: AtomicUsize,
    /// No event will be written any more (the daemon is shutting down).
    closed: AtomicBool,
}

impl Ring {
    /// `capacity` must pass [`validate_capacity`].
    pub fn new(capacity: usize) -> Self {
        let slots = (capacity + 1).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| RwLock::new(None)).collect(),
            mask: slots as u64 - 1,
            capacity: capacity as u64,
            write_seq: AtomicU64::new(0),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Marks the ring as finished: nothing more will be written, and every
    /// reader waiting in [`Ring::wait_for`] returns.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`Ring::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Sequence number the next written event will get.
    pub fn write_seq(&self) -> u64 {
        self.write_seq.load(Ordering::Acquire)
    }

    /// Sequence number of the oldest readable event.
    pub fn oldest_seq(&self) -> u64 {
        self.write_seq().saturating_sub(self.capacity)
    }

    /// Number of events currently buffered.
    pub fn len(&self) -> u64 {
        self.write_seq().min(self.capacity)
    }

    pub fn is_empty(&self) -> bool {
        self.write_seq() == 0
    }

    /// Appends an event and wakes the readers waiting for it. Only one
    /// thread may call this at a time (enforced by `FlowWriter` taking
    /// `&mut self`).
    pub(crate) fn push(&self, event: Event) {
        self.append(event);
        self.wake();
    }

    /// Appends an event without waking waiting readers: the writer appends a
    /// batch, then calls [`Ring::wake`] once. Same single-writer rule as
    /// [`Ring::push`].
    pub(crate) fn append(&self, event: Event) {
        let seq = self.write_seq.load(Ordering::Relaxed);
        let old = {
            let mut slot = self.slots[(seq & self.mask) as usize].write();
            slot.replace(Entry { seq, event })
        };
        self.write_seq.store(seq + 1, Ordering::SeqCst);
        // Freeing the overwritten flow happens outside the slot lock.
        drop(old);
    }

    /// Wakes the readers waiting in [`Ring::wait_for`] (after appends).
    pub(crate) fn wake(&self) {
        // SeqCst pairs with `wait_for`: either the writer sees the reader's
        // `waiting` increment, or the reader sees the new `write_seq`.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    pub fn read(&self, seq: u64) -> Read {
        let write = self.write_seq();
        if seq >= write {
            return Read::Pending;
        }
        let oldest = write.saturating_sub(self.capacity);
        if seq < oldest {
            return Read::Lapped { oldest };
        }
        let slot = self.slots[(seq & self.mask) as usize].read();
        match slot.as_ref() {
            Some(e) if e.seq == seq => Read::Event(e.event.clone()),
            // The writer overwrote it between our two loads.
            _ => Read::Lapped {
                oldest: self.oldest_seq(),
            },
        }
    }

    /// Waits until an event with sequence number `seq` has been written, or
    /// the ring is closed (then `seq` may never come: check
    /// [`Ring::is_closed`]).
    pub async fn wait_for(&self, seq: u64) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Also undone when the caller drops this future (select!).
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a push in between is not missed.
            notified.as_mut().enable();
            if self.write_seq.load(Ordering::SeqCst) > seq || self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u64) -> Event {
        Event::flow(&Flow {
            time: Some(Timestamp::from_unix_nanos(n)),
            ..Default::default()
        })
    }

    fn time_of(r: Read) -> u64 {
        match r {
            Read::Event(Event::Flow(f)) => decode(&f)
                .and_then(|f| f.time)
                .map(|t| t.as_unix_nanos() as u64)
                .unwrap_or(0),
            other => panic!("expected a flow, got {other:?}"),
        }
    }

    #[test]
    fn capacity_rule() {
        for ok in [1, 3, 7, 4095, 65535] {
            assert!(validate_capacity(ok).is_ok(), "{ok}");
        }
        for bad in [0, 2, 4, 4096, 65536, 131071] {
            let e = validate_capacity(bad).unwrap_err();
            assert!(e.contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn keeps_last_capacity_events_and_reports_laps() {
        let ring = Ring::new(7);
        assert!(matches!(ring.read(0), Read::Pending));
        for i in 0..20 {
            ring.push(flow(i));
        }
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.oldest_seq(), 13);
        assert!(matches!(ring.read(12), Read::Lapped { oldest: 13 }));
        for s in 13..20 {
            assert_eq!(time_of(ring.read(s)), s);
        }
        assert!(matches!(ring.read(20), Read::Pending));
    }

    #[tokio::test]
    async fn wait_for_wakes_on_push() {
        let ring = Arc::new(Ring::new(3));
        let r = ring.clone();
        let waiter = tokio::spawn(async move {
            r.wait_for(0).await;
            time_of(r.read(0))
        });
        tokio::task::yield_now().await;
        ring.push(flow(42));
        assert_eq!(waiter.await.unwrap(), 42);
    }

    /// A batch is appended quietly and its readers are woken once, by
    /// `wake`, with every flow of the batch readable.
    #[tokio::test]
    async fn append_waits_for_wake() {
        let ring = Arc::new(Ring::new(7));
        let r = ring.clone();
        let waiter = tokio::spawn(async move {
            r.wait_for(0).await;
            (0..3).map(|s| time_of(r.read(s))).collect::<Vec<_>>()
        });
        tokio::task::yield_now().await;
        for t in [1, 2, 3] {
            ring.append(flow(t));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "woken before the batch's wake");
        ring.wake();
        assert_eq!(waiter.await.unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn close_wakes_waiting_readers() {
        let ring = Arc::new(Ring::new(3));
        let r = ring.clone();
        let waiter = tokio::spawn(async move { r.wait_for(0).await });
        tokio::task::yield_now().await;
        ring.close();
        waiter.await.unwrap();
        assert!(ring.is_closed());
        assert!(matches!(ring.read(0), Read::Pending));
    }
}
