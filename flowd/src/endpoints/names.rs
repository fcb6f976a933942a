//! DNS-derived names: which names each local pod resolved to which address,
//! learned from the DNS responses flowd observes, for flows'
//! `source_names` / `destination_names` (Cilium's per-endpoint FQDN cache,
//! which its DNS proxy fills).
//!
//! As in Cilium, a response's A/AAAA addresses belong to the name the pod
//! asked for (`query`, CNAME chains included: the addresses at the end of
//! the chain), for the response's lowest TTL (raised to `tofqdns-min-ttl`),
//! counted from the response's time. A flow gets as `destination_names` the
//! names its *source* pod resolved to the destination address, and as
//! `source_names` those its *destination* pod resolved to the source
//! address: only pods of this node have a cache (Cilium's endpoint IDs are
//! node-local too). Names are lower case, without the trailing dot, sorted.
//!
//! Bounded: at most `max_entries` (pod, address, name) entries over all
//! pods. When full, the entry that expires soonest goes first (counted in
//! `evictions` unless it had expired). Expired entries stop matching at
//! once and are dropped on [`NameCache::expire`]; a deleted pod's entries on
//! [`NameCache::retain_pods`].
//!
//! Times are the flows' own (unix nanoseconds), so a flow held back before
//! enrichment still meets the names valid when it was seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use flowd_proto::flow::{Flow, L7FlowType, layer7::Record};

use super::store::Snapshot;

/// Cache settings (`flowd-dns-name-cache-entries`, `tofqdns-min-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameCacheConfig {
    /// Entries over all pods; 0 disables the cache.
    pub max_entries: usize,
    /// Shorter TTLs are raised to this.
    pub min_ttl: Duration,
}

impl Default for NameCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 32_768,
            min_ttl: Duration::ZERO,
        }
    }
}

/// Counters for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameCacheStats {
    /// Entries held now.
    pub entries: usize,
    /// Unexpired entries removed to make room.
    pub evictions: u64,
}

/// One pod's names of one address: name → expiry.
type Names = BTreeMap<Arc<str>, i128>;

/// An entry's place: (pod key, address, name).
type EntryRef = (Arc<str>, IpAddr, Arc<str>);

/// Per-pod IP → names with TTLs; see the module docs.
#[derive(Debug, Default)]
pub struct NameCache {
    cfg: NameCacheConfig,
    /// Pod key (UID) → address → names.
    pods: HashMap<Arc<str>, HashMap<IpAddr, Names, ahash::RandomState>, ahash::RandomState>,
    /// Every entry by (expiry, insertion number): eviction and expiry order.
    by_expiry: BTreeMap<(i128, u64), EntryRef>,
    next_seq: u64,
    evictions: u64,
}

impl NameCache {
    pub fn new(cfg: NameCacheConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> NameCacheStats {
        NameCacheStats {
            entries: self.by_expiry.len(),
            evictions: self.evictions,
        }
    }

    /// Remembers that pod `pod` resolved `name` to `ip` at `at` (unix ns) for
    /// `ttl`. A later expiry for the same entry extends it; an earlier one
    /// changes nothing.
    pub fn insert(&mut self, pod: &str, name: &str, ip: IpAddr, ttl: Duration, at: i128) {
        if self.cfg.max_entries == 0 || name.is_empty() {
            return;
        }
        let ttl = ttl.max(self.cfg.min_ttl);
        let expires = at.saturating_add(i128::try_from(ttl.as_nanos()).unwrap_or(i128::MAX));
        let name = normalize(name);
        // An existing entry: keep the later expiry.
        let existing = self
            .pods
            .get(pod)
            .and_then(|ips| ips.get(&ip))
            .and_then(|names| names.get(name.as_str()).copied());
        if let Some(old) = existing {
            if old >= expires {
                return;
            }
            self.remove(pod, ip, &name, old);
        }
        while self.by_expiry.len() >= self.cfg.max_entries {
            let Some(((exp, _), (p, i, n))) = self.by_expiry.pop_first() else {
                break;
            };
            if exp >= at {
                self.evictions += 1;
            }
            self.unlink(&p, i, &n);
        }
        let (pod_key, name_key) = match self.pods.get_key_value(pod) {
            Some((k, _)) => (k.clone(), Arc::<str>::from(name.as_str())),
            None => (Arc::<str>::from(pod), Arc::<str>::from(name.as_str())),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry
            .insert((expires, seq), (pod_key.clone(), ip, name_key.clone()));
        self.pods
            .entry(pod_key)
            .or_default()
            .entry(ip)
            .or_default()
            .insert(name_key, expires);
    }

    /// Names `pod` resolved to `ip` that are still valid at `at`, sorted.
    pub fn lookup(&self, pod: &str, ip: IpAddr, at: i128) -> Vec<String> {
        self.pods
            .get(pod)
            .and_then(|ips| ips.get(&ip))
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, exp)| **exp >= at)
                    .map(|(n, _)| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops entries that expired before `now` (unix ns).
    pub fn expire(&mut self, now: i128) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 >= now {
                break;
            }
            let (p, i, n) = entry.remove();
            self.unlink(&p, i, &n);
        }
    }

