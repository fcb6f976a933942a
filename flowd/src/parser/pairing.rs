//! Request/response pairing for latency: HTTP by connection (FIFO, so
//! pipelined requests meet their own responses), DNS by connection and
//! message ID.
//!
//! Keys include the observation point (interface index): an exchange between
//! two pods on one node crosses both pods' veths, and each sighting must pair
//! with itself, never with the copy seen on the other veth.
//!
//! State is bounded: at most `max_connections` HTTP connections (each with at
//! most `max_pending_per_connection` requests in flight) and `max_dns_pending`
//! DNS queries; idle entries older than `max_age_ns` are dropped by
//! [`Pairing::expire`]. Everything dropped is counted in [`PairingStats`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use flowd_common::FlowKey;

/// Limits of the pairing tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairingLimits {
    pub max_connections: usize,
    pub max_pending_per_connection: usize,
    pub max_dns_pending: usize,
    /// Idle time (kernel clock) after which a connection or a DNS query is forgotten.
    pub max_age_ns: u64,
}

impl Default for PairingLimits {
    fn default() -> Self {
        Self {
            max_connections: 16_384,
            max_pending_per_connection: 32,
            max_dns_pending: 16_384,
            max_age_ns: 60_000_000_000,
        }
    }
}

/// Counters for metrics (flowd's pairing-table evictions and outcomes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairingStats {
    /// Pending HTTP requests dropped because their connection was evicted to
    /// make room, or because the connection had too many in flight.
    pub http_evicted_size: u64,
    /// Pending HTTP requests dropped with their idle connection.
    pub http_evicted_age: u64,
    pub dns_evicted_size: u64,
    pub dns_evicted_age: u64,
    pub http_paired: u64,
    pub http_unpaired_responses: u64,
    pub dns_paired: u64,
    pub dns_unpaired_responses: u64,
    /// TCP segments seen twice (same sequence number) and ignored.
    pub retransmissions: u64,
    /// Current sizes.
    pub http_connections: u64,
    pub http_pending: u64,
    pub dns_pending: u64,
}

/// One side of a connection.
type Endpoint = ([u8; 16], u16);

/// A connection as seen at one observation point, oriented client → server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub ifindex: u32,
    pub protocol: u8,
    pub client: Endpoint,
    pub server: Endpoint,
}

impl ConnKey {
    /// For a packet sent by the client (request, query).
    pub fn from_request(k: &FlowKey) -> Self {
        Self {
            ifindex: k.ifindex,
            protocol: k.protocol,
            client: (k.src_addr, k.src_port),
            server: (k.dst_addr, k.dst_port),
        }
    }
    /// For a packet sent by the server (response).
    pub fn from_response(k: &FlowKey) -> Self {
        Self {
            ifindex: k.ifindex,
            protocol: k.protocol,
            client: (k.dst_addr, k.dst_port),
            server: (k.src_addr, k.src_port),
        }
    }
}

/// What is remembered of a request until its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingHttp {
    pub ts_ns: u64,
    /// Shared by the request's and the response's records (`Layer7.exchange_id`).
    pub exchange_id: u64,
    pub method: String,
    pub url: String,
    /// The request line was cut: `url` is its captured part.
    pub url_truncated: bool,
}

/// What the response was matched with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpMatch {
    /// The request, and the latency from it (kernel clock, saturating at 0).
    Paired(PendingHttp, u64),
    /// No request seen on this connection (e.g. flowd started mid-connection).
    Unpaired,
    /// Same TCP sequence number as the previous response: not reported again.
    Retransmission,
}

struct Conn {
    pending: VecDeque<PendingHttp>,
    last_req_seq: Option<u32>,
    last_resp_seq: Option<u32>,
    last_ts_ns: u64,
    tick: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DnsKey {
    conn: ConnKey,
    id: u16,
}

struct DnsPending {
    ts_ns: u64,
    exchange_id: u64,
    tick: u64,
}

/// The pairing tables of one parser (one per event-reading task).
pub struct Pairing {
    limits: PairingLimits,
    conns: HashMap<ConnKey, Conn, ahash::RandomState>,
    /// Connections by last use (tick): the first entry is the least recently used.
    conn_lru: BTreeMap<u64, ConnKey>,
    dns: HashMap<DnsKey, DnsPending, ahash::RandomState>,
    dns_order: BTreeMap<u64, DnsKey>,
    tick: u64,
    pending_http: u64,
    stats: PairingStats,
}

impl Pairing {
    pub fn new(limits: PairingLimits) -> Self {
        let limits = PairingLimits {
            max_connections: limits.max_connections.max(1),
            max_pending_per_connection: limits.max_pending_per_connection.max(1),
            max_dns_pending: limits.max_dns_pending.max(1),
            ..limits
        };
        Self {
            limits,
            conns: HashMap::default(),
            conn_lru: BTreeMap::new(),
            dns: HashMap::default(),
            dns_order: BTreeMap::new(),
            tick: 0,
            pending_http: 0,
            stats: PairingStats::default(),
        }
    }

