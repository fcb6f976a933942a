//! Flows seen on an interface the store does not know yet wait for it.
//!
//! A new pod's veth is attached (by a `flowd-interfaces` glob) as soon as
//! the link appears, and the pod's first packets (its DNS lookups, typically)
//! come before the endpoint source has delivered the pod and its veth has
//! been matched. Enriched at once, those flows would have no direction, no
//! observation point and no pod on the pod's side. So while the sources
//! have listed pods, a flow whose interface the store does not know is held
//! until the store knows the interface or [`HOLD`] passes, whichever is
//! first. An interface still unknown after a whole hold (not a pod veth,
//! e.g. a configured non-pod interface) is not held again. Held flows keep
//! their time; they reach the buffer later than flows of other interfaces.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use flowd_proto::flow::Flow;

use super::{Hook, Snapshot};

/// Longest a flow waits for its interface (the store's pod list and the
/// veth discovery, which also resyncs this often).
pub const HOLD: Duration = Duration::from_secs(5);
/// Flows held at most; beyond, flows pass unheld.
pub const MAX_HELD: usize = 8192;
/// Interfaces remembered as not classifiable; the set restarts beyond it.
const MAX_UNCLASSIFIED: usize = 4096;

struct Held {
    until: Instant,
    ifindex: u32,
    flow: Flow,
    hook: Option<Hook>,
}

/// The flows waiting for their interface, in arrival order.
#[derive(Default)]
pub struct Holding {
    queue: VecDeque<Held>,
    /// Interfaces that stayed unknown for a whole hold.
    unclassified: HashSet<u32, ahash::RandomState>,
    /// Snapshot version the queue was last checked against.
    checked: u64,
}

impl Holding {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Holds `flow` if its interface is unknown to `snap`; otherwise gives
    /// it back. `now` is read only when the flow is held.
    pub fn offer(
        &mut self,
        snap: &Snapshot,
        flow: Flow,
        hook: Option<Hook>,
        now: impl FnOnce() -> Instant,
    ) -> Option<Flow> {
        let ifindex = flow.interface.as_ref().map_or(0, |i| i.index);
        let hold = snap.pods_listed
            && hook.is_some()
            && ifindex != 0
            && snap.interface(ifindex).is_none()
            && !self.unclassified.contains(&ifindex)
            && self.queue.len() < MAX_HELD;
        if !hold {
            return Some(flow);
        }
        if self.queue.is_empty() {
            self.checked = snap.version;
        }
        self.queue.push_back(Held {
            until: now() + HOLD,
            ifindex,
            flow,
            hook,
        });
        None
    }

