//! Kernel events → `flow::Flow`s.
//!
//! * [`l34::flow`]: an L3/L4 [`FlowEvent`] → a Flow of type L3_L4 (pure).
//! * [`Parser::l7_flow`]: an [`L7Record`] (first bytes of an HTTP/1.x or DNS
//!   message, as the datapath decoded it from the ring buffer) → a Flow of
//!   type L7 with a REQUEST or RESPONSE Layer7 record; responses are paired
//!   with their request for the latency ([`pairing`]). The payload is read in
//!   place: no copy back into the fixed-size ABI array.
//!
//! Payloads come from the network: anything that is not a well-formed
//! message start gives a typed [`NotL7`], never a flow or a panic.

pub mod dns;
pub mod drop;
pub mod http;
pub mod http2;
pub mod l34;
pub mod pairing;
pub mod summary;

use flowd_common::{
    L7_DNS, L7_HTTP_REQUEST, L7_HTTP_RESPONSE, L7_MAX_PAYLOAD, PROTO_TCP, PROTO_UDP,
};
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    CiliumEventType, Dns, Flow, FlowType, Http, HttpHeader, L7FlowType, Layer7, NetworkInterface,
    Verdict, layer7::Record,
};

pub use crate::datapath::L7Record;
pub use dns::{DnsFraming, DnsMessage};
pub use http::{HttpConfig, HttpConfigError, HttpRequest, HttpResponse, RedactConfig, RequestHead};
pub use http2::{H2Limits, H2Stats};
pub use l34::FlowMeta;
pub use pairing::{PairingLimits, PairingStats};

use pairing::{HttpMatch, Pairing, PendingHttp};

/// Why an L7 event gave no flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotL7 {
    /// The payload ends before the request line, status line or DNS question did.
    #[error("payload too short for a message start")]
    Incomplete,
    #[error("not a valid message start: {0}")]
    Malformed(&'static str),
    #[error("unknown L7 kind {0}")]
    UnknownKind(u8),
    /// More payload bytes than the kernel ever copies (`L7_MAX_PAYLOAD`).
    #[error("payload of {0} bytes is longer than an L7 capture")]
    BadLength(u16),
    #[error("L7 kind does not match the transport protocol {0}")]
    WrongTransport(u8),
    /// A TCP segment seen again (same sequence number): already reported.
    #[error("TCP retransmission of a message already reported")]
    Retransmission,
}

/// A parsed L7 message, before pairing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L7Message {
    HttpRequest(RequestHead),
    HttpResponse(HttpResponse),
    Dns(DnsMessage),
}

/// Parses the payload of an L7 event according to the kernel's classification.
/// Pure: no pairing state. This is what the fuzz tests drive.
pub fn parse_l7(ev: &L7Record, http: &HttpConfig) -> Result<L7Message, NotL7> {
    if ev.payload.len() > L7_MAX_PAYLOAD {
        return Err(NotL7::BadLength(
            u16::try_from(ev.payload.len()).unwrap_or(u16::MAX),
        ));
    }
    let payload = ev.payload.as_slice();
    match ev.l7_kind {
        L7_HTTP_REQUEST | L7_HTTP_RESPONSE if ev.key.protocol != PROTO_TCP => {
            Err(NotL7::WrongTransport(ev.key.protocol))
        }
        L7_HTTP_REQUEST => http::parse_request(payload, http).map(L7Message::HttpRequest),
        L7_HTTP_RESPONSE => http::parse_response(payload, http).map(L7Message::HttpResponse),
        L7_DNS => {
            let framing = match ev.key.protocol {
                // The ABI: for DNS over TCP the kernel copies from after the 2-byte length.
                PROTO_TCP | PROTO_UDP => DnsFraming::Bare,
                p => return Err(NotL7::WrongTransport(p)),
            };
            dns::parse_dns(payload, framing).map(L7Message::Dns)
        }
        k => Err(NotL7::UnknownKind(k)),
    }
}

