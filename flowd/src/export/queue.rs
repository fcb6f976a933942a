//! The bounded queue between the pipeline and one export sink.
//!
//! Capacity is counted in permits, not channel slots: the pipeline takes a
//! permit per event (never waiting: no permit → the event is dropped and
//! counted) and the sink gives permits back only once the events are written,
//! delivered or given up. So the bound covers everything a sink holds,
//! including a batch it is still retrying: at most `capacity` events are
//! ever retained, and every event beyond that is counted as dropped.
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Semaphore, mpsc};

use super::{ExportEvent, ExportStats, reason};

/// What a sink receives.
#[derive(Debug)]
pub enum Msg {
    Event(ExportEvent),
    /// flowd is stopping: finish what came before, retrying for at most this long.
    Close(Duration),
}

/// Pipeline side. Not `Clone`: one producer per sink.
pub struct Sender {
    tx: mpsc::UnboundedSender<Msg>,
    permits: Arc<Semaphore>,
    /// Pre-resolved so that dropping under overload does not allocate labels.
    dropped_full: Counter,
    dropped_shutdown: Counter,
    /// `flowd_export_queue_length`: set on both sides, so that it also
    /// grows while the sink is stuck (and releases nothing).
    queued: Gauge,
    capacity: usize,
    closing: Arc<OnceLock<Instant>>,
}

/// Sink side.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Msg>,
    permits: Arc<Semaphore>,
    capacity: usize,
    sink: &'static str,
    stats: ExportStats,
    closing: Arc<OnceLock<Instant>>,
}

/// A queue holding at most `capacity` (≥ 1) events.
pub fn bounded(sink: &'static str, capacity: usize, stats: ExportStats) -> (Sender, Receiver) {
    let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(capacity));
    let full = ExportStats::with(sink, "reason", reason::QUEUE_FULL);
    let shut = ExportStats::with(sink, "reason", reason::SHUTDOWN);
    let dropped_full = stats.dropped.get_or_create(&full).clone();
    let dropped_shutdown = stats.dropped.get_or_create(&shut).clone();
    let queued = stats.queued.get_or_create(&ExportStats::sink(sink)).clone();
    let closing = Arc::new(OnceLock::new());
    (
        Sender {
            tx,
            permits: permits.clone(),
            dropped_full,
            dropped_shutdown,
            queued,
            capacity,
            closing: closing.clone(),
        },
        Receiver {
            rx,
            permits,
            capacity,
            sink,
            stats,
            closing,
        },
    )
}

impl Sender {
    /// Enqueues `ev`, or counts it dropped when the queue is full. Never blocks.
    pub fn push(&self, ev: ExportEvent) {
        match self.permits.try_acquire() {
            Ok(p) => {
                p.forget();
                if self.tx.send(Msg::Event(ev)).is_err() {
                    // The sink has stopped.
                    self.permits.add_permits(1);
                    self.dropped_shutdown.inc();
                }
                let held = self
                    .capacity
                    .saturating_sub(self.permits.available_permits());
                self.queued.set(i64::try_from(held).unwrap_or(i64::MAX));
            }
            Err(_) => {
                self.dropped_full.inc();
            }
        }
    }

    /// Asks the sink to finish; see [`Msg::Close`].
    pub fn close(&self, grace: Duration) {
        let _ = self.closing.set(Instant::now() + grace);
        let _ = self.tx.send(Msg::Close(grace));
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Msg> {
        self.rx.recv().await
    }

    /// For sinks running on their own thread.
    pub fn blocking_recv(&mut self) -> Option<Msg> {
        self.rx.blocking_recv()
    }

    /// `Ok(None)`: nothing queued right now; `Err(())`: the sender is gone.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Msg>, ()> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
    }

    /// Gives back the room of `n` events that are done with (written,
    /// delivered or counted as dropped).
    pub fn release(&self, n: usize) {
        if n > 0 {
            self.permits.add_permits(n);
        }
        self.stats.set_queued(self.sink, self.held());
    }

    /// Events queued or held by the sink.
    pub fn held(&self) -> usize {
        self.capacity
            .saturating_sub(self.permits.available_permits())
    }

    /// Once closing: when the sink must stop retrying (seen also while it
    /// is busy retrying a batch, before it reaches [`Msg::Close`]).
    pub fn close_deadline(&self) -> Option<Instant> {
        self.closing.get().copied()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_proto::flow::Flow;

    fn ev() -> ExportEvent {
        ExportEvent::Flow(Arc::new(Flow::default()))
    }

    #[test]
    fn bound_covers_events_not_yet_released() {
        let stats = ExportStats::default();
        let (tx, mut rx) = bounded("t", 3, stats.clone());
        for _ in 0..5 {
            tx.push(ev());
        }
        assert_eq!(stats.dropped("t", reason::QUEUE_FULL), 2);
        // Taking events out does not make room until they are released.
        for _ in 0..3 {
            assert!(matches!(rx.try_recv(), Ok(Some(Msg::Event(_)))));
        }
        tx.push(ev());
        assert_eq!(stats.dropped("t", reason::QUEUE_FULL), 3);
        assert_eq!(rx.held(), 3);
        rx.release(2);
        tx.push(ev());
        tx.push(ev());
        tx.push(ev());
        assert_eq!(stats.dropped("t", reason::QUEUE_FULL), 4);
        assert_eq!(rx.held(), 3);
        assert!(matches!(rx.try_recv(), Ok(Some(Msg::Event(_)))));
        assert!(matches!(rx.try_recv(), Ok(Some(Msg::Event(_)))));
        assert!(matches!(rx.try_recv(), Ok(None)));
    }

    #[test]
    fn push_after_the_sink_stopped_counts_shutdown() {
        let stats = ExportStats::default();
        let (tx, rx) = bounded("t", 3, stats.clone());
        drop(rx);
        tx.push(ev());
        assert_eq!(stats.dropped("t", reason::SHUTDOWN), 1);
        assert_eq!(stats.dropped("t", reason::QUEUE_FULL), 0);
    }
}
