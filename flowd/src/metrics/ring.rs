//! How full the kernel → user ring buffer gets: `flowd_ring_buffer_used_bytes`
//! (the most bytes waiting in it over the last second; the reader notes the
//! fill before each read) and `flowd_ring_buffer_capacity_bytes`
//! (`flowd-ring-buffer-bytes`). A ring that keeps coming close to full loses
//! events (`hubble_lost_events_total{source="perf_event_ring_buffer"}`) at
//! the next burst.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

pub(super) struct RingGauges {
    used: Gauge,
    capacity: Gauge,
}

impl RingGauges {
    pub(super) fn register(r: &mut Registry) -> Self {
        let g = RingGauges {
            used: Gauge::default(),
            capacity: Gauge::default(),
        };
        r.register(
            "flowd_ring_buffer_used_bytes",
            "Most bytes waiting in the kernel ring buffer since the previous sample (about a second)",
            g.used.clone(),
        );
        r.register(
            "flowd_ring_buffer_capacity_bytes",
            "Size of the kernel ring buffer (flowd-ring-buffer-bytes)",
            g.capacity.clone(),
        );
        g
    }
}

impl Metrics {
    /// The ring buffer's fill: the most bytes waiting since the last call,
    /// and its size (see `Datapath::ring_fill`).
    pub fn set_ring_fill(&self, peak_used: u64, capacity: u64) {
        let g = &self.ring;
        g.used.set(i64::try_from(peak_used).unwrap_or(i64::MAX));
        g.capacity.set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }
}
