//! Reads the EVENTS ring buffer with tokio's AsyncFd and decodes records.
use std::sync::{Arc, atomic::Ordering};

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
) -> Result<JoinHandle<()>, Error> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd (which owns the RingBuf) lives.
    let mut fd =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
            Error::Io {
                what: "registering the EVENTS ring buffer with the runtime".into(),
                source: e.into(),
            }
        })?;
    Ok(tokio::spawn(async move {
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
                    let drained = drain(guard.get_inner_mut(), &mut batch, &clock, &stats);
                    // Only clear readiness once the ring is empty: epoll on a
                    // ring buffer is edge-like, records left behind would wait.
                    if drained {
                        guard.clear_ready();
                    }
                    (drained, false)
                }
                _ = timer.tick() => (drain(fd.get_mut(), &mut batch, &clock, &stats), false),
                _ = &mut stop => (drain(fd.get_mut(), &mut batch, &clock, &stats), true),
            };
            loop {
                for ev in batch.drain(..) {
                    if tx.send(ev).await.is_err() {
                        return; // receiver gone: the daemon is shutting down
                    }
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
    }))
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
        Record::Drop(ev) => DatapathEvent::Drop(super::drops::record(&ev, clock)),
    }
}
