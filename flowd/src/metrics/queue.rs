//! How full the queue between the ring reader and the flow pipeline is
//! (`hubble-event-queue-size`): `flowd_event_queue_used_events` (events
//! waiting now, read at each scrape) and `flowd_event_queue_capacity_events`.
//! The queue never drops: when it is full the reader waits and events stay
//! in the kernel ring buffer. A queue that is often full means the pipeline
//! is the bottleneck; a bigger queue absorbs longer bursts before the ring
//! has to (and, past the ring, `perf_event_ring_buffer` losses).

use std::sync::OnceLock;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// Reads (events waiting, capacity); `None` once the queue is gone.
type Probe = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

pub(super) struct QueueGauges {
    used: Gauge,
    capacity: Gauge,
    probe: OnceLock<Probe>,
}

impl QueueGauges {
    pub(super) fn register(r: &mut Registry) -> Self {
        let g = QueueGauges {
            used: Gauge::default(),
            capacity: Gauge::default(),
            probe: OnceLock::new(),
        };
        r.register(
            "flowd_event_queue_used_events",
            "Events waiting between the ring reader and the flow pipeline (at the scrape)",
            g.used.clone(),
        );
        r.register(
            "flowd_event_queue_capacity_events",
            "Size of the queue between the ring reader and the flow pipeline (hubble-event-queue-size)",
            g.capacity.clone(),
        );
        g
    }
}

impl Metrics {
    /// Where the event queue gauges read their values at each scrape (set
    /// once, when the datapath starts; later calls are ignored).
    pub fn watch_event_queue(
        &self,
        probe: impl Fn() -> Option<(usize, usize)> + Send + Sync + 'static,
    ) {
        let _ = self.queue.probe.set(Box::new(probe));
    }

    /// Reads the event queue's fill into its gauges (before each scrape).
    pub fn refresh_event_queue(&self) {
        let Some(probe) = self.queue.probe.get() else {
            return;
        };
        let (used, capacity) = probe().unwrap_or((0, 0));
        let g = &self.queue;
        g.used.set(i64::try_from(used).unwrap_or(i64::MAX));
        if capacity > 0 {
            g.capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
        }
    }
}