/// A fresh flow UUID (v4), as Hubble uses.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `DNS.observation_source` of flows made from the datapath (Hubble's proxy says "proxy").
pub const DNS_OBSERVATION_SOURCE: &str = "datapath";

/// Configuration of a [`Parser`].
#[derive(Clone, Debug, Default)]
pub struct ParserConfig {
    pub node_name: String,
    pub http: HttpConfig,
    pub pairing: PairingLimits,
    pub http2: H2Limits,
}

/// Counters of the L7 path (for metrics), pairing included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParserStats {
    pub http_requests: u64,
    pub http_responses: u64,
    pub dns_queries: u64,
    pub dns_responses: u64,
    /// L7 events that gave no flow, by reason.
    pub not_l7_incomplete: u64,
    pub not_l7_malformed: u64,
    pub not_l7_other: u64,
    /// L3/L4 events of frames that are not IP (ARP, LLDP, …): the kernel
    /// accounts them in its flow table, but they make no flow.
    pub non_ip: u64,
    pub pairing: PairingStats,
    pub http2: H2Stats,
}

/// The L7 parser with its pairing state. One per event-reading task: it is
/// not shared, so it needs no lock.
pub struct Parser {
    cfg: ParserConfig,
    pairing: Pairing,
    http2: http2::Tracker,
    next_exchange: u64,
    stats: ParserStats,
}

impl Parser {
    pub fn new(cfg: ParserConfig) -> Self {
        Self {
            pairing: Pairing::new(cfg.pairing),
            http2: http2::Tracker::new(cfg.http2),
            cfg,
            next_exchange: 0,
            stats: ParserStats::default(),
        }
    }

    pub fn node_name(&self) -> &str {
        &self.cfg.node_name
    }

    /// A DROPPED flow for `count` kernel drops of a drop record.
    pub fn drop_flow(
        &self,
        r: &crate::datapath::DropRecord,
        count: u64,
        time_unix_ns: u64,
    ) -> Flow {
        drop::flow(r, count, time_unix_ns, &self.cfg.node_name, new_uuid())
    }

    /// Converts an L3/L4 event (see [`l34::flow`]) with a fresh UUID.
    /// Frames that are not IPv4 or IPv6 (ARP, …) give no flow (Hubble's
    /// flows are IP flows; such a record would say `N/A -> N/A`): they are
    /// counted in [`ParserStats::non_ip`].
    pub fn l34_flow(&mut self, ev: &flowd_common::FlowEvent, time_unix_ns: u64) -> Option<Flow> {
        if l34::addresses(&ev.key).is_none() {
            self.stats.non_ip += 1;
            return None;
        }
        if ev.key.protocol == PROTO_TCP
            && ev.pkt_tcp_flags & (flowd_common::TCP_FIN | flowd_common::TCP_RST) != 0
        {
            self.http2.tcp_end(&ev.key, ev.header.ts_ns, time_unix_ns);
        }
        Some(l34::flow(
            ev,
            FlowMeta {
                time_unix_ns,
                node_name: &self.cfg.node_name,
                uuid: new_uuid(),
            },
        ))
    }

    /// Parses an L7 event and pairs it. `time_unix_ns` is the wall-clock time
    /// of `ev.header.ts_ns`. Latencies use the kernel clock (`ts_ns`).
    pub fn l7_flow(&mut self, ev: &L7Record, time_unix_ns: u64) -> Result<Flow, NotL7> {
        let r = self.l7_flow_inner(ev, time_unix_ns);
        if let Err(e) = &r {
            match e {
                NotL7::Incomplete => self.stats.not_l7_incomplete += 1,
                NotL7::Malformed(_) => self.stats.not_l7_malformed += 1,
                _ => self.stats.not_l7_other += 1,
            }
        }
        r
    }