    /// Forgets every pod not in `pods` (deleted, or moved off this node).
    pub fn retain_pods(&mut self, pods: &HashSet<&str>) {
        if self.pods.keys().all(|k| pods.contains(&**k)) {
            return;
        }
        self.pods.retain(|k, _| pods.contains(&**k));
        let live = &self.pods;
        self.by_expiry.retain(|_, (p, _, _)| live.contains_key(p));
    }

    fn remove(&mut self, pod: &str, ip: IpAddr, name: &str, expires: i128) {
        // The insertion number is not known here: find the entry among those
        // with the same expiry (few).
        let key = self
            .by_expiry
            .range((expires, 0)..=(expires, u64::MAX))
            .find(|(_, (p, i, n))| &**p == pod && *i == ip && &**n == name)
            .map(|(k, _)| *k);
        if let Some(k) = key {
            self.by_expiry.remove(&k);
        }
        self.unlink(pod, ip, name);
    }

    /// Removes the entry from `pods` (not from `by_expiry`).
    fn unlink(&mut self, pod: &str, ip: IpAddr, name: &str) {
        let Some(ips) = self.pods.get_mut(pod) else {
            return;
        };
        if let Some(names) = ips.get_mut(&ip) {
            names.remove(name);
            if names.is_empty() {
                ips.remove(&ip);
            }
        }
        if ips.is_empty() {
            self.pods.remove(pod);
        }
    }

    /// Learns from `flow` if it is a successful DNS response to a pod of
    /// this node, then fills its `source_names` and `destination_names`.
    /// `flow` must be enriched (endpoints known).
    pub fn observe_and_fill(&mut self, snap: &Snapshot, flow: &mut Flow) {
        if self.cfg.max_entries == 0 {
            return;
        }
        let Some(ip) = &flow.ip else { return };
        let (Ok(src), Ok(dst)) = (
            ip.source.parse::<IpAddr>(),
            ip.destination.parse::<IpAddr>(),
        ) else {
            return;
        };
        let at = flow.time.as_ref().map_or(0, |t| t.as_unix_nanos());
        let src_pod = local_pod_key(snap, src);
        let dst_pod = local_pod_key(snap, dst);
        if let (Some(pod), Some(l7)) = (&dst_pod, &flow.l7)
            && l7.r#type == L7FlowType::Response as i32
            && let Some(Record::Dns(dns)) = &l7.record
            && dns.rcode == 0
        {
            let ttl = Duration::from_secs(u64::from(dns.ttl));
            for a in &dns.ips {
                if let Ok(addr) = a.parse::<IpAddr>() {
                    self.insert(pod, &dns.query, addr, ttl, at);
                }
            }
        }
        if let Some(pod) = &dst_pod {
            flow.source_names = self.lookup(pod, src, at);
        }
        if let Some(pod) = &src_pod {
            flow.destination_names = self.lookup(pod, dst, at);
        }
    }
}

/// The cache key of the pod of this node that has `ip`.
fn local_pod_key(snap: &Snapshot, ip: IpAddr) -> Option<String> {
    let ep = snap.endpoint(ip);
    let pod = ep.pod.as_ref()?;
    if ep.node_name != snap.node_name {
        return None;
    }
    Some(pod_key(pod))
}

