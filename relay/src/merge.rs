//! Time-ordered merge of the nodes' flow streams.
//!
//! Each node's stream is in time order (a node returns its flows oldest
//! first), so the merge is a k-way merge over per-node queues: the oldest
//! queued flow is released as soon as every other open node has a flow
//! queued (so nothing older can still come from it). A node that has nothing
//! queued holds the others back at most `drain_timeout` (measured from the
//! arrival of the oldest waiting flow); it is then marked *lagging* and no
//! longer waited for until it sends again. A flow that arrives from a lagging
//! node after newer flows were released is sent at once, out of order.
//! The caller bounds each node's queue (a permit per queued flow, the sort
//! buffer length). Given that length as `cap` (follow streams), a full
//! queue does not wait either: the oldest queued flows are sent until it
//! has room again (Hubble's relay flushes a full sort buffer the same way),
//! so the length bounds how far out of order a late node's flows can be
//! put back in order. Without it, a full node waits for the others.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

struct Queued<T> {
    ts: i128,
    arrived: Instant,
    item: T,
}

struct Slot<T> {
    queue: VecDeque<Queued<T>>,
    open: bool,
    lagging: bool,
}

/// The merge state; `T` is what is queued (a response and its permit).
pub struct Merger<T> {
    slots: Vec<Slot<T>>,
    drain: Duration,
    /// A node's queue at this length is full (the sort buffer length).
    cap: usize,
}

impl<T> Merger<T> {
    /// An empty merge with the given drain timeout and per-node queue
    /// length (at least 1).
    pub fn new(drain: Duration, cap: usize) -> Self {
        Self {
            slots: Vec::new(),
            drain,
            cap: cap.max(1),
        }
    }

    /// Adds an open node; returns its index.
    pub fn add_node(&mut self) -> usize {
        self.slots.push(Slot {
            queue: VecDeque::new(),
            open: true,
            lagging: false,
        });
        self.slots.len() - 1
    }

    /// The node's stream (re)started: wait for it again.
    pub fn reopen(&mut self, node: usize) {
        if let Some(s) = self.slots.get_mut(node) {
            s.open = true;
            s.lagging = false;
        }
    }

    /// The node's stream ended: stop waiting for it (its queue still drains).
    pub fn close(&mut self, node: usize) {
        if let Some(s) = self.slots.get_mut(node) {
            s.open = false;
        }
    }

    /// Queues a flow with timestamp `ts` (ns since the epoch) from `node`.
    pub fn push(&mut self, node: usize, ts: i128, arrived: Instant, item: T) {
        if let Some(s) = self.slots.get_mut(node) {
            s.lagging = false;
            s.queue.push_back(Queued { ts, arrived, item });
        }
    }

    fn blocked(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.open && !s.lagging && s.queue.is_empty())
    }

    /// Some node's queue is full: the oldest flows go without waiting.
    fn full(&self) -> bool {
        self.slots.iter().any(|s| s.queue.len() >= self.cap)
    }

    fn oldest_arrival(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.queue.front().map(|q| q.arrived))
            .min()
    }

    /// The next flow that may be sent at `now`, oldest first.
    pub fn pop_ready(&mut self, now: Instant) -> Option<T> {
        let (_, idx) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.queue.front().map(|q| (q.ts, i)))
            .min()?;
        if self.blocked() && !self.full() {
            let oldest = self.oldest_arrival()?;
            if now < oldest + self.drain {
                return None;
            }
            for s in &mut self.slots {
                if s.open && s.queue.is_empty() {
                    s.lagging = true;
                }
            }
        }
        self.slots[idx].queue.pop_front().map(|q| q.item)
    }

    /// When `pop_ready` may next release something without a new arrival.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.blocked() && !self.full() {
            self.oldest_arrival().map(|a| a + self.drain)
        } else {
            None
        }
    }

    /// Number of queued flows.
    pub fn len(&self) -> usize {
        self.slots.iter().map(|s| s.queue.len()).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(m: &mut Merger<i128>, now: Instant) -> Vec<i128> {
        std::iter::from_fn(|| m.pop_ready(now)).collect()
    }

    #[test]
    fn waits_for_every_open_node_then_orders() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(1), 100);
        let (a, b, c) = (m.add_node(), m.add_node(), m.add_node());
        for ts in [1, 4, 7] {
            m.push(a, ts, t0, ts);
        }
        for ts in [2, 5] {
            m.push(b, ts, t0, ts);
        }
        // c has sent nothing yet: nothing may go out.
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(1)));
        m.push(c, 3, t0, 3);
        assert_eq!(drain_all(&mut m, t0), vec![1, 2, 3]);
        // c is empty again and open: 4 waits for it.
        m.close(c);
        assert_eq!(drain_all(&mut m, t0), vec![4, 5]);
        m.close(b);
        m.close(a);
        assert_eq!(drain_all(&mut m, t0), vec![7]);
        assert!(m.is_empty());
    }

    #[test]
    fn silent_node_holds_back_at_most_the_drain_timeout() {
        let t0 = Instant::now();
        let d = Duration::from_millis(100);
        let mut m = Merger::new(d, 100);
        let (a, hung) = (m.add_node(), m.add_node());
        m.push(a, 10, t0, 10);
        assert_eq!(m.pop_ready(t0 + d / 2), None);
        assert_eq!(m.pop_ready(t0 + d), Some(10));
        // The hung node is lagging now: later flows are not held back.
        m.push(a, 11, t0 + d, 11);
        assert_eq!(m.pop_ready(t0 + d), Some(11));
        // When it speaks again it is waited for again (and waits for a).
        m.push(hung, 5, t0 + d, 5);
        assert_eq!(m.pop_ready(t0 + d), None);
        m.push(a, 12, t0 + d, 12);
        assert_eq!(m.pop_ready(t0 + d), Some(5));
        assert_eq!(m.pop_ready(t0 + d), None);
        assert_eq!(m.pop_ready(t0 + 2 * d), Some(12));
        let _ = hung;
    }

    #[test]
    fn a_full_queue_sends_its_oldest_without_waiting() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::from_secs(3600), 3);
        let (a, b) = (m.add_node(), m.add_node());
        m.push(a, 10, t0, 10);
        m.push(a, 12, t0, 12);
        assert_eq!(m.pop_ready(t0), None);
        m.push(a, 14, t0, 14);
        // Full: the oldest goes, two stay waiting for b.
        assert_eq!(drain_all(&mut m, t0), vec![10]);
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(3600)));
        // b is still waited for (not lagging): its 9 is late (10 went),
        // its 13 is put in order.
        m.push(b, 9, t0, 9);
        assert_eq!(drain_all(&mut m, t0), vec![9]);
        m.push(b, 13, t0, 13);
        assert_eq!(drain_all(&mut m, t0), vec![12, 13]);
        assert_eq!(m.len(), 1);
    }
}