    /// The HTTP/2 flows an HTTP/2 frame-walker record completes (see
    /// [`http2`]), each with the hook direction of the packets it describes
    /// (a response ended by the client's RST_STREAM is still a flow of the
    /// server's direction). `time_unix_ns` is the wall-clock time of
    /// `ev.header.ts_ns`.
    pub fn h2_flows(
        &mut self,
        ev: &crate::datapath::H2Record,
        time_unix_ns: u64,
    ) -> Vec<(Flow, u8)> {
        let mut msgs = Vec::new();
        self.http2
            .record(ev, &self.cfg.http, &mut self.next_exchange, &mut msgs);
        msgs.into_iter()
            .map(|m| self.h2_flow(m, time_unix_ns))
            .collect()
    }

    /// RESPONSE flows of the streams still open on HTTP/2 connections that
    /// ended (TCP FIN or RST) a while before kernel time `now_ktime_ns`:
    /// without a status (see [`http2::Tracker::ended`]). Call about once a
    /// second.
    pub fn h2_ended(&mut self, now_ktime_ns: u64) -> Vec<(Flow, u8)> {
        let mut msgs = Vec::new();
        self.http2.ended(now_ktime_ns, &self.cfg.http, &mut msgs);
        msgs.into_iter()
            .map(|(m, time_unix_ns)| self.h2_flow(m, time_unix_ns))
            .collect()
    }

    /// The flow of an HTTP/2 message, with its packets' hook direction.
    fn h2_flow(&self, m: http2::Message, time_unix_ns: u64) -> (Flow, u8) {
        let direction = m.key.direction;
        let summary = if m.response {
            summary::http_response(&m.http, m.latency_ns, !m.unpaired)
        } else {
            summary::http_request(&m.http)
        };
        let typ = if m.response {
            L7FlowType::Response
        } else {
            L7FlowType::Request
        };
        let l7 = Layer7 {
            r#type: typ as i32,
            latency_ns: m.latency_ns,
            exchange_id: m.exchange_id,
            unpaired: m.unpaired,
            record: Some(Record::Http(m.http)),
        };
        let flow = self.l7_record_flow(&m.key, time_unix_ns, l7, m.response, summary);
        (flow, direction)
    }

    fn exchange(&mut self) -> u64 {
        self.next_exchange += 1;
        self.next_exchange
    }