    /// The held flows that may go now, in arrival order: their interface is
    /// known, their hold is over, or `all`. Cheap when nothing changed.
    pub fn release(
        &mut self,
        snap: &Snapshot,
        now: Instant,
        all: bool,
    ) -> Vec<(Flow, Option<Hook>)> {
        let Some(front) = self.queue.front() else {
            return Vec::new();
        };
        if !all && snap.version == self.checked && front.until > now {
            return Vec::new();
        }
        self.checked = snap.version;
        let mut out = Vec::new();
        for h in std::mem::take(&mut self.queue) {
            let known = snap.interface(h.ifindex).is_some();
            let expired = h.until <= now;
            if expired && !known && !self.unclassified.contains(&h.ifindex) {
                tracing::info!(
                    ifindex = h.ifindex,
                    "no pod veth of this node's pods: flows on this interface get no direction"
                );
                if self.unclassified.len() >= MAX_UNCLASSIFIED {
                    self.unclassified.clear();
                }
                self.unclassified.insert(h.ifindex);
            }
            if known || expired || all || self.unclassified.contains(&h.ifindex) {
                out.push((h.flow, h.hook));
            } else {
                self.queue.push_back(h);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::model::ObjectKey;
    use crate::endpoints::{EndpointStore, Interface, InterfaceKind, Kind, StoreConfig, Update};
    use flowd_proto::flow::NetworkInterface;

    fn flow(ifindex: u32, n: u32) -> Flow {
        Flow {
            interface: Some(NetworkInterface {
                index: ifindex,
                name: String::new(),
            }),
            uuid: n.to_string(),
            ..Default::default()
        }
    }

    fn listed_store() -> std::sync::Arc<EndpointStore> {
        let s = EndpointStore::new(StoreConfig::default());
        s.apply(Update::Replace {
            kind: Kind::Pod,
            objects: vec![],
        });
        s
    }

    fn veth(ifindex: u32) -> Interface {
        Interface {
            ifindex,
            name: format!("lxc{ifindex}"),
            kind: InterfaceKind::PodVeth {
                pod: ObjectKey::new("ns", format!("p{ifindex}")),
            },
        }
    }

    /// Offers flow `n` of `ifindex` at `t`: whether it was held.
    fn held(
        h: &mut Holding,
        store: &EndpointStore,
        ifindex: u32,
        n: u32,
        hook: Option<Hook>,
        t: Instant,
    ) -> bool {
        h.offer(&store.snapshot(), flow(ifindex, n), hook, || t)
            .is_none()
    }

    fn uuids(v: &[(Flow, Option<Hook>)]) -> Vec<&str> {
        v.iter().map(|(f, _)| f.uuid.as_str()).collect()
    }

    #[test]
    fn unknown_interfaces_wait_until_known_known_ones_pass() {
        let store = listed_store();
        store.set_pod_veths([veth(3)]);
        let mut h = Holding::default();
        let t0 = Instant::now();
        let hook = Some(Hook::Ingress);
        // Known interface: passes.
        assert!(!held(&mut h, &store, 3, 1, hook, t0));
        // Unknown: held, in order.
        assert!(held(&mut h, &store, 7, 2, hook, t0));
        assert!(held(&mut h, &store, 8, 3, hook, t0));
        assert!(held(&mut h, &store, 7, 4, hook, t0));
        assert!(h.release(&store.snapshot(), t0, false).is_empty());
        // Interface 7 becomes a pod veth: its flows go, 8's stays.
        store.set_pod_veths([veth(3), veth(7)]);
        let out = h.release(&store.snapshot(), t0 + Duration::from_millis(10), false);
        assert_eq!(uuids(&out), ["2", "4"]);
        assert_eq!(h.len(), 1);
        // 8 never becomes known: released when its hold is over, and not held again.
        let late = t0 + HOLD;
        assert!(
            h.release(&store.snapshot(), late - Duration::from_millis(1), false)
                .is_empty()
        );
        assert_eq!(uuids(&h.release(&store.snapshot(), late, false)), ["3"]);
        assert!(!held(&mut h, &store, 8, 5, hook, late));
        assert!(h.is_empty());
    }

    #[test]
    fn nothing_is_held_without_a_pod_list_or_a_hook_and_all_flushes() {
        let t0 = Instant::now();
        let mut h = Holding::default();
        // No source has listed pods: the store cannot classify anything.
        let unlisted = EndpointStore::new(StoreConfig::default());
        assert!(!held(&mut h, &unlisted, 9, 1, Some(Hook::Egress), t0));
        let store = listed_store();
        // Drops have no hook; flows without an interface have nothing to wait for.
        assert!(!held(&mut h, &store, 9, 2, None, t0));
        assert!(!held(&mut h, &store, 0, 3, Some(Hook::Egress), t0));
        assert!(held(&mut h, &store, 9, 4, Some(Hook::Egress), t0));
        // Shutdown: everything goes.
        assert_eq!(uuids(&h.release(&store.snapshot(), t0, true)), ["4"]);
    }

    #[test]
    fn the_queue_is_bounded() {
        let store = listed_store();
        let mut h = Holding::default();
        let t0 = Instant::now();
        for n in 0..MAX_HELD as u32 {
            assert!(held(&mut h, &store, 9, n, Some(Hook::Egress), t0));
        }
        assert!(!held(&mut h, &store, 9, 0, Some(Hook::Egress), t0));
        assert_eq!(h.len(), MAX_HELD);
    }
}
