//! Counters behind ServerStatus, GetNodes and GetNamespaces. The writer
//! updates them with atomics (and, for namespaces, a lock taken only when a
//! namespace is new or its last-seen time is stale), never per-flow locks.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowd_proto::flow::Flow;
use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct Counters {
    seen_flows: AtomicU64,
    lost_kernel: AtomicU64,
    /// Events GetFlows readers lost because the writer lapped them.
    lost_ring: AtomicU64,
}

impl Counters {
    pub(crate) fn add_flow(&self) {
        self.seen_flows.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_lost_kernel(&self, n: u64) {
        self.lost_kernel.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_lost_ring(&self, n: u64) {
        self.lost_ring.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn lost_ring(&self) -> u64 {
        self.lost_ring.load(Ordering::Relaxed)
    }
    pub(crate) fn seen_flows(&self) -> u64 {
        self.seen_flows.load(Ordering::Relaxed)
    }
    pub(crate) fn lost_kernel(&self) -> u64 {
        self.lost_kernel.load(Ordering::Relaxed)
    }
}

const RATE_WINDOW: u64 = 60;

/// Flows per second over the last minute: one bucket per wall-clock second.
pub(crate) struct Rate {
    // (second, count) per bucket; only the writer stores.
    buckets: [(AtomicU64, AtomicU64); RATE_WINDOW as usize],
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Rate {
    pub(crate) fn add(&self, now: SystemTime) {
        let sec = unix_secs(now);
        let (s, c) = &self.buckets[(sec % RATE_WINDOW) as usize];
        if s.load(Ordering::Relaxed) != sec {
            // Reset a bucket left from an older minute. Single writer, so no
            // increment can be lost between these two stores.
            c.store(0, Ordering::Relaxed);
            s.store(sec, Ordering::Release);
        }
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Flows per second over the 60 s before `now`.
    pub(crate) fn per_second(&self, now: SystemTime) -> f64 {
        let now = unix_secs(now);
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| {
                let s = s.load(Ordering::Acquire);
                s <= now && now - s < RATE_WINDOW
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum();
        total as f64 / RATE_WINDOW as f64
    }
}

/// Namespaces seen in flows, with the last time seen; GetNamespaces lists
/// those seen within [`NAMESPACE_TTL`] (Hubble keeps them for an hour).
#[derive(Default)]
pub(crate) struct Namespaces {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

pub(crate) const NAMESPACE_TTL: Duration = Duration::from_secs(3600);
// The writer re-publishes a namespace at most this often.
const REFRESH: Duration = Duration::from_secs(10);

impl Namespaces {
    /// (cluster, namespace) pairs seen within the TTL, sorted.
    pub(crate) fn list(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        seen.retain(|_, t| now.duration_since(*t) < NAMESPACE_TTL);
        let mut v: Vec<_> = seen.keys().cloned().collect();
        drop(seen);
        v.sort();
        v
    }
}

/// The writer's private copy, so the shared map is locked only when a
/// namespace is new or its time needs refreshing.
#[derive(Default)]
pub(crate) struct NamespaceCache {
    // cluster → namespace → last published
    published: HashMap<String, HashMap<String, Instant>>,
}

impl NamespaceCache {
    /// `now`: when the flow was received (one clock read per batch).
    pub(crate) fn note(&mut self, flow: &Flow, shared: &Namespaces, now: Instant) {
        for ep in [flow.source.as_ref(), flow.destination.as_ref()]
            .into_iter()
            .flatten()
        {
            if ep.namespace.is_empty() {
                continue;
            }
            let fresh = self
                .published
                .get(&ep.cluster_name)
                .and_then(|m| m.get(&ep.namespace))
                .is_some_and(|t| now.saturating_duration_since(*t) < REFRESH);
            if fresh {
                continue;
            }
            self.published
                .entry(ep.cluster_name.clone())
                .or_default()
                .insert(ep.namespace.clone(), now);
            shared
                .seen
                .lock()
                .insert((ep.cluster_name.clone(), ep.namespace.clone()), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_the_last_minute_only() {
        let r = Rate::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..120 {
            r.add(t0 + Duration::from_secs(i / 2));
        }
        // 120 flows over seconds 0..60, 2 per second.
        assert_eq!(r.per_second(t0 + Duration::from_secs(59)), 2.0);
        // 30 s later, only seconds 30..59 remain in the window.
        assert_eq!(r.per_second(t0 + Duration::from_secs(89)), 1.0);
        assert_eq!(r.per_second(t0 + Duration::from_secs(500)), 0.0);
    }
}