    fn l7_flow_inner(&mut self, ev: &L7Record, time_unix_ns: u64) -> Result<Flow, NotL7> {
        let ts = ev.header.ts_ns;
        let (l7, reply, summary) = match parse_l7(ev, &self.cfg.http)? {
            L7Message::HttpRequest(head) => {
                let record = match head {
                    RequestHead::Complete(r) => Http {
                        code: 0,
                        method: r.method,
                        url: r.url,
                        protocol: r.protocol.to_string(),
                        headers: headers(r.headers),
                        url_truncated: false,
                        ..Http::default()
                    },
                    // A URL longer than the capture: reported as far as it
                    // was seen, flagged (the version was not seen either).
                    RequestHead::LineCut { method, url } => Http {
                        method,
                        url,
                        url_truncated: true,
                        ..Http::default()
                    },
                };
                let exchange_id = self.exchange();
                let pend = PendingHttp {
                    ts_ns: ts,
                    exchange_id,
                    method: record.method.clone(),
                    url: record.url.clone(),
                    url_truncated: record.url_truncated,
                };
                if !self.pairing.http_request(&ev.key, ev.tcp_seq, pend) {
                    return Err(NotL7::Retransmission);
                }
                self.stats.http_requests += 1;
                let summary = summary::http_request(&record);
                (
                    Layer7 {
                        r#type: L7FlowType::Request as i32,
                        exchange_id,
                        record: Some(Record::Http(record)),
                        ..Layer7::default()
                    },
                    false,
                    summary,
                )
            }
            L7Message::HttpResponse(r) => {
                let m = self.pairing.http_response(&ev.key, ev.tcp_seq, ts, r.code);
                let (req, latency_ns) = match m {
                    HttpMatch::Retransmission => return Err(NotL7::Retransmission),
                    HttpMatch::Paired(req, lat) => (Some(req), lat),
                    HttpMatch::Unpaired => (None, 0),
                };
                self.stats.http_responses += 1;
                let http = Http {
                    code: u32::from(r.code),
                    method: req.as_ref().map(|q| q.method.clone()).unwrap_or_default(),
                    url: req.as_ref().map(|q| q.url.clone()).unwrap_or_default(),
                    protocol: r.protocol.to_string(),
                    headers: headers(r.headers),
                    url_truncated: req.as_ref().is_some_and(|q| q.url_truncated),
                    ..Http::default()
                };
                let summary = summary::http_response(&http, latency_ns, req.is_some());
                (
                    Layer7 {
                        r#type: L7FlowType::Response as i32,
                        latency_ns,
                        exchange_id: req.as_ref().map_or(0, |q| q.exchange_id),
                        unpaired: req.is_none(),
                        record: Some(Record::Http(http)),
                    },
                    true,
                    summary,
                )
            }
            L7Message::Dns(d) => {
                let (typ, latency_ns, exchange_id, unpaired) = if d.is_response {
                    self.stats.dns_responses += 1;
                    match self.pairing.dns_response(&ev.key, d.id, ts) {
                        Some((lat, x)) => (L7FlowType::Response, lat, x, false),
                        None => (L7FlowType::Response, 0, 0, true),
                    }
                } else {
                    self.stats.dns_queries += 1;
                    let x = self.exchange();
                    self.pairing.dns_query(&ev.key, d.id, ts, x);
                    (L7FlowType::Request, 0, x, false)
                };
                let dns = Dns {
                    query: d.query,
                    ips: d.ips.iter().map(|ip| ip.to_string()).collect(),
                    ttl: d.ttl,
                    cnames: d.cnames,
                    observation_source: DNS_OBSERVATION_SOURCE.to_string(),
                    rcode: u32::from(d.rcode),
                    qtypes: d.qtypes,
                    rrtypes: d.rrtypes,
                };
                let summary = summary::dns(&dns, d.is_response);
                (
                    Layer7 {
                        r#type: typ as i32,
                        latency_ns,
                        exchange_id,
                        unpaired,
                        record: Some(Record::Dns(dns)),
                    },
                    d.is_response,
                    summary,
                )
            }
        };
        Ok(self.l7_record_flow(&ev.key, time_unix_ns, l7, reply, summary))
    }

    /// An L7 flow of the packets of `k` carrying `l7`.
    fn l7_record_flow(
        &self,
        k: &flowd_common::FlowKey,
        time_unix_ns: u64,
        l7: Layer7,
        reply: bool,
        summary: String,
    ) -> Flow {
        #[allow(deprecated)]
        // `reply` and `Summary` are deprecated by Hubble; its clients read them.
        Flow {
            time: Some(Timestamp::from_unix_nanos(time_unix_ns)),
            uuid: new_uuid(),
            verdict: Verdict::Forwarded as i32,
            ip: l34::ip(k),
            l4: l34::layer4(k, None),
            r#type: FlowType::L7 as i32,
            node_name: self.cfg.node_name.clone(),
            l7: Some(l7),
            reply,
            is_reply: Some(flowd_proto::pbjson_types::BoolValue { value: reply }),
            event_type: Some(CiliumEventType {
                r#type: l34::EVENT_TYPE_L7,
                sub_type: 0,
            }),
            interface: Some(NetworkInterface {
                index: k.ifindex,
                name: String::new(),
            }),
            summary,
            ..Flow::default()
        }
    }

    /// Drops pairing state idle for longer than the age limit; call about
    /// once a second with the current kernel time (CLOCK_MONOTONIC ns).
    pub fn expire(&mut self, now_ktime_ns: u64) {
        self.pairing.expire(now_ktime_ns);
        self.http2.expire(now_ktime_ns);
    }

    pub fn stats(&self) -> ParserStats {
        ParserStats {
            pairing: self.pairing.stats(),
            http2: self.http2.stats(),
            ..self.stats
        }
    }
}

fn headers(h: Vec<(String, String)>) -> Vec<HttpHeader> {
    h.into_iter()
        .map(|(key, value)| HttpHeader { key, value })
        .collect()
}