/// A pod's key: its UID (a pod re-created under the same name starts
/// afresh), or `namespace/name` for manifests without one.
pub fn pod_key(pod: &super::Pod) -> String {
    if pod.uid.is_empty() {
        pod.key.to_string()
    } else {
        pod.uid.clone()
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cache(max: usize, min_ttl: u64) -> NameCache {
        NameCache::new(NameCacheConfig {
            max_entries: max,
            min_ttl: Duration::from_secs(min_ttl),
        })
    }

    #[test]
    fn names_are_per_pod_normalized_and_sorted() {
        let mut c = cache(16, 0);
        let t = 100 * S;
        c.insert(
            "pod-a",
            "WWW.Example.com.",
            ip("192.0.2.7"),
            Duration::from_secs(30),
            t,
        );
        c.insert(
            "pod-a",
            "api.example.com.",
            ip("192.0.2.7"),
            Duration::from_secs(30),
            t,
        );
        c.insert(
            "pod-b",
            "other.example.net.",
            ip("192.0.2.7"),
            Duration::from_secs(30),
            t,
        );
        assert_eq!(
            c.lookup("pod-a", ip("192.0.2.7"), t),
            vec!["api.example.com", "www.example.com"]
        );
        assert_eq!(
            c.lookup("pod-b", ip("192.0.2.7"), t),
            vec!["other.example.net"]
        );
        assert!(c.lookup("pod-c", ip("192.0.2.7"), t).is_empty());
        assert!(c.lookup("pod-a", ip("192.0.2.8"), t).is_empty());
        assert_eq!(c.stats().entries, 3);
    }

    #[test]
    fn entries_expire_with_their_ttl_and_min_ttl_raises_it() {
        let mut c = cache(16, 0);
        let t = 100 * S;
        c.insert("p", "a.example.", ip("10.0.0.1"), Duration::from_secs(5), t);
        assert_eq!(c.lookup("p", ip("10.0.0.1"), t + 5 * S), vec!["a.example"]);
        assert!(c.lookup("p", ip("10.0.0.1"), t + 5 * S + 1).is_empty());
        // A later answer extends it; an older one does not shorten it.
        c.insert(
            "p",
            "a.example.",
            ip("10.0.0.1"),
            Duration::from_secs(60),
            t + S,
        );
        c.insert(
            "p",
            "a.example.",
            ip("10.0.0.1"),
            Duration::from_secs(1),
            t + 2 * S,
        );
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.lookup("p", ip("10.0.0.1"), t + 61 * S), vec!["a.example"]);
        c.expire(t + 61 * S);
        assert_eq!(c.stats().entries, 1);
        c.expire(t + 61 * S + 1);
        assert_eq!(
            c.stats(),
            NameCacheStats {
                entries: 0,
                evictions: 0
            }
        );
        assert!(c.pods.is_empty());
        // TTL 0 answers live for tofqdns-min-ttl.
        let mut c = cache(16, 3600);
        c.insert("p", "b.example", ip("10.0.0.2"), Duration::ZERO, t);
        assert_eq!(
            c.lookup("p", ip("10.0.0.2"), t + 3599 * S),
            vec!["b.example"]
        );
        let mut c = cache(16, 0);
        c.insert("p", "b.example", ip("10.0.0.2"), Duration::ZERO, t);
        assert!(c.lookup("p", ip("10.0.0.2"), t + 1).is_empty());
    }

    #[test]
    fn full_cache_evicts_the_soonest_to_expire_and_counts_it() {
        let mut c = cache(3, 0);
        let t = 100 * S;
        c.insert(
            "p",
            "long.example",
            ip("10.0.0.1"),
            Duration::from_secs(300),
            t,
        );
        c.insert(
            "p",
            "short.example",
            ip("10.0.0.2"),
            Duration::from_secs(10),
            t,
        );
        c.insert(
            "q",
            "mid.example",
            ip("10.0.0.3"),
            Duration::from_secs(60),
            t,
        );
        assert_eq!(
            c.stats(),
            NameCacheStats {
                entries: 3,
                evictions: 0
            }
        );
        c.insert(
            "q",
            "new.example",
            ip("10.0.0.4"),
            Duration::from_secs(30),
            t + S,
        );
        assert_eq!(
            c.stats(),
            NameCacheStats {
                entries: 3,
                evictions: 1
            }
        );
        assert!(
            c.lookup("p", ip("10.0.0.2"), t).is_empty(),
            "short went first"
        );
        assert_eq!(c.lookup("p", ip("10.0.0.1"), t + S), vec!["long.example"]);
        assert_eq!(c.lookup("q", ip("10.0.0.4"), t + S), vec!["new.example"]);
        // An entry that had already expired makes room without counting.
        c.insert(
            "q",
            "later.example",
            ip("10.0.0.5"),
            Duration::from_secs(30),
            t + 40 * S,
        );
        assert_eq!(
            c.stats(),
            NameCacheStats {
                entries: 3,
                evictions: 1
            }
        );
        assert!(c.lookup("q", ip("10.0.0.4"), t + S).is_empty());
        // Many inserts never grow it past the bound.
        for n in 0..100u8 {
            let name = format!("n{n}.example");
            c.insert(
                "r",
                &name,
                ip(&format!("10.1.0.{n}")),
                Duration::from_secs(600),
                t + 50 * S,
            );
            assert!(c.stats().entries <= 3);
        }
        assert_eq!(
            c.by_expiry.len(),
            c.pods
                .values()
                .flat_map(|m| m.values())
                .map(|n| n.len())
                .sum::<usize>()
        );
        // 0 entries: disabled.
        let mut off = cache(0, 0);
        off.insert("p", "a.example", ip("10.0.0.1"), Duration::from_secs(30), t);
        assert_eq!(off.stats().entries, 0);
    }

    #[test]
    fn deleted_pods_are_forgotten() {
        let mut c = cache(16, 0);
        let t = 100 * S;
        c.insert(
            "gone",
            "a.example",
            ip("10.0.0.1"),
            Duration::from_secs(30),
            t,
        );
        c.insert(
            "kept",
            "b.example",
            ip("10.0.0.2"),
            Duration::from_secs(30),
            t,
        );
        c.retain_pods(&HashSet::from(["kept"]));
        assert!(c.lookup("gone", ip("10.0.0.1"), t).is_empty());
        assert_eq!(c.lookup("kept", ip("10.0.0.2"), t), vec!["b.example"]);
        assert_eq!(c.stats().entries, 1);
    }
}