    pub fn limits(&self) -> &PairingLimits {
        &self.limits
    }

    pub fn stats(&self) -> PairingStats {
        PairingStats {
            http_connections: self.conns.len() as u64,
            http_pending: self.pending_http,
            dns_pending: self.dns.len() as u64,
            ..self.stats
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Finds or creates the connection and marks it most recently used.
    fn touch(&mut self, key: ConnKey, ts_ns: u64) -> &mut Conn {
        let tick = self.next_tick();
        if !self.conns.contains_key(&key)
            && self.conns.len() >= self.limits.max_connections
            && let Some((_, victim)) = self.conn_lru.pop_first()
            && let Some(c) = self.conns.remove(&victim)
        {
            let n = c.pending.len() as u64;
            self.pending_http -= n;
            self.stats.http_evicted_size += n;
        }
        let conn = self.conns.entry(key).or_insert_with(|| Conn {
            pending: VecDeque::new(),
            last_req_seq: None,
            last_resp_seq: None,
            last_ts_ns: ts_ns,
            tick: 0,
        });
        if conn.tick != 0 {
            self.conn_lru.remove(&conn.tick);
        }
        conn.tick = tick;
        conn.last_ts_ns = conn.last_ts_ns.max(ts_ns);
        self.conn_lru.insert(tick, key);
        conn
    }

    /// Records a request sent on the connection of `key` (oriented client → server).
    /// Returns false when the segment was a retransmission and must not be reported.
    pub fn http_request(&mut self, key: &FlowKey, tcp_seq: u32, req: PendingHttp) -> bool {
        let max = self.limits.max_pending_per_connection;
        let conn = self.touch(ConnKey::from_request(key), req.ts_ns);
        if conn.last_req_seq == Some(tcp_seq) {
            self.stats.retransmissions += 1;
            return false;
        }
        conn.last_req_seq = Some(tcp_seq);
        let mut dropped = 0;
        if conn.pending.len() >= max {
            conn.pending.pop_front();
            dropped = 1;
        }
        conn.pending.push_back(req);
        self.pending_http += 1 - dropped;
        self.stats.http_evicted_size += dropped;
        true
    }

    /// Matches a response (sent server → client) with the oldest request in
    /// flight on its connection. An informational 1xx response (other than
    /// 101) does not end the exchange: it is matched without consuming the request.
    pub fn http_response(
        &mut self,
        key: &FlowKey,
        tcp_seq: u32,
        ts_ns: u64,
        code: u16,
    ) -> HttpMatch {
        let conn = self.touch(ConnKey::from_response(key), ts_ns);
        if conn.last_resp_seq == Some(tcp_seq) {
            self.stats.retransmissions += 1;
            return HttpMatch::Retransmission;
        }
        conn.last_resp_seq = Some(tcp_seq);
        let informational = (100..200).contains(&code) && code != 101;
        let req = if informational {
            conn.pending.front().cloned()
        } else {
            conn.pending.pop_front()
        };
        match req {
            Some(req) => {
                if !informational {
                    self.pending_http -= 1;
                }
                self.stats.http_paired += 1;
                let latency = ts_ns.saturating_sub(req.ts_ns);
                HttpMatch::Paired(req, latency)
            }
            None => {
                self.stats.http_unpaired_responses += 1;
                HttpMatch::Unpaired
            }
        }
    }

    /// Records a DNS query. A repeated query (same connection and ID, e.g. a
    /// resolver retry) keeps the first one's time: latency is what the client waited.
    pub fn dns_query(&mut self, key: &FlowKey, id: u16, ts_ns: u64, exchange_id: u64) {
        let dk = DnsKey {
            conn: ConnKey::from_request(key),
            id,
        };
        if self.dns.contains_key(&dk) {
            return;
        }
        if self.dns.len() >= self.limits.max_dns_pending
            && let Some((_, victim)) = self.dns_order.pop_first()
        {
            self.dns.remove(&victim);
            self.stats.dns_evicted_size += 1;
        }
        let tick = self.next_tick();
        self.dns.insert(
            dk,
            DnsPending {
                ts_ns,
                exchange_id,
                tick,
            },
        );
        self.dns_order.insert(tick, dk);
    }

    /// Matches a DNS response with its query; returns the latency and the
    /// query's exchange id.
    pub fn dns_response(&mut self, key: &FlowKey, id: u16, ts_ns: u64) -> Option<(u64, u64)> {
        let dk = DnsKey {
            conn: ConnKey::from_response(key),
            id,
        };
        match self.dns.remove(&dk) {
            Some(p) => {
                self.dns_order.remove(&p.tick);
                self.stats.dns_paired += 1;
                Some((ts_ns.saturating_sub(p.ts_ns), p.exchange_id))
            }
            None => {
                self.stats.dns_unpaired_responses += 1;
                None
            }
        }
    }

    /// Forgets connections idle and DNS queries unanswered for longer than
    /// `max_age_ns` at kernel time `now_ns`. Call it periodically (e.g. every second).
    pub fn expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(self.limits.max_age_ns);
        // Both indexes are in use order, which follows time closely (events from
        // different CPUs may interleave by a few µs): stop at the first young entry.
        while let Some((&tick, key)) = self.conn_lru.first_key_value() {
            let Some(conn) = self.conns.get(key) else {
                self.conn_lru.remove(&tick);
                continue;
            };
            if conn.last_ts_ns >= cutoff {
                break;
            }
            let key = *key;
            self.conn_lru.remove(&tick);
            if let Some(c) = self.conns.remove(&key) {
                let n = c.pending.len() as u64;
                self.pending_http -= n;
                self.stats.http_evicted_age += n;
            }
        }
        while let Some((&tick, key)) = self.dns_order.first_key_value() {
            match self.dns.get(key) {
                Some(p) if p.ts_ns >= cutoff => break,
                Some(_) => {
                    self.stats.dns_evicted_age += 1;
                    let key = *key;
                    self.dns.remove(&key);
                }
                None => {}
            }
            self.dns_order.remove(&tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_common::{FAMILY_IPV4, PROTO_TCP, PROTO_UDP};

    fn key(ifindex: u32, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> FlowKey {
        let mut k = FlowKey {
            ifindex,
            src_port: sport,
            dst_port: dport,
            protocol: proto,
            family: FAMILY_IPV4,
            ..FlowKey::default()
        };
        k.src_addr[..4].copy_from_slice(&src);
        k.dst_addr[..4].copy_from_slice(&dst);
        k
    }

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    fn pend(ts: u64, url: &str) -> PendingHttp {
        PendingHttp {
            ts_ns: ts,
            exchange_id: ts,
            method: "GET".into(),
            url: url.into(),
            url_truncated: false,
        }
    }

    #[test]
    fn pipelined_fifo() {
        let mut p = Pairing::new(PairingLimits::default());
        let req = key(3, C, 40000, S, 80, PROTO_TCP);
        let resp = key(3, S, 80, C, 40000, PROTO_TCP);
        for (i, ts) in [1_000u64, 1_100, 1_250].into_iter().enumerate() {
            assert!(p.http_request(&req, 100 + i as u32, pend(ts, &format!("/{i}"))));
        }
        let got: Vec<_> = [(5_000u64, 200u16), (5_300, 404), (6_000, 503)]
            .into_iter()
            .enumerate()
            .map(|(i, (ts, code))| p.http_response(&resp, 900 + i as u32, ts, code))
            .collect();
        assert_eq!(
            got,
            vec![
                HttpMatch::Paired(pend(1_000, "/0"), 4_000),
                HttpMatch::Paired(pend(1_100, "/1"), 4_200),
                HttpMatch::Paired(pend(1_250, "/2"), 4_750),
            ]
        );
        assert_eq!(p.http_response(&resp, 999, 7_000, 200), HttpMatch::Unpaired);
        let s = p.stats();
        assert_eq!(
            (s.http_paired, s.http_unpaired_responses, s.http_pending),
            (3, 1, 0)
        );
    }

    #[test]
    fn two_observation_points_do_not_cross_pair() {
        let mut p = Pairing::new(PairingLimits::default());
        // The request is seen on the client's veth (if 3) then on the server's (if 7).
        p.http_request(&key(3, C, 40000, S, 80, PROTO_TCP), 1, pend(100, "/a"));
        p.http_request(&key(7, C, 40000, S, 80, PROTO_TCP), 1, pend(150, "/a"));
        // The response: server veth first, then client veth.
        assert_eq!(
            p.http_response(&key(7, S, 80, C, 40000, PROTO_TCP), 5, 1_150, 200),
            HttpMatch::Paired(pend(150, "/a"), 1_000)
        );
        assert_eq!(
            p.http_response(&key(3, S, 80, C, 40000, PROTO_TCP), 5, 1_200, 200),
            HttpMatch::Paired(pend(100, "/a"), 1_100)
        );
    }

    #[test]
    fn retransmissions_are_ignored() {
        let mut p = Pairing::new(PairingLimits::default());
        let req = key(3, C, 1, S, 80, PROTO_TCP);
        let resp = key(3, S, 80, C, 1, PROTO_TCP);
        assert!(p.http_request(&req, 77, pend(10, "/")));
        assert!(!p.http_request(&req, 77, pend(20, "/")));
        assert_eq!(
            p.http_response(&resp, 5, 30, 200),
            HttpMatch::Paired(pend(10, "/"), 20)
        );
        assert_eq!(
            p.http_response(&resp, 5, 40, 200),
            HttpMatch::Retransmission
        );
        assert_eq!(p.stats().retransmissions, 2);
    }

    #[test]
    fn continue_does_not_consume() {
        let mut p = Pairing::new(PairingLimits::default());
        let req = key(3, C, 1, S, 80, PROTO_TCP);
        let resp = key(3, S, 80, C, 1, PROTO_TCP);
        p.http_request(&req, 1, pend(10, "/up"));
        assert_eq!(
            p.http_response(&resp, 1, 15, 100),
            HttpMatch::Paired(pend(10, "/up"), 5)
        );
        assert_eq!(
            p.http_response(&resp, 2, 50, 201),
            HttpMatch::Paired(pend(10, "/up"), 40)
        );
        assert_eq!(p.stats().http_pending, 0);
    }

    #[test]
    fn size_limits_evict_and_count() {
        let mut p = Pairing::new(PairingLimits {
            max_connections: 2,
            max_pending_per_connection: 2,
            max_dns_pending: 2,
            max_age_ns: 1_000,
        });
        let a = key(1, C, 1, S, 80, PROTO_TCP);
        let b = key(1, C, 2, S, 80, PROTO_TCP);
        let c = key(1, C, 3, S, 80, PROTO_TCP);
        p.http_request(&a, 1, pend(1, "/a1"));
        p.http_request(&a, 2, pend(2, "/a2"));
        p.http_request(&a, 3, pend(3, "/a3")); // drops /a1
        p.http_request(&b, 1, pend(4, "/b1"));
        p.http_request(&c, 1, pend(5, "/c1")); // evicts a (2 pending): LRU
        let s = p.stats();
        assert_eq!(
            (s.http_evicted_size, s.http_connections, s.http_pending),
            (3, 2, 2)
        );
        assert_eq!(
            p.http_response(&key(1, S, 80, C, 1, PROTO_TCP), 9, 9, 200),
            HttpMatch::Unpaired
        );
        // That response re-created connection a and evicted b.
        assert_eq!(p.stats().http_evicted_size, 4);

        let u = key(1, C, 53000, S, 53, PROTO_UDP);
        p.dns_query(&u, 1, 10, 0);
        p.dns_query(&u, 2, 11, 0);
        p.dns_query(&u, 3, 12, 0); // evicts id 1
        let r = key(1, S, 53, C, 53000, PROTO_UDP);
        assert_eq!(p.dns_response(&r, 1, 20), None);
        assert_eq!(p.dns_response(&r, 3, 20), Some((8, 0)));
        assert_eq!(p.stats().dns_evicted_size, 1);
    }

    #[test]
    fn age_limit() {
        let mut p = Pairing::new(PairingLimits {
            max_age_ns: 1_000,
            ..PairingLimits::default()
        });
        let a = key(1, C, 1, S, 80, PROTO_TCP);
        let b = key(1, C, 2, S, 80, PROTO_TCP);
        p.http_request(&a, 1, pend(100, "/old"));
        p.http_request(&b, 1, pend(900, "/young"));
        p.dns_query(&key(1, C, 5, S, 53, PROTO_UDP), 9, 100, 0);
        p.expire(1_500);
        let s = p.stats();
        assert_eq!(
            (
                s.http_evicted_age,
                s.http_connections,
                s.dns_evicted_age,
                s.dns_pending
            ),
            (1, 1, 1, 0)
        );
        assert_eq!(
            p.http_response(&key(1, S, 80, C, 2, PROTO_TCP), 1, 1_600, 200),
            HttpMatch::Paired(pend(900, "/young"), 700)
        );
    }

    #[test]
    fn dns_by_connection_and_id() {
        let mut p = Pairing::new(PairingLimits::default());
        let q = key(4, C, 5353, S, 53, PROTO_UDP);
        let r = key(4, S, 53, C, 5353, PROTO_UDP);
        p.dns_query(&q, 0xaaaa, 1_000, 0);
        p.dns_query(&q, 0xbbbb, 1_010, 0);
        p.dns_query(&q, 0xaaaa, 1_500, 0); // retry keeps the first time
        assert_eq!(p.dns_response(&r, 0xbbbb, 2_000), Some((990, 0)));
        assert_eq!(p.dns_response(&r, 0xaaaa, 3_000), Some((2_000, 0)));
        assert_eq!(p.dns_response(&r, 0xaaaa, 3_100), None);
        // Other observation point: not paired.
        p.dns_query(&q, 1, 1, 0);
        assert_eq!(
            p.dns_response(&key(5, S, 53, C, 5353, PROTO_UDP), 1, 2),
            None
        );
    }
}
